"""One place for the study's configuration: environment variables, folders, device.

Every entry point (Makefile, CLI, papermill parameters, tests) reads the same variables:

- ``FACELIB_KDEF``   folder in KDEF's official layout (``AF01/AF01ANS.JPG``) or flat
- ``FACELIB_FEI``    folder holding the FEI images, with ``fei_gender.csv`` inside it or beside it
- ``FACELIB_ASSETS`` pre-seeded asset folder laid out like the manifest (``3ddfa_v2/…``, ``bfm_3ddfa/…``)
- ``FACELIB_CACHE``  user cache for assets and derived files (default ``~/.cache/facelib``)
- ``FACELIB_DEVICE`` ``cpu``, ``cuda``, ``mps`` or ``auto``
"""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT / "data"
REPORTS_DIR = PROJECT_ROOT / "reports"

DEVICES = ("cpu", "cuda", "mps", "auto")


def env_path(name: str) -> Path | None:
    """The folder an environment variable names, or None when it is unset or empty."""
    value = os.environ.get(name, "").strip()
    return Path(value).expanduser() if value else None


def kdef_root() -> Path | None:
    return env_path("FACELIB_KDEF")


def fei_root() -> Path | None:
    return env_path("FACELIB_FEI")


def assets_dir() -> Path | None:
    return env_path("FACELIB_ASSETS")


def cache_dir() -> Path:
    return env_path("FACELIB_CACHE") or Path.home() / ".cache" / "facelib"


def resolve_device(device: str | None = None) -> str:
    """Turn ``cpu``/``cuda``/``mps``/``auto`` (or ``FACELIB_DEVICE``) into a torch device string.

    An explicitly requested accelerator that is not available is an error rather than a silent
    fallback: a study that claims to have run on cuda must have run on cuda.
    """
    import torch  # torch (seconds to import): config is read by every light entry point

    device = (device or os.environ.get("FACELIB_DEVICE") or "auto").strip().lower()
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError("device 'mps' requested but torch.backends.mps.is_available() is False")
    return device
