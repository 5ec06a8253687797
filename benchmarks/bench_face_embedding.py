"""Forward + backward time of dlib's face-recognition ResNet in PyTorch (``facelib.fitting.face_embedding``) on CPU.

Timed: one 150×150 chip (``--batch``) → 128-d descriptor → 1 − cos to a fixed descriptor → backward to the chip
(``chip``), and the same through the differentiable crop from a 224×224 image (``embed``). Medians over --repeat
runs after --warmup runs; also the .dat parse + model build time.

    python benchmarks/bench_face_embedding.py [--threads 2] [--repeat 20] [--batch 1]

On a busy 2-core machine 2 threads can be several times slower than 1 (OpenMP threads wait for a busy core);
compare with --threads 1 and look at the printed load average.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from facelib.fitting import face_embedding as fe  # noqa: E402


def timeit(fn, warmup: int, repeat: int) -> float:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)

    t0 = time.perf_counter()
    model = fe.load_dlib_resnet()
    t_load = time.perf_counter() - t0
    target = torch.randn(1, 128)
    chip = torch.rand(a.batch, 3, 150, 150) * 255
    image = torch.rand(a.batch, 3, 224, 224) * 255
    lm = torch.tensor([[150.0, 90], [132, 92], [74, 90], [92, 92], [112, 130]]).expand(a.batch, 5, 2)

    def fwd():
        with torch.no_grad():
            model(chip)

    def fwd_bwd():
        x = chip.clone().requires_grad_(True)
        fe.perceptual_distance(model(x), target).sum().backward()

    def embed_fwd_bwd():
        x = image.clone().requires_grad_(True)
        fe.perceptual_distance(fe.embed(x, lm, model), target).sum().backward()

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {a.batch}, load avg {load:.2f}")
    print(f"parse .dat + build model: {t_load * 1e3:.0f} ms ({model.num_conv_layers} conv layers)")
    print(f"forward (no grad), 150x150 chip:          {timeit(fwd, a.warmup, a.repeat) * 1e3:7.1f} ms")
    print(f"forward + backward to chip:               {timeit(fwd_bwd, a.warmup, a.repeat) * 1e3:7.1f} ms")
    print(f"crop 224x224 + forward + backward to image: {timeit(embed_fwd_bwd, a.warmup, a.repeat) * 1e3:5.1f} ms")


if __name__ == "__main__":
    main()
