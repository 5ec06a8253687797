"""MPS-safety of every device path, under :class:`facelib.device_guard.SimulatedMPS`.

The guard SIMULATES an Apple GPU's (MPS) rules on the CPU: the paths run here with ``device="cpu"`` standing for
the accelerator, and the guard fails on any float64/complex tensor created on or moved to that device, on ops MPS
lacks, on ``.numpy()`` of a device tensor and on device/CPU mixing. This is never a run on MPS; numbers, kernels and
speed are the CPU's. Paths: renderer, losses, dlib-chip extraction + descriptor, 3DDFA backend, BFM fits, ICT fits,
R-Net / C-Net training, classifiers (vector and image networks). Each runs a tiny real input (four KDEF pictures,
64-px crops, two iterations / one epoch); tests needing KDEF, the assets or the dlib model skip with the reason.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
import torch

from facelib.device_guard import DeviceRuleError, SimulatedMPS, is_device_tensor
from facelib.fitting import render
from tests.fixtures import tddfa_rows

STEMS = ("AF01NES", "AF01HAHL", "AM01DIS", "AM01NEHL")   # two people, two pictures each
SIZE = 64


@contextmanager
def simulated_mps(monkeypatch):
    """The guard, with the renderer's MPS choice (float z-buffer) for the CPU that stands for MPS here."""
    monkeypatch.setitem(render.AUTO_ZBUFFER, "cpu", "float")
    guard = SimulatedMPS()
    with guard:
        yield guard
    assert guard.device_ops > 0, "the path never reached the simulated device: the test checks nothing"


# ---------------------------------------------------------------------------------------------- the guard
def test_guard_fails_on_each_rule_and_names_the_line():
    dev = "cpu"
    bad = {
        "float64": lambda: torch.from_numpy(np.zeros(3)).to(dev),
        "float64 via device=": lambda: torch.as_tensor(np.zeros(3), device=dev),
        "double": lambda: torch.zeros(3, device=dev).double(),
        "complex": lambda: torch.complex(torch.zeros(2, device=dev), torch.zeros(2, device=dev)),
        "fft": lambda: torch.fft.rfft(torch.zeros(8, device=dev)),
        "svd": lambda: torch.linalg.svd(torch.eye(3, device=dev)),
        "int64 scatter-min": lambda: torch.zeros(4, dtype=torch.int64, device=dev).scatter_reduce_(
            0, torch.zeros(2, dtype=torch.int64, device=dev), torch.ones(2, dtype=torch.int64, device=dev), "amin"),
        "numpy": lambda: torch.zeros(3, device=dev).numpy(),
        "mixing": lambda: torch.zeros(3, device=dev) + torch.zeros(3),
        "module left on the CPU": lambda: torch.nn.Linear(3, 2)(torch.zeros(1, 3, device=dev)),
    }
    for what, fn in bad.items():
        with pytest.raises(DeviceRuleError, match=r"test_device_guard\.py:\d+.*simulated MPS rules") as e:
            with SimulatedMPS():
                fn()
        assert "simulated" in str(e.value), what


def test_guard_allows_what_a_device_allows_and_tracks_tensors():
    dev = "cpu"
    mean = torch.tensor([1.0, 2.0])        # a CPU-side constant made before the guard
    with SimulatedMPS() as g:
        x = torch.from_numpy(np.arange(6.0).reshape(3, 2)).float().to(dev)   # float64 numpy converted first: fine
        assert is_device_tensor(x) and not is_device_tensor(mean)
        y = x - mean.to(x.device) + torch.tensor(3.0)  # a 0-d CPU scalar may meet a device tensor
        assert is_device_tensor(y) and not is_device_tensor(mean)  # moving a copy leaves the constant CPU-side
        cpu = y.cpu()
        assert not is_device_tensor(cpu) and is_device_tensor(y)
        np.testing.assert_allclose(cpu.numpy(), np.arange(6.0).reshape(3, 2) - [1, 2] + 3)
        host = torch.zeros(1, 2)
        assert not is_device_tensor(torch.zeros(2, device=host.device))   # device=x.device of a CPU-side x
        net = torch.nn.Linear(2, 2).to(dev)
        assert all(is_device_tensor(p) for p in net.parameters())
        net(x).sum().backward()
        torch.optim.AdamW(net.parameters()).step()
        assert all(is_device_tensor(p.grad) for p in net.parameters())
        net.to(host.device)                                                  # back to the CPU
        assert not any(is_device_tensor(p) for p in net.parameters())
        np.asarray(net(host).detach())                                       # CPU-side: numpy is fine
    assert g.violations == [] and g.device_ops > 0


def test_survey_mode_records_instead_of_raising():
    with SimulatedMPS(raise_on_violation=False) as g:
        for _ in range(3):
            torch.zeros(2, device="cpu").double()    # the same spot is recorded once
        torch.zeros(2, device="cpu").numpy()
    assert len(g.violations) == 2 and "float64" in g.violations[0] and "numpy" in g.violations[1]


# ---------------------------------------------------------------------------------------- small, no files
def _grid_mesh(n=9, size=SIZE):
    """A bumpy n×n vertex sheet covering most of a size² image, front-facing, with per-vertex colours."""
    u = np.linspace(4, size - 5, n, dtype=np.float32)
    X, Y = np.meshgrid(u, u)
    Z = 10 + 3 * np.sin(X / 7) * np.cos(Y / 5)
    verts = np.stack([X, Y, Z], -1).reshape(-1, 3)
    i = np.arange(n * n).reshape(n, n)
    a, b, c, d = i[:-1, :-1].ravel(), i[:-1, 1:].ravel(), i[1:, :-1].ravel(), i[1:, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)]).astype(np.int64)
    colours = np.random.default_rng(0).uniform(0.2, 0.9, (n * n, 3)).astype(np.float32)
    return verts, faces, colours


def test_renderer(monkeypatch):
    from facelib.fitting.render import interpolate, rasterize, sh_shading

    v, f, c = _grid_mesh()
    normals = np.tile(np.array([0, 0, 1], np.float32), (len(v), 1))
    gamma = np.random.default_rng(1).normal(0, 0.1, (1, 27)).astype(np.float32)
    ref = rasterize(torch.from_numpy(v)[None], torch.from_numpy(f), SIZE, SIZE, zbuffer="packed")
    with simulated_mps(monkeypatch):
        dev = "cpu"
        verts = torch.from_numpy(v).to(dev)[None].requires_grad_(True)
        frags = rasterize(verts, torch.from_numpy(f).to(dev), SIZE, SIZE)   # auto → the float z-buffer (MPS's)
        col = sh_shading(torch.from_numpy(normals).to(dev)[None], torch.from_numpy(c).to(dev)[None],
                         torch.from_numpy(gamma).to(dev))
        img = interpolate(col, frags, background=0.5)
        img.sum().backward()
        assert verts.grad is not None and torch.isfinite(verts.grad).all()
        tri = frags.tri_id.cpu()
    assert torch.equal(tri, ref.tri_id) and int((tri >= 0).sum()) > SIZE * SIZE // 2


def test_losses(monkeypatch):
    from facelib.fitting.losses import HybridLoss, deep3d_landmark_weights

    rng = np.random.default_rng(2)
    r = lambda *s: rng.normal(size=s).astype(np.float32)  # noqa: E731
    arrays = dict(pred_image=r(2, 3, 16, 16), target_image=r(2, 3, 16, 16), pred_lm=r(2, 68, 2), gt_lm=r(2, 68, 2),
                  emb_pred=r(2, 128), emb_target=r(2, 128), alpha=r(2, 40), beta=r(2, 10), delta=r(2, 8),
                  albedo=r(2, 50, 3), gamma=r(2, 27))
    masks = dict(face_mask=np.ones((2, 1, 16, 16), np.float32), attention=rng.uniform(size=(2, 1, 16, 16)))
    weights = {"photo": 1.9, "landmark": 1.6e-3, "perceptual": 0.2, "reg": 3e-4, "texture": 1.0, "lighting": 1.0}
    skin = (rng.uniform(size=50) > 0.5).astype(np.float32)

    def run(dev):
        t = {k: torch.from_numpy(np.asarray(v, np.float32)).to(dev) for k, v in {**arrays, **masks}.items()}
        t["pred_image"].requires_grad_(True)
        loss = HybridLoss(weights, landmark_weights=deep3d_landmark_weights(dev), skin_mask=torch.from_numpy(skin))
        total, terms = loss.to(dev)(**t)
        total.backward()
        assert set(terms) == set(weights)
        return float(total.detach()), t["pred_image"].grad.cpu()

    ref = run("cpu")
    with simulated_mps(monkeypatch):
        got = run("cpu")
    assert got[0] == pytest.approx(ref[0], rel=1e-6) and torch.allclose(got[1], ref[1])


# ------------------------------------------------------------------------------------------ dlib chips
def _similarity_lstsq(src, dst):
    """Least-squares similarity src → dst (numpy float64, generic lstsq): (a, b, tx, ty), x' = a·x − b·y + tx."""
    n = len(src)
    A = np.zeros((2 * n, 4))
    A[0::2] = np.stack([src[:, 0], -src[:, 1], np.ones(n), np.zeros(n)], 1)
    A[1::2] = np.stack([src[:, 1], src[:, 0], np.zeros(n), np.ones(n)], 1)
    return np.linalg.lstsq(A, dst.reshape(-1), rcond=None)[0]


def test_chip_geometry_float32_matches_a_float64_reference():
    from facelib.fitting import face_chip
    from facelib.fitting import face_embedding as fe

    rng = np.random.default_rng(3)
    size, pad = fe.CHIP_SIZE, fe.CHIP_PADDING
    tmpl, idx = fe.chip_template(68, size, pad)
    lms = []
    for th, s, t in ((0.2, 3.1, (250.0, 310.0)), (-0.4, 1.7, (420.0, 260.0))):
        R = s * np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
        lm = rng.normal(0, 2.0, (68, 2)) + 100.0
        lm[idx] = tmpl @ R.T + t + rng.normal(0, 0.5, (len(idx), 2))
        lms.append(lm)
    lms = np.stack(lms)                                               # float64, as dlib's shapes come
    centre, rotk, scale = face_chip._chip_geometry(torch.from_numpy(lms.astype(np.float32)), size, pad)
    assert centre.dtype == rotk.dtype == scale.dtype == torch.float32
    for b in range(2):
        a, bb, tx, ty = _similarity_lstsq(tmpl, lms[b][idx])
        s = np.hypot(a, bb)
        k = (size * s - 1) / (size - 1) / s
        np.testing.assert_allclose(scale[b].item(), s, rtol=1e-5)
        np.testing.assert_allclose(rotk[b].numpy(), [a * k, bb * k], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(centre[b].numpy(), [a * size / 2 - bb * size / 2 + tx,
                                                       bb * size / 2 + a * size / 2 + ty], atol=2e-3)


def _dlib_model_or_skip():
    from facelib.fitting import face_embedding as fe

    try:
        path = fe.default_model_path()
    except ImportError as e:
        pytest.skip(f"face_recognition_models not installed: {e}")
    if not path.is_file():
        pytest.skip(f"{path} absent")
    return fe.load_dlib_resnet(path)


def test_dlib_chip_extraction_and_descriptor(monkeypatch, data):
    from facelib.fitting import face_embedding as fe

    net = _dlib_model_or_skip()
    img = np.stack([im[..., ::-1] for im in data["imgs"][:2]]).astype(np.float32)
    lm = data["lm_img"][:2].astype(np.float64)           # float64 numpy landmarks: converted on the CPU side
    # chip pixels against bilinear sampling (numpy float64) at the geometry of a float64 least-squares fit
    chips_ref = fe.extract_chips(torch.from_numpy(img).permute(0, 3, 1, 2), lm, antialias=False)
    tmpl, idx = fe.chip_template(68)
    a, b, tx, ty = _similarity_lstsq(tmpl, lm[0][idx])
    s = np.hypot(a, b)
    k = (fe.CHIP_SIZE * s - 1) / (fe.CHIP_SIZE - 1) / s
    h = fe.CHIP_SIZE / 2
    cx, cy = a * h - b * h + tx, b * h + a * h + ty
    for (row, col) in ((20, 30), (75, 75), (120, 60), (140, 149)):
        u, v = col - (fe.CHIP_SIZE - 1) / 2, row - (fe.CHIP_SIZE - 1) / 2
        x, y = cx + k * (a * u - b * v), cy + k * (b * u + a * v)
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - x0, y - y0
        p = img[0].astype(np.float64)
        want = (p[y0, x0] * (1 - fx) * (1 - fy) + p[y0, x0 + 1] * fx * (1 - fy) + p[y0 + 1, x0] * (1 - fx) * fy
                + p[y0 + 1, x0 + 1] * fx * fy)
        np.testing.assert_allclose(chips_ref[0, :, row, col].numpy(), want, atol=0.05)
    with simulated_mps(monkeypatch):
        dev = "cpu"
        x = torch.from_numpy(img).to(dev).permute(0, 3, 1, 2).contiguous().requires_grad_(True)
        emb = fe.embed(x, lm, model=net.to(dev))
        emb.sum().backward()
        assert emb.shape == (2, 128) and x.grad is not None and float(x.grad.abs().sum()) > 0
        emb = emb.detach().cpu()
    ref = fe.embed(torch.from_numpy(img).permute(0, 3, 1, 2), lm, model=net.to("cpu"))
    assert torch.allclose(emb, ref, atol=1e-5)


# ------------------------------------------------------------------------------------------- real pictures
@pytest.fixture(scope="module")
def data(kdef_root, assets_dir):
    """Four KDEF pictures, their 3DDFA fits (outside the guard), crops boxes and landmarks."""
    from facelib.face3d import cameras

    made = tddfa_rows(kdef_root, assets_dir, STEMS)
    if made is None:
        pytest.skip(f"KDEF dev pictures {STEMS} absent")
    imgs, paths, boxes, out, rows = (made[k] for k in ("imgs", "paths", "boxes", "out", "rows"))
    rois = np.stack([cameras.crop_box(b) for b in boxes])
    lm_img = np.stack([cameras.landmarks_136_to_68(v) for v in out["landmarks"]])
    return {"imgs": imgs, "paths": [str(p) for p in paths], "boxes": boxes, "table": pd.DataFrame(rows),
            "rois": rois, "lm_img": lm_img, "init": {k: np.asarray(out[k], np.float32) for k in
                                                     ("alpha", "beta", "pose")}}


@pytest.fixture(scope="module")
def skin_model(data):
    from facelib.fitting.skin import train_skin_model

    return train_skin_model(data["imgs"], list(data["lm_img"]), n_components=2)


def _embedder_or_none():
    from facelib.fitting.table import dlib_embedder

    try:
        return dlib_embedder()
    except (ImportError, FileNotFoundError):
        return None   # the perceptual term is then off; the rest of the path is still checked


def test_3ddfa_backend(monkeypatch, data, assets_dir):
    from facelib.face3d.reconstruct import TDDFABackend

    with simulated_mps(monkeypatch):
        backend = TDDFABackend(device="cpu", assets_dir=assets_dir)
        boxes = [b for b, _ in backend.detect(data["imgs"][:2])]
        out = backend.regress(data["imgs"][:2], boxes)
    np.testing.assert_allclose(out["alpha"], data["init"]["alpha"][:2], rtol=1e-4, atol=1e-4)


def test_bfm_fits(monkeypatch, data, assets_dir, skin_model):
    from facelib.face3d.cameras import crop_rgb, image_to_crop
    from facelib.fitting.fitter import Fitter

    tl = image_to_crop(data["lm_img"], data["rois"], SIZE)
    crops = np.stack([crop_rgb(im, r, SIZE) for im, r in zip(data["imgs"], data["rois"])])
    with simulated_mps(monkeypatch):
        f = Fitter(device="cpu", assets_dir=assets_dir, image_size=SIZE, skin_model=skin_model,
                   embedder=_embedder_or_none())
        lm = f.fit(data["init"], data["rois"], tl, mode="landmarks", iterations=2)
        full = f.fit(data["init"], data["rois"], tl, crops, mode="full", iterations=2, keep_render=True)
    assert lm.alpha.dtype == np.float32 and np.isfinite(full.history["total"]).all()
    assert full.render.shape == (4, SIZE, SIZE, 3)


def test_ict_fits(monkeypatch, data, assets_dir, skin_model):
    from facelib import assets
    from facelib.fitting.ict_fit import ICTFitter

    if not (assets_dir / assets.get("ict_facekit").relpath).is_file():
        pytest.skip("ICT-FaceKit archive not in FACELIB_ASSETS")
    with simulated_mps(monkeypatch):
        icf = ICTFitter(device="cpu", assets_dir=assets_dir, image_size=SIZE, skin_model=skin_model)
        init = dict(icf.initial(data["init"]["pose"][:2]), _from="tddfa")
        res, first = icf.fit(init, data["rois"][:2], data["lm_img"][:2], data["imgs"][:2], mode="full",
                             iterations=2)
    assert first is not None and res.beta.min() >= 0 and res.beta.max() <= 1


def test_rnet_and_cnet_training(monkeypatch, data, assets_dir, skin_model):
    from facelib.face3d import rnet
    from facelib.fitting import cnet as C
    from facelib.fitting import rnet_train as T
    from facelib.fitting.fitter import Fitter

    torch.manual_seed(0)
    with simulated_mps(monkeypatch):
        emb = _embedder_or_none()
        composer = T.Composer(Fitter(device="cpu", assets_dir=assets_dir, image_size=SIZE), embedder=emb,
                              mesh_vertices=2000)
        td = T.prepare_data(data["table"], SIZE, "table", skin_model=skin_model, embedder=emb)
        net = rnet.build_rnet("mobilenet", 0, assets_dir)
        hist = T.train_rnet(net, composer, td, epochs=1, batch_size=4, warmup=1)
        coeffs = rnet.predict(net, td.crops, device="cpu", features=True)
        feats = coeffs.pop("features")
        cn = C.CNet(net.feature_channels, coeffs["alpha"].shape[1])
        chist = T.train_cnet(cn, composer, td, coeffs, feats, k=2, steps=1, sets_per_step=2)
        conf = C.confidences(cn, feats, device="cpu")
    assert hist["steps"] == 1 and np.isfinite(hist["total"]).all() and np.isfinite(chist["total"]).all()
    assert conf.shape == (4, coeffs["alpha"].shape[1]) and (conf > 0).all()


def test_classifiers(monkeypatch, data):
    from facelib.classify.trainer import train_image_model, train_vector_model

    rng = np.random.default_rng(4)
    X = rng.normal(size=(40, 10)).astype(np.float32)
    y = np.repeat([0, 1], 20)
    boxes = [list(b) for b in data["boxes"]]
    with simulated_mps(monkeypatch):
        for model in ("resnet34", "mlp"):
            r = train_vector_model(X, y, X[:6], y[:6], model=model, epochs=1, batch_size=16, device="cpu")
            assert r["scores"].shape == (6, 2)
        r = train_image_model(data["paths"] * 2, [0, 0, 1, 1] * 2, data["paths"], [0, 0, 1, 1], image_size=32,
                              epochs=1, batch_size=4, device="cpu", boxes_train=boxes * 2, boxes_test=boxes)
    assert r["scores"].shape == (4, 2) and r["epochs_run"] == 1
