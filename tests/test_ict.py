"""ICT Face Model Light: OBJ reader, model construction, landmarks, asset errors, fitting on the ICT model."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import torch

from facelib import assets
from facelib.data import datasets
from facelib.face3d import ict, reconstruct
from facelib.face3d.ict_members import MEMBERS
from facelib.face3d.morphable import MorphableModel
from facelib.fitting import ict_fit
from facelib.fitting.fitter import Fitter
from facelib.report import ict_figures
from facelib.run import Run
from tests.fixtures import known_ict_faces

# iBUG/Multi-PIE 68-point mirror pairs (0-based) and the points on the midline
MIRROR = ([(i, 16 - i) for i in range(8)] + [(17 + i, 26 - i) for i in range(5)] + [(31, 35), (32, 34)]
          + [(36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]
          + [(48, 54), (49, 53), (50, 52), (59, 55), (58, 56), (60, 64), (61, 63), (67, 65)])
MIDLINE = (8, 27, 28, 29, 30, 33, 51, 57, 62, 66)

OBJ_TEXT = """# a small test mesh
mtllib x.mtl
v 0 0 0
v 1.5 0 0
v 1 1 0.25
v 0 1 -2e-1
v 0.5 2 1E0 1.0
vt 0 0
vt 1 0
vn 0 0 1
usemtl A
f 1/1/1 2/2/1 3/1/1 4/2/1
f 4//1 3//1 5//1
f -2 -3 -1
"""


def _independent_parse(text: str):
    """Line by line, no numpy: vertices (first three numbers of 'v' lines) and 0-based polygons."""
    verts, polys = [], []
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "v":
            verts.append([float(p) for p in parts[1:4]])
        elif parts[0] == "f":
            ids = [int(p.split("/")[0]) for p in parts[1:]]
            polys.append([i - 1 if i > 0 else len(verts) + i for i in ids])
    return verts, polys


def test_read_obj_matches_an_independent_parse(tmp_path):
    path = tmp_path / "mesh.obj"
    path.write_text(OBJ_TEXT)
    verts, polys = ict.read_obj(path, faces=True)
    ref_v, ref_p = _independent_parse(OBJ_TEXT)
    np.testing.assert_array_equal(verts, np.array(ref_v))
    assert polys.shape == (3, 4)
    for row, ref in zip(polys, ref_p):
        assert row[row >= 0].tolist() == ref
    assert (polys[1:, 3] == -1).all()
    np.testing.assert_array_equal(ict.read_obj(path), verts)  # vertices only
    tris = ict.triangulate(polys)
    # quad (0,1,2,3) → (0,1,2), (0,2,3); triangles kept; winding (normal +z for the first quad) preserved
    assert sorted(map(tuple, tris.tolist())) == sorted([(0, 1, 2), (0, 2, 3), (3, 2, 4), (3, 2, 4)])
    n = np.cross(verts[tris[0, 1]] - verts[tris[0, 0]], verts[tris[0, 2]] - verts[tris[0, 0]])
    assert n[2] > 0


def test_read_obj_rejects_bad_indices(tmp_path):
    path = tmp_path / "bad.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nf 1 2 7\n")
    with pytest.raises(ValueError, match="out of range"):
        ict.read_obj(path, faces=True)


def test_face3d_does_not_import_fitting():
    """The ict backend lives in fitting (it fits); face3d names it only for ``make_backend``, imported on use."""
    code = ("import sys; import facelib.face3d.ict, facelib.face3d.reconstruct as r; "
            "assert 'ict' in r.BACKENDS; print(sorted(m for m in sys.modules if m.startswith('facelib.fitting')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_manifest_entry_points_to_the_official_source():
    a = assets.get("ict_facekit")
    assert "github.com/ICT-VGL/ICT-FaceKit" in a.source and ict.ICT_COMMIT in a.source
    assert a.licence.startswith("MIT") and len(a.sha256) == 64 and not a.downloadable
    assert {"FaceXModel/generic_neutral_mesh.obj", "FaceXModel/vertex_indices.json", "LICENSE"} <= set(MEMBERS)


# ----------------------------------------------------------------------------------------------- real files
@pytest.fixture(scope="module")
def ict_model(assets_dir):
    if not (assets_dir / assets.get("ict_facekit").relpath).is_file():
        pytest.skip("ICT-FaceKit archive not in FACELIB_ASSETS")
    return ict.load_model(assets_dir=assets_dir)


@pytest.fixture(scope="module")
def ict_folder(ict_model, assets_dir):
    return ict.locate(assets_dir=assets_dir)[0]


def test_model_dimensions_and_cache(ict_model, assets_dir):
    m = ict_model
    assert (m.source, m.layout, m.n_vertices, m.n_id, m.n_exp) == ("ict", "ict", 26719, 100, 53)
    assert m.coeff_dim == 12 + 100 + 53
    assert m.split_coeff(np.zeros(165))["beta"].shape == (53,)
    assert m.expression_names[0] == "browDown_L" and "PupilDilate_L" not in m.expression_names
    assert m.extras["noneck_ids"].numel() == 6706 and m.keypoint_ids.max() <= 6705  # narrow face area
    again = ict.load_model(assets_dir=assets_dir)
    assert again.cache_hit and again.cache_path == m.cache_path and again.key == m.key
    torch.testing.assert_close(again.exp_basis_t, m.exp_basis_t)


def test_mean_plus_mode_reconstructs_the_mode_mesh(ict_model, ict_folder):
    m = ict_model
    for kind, j, rel in (("alpha", 7, "FaceXModel/identity007.obj"), ("alpha", 99, "FaceXModel/identity099.obj"),
                         ("beta", m.expression_names.index("jawOpen"), "FaceXModel/jawOpen.obj")):
        ref, _ = _independent_parse((ict_folder / rel).read_text())
        coeff = np.zeros(m.n_id if kind == "alpha" else m.n_exp, np.float32)
        coeff[j] = 1.0
        got = m.shape(**{kind: coeff})[0].numpy()
        np.testing.assert_allclose(got, np.array(ref), atol=2e-5, rtol=0)   # float32 of cm values


def test_identity_modes_are_orthogonal_and_std_scaled(ict_model):
    B = ict_model.id_basis_t.double()
    G = B @ B.T
    cos = G / torch.sqrt(torch.outer(G.diag(), G.diag()))
    assert (cos - torch.eye(100, dtype=cos.dtype)).abs().max() < 1e-3
    norms = G.diag().sqrt()
    assert norms[0] > 10 * norms[-1]  # decreasing variance: modes carry their standard deviation


def test_landmarks_respect_the_left_right_symmetry(ict_model):
    lm = ict_model.mean_shape[ict_model.keypoint_ids].numpy()
    face_w = lm[16, 0] - lm[0, 0]
    assert face_w > 10  # cm; point 0 is the subject's right (x < 0), 16 the left
    for a, b in MIRROR:
        np.testing.assert_allclose(lm[a] * [-1, 1, 1], lm[b], atol=1e-3 * face_w, err_msg=f"pair {a}-{b}")
        assert lm[a, 0] < 0 < lm[b, 0]
    np.testing.assert_allclose(lm[list(MIDLINE), 0], 0, atol=1e-3 * face_w)
    # order top → bottom along the midline: brows' level > nose bridge > nose tip > upper lip > chin
    y = lm[:, 1]
    assert y[27] > y[30] > y[33] > y[51] > y[57] > y[8]
    assert lm[30, 2] == lm[:, 2].max()  # nose tip is the most forward landmark


def test_landmark_figure_projects_on_the_neutral(ict_model, tmp_path):
    fig, pts = ict_figures.landmark_figure(ict_model, out=tmp_path / "ict_landmarks.png")
    assert (tmp_path / "ict_landmarks.png").stat().st_size > 10_000
    assert pts[36, 0] < pts[45, 0] and pts[19, 1] < pts[8, 1]  # image: right eye on the left, chin at the bottom


def test_outward_normals(ict_model):
    v = ict_model.shape()
    n = ict_model.vertex_normals(v)[0]
    tip = int(v[0, :9409, 2].argmax())
    assert n[tip, 2] > 0.9


def _linked_clone(src, dest):
    for rel in MEMBERS:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(src / rel, dest / rel)
    return dest


def test_missing_or_corrupt_member_names_the_file(ict_folder, tmp_path):
    clone = _linked_clone(ict_folder, tmp_path / "clone")
    os.unlink(clone / "FaceXModel/identity042.obj")
    with pytest.raises(assets.AssetMissingError, match="identity042.obj"):
        ict.load_model(clone, cache=False)
    (clone / "FaceXModel/identity042.obj").write_bytes((ict_folder / "FaceXModel/identity042.obj").read_bytes())
    bad = clone / "FaceXModel/jawOpen.obj"
    os.unlink(bad)
    bad.write_bytes((ict_folder / "FaceXModel/jawOpen.obj").read_bytes().replace(b"v 0 ", b"v 1 ", 1))
    with pytest.raises(assets.AssetChecksumError, match="jawOpen.obj"):
        ict.load_model(clone, cache=False)


def test_clone_gives_the_same_model(ict_model, ict_folder, tmp_path):
    clone = _linked_clone(ict_folder, tmp_path / "clone2")
    m = ict.load_model(clone / "FaceXModel", cache=tmp_path / "c")
    torch.testing.assert_close(m.id_basis_t, ict_model.id_basis_t)
    assert not m.cache_hit and m.key == ict_model.key


def test_wrong_archive_checksum(tmp_path):
    fake = tmp_path / "ict_facekit_light.tar.xz"
    fake.write_bytes(b"not the archive")
    with pytest.raises(assets.AssetChecksumError, match="ict_facekit"):
        ict.locate(fake)


def test_unpack_is_atomic_and_checks_members(tmp_path):
    """A member with the wrong content: error naming it, no folder taken as complete, no partial left."""
    archive = tmp_path / "small.tar.xz"
    with tarfile.open(archive, "w:xz") as tf:
        for rel, payload in (("LICENSE", b"tampered"), ("FaceXModel/jawOpen.obj", b"v 0 0 0\n")):
            info = tarfile.TarInfo(f"ict_facekit/{rel}")
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    root = tmp_path / "cache"
    with pytest.raises(assets.AssetChecksumError, match="LICENSE|jawOpen.obj"):
        ict.unpack(archive, root)
    assert list(root.iterdir()) == []


# ----------------------------------------------------------------------------------------------- fitting
def test_landmark_fit_recovers_a_synthetic_expression(ict_model):
    """Landmarks of a known ICT face (identity + expression, posed): the fit from the neutral start gets them back
    within a fraction of a pixel, with β inside [0, 1]."""
    fitter = Fitter(ict_model, device="cpu")
    coeffs, rois = known_ict_faces(ict_model)
    alpha, beta, pose = coeffs["alpha"], coeffs["beta"], coeffs["pose"]
    truth = fitter.fit({"alpha": alpha, "beta": beta, "pose": pose}, rois, None, iterations=0).landmarks
    start = {"alpha": np.zeros_like(alpha), "beta": np.zeros_like(beta), "pose": pose}
    before = fitter.fit(start, rois, truth, iterations=0)
    res = fitter.fit(start, rois, truth, iterations=300)
    err0 = np.linalg.norm(before.landmarks - truth, axis=-1).mean()
    err = np.linalg.norm(res.landmarks - truth, axis=-1).mean()
    assert err < 0.25 * err0 and err < 1.0
    assert res.beta.min() >= 0 and res.beta.max() <= 1
    assert res.beta.shape == (2, 53) and res.alpha.shape == (2, 100)


def test_pose_from_3ddfa_places_the_ict_face_on_the_bfm_face(ict_model, assets_dir):
    bfm = MorphableModel.from_3ddfa(assets_dir)
    sim = ict.bfm_similarity(ict_model, bfm)
    pose = np.array([[4e-4, 0, 1e-4, 60, 0, 4e-4, 0, 60, -1e-4, 0, 4e-4, 0]], np.float32)
    p_bfm = MorphableModel.ortho_project_3ddfa(bfm.landmarks(bfm.shape()), pose)[0, 17:, :2]
    p_ict = MorphableModel.ortho_project_3ddfa(ict_model.landmarks(ict_model.shape()),
                                               ict.pose_from_3ddfa(pose, sim))[0, 17:, :2]
    width = float(p_bfm[:, 0].max() - p_bfm[:, 0].min())
    assert float((p_bfm - p_ict).norm(dim=-1).mean()) < 0.05 * width


def test_study_lists_the_ict_variants(tmp_path):
    run = Run({"out_dir": str(tmp_path / "run"), "backend": "tddfa", "fit_modes": ["landmarks"],
               "ict_modes": ["landmarks", "full"]})
    names = [p.name for p in run.coefficient_variants("kdef")]
    assert names == ["kdef_tddfa.parquet", "kdef_tddfa+fit_landmarks.parquet", "kdef_ict.parquet",
                     "kdef_ict+fit_full.parquet"]


@pytest.mark.slow
def test_ict_table_on_real_pictures(ict_model, kdef_root, assets_dir, tmp_path):
    """Two KDEF pictures through tddfa, then the ict landmark fit: schema, dimensions, β in [0, 1], landmark error,
    and the resumable cache (a second call fits nothing)."""
    manifest = datasets.load("kdef", kdef_root, progress=False)
    manifest = manifest[manifest["usable"] & (manifest["angle"] == "S")].head(2)
    table = reconstruct.reconstruct_manifest(manifest, "tddfa", device="cpu", assets_dir=assets_dir,
                                             cache_dir=tmp_path / "rec", progress=False)
    out = ict_fit.fit_ict_table(table, "landmarks", device="cpu", assets_dir=assets_dir,
                                cache_dir=tmp_path / "fit", progress=False, iterations=60)
    ok = out[out["status"] == "ok"]
    assert len(ok) == 2 and set(out["backend"]) == {"ict"}
    beta = reconstruct.coeff_matrix(ok, "beta")
    assert reconstruct.coeff_matrix(ok, "alpha").shape == (2, 100) and beta.shape == (2, 53)
    assert beta.min() >= 0 and beta.max() <= 1
    err = ict_fit.landmark_error(ok)
    assert err.notna().all() and (err < 15).all()   # pixels in a 562×762 picture
    again = ict_fit.fit_ict_table(table, "landmarks", device="cpu", assets_dir=assets_dir,
                                  cache_dir=tmp_path / "fit", progress=False, iterations=60)
    assert again["fit_seconds"].tolist() == out["fit_seconds"].tolist()  # read from the shards, not refitted


@pytest.mark.slow
def test_make_backend_ict(ict_model, kdef_root, assets_dir, tmp_path):
    """``reconstruct_manifest(..., "ict")``: detection + tddfa + ICT landmark fit in one backend."""
    manifest = datasets.load("kdef", kdef_root, progress=False)
    manifest = manifest[manifest["usable"] & (manifest["angle"] == "HL")].head(2)
    table = reconstruct.reconstruct_manifest(manifest, "ict", device="cpu", assets_dir=assets_dir,
                                             cache_dir=tmp_path / "rec", progress=False)
    ok = table[table["status"] == "ok"]
    assert len(ok) == 2 and set(table["backend"]) == {"ict"}
    assert reconstruct.coeff_matrix(ok, "alpha").shape == (2, 100)
    assert reconstruct.coeff_matrix(ok, "beta").shape == (2, 53)
    assert reconstruct.coeff_matrix(ok, "landmarks").shape == (2, 136)


@pytest.mark.slow
def test_study_variants_and_figures(ict_model, kdef_root, assets_dir, tmp_path):
    """What notebook 02 runs with ``ict_modes: [landmarks, full]``: both tables (full with the ICT texture basis
    built from the frontal pictures), the heatmap and the overlays."""
    manifest = datasets.load("kdef", kdef_root, progress=False)
    manifest = manifest[manifest["usable"] & (manifest["subject"] == "F02") & manifest["expression"].isin(["HA", "SU"])
                        & manifest["angle"].isin(["S", "HL"])]
    table = reconstruct.reconstruct_manifest(manifest, "tddfa", device="cpu", assets_dir=assets_dir,
                                             cache_dir=tmp_path / "rec", progress=False)
    run = Run({"out_dir": str(tmp_path / "run"), "backend": "tddfa", "ict_modes": ["landmarks", "full"]})
    out = ict_fit.study_variants(run, {"kdef": table}, ["landmarks", "full"], device="cpu",
                                 assets_dir=assets_dir, progress=False)
    assert set(out) == {("kdef", "landmarks"), ("kdef", "full")}
    full = out[("kdef", "full")]
    assert set(full["backend"]) == {"ict+fit_full"} and run.ict_coeffs("kdef", "full").is_file()
    assert (run.dir / "coeffs" / "texture_ict_kdef_S.npz").is_file()
    ok = full[full["status"] == "ok"]
    assert len(ok) == 4 and all(len(t) >= 1 for t in ok["texture"])
    assert reconstruct.coeff_matrix(ok, "beta").shape == (4, 53)
    act = ict_figures.expression_activation(out[("kdef", "landmarks")], ict_model.expression_names)
    assert list(act.index) == ["HA", "SU"] and act.shape[1] == 53
    ict_figures.expression_heatmap(full, ict_model.expression_names, out=tmp_path / "heat.png")
    ict_figures.overlay_figure(full, ict_model, picks=[("F02", "HA")], out=tmp_path / "overlay.png")
    assert (tmp_path / "heat.png").stat().st_size > 5000 and (tmp_path / "overlay.png").stat().st_size > 5000
