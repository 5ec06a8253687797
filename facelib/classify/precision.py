"""Numeric precision of a training run, chosen by the device and the input (the one place that decides it).

``choose_precision(device, kind, image_size, precision="auto")`` returns a :class:`Precision`: the compute dtype
of the forward pass under ``torch.autocast`` (``fp32`` = no autocast), whether image batches and the network use
``channels_last``, whether a gradient scaler is needed (fp16 only), and why. ``auto`` picks:

* **CPU** — bf16 autocast + ``channels_last`` for pictures of at least ``CPU_BF16_MIN_IMAGE_SIZE`` px when the CPU
  has native bf16 (AVX512-BF16 or AMX). Measured on a 2-core AMD EPYC with AVX512-BF16 (forward + backward +
  AdamW): torchvision ResNet-34 at 224 px 59 → 31 ms/picture (1.9×); at 48 px 5.0 → 5.4 ms (no gain); the 1-D
  vector ResNet-34 is slower in bf16 (1.5 → 1.7 ms/vector). Everything else stays fp32.
  ``benchmarks/bench_train.py`` re-measures this.
* **CUDA** — automatic mixed precision: bf16 where the GPU supports it (no scaler needed), else fp16 with a
  gradient scaler; ``channels_last`` for pictures.
* **MPS** — fp16 autocast for pictures where this torch can autocast on MPS, with a gradient scaler; vectors fp32
  (MPS has no float64 at all; nothing here ever asks for it).

``precision`` overrides the choice (``fp32``, ``bf16``, ``fp16``); the name used goes into every training result
(key ``precision``) and Table 2. Losses and the returned validation / test logits are float32 whatever the forward
pass ran in.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CPU_BF16_MIN_IMAGE_SIZE = 128  # bf16 pays at 224 px (1.9×), not at 48 px (measured); between: assumed from 128
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX tiles), where bf16 autocast can pay."""
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(torch.cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:  # pragma: no cover — an old torch without the probe
            pass
    return False


def _mps_autocast_ok() -> bool:
    try:
        with torch.autocast("mps", dtype=torch.float16):
            pass
        return True
    except Exception:
        return False


@dataclass(frozen=True)
class Precision:
    """What a training run computes in: ``name`` (``fp32``/``bf16``/``fp16``), on ``device_type``."""

    name: str
    device_type: str
    channels_last: bool = False
    reason: str = ""

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.name]

    def autocast(self):
        """Context for the forward pass (a no-op at fp32)."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def scaler(self):
        """A gradient scaler for fp16 on an accelerator (None otherwise: bf16 has fp32's range)."""
        if self.name != "fp16" or self.device_type == "cpu":
            return None
        try:
            return torch.amp.GradScaler(self.device_type)
        except Exception:  # pragma: no cover — a torch whose scaler does not know this device
            return None

    def memory_format(self, ndim: int):
        return torch.channels_last if (self.channels_last and ndim == 4) else torch.contiguous_format


def choose_precision(device: str, kind: str, image_size: int | None = None, precision: str | None = "auto"
                     ) -> Precision:
    """The precision for training a ``kind`` (``vector``/``image``) model on ``device`` (see the module doc)."""
    p = (precision or "auto").strip().lower()
    if p not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    dev = str(device).split(":")[0]
    image = kind == "image"
    size = int(image_size or 0)
    big = image and size >= CPU_BF16_MIN_IMAGE_SIZE
    if p != "auto":
        cl = image and (dev != "cpu" or (p == "bf16" and big))
        return Precision(p, dev, channels_last=cl, reason="requested")
    if dev == "cuda":
        bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        return Precision("bf16" if bf16 else "fp16", dev, channels_last=image,
                         reason="CUDA mixed precision" + ("" if bf16 else " (fp16 + gradient scaler)"))
    if dev == "mps":
        if image and _mps_autocast_ok():
            return Precision("fp16", dev, channels_last=False, reason="MPS fp16 autocast for pictures")
        return Precision("fp32", dev, reason="MPS: vectors stay fp32" if not image else "MPS: no autocast here")
    if big and cpu_has_native_bf16():
        return Precision("bf16", dev, channels_last=True,
                         reason=f"CPU with native bf16, pictures ≥ {CPU_BF16_MIN_IMAGE_SIZE} px")
    why = ("vectors: fp32 is faster" if not image else
           f"pictures < {CPU_BF16_MIN_IMAGE_SIZE} px: bf16 does not pay" if not big else "CPU without native bf16")
    return Precision("fp32", dev, reason=why)
