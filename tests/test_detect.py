"""FaceBoxes detector and face picking, on real KDEF / FEI images (skipped without ../shared or FACELIB_*)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facelib.face3d import detect
from facelib.face3d.detect import FaceBoxesDetector, FaceBoxesNet, load_state_strict, pick_face, prior_boxes


@pytest.fixture(scope="module")
def detector(assets_dir):
    torch.set_num_threads(2)
    return FaceBoxesDetector(assets_dir=assets_dir)


def _kdef(kdef_root: Path, stem: str) -> np.ndarray:
    path = kdef_root / stem[:4] / f"{stem}.JPG"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return img


def _fei_dir(fei_root: Path) -> Path:
    sub = fei_root / "frontalimages_spatiallynormalized_cropped_equalized"
    folder = sub if sub.is_dir() else fei_root
    if not any(folder.glob("*.jpg")):
        pytest.skip(f"no FEI images in {folder}")
    return folder


# --------------------------------------------------------------------------------------------- no data needed
def test_prior_count_matches_heads():
    """The anchor list and the network's outputs must line up one to one for any input size."""
    net = FaceBoxesNet().eval()
    for h, w in ((96, 128), (283, 384), (193, 162)):
        with torch.inference_mode():
            loc, prob = net(torch.zeros(1, 3, h, w))
        assert loc.shape[1] == prob.shape[1] == len(prior_boxes(h, w))
    p = prior_boxes(64, 64)  # 2×2 cells at stride 32: 21 anchors each, then 1 + 1
    assert len(p) == 4 * 21 + 1 + 1
    # densified 32-px anchors of cell (0, 0) sit at offsets 0, 8, 16, 24 px, x varying fastest
    assert np.allclose(p[:4, 0] * 64, [0, 8, 16, 24]) and np.allclose(p[:4, 1], 0)
    assert np.allclose(p[20, :2] * 64, [16, 16]) and np.allclose(p[20, 2:] * 64, [128, 128])


def test_strict_loading_reports_missing_key(assets_dir):
    from facelib import assets

    state = torch.load(assets.resolve("faceboxes", assets_dir), map_location="cpu", weights_only=True)
    state = {f"module.{k}": v for k, v in state.items()}  # a DataParallel-style prefix is accepted
    load_state_strict(FaceBoxesNet(), state)
    del state["module.conv2.bn.running_var"]
    with pytest.raises(RuntimeError, match=r"missing key.*conv2\.bn\.running_var"):
        FaceBoxesDetector(weights=state)
    state["module.extra.weight"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match="unexpected"):
        load_state_strict(FaceBoxesNet(), state)


def test_pick_face_rules():
    boxes = np.array([[0, 0, 10, 10, 0.7], [5, 5, 50, 50, 0.99]], np.float32)
    box, src = pick_face(boxes, (100, 100, 3))
    assert src == "detector" and box[4] == pytest.approx(0.99)
    face_crop = np.full((193, 162), 128, np.uint8)
    face_crop[50:150, 40:120] = 30
    box, src = pick_face(np.zeros((0, 5)), face_crop.shape, image=face_crop)
    assert src == "whole_frame" and list(box[:4]) == [0, 0, 162, 193]
    assert pick_face(np.zeros((0, 5)), face_crop.shape, fallback=False, image=face_crop) == (None, "no_face")
    black = np.zeros((193, 162, 3), np.uint8)
    assert pick_face(np.zeros((0, 5)), black.shape, image=black) == (None, "no_face")
    big = np.random.default_rng(0).integers(0, 255, (762, 562, 3), np.uint8)  # a photo-sized frame never falls back
    assert pick_face(np.zeros((0, 5)), big.shape, image=big) == (None, "no_face")
    assert pick_face(np.zeros((0, 5)), face_crop.shape) == (None, "no_face")  # blankness unknown: no fallback


# --------------------------------------------------------------------------------------------- real images
def test_kdef_frontal_one_face_centred(detector, kdef_root):
    img = _kdef(kdef_root, "AF01ANS")
    (d,) = detector([img])
    assert d.shape == (1, 5) and d.dtype == np.float32
    x0, y0, x1, y1, s = d[0]
    h, w = img.shape[:2]
    assert s > 0.9
    assert x0 < w * 0.4 and x1 > w * 0.6 and y0 < h * 0.45 and y1 > h * 0.55  # contains the centre region
    assert 0.25 * w < x1 - x0 < 0.9 * w


def test_kdef_batch_all_angles_and_black(detector, kdef_root):
    stems = ["AM05HAFL", "AM05HAHL", "AM05HAS", "AM05HAHR", "AM05HAFR", "AF10AFFR"]
    imgs = [_kdef(kdef_root, s) for s in stems]
    assert detect.image_std(imgs[-1]) < detect.BLANK_STD, "AF10AFFR is expected to be KDEF's black placeholder"
    dets = detector(imgs)
    for stem, d, img in zip(stems[:-1], dets, imgs):
        assert len(d) == 1, f"{stem}: {len(d)} faces"
        assert pick_face(d, img.shape)[1] == "detector"
    assert len(dets[-1]) == 0
    assert pick_face(dets[-1], imgs[-1].shape, fallback=True) == (None, "no_face")
    # even shaped like a face crop, a black image never gets the whole-frame fallback
    small_black = cv2.resize(imgs[-1], (162, 193))
    assert pick_face(detector([small_black])[0], small_black.shape) == (None, "no_face")
    # order of the batch does not matter: same boxes one at a time
    single = detector([imgs[2]])[0]
    assert np.allclose(single, dets[2], atol=1e-2)


def test_two_faces_side_by_side(detector, kdef_root):
    a = _kdef(kdef_root, "AF01NES")
    b = cv2.resize(_kdef(kdef_root, "AM05HAS"), None, fx=0.8, fy=0.8)
    canvas = np.full((a.shape[0], a.shape[1] + b.shape[1] + 40, 3), 200, np.uint8)
    canvas[:, :a.shape[1]] = a
    canvas[:b.shape[0], a.shape[1] + 40:] = b
    (d,) = detector([canvas])
    assert len(d) == 2, d
    assert np.all(np.diff(d[:, 4]) <= 0), "sorted by score"
    centres = sorted((d[:, 0] + d[:, 2]) / 2)
    assert centres[0] < a.shape[1] < centres[1]
    box, src = pick_face(d, canvas.shape)
    assert src == "detector" and box[4] == d[:, 4].max()


def test_grayscale_input(detector, kdef_root):
    img = _kdef(kdef_root, "AF01ANS")
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    (d,) = detector([gray])
    assert len(d) == 1 and d[0, 4] > 0.9


def test_fei_tight_crop_gets_a_box(detector, fei_root):
    folder = _fei_dir(fei_root)
    paths = sorted(folder.glob("*.jpg"))[:12]
    imgs = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths]
    assert imgs[0].ndim == 2
    for p, d, img in zip(paths, detector(imgs), imgs):
        box, src = pick_face(d, img.shape)
        assert src in ("detector", "whole_frame"), p.name
        # detector boxes are not clipped (as in 3DDFA_V2) but must cover mostly the image
        ix = min(box[2], img.shape[1]) - max(box[0], 0)
        iy = min(box[3], img.shape[0]) - max(box[1], 0)
        assert ix * iy > 0.5 * (box[2] - box[0]) * (box[3] - box[1]), (p.name, box)


def test_fallback_rule_constants():
    assert detect.looks_like_face_crop((193, 162))
    assert not detect.looks_like_face_crop((762, 562))
    assert not detect.looks_like_face_crop((100, 400))
