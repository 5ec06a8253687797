"""R-Net identity consistency (the identity-consistency term): person-grouped batches, the within-person α spread term, its
effect in train_rnet, and the cache key. Synthetic: a linear stand-in network and loss, no data or assets."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn

from facelib.fitting import crossfit
from facelib.fitting import rnet_train as T
from facelib.fitting.identity import identity_spread, person_batches, person_groups

D = 6  # α dimensions of the stand-in network


def _subjects(counts) -> np.ndarray:
    return np.concatenate([[f"p{i}"] * c for i, c in enumerate(counts)])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_person_batches_group_people_and_cover_the_epoch(seed):
    subject = _subjects([2, 3, 4, 5, 6, 7, 8, 9, 13, 2, 4])
    batches = person_batches(subject, batch_size=16, per_person=4, rng=seed)
    rows = np.concatenate(batches)
    assert np.array_equal(np.sort(rows), np.arange(len(subject)))  # every picture exactly once
    for b in batches:
        assert len(b) <= 16
        people, counts = np.unique(subject[b], return_counts=True)
        assert len(people) <= 16 // 4
        assert counts.min() >= 2  # every person of a batch brings two pictures or more
    assert len(batches) < len(subject) / 2  # groups are packed, not one person per batch
    other = person_batches(subject, 16, 4, rng=seed + 10)
    assert any(not np.array_equal(a, b) for a, b in zip(batches, other))  # the seed draws the batches


def test_person_groups_sizes_and_singletons():
    subject = _subjects([1, 5, 9])
    groups = person_groups(subject, per_person=4, rng=0)
    sizes = sorted(len(g) for g in groups)
    assert sizes == [1, 2, 3, 3, 3, 3]  # 1 | 5 → 3 + 2 | 9 → 3 + 3 + 3
    assert all(len(set(subject[g])) == 1 for g in groups)
    with pytest.raises(ValueError):
        person_groups(subject, per_person=1)
    with pytest.raises(ValueError):
        person_batches(subject, batch_size=2, per_person=4)


def test_identity_spread_value_and_gradient():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(7, D))
    subject = np.array(["a", "a", "a", "b", "b", "c", "d"])  # c and d alone: left out
    x = torch.tensor(a, requires_grad=True)
    val = identity_spread(x, subject)
    ref = np.mean([((a[subject == s] - a[subject == s].mean(0)) ** 2).sum(1).mean() for s in ("a", "b")])
    assert float(val.detach()) == pytest.approx(ref, rel=1e-10)
    val.backward()
    # the gradient is 2 (α_i − ᾱ) / (n_person · n_people): the mean needs no detaching
    for s, n in (("a", 3), ("b", 2)):
        m = subject == s
        np.testing.assert_allclose(x.grad.numpy()[m], 2 * (a[m] - a[m].mean(0)) / (n * 2), rtol=1e-10)
    assert np.all(x.grad.numpy()[(subject == "c") | (subject == "d")] == 0)
    lone = torch.zeros(2, D, requires_grad=True)
    assert float(identity_spread(lone, ["a", "b"]).detach()) == 0.0 and identity_spread(lone, ["a", "b"]).requires_grad


# ----------------------------------------------------------------------------------------------- train_rnet
class _Net(nn.Module):
    """Stand-in R-Net: a linear map of the (tiny) crop's pixels to α."""

    def __init__(self, n_in: int):
        super().__init__()
        self.fc = nn.Linear(n_in, D)

    def preprocess(self, crops):
        return torch.from_numpy(crops.reshape(len(crops), -1).astype(np.float32) / 255.0)

    def forward(self, x):
        return {"p": self.fc(x)}

    def decode(self, out):
        return {"alpha": out["p"]}


class _Composer:
    """Stand-in loss: squared distance of α to a per-picture target (stored in ``emb_target``)."""

    def __init__(self):
        self.f = SimpleNamespace(device=torch.device("cpu"), sigma_alpha=torch.full((D,), 2.0))

    def batch(self, data, idx):
        return {"target": torch.from_numpy(np.asarray(data.emb_target[idx], np.float32))}

    def forward(self, coeffs, b):
        return {"alpha_z": coeffs["alpha"] / self.f.sigma_alpha, "target": b["target"]}, None

    def losses(self, rendered, fb):
        fit = ((rendered["alpha_z"] - rendered["target"]) ** 2).sum(1).mean()
        return fit, {"fit": fit}


def _synthetic(n_people=6, per=6, seed=0) -> T.TrainData:
    """Pictures = person code + picture noise (4×4×3 pixels); the target α follows the pixels linearly, so a
    network fitting the targets alone reproduces the within-person variation."""
    rng = np.random.default_rng(seed)
    code = rng.uniform(60, 190, size=(n_people, 48))
    pix = np.repeat(code, per, 0) + rng.normal(0, 30, size=(n_people * per, 48))
    pix = np.clip(pix, 0, 255).astype(np.uint8)
    target = (pix.astype(np.float64) / 255.0 - 0.5) @ rng.normal(size=(48, D)) * 0.5
    n = len(pix)
    return T.TrainData(pix.reshape(n, 4, 4, 3), np.zeros((n, 4)), np.zeros((n, 68, 2), np.float32), None,
                       _subjects([per] * n_people), np.array([f"{i:064d}" for i in range(n)]),
                       emb_target=target.astype(np.float32))


def _within(net, comp, data) -> float:
    with torch.no_grad():
        a = net.decode(net(net.preprocess(data.crops)))["alpha"] / comp.f.sigma_alpha
    return float(identity_spread(a, data.subject))


def _train(data, weight, seed=0):
    torch.manual_seed(seed)
    net, comp = _Net(48), _Composer()
    hist = T.train_rnet(net, comp, data, epochs=40, batch_size=8, lr=3e-2, seed=seed, warmup=1,
                        identity_weight=weight)
    return net, comp, hist


def test_identity_term_lowers_the_within_person_spread():
    data = _synthetic()
    off_net, comp, off = _train(data, 0.0)
    on_net, _, on = _train(data, 2.0)
    w_off, w_on = _within(off_net, comp, data), _within(on_net, comp, data)
    print(f"within-person spread: off {w_off:.4f}, on {w_on:.4f}")
    assert w_on < 0.5 * w_off, (w_on, w_off)
    assert "identity" in on["terms"][0] and "identity" not in off["terms"][0]
    assert all(t["identity"] > 0 for t in on["terms"])  # recorded, weighted, every step
    # the grouped run still fits the targets about as well (the term does not simply flatten α)
    assert np.mean(on["total"][-6:]) < np.mean(on["total"][:6])
    assert on["epochs_done"] == off["epochs_done"] == 40
    # 6 people × 6 pictures → groups of 3 + 3, two groups per batch of 8: six steps an epoch
    assert on["steps"] == 40 * 6 and off["steps"] == 40 * -(-len(data) // 8)


def test_identity_weight_zero_is_the_unchanged_path():
    """Weight 0 draws the same batches and reaches the same weights as the code before the setting."""
    data = _synthetic(seed=1)
    a, _, ha = _train(data, 0.0, seed=3)
    torch.manual_seed(3)
    b = _Net(48)
    hb = T.train_rnet(b, _Composer(), data, epochs=40, batch_size=8, lr=3e-2, seed=3, warmup=1)
    assert ha["total"] == hb["total"]
    assert torch.equal(a.fc.weight, b.fc.weight)


# ----------------------------------------------------------------------------------------------- cache key
def test_identity_weight_zero_keeps_the_cache_key():
    # keys of the default and of the paper profile's settings computed on main before the setting existed
    before = {"default_rnet": "c7301dab79aa9b67f85e", "paper_cnet": "eecf0d8aae658ac9bff7"}
    paper = {"schedule": "cosine", "epochs": 16}
    for extra in ({}, {"identity_weight": 0.0}, {"identity_weight": 0, "identity_per_person": 8}):
        assert crossfit.weights_key(["x"], crossfit.make_settings(extra).key_dict(cnet=False), {}) \
            == before["default_rnet"]
        assert crossfit.weights_key(["x"], crossfit.make_settings({**paper, **extra}).key_dict(), {}) \
            == before["paper_cnet"]
    on = crossfit.make_settings({**paper, "identity_weight": 0.05}).key_dict()
    assert on["identity_weight"] == 0.05 and on["identity_per_person"] == 4
    assert crossfit.weights_key(["x"], on, {}) != before["paper_cnet"]
    other = crossfit.make_settings({**paper, "identity_weight": 0.05, "identity_per_person": 2}).key_dict()
    assert crossfit.weights_key(["x"], other, {}) != crossfit.weights_key(["x"], on, {})
