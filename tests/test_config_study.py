import subprocess
import sys

import pytest

from facelib import config, run, study

from .conftest import ROOT


def test_device_resolution(monkeypatch):
    assert config.resolve_device("cpu") == "cpu"
    monkeypatch.setenv("FACELIB_DEVICE", "cpu")
    assert config.resolve_device(None) == "cpu"
    with pytest.raises(ValueError, match="device must be one of"):
        config.resolve_device("tpu")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cuda"):
            config.resolve_device("cuda")
    assert config.resolve_device("auto") in ("cpu", "cuda", "mps")


def test_missing_inputs_lists_data_and_assets(tmp_path, monkeypatch):
    monkeypatch.delenv("FACELIB_KDEF", raising=False)
    monkeypatch.setenv("FACELIB_FEI", str(tmp_path / "nowhere"))
    problems = study.missing_inputs({"assets": str(tmp_path / "no_assets")})
    text = "\n".join(problems)
    assert "FACELIB_KDEF" in text and "kdef.se" in text
    assert "nowhere does not exist" in text
    assert "mb05_120x120.pth" in text and "put it at" in text


def test_reproduce_without_data_stops_with_a_clear_message(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "FACELIB_CACHE": str(tmp_path / "cache"),
           "FACELIB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "facelib", "study", "--params",
                          str(ROOT / "notebooks" / "params" / "paper.yaml")], capture_output=True, text=True,
                         cwd=ROOT, env=env)
    # no dataset → the synthetic default; without model files even that cannot render: say what is missing
    assert out.returncode != 0
    assert "SYNTHETIC" in out.stdout and "FACELIB_KDEF" in out.stdout
    assert "The study cannot start" in out.stderr and "mb05_120x120.pth" in out.stderr
    assert "data/README.md" in out.stderr


def test_reproduce_with_a_wrong_data_folder_names_it(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "FACELIB_CACHE": str(tmp_path / "cache"),
           "FACELIB_OFFLINE": "1", "FACELIB_KDEF": str(tmp_path / "no_kdef_here")}
    out = subprocess.run([sys.executable, "-m", "facelib", "study", "--params",
                          str(ROOT / "notebooks" / "params" / "paper.yaml")], capture_output=True, text=True,
                         cwd=ROOT, env=env)
    assert out.returncode != 0
    assert "no_kdef_here does not exist" in out.stderr and "FACELIB_FEI" in out.stderr


def test_parameter_sets_share_the_notebook_parameters():
    for name in ("paper.yaml", "ci.yaml"):
        params = study.load_params(ROOT / "notebooks" / "params" / name)
        unknown = set(params) - set(run.PARAMETER_NAMES)
        assert not unknown, f"{name}: parameters no notebook declares: {unknown}"


def test_old_landmarks_name_is_rejected_with_one_line_naming_landmark_source(capsys):
    with pytest.raises(SystemExit) as err:
        study.apply_overrides({"landmark_source": "model"}, ["landmarks=fan"])
    message = str(err.value.code)
    assert "\n" not in message and message.startswith("--set landmarks: not a notebook parameter")
    assert "did you mean 'landmark_source'?" in message
    assert study.apply_overrides({"landmark_source": "model"}, ["landmark_source=fan"]) == {"landmark_source": "fan"}
    from facelib import cli

    parser = cli.build_parser()
    assert parser.parse_args(["assets"]).landmark_source == "model"
    assert parser.parse_args(["assets", "--landmark-source", "dlib"]).landmark_source == "dlib"
    with pytest.raises(SystemExit):
        parser.parse_args(["assets", "--landmarks", "fan"])
    assert "unrecognized arguments: --landmarks" in capsys.readouterr().err


def test_pinned_versions_agree_with_lock():
    import tomllib

    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lock = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split(";")[0].strip().split("==")
            lock[name.lower().replace("_", "-")] = version
    for pin in pins:
        name, version = pin.split("==")
        assert lock[name.lower()] == version, f"{name}: pyproject {version} vs lock {lock[name.lower()]}"


def test_face_alignment_is_installed_without_its_opencv_python():
    """face-alignment's metadata asks for opencv-python, which would sit beside opencv-python-headless."""
    lock = (ROOT / "requirements.lock").read_text().lower().replace("_", "-")
    assert "\nface-alignment==" not in lock and "\nopencv-python==" not in lock
    assert "face-alignment==" in (ROOT / "requirements-nodeps.txt").read_text()
    from importlib.metadata import PackageNotFoundError, version

    with pytest.raises(PackageNotFoundError):
        version("opencv-python")
