"""3DDFA_V2 mb05 regressor: crop rule, preprocessing, strict loading, decoding and landmarks on real KDEF."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facelib.face3d.detect import FaceBoxesDetector, pick_face
from facelib.face3d.cameras import crop_box, crop_image
from facelib.face3d.tddfa import MobileNetV1, TDDFARegressor, load_state_strict, preprocess


@pytest.fixture(scope="module")
def models(assets_dir):
    torch.set_num_threads(2)
    return FaceBoxesDetector(assets_dir=assets_dir), TDDFARegressor(assets_dir=assets_dir)


def _kdef(kdef_root: Path, stem: str) -> np.ndarray:
    path = kdef_root / stem[:4] / f"{stem}.JPG"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    return cv2.imread(str(path), cv2.IMREAD_COLOR)


@pytest.fixture(scope="module")
def frontal(models, kdef_root):
    det, reg = models
    imgs = [_kdef(kdef_root, s) for s in ("AF01NES", "AM05HAS", "AF01ANHL")]
    boxes = [pick_face(d, im.shape)[0] for d, im in zip(det(imgs), imgs)]
    assert all(b is not None for b in boxes)
    return imgs, boxes, reg(imgs, boxes)


# --------------------------------------------------------------------------------------------- no data needed
def test_crop_box_rule():
    roi = crop_box([100, 200, 300, 400, 0.9])  # 200×200 box centred at (200, 300)
    side = int(1.58 * 200)
    assert roi[2] - roi[0] == roi[3] - roi[1] == side
    assert (roi[0] + roi[2]) / 2 == pytest.approx(200)
    assert (roi[1] + roi[3]) / 2 == pytest.approx(300 + 0.14 * 200)
    roi = crop_box([0, 0, 100, 50])  # mean side 75
    assert roi[2] - roi[0] == int(1.58 * 75)


def test_crop_image_zero_pads():
    img = np.full((50, 40, 3), 255, np.uint8)
    crop = crop_image(img, [-10, -5, 30, 35])
    assert crop.shape == (40, 40, 3)
    assert crop[:5].max() == 0 and crop[:, :10].max() == 0 and crop[5:, 10:].min() == 255
    assert crop_image(img, [100, 100, 120, 120]).max() == 0  # fully outside


def test_preprocess_normalisation():
    crops = np.zeros((2, 120, 120, 3), np.uint8)
    crops[0, ..., 0] = 255  # blue channel first (BGR kept)
    x = preprocess(crops)
    assert x.shape == (2, 3, 120, 120) and x.dtype == torch.float32
    assert float(x[0, 0, 0, 0]) == pytest.approx((255 - 127.5) / 128)
    assert float(x[0, 1, 0, 0]) == pytest.approx(-127.5 / 128)


def test_strict_loading(assets_dir):
    from facelib import assets

    ckpt = torch.load(assets.resolve("mb05", assets_dir), map_location="cpu", weights_only=True)
    sd = dict(ckpt["state_dict"])
    assert all(k.startswith("module.") for k in sd) and "module.fc_lm.weight" in sd
    load_state_strict(MobileNetV1(0.5), ckpt)  # the real file loads strictly
    del sd["module.dw5_3.bn_sep.running_mean"]
    with pytest.raises(RuntimeError, match=r"missing key.*dw5_3\.bn_sep\.running_mean"):
        TDDFARegressor(assets_dir=assets_dir, weights={"state_dict": sd})


# --------------------------------------------------------------------------------------------- real images
def test_shapes(frontal):
    _, _, out = frontal
    n = 3
    assert out["alpha"].shape == (n, 40) and out["beta"].shape == (n, 10) and out["pose"].shape == (n, 12)
    assert out["params62"].shape == (n, 62) and out["landmarks"].shape == (n, 136)
    assert np.array_equal(out["params62"][:, 12:52], out["alpha"])
    assert all(np.isfinite(v).all() for v in out.values())
    # the pose's 3×3 part is a scaled rotation: rows near-orthogonal with equal norms
    sr = out["pose"][:, :12].reshape(n, 3, 4)[:, :, :3].astype(np.float64)
    gram = sr @ sr.transpose(0, 2, 1)
    s2 = np.trace(gram, axis1=1, axis2=2) / 3
    assert np.allclose(gram / s2[:, None, None], np.eye(3), atol=0.1)


def test_frontal_landmarks_geometry(frontal):
    imgs, boxes, out = frontal
    for i in range(2):  # the two frontal images
        lm = out["landmarks"][i]
        x, y = lm[:68], lm[68:]
        eyes_y = y[36:48].mean()
        mouth_y = y[48:68].mean()
        assert eyes_y < y[30] < mouth_y, "eyes above nose tip above mouth"
        assert x[36:42].mean() < x[30] < x[42:48].mean(), "nose between the eyes in x"
        assert y[8] > mouth_y, "chin below mouth"
        x0, y0, x1, y1 = boxes[i][:4]
        mx, my = 0.2 * (x1 - x0), 0.2 * (y1 - y0)
        assert (x >= x0 - mx).all() and (x <= x1 + mx).all() and (y >= y0 - my).all() and (y <= y1 + my).all()


def test_landmark_head_agrees_with_bfm(frontal):
    """fc_lm (unused by 3DDFA_V2) and the BFM-keypoint landmarks describe the same points (a few pixels apart)."""
    _, boxes, out = frontal
    a = out["landmarks"].reshape(-1, 2, 68)
    b = out["landmarks_fc"].reshape(-1, 2, 68)
    gap = np.linalg.norm(a - b, axis=1).mean(1)
    widths = np.array([b_[2] - b_[0] for b_ in boxes])
    assert (gap < 0.05 * widths).all(), gap


def test_deterministic_and_batch_independent(models, frontal):
    _, reg = models
    imgs, boxes, out = frontal
    again = reg(imgs, boxes)
    for k in ("params62", "landmarks"):
        assert np.array_equal(out[k], again[k]), k
    single = reg(imgs[:1], boxes[:1])
    assert np.allclose(single["landmarks"], out["landmarks"][:1], atol=0.05)
    assert np.allclose(single["beta"], out["beta"][:1], rtol=1e-3, atol=1e-3)


def test_grayscale_matches_gray_bgr(models, kdef_root):
    det, reg = models
    gray = cv2.cvtColor(_kdef(kdef_root, "AF01NES"), cv2.COLOR_BGR2GRAY)
    box, _ = pick_face(det([gray])[0], gray.shape)
    a = reg([gray], [box])
    b = reg([cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)], [box])
    assert np.array_equal(a["params62"], b["params62"])


def test_box_outside_image_is_padded(models, kdef_root):
    _, reg = models
    img = _kdef(kdef_root, "AF01NES")
    out = reg([img], [np.array([-100, -100, 200, 200, 1.0])])
    assert np.isfinite(out["params62"]).all()
