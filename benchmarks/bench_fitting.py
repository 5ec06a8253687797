"""Seconds per image of facelib.fitting.fitter: landmark mode and full mode, batch 8, 2 threads, on KDEF dev images.

    python benchmarks/bench_fitting.py [--iterations-landmarks 60] [--iterations-full 40] [--size 160] [--ict]

``--ict`` also times the ICT Face Model (``facelib.fitting.ict_fit``: α 100, β 53, 6706-vertex narrow face area),
landmark mode from its neutral start (``ict_fit.ITERATIONS``) and full mode.

Uses FACELIB_KDEF / FACELIB_ASSETS (or ../shared). The tddfa start comes from the backend (detect + regress);
the landmark targets are the backend's own landmarks displaced by 2 px (the timing does not depend on them).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
for var, sub in (("FACELIB_KDEF", "data/kdef_dev/KDEF"), ("FACELIB_ASSETS", "assets")):
    if not os.environ.get(var) and (ROOT.parent / "shared" / sub).exists():
        os.environ[var] = str(ROOT.parent / "shared" / sub)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations-landmarks", type=int, default=60)
    ap.add_argument("--iterations-full", type=int, default=40)
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--ict", action="store_true", help="also time the ICT Face Model (ict backend)")
    args = ap.parse_args()
    torch.set_num_threads(2)

    from facelib.fitting import fitter
    from facelib.face3d.reconstruct import TDDFABackend
    from facelib.face3d import cameras
    from facelib.face3d.cameras import crop_box

    root = Path(os.environ["FACELIB_KDEF"])
    paths = sorted(root.glob("*/*S.JPG"))[: args.batch]
    imgs = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths]
    be = TDDFABackend(device=args.device)
    boxes = [b for b, _ in be.detect(imgs)]
    out = be.regress(imgs, boxes)
    rois = np.stack([crop_box(b) for b in boxes])
    lm = np.stack([cameras.landmarks_136_to_68(v) for v in out["landmarks"]]) + 2.0
    init = {k: out[k] for k in ("alpha", "beta", "pose")}
    f = fitter.Fitter(device=args.device, image_size=args.size)
    tl = cameras.image_to_crop(lm, rois, args.size)
    f.fit(init, rois, tl, mode="landmarks", iterations=2)  # warm-up
    t = time.perf_counter()
    f.fit(init, rois, tl, mode="landmarks", iterations=args.iterations_landmarks)
    dt = (time.perf_counter() - t) / len(imgs)
    print(f"landmarks mode: {dt:.3f} s/image ({args.iterations_landmarks} iterations, batch {len(imgs)}, 2 threads)")
    crops = np.stack([cameras.crop_rgb(im, r, args.size) for im, r in zip(imgs, rois)])
    t = time.perf_counter()
    f.fit(init, rois, tl, crops, mode="full", iterations=args.iterations_full)
    dt = (time.perf_counter() - t) / len(imgs)
    print(f"full mode:      {dt:.3f} s/image ({args.iterations_full} iterations, {args.size}² crop, batch "
          f"{len(imgs)}, 2 threads, no skin model)")
    if args.ict:
        from facelib.fitting.ict_fit import ITERATIONS, ICTFitter

        icf = ICTFitter(device=args.device, image_size=args.size)
        start = icf.initial(out["pose"])
        icf.fitter.fit(start, rois, tl, mode="landmarks", iterations=2)  # warm-up
        t = time.perf_counter()
        res = icf.fitter.fit(start, rois, tl, mode="landmarks", iterations=ITERATIONS["landmarks"])
        dt = (time.perf_counter() - t) / len(imgs)
        print(f"ict landmarks:  {dt:.3f} s/image ({ITERATIONS['landmarks']} iterations from the neutral start)")
        t = time.perf_counter()
        icf.fitter.fit({"alpha": res.alpha, "beta": res.beta, "pose": res.pose}, rois, tl, crops, mode="full",
                       iterations=args.iterations_full)
        dt = (time.perf_counter() - t) / len(imgs)
        print(f"ict full:       {dt:.3f} s/image ({args.iterations_full} iterations after the landmark fit, "
              f"{args.size}² crop, no skin model)")


if __name__ == "__main__":
    main()
