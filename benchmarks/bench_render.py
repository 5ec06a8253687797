"""Forward + backward time of ``facelib.fitting.render`` for one 224×224 face on CPU (default 2 threads).

Meshes (real geometry whenever the assets are present, FACELIB_ASSETS or ../shared/assets):
- ``bfm_3ddfa``  53215 vertices / 76073 triangles: ``MorphableModel.from_3ddfa`` mean shape and its triangles
  (3DDFA_V2's no-neck mesh; the 14850 neck/ear vertices are in no triangle, so 3DDFA's "53215-vertex" mesh has
  76k, not ~105k, triangles).
- ``front_35709`` 35709 vertices / 70789 triangles: the paper's (Deep3D) front-face topology, ``tri`` of
  ``facemodel_info.mat`` on the same mean shape restricted to ``BFM_front_idx.mat`` (3DDFA's 53215-vertex set ⊃
  Deep3D's 35709; the 68 keypoints coincide), i.e. the real mesh R-Net renders, with 3DDFA's mean geometry.
- ``grid_53361`` 53361 vertices / 105800 triangles: a synthetic 231×231 grid over the same 145×145 px face area
  (stress case at the brief's ~105k-triangle density); also used for the others when assets are missing.

Faces are placed with Deep3D's camera (focal 1015, centre 112, distance 10, 224²; mean shape recentred, in
decimetres) and coloured with SH shading. Timed: rasterise + interpolate (forward), ``image.mean().backward()``
to vertex positions and colours (backward). Medians over --repeat runs after --warmup runs.

    python benchmarks/bench_render.py [--threads 2] [--repeat 20] [--device cpu] [--batch 1]

With 2 threads the timings are sensitive to other processes on a 2-core machine: OpenMP threads wait for a busy
core, and a render can take 10–50× longer while another job runs (the load average is printed). Under
contention ``--threads 1`` (or OMP_WAIT_POLICY=PASSIVE) is the robust choice.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from facelib.fitting import render as R  # noqa: E402


def grid_mesh(n: int, lo: float = 40.0, hi: float = 184.0):
    s = torch.linspace(lo, hi, n)
    yy, xx = torch.meshgrid(s, s, indexing="ij")
    zz = 9.0 + ((xx - 112) ** 2 + (yy - 112) ** 2) / 1e4
    v = torch.stack([xx, yy, zz], -1).reshape(-1, 3)
    idx = torch.arange(n * n).reshape(n, n)
    a, b = idx[:-1, :-1].reshape(-1), idx[:-1, 1:].reshape(-1)
    c, d = idx[1:, :-1].reshape(-1), idx[1:, 1:].reshape(-1)
    return v, torch.cat([torch.stack([a, b, c], 1), torch.stack([b, d, c], 1)])


def real_meshes():
    """{name: (screen verts (N,3), triangles (F,3))} from the assets, or {} when unavailable."""
    root = Path(os.environ.get("FACELIB_ASSETS") or Path(__file__).resolve().parents[2] / "shared" / "assets")
    if not root.is_dir():
        return {}
    os.environ.setdefault("FACELIB_ASSETS", str(root))
    out = {}
    try:
        from facelib.face3d.morphable import MorphableModel

        m = MorphableModel.from_3ddfa(root)
        mean = m.shape()[0]
        v = (mean - mean[torch.unique(m.triangles)].mean(0)) / 1e5
        out["bfm_3ddfa"] = (R.deep3d_screen(v[None])[0], m.triangles)
        from scipy.io import loadmat

        aux = root / "deep3d_bfm_aux"
        idx = loadmat(str(aux / "BFM_front_idx.mat"))["idx"].reshape(-1).astype(np.int64) - 1
        tri = loadmat(str(aux / "facemodel_info.mat"))["tri"].astype(np.int64) - 1
        fv = mean[torch.from_numpy(idx)]
        fv = (fv - fv.mean(0)) / 1e5
        out["front_35709"] = (R.deep3d_screen(fv[None])[0], torch.from_numpy(tri))
    except Exception as exc:  # noqa: BLE001 - a benchmark reports and goes on
        print(f"(real meshes unavailable: {type(exc).__name__}: {exc})")
    return out


def bench(verts, faces, device, repeat, warmup, perspective_correct=False, batch=1):
    verts = verts.to(device)
    faces = faces.to(device)
    g = torch.Generator().manual_seed(0)
    col = (0.3 + 0.5 * torch.rand(batch, verts.shape[0], 3, generator=g)).to(device)
    v = verts[None].repeat(batch, 1, 1).clone().requires_grad_(True)
    c = col.clone().requires_grad_(True)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        elif device == "mps":
            torch.mps.synchronize()

    fw, bw = [], []
    for i in range(warmup + repeat):
        v.grad = None
        c.grad = None
        sync()
        t0 = time.perf_counter()
        out = R.render(v, faces, c, 224, 224, perspective_correct=perspective_correct)
        sync()
        t1 = time.perf_counter()
        out.image.mean().backward()
        sync()
        t2 = time.perf_counter()
        if i >= warmup:
            fw.append((t1 - t0) * 1e3)
            bw.append((t2 - t1) * 1e3)
    tot = [a + b for a, b in zip(fw, bw)]
    return statistics.median(fw), statistics.median(bw), statistics.median(tot), min(tot), int(out.mask.sum())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=1, help="faces per call (times are per call)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    meshes = real_meshes()
    gv, gf = grid_mesh(231)
    if "front_35709" not in meshes:
        meshes["front_35709(grid 189²)"] = grid_mesh(189)
    if "bfm_3ddfa" not in meshes:
        meshes["bfm_3ddfa(grid 231²)"] = (gv, gf)
    meshes["grid_53361"] = (gv, gf)
    print(f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, "
          f"load avg {os.getloadavg()[0]:.2f}, 224x224, batch {args.batch}, median of {args.repeat}")
    print(f"{'mesh':24s} {'verts':>6s} {'tris':>7s} {'pixels':>7s} {'fwd ms':>7s} {'bwd ms':>7s} "
          f"{'total':>7s} {'best':>7s}")
    for name, (v, f) in meshes.items():
        fw, bw, tot, best, px = bench(v, f, args.device, args.repeat, args.warmup, batch=args.batch)
        print(f"{name:24s} {v.shape[0]:6d} {f.shape[0]:7d} {px:7d} {fw:7.1f} {bw:7.1f} {tot:7.1f} {best:7.1f}")


if __name__ == "__main__":
    main()
