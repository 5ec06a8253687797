"""3DDFA_V2 regressor: MobileNetV1 ×0.5 (``mb05_120x120.pth``) → 62 parameters → pose, α, β and 68 landmarks.

Pipeline (as in 3DDFA_V2's ``TDDFA.py`` / ``utils/functions.py`` / ``utils/tddfa_util.py``):

1. Crop rule (``crop_box``): from a detector box of mean side m = (w + h) / 2, a square of side int(1.58 m) centred
   on the box centre moved down by 0.14 m; pixels outside the image are zero (``crop_image``, integer-rounded
   corners as 3DDFA_V2's ``crop_img``).
2. The crop, BGR, is resized to 120×120 (bilinear) and normalised (x − 127.5) / 128 (``preprocess``).
3. The network's ``fc_param`` output × std + mean (``param_mean_std_62d_120x120.pkl``) = 62 parameters:
   pose 12 (3×4 [sR | t], row-major), α 40 (shape), β 10 (expression).
4. 68 landmarks: the BFM keypoint vertices (``keypoints_sim.npy``) of S = ū + W_shp α + W_exp β, transformed by
   [sR | t] into the 120×120 crop frame, y flipped (y' = 120 − y) and x shifted by −1 as 3DDFA_V2's
   ``similar_transform`` does, then scaled and offset back into image pixels with the crop box.

About ``fc_lm``: the checkpoint also holds a 136-d landmark head. 3DDFA_V2 never uses it at inference – its
``load_model`` copies only ``fc_param`` into the model's single head and drops ``fc_lm``; its 68 landmarks always
come from the 3DMM parameters (``recon_vers``). The head is nonetheless trained: read as crop fractions
0.5·v + 0.5 its points agree with the BFM-keypoint landmarks to about 2 px on KDEF (faces ≈ 300 px wide; see
``benchmarks/bench_reconstruct.py``). We follow 3DDFA_V2: ``landmarks`` are the BFM-keypoint ones (consistent
with the returned pose/α/β by construction); the head's output is returned as ``landmarks_fc`` for comparison.
Both come from the same forward pass.
"""
from __future__ import annotations

import pickle

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import assets, config
from .cameras import crop_box, crop_image
from .detect import as_bgr, load_state_strict

SIZE = 120
NORM_MEAN, NORM_STD = 127.5, 128.0
N_POSE, N_SHP, N_EXP = 12, 40, 10


# ------------------------------------------------------------------------------------------------ network
class DWBlock(nn.Module):
    """depthwise 3×3 → BN → ReLU → pointwise 1×1 → BN → ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv_dw = nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False)
        self.bn_dw = nn.BatchNorm2d(cin)
        self.conv_sep = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn_sep = nn.BatchNorm2d(cout)

    def forward(self, x):
        x = F.relu(self.bn_dw(self.conv_dw(x)))
        return F.relu(self.bn_sep(self.conv_sep(x)))


# (name, in, out, stride) at width 1.0; MobileNetV1 layout
_BLOCKS = (("dw2_1", 32, 64, 1), ("dw2_2", 64, 128, 2), ("dw3_1", 128, 128, 1), ("dw3_2", 128, 256, 2),
           ("dw4_1", 256, 256, 1), ("dw4_2", 256, 512, 2), ("dw5_1", 512, 512, 1), ("dw5_2", 512, 512, 1),
           ("dw5_3", 512, 512, 1), ("dw5_4", 512, 512, 1), ("dw5_5", 512, 512, 1), ("dw5_6", 512, 1024, 2),
           ("dw6", 1024, 1024, 1))


class MobileNetV1(nn.Module):
    """MobileNetV1 with a width factor; two linear heads on the pooled features: ``fc_param`` (62) and
    ``fc_lm`` (136). ``forward`` returns (params (n, 62), lm (n, 136)), both as the network emits them."""

    def __init__(self, widen: float = 0.5, num_params: int = 62, num_lm: int = 136):
        super().__init__()
        c = lambda v: int(v * widen)  # noqa: E731
        self.conv1 = nn.Conv2d(3, c(32), 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c(32))
        for name, cin, cout, stride in _BLOCKS:
            setattr(self, name, DWBlock(c(cin), c(cout), stride))
        self.fc_param = nn.Linear(c(1024), num_params)
        self.fc_lm = nn.Linear(c(1024), num_lm)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        for name, *_ in _BLOCKS:
            x = getattr(self, name)(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc_param(x), self.fc_lm(x)


# ------------------------------------------------------------------------------------------------ crop rule
def crop_and_resize(img: np.ndarray, box) -> tuple[np.ndarray, np.ndarray]:
    """(120×120×3 uint8 BGR crop, roi) for one detector box."""
    roi = crop_box(box)
    crop = crop_image(as_bgr(img), roi)
    return cv2.resize(crop, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR), roi


def preprocess(crops: list[np.ndarray] | np.ndarray) -> torch.Tensor:
    """120×120 BGR uint8 crops → float tensor (n, 3, 120, 120), (x − 127.5) / 128."""
    arr = np.ascontiguousarray(np.stack(list(crops)) if not isinstance(crops, np.ndarray) else crops)
    x = torch.from_numpy(arr).permute(0, 3, 1, 2).float()
    return (x - NORM_MEAN) / NORM_STD


def split_params(params62: np.ndarray) -> dict[str, np.ndarray]:
    p = np.asarray(params62, dtype=np.float32).reshape(-1, 62)
    return {"pose": p[:, :N_POSE], "alpha": p[:, N_POSE:N_POSE + N_SHP], "beta": p[:, N_POSE + N_SHP:]}


def roi_to_image(pts_crop: np.ndarray, rois: np.ndarray) -> np.ndarray:
    """Points (n, 2, k) in 120-pixel crop coordinates → image pixels with each ROI's scale and offset."""
    rois = np.asarray(rois, dtype=np.float64).reshape(-1, 4)
    sx = ((rois[:, 2] - rois[:, 0]) / SIZE)[:, None]
    sy = ((rois[:, 3] - rois[:, 1]) / SIZE)[:, None]
    x = pts_crop[:, 0] * sx + rois[:, 0:1]
    y = pts_crop[:, 1] * sy + rois[:, 1:2]
    return np.stack([x, y], 1)


def coefficient_sigma(assets_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """(σ_α (40,), σ_β (10,)) float64: standard deviations of 3DDFA_V2's training parameters
    (``param_mean_std_62d_120x120.pkl``) — the whitening of α, β in fitting and the spread of the synthetic set."""
    with open(assets.resolve("param_mean_std", assets_dir), "rb") as fh:
        std = np.asarray(pickle.load(fh)["std"], dtype=np.float64).reshape(-1)
    return std[12:52].copy(), std[52:62].copy()


# ------------------------------------------------------------------------------------------------ BFM keypoints
class BFMKeypoints:
    """The 68 keypoint rows of 3DDFA's BFM bases: mean (3·68), W_shp (3·68, 40), W_exp (3·68, 10), x,y,z
    interleaved per vertex."""

    def __init__(self, assets_dir=None):

        load = lambda n: np.load(assets.resolve(n, assets_dir))  # noqa: E731
        kp = load("bfm_keypoints").astype(np.int64).ravel()
        u = (load("bfm_u_shp") + load("bfm_u_exp")).astype(np.float64).ravel()
        self.u = u[kp]
        self.w_shp = np.load(assets.resolve("bfm_w_shp", assets_dir), mmap_mode="r")[kp].astype(np.float64)
        self.w_exp = np.load(assets.resolve("bfm_w_exp", assets_dir), mmap_mode="r")[kp].astype(np.float64)

    def project(self, params62: np.ndarray) -> np.ndarray:
        """(n, 62) → (n, 3, 68) points in the 120×120 crop frame (3DDFA's ``recon_vers`` + ``similar_transform``
        before the ROI mapping: x − 1, y flipped as 120 − y)."""
        p = np.asarray(params62, dtype=np.float64).reshape(-1, 62)
        pose = p[:, :N_POSE].reshape(-1, 3, 4)
        shape = self.u[None] + p[:, N_POSE:N_POSE + N_SHP] @ self.w_shp.T + p[:, N_POSE + N_SHP:] @ self.w_exp.T
        verts = shape.reshape(-1, 68, 3).transpose(0, 2, 1)  # (n, 3, 68)
        pts = pose[:, :, :3] @ verts + pose[:, :, 3:]
        pts[:, 0] -= 1.0
        pts[:, 2] -= 1.0
        pts[:, 1] = SIZE - pts[:, 1]
        return pts


# ------------------------------------------------------------------------------------------------ regressor
class TDDFARegressor:
    """``__call__(images, boxes)`` → dict of arrays, one row per (image, box):
    ``alpha`` (n, 40), ``beta`` (n, 10), ``pose`` (n, 12), ``params62`` (n, 62), ``landmarks`` (n, 136:
    x0..x67, y0..y67 in image pixels, from the BFM keypoints), ``landmarks_fc`` (n, 136, the unused ``fc_lm``
    head read as crop fractions, image pixels), ``roi`` (n, 4)."""

    def __init__(self, device: str = "cpu", assets_dir=None, weights=None, batch_size: int = 64):

        self.device = torch.device(config.resolve_device(device))
        if weights is None:
            weights = assets.resolve("mb05", assets_dir)
        self.net = load_state_strict(MobileNetV1(0.5), weights, "3DDFA_V2 mb05").eval().to(self.device)
        self.net = self.net.to(memory_format=torch.channels_last)
        with open(assets.resolve("param_mean_std", assets_dir), "rb") as fh:
            ms = pickle.load(fh)
        self.param_mean = np.asarray(ms["mean"], dtype=np.float32)
        self.param_std = np.asarray(ms["std"], dtype=np.float32)
        self.bfm = BFMKeypoints(assets_dir)
        self.batch_size = int(batch_size)

    @torch.inference_mode()
    def forward_crops(self, crops: list[np.ndarray] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """120×120 BGR crops → (de-normalised params (n, 62), raw fc_lm output (n, 136))."""
        params, lms = [], []
        n = len(crops)
        for start in range(0, n, self.batch_size):
            x = preprocess(crops[start:start + self.batch_size]).to(self.device)
            x = x.contiguous(memory_format=torch.channels_last)
            p, lm = self.net(x)
            params.append(p.float().cpu().numpy())
            lms.append(lm.float().cpu().numpy())
        if not params:
            return np.zeros((0, 62), np.float32), np.zeros((0, 136), np.float32)
        p = np.concatenate(params) * self.param_std + self.param_mean
        return p.astype(np.float32), np.concatenate(lms).astype(np.float32)

    def decode(self, params62: np.ndarray, lm_raw: np.ndarray, rois: np.ndarray) -> dict[str, np.ndarray]:
        n = len(params62)
        out = split_params(params62)
        out["params62"] = np.asarray(params62, np.float32).reshape(n, 62)
        rois = np.asarray(rois, np.float64).reshape(n, 4)
        pts = roi_to_image(self.bfm.project(params62)[:, :2], rois)  # (n, 2, 68)
        out["landmarks"] = pts.reshape(n, 136).astype(np.float32)
        frac = 0.5 * np.asarray(lm_raw, np.float64).reshape(n, 2, 68) + 0.5
        fc = np.stack([rois[:, 0:1] + frac[:, 0] * (rois[:, 2:3] - rois[:, 0:1]),
                       rois[:, 1:2] + frac[:, 1] * (rois[:, 3:4] - rois[:, 1:2])], 1)
        out["landmarks_fc"] = fc.reshape(n, 136).astype(np.float32)
        out["roi"] = rois.astype(np.float32)
        return out

    def __call__(self, images: list[np.ndarray], boxes: list) -> dict[str, np.ndarray]:
        if len(images) != len(boxes):
            raise ValueError(f"{len(images)} images but {len(boxes)} boxes")
        crops, rois = [], []
        for img, box in zip(images, boxes):
            crop, roi = crop_and_resize(img, box)
            crops.append(crop)
            rois.append(roi)
        params, lm_raw = self.forward_crops(crops)
        return self.decode(params, lm_raw, np.asarray(rois).reshape(-1, 4))
