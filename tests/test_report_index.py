"""The report: figures that stand alone, run pages that never mix runs, the overview of every run with its status,
rendered notebooks without noise, and file modes a shared server can serve."""
from __future__ import annotations

import json
import os
import stat

import matplotlib
import nbformat
import numpy as np
import pandas as pd
import pytest

from facelib import io
from facelib.classify.experiment import run_task
from facelib.classify.results import save_result
from facelib.report import figures, index, tables
from facelib.run import Run, data_fingerprint, read_status, write_status
from tests.fixtures import synthetic_coeff_table

matplotlib.use("Agg")
PROV = {"synthetic": False, "backend": "tddfa", "device": "cpu", "profile": "notebooks/params/ci.yaml",
        "parameters": {"run_name": "alpha_run"},
        "data": {"kdef": {"ok": 699, "subjects": 20}, "fei": {"ok": 400, "subjects": 200}}}


@pytest.fixture(scope="module")
def results():
    import torch

    torch.set_num_threads(1)
    df = synthetic_coeff_table(4, fei_per_gender=8, separation=1.0, seed=1)
    return [run_task(df, "expression", "paper", model="logreg", n_folds=2),
            run_task(df, "expression", "subject_independent", model="logreg", n_folds=2),
            run_task(df, "gender", "paper", model="logreg", n_folds=2)]


def constant(result: dict) -> dict:
    """The same result, as if its model had predicted the first class for every picture."""
    conf = np.asarray(result["confusion"])
    fake = np.zeros_like(conf)
    fake[:, 0] = conf.sum(axis=1)
    return {**result, "confusion": fake.tolist(), "model": "svm"}


# ----------------------------------------------------------------------------------------------- file modes
@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_get_the_umask_mode(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        json_path = io.atomic_write_json({"a": 1}, tmp_path / "p.json")
        csv_path = tables.write_table1([], tmp_path / "t")["table1_csv"]
    finally:
        os.umask(old)
    for p in (json_path, csv_path):
        assert stat.S_IMODE(p.stat().st_mode) == mode, p


# --------------------------------------------------------------------------------------------------- figures
def test_report_figures_stand_alone(tmp_path, results):
    paths = figures.write_report_figures(results, tmp_path, PROV)
    assert set(paths) == {"table3_heatmap.png", "per_angle_accuracy.png"}  # no ResNet-34: no time pairs
    assert all(p.stat().st_size > 5000 for p in paths.values())
    fig = figures.plot_per_angle(results, PROV)
    ax, title = fig.axes[0], fig.get_suptitle()
    assert "run alpha_run" in title and "KDEF 699 pictures / 20 people" in title
    assert [a.get_title() for a in fig.axes] == ["paper's protocol", "unseen people"]  # a panel per protocol
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any(lab.startswith("chance (1 in 7") for lab in labels)
    # the backend names raw and fitted coefficient variants apart
    assert "expression coefficients β · logistic regression · synthetic" in labels
    assert "mean ± std over repeats / folds" in ax.get_ylabel()
    one = figures.plot_per_angle(results[:1], PROV)
    assert [a.get_title() for a in one.axes] == ["paper's protocol"]
    # error bars: the spread of per-fold accuracies at each angle, from the predictions
    folds = figures.per_angle_folds(results[0])
    assert set(folds["fold"]) == {0, 1} and folds["accuracy"].between(0, 1).all()
    heat = figures.plot_confusion(tables.table3(results[0])[0], results[0], PROV)
    assert [t.get_text() for t in heat.axes[0].get_yticklabels()][0] == "afraid (AF)"
    assert "logistic regression" in heat.axes[0].get_title()


def test_training_time_pairs_ours_with_the_papers():
    t2 = pd.DataFrame([{"task": "expression", "input": "beta", "model": "resnet34", "device": "cpu",
                        "seconds_per_input": 0.002, "seconds_per_epoch": 1.0},
                       {"task": "expression", "input": "image", "model": "resnet34", "device": "cpu",
                        "seconds_per_input": 0.05, "seconds_per_epoch": 9.0},
                       {"task": "expression", "input": "beta", "model": "logreg", "device": "cpu",
                        "seconds_per_input": 0.0001, "seconds_per_epoch": None}])
    pairs = figures.training_time_pairs(t2)
    assert list(pairs["model"] if "model" in pairs else []) == []  # ResNet-34 only: no "per epoch" for baselines
    assert len(pairs) == 2
    beta = pairs[pairs["input"] == "beta"].iloc[0]
    assert beta["ours_ms"] == pytest.approx(2.0)
    assert beta["paper_ms"] == pytest.approx(1000 * tables.PAPER_TABLE2["expression"]["coefficients"]["seconds_per_input"])
    ax = figures.plot_training_time(t2, PROV).axes[0]
    assert ax.get_xscale() == "log" and "LOG scale" in ax.get_xlabel()
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"ours (cpu)", f"paper, {tables.PAPER_DEVICE}"}


def test_one_class_results_are_flagged(results):
    flagged = figures.one_class_results(results + [constant(results[2])])
    assert [(r["task"], r["model"]) for r in flagged] == [("gender", "svm")]


# ------------------------------------------------------------------------------------------ pages and index
def make_run(reports, name, results, status, started, notebook=None, pid=None):
    folder = reports / "runs" / name
    (folder / "results").mkdir(parents=True)
    for r in results:
        save_result(r, folder / "results")
    prov = {**PROV, "parameters": {"run_name": name}}
    if results:
        tables.write_tables(results, folder / "tables", prov)
        figures.write_report_figures(results, folder / "figures", prov, folder / "results")
        io.atomic_write_json(prov, folder / "provenance.json")
    write_status(folder, status=status, notebook=notebook, started=started, pid=pid, profile="ci.yaml",
                 device="cpu")
    return folder


def test_overview_lists_every_run_with_its_status(tmp_path, results):
    reports = tmp_path / "reports"
    done = make_run(reports, "ci", results + [constant(results[2])], "finished", "2026-11-30T10:00:00Z")
    failed = make_run(reports, "synthetic", [], "failed", "2026-11-30T11:00:00Z", notebook="04_classification")
    make_run(reports, "live", [], "running", "2026-11-30T12:00:00Z", notebook="02_reconstruction", pid=os.getpid())
    make_run(reports, "killed", [], "running", "2026-11-30T09:00:00Z", notebook="03_aggregation", pid=2 ** 22 + 7)
    page = index.write_run_page(done, [])
    overview = index.write_overview(reports).read_text()
    for name, state in (("ci", "finished"), ("synthetic", "failed at notebook 04_classification"),
                        ("live", "running (notebook 02_reconstruction)"),
                        ("killed", "interrupted at notebook 03_aggregation")):
        assert f">{name}<" in overview and state in overview, name
    assert "href='runs/ci/index.html'" in overview
    # the latest finished run's Table 1 under the list, with the constant predictor flagged
    assert overview.index("Latest finished run: ci") < overview.index("Table 1")
    assert "predicts one class for every picture" in overview
    text = page.read_text()
    assert "Status: <b>finished</b>" in text
    assert not any(other in text for other in ("04_classification", "02_reconstruction", "killed", "live"))
    assert "figures/table3_heatmap.png" in text and "figures/per_angle_accuracy.png" in text
    assert [r["name"] for r in index.runs(reports)] == ["live", "synthetic", "ci", "killed"]


def test_index_links_each_runs_key_figure_and_notebooks_and_lab_opens_the_newest(tmp_path, results):
    reports = tmp_path / "reports"
    old = make_run(reports, "old", results, "finished", "2026-11-29T10:00:00Z")
    new = make_run(reports, "new", results, "finished", "2026-11-30T10:00:00Z")
    make_run(reports, "live", [], "running", "2026-12-01T10:00:00Z", notebook="02_reconstruction", pid=os.getpid())
    (new / "html").mkdir()
    (new / "html" / "05_analysis.html").write_text("<html></html>")
    overview = index.write_overview(reports).read_text()
    key = next(f for f in index.KEY_FIGURES if (new / "figures" / f).exists())
    assert f"<img src='runs/new/figures/{key}'" in overview and "href='runs/new/html/05_analysis.html'>05<" in overview
    assert index.latest_run_folder(reports, fallback=tmp_path / "notebooks") == "reports/runs/new"  # not running
    assert index.latest_run_folder(tmp_path / "empty", fallback=tmp_path / "notebooks").endswith("notebooks")
    page = index.write_run_page(old, []).read_text()
    # Tables 2 and 3 with their legends and the paper's figures beside them; the verdict table above Table 1
    assert "paper_seconds_per_input" in page and "measured on" in page
    assert "paper_diagonal" in page and "Rows: true expression" in page
    assert page.index("<h2>Verdict</h2>") < page.index("Table 1 —") and "verdict.csv" in page


def test_run_page_of_a_failed_run_without_tables(tmp_path):
    folder = make_run(tmp_path, "broken", [], "failed", "2026-11-30T11:00:00Z", notebook="02_reconstruction")
    text = index.write_run_page(folder, []).read_text()
    assert "failed at notebook 02_reconstruction" in text and "Table 1" not in text


def test_rendered_notebook_has_one_parameter_cell_and_no_noise(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 01 · Title"),
                nbformat.v4.new_code_cell("seed = 0\nimage_size = None  # note", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("# Parameters\nseed = 3", metadata={"tags": ["injected-parameters"]}),
                nbformat.v4.new_code_cell("# NBVAL_IGNORE_OUTPUT\nx = 1", metadata={"tags": ["nbval-ignore-output"]})]
    nb.cells[3].outputs = [nbformat.v4.new_output("stream", name="stderr", text="\rfit:  40%|████ | 4/10 [00:02<00:03]"),
                           nbformat.v4.new_output("stream", name="stderr", text="TqdmWarning: IProgress not found."),
                           nbformat.v4.new_output("stream", name="stdout", text="kept output 42")]
    src = tmp_path / "01_x.ipynb"
    nbformat.write(nb, str(src))
    body = index.notebook_html(src, tmp_path / "html").read_text()
    assert "Defaults of the notebook: seed = 0, image_size = None" in body
    assert "NBVAL" not in body and "IProgress" not in body and "4/10 [00:02" not in body
    assert "kept output 42" in body
    assert body.count("seed</span> <span class=\"o\">=</span> <span class=\"mi\">0</span>") == 0  # defaults cell gone
    assert stat.S_IMODE((tmp_path / "html" / "01_x.html").stat().st_mode) & 0o044  # readable by others (umask 022)


# -------------------------------------------------------------------------------------------- run, provenance
def test_status_and_provenance_are_kept_once(tmp_path):
    run = Run({"out_dir": str(tmp_path / "r"), "backend": "synthetic", "run_name": "r"})
    assert run.figures == tmp_path / "r" / "figures" and run.figures != run.tables
    write_status(run.dir, status="running", profile="notebooks/params/cpu.yaml")
    table = synthetic_coeff_table(3, fei_per_gender=4, seed=0).assign(usable=True, status="ok",
                                                                      assets=json.dumps({"mb05": "abc"}))
    table.to_parquet(run.coeffs("kdef"))
    prov = run.provenance()
    assert prov["profile"] == "notebooks/params/cpu.yaml" and prov["run"] == "r"
    assert prov["data"]["kdef"]["images"] == len(table) and prov["asset_sha256"] == {"mb05": "abc"}
    assert json.loads((run.dir / "provenance.json").read_text()) == json.loads(json.dumps(prov, default=str))
    assert read_status(run.dir)["status"] == "running"
    assert run.provenance() == prov  # kept, not recomputed
    rerun = Run({"out_dir": str(tmp_path / "r"), "backend": "synthetic", "run_name": "r", "seed": 5})
    assert rerun.provenance()["parameters"]["seed"] == 5  # other parameters: recomputed


def test_data_fingerprint_changes_with_the_files(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"12345")
    first = data_fingerprint(tmp_path)
    assert first["files"] == 1 and first["bytes"] == 5
    (tmp_path / "b.jpg").write_bytes(b"1")
    assert data_fingerprint(tmp_path)["sha256"] != first["sha256"]


def test_coefficient_cost_per_backend(tmp_path):
    """Table 2's coefficient cost: median per picture of reconstruction (+ fitting for fitted variants)."""
    run = Run({"out_dir": str(tmp_path / "r"), "backend": "tddfa", "run_name": "r", "fit_modes": ["landmarks"],
               "rnet": True})
    rng = np.random.default_rng(0)
    base = synthetic_coeff_table(3, fei_per_gender=4, seed=0).assign(usable=True, status="ok", backend="tddfa",
                                                                     assets="{}")
    base["recon_seconds"] = rng.uniform(0.01, 0.05, len(base))
    base.loc[0, "status"] = "no_face"  # not coded: not counted
    base.loc[0, "recon_seconds"] = 100.0
    fitted = base.assign(backend="tddfa+fit_landmarks", fit_seconds=rng.uniform(0.1, 0.2, len(base)))
    fitted.loc[1, "fit_seconds"] = None  # a picture without a recorded time is left out
    base.to_parquet(run.coeffs("kdef"))
    fitted.to_parquet(run.coeffs("kdef", "landmarks"))
    base.assign(backend="tddfa+rnet").to_parquet(run.coeffs("kdef", rnet=True))
    cost = run.provenance()["coefficient_seconds_per_picture"]
    ok = base["status"] == "ok"
    assert cost["tddfa"] == round(float(np.median(base.loc[ok, "recon_seconds"])), 5)
    both = (fitted["recon_seconds"] + fitted["fit_seconds"].astype(float))[ok].dropna()
    assert cost["tddfa+fit_landmarks"] == round(float(np.median(both)), 5) and len(both) == len(base) - 2
    assert cost["tddfa+rnet"] is None  # its cost is its training
    t2 = tables.table2([{"task": "identity", "protocol": "paper", "input": "alpha", "model": "logreg",
                         "backend": "tddfa+fit_landmarks", "device": "cpu"}], coefficient_cost=cost)
    assert t2["coefficient_seconds_per_picture"].iloc[0] == cost["tddfa+fit_landmarks"]


def test_provenance_counts_a_folder_dataset(tmp_path):
    """A run on your own pictures (``dataset: folder``) reports their counts like KDEF/FEI's."""
    run = Run({"out_dir": str(tmp_path / "r"), "backend": "tddfa", "run_name": "r", "dataset": "folder"})
    table = synthetic_coeff_table(3, fei_per_gender=4, seed=0).assign(usable=True, status="ok", assets="{}",
                                                                      backend="tddfa")
    table.loc[:4, "status"] = "no_face"
    table.to_parquet(run.coeffs("folder"))
    prov = run.provenance()
    data = prov["data"]
    assert prov["overrides"] == []  # no run record: nothing set on top of a profile
    write_status(run.dir, profile="notebooks/params/paper.yaml", overrides=["models=[logreg]"])
    assert run.provenance()["overrides"] == ["models=[logreg]"]
    assert list(data) == ["folder"]
    assert data["folder"]["images"] == len(table) and data["folder"]["ok"] == len(table) - 5


def test_provenance_marks_a_rendered_set_passed_as_a_dataset_synthetic(tmp_path):
    """`facelib synthetic --out D` then FACELIB_KDEF=D/KDEF: the profile says synthetic: false, the data are rendered,
    so the provenance (and every table title) must say synthetic; a real-looking folder without the marker is not."""
    from facelib.data.synthetic import MARKER, synthetic_marker

    run = Run({"out_dir": str(tmp_path / "r"), "backend": "tddfa", "run_name": "r", "synthetic": False})
    table = synthetic_coeff_table(3, fei_per_gender=4, seed=0).assign(usable=True, status="ok", assets="{}",
                                                                      backend="tddfa")
    out = tmp_path / "rendered"
    table["path"] = [str(out / "KDEF" / "AF01" / f"AF01{i:03d}.JPG") for i in range(len(table))]
    table.to_parquet(run.coeffs("kdef"))
    assert run.provenance()["synthetic"] is False and synthetic_marker(out / "KDEF") is None
    out.mkdir()
    (out / MARKER).write_text("{}")
    run2 = Run({"out_dir": str(tmp_path / "r2"), "backend": "tddfa", "run_name": "r2", "synthetic": False})
    table.to_parquet(run2.coeffs("kdef"))
    prov = run2.provenance()
    assert prov["synthetic"] is True
    assert prov["data"]["kdef"]["synthetic_marker"] == str(out / MARKER)
    assert synthetic_marker(out / "fei" / "frontal") == out / MARKER  # two folders up
    assert synthetic_marker(out / "a" / "b" / "c") is None  # three is too far
