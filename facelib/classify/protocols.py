"""Train/test splits: the paper's protocols and leak-free ones. Every generator is seeded and returns a list of
:class:`Fold` (k-fold via ``n_folds``); a fold unpacks as ``train, test = fold``.

Indices are **positions** (``df.iloc``) into the table passed in. Rows whose ``status`` is not ``ok`` (when the
column exists) are never used. ``fold.train`` / ``fold.test`` are either 1-D (one image per sample) or 2-D
``(n_sets, k)`` (each sample aggregates k images with ``fold.aggregator``, default the mean);
``fold.train_images`` / ``fold.test_images`` are always the underlying 1-D image positions (what an image model or
a single-image classifier uses).

Repeated random splits are called *repeats* (``split_kind`` in the results), partitions *folds*; folds that are
held-out conditions (:data:`POOLED`) are reported pooled (*pooled folds*).
Every generator raises :class:`ProtocolUnavailable` (one line, with the fix) when the data cannot support it.

Protocols (``PROTOCOLS[task]``; any other label column is a generic task with ``GENERIC_PROTOCOLS``):

=========== ========================= =============================================================================
task        name                      split
=========== ========================= =============================================================================
identity    ``paper``                 :func:`paper_identity`: KDEF's 10 people (any other table: every person),
                                      per person 20 train / 15 test pictures (random per repeat; fewer pictures:
                                      split 20:15), every 3-subset averaged → 1140 / 455 samples per person.
                                      Same people in train and test (it is identification), but the *pictures* are
                                      random: the same expression at a neighbouring angle is usually on both sides.
identity    ``cross_session``         :func:`cross_session_identity`: train session A, test session B — the
                                      leak-free identity protocol on a full KDEF; raises
                                      :class:`ProtocolUnavailable` on single-session data.
identity    ``cross_angle``           :func:`cross_angle_identity`: 3 folds, each holds out a view *and its mirror*
                                      ({FL, FR}, {HL, HR}, {S}); image models train without flips.
identity    ``leave_expression_out``  :func:`leave_expression_out_identity`: 7 folds, each holds out one
                                      expression.
expression  ``paper``                 :func:`paper_expression`: all pictures, stratified 2975/1925 proportion,
                                      repeated with seeds. Leaks identity: a person's other expressions (and the
                                      same expression at other angles) are in training.
expression  ``subject_independent``   :func:`subject_independent_expression`: GroupKFold by subject.
gender      ``paper``                 :func:`paper_gender`: FEI as the paper wrote it — one (neutral) picture per
                                      subject, 50 M + 50 F train, the other 50 M + 50 F test; subject-disjoint.
gender      ``two_picture``           :func:`two_picture_gender`: the same subject split with both FEI frontal
                                      pictures of each subject (200 / 200).
gender      ``subject_independent``   :func:`subject_independent_gender`: GroupKFold by subject, stratified by
                                      gender at subject level.
any         ``subject_independent``   :func:`subject_independent`: GroupKFold by subject (stratified by the label
                                      when it is constant per subject); with or without a gender column.
any         ``random``                :func:`random_split`: stratified random picture split, repeated.
=========== ========================= =============================================================================

The module is over ~400 lines because it is the one place every protocol, its leakage note and the task registry
live (one owner per idea); each generator is short.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from ..data import labels
from ..errors import FacelibError
from ..vocab import ANGLES, EXPRESSIONS  # noqa: F401  (ANGLES: re-exported as protocols.ANGLES)
from .aggregate import Aggregator, k_subsets

PAPER_SUBJECTS = tuple([f"F{i:02d}" for i in range(1, 6)] + [f"M{i:02d}" for i in range(1, 6)])
KDEF_FULL_COUNT, PAPER_EXPR_TRAIN, PAPER_EXPR_TEST = 4900, 2975, 1925
PAPER_EXPR_TEST_FRACTION = PAPER_EXPR_TEST / KDEF_FULL_COUNT


class ProtocolUnavailable(FacelibError, RuntimeError, ValueError):
    """The protocol cannot run on this data (cross-session on a single-session set, too few pictures or subjects);
    the message says what is missing and how to fix it."""


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
    """True for rows usable by a classifier: ``status == 'ok'`` (when the column exists) and the manifest's
    ``usable`` flag true (when that column exists; a missing value counts as unusable)."""
    m = np.ones(len(df), dtype=bool)
    if "status" in df.columns:
        m &= (df["status"].astype(str) == "ok").to_numpy()
    if "usable" in df.columns:
        m &= df["usable"].fillna(False).astype(bool).to_numpy()
    return m


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
        raise ProtocolUnavailable(f"{len(uniq)} subjects cannot make {n_folds} subject-disjoint folds; "
                                  f"lower n_folds to at most {len(uniq)} or add subjects")
    rng = np.random.default_rng(int(seed))
    groups: list[list] = [[] for _ in range(n_folds)]
    if strata is None:
        strata_of = {s: "_" for s in uniq}
    else:
        strata_of = {s: ("_" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
                     for s, v in zip(subjects, strata)}
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
    strata = df[stratify_col].to_numpy()[positions] if stratify_col and stratify_col in df.columns else None
    groups = _subject_folds(subj, strata, n_folds, seed)
    folds = []
    for i, test_subjects in enumerate(groups):
        is_test = np.isin(subj, test_subjects)
        tr, te = positions[~is_test], positions[is_test]
        assert not set(df["subject"].iloc[tr]) & set(df["subject"].iloc[te]), "subject leak"
        folds.append(Fold(tr, te, name=f"{name}-{i}", info={"test_subjects": sorted(map(str, test_subjects))}))
    return folds


# ------------------------------------------------------------------------------------------------- identity
def paper_subjects(df: pd.DataFrame) -> list[str] | None:
    """The people the paper's identity protocol uses: KDEF's F01…F05, M01…M05 when the table is KDEF and has
    them all; otherwise ``None`` (every subject of the table)."""
    subj = set(df["subject"].astype(str)) if "subject" in df.columns else set()
    is_kdef = "dataset" not in df.columns or (df["dataset"].astype(str) == "kdef").all()
    return list(PAPER_SUBJECTS) if is_kdef and set(PAPER_SUBJECTS) <= subj else None


def paper_identity(df: pd.DataFrame, subjects="auto", session: str | None = "A", n_train: int = 20,
                   n_test: int = 15, k: int = 3, n_folds: int = 5, seed: int = 0,
                   aggregator: Aggregator | None = None, max_sets: int | None = None) -> list[Fold]:
    """The paper's identity protocol (see module docstring); folds are *repeats* of a random picture split.

    ``subjects="auto"``: the paper's 10 KDEF people on KDEF (:func:`paper_subjects`), every subject on any other
    table; ``None``: every subject. Per person and repeat: a seeded random ``n_train`` of the person's usable
    pictures (in ``session`` when the table has sessions) train, the next ``n_test`` (or what is left, >= k) test.
    A person with fewer than ``n_train + k`` pictures is split 20:15 (at least ``k`` each side), so the
    protocol runs on any labelled set; fewer than ``2k`` pictures raises :class:`ProtocolUnavailable`.
    Then every k-subset of each side (C(20,3)=1140 train, C(15,3)=455 test per person; ``max_sets`` caps it).
    """
    n_folds = _check_n_folds(n_folds)
    mask = np.ones(len(df), dtype=bool)
    if session is not None and "session" in df.columns and (df["session"].astype(str) == str(session)).any():
        mask &= (df["session"].astype(str) == str(session)).to_numpy()
    pos = _positions(df, mask)
    subj_all = df["subject"].astype(str).to_numpy()
    if isinstance(subjects, str) and subjects == "auto":
        subjects = paper_subjects(df.iloc[pos])
    if subjects is None:
        subjects = sorted(set(subj_all[pos]))
    subjects = list(subjects)
    by_subject = {s: pos[subj_all[pos] == s] for s in subjects}
    short = {s: len(p) for s, p in by_subject.items() if len(p) < 2 * k}
    if short:
        raise ProtocolUnavailable(f"identity/paper needs >= {2 * k} usable pictures per person (k={k} per side); "
                                  f"too few: {short} — drop these people (subjects=...) or lower k")
    if len(subjects) < 2:
        raise ProtocolUnavailable(f"identity/paper needs >= 2 people, found {len(subjects)}")
    folds = []
    for f in range(n_folds):
        rng = _rng(seed, f)
        tr_sets, te_sets, counts = [], [], {}
        for si, s in enumerate(subjects):
            n = len(by_subject[s])
            if n >= n_train + k:
                a, b = n_train, min(n_test, n - n_train)
            else:
                a = min(max(k, int(round(n * n_train / (n_train + n_test)))), n - k)
                b = n - a
            p = np.sort(by_subject[s])[rng.permutation(n)]
            tr, te = np.sort(p[:a]), np.sort(p[a:a + b])
            sub_seed = int(rng.integers(2**31))
            tr_sets.append(k_subsets(tr, k, max_sets=max_sets, seed=sub_seed))
            te_sets.append(k_subsets(te, k, max_sets=max_sets, seed=sub_seed + 1))
            counts[s] = (len(tr), len(te))
        folds.append(Fold(np.concatenate(tr_sets), np.concatenate(te_sets), name=f"paper_identity-repeat{f}",
                          aggregator=aggregator,
                          info={"pictures_per_subject": counts, "k": k, "subjects": subjects,
                                "max_sets": max_sets}))
    return folds


def cross_session_identity(df: pd.DataFrame, subjects="auto", train_session: str = "A",
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


MIRROR_GROUPS = (("FL", "FR"), ("HL", "HR"), ("S",))


def cross_angle_identity(df: pd.DataFrame, subjects="auto", session: str | None = "A", k: int = 1,
                         max_sets: int | None = None, seed: int = 0, aggregator: Aggregator | None = None,
                         groups=MIRROR_GROUPS, n_folds: int | None = None) -> list[Fold]:
    """Leave-one-view-pair-out identity (3 folds): fold i tests on the views ``groups[i]`` — a view *and its
    mirror* ({FL, FR}, {HL, HR}, {S}) — and trains on the others (same people). A mirrored profile is nearly the
    same picture flipped, so the pair is held out together, and image models train without flips
    (``fold.info["flip"] is False``). ``n_folds`` (if given) keeps the first n groups."""
    groups = [tuple(g) for g in groups][: n_folds or None]
    folds = _leave_value_out(df, "angle", groups, subjects, session, k, max_sets, seed, aggregator,
                             "cross_angle_identity")
    for f in folds:
        f.info["flip"] = False
    return folds


def leave_expression_out_identity(df: pd.DataFrame, subjects="auto", session: str | None = "A",
                                  k: int = 1, max_sets: int | None = None, seed: int = 0,
                                  aggregator: Aggregator | None = None, expressions=EXPRESSIONS,
                                  n_folds: int | None = None) -> list[Fold]:
    """Leave-one-expression-out identity: fold i tests on expression ``expressions[i]`` (all angles), trains on
    the other six. Leak-aware: identity must be recognised across an expression never seen for that person."""
    return _leave_value_out(df, "expression", [(e,) for e in list(expressions)[: n_folds or None]], subjects, session, k,
                            max_sets, seed, aggregator, "leave_expression_out_identity")


def _leave_value_out(df, column, groups, subjects, session, k, max_sets, seed, aggregator, name) -> list[Fold]:
    """One fold per group of values of ``column``: test on the group's pictures, train on the rest."""
    mask = np.ones(len(df), dtype=bool)
    if session is not None and "session" in df.columns and (df["session"].astype(str) == str(session)).any():
        mask &= (df["session"].astype(str) == str(session)).to_numpy()
    if column not in df.columns:
        raise ProtocolUnavailable(f"{name} needs a {column!r} column")
    pos = _positions(df, mask)
    col = df[column].astype(str).to_numpy()
    present = set(col[pos])
    folds = []
    for i, group in enumerate(groups):
        group = [v for v in group if v in present]
        if not group:
            continue
        held = np.isin(col[pos], group)
        test_key = f"test_{column}"
        folds.append(_identity_split(df, pos[~held], pos[held], subjects, k, max_sets, seed + i, aggregator,
                                     name=f"{name}-{i}",
                                     info={test_key: group[0] if len(group) == 1 else "+".join(group),
                                           f"test_{column}s": group}))
    if not folds:
        raise ProtocolUnavailable(f"{name}: none of {groups} found in column {column!r}")
    return folds


def _identity_split(df, tr_pos, te_pos, subjects, k, max_sets, seed, aggregator, name, info) -> Fold:
    subj = df["subject"].astype(str).to_numpy()
    if isinstance(subjects, str) and subjects == "auto":
        subjects = paper_subjects(df.iloc[np.concatenate([tr_pos, te_pos])])
    if subjects is None:
        subjects = sorted(set(subj[tr_pos]) & set(subj[te_pos]))
    tr_sets, te_sets = [], []
    rng = np.random.default_rng(int(seed))
    for s in subjects:
        a, b = np.sort(tr_pos[subj[tr_pos] == s]), np.sort(te_pos[subj[te_pos] == s])
        if len(a) < k or len(b) < k:
            raise ProtocolUnavailable(f"{name}: subject {s} has {len(a)} train / {len(b)} test pictures (< k={k}); "
                                      "drop that subject (subjects=...) or lower k")
        if k == 1:
            tr_sets.append(a), te_sets.append(b)
        else:
            tr_sets.append(k_subsets(a, k, max_sets, int(rng.integers(2**31))))
            te_sets.append(k_subsets(b, k, max_sets, int(rng.integers(2**31))))
    if len(tr_sets) < 2:
        raise ProtocolUnavailable(f"{name}: needs >= 2 people with pictures on both sides, found {len(tr_sets)}")
    info = dict(info, subjects=list(subjects), k=k)
    return Fold(np.concatenate(tr_sets), np.concatenate(te_sets), name=name, aggregator=aggregator, info=info)


# ----------------------------------------------------------------------------------------------- expression
def paper_expression(df: pd.DataFrame, n_folds: int = 5, seed: int = 0,
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
        folds.append(Fold(np.sort(pos[tr]), np.sort(pos[te]), name=f"paper_expression-repeat{f}",
                          info={"test_fraction": test_fraction}))
    return folds


def subject_independent_expression(df: pd.DataFrame, n_folds: int = 5, seed: int = 0) -> list[Fold]:
    """GroupKFold by subject (seeded shuffle of subjects): no test person is seen in training."""
    return subject_independent(df, n_folds=n_folds, seed=seed, label=None, name="subject_independent_expression")


def subject_independent(df: pd.DataFrame, n_folds: int = 5, seed: int = 0, label: str | None = None,
                        name: str = "subject_independent") -> list[Fold]:
    """GroupKFold by subject for any task; subjects spread evenly over the folds by ``label`` when it is a
    per-subject column (e.g. gender), otherwise a plain seeded shuffle. Works with or without a gender column."""
    if "subject" not in df.columns:
        raise ProtocolUnavailable(f"{name} needs a 'subject' column to hold people out; use protocol 'random'")
    strat = None
    if label and label in df.columns:
        per_subject = df.groupby(df["subject"].astype(str))[label].nunique(dropna=True)
        strat = label if (per_subject <= 1).all() else None
    return _group_kfold(df, _positions(df), _check_n_folds(n_folds), seed, strat, name)


def random_split(df: pd.DataFrame, label: str, n_folds: int = 5, seed: int = 0, test_fraction: float = 0.3,
                 name: str = "random") -> list[Fold]:
    """Stratified random picture split repeated ``n_folds`` times (a generic task's 'paper-like' protocol).
    Leaks identity whenever a person has several pictures."""
    from sklearn.model_selection import StratifiedShuffleSplit

    pos = _positions(df)
    y = df[label].astype(str).to_numpy()[pos]
    counts = pd.Series(y).value_counts()
    if len(counts) < 2 or counts.min() < 2:
        raise ProtocolUnavailable(f"{name}: column {label!r} needs >= 2 classes with >= 2 pictures each; "
                                  f"counts: {counts.to_dict()}")
    folds = []
    for f in range(_check_n_folds(n_folds)):
        sss = StratifiedShuffleSplit(n_splits=1, test_size=test_fraction,
                                     random_state=int(np.random.SeedSequence([seed, f]).generate_state(1)[0]))
        tr, te = next(sss.split(np.zeros(len(pos)), y))
        folds.append(Fold(np.sort(pos[tr]), np.sort(pos[te]), name=f"{name}-repeat{f}"))
    return folds


# --------------------------------------------------------------------------------------------------- gender
def _fei_mask(df: pd.DataFrame):
    if "dataset" in df.columns and (df["dataset"].astype(str) == "fei").any():
        return (df["dataset"].astype(str) == "fei").to_numpy()
    return None


def one_picture_per_subject(df: pd.DataFrame, positions: np.ndarray, prefer: str = "neutral") -> np.ndarray:
    """One position per subject: the picture whose ``expression`` is ``prefer`` (FEI's neutral frontal), else
    the subject's first picture by ``image_id``."""
    sub = df.iloc[positions].assign(_pos=positions)
    key = (sub["expression"].astype(str) != prefer) if "expression" in sub.columns else 0
    sub = sub.assign(_key=key, _id=sub["image_id"].astype(str) if "image_id" in sub.columns else sub["_pos"])
    sub = sub.sort_values(["subject", "_key", "_id"]).drop_duplicates("subject")
    return np.sort(sub["_pos"].to_numpy())


def paper_gender(df: pd.DataFrame, n_per_gender: int = 50, n_folds: int = 5, seed: int = 0,
                 label: str = "gender", pictures: str = "one") -> list[Fold]:
    """The paper's gender protocol (FEI) as written: *one* picture per subject (the neutral one), per repeat a
    seeded random ``n_per_gender`` male + ``n_per_gender`` female subjects train (100 pictures), the next
    ``n_per_gender`` of each test (100 pictures). ``pictures="all"`` is the two-picture variant
    (:func:`two_picture_gender`, both FEI frontal pictures of each subject: 200/200). Rows with ``dataset`` other
    than ``fei`` are ignored when a ``dataset`` column exists. Fewer than 2 subjects of a gender raises
    :class:`ProtocolUnavailable`; fewer than ``2 × n_per_gender`` splits that gender's subjects in half."""
    n_folds = _check_n_folds(n_folds)
    if label not in df.columns:
        raise ProtocolUnavailable(f"gender protocols need a {label!r} column")
    pos = _positions(df, _fei_mask(df))
    pos = pos[df[label].iloc[pos].notna().to_numpy()]
    if pictures == "one":
        pos = one_picture_per_subject(df, pos)
    subj = df["subject"].astype(str).to_numpy()
    gend = df[label].astype(str).to_numpy()
    subj_gender = dict(zip(subj[pos], gend[pos]))
    name = "paper_gender" if pictures == "one" else "two_picture_gender"
    folds = []
    for f in range(n_folds):
        rng = _rng(seed, f)
        train_s, test_s = [], []
        for g in sorted(set(subj_gender.values())):
            members = np.array(sorted(s for s, gg in subj_gender.items() if gg == g), dtype=object)
            if len(members) < 2:
                raise ProtocolUnavailable(f"{name}: gender {g} has {len(members)} subject(s); need >= 2 "
                                          "(add subjects of that gender)")
            members = members[rng.permutation(len(members))]
            n_tr = min(n_per_gender, len(members) // 2) if len(members) < 2 * n_per_gender else n_per_gender
            train_s += list(members[:n_tr])
            test_s += list(members[n_tr:n_tr + n_per_gender])
        tr, te = pos[np.isin(subj[pos], train_s)], pos[np.isin(subj[pos], test_s)]
        folds.append(Fold(tr, te, name=f"{name}-repeat{f}",
                          info={"n_train_subjects": len(train_s), "n_test_subjects": len(test_s),
                                "pictures_per_subject": pictures}))
    return folds


def two_picture_gender(df: pd.DataFrame, n_per_gender: int = 50, n_folds: int = 5, seed: int = 0,
                       label: str = "gender") -> list[Fold]:
    """Our earlier reading of the paper's gender protocol: the same subject split as :func:`paper_gender`, with
    both FEI frontal pictures (neutral, smiling) of every subject — 200 train / 200 test pictures."""
    return paper_gender(df, n_per_gender=n_per_gender, n_folds=n_folds, seed=seed, label=label, pictures="all")


def subject_independent_gender(df: pd.DataFrame, n_folds: int = 5, seed: int = 0, label: str = "gender"
                               ) -> list[Fold]:
    """GroupKFold by subject, subjects of each gender spread evenly over the folds (seeded)."""
    strat = label if label in df.columns else None
    return _group_kfold(df, _positions(df, _fei_mask(df)), _check_n_folds(n_folds), seed, strat,
                        "subject_independent_gender")


# ------------------------------------------------------------------------------------------------- registry
PROTOCOLS: dict[str, dict[str, Callable[..., list[Fold]]]] = {
    "identity": {"paper": paper_identity, "cross_session": cross_session_identity,
                 "cross_angle": cross_angle_identity, "leave_expression_out": leave_expression_out_identity},
    "expression": {"paper": paper_expression, "subject_independent": subject_independent_expression},
    "gender": {"paper": paper_gender, "two_picture": two_picture_gender,
               "subject_independent": subject_independent_gender},
}
# Any other label column is a generic task with these protocols (label=the column).
GENERIC_PROTOCOLS: dict[str, Callable[..., list[Fold]]] = {"random": random_split,
                                                           "subject_independent": subject_independent}
LEAK_FREE = {("identity", "cross_session"), ("identity", "cross_angle"), ("identity", "leave_expression_out"),
             ("expression", "subject_independent"), ("gender", "subject_independent"), ("gender", "paper"),
             ("gender", "two_picture"), ("*", "subject_independent")}
# Protocols whose folds are repeated random splits (called repeats), not a partition (folds).
REPEATED = {"paper", "random", "two_picture"}
# Protocols whose folds are held-out *conditions* of the same people (a view and its mirror, an expression), not
# replicates: their folds differ in size and difficulty, so the spread between them is no uncertainty. Reported as
# the accuracy pooled over every held-out picture, a 95 % interval from resampling people, and the per-condition
# accuracies beside (split_kind "pooled folds").
POOLED = {"cross_angle", "leave_expression_out"}
# What each protocol leaks (Table 1 footnotes).
LEAKAGE = {
    ("identity", "paper"): "same people (identification); random pictures: the same expression at a neighbouring "
                           "angle is usually on both sides",
    ("identity", "cross_angle"): "none across views: a view and its mirror are held out together, no flips",
    ("identity", "cross_session"): "none: test pictures are another photo session",
    ("identity", "leave_expression_out"): "none across expressions",
    ("expression", "paper"): "identity: a test person's other pictures are in training",
    ("expression", "subject_independent"): "none: test people are never seen in training",
    ("gender", "paper"): "none: subject-disjoint, one picture per subject",
    ("gender", "two_picture"): "none across subjects (two pictures per subject)",
    ("gender", "subject_independent"): "none: subject-disjoint",
}
TASK_LABEL = {"identity": "subject", "expression": "expression", "gender": "gender"}
# Columns that describe a picture rather than label it: never a generic task.
NON_LABEL_COLUMNS = {"image_id", "path", "relpath", "dataset", "sha256", "width", "height", "session", "angle",
                     "expression_name", "usable", "reason", "status", "backend", "box", "box_source", "landmarks",
                     "alpha", "beta", "pose", "texture", "angles", "gamma", "translation", "assets"}


def label_column(task: str) -> str:
    """The column a task predicts: identity → subject, expression, gender, any other task → its own name."""
    return TASK_LABEL.get(task, task)


def tasks_for(df: pd.DataFrame) -> list[str]:
    """The tasks a table supports (names only), as :func:`facelib.data.labels.tasks_for` decides them — the one
    owner of "which label column means which task"."""
    return [t.task for t in labels.tasks_for(df, runnable_only=True)]


def protocols_for(task: str) -> dict[str, Callable[..., list[Fold]]]:
    return PROTOCOLS.get(task, GENERIC_PROTOCOLS)


def is_leak_free(task: str, protocol: str) -> bool:
    return (task, protocol) in LEAK_FREE or (task not in PROTOCOLS and ("*", protocol) in LEAK_FREE)


def make_folds(df: pd.DataFrame, task: str, protocol: str, **kwargs) -> list[Fold]:
    """Folds for ``task``/``protocol`` (see ``PROTOCOLS``; any other task uses ``GENERIC_PROTOCOLS`` with
    ``label=task``); keyword arguments the generator does not take are dropped."""
    table = protocols_for(task)
    if protocol not in table:
        raise ValueError(f"unknown task/protocol {task}/{protocol}; known: "
                         + ", ".join(f"{t}/{p}" for t, ps in PROTOCOLS.items() for p in ps)
                         + "; any other task: " + ", ".join(GENERIC_PROTOCOLS))
    fn = table[protocol]
    if task not in PROTOCOLS:
        kwargs = dict(kwargs, label=task, name=f"{task}_{protocol}")
    accepted = inspect.signature(fn).parameters
    return fn(df, **{k: v for k, v in kwargs.items() if k in accepted})
