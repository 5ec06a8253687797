"""A per-vertex albedo (texture) basis for the 3DDFA BFM model, learnt from photographs.

3DDFA's BFM bases (``MorphableModel.from_3ddfa``) have no texture basis. We build one from data:

1. *Fit* (``facelib.fitting.fitter``, full mode, no texture basis: grey albedo with a per-image RGB gain) the frontal
   training images (KDEF angle ``S``), starting from the tddfa coefficients.
2. *Sample* each image at the projected vertices of the fitted mesh (bilinear, full image resolution). A vertex
   counts as observed when it is on the no-neck mesh, faces the camera (posed normal z > ``min_facing``) and is not
   hidden (its depth is within ``depth_tol`` crop pixels of the z-buffer at its pixel).
3. *De-light*: albedo = colour / irradiance, the irradiance of the fitted SH lighting γ at the posed normal
   (``render.sh_shading(..., return_irradiance=True)``; irradiance clamped ≥ 0.05).
4. *Keep well-fitted images*: those whose final photometric loss is at most the ``keep_quantile`` (0.8) quantile.
5. *PCA*: unobserved entries are filled with the vertex's mean over the images that observe it (vertices nobody
   observes: the mean albedo of all observed vertices); mean + top-k principal directions (k ≤ 80 and
   ≤ n_images − 1) with each direction scaled by its standard deviation (singular value / √(n − 1)), so texture
   coefficients δ are unit-variance like BFM's texPC·texEV and Deep3D's regulariser weight w_tex applies.

The basis is stored as .npz (``save_texture_basis``): ``mean`` (N, 3) and ``basis`` (3N, k) in RGB 0–255 (the unit
``MorphableModel.texture`` divides by 255), ``sigma`` (k,), ``observed`` (N,) fraction of images observing each vertex,
``explained`` (k,) variance ratios, and ``provenance`` (JSON: images, their sha256s, fit settings, asset checksums).
:func:`with_texture` returns a copy of a model carrying the basis (the ``MorphableModel`` constructor takes
``tex_mean``/``tex_basis``).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..face3d.morphable import MorphableModel
from ..io import atomic_path

MAX_K = 80


# ----------------------------------------------------------------------------------------------- model
def with_texture(model: MorphableModel, basis: dict) -> MorphableModel:
    """A new ``MorphableModel`` = ``model`` + the texture basis (``basis`` from :func:`load_texture_basis` /
    :func:`build_texture_basis`)."""
    n = model.n_vertices
    mean = np.asarray(basis["mean"], np.float32).reshape(n, 3)
    tb = np.asarray(basis["basis"], np.float32).reshape(3 * n, -1)
    dev = model.device
    new = MorphableModel(source=model.source, layout=model.layout, mean_shape=model.mean_shape.cpu().numpy(),
                         id_basis=model.id_basis_t.cpu().numpy().T, exp_basis=model.exp_basis_t.cpu().numpy().T,
                         triangles=model.triangles.cpu().numpy(), keypoint_ids=model.keypoint_ids.cpu().numpy(),
                         tex_mean=mean, tex_basis=tb,
                         point_buf=None if model.point_buf is None else model.point_buf.cpu().numpy(),
                         units=model.units, extras={k: v.cpu().numpy() for k, v in model.extras.items()},
                         provenance={**model.provenance, "texture": basis.get("provenance", {})}, device=dev)
    return new


# ----------------------------------------------------------------------------------------------- sampling
def bilinear(img: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Sample an (H, W, 3) float image at (M, 2) pixel positions (x = column, centres at integers; clamped)."""
    h, w = img.shape[:2]
    x = np.clip(np.asarray(xy[:, 0], np.float64), 0, w - 1)
    y = np.clip(np.asarray(xy[:, 1], np.float64), 0, h - 1)
    x0 = np.minimum(np.floor(x).astype(np.int64), w - 2)
    y0 = np.minimum(np.floor(y).astype(np.int64), h - 2)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    return ((img[y0, x0] * (1 - fx) + img[y0, x0 + 1] * fx) * (1 - fy)
            + (img[y0 + 1, x0] * (1 - fx) + img[y0 + 1, x0 + 1] * fx) * fy).astype(np.float32)


# ----------------------------------------------------------------------------------------------- PCA
def build_texture_basis(albedos: np.ndarray, k: int = MAX_K, provenance: dict | None = None) -> dict:
    """PCA of per-vertex albedos (n, N, 3) RGB 0–1 with NaN = unobserved → basis dict (see module docstring)."""
    a = np.asarray(albedos, np.float64)
    n, N, _ = a.shape
    if n < 2:
        raise ValueError("need at least 2 images for a texture basis")
    k = int(min(k, MAX_K, n - 1))
    obs = np.isfinite(a).all(axis=2)                                       # (n, N)
    cnt = obs.sum(0)
    vmean = np.where(cnt[:, None] > 0, np.nansum(np.where(obs[..., None], a, 0), 0) / np.maximum(cnt, 1)[:, None],
                     np.nan)
    seen = cnt > 0
    fill = vmean[seen].mean(0) if seen.any() else np.full(3, 0.6)
    vmean[~seen] = fill
    X = np.where(obs[..., None], a, vmean[None]).reshape(n, 3 * N)
    mu = X.mean(0)
    U, s, Vt = np.linalg.svd(X - mu, full_matrices=False)
    sigma = s[:k] / np.sqrt(n - 1)
    basis = (Vt[:k].T * sigma) * 255.0                                    # (3N, k), unit-variance coefficients
    var = s ** 2
    return {"mean": (mu.reshape(N, 3) * 255.0).astype(np.float32), "basis": basis.astype(np.float32),
            "sigma": sigma.astype(np.float32), "observed": (cnt / n).astype(np.float32),
            "explained": (var[:k] / var.sum()).astype(np.float32), "provenance": dict(provenance or {})}


def project(basis: dict, albedos: np.ndarray, k: int | None = None) -> np.ndarray:
    """Least-squares texture coefficients (n, k) of albedos (n, N, 3) RGB 0–1 (NaN entries ignored → filled with
    the mean) on the first ``k`` components."""
    a = np.asarray(albedos, np.float64)
    n, N, _ = a.shape
    mu = basis["mean"].reshape(-1).astype(np.float64) / 255.0
    B = basis["basis"].astype(np.float64) / 255.0
    k = B.shape[1] if k is None else int(k)
    x = a.reshape(n, -1)
    x = np.where(np.isfinite(x), x, mu)
    return (x - mu) @ np.linalg.pinv(B[:, :k]).T


def reconstruction_error(basis: dict, albedos: np.ndarray, k: int) -> float:
    """RMS error (RGB 0–1) over the observed entries of albedos reconstructed with the first ``k`` components."""
    a = np.asarray(albedos, np.float64)
    n = a.shape[0]
    mu = basis["mean"].reshape(-1).astype(np.float64) / 255.0
    B = basis["basis"].astype(np.float64)[:, :k] / 255.0
    x = a.reshape(n, -1)
    ok = np.isfinite(x)
    xf = np.where(ok, x, mu)
    rec = mu + (xf - mu) @ np.linalg.pinv(B).T @ B.T if k > 0 else np.broadcast_to(mu, xf.shape)
    return float(np.sqrt(((rec - xf)[ok] ** 2).mean()))


# ----------------------------------------------------------------------------------------------- persistence
def save_texture_basis(path, basis: dict) -> Path:
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, mean=basis["mean"], basis=basis["basis"], sigma=basis["sigma"],
                            observed=basis["observed"], explained=basis["explained"],
                            provenance=np.array(json.dumps(basis.get("provenance", {}), sort_keys=True, default=str)))
    return path


def load_texture_basis(path) -> dict:
    with np.load(Path(path), allow_pickle=False) as z:
        out = {k: z[k] for k in ("mean", "basis", "sigma", "observed", "explained")}
        out["provenance"] = json.loads(str(z["provenance"]))
    return out
