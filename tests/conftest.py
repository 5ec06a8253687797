"""Shared fixtures. Real data comes from the same environment variables a user sets (FACELIB_KDEF, FACELIB_FEI,
FACELIB_ASSETS); when unset, ``../shared`` beside the checkout is used if present. Tests needing real data skip
with the reason when neither exists (a user's fresh clone has no ../shared)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FACELIB_SHARED", ROOT.parent / "shared"))

_DEFAULTS = {
    "FACELIB_KDEF": SHARED / "data" / "kdef_dev" / "KDEF",
    "FACELIB_FEI": SHARED / "data" / "fei",
    "FACELIB_ASSETS": SHARED / "assets",
}


def _real(var: str) -> Path:
    value = os.environ.get(var) or str(_DEFAULTS[var])
    path = Path(value)
    if not path.exists():
        pytest.skip(f"{var} not set and {_DEFAULTS[var]} absent: real-data test skipped")
    return path


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Never touch the user's ~/.cache/facelib and never try the network from tests."""
    old = {k: os.environ.get(k) for k in ("FACELIB_CACHE", "FACELIB_OFFLINE")}
    os.environ["FACELIB_CACHE"] = str(tmp_path_factory.mktemp("facelib_cache"))
    os.environ["FACELIB_OFFLINE"] = "1"
    for var, default in _DEFAULTS.items():  # the same variables a user sets, filled from ../shared
        if not os.environ.get(var) and default.exists():
            os.environ[var] = str(default)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def kdef_root() -> Path:
    return _real("FACELIB_KDEF")


@pytest.fixture(scope="session")
def fei_root() -> Path:
    return _real("FACELIB_FEI")


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    return _real("FACELIB_ASSETS")


def face_like_image(seed: int = 0, h: int = 96, w: int = 80, gray: bool = False) -> np.ndarray:
    """A textured non-black test image (not a face): for loader tests that only need a valid, distinct file."""
    rng = np.random.default_rng(seed)
    img = rng.integers(40, 220, size=(h, w) if gray else (h, w, 3), dtype=np.uint8)
    return img


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: on a shared 2-core machine two threads contend and run ~10x slower.
    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
