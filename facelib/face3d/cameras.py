"""Cameras and crops: every mapping between image pixels, the 3DDFA crop and the fitting grid, in one place.

* The 3DDFA_V2 crop rule (:func:`crop_box`, :func:`crop_image`): a detector box → a square ROI.
* The fitting grid (:func:`crop_rgb`, :func:`image_to_crop`, :func:`crop_to_image`): the ROI resampled to size²
  with cv2's pixel-centre convention, and :func:`tddfa_crop_screen`, the 3DDFA scaled-orthographic camera
  (``MorphableModel.ortho_project_3ddfa``'s crop frame x = p_x − 1, y = 120 − p_y) on that grid.
* The image-classifier crop (:func:`square_crop`): a square of 1.3 × the box's longer side.
* Landmark layout and pose helpers (:func:`landmarks_136_to_68`, :func:`pose_yaw`).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

TDDFA_SIZE = 120
CROP_SCALE = 1.58
CROP_SHIFT = 0.14


# ------------------------------------------------------------------------------------------------ 3DDFA crop rule
def crop_box(box) -> np.ndarray:
    """3DDFA_V2's ``parse_roi_box_from_bbox``: detector box (x0, y0, x1, y1[, score]) → square ROI
    (sx, sy, ex, ey) of side int(1.58 · m), centred at the box centre shifted down by 0.14 · m, m = mean side."""
    x0, y0, x1, y1 = (float(v) for v in np.asarray(box, dtype=np.float64).ravel()[:4])
    m = ((x1 - x0) + (y1 - y0)) / 2.0
    cx = (x0 + x1) / 2.0
    cy = (y0 + y1) / 2.0 + CROP_SHIFT * m
    side = int(m * CROP_SCALE)
    sx, sy = cx - side / 2.0, cy - side / 2.0
    return np.array([sx, sy, sx + side, sy + side], dtype=np.float64)


def crop_image(img: np.ndarray, roi) -> np.ndarray:
    """Crop ``roi`` (corners rounded to integers) out of ``img``; the part outside the image is zero."""
    h, w = img.shape[:2]
    sx, sy, ex, ey = (int(round(v)) for v in roi)
    out = np.zeros((ey - sy, ex - sx) + img.shape[2:], dtype=img.dtype)
    ix0, iy0, ix1, iy1 = max(sx, 0), max(sy, 0), min(ex, w), min(ey, h)
    if ix1 > ix0 and iy1 > iy0:
        out[iy0 - sy:iy1 - sy, ix0 - sx:ix1 - sx] = img[iy0:iy1, ix0:ix1]
    return out



# ------------------------------------------------------------------------------------------------ fitting grid
def crop_rgb(image_bgr: np.ndarray, roi, size: int) -> np.ndarray:
    """The 3DDFA crop ``roi`` (sx, sy, ex, ey) of a BGR image, resized to size², RGB float32 0–1 (H, W, 3)."""
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



def tddfa_crop_screen(p: torch.Tensor, rois: torch.Tensor, size: int) -> torch.Tensor:
    """3DDFA crop frame (posed points p (B, N, 3), y up) → pixel coordinates of the size² crop of each ROI
    (B, 4), depth −p_z."""
    S = size
    side = (rois[:, 2] - rois[:, 0] + rois[:, 3] - rois[:, 1]) / 2
    off = (0.5 * S / side - 0.5).view(-1, 1)
    x = (p[..., 0] - 1) * (S / TDDFA_SIZE) + off
    y = (TDDFA_SIZE - p[..., 1]) * (S / TDDFA_SIZE) + off
    return torch.stack([x, y, -p[..., 2]], -1)


# ------------------------------------------------------------------------------------------------ classifier crop
def square_crop(img: np.ndarray, box, margin: float = 1.3) -> np.ndarray:
    """Square crop of side ``margin`` × the box's longer side, centred on the box, zero-padded at the border."""
    x0, y0, x1, y1 = (float(v) for v in list(box)[:4])
    side = margin * max(x1 - x0, y1 - y0)
    if not np.isfinite(side) or side < 4:
        return img
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    a, b = int(round(cx - side / 2)), int(round(cy - side / 2))
    s = int(round(side))
    h, w = img.shape[:2]
    out = np.zeros((s, s) + img.shape[2:], dtype=img.dtype)
    sx0, sy0, sx1, sy1 = max(a, 0), max(b, 0), min(a + s, w), min(b + s, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - b:sy1 - b, sx0 - a:sx1 - a] = img[sy0:sy1, sx0:sx1]
    return out



# ------------------------------------------------------------------------------------------------ layouts, pose
def landmarks_136_to_68(row) -> np.ndarray:
    v = np.asarray(row, np.float32).reshape(-1)
    return np.stack([v[:68], v[68:]], axis=1)


def pose_yaw(pose12) -> np.ndarray:
    """|yaw| proxy (radians) of 3DDFA poses (B, 12): asin of the z-row's x entry of the normalised rotation."""
    M = np.asarray(pose12, np.float64).reshape(-1, 3, 4)[:, :, :3]
    R = M / np.linalg.norm(M, axis=2, keepdims=True)
    return np.arcsin(np.clip(R[:, 2, 0], -1, 1))

