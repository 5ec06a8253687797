"""The findings paragraph says what a run's Table 1 shows and nothing more: opposite winners give opposite
sentences, a difference within the spread is "not distinguishable", distances to the paper are the arithmetic of
the rows, and the banner appears exactly on runs without the paper's ResNet-34 arms."""
from __future__ import annotations

import pandas as pd
import pytest

from facelib.report import findings
from facelib.report.tables import TABLE1_COLUMNS


def row(task, protocol, input, model, acc, std, k=1, n=5, kind="repeats", image_size=None, backend="tddfa",
        ci=(None, None)):
    r = dict.fromkeys(TABLE1_COLUMNS)
    r.update(task=task, protocol=protocol, input=input, model=model, backend=backend, k=k, accuracy_mean=acc,
             accuracy_std=std, ci_low=ci[0], ci_high=ci[1], n_splits=n, split_kind=kind, image_size=image_size,
             dataset="fei" if task == "gender" else "kdef", leak_free=protocol != "paper")
    return r


def table(coef_expr, pic_expr, coef_gender, pic_gender, std=0.02):
    """A made-up Table 1: expression and gender, the paper's protocol, the best coefficient row against the best
    picture row (plus a weaker row of each arm, which must not be the one quoted)."""
    return pd.DataFrame([
        row("expression", "paper", "beta", "logreg", coef_expr, std),
        row("expression", "paper", "beta", "svm", coef_expr - 0.10, std),
        row("expression", "paper", "dlib", "logreg", pic_expr, std),
        row("expression", "paper", "hog", "linsvm", pic_expr - 0.10, std),
        row("gender", "paper", "alpha", "logreg", coef_gender, std),
        row("gender", "paper", "dlib", "logreg", pic_gender, std),
    ], columns=TABLE1_COLUMNS)


def _for(sentences, task):
    return next(s for s in sentences if s.startswith(task))


def test_opposite_winners_give_opposite_sentences():
    coef_wins = findings.sentences(table(0.80, 0.60, 0.95, 0.85))
    pic_wins = findings.sentences(table(0.60, 0.80, 0.85, 0.95))
    for task in ("Expression", "Gender"):
        a, b = _for(coef_wins, task), _for(pic_wins, task)
        assert "the best coefficient row beats the best picture row" in a and "picture row beats" not in a
        assert "the best picture row beats the best coefficient row" in b and "coefficient row beats" not in b
    # expression: 20 points against a combined spread of sqrt(2) × 2 = 2.83 points (7.1×); the best rows quoted
    e = _for(coef_wins, "Expression")
    assert "by 20.0 points, 7.1× the combined spread of ±2.8 points" in e
    assert "80.0 % (logistic regression on expression coefficients β (tddfa), 5 repeats)" in e
    assert "60.0 % (logistic regression on dlib face embedding, 5 repeats)" in e
    assert [c["verdict"] for c in findings.compare(table(0.80, 0.60, 0.95, 0.85))] == ["coefficients"] * 2
    assert [c["verdict"] for c in findings.compare(table(0.60, 0.80, 0.85, 0.95))] == ["pictures"] * 2


def test_a_difference_within_the_spread_is_not_a_winner():
    said = findings.sentences(table(0.62, 0.60, 0.90, 0.91, std=0.03))
    for task in ("Expression", "Gender"):
        s = _for(said, task)
        assert "not distinguishable" in s and "beats" not in s
    # 2 points against sqrt(2) × 3 = 4.2 points
    assert "the 2.0 points difference is within the combined spread of ±4.2 points" in _for(said, "Expression")


def test_single_split_uses_the_interval_and_no_spread_is_not_tested():
    t = pd.DataFrame([row("identity", "cross_session", "alpha", "logreg", 0.50, None, n=1, kind="single split",
                          ci=(0.45, 0.55)),
                      row("identity", "cross_session", "dlib", "logreg", 0.52, None, n=1, kind="single split",
                          ci=(0.47, 0.57))], columns=TABLE1_COLUMNS)
    item, = findings.compare(t)
    assert item["spread"] == pytest.approx((0.1 / 3.92) * 2 ** 0.5)  # half-interval / 1.96 per row, combined
    assert item["verdict"] == "indistinguishable"
    t[["ci_low", "ci_high"]] = None
    assert "is not tested" in findings.sentences(t)[0]


def test_distance_to_the_paper_and_one_arm():
    t = table(0.80, 0.60, 0.95, 0.85)
    said = findings.sentences(t)
    paper = [s for s in said if s.startswith("Against the paper")]
    assert len(paper) == 2  # expression and gender, the paper's protocol
    # expression: 80.0 − 83.5 = −3.5 points; 60.0 − 70.6 = −10.6 points
    assert "the best coefficient row is 3.5 points below the paper's 83.5 %" in paper[0]
    assert "the best picture row is 10.6 points below the paper's 70.6 %" in paper[0]
    assert "neither best row repeats the paper's experiment" in paper[0]
    only = pd.DataFrame([row("expression", "subject_independent", "beta", "logreg", 0.5, 0.02)],
                        columns=TABLE1_COLUMNS)
    s, = findings.sentences(only)
    assert "only coefficients rows ran" in s and "beats" not in s
    assert findings.paragraph(pd.DataFrame(columns=TABLE1_COLUMNS)).startswith("Table 1 has no accuracy")


def test_rows_that_repeat_the_paper_are_quoted_against_its_figure():
    t = pd.DataFrame([row("expression", "paper", "beta", "resnet34", 0.55, 0.02),
                      row("expression", "paper", "image", "resnet34", 0.66, 0.02, image_size=224)],
                     columns=TABLE1_COLUMNS)
    paper = [s for s in findings.sentences(t) if s.startswith("Against the paper")][0]
    assert "repeats the paper's experiment" not in paper  # both best rows are the paper's own
    assert "ResNet-34 on expression coefficients β (tddfa) 55.0 % against its 83.5 %" in paper
    assert "ResNet-34 on pictures 66.0 % against its 70.6 %" in paper


def test_banner_only_without_the_papers_arms():
    cheap = table(0.80, 0.60, 0.95, 0.85)
    banner = findings.paper_arms_banner(cheap)
    assert "did not train the paper's ResNet-34 on 3DMM coefficients or on pictures" in banner
    assert "cannot confirm or refute" in banner and "logistic regression" in banner
    full = pd.concat([cheap, pd.DataFrame([row("expression", "paper", "beta", "resnet34", 0.5, 0.02),
                                           row("expression", "paper", "image", "resnet34", 0.5, 0.02,
                                               image_size=224)], columns=TABLE1_COLUMNS)])
    assert findings.paper_arms_banner(full) is None
    small = full.assign(image_size=full["image_size"].where(full["image_size"].isna(), 48))
    assert "saw 48-px crops, not the paper's 224 px" in findings.paper_arms_banner(small)
    no_image = full[full["input"] != "image"]
    assert "did not train the paper's ResNet-34 on pictures" in findings.paper_arms_banner(no_image)
    assert findings.markdown(cheap).startswith("> **What this run can show.**")


def test_a_transductive_best_row_says_so():
    """The best coefficient row is quoted with its flags: a transductive fit (its texture basis saw the test
    pictures) or settings tuned on the test folds is named in the sentence; a plain row carries no flag."""
    t1 = table(0.80, 0.60, 0.95, 0.85)
    t1.loc[0, "transductive"] = "texture basis built from this table's pictures (test pictures included)"
    t1.loc[4, "tuned_on_test"] = True
    expr, gender = _for(findings.sentences(t1), "Expression"), _for(findings.sentences(t1), "Gender")
    assert "transductive: its fit saw the test pictures" in expr and "tuned on the test folds" not in expr
    assert "settings tuned on the test folds" in gender and "transductive" not in gender
    plain = _for(findings.sentences(table(0.80, 0.60, 0.95, 0.85)), "Expression")
    assert "transductive" not in plain and "tuned" not in plain


def test_a_person_grouped_best_row_says_so():
    """A best coefficient row whose β came from a person-consistent fit (person_grouped) is quoted with that flag;
    a plain row is not."""
    t1 = table(0.80, 0.60, 0.95, 0.85)
    t1.loc[0, "person_grouped"] = "β fitted with α at the leave-one-out mean of the person's other pictures"
    t1.loc[0, "backend"] = "ict+fit_person"
    expr = _for(findings.sentences(t1), "Expression")
    assert "person-grouped" in expr and "ict+fit_person" in expr
    assert "person-grouped" not in _for(findings.sentences(table(0.80, 0.60, 0.95, 0.85)), "Expression")
