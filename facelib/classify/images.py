"""Pictures for the image arm: the one head crop every image model sees, colour loading (cached), augmentation,
and the per-picture features of the classic / pretrained baselines.

* **Crop** (:func:`load_image`): the detector's face box enlarged to the head (``HEAD_MARGIN`` × its longer side,
  square, centred — :func:`facelib.face3d.cameras.square_crop`), resized to ``image_size``; colour (RGB). Whole-frame
  fallback boxes are not face crops: those pictures are used whole.
* **Augmentation** (:func:`augment_unit` on [0, 1] batches, :func:`augment_batch` on normalised ones; training
  only, batched on tensors): random resized crop (scale 0.75–1, aspect 0.9–1.1, so
  also a shift), colour jitter (brightness, contrast, saturation ±0.2), horizontal flips unless the protocol
  forbids them (cross-angle: a flipped profile is its mirror view, which is held out).
* **Features** (:func:`picture_features`): ``hog`` (scikit-image HOG on the gray 64-px crop, Eng et al. 2019),
  ``pixels`` (gray 32-px crop, the Fisherfaces input), ``dlib`` (dlib's 128-d face descriptor from the 68
  landmarks, :mod:`facelib.fitting.face_embedding`, pretrained on faces).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from skimage.feature import hog

from ..face3d.cameras import landmarks_136_to_68, square_crop
from ..io import read_image
from ..fitting.face_embedding import embed

HEAD_MARGIN = 1.6  # × the face box's longer side: the whole head (the 3DDFA crop uses 1.3 around the face)
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
FEATURE_INPUTS = ("hog", "pixels", "dlib")
_CACHE: dict[tuple, np.ndarray] = {}


def load_image(path: str, image_size: int, box=None, gray: bool = False) -> np.ndarray:
    """RGB uint8 ``(S, S, 3)`` (or gray ``(S, S)``) head crop of ``path``; cached in memory."""
    key = (str(path), int(image_size), None if box is None else tuple(float(v) for v in list(box)[:4]), gray)
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    img = read_image(path, gray=gray)  # the one reader: any format, with or without an extension
    if img is None:
        raise FileNotFoundError(f"cannot decode image {path}")
    if not gray:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if box is not None:
        img = square_crop(img, box, margin=HEAD_MARGIN)
    img = cv2.resize(img, (int(image_size), int(image_size)), interpolation=cv2.INTER_AREA)
    _CACHE[key] = img
    return img


def load_images(paths, image_size: int, boxes=None, gray: bool = False) -> np.ndarray:
    boxes = [None] * len(paths) if boxes is None else list(boxes)
    shape = (0, image_size, image_size) if gray else (0, image_size, image_size, 3)
    if not len(paths):
        return np.zeros(shape, dtype=np.uint8)
    return np.stack([load_image(p, image_size, b, gray) for p, b in zip(paths, boxes)])


def to_tensor(X: np.ndarray) -> torch.Tensor:
    """uint8 (B, S, S, 3) RGB (or (B, S, S) gray, replicated) → float (B, 3, S, S), ImageNet-normalised."""
    return normalize(unit_tensor(X))


def unit_tensor(X: np.ndarray, as_float: bool = True) -> torch.Tensor:
    """uint8 (B, S, S, 3) RGB (or (B, S, S) gray, replicated) → (B, 3, S, S) in [0, 1] (``as_float``) or still
    uint8 (0–255), contiguous: the training loop converts a whole split once with this, then indexes batches."""
    x = torch.from_numpy(np.ascontiguousarray(X))
    x = x.unsqueeze(1).expand(-1, 3, -1, -1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
    return x.float().div_(255.0).contiguous() if as_float else x.contiguous()


def normalize(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] (B, 3, S, S) → ImageNet-normalised, on the batch's device (a uint8 batch is scaled first)."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    mean, std = IMAGENET_MEAN.to(x.device), IMAGENET_STD.to(x.device)
    return (x - mean).div_(std)


def augment_unit(x: torch.Tensor, gen: torch.Generator, flip: bool = True, scale=(0.75, 1.0),
                 ratio=(0.9, 1.1), jitter: float = 0.2) -> torch.Tensor:
    """Random resized crop + colour jitter (+ horizontal flip) of a [0, 1] batch (B, 3, S, S), batched on the
    batch's device (random numbers drawn on the CPU from ``gen``, so a run is seeded the same on every device).
    Resampling is bilinear with reflected borders, so it commutes with the per-channel normalisation: this equals
    :func:`augment_batch` on the normalised batch (up to rounding) and saves its de- and re-normalisation."""
    B, _, S, _ = x.shape
    dev = x.device
    u = torch.rand(B, 6, generator=gen)
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    r = ratio[0] + (ratio[1] - ratio[0]) * u[:, 1]
    w, h = torch.sqrt(area * r).clamp(max=1.0), torch.sqrt(area / r).clamp(max=1.0)
    cx, cy = (1 - w) * (2 * u[:, 2] - 1), (1 - h) * (2 * u[:, 3] - 1)  # centre within [-1+w, 1-w]
    sx = torch.where(u[:, 4] < 0.5, -w, w) if flip else w
    theta = torch.zeros(B, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sx, cx, h, cy
    grid = F.affine_grid(theta.to(dev), list(x.shape), align_corners=False)
    img = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    # colour jitter: brightness, contrast, saturation (in place on the fresh resampled batch)
    j = (1 + jitter * (2 * torch.rand(B, 3, 1, 1, 1, generator=gen) - 1)).to(dev, x.dtype)
    img.mul_(j[:, 0])
    m = img.mean(dim=(1, 2, 3), keepdim=True)
    img.sub_(m).mul_(j[:, 1]).add_(m)
    gray = img.mean(dim=1, keepdim=True)
    return img.sub_(gray).mul_(j[:, 2]).add_(gray).clamp_(0, 1)


def augment_batch(x: torch.Tensor, gen: torch.Generator, flip: bool = True, scale=(0.75, 1.0),
                  ratio=(0.9, 1.1), jitter: float = 0.2) -> torch.Tensor:
    """Random resized crop + colour jitter (+ horizontal flip) of a normalised batch (B, 3, S, S)
    (:func:`augment_unit` in [0, 1] space, between de- and re-normalisation)."""
    mean, std = IMAGENET_MEAN.to(x.device), IMAGENET_STD.to(x.device)
    return normalize(augment_unit(x * std + mean, gen, flip=flip, scale=scale, ratio=ratio, jitter=jitter))


_FEATURES: dict[tuple, np.ndarray] = {}


def picture_features(df, kind: str, boxes=None) -> np.ndarray:
    """Per-picture feature matrix (n, d) of the table's pictures for a classic / pretrained baseline; cached in
    memory per (kind, pictures, boxes), so the protocols of one study compute each picture's features once."""
    paths = df["path"].astype(str).tolist()
    key = (kind, tuple(paths), None if boxes is None else tuple(None if b is None else tuple(map(float, b[:4]))
                                                               for b in boxes))
    if key not in _FEATURES:
        _FEATURES[key] = _features(df, kind, paths, boxes)
    return _FEATURES[key]


def _features(df, kind: str, paths: list[str], boxes) -> np.ndarray:
    if kind == "hog":

        imgs = load_images(paths, 64, boxes, gray=True)
        return np.stack([hog(im, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2),
                             feature_vector=True) for im in imgs]).astype(np.float32)
    if kind == "pixels":
        return load_images(paths, 32, boxes, gray=True).reshape(len(paths), -1).astype(np.float32) / 255.0
    if kind == "dlib":
        if "landmarks" not in df.columns:
            raise ValueError("input 'dlib' needs the coefficient table's 68 'landmarks'")
        out = []
        with torch.no_grad():
            for p, lm in zip(paths, df["landmarks"]):
                bgr = read_image(p)
                if bgr is None:
                    raise FileNotFoundError(f"cannot decode image {p}")
                img = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                t = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None]
                out.append(embed(t, torch.as_tensor(landmarks_136_to_68(lm), dtype=torch.float32)[None])[0].numpy())
        return np.stack(out).astype(np.float32)
    raise ValueError(f"unknown picture feature {kind!r}; choose from {FEATURE_INPUTS}")
