"""Texture basis from data (facelib.fitting.texture): PCA, persistence, the textured model, albedo sampling on real images."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from facelib.fitting import texture, texture_basis


def _low_rank_albedos(n=12, N=500, rank=4, seed=0, missing=0.1):
    rng = np.random.default_rng(seed)
    mean = rng.uniform(0.3, 0.7, (N, 3))
    comps = rng.normal(0, 0.05, (rank, N * 3)) * np.linspace(1.0, 0.3, rank)[:, None]
    coef = rng.normal(0, 1, (n, rank))
    a = (mean.reshape(1, -1) + coef @ comps + rng.normal(0, 0.002, (n, N * 3))).reshape(n, N, 3)
    a[rng.random((n, N)) < missing] = np.nan
    return a


# ------------------------------------------------------------------------------------------------ no data needed
def test_pca_error_decreases_with_k():
    a = _low_rank_albedos()
    b = texture.build_texture_basis(a, k=80)
    assert b["basis"].shape == (1500, 11)  # k ≤ n_images − 1
    errs = [texture.reconstruction_error(b, a, k) for k in (0, 1, 2, 3, 4, 8)]
    assert all(e1 <= e0 + 1e-9 for e0, e1 in zip(errs, errs[1:])), errs
    assert errs[4] < 0.2 * errs[0]
    # unit-variance coefficients on the training set
    d = texture.project(b, a, 4)
    assert np.allclose(d.std(0, ddof=1), 1.0, atol=0.25)
    assert np.all(np.diff(b["explained"]) <= 1e-9)


def test_save_load_and_with_texture(tmp_path, assets_dir):
    from facelib.face3d.morphable import MorphableModel

    model = MorphableModel.from_3ddfa(assets_dir)
    a = _low_rank_albedos(n=5, N=model.n_vertices, rank=3, missing=0.0)
    b = texture.build_texture_basis(a, k=3, provenance={"images": 5})
    path = texture.save_texture_basis(tmp_path / "tex.npz", b)
    b2 = texture.load_texture_basis(path)
    assert b2["provenance"] == {"images": 5} and np.array_equal(b2["basis"], b["basis"])
    tm = texture.with_texture(model, b2)
    assert tm.n_tex == 3 and model.n_tex == 0 and tm.n_vertices == model.n_vertices
    t0 = tm.texture(torch.zeros(1, 3))
    assert torch.allclose(t0[0], torch.from_numpy(b2["mean"]) / 255.0, atol=1e-5)
    d = torch.tensor([[1.0, -0.5, 0.2]])
    want = (b2["mean"].reshape(-1) + b2["basis"] @ d[0].numpy()) / 255.0
    assert np.allclose(tm.texture(d)[0].numpy().reshape(-1), want, atol=1e-4)


# ------------------------------------------------------------------------------------------------ real data
@pytest.fixture(scope="module")
def fitted(kdef_root, assets_dir):
    import cv2

    from facelib.fitting import fitter
    from facelib.face3d.reconstruct import TDDFABackend
    from facelib.face3d import cameras
    from facelib.face3d.cameras import crop_box

    torch.set_num_threads(2)
    stems = ("AF01NES", "AM05HAS", "AF02NES", "AM02SUS")
    paths = [kdef_root / s[:4] / f"{s}.JPG" for s in stems]
    if not all(p.is_file() for p in paths):
        pytest.skip(f"KDEF dev images {stems} absent")
    imgs = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths]
    be = TDDFABackend(device="cpu", assets_dir=assets_dir)
    boxes = [b for b, _ in be.detect(imgs)]
    out = be.regress(imgs, boxes)
    rois = np.stack([crop_box(b) for b in boxes])
    size = 96
    f = fitter.Fitter(device="cpu", assets_dir=assets_dir, image_size=size)
    lm = np.stack([cameras.landmarks_136_to_68(v) for v in out["landmarks"]])
    crops = np.stack([cameras.crop_rgb(im, r, size) for im, r in zip(imgs, rois)])
    init = {k: out[k] for k in ("alpha", "beta", "pose")}
    res = f.fit(init, rois, cameras.image_to_crop(lm, rois, size), crops, mode="full", iterations=8)
    return f, res, imgs, rois, crops, init, lm


def test_sampled_albedo_on_real_images(fitted):
    f, res, imgs, rois, *_ = fitted
    alb = texture_basis.sample_albedo(f, res, imgs, rois)
    assert alb.shape == (4, f.model.n_vertices, 3)
    seen = np.isfinite(alb).all(-1)
    frac = seen[:, f.mesh.extras["parent_ids"].numpy()].mean(1)
    assert np.all(frac > 0.3) and np.all(frac < 0.95)   # frontal faces: most, not all, of the no-neck mesh
    assert not seen[:, np.setdiff1d(np.arange(f.model.n_vertices), f.mesh.extras["parent_ids"].numpy())].any()
    med = np.nanmedian(alb.reshape(-1, 3), axis=0)
    assert np.all(med > 0.05) and np.all(med < 1.5)  # de-lit colours stay in a plausible range
    b = texture.build_texture_basis(alb, k=80)
    assert b["basis"].shape[1] == 3
    errs = [texture.reconstruction_error(b, alb, k) for k in range(4)]
    assert all(e1 < e0 for e0, e1 in zip(errs, errs[1:])), errs


def test_textured_full_fit_reduces_texture_term(fitted):
    from facelib.face3d import cameras
    from facelib.fitting import fitter

    f, res, imgs, rois, crops, init, lm = fitted
    alb = texture_basis.sample_albedo(f, res, imgs, rois)
    tm = texture.with_texture(f.model, texture.build_texture_basis(alb, k=3))
    ft = fitter.Fitter(tm, device="cpu", image_size=96)
    assert ft.mesh.n_tex == 3
    start = {**{k: v[:2] for k, v in init.items()}, "texture": np.array([[2.0, -2.0, 1.5], [-1.5, 2.0, 1.0]])}
    r = ft.fit(start, rois[:2], cameras.image_to_crop(lm[:2], rois[:2], 96), crops[:2], mode="full", iterations=6,
               weights={"photo": 0, "landmark": 0, "reg": 0, "lighting": 0})
    assert r.texture.shape == (2, 3)
    assert r.history["texture"][-1] < r.history["texture"][0]
