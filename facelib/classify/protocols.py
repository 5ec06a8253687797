"""Train/test splits: the paper's protocols and leak-free ones. Every generator is seeded and returns a list of
:class:`Fold` (k-fold via ``n_folds``); a fold unpacks as ``train, test = fold``.

Indices are **positions** (``df.iloc``) into the table passed in. Rows whose ``status`` is not ``ok`` (when the
column exists) are never used. ``fold.train`` / ``fold.test`` are either 1-D (one image per sample) or 2-D
``(n_sets, k)`` (each sample aggregates k images with ``fold.aggregator``, default the mean);
``fold.train_images`` / ``fold.test_images`` are always the underlying 1-D image positions (what an image model or
a single-image classifier uses).

Protocols (``PROTOCOLS[task]``):

=========== ========================= =============================================================================
task        name                      split
=========== ========================= =============================================================================
identity    ``paper``                 :func:`paper_identity`: 10 KDEF people, per person 20 train / 15 test pictures
                                      (random per fold), every 3-subset averaged → 1140 / 455 samples per person.
                                      Same people in train and test (it is identification), but the *pictures* are
                                      random: the same expression at a neighbouring angle is usually on both sides.
identity    ``cross_session``         :func:`cross_session_identity`: train session A, test session B — needs the
                                      full KDEF; raises :class:`ProtocolUnavailable` on single-session data.
identity    ``cross_angle``           :func:`cross_angle_identity`: leave-one-angle-out (5 folds): test pictures are
                                      a view never seen in training. Available on the dev set.
identity    ``leave_expression_out``  :func:`leave_expression_out_identity`: 7 folds, each holds out one
                                      expression. Available on the dev set.
expression  ``paper``                 :func:`paper_expression`: all pictures, stratified 2975/1925 proportion,
                                      repeated with seeds. Leaks identity: a person's other expressions (and the
                                      same expression at other angles) are in training.
expression  ``subject_independent``   :func:`subject_independent_expression`: GroupKFold by subject.
gender      ``paper``                 :func:`paper_gender`: FEI, 50 M + 50 F *subjects* train (both their images),
                                      other 50 M + 50 F subjects test. Our reading: the paper says "100 training
                                      pictures"; FEI's frontal set has 2 images per subject, so we split subjects
                                      and use all their images (200 train / 200 test images) — already
                                      subject-disjoint.
gender      ``subject_independent``   :func:`subject_independent_gender`: GroupKFold by subject, stratified by
                                      gender at subject level.
=========== ========================= =============================================================================
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from ..errors import FacelibError
from ..vocab import ANGLES, EXPRESSIONS
from .aggregate import Aggregator, k_subsets

PAPER_SUBJECTS = tuple([f"F{i:02d}" for i in range(1, 6)] + [f"M{i:02d}" for i in range(1, 6)])
KDEF_FULL_COUNT, PAPER_EXPR_TRAIN, PAPER_EXPR_TEST = 4900, 2975, 1925
PAPER_EXPR_TEST_FRACTION = PAPER_EXPR_TEST / KDEF_FULL_COUNT


class ProtocolUnavailable(FacelibError, RuntimeError):
    """The protocol cannot run on this data (e.g. cross-session on a single-session set)."""


@dataclass
class Fold:
    train: np.ndarray
    test: np.ndarray
    name: str = ""
    aggregator: Aggregator | None = None
    info: dict = field(default_factory=dict)

    def __iter__(self):  # ``train, test = fold``
        return iter((self.train, self.test))

    @property
    def train_images(self) -> np.ndarray:
        return np.unique(self.train.ravel())

    @property
    def test_images(self) -> np.ndarray:
        return np.unique(self.test.ravel())

    @property
    def is_sets(self) -> bool:
        return self.train.ndim == 2


# --------------------------------------------------------------------------------------------------- helpers
def usable_mask(df: pd.DataFrame) -> np.ndarray:
    """True for rows usable by a classifier: ``status == 'ok'`` when the column exists."""
    if "status" in df.columns:
        return (df["status"].astype(str) == "ok").to_numpy().copy()
    return np.ones(len(df), dtype=bool)


def _positions(df: pd.DataFrame, mask=None) -> np.ndarray:
    m = usable_mask(df).copy()
    if mask is not None:
        m &= np.asarray(mask, dtype=bool)
    return np.flatnonzero(m)


def _rng(seed: int, fold: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(fold)])


def _check_n_folds(n_folds: int) -> int:
    if int(n_folds) < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    return int(n_folds)


def _subject_folds(subjects: np.ndarray, strata: np.ndarray | None, n_folds: int, seed: int) -> list[np.ndarray]:
    """Assign unique subjects to ``n_folds`` groups: shuffled (seeded), round-robin within each stratum."""
    uniq = pd.unique(pd.Series(subjects))
    if len(uniq) < n_folds:
        raise ValueError(f"{len(uniq)} subjects cannot make {n_folds} subject-disjoint folds")
    rng = np.random.default_rng(int(seed))
    groups: list[list] = [[] for _ in range(n_folds)]
    if strata is None:
        strata_of = {s: "_" for s in uniq}
    else:
        strata_of = dict(zip(subjects, strata))
    offset = 0
    for stratum in sorted(set(strata_of.values()), key=str):
        members = np.array(sorted(s for s in uniq if strata_of[s] == stratum), dtype=object)
        members = members[rng.permutation(len(members))]
        for i, s in enumerate(members):
            groups[(i + offset) % n_folds].append(s)
        offset += len(members)
    return [np.array(g, dtype=object) for g in groups]


def _group_kfold(df: pd.DataFrame, positions: np.ndarray, n_folds: int, seed: int, stratify_col: str | None,
                 name: str) -> list[Fold]:
    subj = df["subject"].to_numpy()[positions]
    strata = df[stratify_col].to_numpy()[positions] if stratify_col else None
    groups = _subject_folds(subj, strata, n_folds, seed)
    folds = []
    for i, test_subjects in enumerate(groups):
        is_test = np.isin(subj, test_subjects)
        tr, te = positions[~is_test], positions[is_test]
        assert not set(df["subject"].iloc[tr]) & set(df["subject"].iloc[te]), "subject leak"
        folds.append(Fold(tr, te, name=f"{name}-{i}", info={"test_subjects": sorted(map(str, test_subjects))}))
    return folds


# ------------------------------------------------------------------------------------------------- identity
def paper_identity(df: pd.DataFrame, subjects=PAPER_SUBJECTS, session: str | None = "A", n_train: int = 20,
                   n_test: int = 15, k: int = 3, n_folds: int = 3, seed: int = 0,
                   aggregator: Aggregator | None = None, max_sets: int | None = None) -> list[Fold]:
    """The paper's identity protocol (see module docstring).

    Per person and fold: a seeded random ``n_train`` of the person's usable pictures (in ``session``) for training,
    the next ``n_test`` for testing; a person with fewer than ``n_train + n_test`` (unusable pictures removed)
    gets ``n_train`` / the rest, and fewer than ``n_train + k`` is an error. Then every k-subset of each side
    (C(20,3)=1140 train, C(15,3)=455 test per person; ``max_sets`` caps it with a seeded sample).
    ``subjects=None`` takes every subject present.
    """
    n_folds = _check_n_folds(n_folds)
    mask = np.ones(len(df), dtype=bool)
    if session is not None and "session" in df.columns:
        mask &= (df["session"].astype(str) == str(session)).to_numpy()
    pos = _positions(df, mask)
    subj_all = df["subject"].astype(str).to_numpy()
    if subjects is None:
        subjects = sorted(set(subj_all[pos]))
    subjects = list(subjects)
    by_subject = {s: pos[subj_all[pos] == s] for s in subjects}
    short = {s: len(p) for s, p in by_subject.items() if len(p) < n_train + k}
    if short:
        raise ValueError(f"paper_identity needs >= {n_train + k} usable pictures per person "
                         f"(session {session}); too few: {short}")
    folds = []
    for f in range(n_folds):
        rng = _rng(seed, f)
        tr_sets, te_sets, counts = [], [], {}
        for si, s in enumerate(subjects):
            p = np.sort(by_subject[s])[rng.permutation(len(by_subject[s]))]
            tr, te = np.sort(p[:n_train]), np.sort(p[n_train:n_train + n_test])
            sub_seed = int(rng.integers(2**31))
            tr_sets.append(k_subsets(tr, k, max_sets=max_sets, seed=sub_seed))
            te_sets.append(k_subsets(te, k, max_sets=max_sets, seed=sub_seed + 1))
            counts[s] = (len(tr), len(te))
        folds.append(Fold(np.concatenate(tr_sets), np.concatenate(te_sets), name=f"paper_identity-{f}",
                          aggregator=aggregator,
                          info={"pictures_per_subject": counts, "k": k, "subjects": subjects}))
    return folds


def cross_session_identity(df: pd.DataFrame, subjects=PAPER_SUBJECTS, train_session: str = "A",
                           test_session: str = "B", k: int = 1, max_sets: int | None = None, seed: int = 0,
                           aggregator: Aggregator | None = None, n_folds: int = 1) -> list[Fold]:
    """Identity across KDEF sessions: train on session A pictures, test on session B (one fold; the split is
    fixed, ``n_folds`` is accepted for a uniform signature and ignored). With ``k > 1``, every k-subset within a
    person and side (capped by ``max_sets``) is aggregated as in the paper's protocol.

    Raises :class:`ProtocolUnavailable` when either session is absent (the KDEF dev set has session A only).
    """
    if "session" not in df.columns:
        raise ProtocolUnavailable("cross_session identity not available: the table has no 'session' column")
    pos = _positions(df)
    sessions = set(df["session"].astype(str).to_numpy()[pos])
    missing = {train_session, test_session} - sessions
    if missing:
        raise ProtocolUnavailable(
            f"cross_session identity not available: needs both sessions {train_session} and {test_session}; "
            f"the data has only session(s) {sorted(sessions)} (the KDEF dev set is session A only — use the full "
            "KDEF, or the cross_angle / leave_expression_out identity protocols)")
    sess = df["session"].astype(str).to_numpy()
    return [_identity_split(df, pos[sess[pos] == train_session], pos[sess[pos] == test_session], subjects, k,
                            max_sets, seed, aggregator, name="cross_session_identity-0",
                            info={"train_session": train_session, "test_session": test_session})]


def cross_angle_identity(df: pd.DataFrame, subjects=PAPER_SUBJECTS, session: str | None = "A", k: int = 1,
                         max_sets: int | None = None, seed: int = 0, aggregator: Aggregator | None = None,
                         angles=ANGLES, n_folds: int | None = None) -> list[Fold]:
    """Leave-one-angle-out identity: fold i tests on view ``angles[i]`` and trains on the other views (same
    people). Leak-aware alternative to the paper's random picture split that runs on the dev set: no test
    picture shares its viewpoint with a training picture. ``n_folds`` (if given) keeps the first n angles."""
    return _leave_value_out(df, "angle", list(angles)[: n_folds or None], subjects, session, k, max_sets, seed,
                            aggregator, "cross_angle_identity")


def leave_expression_out_identity(df: pd.DataFrame, subjects=PAPER_SUBJECTS, session: str | None = "A",
                                  k: int = 1, max_sets: int | None = None, seed: int = 0,
                                  aggregator: Aggregator | None = None, expressions=EXPRESSIONS,
                                  n_folds: int | None = None) -> list[Fold]:
    """Leave-one-expression-out identity: fold i tests on expression ``expressions[i]`` (all angles), trains on
    the other six. Leak-aware: identity must be recognised across an expression never seen for that person."""
    return _leave_value_out(df, "expression", list(expressions)[: n_folds or None], subjects, session, k,
                            max_sets, seed, aggregator, "leave_expression_out_identity")


def _leave_value_out(df, column, values, subjects, session, k, max_sets, seed, aggregator, name) -> list[Fold]:
    mask = np.ones(len(df), dtype=bool)
    if session is not None and "session" in df.columns:
        mask &= (df["session"].astype(str) == str(session)).to_numpy()
    pos = _positions(df, mask)
    col = df[column].astype(str).to_numpy()
    present = set(col[pos])
    folds = []
    for i, v in enumerate(values):
        if v not in present:
            continue
        folds.append(_identity_split(df, pos[col[pos] != v], pos[col[pos] == v], subjects, k, max_sets,
                                     seed + i, aggregator, name=f"{name}-{i}", info={f"test_{column}": v}))
    if not folds:
        raise ProtocolUnavailable(f"{name}: none of {values} found in column {column!r}")
    return folds


def _identity_split(df, tr_pos, te_pos, subjects, k, max_sets, seed, aggregator, name, info) -> Fold:
    subj = df["subject"].astype(str).to_numpy()
    if subjects is None:
        subjects = sorted(set(subj[tr_pos]) & set(subj[te_pos]))
    tr_sets, te_sets = [], []
    rng = np.random.default_rng(int(seed))
    for s in subjects:
        a, b = np.sort(tr_pos[subj[tr_pos] == s]), np.sort(te_pos[subj[te_pos] == s])
        if len(a) < k or len(b) < k:
            raise ProtocolUnavailable(f"{name}: subject {s} has {len(a)} train / {len(b)} test pictures (< k={k})")
        if k == 1:
            tr_sets.append(a), te_sets.append(b)
        else:
            tr_sets.append(k_subsets(a, k, max_sets, int(rng.integers(2**31))))
            te_sets.append(k_subsets(b, k, max_sets, int(rng.integers(2**31))))
    info = dict(info, subjects=list(subjects), k=k)
    return Fold(np.concatenate(tr_sets), np.concatenate(te_sets), name=name, aggregator=aggregator, info=info)


# ----------------------------------------------------------------------------------------------- expression
def paper_expression(df: pd.DataFrame, n_folds: int = 3, seed: int = 0,
                     test_fraction: float = PAPER_EXPR_TEST_FRACTION, label: str = "expression") -> list[Fold]:
    """The paper's expression protocol: all usable pictures, a stratified (by expression) random split with
    the paper's 2975/1925 proportion, repeated ``n_folds`` times with seeds (seed, fold). Leaks identity."""
    from sklearn.model_selection import StratifiedShuffleSplit

    n_folds = _check_n_folds(n_folds)
    pos = _positions(df)
    y = df[label].astype(str).to_numpy()[pos]
    folds = []
    for f in range(n_folds):
        sss = StratifiedShuffleSplit(n_splits=1, test_size=test_fraction,
                                     random_state=int(np.random.SeedSequence([seed, f]).generate_state(1)[0]))
        tr, te = next(sss.split(np.zeros(len(pos)), y))
        folds.append(Fold(np.sort(pos[tr]), np.sort(pos[te]), name=f"paper_expression-{f}",
                          info={"test_fraction": test_fraction}))
    return folds


def subject_independent_expression(df: pd.DataFrame, n_folds: int = 5, seed: int = 0) -> list[Fold]:
    """GroupKFold by subject (seeded shuffle of subjects): no test person is seen in training."""
    return _group_kfold(df, _positions(df), _check_n_folds(n_folds), seed, None, "subject_independent_expression")


# --------------------------------------------------------------------------------------------------- gender
def paper_gender(df: pd.DataFrame, n_per_gender: int = 50, n_folds: int = 3, seed: int = 0,
                 label: str = "gender") -> list[Fold]:
    """The paper's gender protocol (FEI): per fold, a seeded random ``n_per_gender`` male and ``n_per_gender``
    female *subjects* train (with all their usable images), the next ``n_per_gender`` of each gender test.
    Rows with ``dataset`` other than ``fei`` are ignored when a ``dataset`` column exists."""
    n_folds = _check_n_folds(n_folds)
    mask = np.ones(len(df), dtype=bool)
    if "dataset" in df.columns and (df["dataset"].astype(str) == "fei").any():
        mask &= (df["dataset"].astype(str) == "fei").to_numpy()
    pos = _positions(df, mask)
    subj = df["subject"].astype(str).to_numpy()
    gend = df[label].astype(str).to_numpy()
    subj_gender = dict(zip(subj[pos], gend[pos]))
    folds = []
    for f in range(n_folds):
        rng = _rng(seed, f)
        train_s, test_s = [], []
        for g in sorted(set(subj_gender.values())):
            members = np.array(sorted(s for s, gg in subj_gender.items() if gg == g), dtype=object)
            if len(members) < 2:
                raise ValueError(f"paper_gender: gender {g} has {len(members)} subject(s); need >= 2")
            members = members[rng.permutation(len(members))]
            n_tr = min(n_per_gender, len(members) // 2) if len(members) < 2 * n_per_gender else n_per_gender
            train_s += list(members[:n_tr])
            test_s += list(members[n_tr:n_tr + n_per_gender])
        tr, te = pos[np.isin(subj[pos], train_s)], pos[np.isin(subj[pos], test_s)]
        folds.append(Fold(tr, te, name=f"paper_gender-{f}",
                          info={"n_train_subjects": len(train_s), "n_test_subjects": len(test_s)}))
    return folds


def subject_independent_gender(df: pd.DataFrame, n_folds: int = 5, seed: int = 0, label: str = "gender"
                               ) -> list[Fold]:
    """GroupKFold by subject, subjects of each gender spread evenly over the folds (seeded)."""
    mask = None
    if "dataset" in df.columns and (df["dataset"].astype(str) == "fei").any():
        mask = (df["dataset"].astype(str) == "fei").to_numpy()
    return _group_kfold(df, _positions(df, mask), _check_n_folds(n_folds), seed, label,
                        "subject_independent_gender")


# ------------------------------------------------------------------------------------------------- registry
PROTOCOLS: dict[str, dict[str, Callable[..., list[Fold]]]] = {
    "identity": {"paper": paper_identity, "cross_session": cross_session_identity,
                 "cross_angle": cross_angle_identity, "leave_expression_out": leave_expression_out_identity},
    "expression": {"paper": paper_expression, "subject_independent": subject_independent_expression},
    "gender": {"paper": paper_gender, "subject_independent": subject_independent_gender},
}
LEAK_FREE = {("identity", "cross_session"), ("identity", "cross_angle"), ("identity", "leave_expression_out"),
             ("expression", "subject_independent"), ("gender", "subject_independent"), ("gender", "paper")}


def make_folds(df: pd.DataFrame, task: str, protocol: str, **kwargs) -> list[Fold]:
    """Folds for ``task``/``protocol`` (see ``PROTOCOLS``); keyword arguments go to the generator."""
    try:
        fn = PROTOCOLS[task][protocol]
    except KeyError:
        raise ValueError(f"unknown task/protocol {task}/{protocol}; known: "
                         + ", ".join(f"{t}/{p}" for t, ps in PROTOCOLS.items() for p in ps)) from None
    import inspect

    accepted = inspect.signature(fn).parameters
    return fn(df, **{k: v for k, v in kwargs.items() if k in accepted})
