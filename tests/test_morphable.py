"""MorphableModel: the 3DDFA source on the real assets, projections against independent numpy, and the BFM09 → front
model conversion on fake licence-gated files written here in the official formats."""
from __future__ import annotations

import pickle
import time

import numpy as np
import pytest
import torch
from scipy.io import loadmat, savemat
from scipy.spatial.transform import Rotation

from facelib.face3d.morphable import LAYOUT_3DDFA, LAYOUT_DEEP3D, MorphableModel, read_exp_pca


@pytest.fixture(scope="module")
def m3(assets_dir):
    return MorphableModel.from_3ddfa(assets_dir)


@pytest.fixture(scope="module")
def raw3(assets_dir):
    b = assets_dir / "bfm_3ddfa"
    u = (np.load(b / "u_shp.npy") + np.load(b / "u_exp.npy")).astype(np.float64).reshape(-1)
    return {"u": u, "w_shp": np.load(b / "w_shp_sim.npy").astype(np.float64),
            "w_exp": np.load(b / "w_exp_sim.npy").astype(np.float64),
            "kp": np.load(b / "keypoints_sim.npy")}


def test_3ddfa_sizes_and_indices(m3, raw3):
    assert (m3.source, m3.layout) == ("3ddfa", "3ddfa")
    assert (m3.n_vertices, m3.n_id, m3.n_exp, m3.n_tex) == (53215, 40, 50 - 40, 0)
    assert m3.triangles.shape == (76073, 3) and m3.triangles.dtype == torch.int64
    assert int(m3.triangles.min()) >= 0 and int(m3.triangles.max()) < 53215
    assert m3.keypoint_ids.shape == (68,)
    # keypoints_sim indexes the interleaved xyz array: vertex id k → rows 3k, 3k+1, 3k+2
    assert np.array_equal(np.repeat(m3.keypoint_ids.numpy() * 3, 3) + np.tile([0, 1, 2], 68), raw3["kp"])
    assert m3.mean_shape.dtype == torch.float32


def test_3ddfa_shape_matches_numpy(m3, raw3):
    rng = np.random.default_rng(0)
    alpha = rng.normal(size=(3, 40)) * 2e5
    beta = rng.normal(size=(3, 10))
    v = m3.shape(torch.tensor(alpha, dtype=torch.float32), torch.tensor(beta, dtype=torch.float32))
    assert v.shape == (3, 53215, 3)
    ids = np.array([0, 1234, 8191, 30000, 53214])
    rows = (3 * ids[:, None] + np.arange(3)).reshape(-1)
    for b in range(3):
        ref = raw3["u"][rows] + raw3["w_shp"][rows] @ alpha[b] + raw3["w_exp"][rows] @ beta[b]
        np.testing.assert_allclose(v[b, ids].numpy().reshape(-1), ref, rtol=1e-5, atol=0.5)
    np.testing.assert_allclose(m3.shape().numpy()[0].reshape(-1), raw3["u"], rtol=1e-6, atol=1e-2)


def test_3ddfa_mean_face_landmarks(m3):
    lm = m3.landmarks(m3.shape())[0].numpy()
    assert lm.shape == (68, 3)
    left, right = lm[36:42].mean(0), lm[42:48].mean(0)   # image-left eye (subject's right), image-right eye
    mid_x = lm[27:31, 0].mean()                          # nose bridge = face midline
    iod = right[0] - left[0]
    assert iod > 0, "x must increase towards image right in a frontal view"
    assert abs((left[0] + right[0]) / 2 - mid_x) < 0.03 * iod
    assert abs(left[1] - right[1]) < 0.03 * iod and abs(left[2] - right[2]) < 0.03 * iod
    assert lm[30, 2] == lm[:, 2].max(), "nose tip (landmark 31) has the largest z: z points towards the viewer"
    assert lm[8, 1] < lm[30, 1] < left[1], "y points up: chin below nose below eyes"
    allz = m3.shape()[0, :, 2].numpy()
    assert lm[30, 2] >= np.percentile(allz, 99.5)


def test_3ddfa_normals_point_outward(m3):
    v = m3.shape()
    n = m3.vertex_normals(v)[0]
    assert n.shape == (53215, 3)
    nose = n[m3.keypoint_ids[30]].numpy()
    assert nose[2] > 0.8 and abs(np.linalg.norm(nose) - 1) < 1e-4
    # forehead-to-chin centre line of the face: all normals face the viewer
    front = n[m3.keypoint_ids[[8, 27, 28, 29, 30, 33, 51, 57]]].numpy()
    assert (front[:, 2] > 0.3).all()
    # independent: unit face normals with numpy's cross product, averaged around the nose-tip vertex
    vv = v[0].double().numpy()
    tri = m3.triangles.numpy()
    k = int(m3.keypoint_ids[30])
    around = tri[(tri == k).any(1)]
    fn = np.cross(vv[around[:, 1]] - vv[around[:, 0]], vv[around[:, 2]] - vv[around[:, 0]])
    ref = (fn / np.linalg.norm(fn, axis=1, keepdims=True)).sum(0)
    np.testing.assert_allclose(nose, ref / np.linalg.norm(ref), atol=1e-4)


def test_3ddfa_texture_and_split(m3):
    t = m3.texture(batch_size=2)
    assert t.shape == (2, 53215, 3) and torch.allclose(t, torch.full_like(t, 0.6))
    vec = np.arange(62, dtype=np.float32)
    parts = m3.split_coeff(vec)
    assert [k for k, _ in LAYOUT_3DDFA] == list(parts) == ["pose", "alpha", "beta"]
    assert parts["pose"].shape == (12,) and parts["alpha"][0] == 12 and parts["beta"][-1] == 61
    with pytest.raises(ValueError, match="62"):
        m3.split_coeff(np.zeros(257))


def test_ortho_project_3ddfa_matches_numpy(m3, assets_dir):
    with open(assets_dir / "3ddfa_v2" / "param_mean_std_62d_120x120.pkl", "rb") as fh:
        mean = pickle.load(fh)["mean"].astype(np.float64)
    rng = np.random.default_rng(1)
    pose = mean[:12] + rng.normal(size=(2, 12)) * np.abs(mean[:12]) * 0.05
    v = m3.shape()[0].double().numpy()[::97]
    out = MorphableModel.ortho_project_3ddfa(torch.tensor(np.stack([v, v])), torch.tensor(pose))
    box = np.array([[100.0, 80.0, 340.0, 330.0], [0.0, 0.0, 120.0, 120.0]])
    out_box = MorphableModel.ortho_project_3ddfa(torch.tensor(np.stack([v, v])), torch.tensor(pose),
                                                 roi_box=torch.tensor(box))
    for b in range(2):
        P = pose[b].reshape(3, 4)
        p = P[:, :3] @ v.T + P[:, 3:]
        ref = np.stack([p[0] - 1, 120 - p[1], p[2] - 1], axis=1)
        np.testing.assert_allclose(out[b].numpy(), ref, rtol=1e-6, atol=1e-6)
        sx, sy = (box[b, 2] - box[b, 0]) / 120, (box[b, 3] - box[b, 1]) / 120
        z = ref[:, 2] * (sx + sy) / 2
        ref_box = np.stack([ref[:, 0] * sx + box[b, 0], ref[:, 1] * sy + box[b, 1], z - z.min()], axis=1)
        np.testing.assert_allclose(out_box[b].numpy(), ref_box, rtol=1e-6, atol=1e-6)
    # the mean pose puts the mean face upright and centred in the crop
    lm = MorphableModel.ortho_project_3ddfa(m3.landmarks(m3.shape()), torch.tensor(mean[:12]))[0].numpy()
    assert 20 < lm[:, 0].min() and lm[:, 0].max() < 100 and lm[36:48, 1].mean() < lm[48:68, 1].mean()


def test_rotation_and_perspective_match_numpy():
    rng = np.random.default_rng(2)
    angles = rng.uniform(-0.6, 0.6, size=(3, 3))
    R = MorphableModel.rotation_from_angles(torch.tensor(angles)).numpy()
    for b in range(3):  # Deep3D: R = Rz·Ry·Rx = extrinsic x-then-y-then-z
        np.testing.assert_allclose(R[b], Rotation.from_euler("xyz", angles[b]).as_matrix(), atol=1e-12)
    pts = rng.normal(size=(3, 50, 3)) * 0.8
    trans = rng.normal(size=(3, 3)) * 0.1
    cam = np.einsum("bij,bnj->bni", R, pts) + trans[:, None]
    uv = MorphableModel.perspective_project(torch.tensor(cam)).numpy()
    zc = 10.0 - cam[..., 2]
    ref = np.stack([1015 * cam[..., 0] / zc + 112, 223 - (1015 * cam[..., 1] / zc + 112)], axis=-1)
    np.testing.assert_allclose(uv, ref, rtol=1e-9, atol=1e-7)
    up = MorphableModel.perspective_project(torch.tensor(cam), flip_y=False).numpy()
    np.testing.assert_allclose(up[..., 1], 1015 * cam[..., 1] / zc + 112, atol=1e-7)
    assert np.allclose(MorphableModel.perspective_project(torch.zeros(1, 1, 3)).numpy(), [[[112, 111]]])


def test_deep3d_aux_files_share_the_3ddfa_vertices(m3, assets_dir):
    """The front model's 35709 vertices are `idx` of the 53215 set: with 3DDFA's mean shape, Deep3D's triangles
    give outward normals and its keypoints are 3DDFA's keypoints."""
    aux = assets_dir / "deep3d_bfm_aux"
    front = loadmat(aux / "BFM_front_idx.mat")["idx"].astype(np.int64).ravel() - 1
    info = loadmat(aux / "facemodel_info.mat")
    kp = info["keypoints"].astype(np.int64).ravel() - 1
    assert np.array_equal(front[kp], m3.keypoint_ids.numpy())
    v = m3.shape()[0].double().numpy()[front]
    tri = info["tri"].astype(np.int64) - 1
    around = tri[(tri == kp[30]).any(1)]
    fn = np.cross(v[around[:, 1]] - v[around[:, 0]], v[around[:, 2]] - v[around[:, 0]])
    assert (fn[:, 2] > 0).all()


# ---------------------------------------------------------------------- BFM09 conversion on fake files
N09, NEXP, K_EXP = 53490, 53215, 79


@pytest.fixture(scope="module")
def fake_bfm09(tmp_path_factory, assets_dir):
    """A full-size 01_MorphableModel.mat (80 components instead of 199, same field names and conventions) and an
    Exp_Pca.bin with k = 79 components in the exact binary layout. Values are random but face-sized."""
    d = tmp_path_factory.mktemp("bfm09")
    rng = np.random.default_rng(3)
    f32 = np.float32
    mat = {
        "shapeMU": (rng.normal(size=(3 * N09, 1)) * 5e4 + 1e4).astype(f32),
        "shapePC": rng.normal(size=(3 * N09, 80)).astype(f32) * f32(1e-3),
        "shapeEV": (np.linspace(4e5, 1e4, 80)[:, None]).astype(f32),
        "texMU": rng.uniform(60, 200, size=(3 * N09, 1)).astype(f32),
        "texPC": rng.normal(size=(3 * N09, 80)).astype(f32) * f32(1e-3),
        "texEV": (np.linspace(3e3, 50, 80)[:, None]).astype(f32),
    }
    savemat(d / "01_MorphableModel.mat", mat, do_compression=False)
    exp_mean = rng.normal(size=3 * NEXP).astype(f32)
    exp_pc = rng.normal(size=(K_EXP, 3 * NEXP)).astype(f32) * f32(1e2)
    with open(d / "Exp_Pca.bin", "wb") as fh:
        np.array([K_EXP], dtype="<i4").tofile(fh)
        exp_mean.astype("<f4").tofile(fh)
        exp_pc.astype("<f4").tofile(fh)
    return {"dir": d, "mat": mat, "exp_pc": exp_pc, "exp_mean": exp_mean}


def test_read_exp_pca_format(fake_bfm09):
    mean, pc = read_exp_pca(fake_bfm09["dir"] / "Exp_Pca.bin")
    assert mean.shape == (3 * NEXP,) and pc.shape == (3 * NEXP, K_EXP)
    np.testing.assert_array_equal(pc[:, 5], fake_bfm09["exp_pc"][5])
    np.testing.assert_array_equal(mean, fake_bfm09["exp_mean"])


def test_bfm09_front_model_matches_formula_and_caches(fake_bfm09, assets_dir, tmp_path):
    d, mat = fake_bfm09["dir"], fake_bfm09["mat"]
    aux = assets_dir / "deep3d_bfm_aux"
    m = MorphableModel.from_bfm09(d / "01_MorphableModel.mat", d / "Exp_Pca.bin", aux_folder=assets_dir,
                                  cache=tmp_path)
    assert m.cache_hit is False and m.cache_path.is_file() and m.cache_path.parent == tmp_path
    assert (m.source, m.layout) == ("bfm09_front", "deep3d")
    assert (m.n_vertices, m.n_id, m.n_exp, m.n_tex) == (35709, 80, 64, 80)
    assert m.triangles.shape == (70789, 3) and m.point_buf.shape == (35709, 8)

    # independent numpy computation of the documented formula on a few vertices
    front = loadmat(aux / "BFM_front_idx.mat")["idx"].astype(np.int64).ravel() - 1
    trim = loadmat(aux / "BFM_exp_idx.mat")["trimIndex"].astype(np.int64).ravel() - 1
    std_exp = np.loadtxt(aux / "std_exp.txt")
    info = loadmat(aux / "facemodel_info.mat")
    mu = mat["shapeMU"].astype(np.float64).reshape(-1, 3)[trim[front]] / 1e5
    centre = mu.mean(0)
    rng = np.random.default_rng(4)
    alpha, beta, delta = rng.normal(size=80), rng.normal(size=64), rng.normal(size=80)
    v = m.shape(torch.tensor(alpha[None], dtype=torch.float32), torch.tensor(beta[None], dtype=torch.float32))[0]
    tex = m.texture(torch.tensor(delta[None], dtype=torch.float32))[0]
    for j in (0, 17, 20000, 35708):
        i09, iexp = trim[front[j]], front[j]
        for c in range(3):
            r09, rexp = 3 * i09 + c, 3 * iexp + c
            sid = mat["shapePC"][r09].astype(np.float64) * mat["shapeEV"].ravel() / 1e5
            sexp = fake_bfm09["exp_pc"][:64, rexp].astype(np.float64) * std_exp[:64] / 1e5
            ref = mat["shapeMU"][r09, 0] / 1e5 - centre[c] + sid @ alpha + sexp @ beta
            assert v[j, c].item() == pytest.approx(ref, rel=1e-4, abs=1e-5)
            stex = mat["texPC"][r09].astype(np.float64) * mat["texEV"].ravel()
            assert tex[j, c].item() == pytest.approx((mat["texMU"][r09, 0] + stex @ delta) / 255, rel=1e-4, abs=1e-5)
    np.testing.assert_allclose(m.mean_shape.numpy().mean(0), 0, atol=1e-5)  # recentred
    assert np.array_equal(m.triangles.numpy(), info["tri"].astype(np.int64) - 1)
    assert np.array_equal(m.keypoint_ids.numpy(), info["keypoints"].astype(np.int64).ravel() - 1)
    assert m.split_coeff(torch.zeros(2, 257))["translation"].shape == (2, 3)
    assert [k for k, _ in LAYOUT_DEEP3D] == ["alpha", "beta", "texture", "angles", "gamma", "translation"]

    # normals via point_buf equal the scatter version (same faces around each vertex)
    n_pb = m.vertex_normals(v[None])
    pb, m.point_buf = m.point_buf, None
    n_sc = m.vertex_normals(v[None])
    m.point_buf = pb
    assert torch.allclose(n_pb, n_sc, atol=1e-4)

    t0 = time.perf_counter()
    m2 = MorphableModel.from_bfm09(d / "01_MorphableModel.mat", d / "Exp_Pca.bin", aux_folder=assets_dir,
                                   cache=tmp_path)
    assert m2.cache_hit is True and m2.cache_path == m.cache_path
    assert torch.equal(m2.id_basis_t, m.id_basis_t) and torch.equal(m2.mean_shape, m.mean_shape)
    assert time.perf_counter() - t0 < 10
    m3 = MorphableModel.from_bfm09(d / "01_MorphableModel.mat", d / "Exp_Pca.bin", aux_folder=assets_dir,
                                   cache=tmp_path, recenter=False)
    assert m3.cache_hit is True
    np.testing.assert_allclose(m3.mean_shape.numpy(), mu, rtol=1e-5, atol=1e-6)


def test_bfm09_missing_gives_asset_error(tmp_path, monkeypatch):
    from facelib.assets import AssetMissingError

    monkeypatch.setenv("FACELIB_ASSETS", str(tmp_path))
    with pytest.raises(AssetMissingError, match="01_MorphableModel.mat"):
        MorphableModel.from_bfm09(cache=False)
