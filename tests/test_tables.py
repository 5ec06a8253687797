"""Tables 1–3 from run_task results (their figures: tests/test_report_index.py)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from facelib.report import tables
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


def test_write_tables(tmp_path, results):
    prov = {"synthetic": True, "seed": 0, "backend": "synthetic", "device": "cpu"}
    paths = tables.write_tables(results, tmp_path, prov)
    t1 = pd.read_csv(tmp_path / "table1.csv")
    assert list(t1.columns) == ["task", "protocol", "input", "model", "backend", "aggregator", "accuracy_mean",
                                "accuracy_std", "n_folds", "n_train", "n_test"]
    assert t1["aggregator"].isna().all()  # only results on aggregated sets name an aggregator
    assert len(t1) == 4 and t1["accuracy_mean"].between(0, 1).all()
    t2 = pd.read_csv(tmp_path / "table2.csv")
    assert list(t2.columns) == ["task", "input", "model", "device", "seconds_per_input", "seconds_per_epoch"]
    t3 = pd.read_csv(tmp_path / "table3.csv", index_col=0)
    assert list(t3.index) == list(tables.EXPRESSIONS) and list(t3.columns) == list(tables.EXPRESSIONS)
    assert np.allclose(t3.sum(axis=1), 100.0)
    counts = pd.read_csv(tmp_path / "table3_counts.csv", index_col=0)
    assert counts.to_numpy().sum() == np.asarray(results[0]["confusion"]).sum()  # paper/β/… chosen first
    assert json.loads((tmp_path / "provenance.json").read_text()) == prov
    for md in ("table1.md", "table2.md", "table3.md"):
        text = (tmp_path / md).read_text()
        assert text.startswith("<!-- provenance:") and "SYNTHETIC" in text
    assert "83.5 %" in (tmp_path / "table1.md").read_text()  # the paper's figure beside ours
    assert set(paths) >= {"table1_csv", "table2_csv", "table3_csv", "table3_counts_csv", "provenance"}


def test_not_synthetic_titles_and_load_results(tmp_path, results):
    for r in results:
        save_result(r, tmp_path / "res")
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
