"""facelib.fitting.losses: each term against a hand computation; HybridLoss weights and switches."""
from __future__ import annotations

import math

import pytest
import torch

from facelib.fitting import losses as L


def test_default_weights_are_the_papers():
    assert L.DEFAULT_WEIGHTS == {"photo": 1.92, "landmark": 1.6e-3, "perceptual": 0.2, "reg": 3e-4,
                                 "texture": 5.0, "lighting": 10.0}
    assert L.REG_WEIGHTS == {"w_id": 1.0, "w_exp": 0.8, "w_tex": 1.7e-2}


def test_photometric_loss_by_hand():
    pred = torch.zeros(1, 3, 1, 3)
    target = torch.zeros(1, 3, 1, 3)
    target[0, :, 0, 0] = torch.tensor([3.0, 4.0, 0.0])   # ‖d‖ = 5
    target[0, :, 0, 1] = torch.tensor([1.0, 2.0, 2.0])   # ‖d‖ = 3
    target[0, :, 0, 2] = torch.tensor([9.0, 9.0, 9.0])   # outside the mask
    mask = torch.tensor([1.0, 1.0, 0.0]).view(1, 1, 1, 3)
    assert L.photometric_loss(pred, target, mask, eps=0).item() == pytest.approx((5 + 3) / 2)
    att = torch.tensor([1.0, 0.5, 1.0]).view(1, 1, 1, 3)
    assert L.photometric_loss(pred, target, mask, att, eps=0).item() == pytest.approx((5 + 1.5) / 1.5)
    # empty mask: no division by zero
    assert L.photometric_loss(pred, target, torch.zeros_like(mask)).item() == 0.0
    # gradient flows to the prediction, not to the mask
    p = pred.clone().requires_grad_(True)
    L.photometric_loss(p, target, mask).backward()
    assert p.grad[0, :, 0, 2].abs().sum() == 0 and p.grad[0, :, 0, 0].abs().sum() > 0


def test_landmark_loss_weights_and_value():
    w = L.deep3d_landmark_weights()
    heavy = [i for i in range(68) if w[i] == 20]
    assert heavy == [28, 29, 30] + list(range(60, 68))   # 0-based: nose 29–31 and inner mouth 61–68 (1-based)
    assert int((w == 1).sum()) == 68 - 11
    pred = torch.zeros(2, 68, 2)
    gt = torch.zeros(2, 68, 2)
    gt[0, 0] = torch.tensor([3.0, 4.0])   # weight 1, squared distance 25
    gt[1, 29] = torch.tensor([1.0, 1.0])  # weight 20, squared distance 2
    assert L.landmark_loss(pred, gt).item() == pytest.approx((25 + 40) / (2 * 68))
    assert L.landmark_loss(pred, gt, torch.ones(68)).item() == pytest.approx((25 + 2) / (2 * 68))


def test_perceptual_loss_is_one_minus_cosine():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 2.0], [3.0, 3.0]])
    assert L.perceptual_loss(a, b).item() == pytest.approx(((1 - 0) + (1 - 1)) / 2, abs=1e-6)
    c = torch.tensor([[1.0, 1.0]])
    d = torch.tensor([[1.0, 0.0]])
    assert L.perceptual_loss(c, d).item() == pytest.approx(1 - 1 / math.sqrt(2), abs=1e-6)


def test_coefficient_regulariser_by_hand():
    alpha = torch.tensor([[1.0, 2.0], [0.0, 1.0]])   # Σα² = 6
    beta = torch.tensor([[1.0], [1.0]])              # Σβ² = 2
    delta = torch.tensor([[10.0], [0.0]])            # Σδ² = 100
    expect = (1.0 * 6 + 0.8 * 2 + 1.7e-2 * 100) / 2
    assert L.coefficient_regulariser(alpha, beta, delta).item() == pytest.approx(expect)
    assert L.coefficient_regulariser(alpha, beta, None).item() == pytest.approx((6 + 1.6) / 2)
    assert L.coefficient_regulariser(alpha, beta, delta, w_id=0, w_exp=0, w_tex=1).item() == pytest.approx(50)


def test_texture_flatten_loss_by_hand():
    albedo = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [5.0, 5.0, 5.0]]])
    mask = torch.tensor([1.0, 1.0, 0.0])   # skin mean 0.5; each skin vertex differs by 0.5 in 3 channels
    assert L.texture_flatten_loss(albedo, mask).item() == pytest.approx(6 * 0.25 / 2)
    flat = torch.full((2, 3, 3), 0.7)
    assert L.texture_flatten_loss(flat, mask).item() == pytest.approx(0.0, abs=1e-12)


def test_lighting_loss_monochrome_prior():
    grey = torch.arange(9.0).repeat(3).view(1, 27)   # R = G = B → 0
    assert L.lighting_loss(grey).item() == 0.0
    g = torch.zeros(1, 27)
    g[0, 0] = 3.0                                     # R DC 3, G and B 0: mean 1, deviations 2, −1, −1
    assert L.lighting_loss(g).item() == pytest.approx((4 + 1 + 1) / 27)


def _inputs(b=2, n=5):
    torch.manual_seed(0)
    return dict(
        pred_image=torch.rand(b, 3, 4, 4), target_image=torch.rand(b, 3, 4, 4), face_mask=torch.ones(b, 1, 4, 4),
        attention=torch.rand(b, 1, 4, 4), pred_lm=torch.rand(b, 68, 2) * 224, gt_lm=torch.rand(b, 68, 2) * 224,
        emb_pred=torch.randn(b, 16), emb_target=torch.randn(b, 16), alpha=torch.randn(b, 80), beta=torch.randn(b, 64),
        delta=torch.randn(b, 80), gamma=torch.randn(b, 27), albedo=torch.rand(b, n, 3),
        skin_mask=torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0]))


def test_hybrid_loss_total_is_weighted_sum_of_terms():
    x = _inputs()
    total, terms = L.HybridLoss()(**x)
    assert set(terms) == set(L.DEFAULT_WEIGHTS)
    hand = {
        "photo": 1.92 * L.photometric_loss(x["pred_image"], x["target_image"], x["face_mask"], x["attention"]),
        "landmark": 1.6e-3 * L.landmark_loss(x["pred_lm"], x["gt_lm"]),
        "perceptual": 0.2 * L.perceptual_loss(x["emb_pred"], x["emb_target"]),
        "reg": 3e-4 * L.coefficient_regulariser(x["alpha"], x["beta"], x["delta"]),
        "texture": 5.0 * L.texture_flatten_loss(x["albedo"], x["skin_mask"]),
        "lighting": 10.0 * L.lighting_loss(x["gamma"]),
    }
    for k, v in hand.items():
        assert terms[k].item() == pytest.approx(v.item(), rel=1e-6)
    assert total.item() == pytest.approx(sum(v.item() for v in hand.values()), rel=1e-6)


def test_hybrid_loss_switches_and_overrides():
    x = _inputs()
    loss = L.HybridLoss({"perceptual": 0, "texture": None, "photo": 1.0}, reg_weights={"w_tex": 0.0})
    assert loss.active == ("photo", "landmark", "reg", "lighting")
    del x["emb_pred"], x["emb_target"], x["albedo"]      # inputs of switched-off terms are not needed
    total, terms = loss(**x)
    assert set(terms) == {"photo", "landmark", "reg", "lighting"}
    assert terms["photo"].item() == pytest.approx(
        L.photometric_loss(x["pred_image"], x["target_image"], x["face_mask"], x["attention"]).item())
    assert terms["reg"].item() == pytest.approx(
        3e-4 * L.coefficient_regulariser(x["alpha"], x["beta"], None).item(), rel=1e-6)
    with pytest.raises(ValueError, match="perceptual"):
        L.HybridLoss()(**x)                                # on by default but inputs missing
    with pytest.raises(KeyError):
        L.HybridLoss({"colour": 1.0})
    # module-level skin mask default and gradients through the total
    y = _inputs()
    skin = y.pop("skin_mask")
    alpha = y["alpha"].requires_grad_(True)
    total, _ = L.HybridLoss(skin_mask=skin)(**y)
    total.backward()
    assert torch.allclose(alpha.grad, 3e-4 * 2 * alpha.detach() / 2)
