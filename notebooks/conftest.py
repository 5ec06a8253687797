"""nbval runs the committed notebooks (executed with notebooks/params/ci.yaml) and compares their outputs.
They need the dev data; without it (a user's fresh clone) they are skipped with the reason."""
import os
from pathlib import Path

import pytest

_SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
_DEFAULTS = {"FACELIB_KDEF": _SHARED / "data" / "kdef_dev" / "KDEF", "FACELIB_FEI": _SHARED / "data" / "fei",
             "FACELIB_ASSETS": _SHARED / "assets"}


def pytest_configure(config):
    for var, default in _DEFAULTS.items():
        if not os.environ.get(var) and default.exists():
            os.environ[var] = str(default)  # inherited by the notebook kernels nbval starts


def pytest_collection_modifyitems(config, items):
    missing = [v for v in _DEFAULTS if not os.environ.get(v) or not Path(os.environ[v]).exists()]
    if not missing:
        return
    skip = pytest.mark.skip(reason=f"notebooks need the dev data: {', '.join(missing)} not set or absent")
    for item in items:
        if str(item.fspath).endswith(".ipynb"):
            item.add_marker(skip)
