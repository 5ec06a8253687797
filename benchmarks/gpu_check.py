"""GPU check, part 1 and 3 of ``make gpu-check`` (part 2 is the study on notebooks/params/gpu_check.yaml).

``python benchmarks/gpu_check.py``            versions, the GPU, and training-step timings (about a minute):
    torch / CUDA / cuDNN versions, device name, memory; the study's image network (torchvision ResNet-34, 224 px,
    batch 32, forward + backward + AdamW) in fp32, with bf16 autocast, and with bf16 autocast + channels_last;
    the vector network (1-D ResNet-34 on 40-d vectors, batch 32 and 128) in fp32; the host side of one image batch
    (uint8 → normalised float on the CPU, copy to the GPU). All under the study's determinism settings
    (``trainer.set_seed``). Printed first, so a short GPU lease yields numbers even if the study fails.
``python benchmarks/gpu_check.py --summary reports/runs/gpu_check``   each notebook's time (``run.json``) and
    Table 1 (``tables/table1.md``) of a run, whatever its status.

Without CUDA it prints one line (``error: …``) and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's facelib

NO_CUDA = 2


def _error(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return NO_CUDA


def _time_steps(step, n: int = 20, warmup: int = 5) -> float:
    import torch

    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n


def _train_step(model, x, y, amp: bool):
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    return step


def benchmark() -> int:
    try:
        import torch
    except ImportError as exc:
        return _error(f"torch is not installed ({exc}); run `make env` first")
    if not torch.cuda.is_available():
        return _error(f"CUDA is not available (torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
                      "make gpu-check needs an NVIDIA GPU")
    from facelib.classify.images import to_tensor
    from facelib.classify.models import image_resnet34, vector_model
    from facelib.classify.trainer import set_seed

    dev = torch.device("cuda")
    p = torch.cuda.get_device_properties(dev)
    print(f"[gpu-check] torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    print(f"[gpu-check] device {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}, "
          f"{p.multi_processor_count} SMs; bf16 supported: {torch.cuda.is_bf16_supported()}")
    set_seed(0)   # the study's settings: deterministic kernels, cudnn.benchmark off
    print(f"[gpu-check] study settings: cudnn.deterministic={torch.backends.cudnn.deterministic}, "
          f"cudnn.benchmark={torch.backends.cudnn.benchmark}, cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, "
          f"matmul TF32={torch.backends.cuda.matmul.allow_tf32}")

    B, S = 32, 224
    x = torch.randn(B, 3, S, S, device=dev)
    y = torch.randint(0, 20, (B,), device=dev)
    times = {}
    for name, amp, cl in (("fp32", False, False), ("bf16 autocast", True, False),
                          ("bf16 autocast + channels_last", True, True)):
        model = image_resnet34(20).to(dev)
        xx = x
        if cl:
            model = model.to(memory_format=torch.channels_last)
            xx = x.contiguous(memory_format=torch.channels_last)
        times[name] = _time_steps(_train_step(model, xx, y, amp))
        print(f"[gpu-check] image ResNet-34 {S} px, batch {B}, {name:30s}: {1e3 * times[name]:7.1f} ms / step, "
              f"{1e3 * times[name] / B:6.2f} ms / picture ({times['fp32'] / times[name]:.2f}× fp32)", flush=True)
    del model
    import numpy as np

    host = np.random.default_rng(0).integers(0, 256, (B, S, S, 3), dtype=np.uint8)
    t0 = time.perf_counter()
    for _ in range(10):
        to_tensor(host).to(dev)
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / 10
    print(f"[gpu-check] host side of one image batch (to_tensor on the CPU + copy): {1e3 * dt:.1f} ms "
          f"({1e3 * dt / B:.2f} ms / picture)", flush=True)
    for bs in (32, 128):
        v = vector_model("resnet34", 40, 20).to(dev)
        step = _train_step(v, torch.randn(bs, 40, device=dev), torch.randint(0, 20, (bs,), device=dev), False)
        t = _time_steps(step, n=50, warmup=10)
        print(f"[gpu-check] vector ResNet-34 (40-d), batch {bs:3d}, fp32: {1e3 * t:6.2f} ms / step", flush=True)
    return 0


def summary(run: Path) -> int:
    """Each notebook's time and Table 1 of a run folder."""
    status_file = run / "run.json"
    if not status_file.is_file():
        return _error(f"{status_file} not found: the study did not start")
    st = json.loads(status_file.read_text())
    print(f"[gpu-check] run {run.name}: status {st.get('status')}, device {st.get('device')}, "
          f"profile {st.get('profile')}, overrides {st.get('overrides') or []}")
    elapsed = st.get("elapsed") or {}
    for nb, sec in elapsed.items():
        print(f"[gpu-check]   {nb:28s} {sec:8.1f} s")
    if elapsed:
        print(f"[gpu-check]   {'total':28s} {sum(elapsed.values()):8.1f} s")
    if st.get("status") != "finished" and st.get("notebook"):
        print(f"[gpu-check]   stopped in {st['notebook']}")
    t1 = run / "tables" / "table1.md"
    if t1.is_file():
        print(f"\n[gpu-check] Table 1 ({t1}):\n")
        print(t1.read_text())
    else:
        print(f"[gpu-check] no Table 1 ({t1} absent)")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--summary", metavar="RUN_DIR", help="print a run's notebook times and Table 1 instead")
    args = ap.parse_args(argv)
    return summary(Path(args.summary)) if args.summary else benchmark()


if __name__ == "__main__":
    sys.exit(main())
