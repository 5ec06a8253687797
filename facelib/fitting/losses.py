"""The hybrid-level loss of Deng et al. 2019 (weights of Deep3DFaceRecon_pytorch ``facerecon_model.py``).

Terms (each a plain function, then combined by :class:`HybridLoss`):

=================  ==========  =====================================================================================
name               weight      definition
=================  ==========  =====================================================================================
``photo``          1.92        Σ_pixels ‖I_pred − I‖₂ · M·A / Σ M·A, ‖·‖₂ the per-pixel Euclidean norm over RGB
                               (√(ε + Σ_c d²), ε = 1e-6), M the rendered face mask, A the skin attention
``landmark``       1.6e-3      Σ_k w_k ‖q_k − q̂_k‖² / (B·68); w = 20 for 0-based 28–30 (1-based 29–31, the nose
                               bridge/tip points Deep3D weights) and 60–67 (1-based 61–68, the inner mouth), else 1
``perceptual``     0.2         mean over the batch of 1 − cos(f(I_pred), f(I)) of face-recognition embeddings
``reg``            3e-4        (w_id‖α‖² + w_exp‖β‖² + w_tex‖δ‖²) / B with w_id 1, w_exp 0.8, w_tex 1.7e-2
``texture``        5.0         Σ_skin ‖T_v − T̄_skin‖² / (B·|skin|) (albedo variance over skin vertices)  
``lighting``       10          mean((γ − mean_RGB γ)²) over (B, 3, 9): a nearly monochromatic light
``sparsity``       0 (off)     Σ|β| / B of the whitened expression coefficients (an L1 expression prior; not the
                               paper's: :data:`OPTIONAL_WEIGHTS`, switched on only when asked)
=================  ==========  =====================================================================================

Per-picture landmark weights: ``HybridLoss`` takes an optional ``lm_weights`` input (B, 68) that replaces its
(68,) weights for the batch — :func:`yaw_landmark_weights` × Deep3D's, so the jawline of the side turned away from
the camera counts less on half profiles (the landmark-fit options; :meth:`facelib.fitting.fitter.Fitter.fit`).

Notes on Deep3D's code (``models/losses.py``):
- the nose weight: the paper speaks of "nose and inner mouth" points; the code weights only 0-based 28:31
  (1-based 29–31) of the nose and the last 8 (inner mouth). We follow the code.
- the photometric denominator is Σ M·A (attention-weighted), i.e. a weighted mean over the face region.
- ``perceptual_loss`` here L2-normalises the embeddings first (Deep3D's ``PerceptualLoss`` does so before its
  ``perceptual_loss``), so raw network outputs can be passed.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DEFAULT_WEIGHTS: dict[str, float] = {
    "photo": 1.92,
    "landmark": 1.6e-3,
    "perceptual": 0.2,
    "reg": 3e-4,
    "texture": 5.0,
    "lighting": 10.0,
}
REG_WEIGHTS: dict[str, float] = {"w_id": 1.0, "w_exp": 0.8, "w_tex": 1.7e-2}
OPTIONAL_WEIGHTS: dict[str, float] = {"sparsity": 0.0}  # terms beyond the paper's: off unless a weight is given
JAW_SIDES = (tuple(range(0, 8)), tuple(range(9, 17)))  # the subject's right / left jawline (0-based), chin 8 apart

# inputs each term needs (HybridLoss.forward keyword names)
TERM_INPUTS: dict[str, tuple[str, ...]] = {
    "photo": ("pred_image", "target_image", "face_mask"),
    "landmark": ("pred_lm", "gt_lm"),
    "perceptual": ("emb_pred", "emb_target"),
    "reg": ("alpha", "beta"),
    "texture": ("albedo",),
    "lighting": ("gamma",),
    "sparsity": ("beta",),
}


def deep3d_landmark_weights(device=None, dtype=torch.float32) -> torch.Tensor:
    """(68,) weights of Deep3D's landmark loss: 20 at 0-based 28, 29, 30 and 60…67, else 1."""
    w = torch.ones(68, dtype=dtype, device=device)
    w[28:31] = 20.0
    w[60:68] = 20.0
    return w


def yaw_landmark_weights(yaw_deg, occluded: float, start: float = 15.0, full: float = 35.0,
                         until: float | None = None) -> np.ndarray:
    """(B, 68) multipliers of the landmark weights from each picture's signed yaw (degrees,
    :func:`facelib.face3d.cameras.pose_yaw`): the jawline of the side turned away from the camera — the subject's
    right (0–7) at yaw > 0, the left (9–16) at yaw < 0 (measured on KDEF: at yaw ≈ +44° dlib's points 0–7 sit on the
    silhouette next to the nose) — fades linearly from 1 at |yaw| ≤ ``start`` to ``occluded`` at |yaw| ≥ ``full``;
    every other point keeps 1. dlib follows the visible silhouette there, which no fixed model vertex does.
    ``until``: beyond this |yaw| every weight is 1 again (where the targets are no longer dlib's: the study's targets
    are the 3-D-consistent 3DDFA points beyond 60°, :func:`facelib.fitting.table.landmark_targets`)."""
    yaw = np.asarray(yaw_deg, np.float64).reshape(-1)
    fade = np.clip((np.abs(yaw) - start) / max(full - start, 1e-9), 0.0, 1.0)
    if until is not None:
        fade[np.abs(yaw) > until] = 0.0
    w = np.ones((len(yaw), 68), np.float32)
    far = 1.0 - fade * (1.0 - float(occluded))
    right, left = list(JAW_SIDES[0]), list(JAW_SIDES[1])
    w[np.ix_(yaw > 0, right)] = far[yaw > 0, None]
    w[np.ix_(yaw < 0, left)] = far[yaw < 0, None]
    return w


def sparsity_loss(beta: torch.Tensor) -> torch.Tensor:
    """Σ|β| / B (L1 expression prior: few active expression coefficients; ICT's β ≥ 0, so Σβ)."""
    return beta.abs().sum() / beta.shape[0]


def photometric_weights(mask: torch.Tensor, attention: torch.Tensor | None = None) -> torch.Tensor:
    """m = mask·attention (mask detached): the per-pixel weights of :func:`photometric_loss`, whose sum over the
    batch (at least 1) is its denominator — a ratio of sums over the batch, not a mean over pictures."""
    m = mask.detach()
    if attention is not None:
        m = m * attention
    return m


def photometric_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                     attention: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """Robust L2 image loss: Σ √(ε + Σ_c (pred − target)²)·m / max(Σ m, 1), m = mask·attention.

    pred, target (B, 3, H, W) RGB 0–1; mask (B, 1, H, W) (detached: coverage has no gradient); attention
    (B, 1, H, W) skin probability (Deep3D: A = 1 where P(skin) > 0.5, else P) or None (= 1).
    """
    m = photometric_weights(mask, attention)
    d = torch.sqrt(eps + ((pred - target) ** 2).sum(dim=1, keepdim=True))
    return (d * m).sum() / torch.clamp(m.sum(), min=1.0)


def landmark_loss(pred: torch.Tensor, gt: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted squared landmark distance Σ_k w_k ‖pred_k − gt_k‖² / (B·K); pred, gt (B, K, 2) pixels.

    ``weights`` (K,) or (B, K); None → :func:`deep3d_landmark_weights` (K must be 68).
    """
    if weights is None:
        weights = deep3d_landmark_weights(pred.device, pred.dtype)
    weights = torch.as_tensor(weights, dtype=pred.dtype, device=pred.device)
    sq = ((pred - gt) ** 2).sum(dim=-1)
    return (sq * weights).sum() / (pred.shape[0] * pred.shape[1])


def perceptual_loss(emb_a: torch.Tensor, emb_b: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """Mean over the batch of 1 − cos(emb_a, emb_b); embeddings (B, D) (L2-normalised here unless told not to)."""
    if normalize:
        emb_a = F.normalize(emb_a, dim=-1, p=2)
        emb_b = F.normalize(emb_b, dim=-1, p=2)
    cos = (emb_a * emb_b).sum(dim=-1)
    return (1.0 - cos).sum() / cos.shape[0]


def coefficient_regulariser(alpha: torch.Tensor, beta: torch.Tensor, delta: torch.Tensor | None = None,
                            w_id: float = 1.0, w_exp: float = 0.8, w_tex: float = 1.7e-2) -> torch.Tensor:
    """(w_id Σα² + w_exp Σβ² + w_tex Σδ²) / B; ``delta`` None (a model without texture basis) → no texture part."""
    loss = w_id * (alpha ** 2).sum() + w_exp * (beta ** 2).sum()
    if delta is not None and delta.numel() > 0:
        loss = loss + w_tex * (delta ** 2).sum()
    return loss / alpha.shape[0]


def texture_flatten_loss(albedo: torch.Tensor, skin_mask: torch.Tensor) -> torch.Tensor:
    """Albedo variance over the skin region: Σ_v ‖m_v (T_v − T̄)‖² / (B·Σ m), T̄ = Σ m_v T_v / Σ m per image.

    albedo (B, N, 3); skin_mask (N,) 0/1 weights per vertex (a soft mask enters squared, as in Deep3D's
    ``reflectance_loss``).
    """
    m = skin_mask.to(albedo.dtype).reshape(1, -1, 1)
    total = m.sum()
    mean = (albedo * m).sum(dim=1, keepdim=True) / total
    return (((albedo - mean) * m) ** 2).sum() / (albedo.shape[0] * total)


def lighting_loss(gamma: torch.Tensor) -> torch.Tensor:
    """Monochromatic-light prior: mean over (B, 3, 9) of (γ_c − mean_c γ)², γ (B, 27) channel-major R|G|B."""
    g = gamma.reshape(gamma.shape[0], 3, 9)
    return ((g - g.mean(dim=1, keepdim=True)) ** 2).mean()


class HybridLoss(nn.Module):
    """Weighted sum of the hybrid-level terms; returns ``(total, terms)`` with ``terms[name]`` = weighted value.

    ``weights``: dict name → weight, merged over :data:`DEFAULT_WEIGHTS`; a weight of 0 or None switches a term
    off (it is neither computed nor reported). A switched-on term whose inputs are missing raises ``ValueError``
    (switch it off explicitly instead). ``reg_weights`` overrides w_id/w_exp/w_tex; ``landmark_weights`` (68,)
    overrides Deep3D's; ``skin_mask`` (N,) is the default per-vertex mask of the texture term.

    ``forward`` keywords: pred_image, target_image, face_mask, attention (photo); pred_lm, gt_lm (landmark);
    lm_weights (B, 68) per-picture landmark weights (optional); emb_pred, emb_target (perceptual); alpha, beta,
    delta (reg); beta (sparsity); albedo, skin_mask (texture); gamma (lighting).
    """

    def __init__(self, weights: Mapping[str, float | None] | None = None,
                 reg_weights: Mapping[str, float] | None = None,
                 landmark_weights: torch.Tensor | None = None, skin_mask: torch.Tensor | None = None):
        super().__init__()
        w = dict(DEFAULT_WEIGHTS)
        for k, v in (weights or {}).items():
            if k not in DEFAULT_WEIGHTS and k not in OPTIONAL_WEIGHTS:
                known = sorted({**DEFAULT_WEIGHTS, **OPTIONAL_WEIGHTS})
                raise KeyError(f"unknown loss term {k!r}; terms are {known}")
            w[k] = v
        self.weights = {k: float(v) for k, v in w.items() if v}
        rw = dict(REG_WEIGHTS)
        for k, v in (reg_weights or {}).items():
            if k not in REG_WEIGHTS:
                raise KeyError(f"unknown regulariser weight {k!r}; expected {sorted(REG_WEIGHTS)}")
            rw[k] = float(v)
        self.reg_weights = rw
        self.register_buffer("landmark_weights",
                             None if landmark_weights is None else torch.as_tensor(landmark_weights).float())
        self.register_buffer("skin_mask", None if skin_mask is None else torch.as_tensor(skin_mask).float())

    @property
    def active(self) -> tuple[str, ...]:
        return tuple(self.weights)

    def forward(self, **inputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if "skin_mask" not in inputs and self.skin_mask is not None:
            inputs["skin_mask"] = self.skin_mask
        terms: dict[str, torch.Tensor] = {}
        for name, weight in self.weights.items():
            need = TERM_INPUTS[name] + (("skin_mask",) if name == "texture" else ())
            missing = [k for k in need if inputs.get(k) is None]
            if missing:
                raise ValueError(f"loss term {name!r} is on (weight {weight}) but {missing} not given; "
                                 f"pass weights={{{name!r}: 0}} to switch it off")
            terms[name] = weight * self.term(name, inputs)
        if not terms:
            raise ValueError("every loss term is switched off")
        total = torch.stack(list(terms.values())).sum()
        return total, terms

    def term(self, name: str, x: dict) -> torch.Tensor:
        if name == "photo":
            return photometric_loss(x["pred_image"], x["target_image"], x["face_mask"], x.get("attention"))
        if name == "landmark":
            w = x.get("lm_weights")
            return landmark_loss(x["pred_lm"], x["gt_lm"], self.landmark_weights if w is None else w)
        if name == "perceptual":
            return perceptual_loss(x["emb_pred"], x["emb_target"])
        if name == "reg":
            return coefficient_regulariser(x["alpha"], x["beta"], x.get("delta"), **self.reg_weights)
        if name == "texture":
            return texture_flatten_loss(x["albedo"], x["skin_mask"])
        if name == "lighting":
            return lighting_loss(x["gamma"])
        if name == "sparsity":
            return sparsity_loss(x["beta"])
        raise KeyError(name)
