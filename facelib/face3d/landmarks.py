"""Alternative 68-point landmarkers, chosen by parameter (``landmarks=`` in reconstruction).

- ``model``: the regressor's own landmarks (3DDFA_V2's BFM keypoints) — default, always available;
- ``dlib``: dlib's 68-point shape predictor from the ``face_recognition_models`` package (runtime ``dlib-bin``);
- ``fan``: FAN (``face-alignment``), the landmarker the paper used. Its weights are downloaded at run time by the
  library, which fails offline: place ``2DFAN4-cd938726ad.zip`` and ``s3fd-619a316812.pth`` in
  ``$TORCH_HOME/hub/checkpoints`` (see data/README.md); a clear error says so when they are absent.

Every landmarker takes BGR images and face boxes (x0, y0, x1, y1, score) and returns (n, 68, 2) pixel coordinates.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

LANDMARKERS = ("model", "dlib", "fan")


def face_recognition_models_dir() -> Path:
    """Folder of the ``face_recognition_models`` package, found without importing it (its __init__ needs
    pkg_resources, which current setuptools no longer ships)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("face_recognition_models is not installed (pip install face-recognition-models)")
    return Path(list(spec.submodule_search_locations)[0]) / "models"


class DlibLandmarker:
    name = "dlib"

    def __init__(self):
        import dlib

        self._dlib = dlib
        self.model_path = face_recognition_models_dir() / "shape_predictor_68_face_landmarks.dat"
        self._predictor = dlib.shape_predictor(str(self.model_path))

    def __call__(self, images_bgr: list[np.ndarray], boxes: list[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(images_bgr), 68, 2), np.float32)
        for i, (img, box) in enumerate(zip(images_bgr, boxes)):
            rgb = np.ascontiguousarray(img[:, :, ::-1])
            rect = self._dlib.rectangle(*(int(round(v)) for v in box[:4]))
            shape = self._predictor(rgb, rect)
            out[i] = [(p.x, p.y) for p in shape.parts()]
        return out


class FANLandmarker:
    name = "fan"
    WEIGHTS = ("2DFAN4-cd938726ad.zip", "s3fd-619a316812.pth")

    def __init__(self, device: str = "cpu"):
        hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
        missing = [w for w in self.WEIGHTS if not (hub / w).is_file()]
        if missing:
            raise FileNotFoundError(
                f"FAN weights {', '.join(missing)} not found in {hub}. face-alignment downloads them at run time, "
                "which fails offline: download them from https://www.adrianbulat.com/downloads/python-fan/ and put "
                f"them in {hub} (or set TORCH_HOME). See data/README.md.")
        import face_alignment

        self._fa = face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, device=device,
                                                face_detector="sfd")

    def __call__(self, images_bgr: list[np.ndarray], boxes: list[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(images_bgr), 68, 2), np.float32)
        for i, (img, box) in enumerate(zip(images_bgr, boxes)):
            preds = self._fa.get_landmarks_from_image(img[:, :, ::-1], detected_faces=[np.asarray(box[:4])])
            out[i] = preds[0][:, :2]
        return out


def make_landmarker(name: str, device: str = "cpu"):
    """``None`` for ``model`` (the backend's own landmarks), else a callable landmarker."""
    if name == "model":
        return None
    if name == "dlib":
        return DlibLandmarker()
    if name == "fan":
        return FANLandmarker(device)
    raise ValueError(f"landmarks must be one of {LANDMARKERS}, got {name!r}")
