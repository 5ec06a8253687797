"""Per-image analysis-by-synthesis fitting of the 3DDFA-space morphable model, started from a backend's coefficients.
(Over ~400 lines on purpose: one optimisation whose pieces — batch, start, forward, losses, project — share the
Fitter's state; R-Net training reuses forward/losses.)

Two modes (``Fitter.fit`` / :func:`facelib.fitting.table.fit_table`):

``mode="landmarks"`` (fast, no rendering)
    Only the 68 keypoint vertices are computed. Loss = Deng et al.'s landmark term (Deep3D's per-landmark weights,
    :func:`facelib.fitting.losses.deep3d_landmark_weights`) against target landmarks (dlib's 68 points by default) + the
    coefficient regulariser. Optimised: α, β, pose.

``mode="full"``
    The face (3DDFA_V2's 38365-vertex no-neck mesh) is rendered into the backend's crop with the 3DDFA
    scaled-orthographic camera (the ``roi`` crop, resampled to ``image_size``², default 160) with
    :func:`facelib.fitting.render.sh_shading` lighting; loss = photometric (skin attention from a :class:`SkinModel`)
    + landmark + regulariser + texture flattening + lighting prior (+ perceptual when an ``embedder`` is given).
    Optimised: α, β, pose, γ (27 SH coefficients, Deep3D layout) and the texture coefficients δ when the model has a
    texture basis (:mod:`facelib.fitting.texture`); without one, a per-image RGB albedo gain on the constant grey albedo.

Every term is switched and weighted by a :class:`facelib.fitting.losses.HybridLoss` weights dict (0 = off); the
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

The table-level fit (cache, target landmarks, figure) is :mod:`facelib.fitting.table`; the skin model
:mod:`facelib.fitting.skin`; crops and the camera :mod:`facelib.face3d.cameras`.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

import numpy as np
import torch

from .. import config
from ..face3d.cameras import tddfa_crop_screen
from ..face3d.morphable import GREY, MorphableModel
from ..face3d.tddfa import coefficient_sigma
from .losses import DEFAULT_WEIGHTS, HybridLoss, deep3d_landmark_weights
from .render import barycentric, interpolate, rasterize, sh_shading
from .skin import skin_vertex_mask

MODES = ("landmarks", "full")
LM_SCALE = 224.0  # landmark loss measured in pixels of a 224-pixel crop (Deep3D's image size)
DEFAULT_ITERATIONS = {"landmarks": 60, "full": 40}
DEFAULT_LR = {"alpha": 0.05, "beta": 0.05, "ds": 0.005, "omega": 0.005, "dt": 0.2, "gamma": 0.03,
              "texture": 0.05, "gain": 0.02}
PARAM_GROUPS = {"alpha": ["alpha"], "beta": ["beta"], "pose": ["ds", "omega", "dt"], "gamma": ["gamma"],
                "texture": ["texture", "gain"]}


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


@dataclass
class FitBatch:
    """What stays fixed while one batch is fitted (tensors on the fitter's device)."""

    mode: str
    size: int
    alpha0: torch.Tensor
    beta0: torch.Tensor
    pose0: torch.Tensor
    rois: torch.Tensor
    target_lm: torch.Tensor | None
    init: Mapping[str, np.ndarray]
    perceptual: bool = False
    target: torch.Tensor | None = None
    attention: torch.Tensor | None = None
    emb_lm: torch.Tensor | None = None
    emb_target: torch.Tensor | None = None
    lm_weights: torch.Tensor | None = None  # (B, 68) per-picture landmark weights (None: the loss's own)


def axis_angle(omega: torch.Tensor) -> torch.Tensor:
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

    ``model``: a 53215-vertex 3DDFA-layout :class:`MorphableModel` (default ``from_3ddfa``) or another model whose
    layout starts with pose 12 (ICT, :mod:`facelib.fitting.ict_fit`: its σ from ``extras["sigma_alpha"/"sigma_beta"]``,
    β kept in ``extras["beta_bounds"]``), optionally with a texture basis (:func:`facelib.fitting.texture.with_texture`). ``skin_model``: :class:`facelib.fitting.skin.SkinModel` or None
    (attention = 1). ``embedder``: callable (B, 3, H, W) RGB 0–1 → (B, D) embeddings for the perceptual term (None
    switches the term off).
    """

    def __init__(self, model: MorphableModel | None = None, device: str | None = None, assets_dir=None,
                 skin_model=None, embedder: Callable | None = None, image_size: int = 160):
        self.device = torch.device(config.resolve_device(device))
        if model is None:
            model = MorphableModel.from_3ddfa(assets_dir, device=self.device)
        if model.coeff_layout[0] != ("pose", 12):
            raise ValueError("Fitter works with 3DDFA's camera: a layout starting with pose 12 ('3ddfa', 'ict')")
        model = model.to(self.device)
        self.model = model
        noneck = model.extras.get("noneck_ids")
        ids = noneck if noneck is not None else torch.arange(model.n_vertices)
        self.mesh = restrict_model(model, ids.cpu().numpy())
        self.kp = restrict_model(model, model.keypoint_ids.cpu().numpy(), triangles=np.array([[0, 1, 2]]))
        if "sigma_alpha" in model.extras:  # a model that carries its coefficient scales (ICT: 1)
            sa, sb = (model.extras[k].cpu().numpy() for k in ("sigma_alpha", "sigma_beta"))
        else:
            sa, sb = coefficient_sigma(assets_dir)
        bounds = model.extras.get("beta_bounds")  # box constraint on β (ICT's ARKit weights: [0, 1])
        self.beta_bounds = None if bounds is None else tuple(float(b) for b in bounds.cpu())
        self.sigma_alpha = torch.from_numpy(sa.astype(np.float32)).to(self.device)
        self.sigma_beta = torch.from_numpy(sb.astype(np.float32)).to(self.device)
        self.skin_vertices = skin_vertex_mask(model, assets_dir)[self.mesh.extras["parent_ids"]]
        self.landmark_weights = deep3d_landmark_weights(self.device)
        self.skin_model = skin_model
        self.embedder = embedder
        self.image_size = int(image_size)

    # -------------------------------------------------------------- geometry
    def _pose(self, pose0: torch.Tensor, ds, omega, dt) -> torch.Tensor:
        P = pose0.reshape(-1, 3, 4)
        M = torch.exp(ds).view(-1, 1, 1) * (P[:, :, :3] @ axis_angle(omega))
        t = P[:, :, 3] + torch.cat([dt, torch.zeros_like(dt[:, :1])], 1) * torch.tensor(
            [1.0, -1.0, 1.0], device=dt.device)  # dt is (x right, y down) in crop pixels; p_y points up
        return torch.cat([M, t.unsqueeze(-1)], 2)

    def posed(self, sub: MorphableModel, alpha, beta, pose) -> torch.Tensor:
        """p = sR·v + t (B, N, 3), 3DDFA's frame before the crop mapping (y up, z towards the viewer)."""
        v = sub.shape(alpha, beta)
        return v @ pose[:, :, :3].transpose(1, 2) + pose[:, None, :, 3]

    def screen(self, p: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        """3DDFA crop frame → pixel coordinates of the image_size² crop, depth −p_z."""
        return tddfa_crop_screen(p, rois, self.image_size)

    # -------------------------------------------------------------- fitting
    def fit(self, init: Mapping[str, np.ndarray], rois, target_lm=None, images=None, mode: str = "landmarks",
            iterations: int | None = None, weights: Mapping[str, float | None] | None = None,
            optimize: tuple[str, ...] | None = None, lr: Mapping[str, float] | None = None,
            keep_render: bool = False, refresh: int = 4, per_image_history: bool = False,
            reg_weights: Mapping[str, float] | None = None, landmark_weights=None) -> FitResult:
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
        (``FitResult.history_per_image[term]`` (iterations + 1, B)). ``reg_weights``: the regulariser's
        ``w_id``/``w_exp`` (:data:`~facelib.fitting.losses.REG_WEIGHTS`); ``landmark_weights`` (B, 68) per-picture
        multipliers of Deep3D's landmark weights (:func:`~facelib.fitting.losses.yaw_landmark_weights`); the
        ``sparsity`` weight (an L1 prior on β) goes in ``weights``.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        t_start = time.perf_counter()
        iterations = DEFAULT_ITERATIONS[mode] if iterations is None else int(iterations)
        hybrid = self.loss(mode, weights, has_target_landmarks=target_lm is not None, reg_weights=reg_weights)
        batch = self.batch(init, rois, target_lm, images, mode, hybrid)
        if landmark_weights is not None:
            batch.lm_weights = hybrid.landmark_weights * torch.as_tensor(
                np.asarray(landmark_weights, np.float32), device=self.device).reshape(batch.size, 68)
        params = self.start_params(init, batch)
        optimize = tuple(optimize) if optimize is not None else tuple(PARAM_GROUPS)
        lrs = dict(DEFAULT_LR, **(lr or {}))
        train = [n for g in optimize for n in PARAM_GROUPS[g] if n in params]
        for n in train:
            params[n].requires_grad_(True)
        opt = torch.optim.Adam([{"params": [params[n]], "lr": lrs[n]} for n in train]) if train else None

        history: dict[str, list[float]] = {k: [] for k in hybrid.active + ("total",)}
        terms_first = None
        hist_img: dict[str, list[np.ndarray]] = {}
        refresh = max(1, int(refresh))
        visibility = None
        for it in range(iterations + 1):
            step = it if it < iterations else 0  # the final evaluation re-rasterises
            rendered = self.forward(params, batch, visibility if step % refresh else None)
            visibility = rendered.get("frags")
            total, terms, inputs = self.losses(hybrid, rendered, batch)
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
            self.project(params, batch)
        with torch.no_grad():
            terms_last = self._per_image(hybrid, inputs)
        B = batch.size
        res = FitResult(
            alpha=rendered["alpha"].detach().cpu().numpy(), beta=rendered["beta"].detach().cpu().numpy(),
            pose=rendered["pose"].detach().reshape(B, 12).cpu().numpy(),
            gamma=params["gamma"].detach().cpu().numpy() if "gamma" in params else None,
            texture=params["texture"].detach().cpu().numpy() if "texture" in params else None,
            history={k: np.asarray(v) for k, v in history.items()}, terms_first=terms_first, terms_last=terms_last,
            landmarks=rendered["lm"].detach().cpu().numpy(), seconds=time.perf_counter() - t_start,
            info={"mode": mode, "iterations": iterations, "weights": hybrid.weights, "optimize": list(optimize),
                  "image_size": self.image_size, "device": str(self.device)})
        res.history_per_image = {k: np.stack(v) for k, v in hist_img.items()}
        if "gain" in params:
            res.info["albedo_gain"] = params["gain"].detach().cpu().numpy()
        if keep_render and "pred" in rendered:
            res.render = rendered["pred"].detach().permute(0, 2, 3, 1).clamp(0, 1).cpu().numpy()
            res.mask = rendered["mask"].detach()[:, 0].cpu().numpy()
        return res

    # -------------------------------------------------------------- the pieces of a fit
    def loss(self, mode: str, weights: Mapping[str, float | None] | None, has_target_landmarks: bool,
             reg_weights: Mapping[str, float] | None = None) -> HybridLoss:
        """The HybridLoss of a fit: the paper's weights, the terms a mode cannot use switched off, then ``weights``."""
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
        if not has_target_landmarks:
            w["landmark"] = 0
        return HybridLoss(w, reg_weights=reg_weights, landmark_weights=self.landmark_weights,
                          skin_mask=self.skin_vertices).to(self.device)

    def batch(self, init, rois, target_lm, images, mode: str, hybrid: HybridLoss) -> FitBatch:
        """What stays fixed while a batch is fitted: start coefficients, crops, targets (tensors on the device)."""
        dev = self.device
        f32 = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32, device=dev)  # noqa: E731
        a0, b0, pose0 = f32(init["alpha"]), f32(init["beta"]), f32(init["pose"])
        B = a0.shape[0]
        rois_t = f32(rois).reshape(B, 4)
        gt_lm = None if target_lm is None else f32(target_lm).reshape(B, 68, 2)
        batch = FitBatch(mode=mode, size=B, alpha0=a0, beta0=b0, pose0=pose0, rois=rois_t, target_lm=gt_lm,
                         init=init, perceptual="perceptual" in hybrid.active)
        if mode == "full":
            if images is None:
                raise ValueError("full mode needs the image crops")
            imgs = np.asarray(images, np.float32)
            batch.target = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous().to(dev)
            if self.skin_model is not None:
                att = np.stack([self.skin_model.attention((im * 255).round().astype(np.uint8)) for im in imgs])
                batch.attention = torch.from_numpy(att).unsqueeze(1).to(dev)
            if batch.perceptual:
                with torch.no_grad():
                    lm0 = self.screen(self.posed(self.kp, a0, b0, pose0.reshape(-1, 3, 4)), rois_t)[..., :2]
                    batch.emb_lm = gt_lm if gt_lm is not None else lm0  # one alignment for photo and rendering
                    batch.emb_target = self._embed(batch.target, batch.emb_lm)
        return batch

    def start_params(self, init, batch: FitBatch) -> dict[str, torch.Tensor]:
        """The optimised variables, all starting at the backend's fit: whitened offsets of α, β; pose increments;
        in full mode γ and the texture coefficients (or an RGB albedo gain without a texture basis)."""
        dev, B = self.device, batch.size
        f32 = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32, device=dev)  # noqa: E731
        params = {
            "alpha": torch.zeros(B, self.mesh.n_id, device=dev),
            "beta": torch.zeros(B, self.mesh.n_exp, device=dev),
            "ds": torch.zeros(B, device=dev), "omega": torch.zeros(B, 3, device=dev),
            "dt": torch.zeros(B, 2, device=dev),
        }
        if batch.mode == "full":
            params["gamma"] = f32(init["gamma"]).clone() if init.get("gamma") is not None else \
                torch.zeros(B, 27, device=dev)
            if self.mesh.n_tex > 0:
                params["texture"] = f32(init["texture"]).clone() if init.get("texture") is not None else \
                    torch.zeros(B, self.mesh.n_tex, device=dev)
            else:
                params["gain"] = torch.zeros(B, 3, device=dev)
        return params

    def project(self, params: dict[str, torch.Tensor], batch: FitBatch) -> None:
        """After a step: keep β = β₀ + z·σ inside the model's ``beta_bounds`` (projected gradient; none for BFM)."""
        if self.beta_bounds is None:
            return
        lo, hi = self.beta_bounds
        with torch.no_grad():
            z = params["beta"]
            z.copy_(torch.maximum(torch.minimum(z, (hi - batch.beta0) / self.sigma_beta),
                                  (lo - batch.beta0) / self.sigma_beta))

    def forward(self, params: dict[str, torch.Tensor], batch: FitBatch, visibility=None) -> dict:
        """params → rendered: coefficients, pose, landmarks (crop pixels) and, in full mode, the rendered crop.

        ``visibility``: the fragments of an earlier rasterisation to reuse (barycentrics of the current geometry);
        None rasterises afresh. The returned ``frags`` can be passed back."""
        B, S = batch.size, self.image_size
        alpha = batch.alpha0 + params["alpha"] * self.sigma_alpha
        beta = batch.beta0 + params["beta"] * self.sigma_beta
        pose = self._pose(batch.pose0, params["ds"], params["omega"], params["dt"])
        # the loss inputs are made here, in this order, so autograd sums gradients in the same order as always
        out = {"alpha": alpha, "beta": beta, "pose": pose,
               "alpha_z": alpha / self.sigma_alpha, "beta_z": beta / self.sigma_beta}  # whitened (module docstring)
        out["lm"] = self.screen(self.posed(self.kp, alpha, beta, pose), batch.rois)[..., :2]
        if batch.target_lm is not None:
            out["lm_224"] = out["lm"] * (LM_SCALE / self.image_size)
        if batch.mode == "full":
            p = self.posed(self.mesh, alpha, beta, pose)
            scr = self.screen(p, batch.rois)
            normals = self.mesh.vertex_normals(p - pose[:, None, :, 3])
            if "texture" in params:
                albedo = self.mesh.texture(params["texture"])
            else:
                albedo = (GREY * torch.exp(params["gain"])).unsqueeze(1).expand(B, self.mesh.n_vertices, 3)
            colour = sh_shading(normals, albedo, params["gamma"])
            if visibility is None:
                frags = rasterize(scr, self.mesh.triangles, S, S)
            else:  # visibility (pixel → triangle) from the last refresh, barycentrics of the current geometry
                rem = visibility.pix % (S * S)
                pv = scr.reshape(-1, 3).index_select(0, visibility.vidx.reshape(-1)).reshape(-1, 3, 3)
                frags = replace(visibility, w=barycentric(pv, (rem % S).to(pv.dtype), (rem // S).to(pv.dtype)))
            out.update(pred=interpolate(colour, frags), mask=frags.mask, albedo=albedo, frags=frags,
                       gamma=params["gamma"], delta=params.get("texture"))
        return out

    def losses(self, hybrid: HybridLoss, rendered: dict, batch: FitBatch):
        """(total, weighted terms, the loss inputs) of a rendering against the batch's targets."""
        inputs = {"alpha": rendered["alpha_z"], "beta": rendered["beta_z"]}
        if batch.target_lm is not None:
            inputs["pred_lm"] = rendered["lm_224"]
            inputs["gt_lm"] = batch.target_lm * (LM_SCALE / self.image_size)
            if batch.lm_weights is not None:
                inputs["lm_weights"] = batch.lm_weights
        if batch.mode == "full":
            if rendered["delta"] is not None:
                inputs["delta"] = rendered["delta"]
            pred, mask = rendered["pred"], rendered["mask"]
            inputs.update(pred_image=pred, target_image=batch.target, face_mask=mask, attention=batch.attention,
                          albedo=rendered["albedo"], gamma=rendered["gamma"])
            if batch.perceptual:
                comp = pred * mask + batch.target * (1 - mask)
                inputs.update(emb_pred=self._embed(comp, batch.emb_lm), emb_target=batch.emb_target)
        total, terms = hybrid(**inputs)
        return total, terms, inputs

    def _embed(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """Call the embedder as ``embedder(images)`` or, when it takes two arguments, ``embedder(images, lm68)``
        (landmarks (B, 68, 2) in crop pixels: the target's, used for the photo and the rendering alike)."""
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
                    out[name].append(float(weight * hybrid.term(name, {**sl, "skin_mask": hybrid.skin_mask})))
        return {k: np.asarray(v) for k, v in out.items()}

