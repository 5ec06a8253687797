"""FaceBoxes face detector (the detector 3DDFA_V2 ships, weights ``FaceBoxesProd.pth``) and the face-picking rule.

Architecture (Zhang et al. 2017, "FaceBoxes: a CPU real-time face detector with high accuracy"), as published in
3DDFA_V2's ``FaceBoxes/``: two "rapidly digested" CReLU convolutions (7×7/4 and 5×5/2, each followed by a 3×3/2
max-pool), three Inception blocks (128 channels, stride 32), then two 1×1→3×3/2 stages (stride 64 and 128). Three
detection heads of 3×3 convolutions predict, for every anchor, 4 box offsets and 2 class logits. Anchors: on the
stride-32 map sizes 32 (densified 4×4 per cell), 64 (densified 2×2) and 128; 256 on the stride-64 map; 512 on the
stride-128 map. Decoding is SSD's, variances (0.1, 0.2).

Input: BGR float minus the per-channel means (104, 117, 123), no scaling.

Downscaling for speed. 3DDFA_V2 shrinks every image whose height exceeds 720 or width exceeds 1080 before
detection (``FaceBoxes.py``: ``scale_flag``), and maps the boxes back. We do the same with a single bound on the
long side, ``max_side`` (default 384): KDEF's 562×762 images are detected at 283×384, where a frontal face is
about 130 px, well above the smallest anchor (32 px); all 698 non-black dev KDEF images still give exactly one
face at this scale (see ``benchmarks/bench_reconstruct.py``). Images are never enlarged. ``max_side=None`` keeps
3DDFA_V2's own 720×1080 bound.

Batching: images of the same (detection-scale) size are stacked and run in one forward pass.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import assets, config

MEAN_BGR = (104.0, 117.0, 123.0)
VARIANCES = (0.1, 0.2)
STEPS = (32, 64, 128)
MIN_SIZES = ((32, 64, 128), (256,), (512,))
DENSITY = {32: 4, 64: 2}  # anchors of these sizes are densified n×n inside each cell
TDDFA_MAX_HW = (720, 1080)  # 3DDFA_V2's own bound (height, width)

BLANK_STD = 2.0  # an image whose pixel standard deviation is below this is blank (e.g. KDEF's black placeholders)
FALLBACK_MAX_SIDE = 512  # whole-frame fallback only for small images ...
FALLBACK_ASPECT = (0.75, 1.6)  # ... whose height / width is that of a face crop


# ------------------------------------------------------------------------------------------------ network
class ConvBN(nn.Module):
    """conv (no bias) → BN → ReLU."""

    def __init__(self, cin, cout, k, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class CReLU(nn.Module):
    """conv → BN → concat(x, −x) → ReLU: doubles the channels at half the convolution cost."""

    def __init__(self, cin, cout, k, stride, padding):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5)

    def forward(self, x):
        x = self.bn(self.conv(x))
        return F.relu(torch.cat([x, -x], 1))


class Inception(nn.Module):
    """128 → 4 branches of 32 channels: 1×1; avgpool+1×1; 1×1→3×3; 1×1→3×3→3×3."""

    def __init__(self):
        super().__init__()
        self.branch1x1 = ConvBN(128, 32, 1)
        self.branch1x1_2 = ConvBN(128, 32, 1)
        self.branch3x3_reduce = ConvBN(128, 24, 1)
        self.branch3x3 = ConvBN(24, 32, 3, padding=1)
        self.branch3x3_reduce_2 = ConvBN(128, 24, 1)
        self.branch3x3_2 = ConvBN(24, 32, 3, padding=1)
        self.branch3x3_3 = ConvBN(32, 32, 3, padding=1)

    def forward(self, x):
        a = self.branch1x1(x)
        b = self.branch1x1_2(F.avg_pool2d(x, 3, stride=1, padding=1))
        c = self.branch3x3(self.branch3x3_reduce(x))
        d = self.branch3x3_3(self.branch3x3_2(self.branch3x3_reduce_2(x)))
        return torch.cat([a, b, c, d], 1)


class FaceBoxesNet(nn.Module):
    """Returns (loc (n, P, 4), face probability (n, P)) for P anchors in ``prior_boxes`` order."""

    def __init__(self):
        super().__init__()
        self.conv1 = CReLU(3, 24, 7, stride=4, padding=3)
        self.conv2 = CReLU(48, 64, 5, stride=2, padding=2)
        self.inception1 = Inception()
        self.inception2 = Inception()
        self.inception3 = Inception()
        self.conv3_1 = ConvBN(128, 128, 1)
        self.conv3_2 = ConvBN(128, 256, 3, stride=2, padding=1)
        self.conv4_1 = ConvBN(256, 128, 1)
        self.conv4_2 = ConvBN(128, 256, 3, stride=2, padding=1)
        n_anchors = (21, 1, 1)  # 16 + 4 + 1 on the first map
        chans = (128, 256, 256)
        self.loc = nn.Sequential(*[nn.Conv2d(c, a * 4, 3, padding=1) for c, a in zip(chans, n_anchors)])
        self.conf = nn.Sequential(*[nn.Conv2d(c, a * 2, 3, padding=1) for c, a in zip(chans, n_anchors)])

    def forward(self, x):
        x = F.max_pool2d(self.conv1(x), 3, stride=2, padding=1)
        x = F.max_pool2d(self.conv2(x), 3, stride=2, padding=1)
        s1 = self.inception3(self.inception2(self.inception1(x)))
        s2 = self.conv3_2(self.conv3_1(s1))
        s3 = self.conv4_2(self.conv4_1(s2))
        n = x.shape[0]
        locs, confs = [], []
        for src, lh, ch in zip((s1, s2, s3), self.loc, self.conf):
            locs.append(lh(src).permute(0, 2, 3, 1).reshape(n, -1, 4))
            confs.append(ch(src).permute(0, 2, 3, 1).reshape(n, -1, 2))
        loc = torch.cat(locs, 1)
        prob = torch.softmax(torch.cat(confs, 1), dim=-1)[..., 1]
        return loc, prob


def prior_boxes(height: int, width: int) -> np.ndarray:
    """Anchors (P, 4) as (cx, cy, w, h), fractions of the image, in the order the heads emit them:
    per feature map, row-major over cells; per cell, anchor sizes in order; densified anchors row-major
    (y outer, x inner) over offsets k/n of the cell."""
    out = []
    for step, sizes in zip(STEPS, MIN_SIZES):
        fh, fw = math.ceil(height / step), math.ceil(width / step)
        ii, jj = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")  # (fh, fw)
        per_cell = []
        for s in sizes:
            n = DENSITY.get(s, 1)
            offs = np.arange(n) / n if n > 1 else np.array([0.5])
            oy, ox = np.meshgrid(offs, offs, indexing="ij")
            cx = (jj[..., None] + ox.ravel()) * step / width  # (fh, fw, n*n)
            cy = (ii[..., None] + oy.ravel()) * step / height
            wh = np.broadcast_to([s / width, s / height], cx.shape + (2,))
            per_cell.append(np.concatenate([cx[..., None], cy[..., None], wh], -1))
        out.append(np.concatenate(per_cell, axis=2).reshape(-1, 4))
    return np.concatenate(out, 0).astype(np.float32)


def decode_boxes(loc: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """SSD decoding: (…, P, 4) offsets → (…, P, 4) x0, y0, x1, y1 as image fractions."""
    centre = priors[:, :2] + loc[..., :2] * VARIANCES[0] * priors[:, 2:]
    size = priors[:, 2:] * torch.exp(loc[..., 2:] * VARIANCES[1])
    return torch.cat([centre - size / 2, centre + size / 2], -1)


# ------------------------------------------------------------------------------------------------ weights
def load_state_strict(net: nn.Module, state, what: str = "FaceBoxes") -> nn.Module:
    """Load a checkpoint (path, ``{'state_dict': …}`` or a state dict), stripping any ``module.`` prefix, and
    insist every key matches: a missing or unexpected key is an error naming the keys."""
    if isinstance(state, (str, Path)):
        state = torch.load(str(state), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    state = OrderedDict((k[len("module."):] if k.startswith("module.") else k, v) for k, v in state.items())
    expected = set(net.state_dict())
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise RuntimeError(f"{what} weights do not match the network: {len(missing)} missing key(s) "
                           f"{missing[:8]}{' …' if len(missing) > 8 else ''}, {len(unexpected)} unexpected key(s) "
                           f"{unexpected[:8]}{' …' if len(unexpected) > 8 else ''}")
    bad = [k for k, v in net.state_dict().items() if tuple(v.shape) != tuple(state[k].shape)]
    if bad:
        raise RuntimeError(f"{what} weights have wrong shapes for {bad[:8]}")
    net.load_state_dict(state, strict=True)
    return net


# ------------------------------------------------------------------------------------------------ detector
class Detections(np.ndarray):
    """(k, 5) float32 array x0, y0, x1, y1, score, sorted by score; ``image_std`` carries the source image's
    pixel standard deviation so ``pick_face`` can refuse a whole-frame fallback on a blank image."""

    image_std: float | None = None

    def __array_finalize__(self, obj):
        self.image_std = getattr(obj, "image_std", None)


def as_bgr(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2BGR)
    if img.ndim == 3 and img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.ndim == 3 and img.shape[2] == 3:
        return img
    raise ValueError(f"expected a BGR (h, w, 3) or grayscale (h, w) image, got shape {img.shape}")


def image_std(img: np.ndarray) -> float:
    """Pixel standard deviation of the image's central 90 % (both axes), on a subsampled grid: cheap, and blind
    to the thin coloured edge some of KDEF's black placeholders carry (AF10AFFR: one coloured column, std 8.4
    over the whole frame, 0 inside)."""
    img = np.asarray(img)
    h, w = img.shape[:2]
    step = max(1, min(h, w) // 128)
    mh, mw = h // 20, w // 20
    core = img[mh:h - mh:step, mw:w - mw:step]
    return float(core.std()) if core.size else 0.0


class FaceBoxesDetector:
    """FaceBoxes on CPU/GPU; ``__call__(images) -> [Detections (k, 5)]`` in the input images' pixel coordinates.

    ``conf_threshold``: minimum face probability kept (3DDFA_V2's ``vis_thres`` 0.5). ``nms_threshold``: IoU of
    the greedy NMS (3DDFA_V2: 0.3). ``max_side``: detection-scale bound of the long side (see module docstring).
    ``batch_size``: images per forward pass.
    """

    def __init__(self, weights=None, device: str = "cpu", conf_threshold: float = 0.5, nms_threshold: float = 0.3,
                 assets_dir=None, max_side: int | None = 384, batch_size: int = 16, top_k: int = 5000,
                 keep_top_k: int = 750):
        self.device = torch.device(config.resolve_device(device))
        if weights is None:
            weights = assets.resolve("faceboxes", assets_dir)
        self.weights_path = str(weights) if isinstance(weights, (str, Path)) else None
        self.net = load_state_strict(FaceBoxesNet(), weights, "FaceBoxes").eval().to(self.device)
        # channels_last: the (n, h, w, 3) uint8 batch permuted to NCHW already has this layout, and oneDNN's
        # convolutions / pooling are faster in it on CPU
        self.net = self.net.to(memory_format=torch.channels_last)
        self.conf_threshold = float(conf_threshold)
        self.nms_threshold = float(nms_threshold)
        self.max_side = max_side
        self.batch_size = int(batch_size)
        self.top_k, self.keep_top_k = top_k, keep_top_k
        self._priors: dict[tuple[int, int], torch.Tensor] = {}

    # -- scaling
    def scale_for(self, h: int, w: int) -> float:
        """Factor (≤ 1) by which an h×w image is shrunk before detection."""
        if self.max_side is None:  # 3DDFA_V2's rule
            s = 1.0
            if h > TDDFA_MAX_HW[0]:
                s = TDDFA_MAX_HW[0] / h
            if w * s > TDDFA_MAX_HW[1]:
                s *= TDDFA_MAX_HW[1] / (w * s)
            return s
        return min(1.0, self.max_side / max(h, w))

    def _priors_for(self, h: int, w: int) -> torch.Tensor:
        key = (h, w)
        if key not in self._priors:
            self._priors[key] = torch.from_numpy(prior_boxes(h, w)).to(self.device)
        return self._priors[key]

    def prepare(self, img: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Detection-scale BGR image and the (x, y) factors mapping its pixels back to the original."""
        img = as_bgr(img)
        h, w = img.shape[:2]
        s = self.scale_for(h, w)
        if s < 1.0:
            hs, ws = max(1, int(h * s)), max(1, int(w * s))
            small = cv2.resize(img, (ws, hs), interpolation=cv2.INTER_AREA)
            return small, w / ws, h / hs
        return img, 1.0, 1.0

    def _postprocess(self, loc: torch.Tensor, prob: torch.Tensor, priors: torch.Tensor, hs: int, ws: int,
                     fx: float, fy: float) -> np.ndarray:
        from torchvision.ops import nms  # torchvision (seconds to import): only when detecting

        keep = prob > self.conf_threshold
        if not bool(keep.any()):
            return np.zeros((0, 5), np.float32)
        scores = prob[keep]
        boxes = decode_boxes(loc[keep], priors[keep])
        if scores.numel() > self.top_k:
            scores, order = scores.topk(self.top_k)
            boxes = boxes[order]
        boxes = boxes * torch.tensor([ws * fx, hs * fy, ws * fx, hs * fy], dtype=boxes.dtype, device=boxes.device)
        kept = nms(boxes.float(), scores.float(), self.nms_threshold)[: self.keep_top_k]  # sorted by score
        return torch.cat([boxes[kept], scores[kept, None]], 1).float().cpu().numpy()

    @torch.inference_mode()
    def detect_prepared(self, smalls: list[np.ndarray], factors: list[tuple[float, float]]) -> list[np.ndarray]:
        """Detection on images already at detection scale (``prepare``); same-size images are batched."""
        out: list[np.ndarray | None] = [None] * len(smalls)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(smalls):
            groups.setdefault(im.shape[:2], []).append(i)
        mean = torch.tensor(MEAN_BGR, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        for (hs, ws), idx in groups.items():
            priors = self._priors_for(hs, ws)
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start:start + self.batch_size]
                x = torch.from_numpy(np.stack([smalls[i] for i in chunk])).to(self.device)
                x = (x.permute(0, 3, 1, 2).float() - mean).contiguous(memory_format=torch.channels_last)
                loc, prob = self.net(x)
                for j, i in enumerate(chunk):
                    out[i] = self._postprocess(loc[j], prob[j], priors, hs, ws, *factors[i])
        return out

    def __call__(self, images: list[np.ndarray]) -> list[Detections]:
        if isinstance(images, np.ndarray) and images.ndim in (2, 3) and images.dtype == np.uint8:
            raise TypeError("FaceBoxesDetector takes a list of images; wrap a single image in a list")
        smalls, factors, stds = [], [], []
        for img in images:
            small, fx, fy = self.prepare(img)
            smalls.append(small)
            factors.append((fx, fy))
            stds.append(image_std(small))
        dets = self.detect_prepared(smalls, factors)
        result = []
        for d, sd in zip(dets, stds):
            d = np.ascontiguousarray(d, dtype=np.float32).view(Detections)
            d.image_std = sd
            result.append(d)
        return result


# ------------------------------------------------------------------------------------------------ picking
def looks_like_face_crop(image_shape) -> bool:
    """The whole-frame fallback rule: a small image (long side ≤ 512 px) with a face crop's aspect ratio
    (height / width in [0.75, 1.6]) – e.g. FEI's 162×193 spatially-normalised crops, whose cut forehead and chin
    can hide the face from a detector (FaceBoxes finds 378 of the 400; the other 22 fall back). On the 378 it
    does find, regressing from the whole frame instead of the detector box moves the 68 landmarks by 2.9 px on
    average (162-px-wide images), so the fallback box is a fair stand-in. A large photograph (KDEF's 562×762)
    never falls back: a miss there is a miss."""
    h, w = int(image_shape[0]), int(image_shape[1])
    if h <= 0 or w <= 0:
        return False
    return max(h, w) <= FALLBACK_MAX_SIDE and FALLBACK_ASPECT[0] <= h / w <= FALLBACK_ASPECT[1]


def pick_face(boxes, image_shape, fallback: bool = True, image: np.ndarray | None = None):
    """Choose the face to reconstruct. Returns ``(box5, source)``:

    - the most confident detection → ``(box, "detector")``;
    - no detection, ``fallback`` true, the image not blank and shaped like a tight face crop
      (``looks_like_face_crop``) → the whole frame ``[0, 0, w, h, 0.0]`` with ``"whole_frame"``;
    - otherwise ``(None, "no_face")``.

    Blank test: pixel standard deviation below ``BLANK_STD``, read from ``image`` when given, else from the
    ``image_std`` that ``FaceBoxesDetector`` attaches to its output, else from ``image_shape`` when an image array
    is passed there. With none of these the blank test cannot be made and no fallback is given.
    """
    attached_std = getattr(boxes, "image_std", None)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 5) if boxes is not None else np.zeros((0, 5))
    if len(boxes):
        return boxes[int(np.argmax(boxes[:, 4]))].copy(), "detector"
    if not fallback:
        return None, "no_face"
    std = None
    if image is not None:
        std = image_std(image)
    elif attached_std is not None:
        std = attached_std
    elif isinstance(image_shape, np.ndarray) and image_shape.ndim >= 2:
        std = image_std(image_shape)
        image_shape = image_shape.shape
    if std is None or std < BLANK_STD:
        return None, "no_face"
    if not looks_like_face_crop(image_shape):
        return None, "no_face"
    h, w = int(image_shape[0]), int(image_shape[1])
    return np.array([0.0, 0.0, w, h, 0.0], np.float32), "whole_frame"
