"""The inner validation split: disjoint from the fit split in pictures (and in people where the protocol holds
people out), never touching the test side."""
from __future__ import annotations

import pytest

from facelib.classify import protocols as P
from facelib.classify.validation import inner_split
from tests.fixtures import synthetic_coeff_table


@pytest.fixture(scope="module")
def both():
    return synthetic_coeff_table(5, fei_per_gender=20, seed=0)


@pytest.fixture(scope="module")
def kdef(both):
    return both[both["dataset"] == "kdef"].reset_index(drop=True)


def test_identity_sets_share_no_picture(kdef):
    for fold in P.paper_identity(kdef, n_folds=2, max_sets=200):
        fit, val, how = inner_split(kdef, fold, "subject", 0.15, seed=1)
        assert how == "pictures-before-sets" and fit.shape[1] == val.shape[1] == 3
        assert not set(fit.ravel()) & set(val.ravel())                     # no validation picture in a fit set
        assert set(fit.ravel()) | set(val.ravel()) <= set(fold.train_images)  # carved from training only
        assert not (set(fit.ravel()) | set(val.ravel())) & set(fold.test_images)
        subj = kdef["subject"].to_numpy()
        assert (subj[val] == subj[val][:, :1]).all()                          # a set is one person's pictures
        assert set(subj[val[:, 0]]) == set(subj[fit[:, 0]])                  # every person validated


@pytest.mark.parametrize("task,protocol", [("expression", "subject_independent"), ("gender", "subject_independent"),
                                           ("gender", "paper")])
def test_subject_disjoint_protocols_hold_out_people(both, task, protocol):
    df = both[both["dataset"] == ("kdef" if task == "expression" else "fei")].reset_index(drop=True)
    label = P.label_column(task)
    for fold in P.make_folds(df, task, protocol, n_folds=2, seed=0):
        fit, val, how = inner_split(df, fold, label, 0.2, seed=0)
        subj = df["subject"].to_numpy()
        assert how == "subjects" and len(val) and not set(subj[fit]) & set(subj[val])
        assert set(fit) | set(val) == set(fold.train) and not set(val) & set(fold.test)
        if task == "gender":  # both genders in validation
            assert set(df["gender"].iloc[val]) == {"F", "M"}


def test_picture_split_for_identity_leaking_protocols(kdef):
    fold = P.paper_expression(kdef, n_folds=1)[0]
    fit, val, how = inner_split(kdef, fold, "expression", 0.15, seed=0)
    assert how == "pictures" and not set(fit) & set(val) and set(fit) | set(val) == set(fold.train)
    assert abs(len(val) - 0.15 * len(fold.train)) <= 1
