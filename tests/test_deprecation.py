"""Renamed names: the parameter ``landmarks`` → ``landmark_source`` and the keyword ``assets_folder=`` →
``assets_dir=``. The old names work for one release with one FutureWarning; both given differently is an error; the
package itself never uses an old name."""
from __future__ import annotations

import ast
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from facelib import assets, cli, study
from facelib.deprecation import RenamedNameConflict, normalise_params, renamed_kwargs
from facelib.errors import FacelibError
from facelib.run import PARAMETER_NAMES, Run

ROOT = Path(__file__).resolve().parent.parent
PARAM_WARNING = (r"parameter 'landmarks' is deprecated, use 'landmark_source' \(same values\); the old name will be "
                 r"removed in the next release")


def _deprecations(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, FutureWarning) and "deprecated" in str(w.message)]


@pytest.fixture
def no_warning():
    """Any warning inside the block fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# ----------------------------------------------------------------------------------------- parameters (dicts)
def test_old_parameter_name_is_mapped_with_one_warning(tmp_path):
    with pytest.warns(FutureWarning, match=PARAM_WARNING) as record:
        run = Run({"out_dir": str(tmp_path / "run"), "backend": "tddfa", "landmarks": "fan"})
    assert len(_deprecations(record)) == 1
    assert run.params["landmark_source"] == "fan" and "landmarks" not in run.params
    # a profile written with the old name: same, and its order is kept
    profile = tmp_path / "old.yaml"
    profile.write_text("run_name: old\nbackend: tddfa\nlandmarks: dlib\nseed: 3\n")
    with pytest.warns(FutureWarning, match=PARAM_WARNING):
        params = study.load_params(profile)
    assert list(params.items()) == [("run_name", "old"), ("backend", "tddfa"), ("landmark_source", "dlib"),
                                    ("seed", 3)]


def test_new_parameter_name_gives_no_warning(tmp_path, no_warning):
    run = Run({"out_dir": str(tmp_path / "run"), "backend": "tddfa", "landmark_source": "dlib"})
    assert run.params["landmark_source"] == "dlib"
    for path in sorted((ROOT / "notebooks" / "params").glob("*.yaml")):  # the committed profiles use the new name
        assert "landmarks" not in study.load_params(path), path.name


def test_both_names_with_different_values_is_one_clear_error(tmp_path):
    with pytest.raises(RenamedNameConflict, match="'landmarks' and 'landmark_source' are both given") as err:
        Run({"out_dir": str(tmp_path / "run"), "landmarks": "fan", "landmark_source": "dlib"})
    assert isinstance(err.value, FacelibError) and err.value.hint == "give only 'landmark_source'"
    with pytest.raises(RenamedNameConflict):
        study.apply_overrides({}, ["landmarks=fan", "landmark_source=dlib"])
    with pytest.warns(FutureWarning):  # the same value twice is not a conflict
        assert normalise_params({"landmarks": "fan", "landmark_source": "fan"}) == {"landmark_source": "fan"}


def test_set_landmarks_works_with_a_warning(tmp_path, monkeypatch):
    with pytest.warns(FutureWarning, match=PARAM_WARNING) as record:
        params = study.apply_overrides({"seed": 0, "landmark_source": "model"}, ["landmarks=dlib", "seed=2"])
    assert params == {"seed": 2, "landmark_source": "dlib"} and len(_deprecations(record)) == 1
    monkeypatch.delenv("FACELIB_DEVICE", raising=False)
    profile = tmp_path / "p.yaml"
    profile.write_text(yaml.safe_dump({"run_name": "p", "landmark_source": "model", "device": "cpu"}))
    with pytest.warns(FutureWarning, match=PARAM_WARNING):
        params, _ = study.prepare_params(profile, sets=["landmarks=fan"], device="cpu")
    assert params["landmark_source"] == "fan" and "landmarks" not in params


def test_papermill_injection_of_the_old_name_is_honoured(tmp_path):
    """The parameters cell sets ``landmark_source = "model"``; papermill ``-p landmarks fan`` adds ``landmarks`` after
    it: the notebook's Run takes the injected value."""
    namespace = {k: None for k in PARAMETER_NAMES} | {"out_dir": str(tmp_path / "run"), "backend": "tddfa",
                                                      "landmark_source": "model", "landmarks": "fan"}
    with pytest.warns(FutureWarning, match=PARAM_WARNING) as record:
        run = Run.from_namespace(namespace)
    assert run.params["landmark_source"] == "fan" and len(_deprecations(record)) == 1
    del namespace["landmarks"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Run.from_namespace(namespace).params["landmark_source"] == "model"


# -------------------------------------------------------------------------------------------- command line
def test_cli_landmarks_option_is_mapped_with_a_warning():
    parser = cli.build_parser()
    with pytest.warns(FutureWarning, match=r"option '--landmarks' is deprecated, use '--landmark-source'"):
        args = cli._renamed_options(parser.parse_args(["assets", "--landmarks", "fan"]))
    assert args.landmark_source == "fan" and "landmarks" not in args
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cli._renamed_options(parser.parse_args(["reconstruct", "--out", "x.parquet"])).landmark_source == "model"
        assert cli._renamed_options(parser.parse_args(["assets", "--landmark-source", "dlib"])).landmark_source == "dlib"


def test_cli_both_options_differently_exits_2(capsys):
    assert cli.main(["assets", "--landmarks", "fan", "--landmark-source", "dlib"]) == 2  # stops before any work
    err = capsys.readouterr().err
    assert "error: options '--landmarks' and '--landmark-source' are both given" in err
    assert "hint: give only '--landmark-source'" in err


# ---------------------------------------------------------------------------------------- keyword arguments
def test_renamed_kwargs_decorator():
    @renamed_kwargs(assets_folder="assets_dir")
    def where(name, assets_dir=None):
        return name, assets_dir

    with pytest.warns(FutureWarning, match=r"keyword argument 'assets_folder' is deprecated, use 'assets_dir'"):
        assert where("x", assets_folder="/a") == ("x", "/a")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert where("x", assets_dir="/a") == where("x", "/a") == ("x", "/a")
    with pytest.raises(RenamedNameConflict, match="'assets_folder' and 'assets_dir' are both given"):
        where("x", assets_folder="/a", assets_dir="/b")


def test_old_assets_keyword_warns_and_gives_the_same_result(assets_dir):
    from facelib.face3d.morphable import load_lm3d_std
    from facelib.face3d.tddfa import coefficient_sigma

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = coefficient_sigma(assets_dir=assets_dir)
        new_lm = load_lm3d_std(assets_dir=assets_dir)
        new_needed = assets.needed("tddfa", landmark_source="fan")
    with pytest.warns(FutureWarning, match="'assets_folder' is deprecated, use 'assets_dir'"):
        old = coefficient_sigma(assets_folder=assets_dir)
    with pytest.warns(FutureWarning, match="'assets_folder' is deprecated"):
        old_lm = load_lm3d_std(assets_folder=assets_dir)
    with pytest.warns(FutureWarning, match="keyword argument 'landmarks' is deprecated, use 'landmark_source'"):
        old_needed = assets.needed("tddfa", landmarks="fan")
    assert all(np.array_equal(a, b) for a, b in zip(old, new)) and np.array_equal(old_lm, new_lm)
    assert old_needed == new_needed and "fan_2d" in new_needed


# ----------------------------------------------------------------------------- the package uses the new names
def _code_sources():
    for folder in ("facelib", "benchmarks", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.name not in ("deprecation.py", "test_deprecation.py"):
                yield str(path.relative_to(ROOT)), path.read_text()
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] == "code":
                yield f"{path.name} cell {i}", "".join(cell["source"])


# what took ``landmarks=`` as the landmark source (elsewhere ``landmarks`` is the 68 points: ``FitResult(landmarks=…)``)
LANDMARK_SOURCE_TAKERS = {"TDDFABackend", "Deep3DBackend", "ICTBackend", "make_backend", "reconstruct_manifest", "needed"}


def test_package_never_passes_an_old_keyword():
    used = []
    for where, source in _code_sources():
        for node in ast.walk(ast.parse(source)):
            callee = getattr(node, "func", None)
            callee = getattr(callee, "id", None) or getattr(callee, "attr", None)
            if isinstance(node, ast.Call) and callee != "renamed_kwargs":
                used += [f"{where}:{node.lineno} {kw.arg}=" for kw in node.keywords if kw.arg == "assets_folder"
                         or kw.arg == "landmarks" and callee in LANDMARK_SOURCE_TAKERS]
            elif isinstance(node, ast.Assign) and ".ipynb" in where:  # a notebook parameter under its old name
                used += [f"{where}:{node.lineno} {t.id} =" for t in node.targets
                         if isinstance(t, ast.Name) and t.id == "landmarks"]
    assert not used, used
