"""The paper's reconstruction network (R-Net of Deng et al. 2019, Deep3DFaceRecon_pytorch) and its 5-point alignment.

Network
    ``ReconNet``: torchvision ResNet-50 trunk without its fc (keys ``backbone.conv1.weight``, ``backbone.bn1.*``,
    ``backbone.layer1.0.conv1.weight`` …, global average pooled to 2048) + ``final_layers.0 … 6``: 1×1 Conv2d
    2048 → 80 (identity α), 64 (expression β), 80 (texture δ), 3 (angles), 27 (SH lighting γ), 2 (translation
    x, y), 1 (translation z), concatenated into 257 numbers (layout ``morphable.LAYOUT_DEEP3D``).
    Input: RGB in [0, 1], (B, 3, 224, 224), aligned by ``align_deep3d``.

Checkpoint
    ``epoch_20.pth`` = {'net_recon': state_dict, 'optimizer': …, 'scheduler'/'epoch': …}. ``load_rnet`` loads
    ``net_recon`` strictly. Two tolerances, both without effect on the forward pass: a uniform ``module.``
    prefix (DataParallel) is stripped, and missing BatchNorm ``num_batches_tracked`` counters are filled in.
    Anything else missing, unexpected or of the wrong shape is an error naming the keys.

Alignment (Deep3D ``util/preprocess.py`` ``align_img`` / ``POS``, re-implemented)
    Landmarks are given in ordinary image pixels (x right, y down). Internally they are flipped to y-up
    (y' = H − 1 − y) as Deep3D does; a least-squares affine fit of the 5 points to the standard 3-D landmarks
    (``similarity_Lm3D_all.mat``, 5-point reduction) gives scale s and translation t; the image is resized by
    102/s (bicubic, PIL) and a 224×224 window is cut around t (zero padding outside the image).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from .. import assets, config
from .morphable import LAYOUT_DEEP3D, five_points, load_lm3d_std

HEAD_DIMS = (80, 64, 80, 3, 27, 2, 1)  # id, exp, tex, angle, gamma, txy, tz
OUTPUT_NAMES = tuple(name for name, _ in LAYOUT_DEEP3D)  # alpha beta texture angles gamma translation
TARGET_SIZE = 224
RESCALE_FACTOR = 102.0


class ReconNet(nn.Module):
    """ResNet-50 trunk (``backbone``) + 7 1×1-conv heads (``final_layers``) → (B, 257)."""

    def __init__(self):
        super().__init__()
        import torchvision  # torchvision (seconds to import): only when this network is built

        backbone = torchvision.models.resnet50(weights=None)
        backbone.fc = nn.Identity()  # no parameters: the state_dict has no fc keys, as Deep3D's
        self.backbone = backbone
        self.final_layers = nn.ModuleList([nn.Conv2d(2048, d, kernel_size=1, bias=True) for d in HEAD_DIMS])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.backbone(x)[:, :, None, None]  # (B, 2048, 1, 1) after global average pooling
        return torch.cat([layer(feat) for layer in self.final_layers], dim=1).flatten(1)


def split_output(out) -> dict:
    """(B, 257) → {alpha 80, beta 64, texture 80, angles 3, gamma 27, translation 3}."""
    res, start = {}, 0
    for name, d in LAYOUT_DEEP3D:
        res[name] = out[..., start:start + d]
        start += d
    if start != out.shape[-1]:
        raise ValueError(f"expected {start} outputs, got {out.shape[-1]}")
    return res


def _describe(keys, limit: int = 8) -> str:
    keys = sorted(keys)
    more = f" … (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_rnet(checkpoint_path, device: str = "cpu", allow_pickle: bool = False) -> ReconNet:
    """Load Deep3DFaceRecon's ``epoch_20.pth`` into a ``ReconNet`` in eval mode on ``device``.

    ``allow_pickle=True`` loads with ``weights_only=False`` (only for a checkpoint you trust).
    """
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"Deep3D checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as exc:  # unpickling refused or corrupt file
        raise ValueError(f"cannot read Deep3D checkpoint {path}: {exc}. If the file is trusted and holds pickled "
                         "objects beyond tensors, call load_rnet(..., allow_pickle=True).") from exc
    if not isinstance(ckpt, dict) or "net_recon" not in ckpt:
        found = list(ckpt)[:10] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not a Deep3DFaceRecon checkpoint: expected a dict with 'net_recon' "
                         f"(found {found})")
    state = dict(ckpt["net_recon"])
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    net = ReconNet()
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    tolerated = [k for k in missing if k.endswith("num_batches_tracked")]
    missing = [k for k in missing if k not in tolerated]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [f"{k} {tuple(state[k].shape)}≠{tuple(v.shape)}" for k, v in expected.items()
                   if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_describe(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_describe(unexpected)}")
        if wrong_shape:
            parts.append(f"wrong shapes ({len(wrong_shape)}): {_describe(wrong_shape)}")
        raise ValueError(f"{path}: 'net_recon' does not match the R-Net layout (ResNet-50 'backbone.*' + "
                         f"'final_layers.0-6'): " + "; ".join(parts))
    for k in tolerated:
        state[k] = expected[k]
    net.load_state_dict(state, strict=True)
    return net.eval().to(device)


# ---------------------------------------------------------------------- alignment
def five_points_from_68(lm68) -> np.ndarray:
    """(…, 68, 2) → (…, 5, 2): left eye, right eye, nose tip, left and right mouth corner (image coordinates)."""
    return five_points(lm68)


def _pos(xp: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares affine camera xp ≈ [r1·X + tx, r2·X + ty]; returns t (2,) and s = mean(|r1|, |r2|).

    xp (n, 2), x (n, 3). The x and y rows decouple into two ordinary least-squares problems.
    """
    a = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
    k, *_ = np.linalg.lstsq(a, xp, rcond=None)  # (4, 2)
    s = (np.linalg.norm(k[:3, 0]) + np.linalg.norm(k[:3, 1])) / 2
    return k[3].copy(), float(s)


def align_deep3d(image_rgb: np.ndarray, lm5, lm3d_std, target_size: int = TARGET_SIZE,
                 rescale_factor: float = RESCALE_FACTOR) -> tuple[np.ndarray, dict]:
    """Deep3D's 5-point alignment. ``image_rgb`` (H, W, 3) uint8 (or float 0–1); ``lm5`` (5, 2) or (68, 2) in
    image pixels (y down); ``lm3d_std`` (5, 3) or (68, 3) standard landmarks.

    Returns the crop (target, target, 3) float32 RGB in [0, 1] and the parameters: ``trans_params`` = Deep3D's
    (W, H, s, tx, ty) with t in y-up coordinates, plus ``scale``, ``resized`` (w, h), ``left``, ``up``
    (crop origin in the resized image) — ``image_to_crop`` maps image points into the crop with them.
    """
    img = np.asarray(image_rgb)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got {img.shape}")
    if img.dtype != np.uint8:
        img = np.clip(np.asarray(img, dtype=np.float64) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    h0, w0 = img.shape[:2]
    pts = np.asarray(lm5, dtype=np.float64)
    if pts.shape[0] == 68:
        pts = five_points(pts)
    ref = np.asarray(lm3d_std, dtype=np.float64)
    if ref.shape[0] == 68:
        ref = five_points(ref)
    if pts.shape != (5, 2) or ref.shape != (5, 3):
        raise ValueError(f"need 5 image points (5, 2) and 5 standard 3-D points (5, 3), got {pts.shape}, {ref.shape}")
    up_pts = np.stack([pts[:, 0], (h0 - 1) - pts[:, 1]], axis=1)  # Deep3D works in y-up coordinates
    t, s_fit = _pos(up_pts, ref)
    s = rescale_factor / s_fit
    w, h = int(w0 * s), int(h0 * s)
    left = int(w / 2 - target_size / 2 + (t[0] - w0 / 2) * s)
    up = int(h / 2 - target_size / 2 + (h0 / 2 - t[1]) * s)

    pil = Image.fromarray(img).resize((w, h), resample=Image.Resampling.BICUBIC)
    crop = np.asarray(pil.crop((left, up, left + target_size, up + target_size)), dtype=np.float32) / 255.0
    params = {"trans_params": np.array([w0, h0, s, t[0], t[1]], dtype=np.float64), "scale": s,
              "resized": (w, h), "left": left, "up": up, "image_size": (w0, h0), "target_size": target_size}
    return crop, params


def image_to_crop(points_xy, params: dict) -> np.ndarray:
    """Image pixel coordinates (…, 2) (y down) → coordinates in the aligned crop (y down), pixel centres exact."""
    p = np.asarray(points_xy, dtype=np.float64)
    (w, h), (w0, h0) = params["resized"], params["image_size"]
    x = (p[..., 0] + 0.5) * (w / w0) - 0.5 - params["left"]
    y = (p[..., 1] + 0.5) * (h / h0) - 0.5 - params["up"]
    return np.stack([x, y], axis=-1)


def standard_five_points_in_crop(lm3d_std, target_size: int = TARGET_SIZE,
                                 rescale_factor: float = RESCALE_FACTOR) -> np.ndarray:
    """Where a face exactly matching the standard landmarks (frontal) puts its 5 points in the crop (y down)."""
    ref = np.asarray(lm3d_std, dtype=np.float64)
    if ref.shape[0] == 68:
        ref = five_points(ref)
    c = target_size / 2
    return np.stack([c + rescale_factor * ref[:, 0], c - rescale_factor * ref[:, 1]], axis=1)


class Deep3DRegressor:
    """Images + 68 landmarks → Deep3D coefficients.

    ``checkpoint``: a path to ``epoch_20.pth``; None resolves the asset ``deep3d_epoch20`` (a clear
    ``AssetMissingError`` tells where to get it when absent).
    """

    def __init__(self, checkpoint=None, device: str = "cpu", assets_dir=None, batch_size: int = 16,
                 allow_pickle: bool = False):
        path = Path(checkpoint) if checkpoint else assets.resolve("deep3d_epoch20", assets_dir)
        self.checkpoint = path
        self.device = config.resolve_device(device)
        self.net = load_rnet(path, self.device, allow_pickle=allow_pickle)
        self.lm3d_std = load_lm3d_std(assets_dir)
        self.batch_size = batch_size
        self.last_align: list[dict] = []

    def preprocess(self, images_bgr: list, landmarks68: list) -> tuple[torch.Tensor, list[dict]]:
        if len(images_bgr) != len(landmarks68):
            raise ValueError(f"{len(images_bgr)} images but {len(landmarks68)} landmark sets")
        crops, params = [], []
        for img, lm in zip(images_bgr, landmarks68):
            img = np.asarray(img)
            if img.ndim == 2:
                img = np.repeat(img[:, :, None], 3, axis=2)
            rgb = np.ascontiguousarray(img[:, :, ::-1])
            crop, par = align_deep3d(rgb, np.asarray(lm, dtype=np.float64).reshape(-1, 2), self.lm3d_std)
            crops.append(crop)
            params.append(par)
        x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous() if crops else \
            torch.zeros(0, 3, TARGET_SIZE, TARGET_SIZE)
        return x, params

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [self.net(x[i:i + self.batch_size].to(self.device)).float().cpu()
                for i in range(0, x.shape[0], self.batch_size)]
        return torch.cat(outs) if outs else torch.zeros(0, sum(HEAD_DIMS))

    def __call__(self, images_bgr: list, landmarks68: list) -> dict:
        """BGR images (H, W, 3) uint8 and their 68 landmarks (68, 2) in pixels → {name: (B, d) float32 array}."""
        x, self.last_align = self.preprocess(images_bgr, landmarks68)
        out = self.forward(x).numpy().astype(np.float32)
        return {k: np.ascontiguousarray(v) for k, v in split_output(out).items()}
