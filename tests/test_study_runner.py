"""The study runner: --set overrides, --device, the profile chosen by device, run status (finished / failed at
notebook N), one run in reports/tables, the CLI's help, the assets command, and nbval skipping other data."""
from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest
import yaml

from facelib import config, study
from facelib.cli import build_parser
from facelib.report import tables
from facelib.report.index import quiet_stderr
from facelib.errors import format_error
from facelib.run import PARAMETER_NAMES, MissingRunInputs, Run, read_status

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------------- overrides
def test_set_overrides_parse_yaml_values():
    params = study.apply_overrides({"seed": 0, "models": ["resnet34"]},
                                   ["seed=1", "models=[logreg, svm]", "device=cuda", "epochs=null", "n_folds="])
    assert params == {"seed": 1, "models": ["logreg", "svm"], "device": "cuda", "epochs": None, "n_folds": None}


@pytest.mark.parametrize("bad, message", [("seed", "expected key=value"), ("sede=1", "not a notebook parameter")])
def test_set_rejects_malformed_and_unknown(bad, message):
    with pytest.raises(SystemExit, match=message):
        study.apply_overrides({}, [bad])


def test_prepare_params_device_and_image_size(tmp_path, monkeypatch):
    monkeypatch.delenv("FACELIB_DEVICE", raising=False)
    profile = tmp_path / "p.yaml"
    profile.write_text(yaml.safe_dump({"run_name": "p", "seed": 0, "device": "cuda"}))
    params, used = study.prepare_params(profile, sets=["seed=4"], device="cpu")
    assert used == profile and params["device"] == "cpu" and params["seed"] == 4
    assert "image_size" in params and params["image_size"] is None  # left to the device (64 CPU, 224 GPU)
    params, _ = study.prepare_params(profile, sets=["image_size=224", "device=cpu"])
    assert params["image_size"] == 224
    if not __import__("torch").cuda.is_available():
        with pytest.raises(SystemExit, match="device: .*cuda"):
            study.prepare_params(profile)  # the profile asks for cuda: one clear line, no traceback


def test_profile_follows_the_device(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "PARAMS_DIR", tmp_path)
    (tmp_path / "paper.yaml").write_text("run_name: paper\n")
    monkeypatch.setattr(config, "resolve_device", lambda d=None: {"gpu": "cuda", "apple": "mps"}.get(d, "cpu"))
    assert study.choose_profile("cpu").name == "paper.yaml"  # no CPU profile yet: the paper's
    (tmp_path / "cpu.yaml").write_text("run_name: cpu\n")  # a temporary CPU profile
    assert study.choose_profile("cpu").name == "cpu.yaml"
    assert study.choose_profile("gpu").name == "paper.yaml"
    assert study.choose_profile("apple").name == "paper.yaml"  # an Apple GPU is a GPU too


def test_committed_profiles_leave_image_size_to_the_device():
    # paper.yaml is the paper's (224 px); ci.yaml and cpu.yaml pin their documented smaller sizes on purpose;
    # any other profile leaves the size to the device
    pinned = {"paper.yaml": 224, "cpu.yaml": 32, "ci.yaml": 32, "demo.yaml": 32, "gpu_check.yaml": 224}
    for path in sorted((ROOT / "notebooks" / "params").glob("*.yaml")):
        assert study.load_params(path).get("image_size") == pinned.get(path.name), path.name


# ------------------------------------------------------------------------------------------ a run, end to end
def _fake_study(tmp_path, monkeypatch, fail_at: str | None):
    reports = tmp_path / "reports"
    monkeypatch.setattr(config, "REPORTS_DIR", reports)
    nbs = [tmp_path / "01_a.ipynb", tmp_path / "02_b.ipynb"]
    monkeypatch.setattr(study, "notebooks", lambda: nbs)
    monkeypatch.setattr(study, "missing_inputs", lambda params: [])
    monkeypatch.setattr(study, "kernel_name", lambda: "python3")

    def execute(nb, out, params, kernel):
        if nb.stem == fail_at:
            raise study.NotebookFailed(f"notebook {nb.name} failed in cell 3: ValueError: boom")
        run = Path(params["out_dir"]) if Path(params["out_dir"]).is_absolute() else ROOT / params["out_dir"]
        tables.write_table1([], run / "tables")
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# x")]), str(out))

    monkeypatch.setattr(study, "_execute", execute)
    profile = tmp_path / "prof.yaml"
    profile.write_text(yaml.safe_dump({"run_name": "t", "out_dir": str(reports / "runs" / "t"),
                                       "kdef_root": str(tmp_path), "device": "cpu"}))
    return reports, profile


def test_failed_run_is_recorded_and_listed(tmp_path, monkeypatch):
    reports, profile = _fake_study(tmp_path, monkeypatch, fail_at="02_b")
    with pytest.raises(SystemExit, match="02_b.ipynb failed in cell 3"):
        study.run_study(profile, sets=["seed=3"])
    status = read_status(reports / "runs" / "t")
    assert status["status"] == "failed" and status["notebook"] == "02_b" and "01_a" in status["elapsed"]
    assert status["profile"].endswith("prof.yaml") and status["device"] == "cpu"
    assert status["overrides"] == ["seed=3"]  # what was changed on top of the profile, for the provenance
    assert "failed at notebook 02_b" in (reports / "index.html").read_text()
    assert not (reports / "tables").exists()  # a failed run never publishes its tables


def test_finished_run_replaces_the_published_tables(tmp_path, monkeypatch, capsys):
    reports, profile = _fake_study(tmp_path, monkeypatch, fail_at=None)
    (reports / "tables").mkdir(parents=True)
    (reports / "tables" / "stale_from_another_run.csv").write_text("x\n")
    study.run_study(profile)
    assert read_status(reports / "runs" / "t")["status"] == "finished"
    assert sorted(p.name for p in (reports / "tables").iterdir()) == ["RUN.txt", "provenance.json", "table1.csv",
                                                                        "table1.md"]
    out = capsys.readouterr().out
    assert "time per notebook: 01_a" in out and "02_b" in out
    assert ">t<" in (reports / "index.html").read_text()


def test_stage_is_the_heading_above_the_cell():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# 02 · Reconstruction"), nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_markdown_cell("Some prose, no heading."), nbformat.v4.new_code_cell("y = 2"),
        nbformat.v4.new_markdown_cell("## Fitting\nwith text"), nbformat.v4.new_code_cell("z = 3")])
    assert [study._stage(nb, i) for i in (1, 3, 5)] == ["02 · Reconstruction", "02 · Reconstruction", "Fitting"]


def test_committed_notebooks_use_the_project_kernel_and_tags_not_comments():
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(str(path), as_version=4)
        assert nb.metadata["kernelspec"]["name"] == study.KERNEL_NAME, path.name
        assert not any("# NBVAL_" in c.source for c in nb.cells), path.name
        assert sum(study.CI_BANNER_TAG in c.metadata.get("tags", []) for c in nb.cells) == 1, path.name


# ------------------------------------------------------------------------------------------------------- CLI
def _actions(parser, name="facelib"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, p in action.choices.items():
                yield from _actions(p, f"{name} {sub}")
        elif not isinstance(action, argparse._HelpAction):
            yield name, action


def test_every_flag_has_help_and_shows_its_default():
    parser = build_parser()
    missing = [(n, a.option_strings) for n, a in _actions(parser) if not a.help]
    assert not missing
    args = parser.parse_args(["study", "--set", "seed=1", "--set", "device=cpu", "--device", "cpu"])
    assert args.set == ["seed=1", "device=cpu"] and args.device == "cpu" and args.params is None
    out = subprocess.run([sys.executable, "-m", "facelib", "study", "--help"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120).stdout
    assert "--set KEY=VALUE" in out and "(default: None)" in out


def test_assets_command_says_what_is_needed_and_fails_when_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("FACELIB_OFFLINE", "1")
    out = subprocess.run([sys.executable, "-m", "facelib", "assets", "--assets", str(tmp_path / "empty")],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 1
    needed = out.stdout.split("not needed for this choice:")[0]
    assert "mb05_120x120.pth" in needed and "epoch_20.pth" not in needed
    assert f"put it at {tmp_path / 'empty'}/3ddfa_v2/" in out.stdout


# -------------------------------------------------------------------------------------------- nbval and data
def _notebook_conftest():
    spec = importlib.util.spec_from_file_location("nb_conftest", ROOT / "notebooks" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_nbval_skips_the_notebooks_with_other_data(tmp_path):
    conftest = _notebook_conftest()
    other = tmp_path / "KDEF"
    (other / "AF01").mkdir(parents=True)
    (other / "AF01" / "AF01AFS.JPG").write_bytes(b"\xff\xd8 not the dev data")
    fingerprint = tmp_path / "fp.json"
    fingerprint.write_text(json.dumps({"FACELIB_KDEF": {"files": 699, "sha256": "0" * 64},
                                       "FACELIB_FEI": {"files": 1, "sha256": "1" * 64}}))
    env = {"FACELIB_KDEF": str(other), "FACELIB_FEI": str(tmp_path), "FACELIB_ASSETS": str(tmp_path)}
    reason = conftest.skip_reason(env, fingerprint)
    assert reason.startswith("committed notebook outputs were made from the dev data (699 files)")
    assert f"FACELIB_KDEF={other} holds other data (1 files)" in reason
    assert "not set or absent" in conftest.skip_reason({}, fingerprint)


def test_the_dev_data_matches_the_committed_fingerprint(kdef_root, fei_root, assets_dir):
    conftest = _notebook_conftest()
    env = {"FACELIB_KDEF": str(kdef_root), "FACELIB_FEI": str(fei_root), "FACELIB_ASSETS": str(assets_dir)}
    if "kdef_dev" not in str(kdef_root):
        pytest.skip("FACELIB_KDEF is not the dev subset")
    assert conftest.skip_reason(env) is None


def test_ci_banner_only_on_the_committed_copies(tmp_path):
    executed = tmp_path / "run" / "01_x.ipynb"
    executed.parent.mkdir()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 01 · Title"),
                                         nbformat.v4.new_markdown_cell(study.CI_BANNER,
                                                                       metadata={"tags": [study.CI_BANNER_TAG]}),
                                         nbformat.v4.new_code_cell("x = 1")])
    nbformat.write(nb, str(executed))
    study.drop_banner(executed)  # a run's notebook: not the CI run, no banner
    cells = nbformat.read(str(executed), as_version=4).cells
    assert [c.cell_type for c in cells] == ["markdown", "code"]
    committed = tmp_path / "01_x.ipynb"
    study.with_banner(executed, committed)
    again = nbformat.read(str(committed), as_version=4)
    assert again.cells[0].source == study.CI_BANNER and again.metadata["kernelspec"]["name"] == "facelib"
    assert "reports/runs/<run>/" in study.CI_BANNER and "make lab" in study.CI_BANNER  # how to open yours
    assert sum(study.CI_BANNER_TAG in c.metadata.get("tags", []) for c in again.cells) == 1


def test_committed_notebooks_show_every_figure_but_faces():
    """Figures that show KDEF/FEI faces (no redistribution: cells tagged shows-faces) are left out of the committed
    notebooks; every other figure (plots, curves, heatmaps) is kept, and each committed notebook starts with the
    banner that says which run it shows."""
    shown = 0
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(str(path), as_version=4)
        assert study.CI_BANNER_TAG in nb.cells[0].metadata.get("tags", []), path.name
        for c in nb.cells:
            if c.cell_type != "code":
                continue
            images = [k for o in c.get("outputs", []) for k in (o.get("data") or {}) if k.startswith("image/")]
            if study.FACES_TAG in c.metadata.get("tags", []):
                assert not images, (path.name, c.source[:60])
            shown += bool(images)
    assert shown >= 5  # PCA, aggregation curves, C-Net, Table 3 heatmap, per-angle accuracy


def test_strip_pictures_replaces_only_face_figures_with_a_note():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("plot()", metadata={"tags": ["nbval-ignore-output", study.FACES_TAG]})
    cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": "iVBOR", "text/plain": "<Figure>"}),
                    nbformat.v4.new_output("stream", name="stdout", text="kept\n")]
    curve = nbformat.v4.new_code_cell("curve()", metadata={"tags": ["nbval-ignore-output"]})
    curve.outputs = [nbformat.v4.new_output("display_data", data={"image/png": "iVBOR", "text/plain": "<Figure>"})]
    nb.cells += [cell, curve]
    study.strip_pictures(nb)
    assert nb.cells[0].outputs[0]["data"] == {"text/plain": study.PICTURES_REMOVED}
    assert nb.cells[0].outputs[1]["text"] == "kept\n"
    assert nb.cells[1].outputs[0]["data"]["image/png"] == "iVBOR"


def test_strip_progress_only_in_ignored_cells():
    bar = lambda: nbformat.v4.new_output("stream", name="stderr", text="\rR-Net:  50%|█████     | 4/8 [00:01<00:01]")  # noqa: E731
    ignored = nbformat.v4.new_code_cell("train()", metadata={"tags": ["nbval-ignore-output"]})
    ignored.outputs = [bar(), nbformat.v4.new_output("stream", name="stderr", text="ValueError: real message\n"),
                       nbformat.v4.new_output("stream", name="stdout", text="done\n"), bar()]
    compared = nbformat.v4.new_code_cell("fit()")
    compared.outputs = [bar()]
    nb = nbformat.v4.new_notebook(cells=[ignored, compared])
    study.strip_progress(nb)
    assert [o["text"] for o in nb.cells[0].outputs] == ["ValueError: real message\n", "done\n"]
    assert len(nb.cells[1].outputs) == 1  # an output nbval compares is never touched
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):  # the committed notebooks are clean
        node = nbformat.read(str(path), as_version=4)
        noisy = [i for i, c in enumerate(node.cells) if "nbval-ignore-output" in c.metadata.get("tags", [])
                 and any(quiet_stderr(o) for o in c.get("outputs", []))]
        assert not noisy, (path.name, noisy)


# ------------------------------------------------------------------------------ rerunning notebooks of a run
def test_every_notebook_lists_the_same_parameters():
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cell = next(c for c in nbformat.read(str(path), as_version=4).cells
                    if "parameters" in c.metadata.get("tags", []))
        names = [t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign) for t in node.targets]
        assert names == list(PARAMETER_NAMES), path.name


def _results_cell():
    nb = nbformat.read(str(ROOT / "notebooks" / "04_classification.ipynb"), as_version=4)
    cell, = [c for c in nb.cells if c.cell_type == "code" and "run_plan(" in c.source]
    return cell.source


def _run_cell(run, run_plan):
    namespace = {"run": run, "study_plan": SimpleNamespace(run_plan=run_plan), "coeffs": {}, "plan": [],
                 **{k: None for k in PARAMETER_NAMES}}
    exec(_results_cell(), namespace)  # noqa: S102 — the committed notebook's own results step
    return namespace


def test_rerunning_04_into_a_run_loses_no_result_when_interrupted(tmp_path):
    run = Run({"out_dir": str(tmp_path / "run"), "backend": "tddfa"})
    old = {"identity__paper__alpha__logreg__tddfa.json": '{"task": "identity", "accuracy_mean": 0.7}',
           "identity__paper__alpha__logreg__tddfa.predictions.csv": "fold,true,pred\n0,F01,F01\n"}
    for name, text in old.items():
        (run.results / name).write_text(text)

    def interrupted(coeffs, plan, results_dir, **kwargs):
        (Path(results_dir) / "expression__paper__beta__logreg__tddfa.json").write_text("{}")  # one run finished
        raise KeyboardInterrupt  # ... then the user stops the notebook

    with pytest.raises(KeyboardInterrupt):
        _run_cell(run, interrupted)
    assert {p.name: p.read_text() for p in run.results.iterdir()} == old  # nothing deleted, nothing mixed in

    def complete(coeffs, plan, results_dir, **kwargs):
        (Path(results_dir) / "gender__paper__alpha__svm__tddfa.json").write_text("{}")
        return "summary"

    assert _run_cell(run, complete)["summary"] == "summary"
    assert sorted(p.name for p in run.results.iterdir()) == ["gender__paper__alpha__svm__tddfa.json"]  # one run's
    assert sorted(p.name for p in run.dir.iterdir()) == ["coeffs", "figures", "manifests", "results", "tables"]
    # a swap cut between its two renames: the previous results are taken back
    (run.dir / "results").rename(run.dir / "results.old")
    again = Run({"out_dir": str(run.dir)})
    assert [p.name for p in again.results.iterdir()] == ["gender__paper__alpha__svm__tddfa.json"]


def test_a_notebook_without_its_inputs_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "PROJECT_ROOT", ROOT)
    ci = Run({"out_dir": str(tmp_path / "runs" / "ci"), "backend": "tddfa"})
    with pytest.raises(MissingRunInputs) as info:
        ci.require("04")
    lines = info.value._render_traceback_()  # what a notebook shows instead of a traceback
    assert len(lines) == 2 and lines[0].startswith("error: notebook 04 needs ") and "kdef_tddfa.parquet" in lines[0]
    assert "`make reproduce PARAMS=notebooks/params/ci.yaml`" in lines[1]
    mine = Run({"out_dir": str(tmp_path / "runs" / "mine"), "backend": "tddfa"})
    with pytest.raises(MissingRunInputs, match="table1.csv"):
        mine.require("05")
    assert "`python -m facelib study --run mine --only 01 02 03 04`" in format_error(
        pytest.raises(MissingRunInputs, mine.require, "05").value)
    for name in ("kdef", "fei"):
        mine.coeffs(name).write_text("")
    assert mine.require("04") is mine and mine.require("03") is mine


def test_run_name_reruns_an_existing_run_with_its_parameters(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "PROJECT_ROOT", tmp_path)
    monkeypatch.setattr(config, "REPORTS_DIR", tmp_path / "reports")
    monkeypatch.setattr(study, "notebooks", lambda: [tmp_path / "04_c.ipynb", tmp_path / "05_d.ipynb"])
    monkeypatch.setattr(study, "missing_inputs", lambda params: [])
    monkeypatch.setattr(study, "kernel_name", lambda: "python3")
    seen = []

    def execute(nb, out, params, kernel):
        seen.append((nb.stem, params["models"], params["seed"]))
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# x")]), str(out))

    monkeypatch.setattr(study, "_execute", execute)
    profile = tmp_path / "prof.yaml"
    profile.write_text(yaml.safe_dump({"run_name": "t", "kdef_root": str(tmp_path), "device": "cpu", "seed": 7,
                                       "models": ["resnet34"]}))
    study.run_study(profile, sets=["seed=7"])
    study.run_study(run_name="t", only=["05"], sets=["models=[logreg]"])
    assert seen == [("04_c", ["resnet34"], 7), ("05_d", ["resnet34"], 7), ("05_d", ["logreg"], 7)]
    status = read_status(tmp_path / "reports" / "runs" / "t")
    assert status["profile"] == "prof.yaml" and status["overrides"] == ["seed=7", "models=[logreg]"]
    assert set(status["elapsed"]) == {"04_c", "05_d"} and status["status"] == "finished"
    page = (tmp_path / "reports" / "runs" / "t" / "index.html").read_text()
    assert "04_c" in page and "05_d" in page  # the page still lists the notebook not rerun


def test_no_data_and_no_profile_runs_the_demo(monkeypatch):
    """The README's main command on a machine with no dataset runs the short synthetic demo, which says what it trims."""
    monkeypatch.delenv("FACELIB_KDEF", raising=False)
    monkeypatch.delenv("FACELIB_FEI", raising=False)
    assert study.demo_when_no_data(None) == study.DEMO_PROFILE
    assert study.demo_when_no_data("notebooks/params/ci.yaml") == "notebooks/params/ci.yaml"  # asked for: kept
    assert study.load_params(study.DEMO_PROFILE)["synthetic"] is True
    from facelib.run import profile_header
    header = profile_header(study.DEMO_PROFILE)
    assert header.startswith("PROFILE: demo") and "NO ResNet-34" in header and "32-px" in header
    monkeypatch.setenv("FACELIB_KDEF", "/somewhere/KDEF")
    assert study.demo_when_no_data(None) is None  # data configured: the device's profile (cpu.yaml / paper.yaml)


@pytest.mark.parametrize("python, expected", [("missing", "python3"), ("present", study.KERNEL_NAME)])
def test_a_kernel_pointing_at_a_deleted_python_is_not_used(tmp_path, monkeypatch, capsys, python, expected):
    """A kernel spec installed from an environment that was deleted since (its argv[0] is gone) would fail deep in
    jupyter_client with a traceback; the runner says so in one line and takes this interpreter's python3."""
    exe = sys.executable if python == "present" else str(tmp_path / "gone" / "bin" / "python")

    class Specs:
        def find_kernel_specs(self):
            return {study.KERNEL_NAME: str(tmp_path)}

        def get_kernel_spec(self, name):
            return SimpleNamespace(argv=[exe, "-m", "ipykernel_launcher", "-f", "{connection_file}"])

    monkeypatch.setattr(study, "KernelSpecManager", Specs)
    assert study.kernel_name() == expected
    out = capsys.readouterr().out
    assert (f"points at a Python that does not exist ({exe}" in out) == (python == "missing")
