"""Per-image analysis-by-synthesis fitting of the 3DDFA-space morphable model, started from a backend's coefficients.

Two modes (``Fitter.fit`` / :func:`fit_table`):

``mode="landmarks"`` (fast, no rendering)
    Only the 68 keypoint vertices are computed. Loss = Deng et al.'s landmark term (Deep3D's per-landmark weights,
    :func:`facelib.losses.deep3d_landmark_weights`) against target landmarks (dlib's 68 points by default) + the
    coefficient regulariser. Optimised: α, β, pose.

``mode="full"``
    The face (3DDFA_V2's 38365-vertex no-neck mesh) is rendered into the backend's crop with the 3DDFA
    scaled-orthographic camera (the ``roi`` crop, resampled to ``image_size``², default 160) with
    :func:`facelib.render.sh_shading` lighting; loss = photometric (skin attention from a :class:`SkinModel`)
    + landmark + regulariser + texture flattening + lighting prior (+ perceptual when an ``embedder`` is given).
    Optimised: α, β, pose, γ (27 SH coefficients, Deep3D layout) and the texture coefficients δ when the model has a
    texture basis (:mod:`facelib.texture`); without one, a per-image RGB albedo gain on the constant grey albedo.

Every term is switched and weighted by a :class:`facelib.losses.HybridLoss` weights dict (0 = off); the
defaults are the paper's (Deep3DFaceRecon) weights. Conventions that make those weights meaningful here:

- *Whitened coefficients*: 3DDFA's α/β are in raw basis units (α ~ 1e5). The regulariser (and the optimiser) work on
  z = coefficient / σ with σ the per-coefficient standard deviation of 3DDFA's training parameters
  (``param_mean_std_62d_120x120.pkl``), i.e. the unit-variance coefficients Deep3D's weights were tuned for.
  The prior pulls towards z = 0, the BFM mean face.
- *Landmark units*: the landmark term is measured in pixels of a 224-pixel version of the crop (Deep3D's image
  size; the 3DDFA crop frames the face much as Deep3D's 224 alignment does).
- *Pose*: [sR|t] = [e^{ds}·M₀·Rot(ω) | t₀ + dt]; optimised are ds, the axis-angle ω (model space) and dt (pixels of
  the 120 crop), all starting at 0, so the backend's pose is the start.
- *Camera*: ``MorphableModel.ortho_project_3ddfa`` (crop frame x = p_x − 1, y = 120 − p_y), scaled to the
  ``image_size`` grid with cv2's pixel-centre convention; the rasteriser depth is −p_z. Normals for shading are
  those of the posed mesh p = sR·v (y up, z towards the viewer, as Deep3D's camera space), so γ means what it means
  in Deep3D.

Target landmarks (:func:`fit_table`): dlib's 68-point predictor placed by dlib's own HOG detector on the backend's
crop (:class:`DlibTargets`). Where HOG finds no face or the backend's yaw exceeds 60° (KDEF's full profiles), the
backend's own landmarks are the target (so the landmark term starts at 0 there and only the other terms act);
``fit_losses["_target"]`` records which. The 3DDFA landmarks are 3-D-consistent (jaw points on the hidden side)
while dlib's contour follows the visible silhouette; on half profiles the two disagree by 15–30 px on the jaw.

Speed (2 CPU cores): the z-buffer pass dominates full mode, so visibility is refreshed every ``refresh`` (4)
iterations and reused in between with barycentrics of the current geometry (``Fitter.fit``).

Skin attention: :func:`train_skin_model` fits :class:`facelib.skin.SkinModel` (RGB GMMs, 4 components per class)
on pixels of training images labelled by the backend's landmarks: *skin* = inside the face outline (jaw 0–16 and the
brows 17–26 lifted by 10 % of the face height) minus the eyes, brows and mouth polygons (dilated); *background* =
outside the outline dilated by 25 % of the face size, except the neck (below the jaw, between the jaw's ends). The
model is cached as ``<cache>/fitting/skin_<key>.npz`` (key: the training images' sha256s and the settings).
"""
from __future__ import annotations

import hashlib
import json
import pickle
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping

import cv2
import numpy as np
import pandas as pd
import torch

from . import config
from .losses import DEFAULT_WEIGHTS, HybridLoss, deep3d_landmark_weights
from .morphable import GREY, MorphableModel
from .render import _barycentric, interpolate, rasterize, sh_shading

MODES = ("landmarks", "full")
TDDFA_SIZE = 120
LM_SCALE = 224.0  # landmark loss measured in pixels of a 224-pixel crop (Deep3D's image size)
DEFAULT_ITERATIONS = {"landmarks": 60, "full": 40}
DEFAULT_LR = {"alpha": 0.05, "beta": 0.05, "ds": 0.005, "omega": 0.005, "dt": 0.2, "gamma": 0.03,
              "texture": 0.05, "gain": 0.02}
FIT_VERSION = 2


# ----------------------------------------------------------------------------------------------- model pieces
def restrict_model(model: MorphableModel, vertex_ids, triangles=None) -> MorphableModel:
    """A ``MorphableModel`` over a vertex subset (same layout/source); triangles default to those of ``model``
    whose three vertices are all in the subset (re-indexed). Keypoints missing from the subset raise."""
    ids = torch.as_tensor(np.asarray(vertex_ids), dtype=torch.int64)
    n = model.n_vertices
    remap = -np.ones(n, dtype=np.int64)
    remap[ids.numpy()] = np.arange(len(ids))
    kp = remap[model.keypoint_ids.cpu().numpy()]
    if (kp < 0).any():
        raise ValueError("the vertex subset lacks some of the 68 keypoints")
    if triangles is None:
        t = remap[model.triangles.cpu().numpy()]
        triangles = t[(t >= 0).all(axis=1)]
    rows = torch.stack([3 * ids, 3 * ids + 1, 3 * ids + 2], 1).reshape(-1)
    tex_mean = tex_basis = None
    if model.tex_basis_t is not None:
        tex_mean = model.tex_mean.cpu()[ids].numpy()
        tex_basis = model.tex_basis_t.cpu()[:, rows].T.numpy()
    sub = MorphableModel(source=model.source, layout=model.layout, mean_shape=model.mean_shape.cpu()[ids].numpy(),
                         id_basis=model.id_basis_t.cpu()[:, rows].T.numpy(),
                         exp_basis=model.exp_basis_t.cpu()[:, rows].T.numpy(), triangles=triangles,
                         keypoint_ids=kp, tex_mean=tex_mean, tex_basis=tex_basis, units=model.units,
                         provenance=model.provenance, device=model.device)
    sub.extras["parent_ids"] = ids.to(model.device)
    return sub


def coefficient_sigma(assets_folder=None) -> tuple[np.ndarray, np.ndarray]:
    """(σ_α (40,), σ_β (10,)): standard deviations of 3DDFA's training parameters (whitening of α, β)."""
    from . import assets

    with open(assets.resolve("param_mean_std", assets_folder), "rb") as fh:
        std = np.asarray(pickle.load(fh)["std"], dtype=np.float32).reshape(-1)
    return std[12:52].copy(), std[52:62].copy()


def skin_vertex_mask(model: MorphableModel, assets_folder=None) -> torch.Tensor:
    """(N,) 0/1 skin vertices of a 53215-vertex 3DDFA model: Deep3D's ``skinmask`` (facemodel_info.mat, over the
    35709 front vertices) mapped through ``BFM_front_idx.mat``; all vertices when those files are absent."""
    try:
        from scipy.io import loadmat

        from . import assets

        info = loadmat(str(assets.resolve("facemodel_info", assets_folder)))
        idx = loadmat(str(assets.resolve("bfm_front_idx", assets_folder)))["idx"].astype(np.int64).reshape(-1) - 1
        skin = info["skinmask"].astype(np.float32).reshape(-1)
        if idx.max() >= model.n_vertices or len(idx) != len(skin):
            raise ValueError("front index does not fit this model")
        m = np.zeros(model.n_vertices, np.float32)
        m[idx] = skin
        return torch.from_numpy(m).to(model.device)
    except Exception:  # noqa: BLE001 - optional assets; the whole mesh is a usable fallback
        return torch.ones(model.n_vertices, device=model.device)


# ----------------------------------------------------------------------------------------------- crops
def crop_rgb(image_bgr: np.ndarray, roi, size: int) -> np.ndarray:
    """The 3DDFA crop ``roi`` (sx, sy, ex, ey) of a BGR image, resized to size², RGB float32 0–1 (H, W, 3)."""
    from .tddfa import crop_image

    crop = crop_image(image_bgr if image_bgr.ndim == 3 else cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR), roi)
    interp = cv2.INTER_AREA if crop.shape[0] > size else cv2.INTER_LINEAR
    crop = cv2.resize(crop, (size, size), interpolation=interp)
    return np.ascontiguousarray(crop[:, :, ::-1]).astype(np.float32) / 255.0


def image_to_crop(points, roi, size: int) -> np.ndarray:
    """Image pixel coordinates (…, 2) → pixel coordinates of the size² crop of ``roi`` (cv2 pixel centres)."""
    roi = np.asarray(roi, np.float64)
    side = np.stack([roi[..., 2] - roi[..., 0], roi[..., 3] - roi[..., 1]], -1)
    p = np.asarray(points, np.float64)
    return (p - roi[..., None, :2]) * (size / side[..., None, :]) + 0.5 * size / side[..., None, :] - 0.5


def crop_to_image(points, roi, size: int) -> np.ndarray:
    """Inverse of :func:`image_to_crop`."""
    roi = np.asarray(roi, np.float64)
    side = np.stack([roi[..., 2] - roi[..., 0], roi[..., 3] - roi[..., 1]], -1)
    p = np.asarray(points, np.float64)
    return (p + 0.5 - 0.5 * size / side[..., None, :]) * (side[..., None, :] / size) + roi[..., None, :2]


def landmarks_136_to_68(row) -> np.ndarray:
    v = np.asarray(row, np.float32).reshape(-1)
    return np.stack([v[:68], v[68:]], axis=1)


# ----------------------------------------------------------------------------------------------- skin model
def _face_regions(shape_hw, lm68: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
    from .skin import SkinModel

    rng = np.random.default_rng(seed)
    skin_px, bg_px = [], []
    for img, lm in zip(images_bgr, landmarks68):
        s, b = _face_regions(img.shape[:2], lm)
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
    from .reconstruct import read_image
    from .skin import SkinModel

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


# ----------------------------------------------------------------------------------------------- results
@dataclass
class FitResult:
    """Fitted coefficients (numpy, one row per image) and the loss history.

    ``history[term]`` (iterations + 1,) batch-mean weighted value before each step and after the last;
    ``terms_first`` / ``terms_last``: per-image weighted term values (B,) at the start and the end;
    ``landmarks``: (B, 68, 2) fitted model landmarks in crop pixels; ``render`` (B, H, W, 3) and ``mask`` (B, H, W)
    of the final rendering (full mode).
    """

    alpha: np.ndarray
    beta: np.ndarray
    pose: np.ndarray
    gamma: np.ndarray | None
    texture: np.ndarray | None
    history: dict[str, np.ndarray]
    terms_first: dict[str, np.ndarray]
    terms_last: dict[str, np.ndarray]
    landmarks: np.ndarray
    render: np.ndarray | None = None
    mask: np.ndarray | None = None
    seconds: float = 0.0
    info: dict = field(default_factory=dict)
    history_per_image: dict[str, np.ndarray] = field(default_factory=dict)


def _axis_angle(omega: torch.Tensor) -> torch.Tensor:
    """(B, 3) axis-angle → (B, 3, 3) rotation (Rodrigues; smooth at 0)."""
    theta2 = (omega ** 2).sum(-1, keepdim=True).unsqueeze(-1)
    theta = torch.sqrt(theta2 + 1e-12)
    B = omega.shape[0]
    K = torch.zeros(B, 3, 3, dtype=omega.dtype, device=omega.device)
    K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -omega[:, 2], omega[:, 1], -omega[:, 0]
    K[:, 1, 0], K[:, 2, 0], K[:, 2, 1] = omega[:, 2], -omega[:, 1], omega[:, 0]
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device).expand(B, 3, 3)
    return eye + torch.sin(theta) / theta * K + (1 - torch.cos(theta)) / theta2.clamp_min(1e-12) * (K @ K)


# ----------------------------------------------------------------------------------------------- fitter
class Fitter:
    """Batched analysis-by-synthesis fitting on one device.

    ``model``: a 53215-vertex 3DDFA-layout :class:`MorphableModel` (default ``from_3ddfa``), optionally with a
    texture basis (:func:`facelib.texture.with_texture`). ``skin_model``: :class:`facelib.skin.SkinModel` or None
    (attention = 1). ``embedder``: callable (B, 3, H, W) RGB 0–1 → (B, D) embeddings for the perceptual term (None
    switches the term off).
    """

    def __init__(self, model: MorphableModel | None = None, device: str | None = None, assets_folder=None,
                 skin_model=None, embedder: Callable | None = None, image_size: int = 160):
        self.device = torch.device(config.resolve_device(device))
        if model is None:
            model = MorphableModel.from_3ddfa(assets_folder, device=self.device)
        if model.layout != "3ddfa":
            raise ValueError("Fitter works in 3DDFA's parameter space (layout '3ddfa')")
        model = model.to(self.device)
        self.model = model
        noneck = model.extras.get("noneck_ids")
        ids = noneck if noneck is not None else torch.arange(model.n_vertices)
        self.mesh = restrict_model(model, ids.cpu().numpy())
        self.kp = restrict_model(model, model.keypoint_ids.cpu().numpy(), triangles=np.array([[0, 1, 2]]))
        sa, sb = coefficient_sigma(assets_folder)
        self.sigma_alpha = torch.from_numpy(sa).to(self.device)
        self.sigma_beta = torch.from_numpy(sb).to(self.device)
        self.skin_vertices = skin_vertex_mask(model, assets_folder)[self.mesh.extras["parent_ids"]]
        self.landmark_weights = deep3d_landmark_weights(self.device)
        self.skin_model = skin_model
        self.embedder = embedder
        self.image_size = int(image_size)

    # -------------------------------------------------------------- geometry
    def _pose(self, pose0: torch.Tensor, ds, omega, dt) -> torch.Tensor:
        P = pose0.reshape(-1, 3, 4)
        M = torch.exp(ds).view(-1, 1, 1) * (P[:, :, :3] @ _axis_angle(omega))
        t = P[:, :, 3] + torch.cat([dt, torch.zeros_like(dt[:, :1])], 1) * torch.tensor(
            [1.0, -1.0, 1.0], device=dt.device)  # dt is (x right, y down) in crop pixels; p_y points up
        return torch.cat([M, t.unsqueeze(-1)], 2)

    def _posed(self, sub: MorphableModel, alpha, beta, pose) -> torch.Tensor:
        """p = sR·v + t (B, N, 3), 3DDFA's frame before the crop mapping (y up, z towards the viewer)."""
        v = sub.shape(alpha, beta)
        return v @ pose[:, :, :3].transpose(1, 2) + pose[:, None, :, 3]

    def _screen(self, p: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """3DDFA crop frame → pixel coordinates of the image_size² crop, depth −p_z."""
        S = self.image_size
        side = (rois[:, 2] - rois[:, 0] + rois[:, 3] - rois[:, 1]) / 2
        off = (0.5 * S / side - 0.5).view(-1, 1)
        x = (p[..., 0] - 1) * (S / TDDFA_SIZE) + off
        y = (TDDFA_SIZE - p[..., 1]) * (S / TDDFA_SIZE) + off
        return torch.stack([x, y, -p[..., 2]], -1)

    # -------------------------------------------------------------- fitting
    def fit(self, init: Mapping[str, np.ndarray], rois, target_lm=None, images=None, mode: str = "landmarks",
            iterations: int | None = None, weights: Mapping[str, float | None] | None = None,
            optimize: tuple[str, ...] | None = None, lr: Mapping[str, float] | None = None,
            keep_render: bool = False, refresh: int = 4, per_image_history: bool = False) -> FitResult:
        """Fit a batch.

        init: ``alpha`` (B, 40), ``beta`` (B, 10), ``pose`` (B, 12) — the backend's coefficients (optionally
        ``gamma`` (B, 27), ``texture`` (B, n_tex) to continue a fit). rois (B, 4): the backend's crop boxes.
        target_lm (B, 68, 2): target landmarks in *crop* pixels (``image_to_crop``), required when the landmark term
        is on. images (B, S, S, 3) RGB 0–1 crops (``crop_rgb``) for full mode. ``optimize``: subset of
        ``alpha beta pose gamma texture`` (default all that the mode uses). ``weights``: HybridLoss weights (0 = off).
        ``refresh``: full mode re-rasterises (visibility: which triangle covers which pixel) every ``refresh``
        iterations and reuses it in between with the barycentrics of the current geometry (the z-buffer pass is
        ~75 % of an iteration on CPU); 1 = exact every iteration. The first and last evaluations are always exact.
        ``per_image_history``: also record every term for every image at every iteration
        (``FitResult.history_per_image[term]`` (iterations + 1, B)).
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        t_start = time.perf_counter()
        dev = self.device
        iterations = DEFAULT_ITERATIONS[mode] if iterations is None else int(iterations)
        w = dict(DEFAULT_WEIGHTS)
        if mode == "landmarks":
            w.update(photo=0, perceptual=0, texture=0, lighting=0)
        if self.embedder is None:
            w["perceptual"] = 0
        w.update(weights or {})
        if mode == "landmarks":
            for k in ("photo", "perceptual", "texture", "lighting"):
                if w.get(k):
                    raise ValueError(f"term {k!r} needs full mode")
        if target_lm is None:
            w["landmark"] = 0
        hybrid = HybridLoss(w, landmark_weights=self.landmark_weights, skin_mask=self.skin_vertices).to(dev)
        active = hybrid.active
        lrs = dict(DEFAULT_LR, **(lr or {}))

        f32 = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32, device=dev)  # noqa: E731
        a0, b0, pose0 = f32(init["alpha"]), f32(init["beta"]), f32(init["pose"])
        B = a0.shape[0]
        rois_t = f32(rois).reshape(B, 4)
        gt_lm = None if target_lm is None else f32(target_lm).reshape(B, 68, 2)
        has_tex = self.mesh.n_tex > 0
        params = {
            "alpha": torch.zeros(B, self.mesh.n_id, device=dev),
            "beta": torch.zeros(B, self.mesh.n_exp, device=dev),
            "ds": torch.zeros(B, device=dev), "omega": torch.zeros(B, 3, device=dev),
            "dt": torch.zeros(B, 2, device=dev),
        }
        if mode == "full":
            params["gamma"] = f32(init["gamma"]).clone() if init.get("gamma") is not None else \
                torch.zeros(B, 27, device=dev)
            if has_tex:
                params["texture"] = f32(init["texture"]).clone() if init.get("texture") is not None else \
                    torch.zeros(B, self.mesh.n_tex, device=dev)
            else:
                params["gain"] = torch.zeros(B, 3, device=dev)
        groups = {"alpha": ["alpha"], "beta": ["beta"], "pose": ["ds", "omega", "dt"], "gamma": ["gamma"],
                  "texture": ["texture", "gain"]}
        optimize = tuple(optimize) if optimize is not None else tuple(groups)
        train = [n for g in optimize for n in groups[g] if n in params]
        for n in train:
            params[n].requires_grad_(True)
        opt = torch.optim.Adam([{"params": [params[n]], "lr": lrs[n]} for n in train]) if train else None

        target = attention = emb_target = None
        if mode == "full":
            if images is None:
                raise ValueError("full mode needs the image crops")
            imgs = np.asarray(images, np.float32)
            target = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous().to(dev)
            if self.skin_model is not None:
                att = np.stack([self.skin_model.attention((im * 255).round().astype(np.uint8)) for im in imgs])
                attention = torch.from_numpy(att).unsqueeze(1).to(dev)
            if "perceptual" in active:
                with torch.no_grad():
                    lm0 = self._screen(self._posed(self.kp, a0, b0, pose0.reshape(-1, 3, 4)), rois_t)[..., :2]
                    emb_lm = gt_lm if gt_lm is not None else lm0  # one alignment for photo and rendering
                    emb_target = self._embed(target, emb_lm)
        lm_scale = LM_SCALE / self.image_size
        S = self.image_size

        def evaluate(need_render: bool = False):
            za, zb = params["alpha"], params["beta"]
            alpha = a0 + za * self.sigma_alpha
            beta = b0 + zb * self.sigma_beta
            pose = self._pose(pose0, params["ds"], params["omega"], params["dt"])
            inputs = {"alpha": alpha / self.sigma_alpha, "beta": beta / self.sigma_beta}  # whitened (see docstring)
            out = {"alpha": alpha, "beta": beta, "pose": pose}
            p_kp = self._posed(self.kp, alpha, beta, pose)
            lm = self._screen(p_kp, rois_t)[..., :2]
            out["lm"] = lm
            if gt_lm is not None:
                inputs["pred_lm"] = lm * lm_scale
                inputs["gt_lm"] = gt_lm * lm_scale
            if mode == "full":
                p = self._posed(self.mesh, alpha, beta, pose)
                scr = self._screen(p, rois_t)
                normals = self.mesh.vertex_normals(p - pose[:, None, :, 3])
                if has_tex:
                    albedo = self.mesh.texture(params["texture"])
                    inputs["delta"] = params["texture"]
                else:
                    albedo = (GREY * torch.exp(params["gain"])).unsqueeze(1).expand(B, self.mesh.n_vertices, 3)
                colour = sh_shading(normals, albedo, params["gamma"])
                if state.get("frags") is None or state["it"] % refresh == 0:
                    frags = rasterize(scr, self.mesh.triangles, S, S)
                    state["frags"] = frags
                else:  # visibility (pixel → triangle) from the last refresh, barycentrics of the current geometry
                    fr = state["frags"]
                    rem = fr.pix % (S * S)
                    pv = scr.reshape(-1, 3).index_select(0, fr.vidx.reshape(-1)).reshape(-1, 3, 3)
                    frags = replace(fr, w=_barycentric(pv, (rem % S).to(pv.dtype), (rem // S).to(pv.dtype)))
                pred = interpolate(colour, frags)
                inputs.update(pred_image=pred, target_image=target, face_mask=frags.mask, attention=attention,
                              albedo=albedo, gamma=params["gamma"])
                if "perceptual" in active:
                    comp = pred * frags.mask + target * (1 - frags.mask)
                    inputs.update(emb_pred=self._embed(comp, emb_lm), emb_target=emb_target)
                out.update(pred=pred, mask=frags.mask, albedo=albedo)
            total, terms = hybrid(**inputs)
            return total, terms, inputs, out

        history: dict[str, list[float]] = {k: [] for k in active + ("total",)}
        terms_first = None
        state: dict = {"frags": None, "it": 0}
        hist_img: dict[str, list[np.ndarray]] = {}
        refresh = max(1, int(refresh))
        for it in range(iterations + 1):
            state["it"] = it if it < iterations else 0  # the final evaluation re-rasterises
            total, terms, inputs, out = evaluate()
            for k, v in terms.items():
                history[k].append(float(v.detach()))
            history["total"].append(float(total.detach()))
            if it == 0:
                terms_first = self._per_image(hybrid, inputs)
            if per_image_history:
                per = terms_first if it == 0 else self._per_image(hybrid, inputs)
                for k, v in per.items():
                    hist_img.setdefault(k, []).append(v)
            if it == iterations or opt is None:
                break
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
        with torch.no_grad():
            terms_last = self._per_image(hybrid, inputs)
        res = FitResult(
            alpha=out["alpha"].detach().cpu().numpy(), beta=out["beta"].detach().cpu().numpy(),
            pose=out["pose"].detach().reshape(B, 12).cpu().numpy(),
            gamma=params["gamma"].detach().cpu().numpy() if "gamma" in params else None,
            texture=params["texture"].detach().cpu().numpy() if "texture" in params else None,
            history={k: np.asarray(v) for k, v in history.items()}, terms_first=terms_first, terms_last=terms_last,
            landmarks=out["lm"].detach().cpu().numpy(), seconds=time.perf_counter() - t_start,
            info={"mode": mode, "iterations": iterations, "weights": hybrid.weights, "optimize": list(optimize),
                  "image_size": S, "device": str(dev)})
        res.history_per_image = {k: np.stack(v) for k, v in hist_img.items()}
        if "gain" in params:
            res.info["albedo_gain"] = params["gain"].detach().cpu().numpy()
        if keep_render and "pred" in out:
            res.render = out["pred"].detach().permute(0, 2, 3, 1).clamp(0, 1).cpu().numpy()
            res.mask = out["mask"].detach()[:, 0].cpu().numpy()
        return res

    def _embed(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """Call the embedder as ``embedder(images)`` or, when it takes two arguments, ``embedder(images, lm68)``
        (landmarks (B, 68, 2) in crop pixels: the target's, used for the photo and the rendering alike)."""
        import inspect

        try:
            n = len(inspect.signature(self.embedder).parameters)
        except (TypeError, ValueError):
            n = 1
        return self.embedder(images, landmarks) if n >= 2 else self.embedder(images)

    @staticmethod
    def _per_image(hybrid: HybridLoss, inputs: dict) -> dict[str, np.ndarray]:
        """Each active weighted term for each image of the batch (B,)."""
        out: dict[str, list[float]] = {k: [] for k in hybrid.active}
        B = inputs["alpha"].shape[0]
        with torch.no_grad():
            for b in range(B):
                sl = {k: (v[b:b + 1] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == B else v)
                      for k, v in inputs.items()}
                for name, weight in hybrid.weights.items():
                    out[name].append(float(weight * hybrid._term(name, {**sl, "skin_mask": hybrid.skin_mask})))
        return {k: np.asarray(v) for k, v in out.items()}


def dlib_embedder(model=None) -> Callable:
    """The perceptual term's embedder from :mod:`facelib.face_embedding` (PyTorch port of dlib's face descriptor):
    ``(images (B, 3, H, W) RGB 0–1, landmarks (B, 68, 2)) → (B, 128)``, dlib's chip alignment from the landmarks."""
    from . import face_embedding

    net = model if model is not None else face_embedding.load_dlib_resnet()

    def embedder(images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        return face_embedding.embed(images * 255.0, landmarks, model=net.to(images.device))

    embedder.name = "dlib_resnet"  # type: ignore[attr-defined]
    return embedder


# ----------------------------------------------------------------------------------------------- tables
class DlibTargets:
    """dlib's 68-point shape predictor placed by dlib's own HOG frontal-face detector.

    The shape predictor is trained on the HOG detector's boxes; fed FaceBoxes' (larger) box it drifts badly on
    non-frontal faces (tens of pixels on KDEF's half profiles). So the HOG detector is run on the backend's crop
    (``roi``, resampled to 320 px, upsampled once) and the detection that overlaps the backend's box most is used.
    Where HOG finds no face (profiles), ``None`` is returned for that image and the caller falls back.
    """

    name = "dlib"

    def __init__(self):
        import dlib

        from .landmarks import DlibLandmarker

        self._marker = DlibLandmarker()
        self._det = dlib.get_frontal_face_detector()

    def __call__(self, images_bgr, boxes, rois) -> list[np.ndarray | None]:
        from .tddfa import crop_image

        out: list[np.ndarray | None] = []
        for img, box, roi in zip(images_bgr, boxes, rois):
            crop = crop_image(img, roi)
            side = crop.shape[0]
            small = cv2.resize(crop, (320, 320), interpolation=cv2.INTER_AREA)
            dets = self._det(np.ascontiguousarray(small[:, :, ::-1]), 1)
            if len(dets) == 0:
                out.append(None)
                continue
            sc = side / 320.0
            x0, y0 = int(round(roi[0])), int(round(roi[1]))
            cands = [np.array([d.left() * sc + x0, d.top() * sc + y0, d.right() * sc + x0, d.bottom() * sc + y0])
                     for d in dets]
            b = np.asarray(box, np.float64)[:4]

            def overlap(c):
                ix = max(0.0, min(c[2], b[2]) - max(c[0], b[0]))
                iy = max(0.0, min(c[3], b[3]) - max(c[1], b[1]))
                return ix * iy

            best = max(cands, key=overlap)
            out.append(self._marker([img], [best])[0] if overlap(best) > 0 else None)
        return out


def pose_yaw(pose12) -> np.ndarray:
    """|yaw| proxy (radians) of 3DDFA poses (B, 12): asin of the z-row's x entry of the normalised rotation."""
    M = np.asarray(pose12, np.float64).reshape(-1, 3, 4)[:, :, :3]
    R = M / np.linalg.norm(M, axis=2, keepdims=True)
    return np.arcsin(np.clip(R[:, 2, 0], -1, 1))


def _target_landmarks(rows: pd.DataFrame, images: list[np.ndarray], source, landmarker, rois=None,
                      max_yaw: float = 60.0):
    """(B, 68, 2) target landmarks in image pixels and the source used per image ("dlib" or "table").

    dlib is not trusted beyond ``max_yaw`` degrees of the backend's yaw (its 2-D contour points do not match the
    model's on profiles) nor where its detector finds no face: the table's landmarks are the target there."""
    own = np.stack([landmarks_136_to_68(v) for v in rows["landmarks"]])
    if source == "table":
        return own, ["table"] * len(rows)
    boxes = [np.asarray(b, np.float32) for b in rows["box"]]
    if rois is None:
        from .tddfa import crop_box

        rois = [crop_box(b) for b in boxes]
    found = landmarker(images, boxes, rois)
    yaw = np.degrees(np.abs(pose_yaw(np.stack([np.asarray(v, np.float32) for v in rows["pose"]]))))
    found = [None if y > max_yaw else f for f, y in zip(found, yaw)]
    lm = np.stack([own[i] if f is None else np.asarray(f, np.float32) for i, f in enumerate(found)])
    return lm, ["table" if f is None else "dlib" for f in found]


def fit_table(coeff_table: pd.DataFrame, mode: str = "landmarks", iterations: int | None = None,
              batch_size: int = 8, device: str | None = None, weights: Mapping[str, float | None] | None = None,
              target_landmarks: str = "dlib", texture: str | Path | None = None, skin_model=None,
              embedder: Callable | None = None, image_size: int = 160, assets_folder=None,
              cache_dir: str | Path | None = None, progress: bool = True, limit: int | None = None,
              optimize: tuple[str, ...] | None = None, out: str | Path | None = None) -> pd.DataFrame:
    """Fit every ``ok`` row of a tddfa coefficient table; returns a table in the same schema.

    ``alpha``, ``beta``, ``pose`` hold the fitted coefficients, ``landmarks`` the fitted model's 68 points (image
    pixels), ``gamma`` / ``texture`` the lighting / texture coefficients (full mode), ``backend`` =
    ``"<backend>+fit_<mode>"``. Extra column ``fit_losses``: JSON {term: [first, last]} of the weighted per-image
    terms. Rows that are not ``ok`` are copied unchanged (backend renamed). ``target_landmarks``: ``"dlib"``
    (:class:`DlibTargets`: dlib placed by its own HOG detector; where it finds no face, e.g. profiles, the table's
    landmarks are the target; ``fit_losses["_target"]`` says which) or ``"table"`` (the table's own landmarks —
    for 3DDFA those are its model's, so the landmark loss starts at 0). ``texture``: a texture .npz
    (:mod:`facelib.texture`) used in full mode. ``skin_model``: SkinModel, None → trained on the table
    (:func:`skin_model_for_table`, cached), False → no attention. Resumable: finished batches are cached in
    ``<cache>/fitting/<key>/`` as parquet shards keyed by the image sha256.
    """
    from tqdm.auto import tqdm

    from .io import append_shard, atomic_write_table, read_shards
    from .reconstruct import read_image
    from .tddfa import crop_box

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    backends = set(coeff_table["backend"].dropna())
    if backends and not all(str(b).startswith("tddfa") for b in backends):
        raise ValueError(f"fit_table fits 3DDFA coefficients; table backend is {backends}")
    base = str(next(iter(backends))) if backends else "tddfa"
    name = f"{base}+fit_{mode}"
    model = MorphableModel.from_3ddfa(assets_folder)
    tex_sha = None
    if mode == "full" and texture is not None:
        from .texture import load_texture_basis, with_texture

        tb = load_texture_basis(texture)
        model = with_texture(model, tb)
        tex_sha = tb["provenance"].get("sha256") or hashlib.sha256(Path(texture).read_bytes()).hexdigest()
    if mode == "full" and skin_model is None:
        skin_model = skin_model_for_table(coeff_table, cache_dir=cache_dir)
    fitter = Fitter(model, device=device, assets_folder=assets_folder, skin_model=skin_model or None,
                    embedder=embedder, image_size=image_size)
    landmarker = None
    if target_landmarks == "dlib":
        landmarker = DlibTargets()
    elif target_landmarks != "table":
        raise ValueError("target_landmarks must be 'dlib' or 'table'")

    settings = {"v": FIT_VERSION, "mode": mode, "iterations": iterations, "weights": dict(weights or {}),
                "target": target_landmarks, "texture": tex_sha, "size": image_size, "optimize": optimize,
                "embedder": None if embedder is None else getattr(embedder, "name", type(embedder).__name__),
                "skin": bool(skin_model)}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
    folder = Path(cache_dir or config.cache_dir() / "fitting") / f"{name}-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    done = read_shards(folder)
    known = set(done["sha256"])

    ok = coeff_table[(coeff_table["status"] == "ok")].drop_duplicates("sha256")
    todo = ok[~ok["sha256"].isin(known)]
    if limit is not None:
        todo = todo.iloc[:limit]
    bar = tqdm(total=len(todo), desc=f"fit ({mode})", disable=not progress, unit="img")
    for start in range(0, len(todo), batch_size):
        rows = todo.iloc[start:start + batch_size]
        images = [read_image(p) for p in rows["path"]]
        rois = np.stack([crop_box(b) for b in rows["box"]])
        lm_img, sources = _target_landmarks(rows, images, target_landmarks, landmarker, rois)
        init = {k: np.stack([np.asarray(v, np.float32) for v in rows[k]]) for k in ("alpha", "beta", "pose")}
        crops = np.stack([crop_rgb(im, r, image_size) for im, r in zip(images, rois)]) if mode == "full" else None
        res = fitter.fit(init, rois, image_to_crop(lm_img, rois, image_size), crops, mode=mode,
                         iterations=iterations, weights=weights, optimize=optimize)
        lm_fit = crop_to_image(res.landmarks, rois, image_size)
        rec = []
        for j, sha in enumerate(rows["sha256"]):
            rec.append({"sha256": sha, "alpha": res.alpha[j].tolist(), "beta": res.beta[j].tolist(),
                        "pose": res.pose[j].tolist(),
                        "landmarks": np.concatenate([lm_fit[j, :, 0], lm_fit[j, :, 1]]).astype(np.float32).tolist(),
                        "gamma": None if res.gamma is None else res.gamma[j].tolist(),
                        "texture": None if res.texture is None else res.texture[j].tolist(),
                        "fit_losses": json.dumps({**{k: [float(res.terms_first[k][j]), float(res.terms_last[k][j])]
                                                     for k in res.terms_last}, "_target": sources[j]}),
                        "fit_seconds": res.seconds / len(rows)})
        shard = pd.DataFrame(rec)
        append_shard(folder, shard)
        done = pd.concat([done, shard], ignore_index=True)
        bar.update(len(rows))
    bar.close()

    table = coeff_table.copy()
    table["backend"] = name
    if "fit_losses" not in table.columns:
        table["fit_losses"] = None
    if len(done):
        by = done.drop_duplicates("sha256", keep="last").set_index("sha256")
        for col in ("gamma", "texture"):
            if col not in table.columns:
                table[col] = None
        for col in ("alpha", "beta", "pose", "landmarks", "gamma", "texture", "fit_losses"):
            table[col] = table[col].astype(object)
            hit = table["sha256"].isin(by.index) & (table["status"] == "ok")
            vals = by[col].reindex(table.loc[hit, "sha256"]).tolist()
            table.loc[hit, col] = pd.Series([_as_list(v) for v in vals], index=table.index[hit], dtype=object)
    if out is not None:
        atomic_write_table(table, Path(out))
    return table


def _as_list(v):
    if isinstance(v, np.ndarray):
        return v.astype(np.float32).tolist()
    return v


def loss_summary(table: pd.DataFrame, by: str | None = None) -> pd.DataFrame:
    """Mean weighted per-term loss at the start (tddfa) and the end (fitted) from a fitted table's ``fit_losses``."""
    rows = []
    for _, r in table[table["fit_losses"].notna()].iterrows():
        d = json.loads(r["fit_losses"])
        rec = {f"{k}_{s}": v[i] for k, v in d.items() if not k.startswith("_")
               for i, s in enumerate(("first", "last"))}
        if by:
            rec[by] = r[by]
        rows.append(rec)
    df = pd.DataFrame(rows)
    return df.groupby(by).mean() if by else df.mean().to_frame("mean").T


# ----------------------------------------------------------------------------------------------- figure
def fit_figure(coeff_table: pd.DataFrame, image_ids=None, n: int = 4, iterations: int = 40, texture=None,
               skin_model=None, target_landmarks: str = "dlib", image_size: int = 160, device: str | None = None,
               assets_folder=None, out=None, seed: int = 0):
    """Fit a few images (full mode) and draw one row per image: photo (crop) | rendering | overlay | per-term loss
    curve (weighted terms, log scale). ``image_ids`` picks rows by ``image_id``; else ``n`` ok rows at random.
    Returns (figure, FitResult)."""
    import matplotlib.pyplot as plt

    from .reconstruct import read_image
    from .tddfa import crop_box

    ok = coeff_table[coeff_table["status"] == "ok"]
    rows = ok[ok["image_id"].isin(list(image_ids))] if image_ids is not None else \
        ok.sample(min(n, len(ok)), random_state=seed)
    model = MorphableModel.from_3ddfa(assets_folder)
    if texture is not None:
        from .texture import load_texture_basis, with_texture

        model = with_texture(model, load_texture_basis(texture))
    if skin_model is None:
        skin_model = skin_model_for_table(coeff_table)
    fitter = Fitter(model, device=device, assets_folder=assets_folder, skin_model=skin_model or None,
                    image_size=image_size)
    imgs = [read_image(p) for p in rows["path"]]
    rois = np.stack([crop_box(b) for b in rows["box"]])
    landmarker = DlibTargets() if target_landmarks == "dlib" else None
    lm, _ = _target_landmarks(rows, imgs, target_landmarks, landmarker, rois)
    init = {k: np.stack([np.asarray(v, np.float32) for v in rows[k]]) for k in ("alpha", "beta", "pose")}
    crops = np.stack([crop_rgb(im, r, image_size) for im, r in zip(imgs, rois)])
    tl = image_to_crop(lm, rois, image_size)
    first = fitter.fit(init, rois, tl, crops, mode="full", iterations=0, keep_render=True)
    res = fitter.fit(init, rois, tl, crops, mode="full", iterations=iterations, keep_render=True,
                     per_image_history=True)
    B = len(rows)
    fig, axes = plt.subplots(B, 5, figsize=(12.5, 2.6 * B), squeeze=False)
    for i in range(B):
        m = res.mask[i][..., None]
        panels = [(crops[i], "photo (crop)"), (first.render[i] * first.mask[i][..., None] + crops[i] *
                                               (1 - first.mask[i][..., None]), "tddfa start"),
                  (res.render[i], f"fitted ({iterations} it)"), (crops[i] * (1 - m) + res.render[i] * m, "overlay")]
        for j, (im, title) in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(np.clip(im, 0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=8)
        axes[i, 3].scatter(tl[i, :, 0], tl[i, :, 1], s=2, c="lime", label="target")
        axes[i, 3].scatter(res.landmarks[i, :, 0], res.landmarks[i, :, 1], s=2, c="red", label="fitted")
        axes[i, 0].set_ylabel(str(rows["image_id"].iloc[i]), fontsize=8)
        ax = axes[i, 4]
        for k, v in res.history_per_image.items():
            ax.semilogy(np.maximum(v[:, i], 1e-5), label=k, lw=1)
        ax.set_xlabel("iteration", fontsize=7)
        ax.set_title("weighted loss terms", fontsize=8)
        ax.tick_params(labelsize=6)
        if i == 0:
            ax.legend(fontsize=6)
    fig.tight_layout()
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100)
    return fig, res


# ----------------------------------------------------------------------------------------------- CLI
def cmd_fit(args) -> int:
    table = pd.read_parquet(args.table)
    if args.texture == "build":
        from .texture import build_from_table

        tex_path = Path(args.out).with_name(Path(args.out).stem + "_texture.npz")
        build_from_table(table, out=tex_path, device=args.device, assets_folder=args.assets)
        args.texture = str(tex_path)
    out = fit_table(table, mode=args.mode, iterations=args.iterations, batch_size=args.batch_size,
                    device=args.device, target_landmarks=args.targets, texture=args.texture,
                    image_size=args.size, assets_folder=args.assets, limit=args.limit, out=args.out)
    print(loss_summary(out).round(5).to_string())
    if args.figure:
        fit_figure(table, n=4, texture=args.texture, device=args.device, assets_folder=args.assets, out=args.figure)
    return 0


def add_cli(sub) -> None:
    r = sub.add_parser("fit", help="analysis-by-synthesis fitting of a tddfa coefficient table")
    r.add_argument("--table", required=True, help="tddfa coefficient table (.parquet)")
    r.add_argument("--mode", choices=MODES, default="landmarks")
    r.add_argument("--iterations", type=int, default=None)
    r.add_argument("--targets", choices=["dlib", "table"], default="dlib")
    r.add_argument("--texture", default=None, help="texture basis .npz, or 'build' to learn one from angle S rows")
    r.add_argument("--size", type=int, default=160, help="crop resolution of full mode")
    r.add_argument("--out", required=True, help="fitted coefficient table (.parquet)")
    r.add_argument("--figure", default=None, help="also write photo|rendering|overlay|loss figure (PNG)")
    r.add_argument("--device", default=None)
    r.add_argument("--assets", default=None)
    r.add_argument("--batch-size", type=int, default=8)
    r.add_argument("--limit", type=int, default=None)
    r.set_defaults(func=cmd_fit)
