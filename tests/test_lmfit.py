"""The landmark-fit options: the landmark fit's options — per-picture (per-angle) landmark weights, the β regulariser's
weight, an L1 (sparsity) prior on β — on hand-made numbers and on synthetic ICT faces."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from facelib import assets
from facelib.face3d import ict
from facelib.fitting import losses as L
from facelib.fitting.fitter import Fitter
from tests.fixtures import known_ict_faces

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_yaw_landmark_weights_fade_the_far_jawline():
    w = L.yaw_landmark_weights([44.0, -44.0, 5.0, 25.0], occluded=0.0, start=15.0, full=35.0)
    assert w.shape == (4, 68)
    right, left, rest = list(range(0, 8)), list(range(9, 17)), [8] + list(range(17, 68))
    assert (w[0, right] == 0).all() and (w[0, left] == 1).all() and (w[0, rest] == 1).all()  # yaw > 0: 0–7 away
    assert (w[1, left] == 0).all() and (w[1, right] == 1).all() and (w[1, rest] == 1).all()
    assert (w[2] == 1).all()                                                               # frontal: untouched
    assert np.allclose(w[3, right], 0.5) and (w[3, left] == 1).all()                       # halfway through fade
    assert np.allclose(L.yaw_landmark_weights([90.0], occluded=0.25)[0, right], 0.25)
    assert (L.yaw_landmark_weights([90.0, 50.0], occluded=0.0, until=60.0)[0] == 1).all()  # past ``until``: off
    assert (L.yaw_landmark_weights([90.0, 50.0], occluded=0.0, until=60.0)[1, right] == 0).all()


def test_sparsity_term_is_optional_and_l1():
    assert "sparsity" not in L.DEFAULT_WEIGHTS and "sparsity" not in L.HybridLoss().active
    beta = torch.tensor([[0.5, -0.25, 0.0], [1.0, 0.0, 0.0]])
    alpha = torch.zeros(2, 2)
    loss = L.HybridLoss({"photo": 0, "landmark": 0, "perceptual": 0, "texture": 0, "lighting": 0, "reg": 0,
                         "sparsity": 2.0})
    total, terms = loss(alpha=alpha, beta=beta)
    assert set(terms) == {"sparsity"}
    assert total.item() == pytest.approx(2.0 * (0.75 + 1.0) / 2)
    with pytest.raises(KeyError):
        L.HybridLoss({"sparsty": 1.0})


def test_per_picture_landmark_weights_replace_the_losss_own():
    pred, gt = torch.zeros(2, 68, 2), torch.zeros(2, 68, 2)
    gt[0, 3] = torch.tensor([3.0, 4.0])   # 25, picture 0, a jaw point
    gt[1, 3] = torch.tensor([1.0, 0.0])   # 1, picture 1
    hl = L.HybridLoss({"photo": 0, "perceptual": 0, "texture": 0, "lighting": 0, "reg": 0})
    w = torch.ones(2, 68)
    w[0, 3] = 0.0
    _, plain = hl(pred_lm=pred, gt_lm=gt)
    _, weighted = hl(pred_lm=pred, gt_lm=gt, lm_weights=w)
    assert plain["landmark"].item() == pytest.approx(1.6e-3 * 26 / (2 * 68))
    assert weighted["landmark"].item() == pytest.approx(1.6e-3 * 1 / (2 * 68))


# ----------------------------------------------------------------------------------------------- ICT fits
@pytest.fixture(scope="module")
def synthetic(assets_dir):
    """An ICT fitter and the 68 landmarks of two known posed faces (one turned by ~40°)."""
    if not (assets_dir / assets.get("ict_facekit").relpath).is_file():
        pytest.skip("ICT-FaceKit archive not in FACELIB_ASSETS")
    model = ict.load_model(assets_dir=assets_dir)
    fitter = Fitter(model, device="cpu")
    coeffs, rois = known_ict_faces(model, yaw_deg=(0.0, 40.0))
    alpha, beta, pose = coeffs["alpha"], coeffs["beta"], coeffs["pose"]
    truth = fitter.fit({"alpha": alpha, "beta": beta, "pose": pose}, rois, None, iterations=0).landmarks
    start = {"alpha": np.zeros_like(alpha), "beta": np.zeros_like(beta), "pose": pose}
    return fitter, start, rois, truth


def test_sparsity_option_makes_beta_sparser(synthetic):
    fitter, start, rois, truth = synthetic
    plain = fitter.fit(start, rois, truth, iterations=150)
    sparse = fitter.fit(start, rois, truth, iterations=150, weights={"sparsity": 1e-3})
    assert "sparsity" in sparse.info["weights"] and "sparsity" not in plain.info["weights"]
    assert (sparse.beta > 0.01).sum() < (plain.beta > 0.01).sum()
    assert sparse.beta.sum() < plain.beta.sum()
    assert sparse.beta.min() >= 0 and sparse.beta.max() <= 1


def test_reg_weights_reach_the_regulariser(synthetic):
    fitter, start, rois, truth = synthetic
    plain = fitter.fit(start, rois, truth, iterations=100)
    strong = fitter.fit(start, rois, truth, iterations=100, reg_weights={"w_exp": 80.0})
    assert (strong.beta ** 2).sum() < 0.5 * (plain.beta ** 2).sum()


def test_landmark_weights_switch_points_off(synthetic):
    """With weight 0 on picture 1's far jawline (0–7), moving those targets changes nothing; with the loss's own
    weights it does."""
    fitter, start, rois, truth = synthetic
    moved = truth.copy()
    moved[1, 0:8] += np.array([15.0, -10.0], np.float32)
    w = L.yaw_landmark_weights([0.0, 40.0], occluded=0.0)
    a = fitter.fit(start, rois, truth, iterations=40, landmark_weights=w)
    b = fitter.fit(start, rois, moved, iterations=40, landmark_weights=w)
    c = fitter.fit(start, rois, moved, iterations=40)
    assert np.allclose(a.beta, b.beta, atol=1e-5) and np.allclose(a.alpha, b.alpha, atol=1e-5)
    assert np.abs(c.beta[1] - a.beta[1]).max() > 1e-2
    assert np.allclose(a.beta[0], c.beta[0], atol=1e-5)  # picture 0 (frontal) is fitted as before
