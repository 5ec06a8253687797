"""k-subset aggregation of coefficient vectors (the paper's identity protocol).

The paper builds identity training samples by aggregating every 3-subset of a person's 20 training α's
(C(20,3) = 1140) with its C-Net, and says the plain mean is only slightly worse. Here a *set* is a row of
indices into the coefficient table; an *aggregator* maps ``X_sets`` of shape ``(n_sets, k, d)`` to ``(n_sets, d)``.
:func:`aggregate_mean` is the default. Aggregators behind one parameter (:data:`AGGREGATORS`,
:func:`make_aggregator`): ``mean``, ``median`` (element-wise) and ``cnet`` (the confidence-weighted mean with each
picture's C-Net confidences, column ``confidence`` of a table coded by :mod:`facelib.fitting.crossfit`). Each has
``aggregate_sets(X (n, d), sets (n_sets, k)) → (n_sets, d)``; for ``cnet`` the first ``d_conf`` columns of X (α)
are weighted by the confidences and any further columns (β of an ``alpha+beta`` input) are averaged.
"""
from __future__ import annotations

from itertools import combinations
from math import comb
from typing import Callable

import numpy as np
import pandas as pd

Aggregator = Callable[[np.ndarray], np.ndarray]
AGGREGATORS = ("mean", "median", "cnet")


def k_subsets(indices, k: int, max_sets: int | None = None, seed: int = 0) -> np.ndarray:
    """Every k-subset of ``indices`` as an ``(n_sets, k)`` int array, in lexicographic order of positions.

    With ``max_sets`` smaller than C(n, k), a seeded random sample of ``max_sets`` distinct subsets (sorted) is
    returned instead. ``k=1`` gives the indices themselves as ``(n, 1)``.
    """
    idx = np.asarray(indices, dtype=np.int64).ravel()
    n = len(idx)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n} (the number of indices), got {k}")
    total = comb(n, k)
    if max_sets is None or max_sets >= total:
        pos = np.fromiter((p for c in combinations(range(n), k) for p in c), dtype=np.int64, count=total * k)
        return idx[pos.reshape(total, k)]
    if max_sets < 1:
        raise ValueError("max_sets must be >= 1")
    rng = np.random.default_rng(seed)
    if total <= 200_000:  # enumerate and sample without replacement
        chosen = np.sort(rng.choice(total, size=max_sets, replace=False))
        all_pos = np.array(list(combinations(range(n), k)), dtype=np.int64)
        return idx[all_pos[chosen]]
    seen: set[tuple[int, ...]] = set()
    while len(seen) < max_sets:  # huge C(n, k): rejection sampling of distinct sorted subsets
        seen.add(tuple(sorted(rng.choice(n, size=k, replace=False).tolist())))
    return idx[np.array(sorted(seen), dtype=np.int64)]


def aggregate_mean(X_sets: np.ndarray) -> np.ndarray:
    """Element-wise mean over the set axis: ``(n_sets, k, d) → (n_sets, d)``."""
    X_sets = np.asarray(X_sets)
    if X_sets.ndim != 3:
        raise ValueError(f"expected (n_sets, k, d), got shape {X_sets.shape}")
    return X_sets.mean(axis=1)


def aggregate_weighted(X_sets: np.ndarray, confidences: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """C-Net's rule: Σ c_i ⊙ α_i ⊘ Σ c_i with element-wise confidences of the same shape as ``X_sets``."""
    X_sets, c = np.asarray(X_sets), np.asarray(confidences)
    if c.shape != X_sets.shape:
        raise ValueError(f"confidences {c.shape} must match X_sets {X_sets.shape}")
    return (c * X_sets).sum(axis=1) / (c.sum(axis=1) + eps)


def aggregate_sets(X: np.ndarray, sets: np.ndarray, aggregator: Aggregator | None = None) -> np.ndarray:
    """Aggregate rows of ``X`` (n, d) over index ``sets`` (n_sets, k) → (n_sets, d). 1-D ``sets`` = single rows.
    An aggregator with an ``aggregate_sets(X, sets)`` method (:class:`ConfidenceAggregator`) gets rows and indices."""
    X = np.asarray(X)
    sets = np.asarray(sets, dtype=np.int64)
    if sets.ndim == 1:
        return X[sets]
    if hasattr(aggregator, "aggregate_sets"):  # needs the rows themselves, e.g. C-Net's per-picture confidences
        return aggregator.aggregate_sets(X, sets)
    return (aggregator or aggregate_mean)(X[sets])


# ----------------------------------------------------------------------------------------------- named aggregators
class MeanAggregator:
    """``aggregate_sets(X, sets)``; also callable on stacked sets ``(n_sets, k, d) → (n_sets, d)``."""

    name = "mean"

    def __call__(self, X_sets: np.ndarray) -> np.ndarray:
        X_sets = np.asarray(X_sets)
        if X_sets.ndim != 3:
            raise ValueError(f"expected (n_sets, k, d), got shape {X_sets.shape}")
        return X_sets.mean(axis=1) if self.name == "mean" else np.median(X_sets, axis=1)

    def aggregate_sets(self, X: np.ndarray, sets: np.ndarray) -> np.ndarray:
        return self(np.asarray(X)[np.asarray(sets, np.int64)])

    def __repr__(self) -> str:
        return f"<aggregator {self.name}>"


class MedianAggregator(MeanAggregator):
    name = "median"


class ConfidenceAggregator(MeanAggregator):
    """C-Net's rule with per-picture confidences ``C`` (n, d_conf), rows aligned with X's rows."""

    name = "cnet"

    def __init__(self, confidences: np.ndarray):
        C = np.asarray(confidences, np.float64)
        if C.ndim != 2 or not np.isfinite(C).all() or (C <= 0).any():
            raise ValueError("C-Net confidences must be a finite, positive (n, d) matrix")
        self.C = C

    def __call__(self, X_sets: np.ndarray) -> np.ndarray:
        raise TypeError("the cnet aggregator needs the sets' row indices: call aggregate_sets(X, sets)")

    def aggregate_sets(self, X: np.ndarray, sets: np.ndarray) -> np.ndarray:
        X = np.asarray(X, np.float64)
        sets = np.asarray(sets, np.int64)
        if len(X) != len(self.C):
            raise ValueError(f"{len(X)} rows but {len(self.C)} confidence rows")
        d = self.C.shape[1]
        if X.shape[1] < d:
            raise ValueError(f"X has {X.shape[1]} columns, fewer than the {d} confidences")
        c = self.C[sets]
        head = (c * X[sets][..., :d]).sum(1) / c.sum(1)
        tail = X[sets][..., d:].mean(1)
        return np.concatenate([head, tail], axis=1).astype(np.float32)


def make_aggregator(name: str, df=None) -> MeanAggregator:
    """``mean`` / ``median`` / ``cnet`` (``cnet`` reads the ``confidence`` column of the coefficient table ``df``,
    rows aligned with the rows the classifier uses)."""
    if name == "mean":
        return MeanAggregator()
    if name == "median":
        return MedianAggregator()
    if name == "cnet":
        if df is None or "confidence" not in df.columns or df["confidence"].isna().any():
            raise ValueError("the cnet aggregator needs a coefficient table with a C-Net 'confidence' for every "
                             "row (code it with facelib.fitting.crossfit.rnet_tables, C-Net on)")
        return ConfidenceAggregator(np.stack([np.asarray(v, np.float64) for v in df["confidence"]]))
    raise ValueError(f"aggregator must be one of {AGGREGATORS}, got {name!r}")


def aggregation_curve(X: np.ndarray, subjects, ks=(1, 2, 3, 5), n_splits: int = 5, max_sets: int = 300,
                      seed: int = 0, aggregator: Aggregator | None = None):
    """How much does aggregating k pictures of a person help identification?

    For each split, each person's pictures are halved at random; k-subsets of each half are aggregated (at most
    ``max_sets`` per person and side) and a logistic regression trained on one half's sets is scored on the
    other's. Also reports the Fisher ratio (between-person / within-person variance, summed over dimensions) of
    the aggregated vectors. Returns a DataFrame: k, split, accuracy, fisher_ratio.
    """
    from sklearn.linear_model import LogisticRegression  # scikit-learn (~1 s): out of report.tables' start-up
    from sklearn.pipeline import make_pipeline  # (as above)
    from sklearn.preprocessing import StandardScaler  # (as above)

    X = np.asarray(X, dtype=np.float64)
    subjects = np.asarray(subjects)
    people = sorted(set(subjects))
    rows = []
    for split in range(n_splits):
        rng = np.random.default_rng(seed + split)
        halves = {p: np.array_split(rng.permutation(np.flatnonzero(subjects == p)), 2) for p in people}
        for k in ks:
            parts = {0: ([], []), 1: ([], [])}
            for p in people:
                for side in (0, 1):
                    idx = halves[p][side]
                    if len(idx) < k:
                        continue
                    sets = k_subsets(idx, k, max_sets=max_sets, seed=seed + split)
                    parts[side][0].append(aggregate_sets(X, sets, aggregator))
                    parts[side][1].extend([p] * len(sets))
            Xtr, ytr = np.concatenate(parts[0][0]), np.array(parts[0][1])
            Xte, yte = np.concatenate(parts[1][0]), np.array(parts[1][1])
            clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(Xtr, ytr)
            means = np.stack([Xtr[ytr == p].mean(0) for p in people if (ytr == p).any()])
            within = np.mean([Xtr[ytr == p].var(0).sum() for p in people if (ytr == p).any()])
            rows.append({"k": k, "split": split, "accuracy": float(clf.score(Xte, yte)),
                         "fisher_ratio": float(means.var(0).sum() / max(within, 1e-12))})
    return pd.DataFrame(rows)
