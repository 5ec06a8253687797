"""Rigour, second pass: each test fails on the behaviour the reviewer found behind Table 1."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from facelib.classify import experiment as E
from facelib.classify import protocols as P
from facelib.fitting import crossfit
from facelib.report import tables
from tests.fixtures import synthetic_coeff_table


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def synth():
    return synthetic_coeff_table(5, fei_per_gender=10, separation=1.0, seed=0)


# ------------------------------------------------------------------------------------ 5: intervals resample people
def test_bootstrap_resamples_people_not_pictures():
    """Two people, 100 pictures each, one always right and one always wrong: resampling pictures gives a narrow
    interval around 50 %; resampling people (the honest unit) spans almost 0–100 %."""
    correct = np.r_[np.ones(100), np.zeros(100)]
    people = np.r_[["a"] * 100, ["b"] * 100]
    lo_p, hi_p = E.bootstrap_ci(correct, seed=0)
    lo, hi = E.bootstrap_ci(correct, seed=0, groups=people)
    assert hi_p - lo_p < 0.2 and lo <= 0.0 + 1e-9 and hi >= 1.0 - 1e-9
    # unequal people: the ratio estimator (their correct over their pictures), checked against a direct loop
    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 30, size=12)
    groups = np.repeat(np.arange(12), sizes).astype(str)
    corr = (rng.random(len(groups)) < np.repeat(rng.random(12), sizes)).astype(float)
    draws = np.random.default_rng(7).multinomial(12, np.full(12, 1 / 12), size=1000)
    order = sorted(set(groups))  # people in sorted order of their names, as drawn
    hits = np.array([corr[groups == g].sum() for g in order])
    n_of = np.array([(groups == g).sum() for g in order])
    ref = (draws @ hits) / (draws @ n_of)
    assert E.bootstrap_ci(corr, seed=7, groups=groups) == pytest.approx(
        [np.percentile(ref, 2.5), np.percentile(ref, 97.5)])


def test_single_split_interval_is_over_people(synth):
    r = E.run_task(synth, "gender", "paper", model="logreg", n_folds=1)
    d = r.accuracy_by_k["1"]
    assert d["ci_unit"] == "people" and tables.table1([r.to_dict()])["ci_unit"].iloc[0] == "people"
    pred = pd.DataFrame(r.predictions)
    subj = synth.set_index("image_id").loc[pred["image_id"], "subject"].to_numpy()
    assert r.accuracy_ci == pytest.approx(E.bootstrap_ci((pred["true"] == pred["pred"]).to_numpy(), 0, groups=subj))


# ------------------------------------------------------------------------------------ 4: cross-angle pooled
def test_cross_angle_is_pooled_with_per_view_accuracies(synth):
    r = E.run_task(synth, "identity", "cross_angle", model="logreg", protocol_kwargs={"subjects": None})
    pred = pd.DataFrame(r.predictions)
    pooled = float((pred["true"] == pred["pred"]).mean())
    assert r.split_kind == "pooled folds" and r.accuracy_std is None and r.accuracy_mean == pytest.approx(pooled)
    assert r.fold_labels == ["FL+FR", "HL+HR", "S"] and r.accuracy_by_k["1"]["ci_unit"] == "people"
    assert r.accuracy_ci[0] <= pooled <= r.accuracy_ci[1]
    per_view = pred.groupby("fold").apply(lambda g: (g["true"] == g["pred"]).mean()).tolist()
    assert r.fold_accuracies == pytest.approx(per_view)
    text = tables.table1([r.to_dict()])["split_accuracies"].iloc[0]
    n = r.accuracy_by_k["1"]["n_test"]
    assert text == "; ".join(f"{v} {100 * a:.1f} % ({k})" for v, a, k in zip(r.fold_labels, per_view, n))
    assert "±" not in tables.table1_display(tables.table1([r.to_dict()]))["accuracy"].iloc[0]


# ------------------------------------------------------------------------------------ 3 + 6: counts, k = 1 model
def test_identity_counts_apart_and_k1_model_trained_on_pictures(synth, monkeypatch):
    calls = []
    real = E.train_vector_model

    def spy(X, y, X_test=None, *a, **kw):
        calls.append((len(X), len(kw["X_val"]), len(X_test)))
        return real(X, y, X_test, *a, **kw)

    monkeypatch.setattr(E, "train_vector_model", spy)
    r = E.run_task(synth, "identity", "paper", model="logreg", n_folds=2, protocol_kwargs={"max_sets": 100})
    # 20 training pictures per person: 15 fit + 5 validation, for every arm (no refit)
    assert r.n_fit_pictures == [150, 150] and r.n_val_pictures == [50, 50]
    assert r.n_fit_sets == [1000, 1000] and r.n_val_sets == [100, 100]
    # per split: the 3-set model (sets in, test sets out), then the k = 1 model (single pictures in and out)
    assert calls[:2] == [(1000, 100, 1000), (150, 50, 150)] and len(calls) == 4
    assert r.accuracy_by_k["1"]["trained_k"] == 1 and r.accuracy_by_k["3"]["trained_k"] == 3
    t1 = tables.table1([r.to_dict()])
    assert t1["trained_k"].tolist() == [1, 3]
    assert t1["n_fit_sets"].isna().tolist() == [True, False]  # the k = 1 row's model saw no sets
    assert "C(15,3) = 455" in tables.table1_footnotes(t1)


# ------------------------------------------------------------------------------------ 2 + 1: flags from the table
def test_transductive_or_tuned_tables_flag_the_row(synth):
    df = synth.assign(transductive="texture basis from every picture")
    r = E.run_task(df, "expression", "subject_independent", model="logreg", n_folds=2)
    assert r.protocol_leak_free and not r.leak_free  # a transductive table: used to be True
    tuned = synth.assign(tuned_on_test="R-Net epochs chosen on test")
    r2 = E.run_task(tuned, "expression", "subject_independent", model="logreg", n_folds=2)
    assert r2.leak_free and r2.tuned_on_test == "R-Net epochs chosen on test"
    assert tables.table1([r2.to_dict()])["tuned_on_test"].all()


def test_evaluate_on_validation_never_scores_a_test_picture(synth):
    """Choosing settings scores the inner validation side, never a picture of a split's test side."""
    kw = dict(model="logreg", n_folds=2, protocol_kwargs={"max_sets": 60})
    r = E.run_task(synth, "identity", "paper", evaluate="validation", **kw)
    folds = P.make_folds(E._task_table(synth, "identity"), "identity", "paper", seed=0, n_folds=2, max_sets=60)
    ids = E._task_table(synth, "identity")["image_id"].to_numpy()
    scored = pd.DataFrame(r.predictions)
    for fi, fold in enumerate(folds):
        seen = set("+".join(scored.loc[scored["fold"] == fi, "image_id"]).split("+"))
        assert seen and not seen & set(ids[fold.test_images])
    assert r.evaluated_on == "validation"
    with pytest.raises(ValueError):
        E.run_task(synth, "identity", "paper", evaluate="tests", **kw)


def test_bench_quality_scores_validation(monkeypatch, synth):
    import benchmarks.bench_rnet as B

    seen = []
    monkeypatch.setattr(B, "run_task", lambda *a, **kw: seen.append(kw["evaluate"]) or
                        {"aggregator": None, "evaluated_on": kw["evaluate"], "accuracy_mean": 0.5,
                         "accuracy_std": 0.1})
    res = B.quality_rows({"tddfa": {"kdef": synth, "fei": synth}}, folds=2)
    assert seen == ["validation"] * 3 and set(res["evaluated_on"]) == {"validation"}


# ------------------------------------------------------------------------------------ 9: cross-fit part signature
def _parted(offset: float, seed: int = 0) -> pd.DataFrame:
    """Synthetic table coded by two 'networks': part p adds ``offset`` × a fixed direction to every α."""
    df = synthetic_coeff_table(6, seed=seed)
    df["rnet_part"] = crossfit.assign_parts(df["subject"], 2, seed=seed)
    direction = np.random.default_rng(9).normal(size=40)
    df["alpha"] = [list(np.asarray(a) + offset * p * direction) for a, p in zip(df["alpha"], df["rnet_part"])]
    return df


def test_part_probe_finds_network_offsets_on_unseen_people():
    hit = crossfit.part_probe(_parted(1.0))
    none = crossfit.part_probe(_parted(0.0))
    assert hit["accuracy"] > 0.9 and hit["chance"] == pytest.approx(0.5) and hit["n_people"] == 12
    assert none["accuracy"] < 0.75  # no offset: only person-to-person differences, which do not generalise
    assert crossfit.part_probe(_parted(1.0), center=True)["accuracy"] < 0.75  # fit-split centering removes it


def test_center_parts_uses_fit_rows_only():
    X = np.arange(12, dtype=float).reshape(6, 2)
    parts = np.array([0, 0, 0, 1, 1, 1])
    out = crossfit.center_parts(X, parts, fit_idx=[0, 1, 3])
    assert np.allclose(out[:3], X[:3] - X[[0, 1]].mean(0)) and np.allclose(out[3:], X[3:] - X[3])


def test_part_offset_cannot_help_a_classifier(monkeypatch):
    """A gender-blind α whose only gender cue is the coding network (parts unevenly split by gender): without
    part centering the classifier reads gender off the network's offset; with it, it cannot."""
    df = synthetic_coeff_table(0, fei_per_gender=20, separation=0.0, seed=1)
    fei = df[df["dataset"] == "fei"].reset_index(drop=True)
    people = sorted(set(fei["subject"]))
    gender = dict(zip(fei["subject"], fei["gender"]))
    rng = np.random.default_rng(0)
    part = {s: int(rng.random() < (0.85 if gender[s] == "M" else 0.15)) for s in people}
    fei["rnet_part"] = fei["subject"].map(part)
    direction = np.random.default_rng(9).normal(size=40)
    fei["alpha"] = [list(np.asarray(a) + 3.0 * p * direction) for a, p in zip(fei["alpha"], fei["rnet_part"])]
    leaky = E.run_task(fei, "gender", "subject_independent", model="logreg", n_folds=4, center_parts=False)
    fixed = E.run_task(fei, "gender", "subject_independent", model="logreg", n_folds=4)
    assert fixed.part_centered and not leaky.part_centered
    assert leaky.accuracy_mean > 0.75 and fixed.accuracy_mean < 0.65
