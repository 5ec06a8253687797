"""A train/test split (:class:`Fold`), :class:`ProtocolUnavailable`, and the seeded helpers every protocol of
:mod:`facelib.classify.protocols` builds its folds with (usable rows, per-fold generators, subject folds)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import FacelibError
from .aggregate import Aggregator

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


def usable_positions(df: pd.DataFrame, mask=None) -> np.ndarray:
    m = usable_mask(df).copy()
    if mask is not None:
        m &= np.asarray(mask, dtype=bool)
    return np.flatnonzero(m)


def fold_rng(seed: int, fold: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(fold)])


def check_n_folds(n_folds: int) -> int:
    if int(n_folds) < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    return int(n_folds)


def subject_folds(subjects: np.ndarray, strata: np.ndarray | None, n_folds: int, seed: int) -> list[np.ndarray]:
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


def group_kfold(df: pd.DataFrame, positions: np.ndarray, n_folds: int, seed: int, stratify_col: str | None,
                 name: str) -> list[Fold]:
    subj = df["subject"].to_numpy()[positions]
    strata = df[stratify_col].to_numpy()[positions] if stratify_col and stratify_col in df.columns else None
    groups = subject_folds(subj, strata, n_folds, seed)
    folds = []
    for i, test_subjects in enumerate(groups):
        is_test = np.isin(subj, test_subjects)
        tr, te = positions[~is_test], positions[is_test]
        assert not set(df["subject"].iloc[tr]) & set(df["subject"].iloc[te]), "subject leak"
        folds.append(Fold(tr, te, name=f"{name}-{i}", info={"test_subjects": sorted(map(str, test_subjects))}))
    return folds
