"""The inner validation split every model is selected on (early stopping, best checkpoint, C of the linear
models) — carved from a fold's *training* side so that it shares no picture with the fit split, and no person
when the protocol holds people out.

* Set samples (the identity protocol's k-subsets): each person's training *pictures* are split first
  (``val_fraction`` of them, at least k, held out), then the k-subsets are formed inside each side — no
  validation set contains a picture of a fit set.
* Subject-disjoint protocols (``subject_independent``, gender): whole subjects are held out (stratified by the
  label when it is constant per subject, e.g. gender).
* Otherwise (the paper's expression split, cross-angle, cross-session, leave-expression-out): a stratified random
  split of the training pictures.

The test side of the fold is never touched.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from .aggregate import k_subsets
from .protocols import Fold, ProtocolUnavailable

SUBJECT_DISJOINT = {"subject_independent", "paper_gender", "two_picture_gender"}


def _subject_disjoint(fold: Fold) -> bool:
    return any(fold.name.startswith(p) or p in fold.name for p in SUBJECT_DISJOINT)


def inner_split(df: pd.DataFrame, fold: Fold, label: str, val_fraction: float = 0.15, seed: int = 0,
                max_sets: int | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """``(fit, val, how)`` in the format of ``fold.train`` (1-D positions, or 2-D ``(n_sets, k)`` sets);
    ``how`` is ``pictures``, ``subjects`` or ``pictures-before-sets``."""
    rng = np.random.default_rng([int(seed), 7])
    y = df[label].astype(str).to_numpy()
    if fold.is_sets:
        k = fold.train.shape[1]
        subj = df["subject"].astype(str).to_numpy()
        pics = fold.train_images
        cap = max_sets if max_sets is not None else fold.info.get("max_sets")
        fit_sets, val_sets = [], []
        for s in sorted(set(subj[pics])):
            p = np.sort(pics[subj[pics] == s])
            n_val = max(k + 2, int(round(val_fraction * len(p))))  # >= C(k+2, k) validation sets
            n_val = min(n_val, len(p) - k) if len(p) - n_val < k else n_val
            if n_val < k or len(p) - n_val < k:
                raise ProtocolUnavailable(f"subject {s} has {len(p)} training pictures: too few for a "
                                          f"validation split of >= {k} and a fit split of >= {k}; lower k")
            p = p[rng.permutation(len(p))]
            fit_sets.append(k_subsets(np.sort(p[n_val:]), k, cap, int(rng.integers(2**31))))
            val_sets.append(k_subsets(np.sort(p[:n_val]), k, cap, int(rng.integers(2**31))))
        return np.concatenate(fit_sets), np.concatenate(val_sets), "pictures-before-sets"
    train = np.asarray(fold.train)
    if _subject_disjoint(fold) and "subject" in df.columns:
        subj = df["subject"].astype(str).to_numpy()[train]
        uniq = np.array(sorted(set(subj)), dtype=object)
        per_subject = pd.Series(y[train]).groupby(subj).nunique()
        strata = pd.Series(y[train], index=subj).groupby(level=0).first() if (per_subject <= 1).all() else None
        held: list = []
        groups = [uniq] if strata is None else [np.array(sorted(strata.index[strata == c]), dtype=object)
                                                for c in sorted(set(strata))]
        for g in groups:
            g = g[rng.permutation(len(g))]
            held += list(g[:max(1, int(round(val_fraction * len(g))))]) if len(g) > 1 else []
        is_val = np.isin(subj, held)
        if is_val.any() and (~is_val).any():
            return train[~is_val], train[is_val], "subjects"

    n_val = max(1, int(round(val_fraction * len(train))))
    yy = y[train]
    _, counts = np.unique(yy, return_counts=True)
    strat = yy if counts.min() >= 2 and n_val >= len(counts) and len(train) - n_val >= len(counts) else None
    fit, val = train_test_split(train, test_size=n_val, random_state=int(rng.integers(2**31)), stratify=strat)
    return np.sort(fit), np.sort(val), "pictures"


def learning_threshold(y_val) -> float:
    """Validation accuracy above which a network may have learnt something: the majority-class rate p plus one
    binomial standard error, p + √(p(1−p)/n); 1.0 for an empty split. It is one half of the learning rule
    (:func:`has_learnt`); the other half, a validation loss below :func:`prior_loss`, is what keeps a network at
    chance from passing it on a lucky draw of a small validation split (16 people: 11 right, not 13)."""
    if not len(y := np.asarray(y_val).ravel()):
        return 1.0
    p = float(np.bincount(y.astype(np.int64)).max()) / len(y)
    return p + float(np.sqrt(p * (1.0 - p) / len(y)))


def prior_loss(y_val) -> float:
    """The cross-entropy of always answering the validation split's own class frequencies (its entropy, nats): a
    network whose validation loss is not below it knows nothing the class counts do not; 0.0 for an empty split."""
    if not len(y := np.asarray(y_val).ravel()):
        return 0.0
    f = np.bincount(y.astype(np.int64)) / len(y)
    f = f[f > 0]
    return float(-(f * np.log(f)).sum())


def has_learnt(val_accuracy: float, val_loss: float, y_val) -> bool:
    """The learning rule early stopping waits for (patience counts only from the first epoch that meets it):
    validation accuracy above :func:`learning_threshold` **and** validation loss below :func:`prior_loss`. A
    network at chance meets neither, however long it trains, so it runs on to its cap and says so
    (``ran_to_cap``)."""
    return val_accuracy > learning_threshold(y_val) and val_loss < prior_loss(y_val)
