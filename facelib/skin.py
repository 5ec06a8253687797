"""Naive-Bayes skin classifier with Gaussian-mixture class densities (Jones & Rehg 2002 style).

P(skin | c) = p(c | skin) P(skin) / (p(c | skin) P(skin) + p(c | bg) P(bg)), with p(c | ·) a Gaussian mixture
(full covariances) over the colour feature c of a pixel:

- ``space="rgb"``: c = (R, G, B) in 0–255 (the default; Jones & Rehg's mixtures are in RGB);
- ``space="rg"``: normalised chromaticity c = (R, G) / (R + G + B + 1e-6) (2-D, more robust to shading).

Images are RGB (H, W, 3), uint8 0–255 or float 0–1 (floats ≤ 1.0 are scaled by 255). Convert OpenCV's BGR
first. Deng et al. 2019 turn the probability into the photometric attention A = 1 where P > 0.5, else P
(:meth:`SkinModel.attention`).

Fitting uses ``sklearn.mixture.GaussianMixture``; evaluation and save/load (.npz) need only numpy.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

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
        from sklearn.mixture import GaussianMixture

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
