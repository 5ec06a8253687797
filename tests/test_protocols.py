"""Split generators: counts, leak-freedom, stratification, determinism."""
from __future__ import annotations

from math import comb

import numpy as np
import pandas as pd
import pytest

from facelib.classify import protocols as P
from facelib.classify.aggregate import aggregate_mean, aggregate_sets, aggregate_weighted, k_subsets
from tests.fixtures import synthetic_coeff_table


@pytest.fixture(scope="module")
def kdef():
    return synthetic_coeff_table(5, sessions=("A",), fei_per_gender=0)


@pytest.fixture(scope="module")
def both():
    return synthetic_coeff_table(5, sessions=("A", "B"), fei_per_gender=100)


def test_k_subsets_and_mean():
    s = k_subsets(np.arange(20) + 100, 3)
    assert s.shape == (comb(20, 3), 3) == (1140, 3)
    assert len({tuple(r) for r in s}) == 1140 and (np.diff(s, axis=1) > 0).all()
    capped = k_subsets(np.arange(20), 3, max_sets=50, seed=1)
    assert capped.shape == (50, 3) and len({tuple(r) for r in capped}) == 50
    assert (capped == k_subsets(np.arange(20), 3, max_sets=50, seed=1)).all()
    X = np.arange(12, dtype=float).reshape(4, 3)
    assert np.allclose(aggregate_sets(X, np.array([[0, 1, 2]])), X[:3].mean(0))
    assert np.allclose(aggregate_mean(X[None]), X.mean(0))
    assert np.allclose(aggregate_weighted(X[None], np.ones((1, 4, 3))), X.mean(0))


def test_paper_identity_counts(kdef):
    folds = P.paper_identity(kdef, n_folds=2, seed=0)
    assert len(folds) == 2
    subj = kdef["subject"].to_numpy()
    for f in folds:
        assert f.train.shape == (10 * 1140, 3) and f.test.shape == (10 * 455, 3)
        assert not set(f.train_images) & set(f.test_images)  # no picture on both sides
        for s in P.PAPER_SUBJECTS:
            assert (subj[f.train[:, 0]] == s).sum() == 1140
            assert (subj[f.test[:, 0]] == s).sum() == 455
        assert (subj[f.train] == subj[f.train[:, :1]]).all()  # a set is one person's pictures
        assert len(f.train_images) == 200 and len(f.test_images) == 150


def test_paper_identity_person_with_34_pictures(kdef):
    df = kdef.copy()
    df.loc[df.index[(df["subject"] == "F01").to_numpy()][0], "status"] = "no_face"
    f = P.paper_identity(df, n_folds=1)[0]
    subj = df["subject"].to_numpy()
    assert (subj[f.train[:, 0]] == "F01").sum() == 1140
    assert (subj[f.test[:, 0]] == "F01").sum() == comb(14, 3)
    bad = np.flatnonzero(df["status"].to_numpy() != "ok")
    assert not np.isin(f.train, bad).any() and not np.isin(f.test, bad).any()


def test_determinism(kdef, both):
    for fn, df in ((P.paper_identity, kdef), (P.paper_expression, kdef), (P.subject_independent_expression, kdef),
                   (P.paper_gender, both), (P.subject_independent_gender, both)):
        a, b, c = fn(df, seed=3), fn(df, seed=3), fn(df, seed=4)
        assert all((x.train == y.train).all() and (x.test == y.test).all() for x, y in zip(a, b)), fn.__name__
        assert any(x.train.shape != y.train.shape or (x.train != y.train).any() for x, y in zip(a, c)), fn.__name__


def test_paper_expression_stratified(both):
    df = both[both["dataset"] == "kdef"].reset_index(drop=True)
    folds = P.paper_expression(df, n_folds=3, seed=0)
    for f in folds:
        assert not set(f.train) & set(f.test)
        assert len(f.train) + len(f.test) == len(df)
        assert abs(len(f.test) / len(df) - 1925 / 4900) < 0.01
        per_class = df["expression"].iloc[f.test].value_counts()
        assert per_class.max() - per_class.min() <= 1  # stratified: 100 per expression → 39 or 40 each
    assert not (folds[0].test == folds[1].test).all()


@pytest.mark.parametrize("fn,n", [(P.subject_independent_expression, 5), (P.subject_independent_gender, 5)])
def test_leak_free_no_subject_overlap(both, fn, n):
    folds = fn(both, n_folds=n, seed=0)
    assert len(folds) == n
    subj = both["subject"].to_numpy()
    tested = set()
    for f in folds:
        assert not set(subj[f.train]) & set(subj[f.test])
        tested |= set(subj[f.test])
    assert tested == set(subj[np.concatenate([f.train for f in folds])])  # every subject tested once


def test_subject_independent_gender_balanced(both):
    for f in P.subject_independent_gender(both, n_folds=5):
        g = both.iloc[f.test].drop_duplicates("subject")["gender"].value_counts()
        assert abs(g["M"] - g["F"]) <= 1
        assert (both["dataset"].iloc[f.train] == "fei").all()


def test_paper_gender_one_picture_per_subject(both):
    """The paper's protocol as written: 50 M + 50 F pictures train, 50 M + 50 F test, one (neutral) each."""
    for f in P.paper_gender(both, n_folds=2):
        tr, te = both.iloc[f.train], both.iloc[f.test]
        assert (tr["gender"].value_counts() == 50).all() and (te["gender"].value_counts() == 50).all()
        assert len(tr) == 100 and len(te) == 100
        assert tr["subject"].is_unique and te["subject"].is_unique
        assert set(tr["expression"]) == set(te["expression"]) == {"neutral"}
        assert not set(tr["subject"]) & set(te["subject"])
    for f in P.two_picture_gender(both, n_folds=2):  # the two-picture variant keeps its own name
        tr, te = both.iloc[f.train], both.iloc[f.test]
        assert len(tr) == 200 and len(te) == 200 and f.name.startswith("two_picture_gender")
        assert not set(tr["subject"]) & set(te["subject"])


def test_cross_session(kdef, both):
    with pytest.raises(P.ProtocolUnavailable, match="needs both sessions"):
        P.cross_session_identity(kdef)
    (f,) = P.cross_session_identity(both)
    assert set(both["session"].iloc[f.train]) == {"A"} and set(both["session"].iloc[f.test]) == {"B"}
    assert set(both["subject"].iloc[f.train]) == set(both["subject"].iloc[f.test]) == set(P.PAPER_SUBJECTS)


def test_cross_angle_and_leave_expression_out(kdef):
    folds = P.cross_angle_identity(kdef)
    assert [f.info["test_angles"] for f in folds] == [["FL", "FR"], ["HL", "HR"], ["S"]]
    for f in folds:  # a view and its mirror are held out together, and image flips are off
        test_views = set(kdef["angle"].iloc[f.test])
        assert test_views == set(f.info["test_angles"]) and not test_views & set(kdef["angle"].iloc[f.train])
        assert f.info["flip"] is False
    assert sorted(np.concatenate([f.test for f in folds])) == list(range(len(kdef)))
    folds = P.leave_expression_out_identity(kdef, k=3, max_sets=20)
    assert len(folds) == 7 and folds[0].train.shape == (200, 3)
    for f in folds:
        assert f.info["test_expression"] not in set(kdef["expression"].iloc[f.train_images])


def test_make_folds_registry(kdef):
    assert len(P.make_folds(kdef, "expression", "paper", n_folds=2, seed=0)) == 2
    with pytest.raises(ValueError, match="unknown task/protocol"):
        P.make_folds(kdef, "identity", "nope")


def test_usable_mask_honours_manifest_flag(kdef):
    df = kdef.copy()
    df["usable"] = True
    df.loc[df.index[:3], "usable"] = False
    df.loc[df.index[3], "status"] = "no_face"
    m = P.usable_mask(df)
    assert m.sum() == len(df) - 4 and not m[:4].any()
    folds = P.paper_expression(df, n_folds=1)
    assert not set(range(4)) & set(np.concatenate([folds[0].train, folds[0].test]))


def test_generic_dataset_without_gender_or_kdef_people():
    """Any labelled set: identity/paper draws from whoever is there; subject-independent without gender."""
    rows = [dict(image_id=f"p{s}_{i}", subject=f"person{s}", smile=("yes" if i % 2 else "no"), status="ok")
            for s in range(6) for i in range(8)]
    df = pd.DataFrame(rows)
    (f,) = P.paper_identity(df, n_folds=1)
    assert set(df["subject"].iloc[f.train_images]) == {f"person{s}" for s in range(6)}
    assert not set(f.train_images) & set(f.test_images)
    folds = P.make_folds(df, "identity", "paper", n_folds=1)
    assert folds[0].info["pictures_per_subject"]["person0"] == (5, 3)  # 8 pictures split 20:15
    assert P.tasks_for(df) == ["identity", "smile"]
    for f in P.make_folds(df, "smile", "subject_independent", n_folds=3):
        assert not set(df["subject"].iloc[f.train]) & set(df["subject"].iloc[f.test])
    for f in P.make_folds(df, "expression" if False else "smile", "random", n_folds=2):
        assert not set(f.train) & set(f.test)
    assert len(P.subject_independent_expression(df.assign(expression="x"), n_folds=3)) == 3


def test_too_few_pictures_is_one_clear_error():
    df = pd.DataFrame([dict(image_id=f"{s}{i}", subject=s, status="ok") for s in "ab" for i in range(4)])
    with pytest.raises(P.ProtocolUnavailable, match="too few.*lower k"):
        P.paper_identity(df, n_folds=1)
    with pytest.raises(P.ProtocolUnavailable, match="lower n_folds"):
        P.subject_independent(df, n_folds=3)


def test_plan_rows_follow_the_datasets_labels():
    """KDEF/FEI keep the paper's Table-1 lines; a folder dataset gets a line per task its label columns allow."""
    from facelib.classify import plan

    assert plan.rows_for({"kdef": [pd.DataFrame()], "fei": [pd.DataFrame()]}) == plan.STUDY_ROWS
    assert all(r[0] == "fei" for r in plan.rows_for({"fei": [pd.DataFrame()]}))
    own = pd.DataFrame({"subject": ["s1", "s1", "s2", "s2"] * 3, "expression": ["happy", "sad"] * 6,
                        "smile": ["y", "n", "n", "y"] * 3, "status": ["ok"] * 12})
    rows = plan.rows_for({"folder": [own]})
    assert ("folder", "identity", "paper", "alpha") in rows
    assert ("folder", "expression", "subject_independent", "beta") in rows
    assert ("folder", "smile", "subject_independent", "alpha+beta") in rows
    assert not any(r[2] == "cross_angle" for r in rows)  # no angle column: no cross-angle protocol
    # a folder table carries the schema's angle column, empty: still no cross-angle protocol; with angles, one
    assert not any(r[2] == "cross_angle" for r in plan.rows_for({"folder": [own.assign(angle=None)]}))
    assert ("folder", "identity", "cross_angle", "alpha") in plan.rows_for({"folder": [own.assign(angle="S")]})
