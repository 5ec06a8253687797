"""Identity consistency for R-Net training: person-grouped mini-batches and the within-person α spread term.

Pictures of one *training* person share α. With ``RNetSettings.identity_weight`` > 0,
:func:`facelib.fitting.rnet_train.train_rnet` draws its mini-batches with :func:`person_batches` (each batch holds
``batch_size // per_person`` groups of at most ``per_person`` pictures of one person, so every person in a batch
brings ≥ 2 pictures when they have ≥ 2) and adds ``identity_weight`` × :func:`identity_spread` to the hybrid loss.

The labels used are the training part's subjects only: under cross-fitting (:mod:`facelib.fitting.crossfit`) a
network trained with them codes the *other* part's people, whom it never saw, with or without labels — the
coding stays leak-free.

Units: α whitened by the model's σ (``rendered["alpha_z"]``, the same α the hybrid loss's regulariser sees).
The person mean is *not* detached. (It makes no difference to the gradient: d/dα_i Σ_j ‖α_j − ᾱ‖² = 2(α_i − ᾱ)
either way, because Σ_j (α_j − ᾱ) = 0.)
"""
from __future__ import annotations

import numpy as np
import torch

PER_PERSON = 4  # pictures per person in a batch (batch 16 = 4 people × 4 pictures)


def person_groups(subject, per_person: int = PER_PERSON, rng=None) -> list[np.ndarray]:
    """Every picture once: each person's pictures shuffled and split into ⌈n / per_person⌉ near-equal groups
    (sizes ≤ ``per_person``, ≥ 2 whenever the person has ≥ 2 pictures; a person with one picture is a group of
    one), the groups shuffled."""
    if per_person < 2:
        raise ValueError(f"per_person must be ≥ 2 (a person needs two pictures to share α), got {per_person}")
    rng = np.random.default_rng(rng)
    subject = np.asarray(subject).astype(str)
    groups: list[np.ndarray] = []
    for s in np.unique(subject):
        rows = rng.permutation(np.flatnonzero(subject == s))
        groups += np.array_split(rows, -(-len(rows) // per_person))
    return [groups[i] for i in rng.permutation(len(groups))]


def person_batches(subject, batch_size: int = 16, per_person: int = PER_PERSON, rng=None) -> list[np.ndarray]:
    """One epoch of mini-batches (sorted row indices): :func:`person_groups` packed ``batch_size // per_person``
    groups per batch, so a batch holds pictures of at most that many people and at most ``batch_size`` pictures;
    every picture appears exactly once in the epoch."""
    if batch_size < per_person:
        raise ValueError(f"batch_size {batch_size} is smaller than per_person {per_person}")
    groups = person_groups(subject, per_person, rng)
    k = batch_size // per_person
    return [np.sort(np.concatenate(groups[i:i + k])) for i in range(0, len(groups), k)]


def identity_spread(alpha_z: torch.Tensor, subject) -> torch.Tensor:
    """Mean over the batch's people with ≥ 2 pictures of the mean squared distance ‖α_i − ᾱ_person‖² of their
    pictures from their batch mean (whitened α, (B, d)); 0 (with a gradient graph) when no person has two."""
    subject = np.asarray(subject).astype(str)
    _, inv, counts = np.unique(subject, return_inverse=True, return_counts=True)
    inv_t = torch.as_tensor(inv.reshape(-1), device=alpha_z.device)
    n = torch.as_tensor(counts, dtype=alpha_z.dtype, device=alpha_z.device)
    means = torch.zeros(len(counts), alpha_z.shape[1], dtype=alpha_z.dtype, device=alpha_z.device)
    means = means.index_add(0, inv_t, alpha_z) / n[:, None]
    sq = ((alpha_z - means[inv_t]) ** 2).sum(1)  # (B,)
    per_person = torch.zeros_like(n).index_add(0, inv_t, sq) / n
    keep = torch.as_tensor(counts >= 2, device=alpha_z.device)
    if not bool(keep.any()):
        return alpha_z.sum() * 0.0
    return per_person[keep].mean()
