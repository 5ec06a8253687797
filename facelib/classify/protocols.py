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

Modules: :class:`Fold` and the seeded split helpers are in :mod:`facelib.classify.folds`, the identity protocols in
:mod:`facelib.classify.identity_protocols`; the expression, gender and generic protocols, every protocol's leakage
note and the task registry are here, and every name is imported from here.
"""
from __future__ import annotations

import inspect
from typing import Callable

import numpy as np
import pandas as pd

from ..data import labels
from ..vocab import ANGLES, EXPRESSIONS
from .folds import (Fold, ProtocolUnavailable, check_n_folds, fold_rng, group_kfold, subject_folds, usable_mask,
                    usable_positions)
from .identity_protocols import (MIRROR_GROUPS, PAPER_SUBJECTS, cross_angle_identity, cross_session_identity,
                                 leave_expression_out_identity, paper_identity, paper_subjects)

__all__ = [  # expression, gender, generic protocols and the registry, here
    "KDEF_FULL_COUNT", "PAPER_EXPR_TRAIN", "PAPER_EXPR_TEST", "PAPER_EXPR_TEST_FRACTION", "paper_expression",
    "subject_independent_expression", "subject_independent", "random_split", "one_picture_per_subject",
    "paper_gender", "two_picture_gender", "subject_independent_gender", "PROTOCOLS", "GENERIC_PROTOCOLS",
    "LEAK_FREE", "REPEATED", "POOLED", "LEAKAGE", "TASK_LABEL", "NON_LABEL_COLUMNS", "label_column", "tasks_for",
    "protocols_for", "is_leak_free", "make_folds",
    # re-exported from vocab, folds and identity_protocols
    "ANGLES", "EXPRESSIONS", "Fold", "ProtocolUnavailable", "check_n_folds", "fold_rng", "group_kfold",
    "subject_folds", "usable_mask", "usable_positions", "MIRROR_GROUPS", "PAPER_SUBJECTS", "cross_angle_identity",
    "cross_session_identity", "leave_expression_out_identity", "paper_identity", "paper_subjects"]

KDEF_FULL_COUNT, PAPER_EXPR_TRAIN, PAPER_EXPR_TEST = 4900, 2975, 1925
PAPER_EXPR_TEST_FRACTION = PAPER_EXPR_TEST / KDEF_FULL_COUNT

# ----------------------------------------------------------------------------------------------- expression
def paper_expression(df: pd.DataFrame, n_folds: int = 5, seed: int = 0,
                     test_fraction: float = PAPER_EXPR_TEST_FRACTION, label: str = "expression") -> list[Fold]:
    """The paper's expression protocol: all usable pictures, a stratified (by expression) random split with
    the paper's 2975/1925 proportion, repeated ``n_folds`` times with seeds (seed, fold). Leaks identity."""
    from sklearn.model_selection import StratifiedShuffleSplit  # scikit-learn: out of report.tables' start-up

    n_folds = check_n_folds(n_folds)
    pos = usable_positions(df)
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
    return group_kfold(df, usable_positions(df), check_n_folds(n_folds), seed, strat, name)


def random_split(df: pd.DataFrame, label: str, n_folds: int = 5, seed: int = 0, test_fraction: float = 0.3,
                 name: str = "random") -> list[Fold]:
    """Stratified random picture split repeated ``n_folds`` times (a generic task's 'paper-like' protocol).
    Leaks identity whenever a person has several pictures."""
    from sklearn.model_selection import StratifiedShuffleSplit  # scikit-learn: out of report.tables' start-up

    pos = usable_positions(df)
    y = df[label].astype(str).to_numpy()[pos]
    counts = pd.Series(y).value_counts()
    if len(counts) < 2 or counts.min() < 2:
        raise ProtocolUnavailable(f"{name}: column {label!r} needs >= 2 classes with >= 2 pictures each; "
                                  f"counts: {counts.to_dict()}")
    folds = []
    for f in range(check_n_folds(n_folds)):
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
    n_folds = check_n_folds(n_folds)
    if label not in df.columns:
        raise ProtocolUnavailable(f"gender protocols need a {label!r} column")
    pos = usable_positions(df, _fei_mask(df))
    pos = pos[df[label].iloc[pos].notna().to_numpy()]
    if pictures == "one":
        pos = one_picture_per_subject(df, pos)
    subj = df["subject"].astype(str).to_numpy()
    gend = df[label].astype(str).to_numpy()
    subj_gender = dict(zip(subj[pos], gend[pos]))
    name = "paper_gender" if pictures == "one" else "two_picture_gender"
    folds = []
    for f in range(n_folds):
        rng = fold_rng(seed, f)
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
    return group_kfold(df, usable_positions(df, _fei_mask(df)), check_n_folds(n_folds), seed, strat,
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
