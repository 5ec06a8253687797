"""The findings say what a run's verdict table shows and nothing more: opposite winners give opposite sentences,
a small paired difference is "not distinguishable", each arm's row is quoted with how it was chosen, distances to
the paper are the arithmetic of the chosen rows, and the banner appears exactly on runs without the paper's
ResNet-34 arms."""
from __future__ import annotations

import pandas as pd
import pytest

from facelib.report import findings
from facelib.report.tables import TABLE1_COLUMNS
from facelib.report.verdict import verdict_table
from tests.fixtures import made_up_result, person_hits

PEOPLE = [f"p{i:02d}" for i in range(20)]


def row(task, protocol, input, model, acc, std, k=1, n=5, kind="repeats", image_size=None, backend="tddfa",
        ci=(None, None)):
    r = dict.fromkeys(TABLE1_COLUMNS)
    r.update(task=task, protocol=protocol, input=input, model=model, backend=backend, k=k, accuracy_mean=acc,
             accuracy_std=std, ci_low=ci[0], ci_high=ci[1], n_splits=n, split_kind=kind, image_size=image_size,
             dataset="fei" if task == "gender" else "kdef", leak_free=protocol != "paper")
    return r


def table(coef_expr, pic_expr, coef_gender, pic_gender, std=0.02):
    """A made-up Table 1 for the banner: expression and gender, the paper's protocol."""
    return pd.DataFrame([
        row("expression", "paper", "beta", "logreg", coef_expr, std),
        row("expression", "paper", "dlib", "logreg", pic_expr, std),
        row("gender", "paper", "alpha", "logreg", coef_gender, std),
        row("gender", "paper", "dlib", "logreg", pic_gender, std),
    ], columns=TABLE1_COLUMNS)


def results(coef_expr, pic_expr, coef_gender, pic_gender):
    """Made-up results: expression and gender on the paper's protocol; each arm has a weaker second row with a
    *worse* validation accuracy, which must not be the one quoted."""
    def r(task, input, model, acc, val, **kw):
        return made_up_result(task, "paper", input, model, person_hits({p: acc for p in PEOPLE}), val, **kw)
    return [r("expression", "beta", "logreg", coef_expr, 0.8), r("expression", "beta", "svm", coef_expr - 0.1, 0.7),
            r("expression", "dlib", "logreg", pic_expr, 0.8, pretrained=True),
            r("expression", "hog", "linsvm", pic_expr - 0.1, 0.7),
            r("gender", "alpha", "logreg", coef_gender, 0.8), r("gender", "hog", "logreg", pic_gender, 0.8)]


def _for(sentences, task):
    return next(s for s in sentences if s.startswith(task))


def test_opposite_winners_give_opposite_sentences():
    coef_wins = findings.sentences(verdict_table(results(0.80, 0.60, 0.95, 0.85)))
    pic_wins = findings.sentences(verdict_table(results(0.60, 0.80, 0.85, 0.95)))
    for task in ("Expression", "Gender"):
        a, b = _for(coef_wins, task), _for(pic_wins, task)
        assert ": coefficients win" in a and "pictures win" not in a
        assert ": pictures win" in b and "coefficients win" not in b
    e = _for(coef_wins, "Expression")
    assert "coefficient row logistic regression on expression coefficients β (tddfa) — chosen on validation " \
           "(80.0 %) among 2 clean coefficient rows — scores 80.0 % on test" in e
    assert "dlib face embedding (a network pretrained elsewhere on faces)" in e
    assert "difference +20.0 points [+20.0, +20.0] (95 % interval, people resampled, 20 pairs)" in e
    assert "Holm-adjusted over the run's 2 lines" in e


def test_a_small_difference_is_not_a_winner():
    mixed = [made_up_result("expression", "subject_independent", "beta", "logreg",
                            person_hits({p: (0.6 if i % 3 else 0.5) for i, p in enumerate(PEOPLE)}), 0.6),
             made_up_result("expression", "subject_independent", "hog", "logreg",
                            person_hits({p: (0.5 if i % 2 else 0.6) for i, p in enumerate(PEOPLE)}), 0.6)]
    s, = findings.sentences(verdict_table(mixed))
    assert "not distinguishable" in s and " win " not in s


def test_distance_to_the_paper_and_one_arm():
    said = findings.sentences(verdict_table(results(0.80, 0.60, 0.95, 0.85)))
    paper = [s for s in said if s.startswith("Against the paper")]
    assert len(paper) == 2  # expression and gender, the paper's protocol
    # expression: 80.0 − 83.5 = −3.5 points; 60.0 − 70.6 = −10.6 points
    assert "the chosen coefficient row, 80.0 %, is 3.5 points below the paper's 83.5 %" in paper[0]
    assert "the chosen picture row, 60.0 %, is 10.6 points below the paper's 70.6 %" in paper[0]
    only = [made_up_result("expression", "subject_independent", "beta", "logreg", person_hits({"a": 0.5}), 0.5)]
    s, = findings.sentences(verdict_table(only))
    assert "only the coefficient arm has a clean row" in s and " win " not in s
    assert findings.paragraph(verdict_table([])).startswith("No verdict yet")


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
    assert findings.markdown(verdict_table([]), cheap).startswith("> **What this run can show.**")




def test_flagged_rows_are_never_quoted():
    """A person-grouped, transductive or exposed coefficient row never represents its arm, however good its
    validation: the sentence quotes the clean row."""
    res = results(0.80, 0.60, 0.95, 0.85)
    res.append(made_up_result("expression", "paper", "beta", "mlp", person_hits({p: 0.99 for p in PEOPLE}), 0.99,
                              backend="ict+fit_person", person_grouped="β with α at the person's other pictures"))
    res.append(made_up_result("expression", "paper", "beta", "linsvm", person_hits({p: 0.99 for p in PEOPLE}),
                              0.99, backend="tddfa+rnet", exposure="R-Net trained on the other part's pictures"))
    e = _for(findings.sentences(verdict_table(res)), "Expression")
    assert "ict+fit_person" not in e and "tddfa+rnet" not in e and "among 2 clean coefficient rows" in e
