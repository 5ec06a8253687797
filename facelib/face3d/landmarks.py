"""Alternative 68-point landmarkers, chosen by parameter (``landmark_source=`` in reconstruction).

- ``model``: the regressor's own landmarks (3DDFA_V2's BFM keypoints) — default, always available;
- ``dlib``: dlib's 68-point shape predictor from the ``face_recognition_models`` package (runtime ``dlib-bin``);
- ``fan``: FAN (``face-alignment``), the landmarker the paper used. Its two weight files are assets like every
  other model file (``fan_2d``, ``fan_s3fd``: ``$FACELIB_ASSETS/face_alignment/``, fetched into the cache unless
  ``FACELIB_OFFLINE=1``); they are copied to where face-alignment reads them (``$TORCH_HOME/hub/checkpoints``)
  on first use. A clear error says where to put them when they are absent.

Every landmarker takes BGR images and face boxes (x0, y0, x1, y1, score) and returns (n, 68, 2) pixel coordinates.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np

from .. import assets

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
        import dlib  # optional dependency: only the dlib landmarker

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

    ASSETS = ("fan_2d", "fan_s3fd")  # the same files, in the asset manifest

    def __init__(self, device: str = "cpu", assets_dir=None):
        hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
        problems = []
        for name, weight in zip(self.ASSETS, self.WEIGHTS):
            if (hub / weight).is_file():
                continue
            try:
                source = assets.resolve(name, assets_dir)
            except assets.AssetError as exc:
                problems.append(str(exc))
                continue
            hub.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, hub / weight)  # face-alignment only reads its torch-hub folder
        if problems:
            raise FileNotFoundError("FAN weights missing:\n" + "\n".join(problems))
        import face_alignment  # optional dependency: only the FAN landmarker

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
    raise ValueError(f"landmark_source must be one of {LANDMARKERS}, got {name!r}")
