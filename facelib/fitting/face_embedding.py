"""dlib's face-recognition ResNet as a differentiable face descriptor (the fitting's perceptual term).

Three parts, one module each: the network parsed from dlib's ``.dat`` file (:mod:`facelib.fitting.dlib_net`), the
chip geometry and pyramid that crop a face as ``dlib.get_face_chip(img, shape, 150, 0.25)`` does
(:mod:`facelib.fitting.face_chip`), and here the descriptor of rendered images: :func:`embed` (differentiable crop +
descriptor; same person ⇔ Euclidean distance < 0.6) and :func:`perceptual_distance` (1 − cosine). The names of the
two other modules are re-exported here, where callers import them from.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .dlib_net import (MODEL_FILE, DlibFaceResNet, DlibModelFormatError, DlibNet, Layer, default_model_path,
                       load_dlib_resnet, parse_dlib_dat)
from .face_chip import (CHIP_PADDING, CHIP_SIZE, chip_from_image, chip_template, chips_to_tensor, detect_shape_5pt,
                        extract_chips, landmark_points, shape_to_array)

__all__ = ["embed", "perceptual_distance",
           # re-exported from dlib_net and face_chip
           "MODEL_FILE", "DlibFaceResNet", "DlibModelFormatError", "DlibNet", "Layer", "default_model_path",
           "load_dlib_resnet", "parse_dlib_dat", "CHIP_PADDING", "CHIP_SIZE", "chip_from_image", "chip_template",
           "chips_to_tensor", "detect_shape_5pt", "extract_chips", "landmark_points", "shape_to_array"]


def embed(images: torch.Tensor, landmarks: torch.Tensor | np.ndarray, model: DlibFaceResNet | None = None,
          padding: float = CHIP_PADDING) -> torch.Tensor:
    """Descriptors (B,128) of faces in images (B,3,H,W) RGB 0..255 (e.g. rendered), cropped with dlib's alignment
    from landmarks (B,5,2) or (B,68,2) in dlib's ordering (x, y pixels). Differentiable w.r.t. images (and
    landmarks when given as a tensor requiring grad)."""
    if model is None:
        model = _default_model()
    landmarks = landmark_points(landmarks, images.device)
    if landmarks.dim() == 2:
        landmarks = landmarks[None]
    if images.dim() == 3:
        images = images[None]
    chips = extract_chips(images.to(model.avg.dtype), landmarks, model.input_size[0], padding)
    return model(chips)


def perceptual_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The paper's perceptual loss per pair: 1 − cos(a, b) for descriptors (B,128)."""
    return 1 - F.cosine_similarity(a, b, dim=-1)


_MODEL_CACHE: dict[str, DlibFaceResNet] = {}


def _default_model() -> DlibFaceResNet:
    key = str(default_model_path())
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = load_dlib_resnet(key)
    return _MODEL_CACHE[key]
