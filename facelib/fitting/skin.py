"""Naive-Bayes skin classifier with Gaussian-mixture class densities (Jones & Rehg 2002 style).

P(skin | c) = p(c | skin) P(skin) / (p(c | skin) P(skin) + p(c | bg) P(bg)), with p(c | ·) a Gaussian mixture
(full covariances) over the colour feature c of a pixel:

- ``space="rgb"``: c = (R, G, B) in 0–255 (the default; Jones & Rehg's mixtures are in RGB);
- ``space="rg"``: normalised chromaticity c = (R, G) / (R + G + B + 1e-6) (2-D, more robust to shading).

Images are RGB (H, W, 3), uint8 0–255 or float 0–1 (floats ≤ 1.0 are scaled by 255). Convert OpenCV's BGR
first. Deng et al. 2019 turn the probability into the photometric attention A = 1 where P > 0.5, else P
(:meth:`SkinModel.attention`).

Fitting uses ``sklearn.mixture.GaussianMixture``; evaluation and save/load (.npz) need only numpy.

Training for the photometric attention (:func:`train_skin_model`): RGB GMMs, 4 components per class, on pixels of
training images labelled by the backend's landmarks: *skin* = inside the face outline (jaw 0–16 and the brows
17–26 lifted by 10 % of the face height) minus the eyes, brows and mouth polygons (dilated); *background* = outside
the outline dilated by 25 % of the face size, except the neck (below the jaw, between the jaw's ends). The model
is cached as ``<cache>/fitting/skin_<key>.npz`` (key: the training images' sha256s and the settings).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from scipy.io import loadmat
from sklearn.mixture import GaussianMixture

from .. import assets, config
from ..face3d.cameras import landmarks_136_to_68
from ..face3d.morphable import MorphableModel
from ..face3d.reconstruct import read_image

SPACES = ("rgb", "rg")


def features(pixels, space: str = "rgb") -> np.ndarray:
    """(…, 3) RGB pixels (uint8 0–255 or float 0–1) → (M, d) float64 feature rows."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    p = np.asarray(pixels)
    if p.shape[-1] != 3:
        raise ValueError(f"expected RGB pixels (..., 3), got {p.shape}")
    p = p.reshape(-1, 3).astype(np.float64)
    if not np.issubdtype(np.asarray(pixels).dtype, np.integer) and p.size and p.max() <= 1.0:
        p = p * 255.0
    if space == "rg":
        s = p.sum(axis=1, keepdims=True) + 1e-6
        return p[:, :2] / s
    return p


class _GMM:
    """Log-density of a full-covariance Gaussian mixture from its parameters (numpy only)."""

    def __init__(self, weights, means, covariances):
        self.weights = np.asarray(weights, dtype=np.float64)
        self.means = np.asarray(means, dtype=np.float64)
        self.covariances = np.asarray(covariances, dtype=np.float64)
        d = self.means.shape[1]
        self._prec_chol = []
        self._log_norm = []
        for k in range(self.weights.size):
            L = np.linalg.cholesky(self.covariances[k])
            Linv = np.linalg.inv(L)
            self._prec_chol.append(Linv)
            self._log_norm.append(np.log(self.weights[k]) - 0.5 * d * np.log(2 * np.pi) - np.log(np.diag(L)).sum())

    def log_density(self, x: np.ndarray) -> np.ndarray:
        comps = np.empty((x.shape[0], self.weights.size))
        for k in range(self.weights.size):
            y = (x - self.means[k]) @ self._prec_chol[k].T
            comps[:, k] = self._log_norm[k] - 0.5 * np.einsum("ij,ij->i", y, y)
        mx = comps.max(axis=1, keepdims=True)
        return (mx + np.log(np.exp(comps - mx).sum(axis=1, keepdims=True)))[:, 0]


class SkinModel:
    """Skin vs non-skin Gaussian mixtures. ``fit`` → ``probability(image)`` (H, W) in [0, 1]; ``save``/``load``."""

    def __init__(self, skin: _GMM | None = None, bg: _GMM | None = None, prior_skin: float = 0.5,
                 space: str = "rgb"):
        if space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {space!r}")
        self.skin, self.bg, self.prior_skin, self.space = skin, bg, float(prior_skin), space

    @property
    def fitted(self) -> bool:
        return self.skin is not None and self.bg is not None

    def fit(self, skin_pixels, bg_pixels, n_components: int = 8, prior_skin: float | None = None,
            max_samples: int = 200_000, seed: int = 0) -> "SkinModel":
        """Fit both mixtures. pixels (…, 3) RGB; ``prior_skin`` None → the skin fraction of the samples given;
        at most ``max_samples`` pixels per class are used (random subset)."""
        rng = np.random.default_rng(seed)
        models = []
        counts = []
        for px in (skin_pixels, bg_pixels):
            x = features(px, self.space)
            counts.append(len(x))
            if len(x) > max_samples:
                x = x[rng.choice(len(x), max_samples, replace=False)]
            k = max(1, min(n_components, len(x) // 10))
            g = GaussianMixture(n_components=k, covariance_type="full", reg_covar=1e-3 if self.space == "rgb" else 1e-6,
                                random_state=seed, max_iter=200).fit(x)
            models.append(_GMM(g.weights_, g.means_, g.covariances_))
        self.skin, self.bg = models
        self.prior_skin = counts[0] / sum(counts) if prior_skin is None else float(prior_skin)
        return self

    def log_likelihood_ratio(self, pixels) -> np.ndarray:
        """log p(c|skin) − log p(c|bg) per pixel, flattened (M,)."""
        if not self.fitted:
            raise RuntimeError("SkinModel is not fitted")
        x = features(pixels, self.space)
        return self.skin.log_density(x) - self.bg.log_density(x)

    def probability(self, image) -> np.ndarray:
        """Posterior P(skin | pixel colour), shape of ``image`` without the channel axis (e.g. (H, W))."""
        img = np.asarray(image)
        if img.dtype == np.uint8 and img.size >= 3 * 4096:  # evaluate each distinct colour once
            flat = img.reshape(-1, 3).astype(np.int32)
            codes, inverse = np.unique((flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2], return_inverse=True)
            colours = np.stack([codes >> 16, (codes >> 8) & 255, codes & 255], axis=1).astype(np.uint8)
            llr = self.log_likelihood_ratio(colours)[inverse.reshape(-1)]
        else:
            llr = self.log_likelihood_ratio(img)
        logit = llr + np.log(self.prior_skin) - np.log1p(-self.prior_skin)
        prob = 1.0 / (1.0 + np.exp(-np.clip(logit, -60, 60)))
        return prob.reshape(img.shape[:-1]).astype(np.float32)

    def attention(self, image) -> np.ndarray:
        """Deng et al.'s photometric attention: 1 where P(skin) > 0.5, else P(skin)."""
        p = self.probability(image)
        return np.where(p > 0.5, 1.0, p).astype(np.float32)

    # ---------------------------------------------------------------------- persistence
    def fingerprint(self) -> str:
        """sha256 of the mixture parameters: two skin models that weigh pixels differently never share a key."""
        h = hashlib.sha256(f"{self.space}|{self.prior_skin!r}".encode())
        for gmm in (self.skin, self.bg):
            for arr in ((gmm.weights, gmm.means, gmm.covariances) if gmm is not None else ()):
                h.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
        return h.hexdigest()[:16]

    def save(self, path) -> Path:
        if not self.fitted:
            raise RuntimeError("SkinModel is not fitted")
        path = Path(path)
        if path.suffix != ".npz":  # np.savez would append it
            path = path.with_name(path.name + ".npz")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, space=np.array(self.space), prior_skin=np.array(self.prior_skin),
                 skin_weights=self.skin.weights, skin_means=self.skin.means, skin_covariances=self.skin.covariances,
                 bg_weights=self.bg.weights, bg_means=self.bg.means, bg_covariances=self.bg.covariances)
        return path

    @classmethod
    def load(cls, path) -> "SkinModel":
        with np.load(Path(path), allow_pickle=False) as z:
            skin = _GMM(z["skin_weights"], z["skin_means"], z["skin_covariances"])
            bg = _GMM(z["bg_weights"], z["bg_means"], z["bg_covariances"])
            return cls(skin, bg, float(z["prior_skin"]), str(z["space"]))


# ----------------------------------------------------------------------------------------------- training
def face_regions(shape_hw, lm68: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(skin, background) boolean masks of an image from 68 landmarks (see the module docstring)."""
    h, w = shape_hw
    lm = np.asarray(lm68, np.float64)
    jaw, brows = lm[0:17], lm[17:27]
    face_h = max(lm[:, 1].max() - lm[:, 1].min(), 1.0)
    face_w = max(lm[:, 0].max() - lm[:, 0].min(), 1.0)
    lifted = brows.copy()
    lifted[:, 1] -= 0.10 * face_h
    outline = np.concatenate([jaw, lifted[::-1]]).astype(np.int32)
    skin = np.zeros((h, w), np.uint8)
    cv2.fillPoly(skin, [cv2.convexHull(outline)], 1)
    holes = np.zeros((h, w), np.uint8)
    for part in (lm[36:42], lm[42:48], lm[48:60], lm[17:22], lm[22:27]):
        cv2.fillPoly(holes, [cv2.convexHull(part.astype(np.int32))], 1)
    k = max(3, int(0.06 * face_w)) | 1
    holes = cv2.dilate(holes, np.ones((k, k), np.uint8))
    skin_m = (skin > 0) & (holes == 0)
    k2 = max(3, int(0.25 * max(face_w, face_h))) | 1
    grown = cv2.dilate(skin, np.ones((k2, k2), np.uint8)) > 0
    bg = ~grown
    neck = np.zeros((h, w), bool)
    x0, x1 = int(max(0, jaw[:, 0].min())), int(min(w, jaw[:, 0].max()))
    neck[int(max(0, jaw[:, 1].max())):, x0:x1] = True
    return skin_m, bg & ~neck


def train_skin_model(images_bgr: list[np.ndarray], landmarks68: list[np.ndarray], n_components: int = 4,
                     per_image: int = 4000, seed: int = 0):
    """Fit a :class:`facelib.skin.SkinModel` on landmark-labelled face / background pixels of training images."""
    rng = np.random.default_rng(seed)
    skin_px, bg_px = [], []
    for img, lm in zip(images_bgr, landmarks68):
        s, b = face_regions(img.shape[:2], lm)
        rgb = img[:, :, ::-1].reshape(-1, 3)
        for mask, out in ((s, skin_px), (b, bg_px)):
            idx = np.flatnonzero(mask.reshape(-1))
            if len(idx):
                out.append(rgb[rng.choice(idx, min(per_image, len(idx)), replace=False)])
    if not skin_px or not bg_px:
        raise ValueError("no skin or background pixels to train the skin model on")
    return SkinModel(space="rgb").fit(np.concatenate(skin_px), np.concatenate(bg_px), n_components=n_components,
                                      prior_skin=0.5, seed=seed)


def skin_model_for_table(table: pd.DataFrame, max_images: int = 60, cache_dir=None, seed: int = 0):
    """Train (or load from the cache) the skin model on up to ``max_images`` ok rows of a coefficient table."""
    ok = table[table["status"] == "ok"]
    ok = ok.sample(min(max_images, len(ok)), random_state=seed) if len(ok) > max_images else ok
    key = hashlib.sha256(json.dumps({"v": 1, "sha": sorted(map(str, ok["sha256"])), "seed": seed}).encode())
    path = Path(cache_dir or config.cache_dir() / "fitting") / f"skin_{key.hexdigest()[:16]}.npz"
    if path.is_file():
        return SkinModel.load(path)
    imgs, lms = [], []
    for _, row in ok.iterrows():
        img = read_image(row["path"])
        if img is not None:
            imgs.append(img)
            lms.append(landmarks_136_to_68(row["landmarks"]))
    model = train_skin_model(imgs, lms, seed=seed)
    model.save(path)
    return model


def skin_vertex_mask(model: MorphableModel, assets_dir=None) -> torch.Tensor:
    """(N,) 0/1 skin vertices of a 53215-vertex 3DDFA model: Deep3D's ``skinmask`` (facemodel_info.mat, over the
    35709 front vertices) mapped through ``BFM_front_idx.mat``; all vertices when those files are absent."""
    try:
        info = loadmat(str(assets.resolve("facemodel_info", assets_dir)))
        idx = loadmat(str(assets.resolve("bfm_front_idx", assets_dir)))["idx"].astype(np.int64).reshape(-1) - 1
        skin = info["skinmask"].astype(np.float32).reshape(-1)
        if idx.max() >= model.n_vertices or len(idx) != len(skin):
            raise ValueError("front index does not fit this model")
        m = np.zeros(model.n_vertices, np.float32)
        m[idx] = skin
        return torch.from_numpy(m).to(model.device)
    except Exception:  # noqa: BLE001 - optional assets; the whole mesh is a usable fallback
        return torch.ones(model.n_vertices, device=model.device)

