"""Throughput of the tddfa backend's image → coefficients path on the dev KDEF, with a per-stage breakdown.

    python benchmarks/bench_reconstruct.py [--kdef DIR] [--limit N] [--batch 32] [--threads 2] [--max-side 384]
                                           [--fei DIR] [--check]

Stages (wall time, summed over batches): decode (cv2.imread, full resolution, BGR), detect (shrink to the
detection scale + FaceBoxes + NMS, batched), crop/regress (3DDFA crop rule, 120×120 resize, mb05 forward,
batched), landmarks (de-normalise the 62 parameters, BFM keypoints → 68 image-pixel landmarks).
Runs with ``torch.set_num_threads(threads)`` and OpenCV limited to the same number of threads.

``--check`` also reports faces found (exactly one expected per non-black KDEF image; AF10AFFR is black), the FEI
count (detector or whole-frame fallback, when ``--fei`` or ``FACELIB_FEI`` is given) and the mean distance
between the BFM-keypoint landmarks and the unused ``fc_lm`` head.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from facelib.face3d.detect import FaceBoxesDetector, pick_face  # noqa: E402
from facelib.face3d.tddfa import TDDFARegressor, crop_and_resize  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def default_dir(var: str, rel: str) -> Path | None:
    v = os.environ.get(var)
    if v:
        return Path(v)
    p = ROOT.parent / "shared" / rel
    return p if p.exists() else None


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def run(paths: list[Path], det: FaceBoxesDetector, reg: TDDFARegressor, batch: int) -> dict:
    t = {"decode": 0.0, "detect": 0.0, "crop/regress": 0.0, "landmarks": 0.0}
    n_faces, counts, no_face, lm_gap, sources = 0, [], [], [], {}
    t_all, cpu_all = time.perf_counter(), time.process_time()
    for start in range(0, len(paths), batch):
        chunk = paths[start:start + batch]
        t0 = time.perf_counter()
        images = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in chunk]
        t1 = time.perf_counter()
        dets = det(images)
        picks = [pick_face(d, im.shape) for d, im in zip(dets, images)]
        t2 = time.perf_counter()
        keep = [i for i, (b, _) in enumerate(picks) if b is not None]
        crops, rois = [], []
        for i in keep:
            c, r = crop_and_resize(images[i], picks[i][0])
            crops.append(c)
            rois.append(r)
        params, lm_raw = reg.forward_crops(crops)
        t3 = time.perf_counter()
        out = reg.decode(params, lm_raw, np.asarray(rois).reshape(-1, 4)) if keep else None
        t4 = time.perf_counter()
        t["decode"] += t1 - t0
        t["detect"] += t2 - t1
        t["crop/regress"] += t3 - t2
        t["landmarks"] += t4 - t3
        n_faces += len(keep)
        counts += [len(d) for d in dets]
        for (b, src), p in zip(picks, chunk):
            sources[src] = sources.get(src, 0) + 1
            if b is None:
                no_face.append(p.stem)
        if out is not None:
            a = out["landmarks"].reshape(-1, 2, 68)
            b = out["landmarks_fc"].reshape(-1, 2, 68)
            lm_gap.append(np.linalg.norm(a - b, axis=1).mean(1))
    total, cpu = time.perf_counter() - t_all, time.process_time() - cpu_all
    return {"n": len(paths), "total": total, "cpu": cpu, "stages": t, "faces": n_faces, "counts": np.array(counts),
            "no_face": no_face, "sources": sources, "lm_gap": np.concatenate(lm_gap) if lm_gap else np.zeros(0)}


def report(name: str, r: dict) -> None:
    n = r["n"]
    print(f"{name}: {n} images in {r['total']:.2f} s = {n / r['total']:.1f} images/s "
          f"(process CPU time {1000 * r['cpu'] / n:.1f} ms/image; wall time is sensitive to other load)")
    for k, v in r["stages"].items():
        print(f"  {k:13s} {1000 * v / n:6.2f} ms/image  ({100 * v / r['total']:4.1f}%)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kdef", type=Path, default=default_dir("FACELIB_KDEF", "data/kdef_dev/KDEF"))
    ap.add_argument("--fei", type=Path, default=default_dir("FACELIB_FEI", "data/fei"))
    ap.add_argument("--assets", default=os.environ.get("FACELIB_ASSETS") or default_dir("", "assets"))
    ap.add_argument("--limit", type=int, default=0, help="first N images only (0: all)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-side", type=int, default=384, help="detection-scale long side (0: 3DDFA_V2's 720×1080)")
    ap.add_argument("--repeat", type=int, default=1, help="timed passes (the best is reported)")
    ap.add_argument("--check", action="store_true", help="also report face counts and the FEI fallback count")
    args = ap.parse_args(argv)
    if args.kdef is None or not args.kdef.exists():
        print("no KDEF folder (set FACELIB_KDEF or --kdef)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    det = FaceBoxesDetector(assets_dir=args.assets, max_side=args.max_side or None)
    reg = TDDFARegressor(assets_dir=args.assets)
    paths = list_images(args.kdef)
    if args.limit:
        paths = paths[:args.limit]
    run(paths[:args.batch], det, reg, args.batch)  # warm-up: oneDNN primitives, priors
    best = min((run(paths, det, reg, args.batch) for _ in range(args.repeat)), key=lambda r: r["total"])
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, detection long side "
          f"{args.max_side or 'tddfa 720x1080'}")
    report("KDEF", best)
    c = best["counts"]
    print(f"  faces: {best['faces']}/{best['n']} images with a face; detections per image: "
          f"0→{int((c == 0).sum())}, 1→{int((c == 1).sum())}, ≥2→{int((c >= 2).sum())}; no face: {best['no_face']}")
    if len(best["lm_gap"]):
        g = best["lm_gap"]
        print(f"  fc_lm head vs BFM-keypoint landmarks: mean {g.mean():.2f} px, 95th pct {np.percentile(g, 95):.2f}"
              f" px, max {g.max():.2f} px")
    if args.check and args.fei is not None and args.fei.exists():
        fei = list_images(args.fei)
        r = run(fei, det, reg, args.batch)
        report("FEI", r)
        print(f"  boxes: {r['faces']}/{r['n']} ({r['sources']}); none: {r['no_face']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
