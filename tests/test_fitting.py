"""Analysis-by-synthesis fitting (facelib.fitting.fitter) on real KDEF images, from the tddfa backend's coefficients."""
from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from facelib.face3d import cameras
from facelib.face3d.cameras import crop_box
from facelib.fitting import skin
from facelib.fitting.table import DlibTargets, fit_table, landmark_targets, loss_summary
from facelib.fitting.fitter import Fitter, axis_angle

STEMS = ("AF01NES", "AM05HAS", "AF01ANHL", "AM02SUS")
SIZE = 96  # small crops keep the full-mode tests fast


def _dlib_ok() -> bool:
    if importlib.util.find_spec("dlib") is None:
        return False
    try:
        from facelib.face3d.landmarks import face_recognition_models_dir

        return (face_recognition_models_dir() / "shape_predictor_68_face_landmarks.dat").is_file()
    except ImportError:
        return False


@pytest.fixture(scope="module")
def data(kdef_root, assets_dir):
    """Images, tddfa coefficients (backend.regress) and a small coefficient table for STEMS."""
    from facelib.face3d.reconstruct import TDDFABackend

    torch.set_num_threads(2)
    paths = [kdef_root / s[:4] / f"{s}.JPG" for s in STEMS]
    if not all(p.is_file() for p in paths):
        pytest.skip("KDEF dev images AF01NES/AM05HAS/AF01ANHL/AM02SUS absent")
    imgs = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths]
    backend = TDDFABackend(device="cpu", assets_dir=assets_dir)
    boxes = [b for b, _ in backend.detect(imgs)]
    assert all(b is not None for b in boxes)
    out = backend.regress(imgs, boxes)
    rows = []
    for i, (s, p) in enumerate(zip(STEMS, paths)):
        rows.append({"image_id": s, "path": str(p), "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
                     "angle": s[6:], "status": "ok", "backend": "tddfa", "box": np.asarray(boxes[i]).tolist(),
                     "box_source": "detector", "landmarks": out["landmarks"][i].tolist(),
                     "alpha": out["alpha"][i].tolist(), "beta": out["beta"][i].tolist(),
                     "pose": out["pose"][i].tolist(), "texture": None, "angles": None, "gamma": None,
                     "translation": None, "assets": "{}"})
    rows.append({**rows[0], "image_id": "BLACK", "sha256": "0" * 64, "status": "no_face", "box": None,
                 "landmarks": None, "alpha": None, "beta": None, "pose": None})
    table = pd.DataFrame(rows)
    rois = np.stack([crop_box(b) for b in boxes])
    init = {k: np.asarray(out[k], np.float32) for k in ("alpha", "beta", "pose")}
    own = np.stack([cameras.landmarks_136_to_68(v) for v in out["landmarks"]])
    return {"imgs": imgs, "boxes": boxes, "rois": rois, "init": init, "own_lm": own, "table": table}


@pytest.fixture(scope="module")
def fitter(data, assets_dir):
    return Fitter(device="cpu", assets_dir=assets_dir, image_size=SIZE)


@pytest.fixture(scope="module")
def small_fitter(fitter):
    return Fitter(fitter.model, device="cpu", image_size=64)


def _targets(data):
    """dlib's 68 landmarks when available, else the tddfa landmarks displaced by a smooth warp (a known target)."""
    if _dlib_ok():
        rows = data["table"].iloc[:4]
        lm, src = landmark_targets(rows, data["imgs"], "dlib", DlibTargets(), data["rois"])
        if src.count("dlib") == 4:
            return lm, "dlib"
    lm = data["own_lm"].copy()
    c = lm.mean(1, keepdims=True)
    return (c + (lm - c) * np.array([1.06, 0.95]) + np.array([3.0, -2.0])).astype(np.float32), "warped"


# ------------------------------------------------------------------------------------------------ no data needed
def test_crop_coordinates_roundtrip():
    roi = np.array([[10.0, 20.0, 410.0, 420.0]])
    pts = np.random.default_rng(0).uniform(0, 500, (1, 68, 2))
    back = cameras.crop_to_image(cameras.image_to_crop(pts, roi, 160), roi, 160)
    assert np.allclose(back, pts, atol=1e-6)


def test_axis_angle_is_rotation():
    R = axis_angle(torch.tensor([[0.1, -0.2, 0.3], [0.0, 0.0, 0.0]]))
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand(2, 3, 3), atol=1e-5)
    assert torch.allclose(R[1], torch.eye(3), atol=1e-6)


def test_bad_mode_and_device():
    with pytest.raises(ValueError):
        fit_table(pd.DataFrame({"backend": ["tddfa"], "status": ["ok"]}), mode="nope")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError):
            Fitter(device="cuda")


# ------------------------------------------------------------------------------------------------ real data
def test_model_landmarks_match_backend(data, fitter):
    """Iteration 0 reproduces the backend's landmarks exactly (camera and crop conventions)."""
    r = fitter.fit(data["init"], data["rois"], cameras.image_to_crop(data["own_lm"], data["rois"], SIZE),
                   mode="landmarks", iterations=0)
    lm = cameras.crop_to_image(r.landmarks, data["rois"], SIZE)
    assert np.abs(lm - data["own_lm"]).max() < 0.05
    assert r.history["landmark"][0] < 1e-6


def test_landmark_mode_reduces_error(data, fitter):
    target, kind = _targets(data)
    tl = cameras.image_to_crop(target, data["rois"], SIZE)
    r = fitter.fit(data["init"], data["rois"], tl, mode="landmarks", iterations=40)
    h = r.history["landmark"]
    assert h[-1] < 0.7 * h[0], (kind, h[0], h[-1])
    assert np.all(r.terms_last["landmark"] < r.terms_first["landmark"])
    err0 = np.linalg.norm(data["own_lm"] - target, axis=-1).mean()
    err1 = np.linalg.norm(cameras.crop_to_image(r.landmarks, data["rois"], SIZE) - target, axis=-1).mean()
    assert err1 < 0.8 * err0, (kind, err0, err1)
    assert r.alpha.shape == (4, 40) and r.beta.shape == (4, 10) and r.pose.shape == (4, 12)
    assert set(r.history) == {"landmark", "reg", "total"} and len(h) == 41


def test_full_mode_reduces_data_terms(data, fitter):
    """From the tddfa start (γ = 0, grey albedo) the photometric and landmark terms and the total go down."""
    target, _ = _targets(data)
    imgs = np.stack([cameras.crop_rgb(im, r, SIZE) for im, r in zip(data["imgs"][:2], data["rois"][:2])])
    init = {k: v[:2] for k, v in data["init"].items()}
    r = fitter.fit(init, data["rois"][:2], cameras.image_to_crop(target[:2], data["rois"][:2], SIZE), imgs,
                   mode="full", iterations=12, keep_render=True)
    h = r.history
    assert {"photo", "landmark", "reg", "texture", "lighting", "total"} <= set(h)
    assert h["photo"][-1] < 0.7 * h["photo"][0]
    assert h["landmark"][-1] < h["landmark"][0]
    assert h["total"][-1] < 0.7 * h["total"][0]
    assert r.render.shape == (2, SIZE, SIZE, 3) and 0.1 < r.mask.mean() < 0.8
    assert r.gamma.shape == (2, 27)


@pytest.mark.parametrize("term", ["reg", "lighting", "photo", "landmark"])
def test_each_term_alone_is_reduced(data, small_fitter, term):
    """Each term, alone and switched on by its weight, decreases from a start where it is non-zero."""
    target, _ = _targets(data)
    weights = {k: 0 for k in ("photo", "landmark", "perceptual", "reg", "texture", "lighting")}
    weights[term] = {"reg": 3e-4, "lighting": 10.0, "photo": 1.92, "landmark": 1.6e-3}[term]
    init = {k: v[:1] for k, v in data["init"].items()}
    init["gamma"] = np.random.default_rng(0).normal(0, 0.2, (1, 27)).astype(np.float32)
    imgs = np.stack([cameras.crop_rgb(data["imgs"][0], data["rois"][0], 64)])
    r = small_fitter.fit(init, data["rois"][:1], cameras.image_to_crop(target[:1], data["rois"][:1], 64), imgs,
                         mode="full", iterations=6, weights=weights)
    assert list(r.terms_last) == [term]
    assert r.history[term][-1] < r.history[term][0], r.history[term]


def test_perceptual_embedder_plugs_in(data, small_fitter):
    """A callable embedder switches the perceptual term on (a fixed random projection stands in for the network)."""
    g = torch.Generator().manual_seed(0)
    proj = torch.randn(3 * 16 * 16, 32, generator=g)

    def embedder(x):
        return torch.nn.functional.adaptive_avg_pool2d(x, 16).flatten(1) @ proj

    f = small_fitter
    f.embedder = embedder
    imgs = np.stack([cameras.crop_rgb(data["imgs"][0], data["rois"][0], 64)])
    init = {k: v[:1] for k, v in data["init"].items()}
    try:
        r = f.fit(init, data["rois"][:1], None, imgs, mode="full", iterations=3)
    finally:
        f.embedder = None
    assert "perceptual" in r.history and "landmark" not in r.history


def test_fit_table_keeps_schema_and_resumes(data, assets_dir, tmp_path):
    table = data["table"]
    kw = dict(mode="landmarks", iterations=5, batch_size=2, device="cpu", target_landmarks="table",
              assets_dir=assets_dir, cache_dir=tmp_path, progress=False)
    part = fit_table(table, limit=2, **kw)
    shards = list(tmp_path.glob("tddfa+fit_landmarks-*/shard-*.parquet"))
    assert len(shards) == 1
    out = fit_table(table, out=tmp_path / "fit.parquet", **kw)
    assert len(list(tmp_path.glob("tddfa+fit_landmarks-*/shard-*.parquet"))) == 2  # only the rest was fitted
    assert set(table.columns) <= set(out.columns) and len(out) == len(table)
    assert (out["backend"] == "tddfa+fit_landmarks").all()
    ok = out["status"] == "ok"
    assert all(len(v) == 40 for v in out.loc[ok, "alpha"]) and all(len(v) == 136 for v in out.loc[ok, "landmarks"])
    assert out.loc[~ok, "alpha"].isna().all()
    losses = json.loads(out.loc[ok, "fit_losses"].iloc[0])
    assert set(losses) == {"landmark", "reg", "_target"} and losses["_target"] == "table"
    back = pd.read_parquet(tmp_path / "fit.parquet")
    assert len(back) == len(out)
    assert len(part) == len(table)
    summary = loss_summary(out)
    assert "reg_first" in summary.columns
    assert (back.loc[ok, "fit_seconds"].astype(float) > 0).all()  # per-picture fit time (Table 2's cost)


def test_device_honoured(data, assets_dir):
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        f = Fitter(device=dev, assets_dir=assets_dir, image_size=64)
        assert f.mesh.mean_shape.device.type == dev and f.sigma_alpha.device.type == dev
        r = f.fit({k: v[:1] for k, v in data["init"].items()}, data["rois"][:1],
                  cameras.image_to_crop(data["own_lm"][:1], data["rois"][:1], 64), mode="landmarks", iterations=2)
        assert r.info["device"].startswith(dev)


def test_skin_model_separates_face_from_background(data, tmp_path):
    sk = skin.train_skin_model(data["imgs"][:2], list(data["own_lm"][:2]), per_image=1500)
    s, b = skin.face_regions(data["imgs"][2].shape[:2], data["own_lm"][2])
    p = sk.probability(data["imgs"][2][:, :, ::-1])
    assert p[s].mean() > 0.7 and p[b].mean() < 0.3
    path = sk.save(tmp_path / "skin.npz")
    assert Path(path).is_file()
