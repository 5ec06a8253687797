"""The verdict: each arm's clean row is chosen on validation (never on test), the two rows are compared paired on
the same splits and people, and a row that saw test pictures (person-grouped, transductive, exposed, tuned on
test) never competes. The statistics are checked against hand arithmetic and against scipy."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from facelib.classify import experiment as E
from facelib.report import findings, tables
from facelib.report import verdict as V
from tests.fixtures import made_up_result, person_hits, synthetic_coeff_table

PEOPLE = [f"p{i:02d}" for i in range(10)]


def rates(v):
    return {p: v for p in PEOPLE}


def test_the_representative_row_is_chosen_on_validation_not_on_test():
    """Two coefficient rows: logreg is better on validation, svm on test. The verdict takes logreg (and reads
    its test figure only afterwards); the best-on-test exploration view takes svm and says it is exploration."""
    res = [made_up_result("expression", "subject_independent", "beta", "logreg", person_hits(rates(0.7)), 0.90),
           made_up_result("expression", "subject_independent", "beta", "svm", person_hits(rates(0.9)), 0.60),
           made_up_result("expression", "subject_independent", "hog", "logreg", person_hits(rates(0.5)), 0.80)]
    v = V.verdict_table(res)
    line, = v.to_dict("records")
    assert (line["coef_model"], line["coef_candidates"], line["selected_on"]) == ("logreg", 2, "validation")
    assert line["coef_test_accuracy"] == pytest.approx(0.7) and line["coef_val_accuracy"] == pytest.approx(0.9)
    assert line["pic_input"] == "hog" and line["pic_backend"] == tables.PICTURE_BACKEND
    best = tables.table1_best(tables.table1(res))
    assert best["model"].iloc[0] == "svm" and best["chosen_among"].iloc[0].startswith("exploration")


def test_rows_that_saw_test_pictures_are_never_clean_nor_chosen():
    """A person-grouped row (its β used the person's other pictures, test pictures included) is neither leak-free
    nor clean, even from a result that said leak_free; an exposed row (R-Net trained on other parts' pictures)
    and a transductive one are not clean either. None of them is chosen, however good its validation."""
    plain = made_up_result("expression", "subject_independent", "beta", "logreg", person_hits(rates(0.6)), 0.70)
    grouped = made_up_result("expression", "subject_independent", "beta", "svm", person_hits(rates(0.9)), 0.99,
                             backend="ict+fit_person", person_grouped="β with α at the person's other pictures",
                             leak_free=True)
    exposed = made_up_result("expression", "subject_independent", "beta", "mlp", person_hits(rates(0.9)), 0.98,
                             backend="tddfa+rnet", exposure="R-Net trained on the other part's pictures")
    trans = made_up_result("expression", "subject_independent", "beta", "linsvm", person_hits(rates(0.9)), 0.97,
                           backend="ict+fit_full", transductive="texture basis from test pictures")
    pic = made_up_result("expression", "subject_independent", "dlib", "logreg", person_hits(rates(0.5)), 0.5,
                         pretrained=True)
    t1 = tables.table1([plain, grouped, exposed, trans, pic])
    assert t1["clean"].tolist() == [True, False, False, False, True]
    assert t1["leak_free"].tolist() == [True, False, True, False, True]
    line, = V.verdict_table([plain, grouped, exposed, trans, pic]).to_dict("records")
    assert line["coef_model"] == "logreg" and line["coef_candidates"] == 1
    assert line["pic_pretrained"] and "pretrained" in findings.sentence(pd.Series(line))


def test_sign_flip_and_bootstrap_on_known_cases():
    assert V.sign_flip_p([1, 1, 1, 1]) == pytest.approx(2 / 16)  # only all + and all − reach |4|
    assert V.sign_flip_p([1, -1]) == pytest.approx(1.0)
    assert V.sign_flip_p([0, 0]) == 1.0
    assert V.sign_flip_p([1] * 10) == pytest.approx(2 / 1024)
    d = [3, 1, -1, 2, 2, 0, 1]  # exact: every pattern counted by hand
    signs = np.array(np.meshgrid(*[[1, -1]] * 6)).reshape(6, -1).T
    nz = np.array([3, 1, -1, 2, 2, 1])
    assert V.sign_flip_p(d) == pytest.approx(np.mean(np.abs(signs @ nz) >= abs(nz.sum())))
    big = np.r_[np.ones(30), -np.ones(10)]  # 40 pairs: random flips, (hits + 1) / (n + 1)
    assert V.sign_flip_p(big) == pytest.approx(2 * stats.binom.sf(29, 40, 0.5) + 0, abs=0.01)
    # every person has the same ratio: the bootstrap interval collapses on it
    assert V.people_bootstrap_ci([2, 4, 6], [10, 20, 30]) == pytest.approx((0.2, 0.2))
    diffs = np.array([0.05, 0.02, 0.08, 0.04])
    half = stats.t.ppf(0.975, 3) * diffs.std(ddof=1) / 2
    assert V.t_interval(diffs) == pytest.approx((diffs.mean() - half, diffs.mean() + half))
    assert V.holm([0.01, 0.04, 0.03, np.nan]) == pytest.approx([0.03, 0.06, 0.06, np.nan], nan_ok=True)


def test_paired_difference_per_person_against_hand_arithmetic():
    coef = {"person_hits": [{"a": [8, 10], "b": [6, 10]}, {"a": [9, 10], "b": [5, 10]}]}
    pic = {"person_hits": [{"a": [5, 10], "b": [6, 10]}, {"a": [7, 10], "b": [4, 10]}]}
    p = V.paired(coef, pic)
    # person a: (8 − 5) + (9 − 7) = 5 of 20; person b: 0 + 1 = 1 of 20; pooled 6 / 40
    assert (p["unit"], p["n_pairs"]) == ("people", 2) and p["difference"] == pytest.approx(6 / 40)
    assert p["p_value"] == pytest.approx(0.5)  # 2 people, both positive: 2 of 4 patterns reach |6|
    assert p["ci_low"] <= 0.05 + 1e-9 and p["ci_high"] >= 0.25 - 1e-9  # a: 0.25, b: 0.05
    # different test samples: not paired
    other = {"person_hits": [{"a": [5, 9], "b": [6, 10]}, {"a": [7, 10], "b": [4, 10]}],
             "fold_accuracies": [0.5, 0.5], "n_test": [19, 20]}
    assert V.paired({**coef, "fold_accuracies": [0.7, 0.7], "n_test": [20, 20]}, other)["unit"] == "unpaired"
    # no people: the split is the unit
    s = V.paired({"fold_accuracies": [0.7, 0.8, 0.9], "n_test": [10] * 3},
                 {"fold_accuracies": [0.6, 0.6, 0.6], "n_test": [10] * 3})
    assert (s["unit"], s["n_pairs"]) == ("splits", 3) and s["difference"] == pytest.approx(0.2)
    assert s["p_value"] == pytest.approx(2 / 8)


def test_a_clear_difference_wins_and_a_small_one_is_not_distinguishable():
    people = [f"p{i:02d}" for i in range(20)]
    strong = [made_up_result("gender", "subject_independent", "alpha", "logreg",
                             person_hits({p: 0.9 for p in people}), 0.9),
              made_up_result("gender", "subject_independent", "hog", "logreg",
                             person_hits({p: 0.5 for p in people}), 0.5)]
    line, = V.verdict_table(strong).to_dict("records")
    assert line["verdict"] == "coefficients" and line["n_pairs"] == 20 and line["p_value"] < 1e-4
    assert line["difference"] == pytest.approx(0.4) and line["ci_low"] == pytest.approx(0.4)
    mixed = {p: (0.6 if i % 2 else 0.5) for i, p in enumerate(people)}
    weak = [made_up_result("gender", "subject_independent", "alpha", "logreg", person_hits(mixed), 0.9),
            made_up_result("gender", "subject_independent", "hog", "logreg",
                           person_hits({p: (0.5 if i % 2 else 0.6) for i, p in enumerate(people)}), 0.5)]
    line, = V.verdict_table(weak).to_dict("records")
    assert line["verdict"] == "not distinguishable" and line["difference"] == pytest.approx(0.0)
    s = findings.sentence(pd.Series(line))
    assert s.startswith("Gender") and "not distinguishable" in s and "Holm-adjusted" in s


def test_verdict_csv_has_every_column(tmp_path):
    res = [made_up_result("identity", "paper", "alpha", "logreg", person_hits(rates(0.7)), 0.8, k=3),
           made_up_result("identity", "paper", "hog", "logreg", person_hits(rates(0.6)), 0.7, k=3),
           made_up_result("expression", "subject_independent", "beta", "logreg", person_hits(rates(0.6)), 0.7)]
    tables.write_tables(res, tmp_path, {"seed": 0})
    v = pd.read_csv(tmp_path / "verdict.csv")
    wanted = ["task", "protocol", "k", "coef_backend", "coef_input", "coef_model", "coef_aggregator",
              "pic_backend", "pic_input", "pic_model", "pic_aggregator", "coef_candidates", "pic_candidates",
              "selected_on", "coef_val_accuracy", "pic_val_accuracy", "coef_test_accuracy", "pic_test_accuracy",
              "difference", "ci_low", "ci_high", "unit", "p_value", "n_pairs", "verdict"]
    assert set(wanted) <= set(v.columns) and list(v.columns) == V.VERDICT_COLUMNS
    assert v["verdict"].tolist() == ["coefficients", "one arm"]  # every person +1 of 10 per split: p = 2/1024
    assert not v["protocol_leak_free"].iloc[0]
    assert v["n_tests"].tolist() == [1, 1]


@pytest.mark.usefixtures("one_torch_thread")
def test_real_runs_carry_validation_person_hits_and_ran_to_cap():
    """Through run_task: every row has its validation accuracy and per-person answers, the verdict pairs two
    real rows on the same people, and a network that trained to its cap (4 epochs, patience 15) is flagged on
    every split."""
    synth = synthetic_coeff_table(5, separation=0.6, seed=3)
    a = E.run_task(synth, "expression", "subject_independent", input="beta", model="logreg", n_folds=3).to_dict()
    b = E.run_task(synth, "expression", "subject_independent", input="alpha", model="svm", n_folds=3).to_dict()
    net = E.run_task(synth, "expression", "subject_independent", input="beta", model="mlp", n_folds=3,
                     epochs=4).to_dict()
    d = a["accuracy_by_k"]["1"]
    assert 0 <= d["val_mean"] <= 1 and len(d["val_accuracies"]) == 3
    assert sum(n for s in d["person_hits"] for _, n in s.values()) == sum(d["n_test"])
    t1 = tables.table1([a, b, net])
    assert t1.loc[2, "ran_to_cap"] == 3 and t1.loc[0, "ran_to_cap"] is None or pd.isna(t1.loc[0, "ran_to_cap"])
    b["input"] = "hog"  # the same splits and people, read as a picture row
    line, = V.verdict_table([a, b]).to_dict("records")
    assert line["unit"] == "people" and line["n_pairs"] == 10
    assert line["difference"] == pytest.approx(a["accuracy_mean"] - b["accuracy_mean"])


def test_a_single_picture_model_is_one_row_whatever_the_aggregator():
    """On the paper's identity protocol the k = 1 model is trained on single pictures: the mean and the C-Net
    results carry the same one, so Table 1 shows it once (no aggregator) beside the two k = 3 rows."""
    def res(agg):
        r = made_up_result("identity", "paper", "alpha", "logreg", person_hits(rates(0.7)), 0.8, k=3,
                           aggregator=agg)
        r["accuracy_by_k"]["1"] = {**r["accuracy_by_k"]["3"], "trained_k": 1}
        return r
    t1 = tables.table1([res("mean"), res("cnet")])
    assert sorted(zip(t1["k"], t1["aggregator"].fillna(""))) == [(1, ""), (3, "cnet"), (3, "mean")]


def test_ties_on_validation_keep_the_first_listed_and_are_counted():
    res = [made_up_result("identity", "cross_angle", "alpha", "logreg", person_hits(rates(0.3)), 0.6),
           made_up_result("identity", "cross_angle", "hog", "linsvm", person_hits(rates(0.4)), 1.0),
           made_up_result("identity", "cross_angle", "image", "resnet34", person_hits(rates(0.6)), 1.0)]
    line, = V.verdict_table(res).to_dict("records")
    assert (line["pic_input"], line["pic_val_ties"], line["coef_val_ties"]) == ("hog", 2, 1)
    assert "tied with 1 other there (the first listed is taken)" in findings.sentence(pd.Series(line))
