"""`make gpu-check`: its profile (notebooks/params/gpu_check.yaml), its script (benchmarks/gpu_check.py) and target.
Nothing here needs a GPU: the GPU run itself is done by `make gpu-check` on a machine that has one."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from facelib.classify.plan import study_plan
from facelib.fitting.crossfit import make_settings
from facelib.run import PARAMETER_NAMES
from facelib.study import PARAMS_DIR, load_params, missing_inputs, prepare_params

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
PROFILE = PARAMS_DIR / "gpu_check.yaml"


def test_no_cuda_is_one_clear_line():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    p = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2 and p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: CUDA is not available") and "Traceback" not in p.stderr


def test_profile_is_paper_yaml_with_every_trim_written_in_its_header():
    gpu, paper = load_params(PROFILE), load_params(PARAMS_DIR / "paper.yaml")
    assert set(gpu) <= set(PARAMETER_NAMES) and set(gpu) == set(paper)
    assert gpu["image_size"] == 224 and gpu["device"] == "cuda" and gpu["rnet"] is True
    assert "resnet34" in gpu["models"] and "image" in gpu["image_baseline"]     # both ResNet-34 arms
    header = "\n".join(ln for ln in PROFILE.read_text().splitlines() if ln.startswith("#"))
    trimmed = header.split("TRIMMED", 1)[1].split("ESTIMATE", 1)[0]
    changed = [k for k in gpu if gpu[k] != paper[k] and k not in ("run_name", "device")]
    for k in changed:
        assert re.search(rf"\b{k}\b", trimmed), f"{k} differs from paper.yaml but the header does not say so"
    for k, v in gpu["rnet_settings"].items():
        if paper["rnet_settings"].get(k, v) != v or k not in paper["rnet_settings"]:
            assert re.search(rf"\b{k}\b", trimmed), f"rnet_settings.{k} trimmed without a word in the header"
    assert "ESTIMATE" in header and "not a measurement" in header


def test_profile_validates_like_the_runner_does(monkeypatch):
    params, profile = prepare_params(PROFILE, "gpu_check", ["seed=0"], device="cpu")   # cuda is absent here
    assert profile == PROFILE and params["run_name"] == "gpu_check" and params["device"] == "cpu"
    settings = {k: v for k, v in params["rnet_settings"].items() if k not in ("parts", "texture", "texture_images")}
    assert make_settings(settings).epochs == 4
    plan = study_plan(params["models"], params["image_baseline"])
    assert {(e["input"], e["model"]) for e in plan} >= {("image", "resnet34"), ("alpha", "resnet34"),
                                                       ("beta", "resnet34"), ("dlib", "logreg")}
    if all(os.environ.get(v) for v in ("FACELIB_KDEF", "FACELIB_FEI", "FACELIB_ASSETS")):
        monkeypatch.setitem(params, "assets", os.environ["FACELIB_ASSETS"])
        assert missing_inputs(params) == []


def test_summary_prints_each_notebook_and_table1(tmp_path):
    run = tmp_path / "gpu_check"
    (run / "tables").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"status": "failed", "device": "cuda", "notebook": "04_classification",
                                              "profile": "notebooks/params/gpu_check.yaml", "overrides": [],
                                              "elapsed": {"01_data_preparation": 12.5, "02_reconstruction": 170.0}}))
    p = subprocess.run([sys.executable, str(SCRIPT), "--summary", str(run)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0
    assert re.search(r"01_data_preparation\s+12\.5 s", p.stdout) and re.search(r"total\s+182\.5 s", p.stdout)
    assert "stopped in 04_classification" in p.stdout and "no Table 1" in p.stdout
    (run / "tables" / "table1.md").write_text("| task | accuracy |\n|---|---|\n| identity | 0.9 |\n")
    p = subprocess.run([sys.executable, str(SCRIPT), "--summary", str(run)], capture_output=True, text=True,
                       timeout=60)
    assert "| identity | 0.9 |" in p.stdout
    p = subprocess.run([sys.executable, str(SCRIPT), "--summary", str(tmp_path / "none")], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and p.stderr.startswith("error: ") and len(p.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_target_runs_the_script_then_the_profile_on_cuda_then_the_summary():
    p = subprocess.run(["make", "-n", "gpu-check", f"GPU_CHECK_PY={sys.executable}"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    i, j, k = (out.index(s) for s in ("benchmarks/gpu_check.py\n", "--params notebooks/params/gpu_check.yaml",
                                       "--summary reports/runs/gpu_check"))
    assert i < j < k and "--device cuda" in out and "--run gpu_check" in out and "timeout" in out
    assert yaml.safe_load(PROFILE.read_text())["run_name"] == "gpu_check"
