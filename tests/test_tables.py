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
    assert P(_row()) == 0.835 and P(_row(task="identity", input="alpha", k=3)) == 1.0
    assert P(_row(input="image", image_size=224)) == 0.706
    for row in (_row(model="logreg"), _row(model="svm"), _row(backend="tddfa+fit_full"),
                _row(protocol="subject_independent"), _row(input="image", image_size=64), _row(input="alpha"),
                _row(task="identity", input="alpha", k=1), _row(input="hog", model="linsvm"),
                _row(dataset="folder"), _row(task="gender", input="alpha", dataset="kdef")):
        assert P(row) is None, dict(row)  # the last two: data the paper did not run that task on
    assert P(_row(dataset="kdef")) == 0.835 and P(_row(task="gender", input="alpha", dataset="fei")) == 0.954


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
    assert {"k", "leak_free", "image_size", "epochs_run", "best_epoch", "pretrained", "n_train_pictures",
            "n_train_sets", "n_test_pictures", "n_test_sets"} <= set(t1.columns)
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
