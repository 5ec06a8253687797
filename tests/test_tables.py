"""Tables 1–3 from run_task results (their figures: tests/test_report_index.py)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from facelib.report import figures, tables
from facelib.classify.experiment import run_task
from facelib.classify.results import save_result
from tests.fixtures import synthetic_coeff_table


@pytest.fixture(scope="module")
def results():
    import torch

    torch.set_num_threads(1)
    df = synthetic_coeff_table(4, fei_per_gender=8, separation=1.0, seed=1)
    return [run_task(df, "expression", "paper", model="logreg", n_folds=2),
            run_task(df, "expression", "subject_independent", model="mlp", n_folds=2, epochs=2),
            run_task(df, "gender", "paper", model="logreg", n_folds=2),
            run_task(df, "identity", "cross_angle", model="svm", protocol_kwargs={"subjects": None})]


def _row(**kw):
    base = dict(task="expression", protocol="paper", input="beta", model="resnet34", backend="tddfa", k=1,
                image_size=None)
    return pd.Series({**base, **kw})


def test_paper_column_only_beside_comparable_rows():
    P = tables.paper_figure
    assert P(_row()) == 0.835
    assert P(_row(input="image", image_size=224)) == 0.706
    # identity 3-sets: only the paper's aggregator (C-Net) over every subset, by a set-trained model, on a raw backend
    ident = dict(task="identity", input="alpha", k=3, trained_k=3, aggregator="cnet", max_sets=None)
    assert P(_row(**ident)) == 1.0 and P(_row(**ident, backend="deep3d")) == 1.0
    for row in (_row(model="logreg"), _row(model="svm"), _row(backend="tddfa+fit_full"),
                _row(protocol="subject_independent"), _row(input="image", image_size=64), _row(input="alpha"),
                _row(task="identity", input="alpha", k=1), _row(input="hog", model="linsvm"),
                _row(dataset="folder"), _row(task="gender", input="alpha", dataset="kdef"),
                # these used to qualify
                _row(backend="ict"), _row(backend="tddfa+rnet"), _row(**{**ident, "aggregator": "mean"}),
                _row(**{**ident, "aggregator": "median"}), _row(**{**ident, "max_sets": 60}),
                _row(**{**ident, "trained_k": 1}), _row(input="image", image_size=224, task="identity",
                                                        max_sets=100)):
        assert P(row) is None, dict(row)
    assert P(_row(dataset="kdef")) == 0.835 and P(_row(task="gender", input="alpha", dataset="fei")) == 0.954
    assert P(_row(transductive="texture basis from test pictures")) is None
    assert P(_row(tuned_on_test=True)) is None


def _result(**kw):
    base = dict(task="expression", protocol="subject_independent", input="beta", model="resnet34", backend="tddfa",
                k=1, n_folds=2, split_kind="folds", leak_free=True, transductive="", epochs_max=150,
                recipe={"patience": 15}, accuracy_by_k={"1": {"mean": 0.8, "std": 0.01, "ci": None,
                                                              "n_test": [10, 10], "best_epochs": [20, 30],
                                                              "epochs_run": [35, 45], "trained_k": 1}},
                n_fit_pictures=[150, 150], n_val_pictures=[50, 50], n_fit_sets=[0, 0], n_val_sets=[0, 0],
                n_test_pictures=[10, 10])
    return {**base, **kw}


def test_leak_free_false_when_transductive_and_best_among_leak_free():
    """A transductive row is not leak-free (even from an old result JSON that said so), the pivot keeps
    the flags, and "best" picks among leak-free rows only and says so."""
    clean = _result()
    trans = _result(backend="ict+fit_full", transductive="texture basis from test pictures", leak_free=True,
                    accuracy_by_k={"1": {**clean["accuracy_by_k"]["1"], "mean": 0.95}})
    tuned = _result(backend="tddfa+rnet", tuned_on_test="chosen on test",
                    accuracy_by_k={"1": {**clean["accuracy_by_k"]["1"], "mean": 0.9}})
    t1 = tables.table1([clean, trans, tuned])
    assert t1["leak_free"].tolist() == [True, False, True] and t1["tuned_on_test"].tolist() == [False, False, True]
    best = tables.table1_best(t1)
    assert len(best) == 1 and best["backend"].iloc[0] == "tddfa" and best["best accuracy"].iloc[0] == 0.8
    assert best["chosen_among"].iloc[0] == "exploration: best of 1 clean rows on the test split (not the verdict)"
    pivot = tables.table1_pivot(t1)
    cells = {c[2]: pivot[c].iloc[0] for c in pivot.columns}
    assert cells["ict+fit_full"].endswith("†") and cells["tddfa+rnet"].endswith("‡") and "†" not in cells["tddfa"]
    assert "†" in pivot.attrs["caption"]
    notes = tables.table1_footnotes(t1)
    assert "`tddfa+rnet`" in notes and tables.FOOTNOTE_TUNED in notes and tables.FOOTNOTE_LEAK_FREE in notes


def test_caps_counts_and_at_cap_columns():
    """Findings 3 and 8: fit / validation counts apart, the caps, and a flag when the best epoch is the cap."""
    r = _result(accuracy_by_k={"1": {**_result()["accuracy_by_k"]["1"], "best_epochs": [150, 30]}})
    row = tables.table1([r, _result()]).iloc[0]
    assert row["n_fit_pictures"] == 150 and row["n_val_pictures"] == 50 and "n_train_pictures" not in row
    assert row["epochs_max"] == 150 and row["patience"] == 15 and bool(row["at_cap"])
    assert not tables.table1([_result()])["at_cap"].iloc[0]
    sk = tables.table1([_result(model="logreg", epochs_max=None, recipe={"patience": None})]).iloc[0]
    assert not sk["at_cap"] and sk["patience"] is None
    assert set(tables.TABLE1_COLUMNS) <= set(tables.TABLE1_GLOSSARY)  # the page adds display columns


def test_per_angle_plot_with_fitted_variants(tmp_path, results):
    """Raw and fitted runs of the same cell used to collide (labels without the backend) and crash reindex."""
    r = results[1].to_dict()
    fitted = dict(r, backend=r["backend"] + "+fit_landmarks")
    out = figures.plot_per_angle([r, fitted, dict(r)], {}, tmp_path / "a.png")
    assert out.stat().st_size > 1000
    t1 = tables.table1([r, fitted])
    assert len(tables.table1_pivot(t1).columns) == 2  # backends stay apart
    assert set(tables.table1_best(t1)["backend"]) <= {r["backend"], fitted["backend"]}
    rn = dict(r, model="resnet34")
    t2 = tables.table2([rn, dict(fitted, model="resnet34"), dict(rn, input="image", kind="images",
                                                                   seconds_per_input=1.0)])
    ratio = tables.table2_ratio(t2)
    assert len(ratio) == 2 and np.allclose(ratio["image / vector"], 1.0 / ratio["vector"])
    assert tables.table2_ratio(tables.table2([rn]))["image"].isna().all()  # no image run: no ratio, no crash


def test_single_split_shows_interval_and_tables_hold_one_run(tmp_path, results):
    df = synthetic_coeff_table(4, fei_per_gender=8, separation=1.0, seed=1)
    single = run_task(df, "gender", "paper", model="logreg", n_folds=1)
    text = tables.table1_display(tables.table1([single.to_dict()]))["accuracy"].iloc[0]
    assert "[" in text and "±" not in text
    (tmp_path / "table1.md").write_text("old run")
    (tmp_path / "other_figure.png").write_text("kept")
    tables.write_tables([single], tmp_path, {"synthetic": False})
    assert "old run" not in (tmp_path / "table1.md").read_text() and (tmp_path / "other_figure.png").exists()
    assert not (tmp_path / "per_angle_accuracy.png").exists()  # nothing stale from an earlier run


def test_write_tables(tmp_path, results):
    prov = {"synthetic": True, "seed": 0, "backend": "synthetic", "device": "cpu"}
    paths = tables.write_tables(results, tmp_path, prov)
    t1 = pd.read_csv(tmp_path / "table1.csv")
    assert list(t1.columns) == tables.TABLE1_COLUMNS
    assert len(t1) == 4 and t1["accuracy_mean"].between(0, 1).all() and t1["synthetic"].all()
    assert {"k", "leak_free", "image_size", "epochs_run", "best_epoch", "pretrained", "n_fit_pictures",
            "n_val_pictures", "n_fit_sets", "n_test_pictures", "n_test_sets", "epochs_max", "patience",
            "at_cap", "trained_k", "tuned_on_test"} <= set(t1.columns)
    assert t1["aggregator"].isna().all()  # only results on aggregated sets name an aggregator
    t2 = pd.read_csv(tmp_path / "table2.csv")
    assert list(t2.columns) == tables.TABLE2_COLUMNS and t2["synthetic"].all()
    t3 = pd.read_csv(tmp_path / "table3.csv", index_col=0)
    assert t3.pop("synthetic").all()
    assert list(t3.index) == list(tables.EXPRESSIONS) and list(t3.columns) == list(tables.EXPRESSIONS)
    assert np.allclose(t3.sum(axis=1), 100.0)
    counts = pd.read_csv(tmp_path / "table3_counts.csv", index_col=0).drop(columns="synthetic")
    assert counts.to_numpy().sum() == np.asarray(results[0]["confusion"]).sum()  # paper/β/… chosen first
    assert json.loads((tmp_path / "provenance.json").read_text()) == prov
    for md in ("table1.md", "table2.md", "table3.md"):
        text = (tmp_path / md).read_text()
        assert text.startswith("<!-- provenance:") and "SYNTHETIC" in text
    # the paper's 83.5 % sits in the `paper` column beside expression/paper/β only for its own model (ResNet-34),
    # not logreg (its `paper_coefficients` reference column carries it beside every expression/paper row)
    assert "83.5 %" not in tables.table1_display(t1)["paper"].tolist()
    assert set(paths) >= {"table1_csv", "table2_csv", "table3_csv", "table3_counts_csv", "provenance"}


def test_not_synthetic_titles_and_load_results(tmp_path, results):
    for r in results:
        save_result(r, tmp_path / "res")  # a TaskResult
    loaded = tables.load_results(tmp_path / "res")
    assert len(loaded) == 4
    tables.write_tables(tmp_path / "res", tmp_path / "out", {"synthetic": False})
    assert "SYNTHETIC" not in (tmp_path / "out" / "table1.md").read_text()


def test_table3_percent_rows():
    r = {"classes": list(tables.EXPRESSIONS), "confusion": (np.eye(7, dtype=int) * 8 + 1).tolist()}
    percent, counts = tables.table3(r)
    assert np.allclose(percent.sum(axis=1), 100) and percent.iloc[0, 0] == pytest.approx(900 / 15 + 0 * 1)
    assert counts.to_numpy().sum() == 7 * 15
    assert tables.PAPER_TABLE3.loc["HA", "HA"] == 95.77 and np.isnan(tables.PAPER_TABLE3.loc["HA", "AF"])


def _notebook_cells_reading_table3() -> list[str]:
    from pathlib import Path

    nb = json.loads((Path(__file__).parents[1] / "notebooks" / "05_analysis.ipynb").read_text())
    cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    return [c for c in cells if "table3" in c.lower() and "heatmap" not in c]


def test_a_run_without_expression_has_no_table3_and_notebook_05_says_so(tmp_path, results):
    """A dataset without an expression label (e.g. a folder CSV of path,subject,view) writes no Table 3; notebook 05's
    cells that show Table 3 must say so in one line instead of failing on a missing file."""
    from types import SimpleNamespace

    without = [r for r in results if r.task != "expression"]
    paths = tables.write_tables(without, tmp_path, {"synthetic": False})
    assert not (tmp_path / "table3.csv").exists() and "table3_csv" not in paths
    assert tables.read_table3(tmp_path) is None and tables.table3_text(tmp_path) == tables.NO_TABLE3
    cells = _notebook_cells_reading_table3()
    assert len(cells) == 2  # the shape check and the Markdown table
    shown, printed = [], []
    namespace = dict(run=SimpleNamespace(tables=tmp_path), t1=pd.read_csv(tmp_path / "table1.csv"), tables=tables,
                     pd=pd, display=shown.append, Markdown=lambda text: text,
                     print=lambda *a: printed.append(" ".join(map(str, a))))
    for cell in cells:
        exec(cell, namespace)  # noqa: S102 - the committed notebook's own cells
    assert shown == [tables.NO_TABLE3] and printed[-1] == "Table 3: not written (no expression result)"
    tables.write_tables(results, tmp_path, {"synthetic": False})  # with expression: the table itself
    assert tables.read_table3(tmp_path).shape == (7, 8)
    assert tables.table3_text(tmp_path).startswith("<!-- provenance:")
