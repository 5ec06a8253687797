"""nbval runs the committed notebooks (executed with notebooks/params/ci.yaml on the dev data) and compares their
outputs. Those outputs hold only for the data they were made from: ``dev_data_fingerprint.json`` records it
(``facelib.run.data_fingerprint`` of each folder). With no data, or other data configured (a user's full KDEF in
FACELIB_KDEF), the notebooks are skipped with a one-line reason; the unit tests in tests/ still run."""
import json
import os
from pathlib import Path

import pytest

from facelib.run import data_fingerprint

_HERE = Path(__file__).resolve().parent
_SHARED = _HERE.parent.parent / "shared"
_DEFAULTS = {"FACELIB_KDEF": _SHARED / "data" / "kdef_dev" / "KDEF", "FACELIB_FEI": _SHARED / "data" / "fei",
             "FACELIB_ASSETS": _SHARED / "assets"}
FINGERPRINT_FILE = _HERE / "dev_data_fingerprint.json"
DATA_VARS = ("FACELIB_KDEF", "FACELIB_FEI")


def pytest_configure(config):
    for var, default in _DEFAULTS.items():
        if not os.environ.get(var) and default.exists():
            os.environ[var] = str(default)  # inherited by the notebook kernels nbval starts


def skip_reason(environ=os.environ, expected_file: Path = FINGERPRINT_FILE) -> str | None:
    """Why the committed notebooks cannot be compared here, or None when the configured data is the dev data."""
    missing = [v for v in _DEFAULTS if not environ.get(v) or not Path(environ[v]).exists()]
    if missing:
        return f"notebooks need the dev data: {', '.join(missing)} not set or absent"
    expected = json.loads(expected_file.read_text())
    for var in DATA_VARS:
        found = data_fingerprint(environ[var])
        if found["sha256"] != expected[var]["sha256"]:
            return (f"committed notebook outputs were made from the dev data ({expected[var]['files']} files); "
                    f"{var}={environ[var]} holds other data ({found['files']} files)")
    return None


def pytest_collection_modifyitems(config, items):
    notebooks = [item for item in items if str(item.fspath).endswith(".ipynb")]
    if not notebooks:
        return
    reason = skip_reason()
    if reason:
        skip = pytest.mark.skip(reason=reason)
        for item in notebooks:
            item.add_marker(skip)
