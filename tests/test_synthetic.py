"""The embedded synthetic KDEF-like / FEI-like set: layout, labels, appearance, pose direction, determinism."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pandas as pd
import pytest

N_ID, N_FEI, SIZE = 4, 4, (191, 141)


@pytest.fixture(scope="module")
def synth(tmp_path_factory, assets_dir):
    from facelib.data import synthetic

    out = tmp_path_factory.mktemp("synthetic")
    try:
        res = synthetic.generate_synthetic(out, n_identities=N_ID, n_fei=N_FEI, seed=3, image_size=SIZE,
                                           assets_dir=assets_dir, progress=False)
    except FileNotFoundError as exc:  # pragma: no cover - assets absent
        pytest.skip(f"3DDFA assets missing: {exc}")
    return out, res


def test_kdef_layout_and_labels(synth):
    from facelib.data.datasets import ANGLE_CODES, EXPRESSION_CODES, load_kdef

    out, res = synth
    df = load_kdef(res["kdef_root"], progress=False)
    assert len(df) == N_ID * 35 == res["n_kdef"]
    assert df["usable"].all(), df.loc[~df["usable"], "reason"].tolist()
    assert df.attrs["missing"] == []
    assert sorted(df["subject"].unique()) == ["F01", "F02", "M01", "M02"]
    assert set(df["session"]) == {"A"}
    assert df.groupby("subject").size().eq(35).all()
    assert df["expression"].value_counts().to_dict() == {e: N_ID * 5 for e in EXPRESSION_CODES}
    assert df["angle"].value_counts().to_dict() == {a: N_ID * 7 for a in ANGLE_CODES}
    assert set(zip(df["subject"].str[0], df["gender"])) == {("F", "F"), ("M", "M")}
    assert (df["width"] == SIZE[1]).all() and (df["height"] == SIZE[0]).all()
    assert (out / "KDEF" / "AF01" / "AF01ANS.JPG").is_file()
    marker = json.loads((out / "SYNTHETIC.json").read_text())
    assert marker["synthetic"] is True and marker["params"]["seed"] == 3 and marker["complete"] is True


def test_fei_layout_and_labels(synth):
    from facelib.data.datasets import load_fei

    out, res = synth
    df = load_fei(res["fei_root"], progress=False)
    assert len(df) == 2 * N_FEI == res["n_fei_images"]
    assert df["usable"].all()
    assert (df["width"] == 162).all() and (df["height"] == 193).all()
    g = df.drop_duplicates("subject_id").set_index("subject_id")["gender"].sort_index()
    assert g.tolist() == ["F", "F", "M", "M"]  # identities 0..n/2-1 F, the rest M
    assert sorted(df["expression"].unique()) == ["neutral", "smiling"]
    img = cv2.imread(str(out / "fei" / "frontal" / "1a.jpg"), cv2.IMREAD_UNCHANGED)
    assert img.ndim == 2  # grayscale like FEI


def test_faces_are_not_black_and_vary(synth):
    out, _ = synth
    paths = sorted((out / "KDEF").rglob("*.JPG"))[::7]
    for p in paths:
        img = cv2.imread(str(p))
        assert img.mean() > 60 and img.std() > 15, p.name
    a = cv2.imread(str(out / "KDEF" / "AF01" / "AF01NES.JPG")).astype(float)
    b = cv2.imread(str(out / "KDEF" / "AF01" / "AF01SUS.JPG")).astype(float)
    assert np.abs(a - b).mean() > 2  # expressions change the picture


def test_profiles_face_opposite_sides(synth, assets_dir):
    """FL turns the nose to image left (as KDEF's FL pictures), FR to image right: the face mask's centroid lies
    on opposite sides of the head pivot."""
    from facelib.data import synthetic, synthetic_faces
    from facelib.face3d.morphable import MorphableModel

    _, res = synth
    gt = pd.read_parquet(res["ground_truth"])
    rows = gt[(gt["dataset"] == "kdef") & (gt["image_id"].isin(["AF01NEFL", "AF01NEFR", "AF01NES"]))]
    rows = rows.set_index("image_id").loc[["AF01NEFL", "AF01NES", "AF01NEFR"]]
    model = MorphableModel.from_3ddfa(assets_dir)
    r = synthetic_faces.Renderer(model)
    H, W = SIZE
    alb = np.full((model.n_vertices, 3), 0.6, np.float32)
    _, mask = r.render(np.stack(rows["alpha"].map(np.asarray)), np.stack(rows["beta"].map(np.asarray)), alb,
                       np.stack(rows["angles"].map(np.asarray)), np.zeros((3, 27)), H, W,
                       np.full(3, 0.4 * W / synthetic.FACE_WIDTH_UNITS), np.tile([W / 2, H / 2], (3, 1)),
                       np.zeros((3, H, W, 3), np.float32))
    cx = [float(np.nonzero(m)[1].mean()) for m in mask]
    assert cx[0] < W / 2 - 5 and cx[2] > W / 2 + 5 and abs(cx[1] - W / 2) < 5
    assert abs((cx[0] - W / 2) + (cx[2] - W / 2)) < 8  # roughly mirror images
    # yaw in the ground truth: FL −90°, FR +90°
    yaw = np.degrees(np.stack(rows["angles"].map(np.asarray))[:, 1])
    assert yaw[0] < -80 and yaw[2] > 80


def test_ground_truth_table(synth):
    out, res = synth
    gt = pd.read_parquet(res["ground_truth"])
    assert len(gt) == res["n_images"] == N_ID * 35 + 2 * N_FEI
    alpha = np.stack(gt["alpha"].map(np.asarray))
    beta = np.stack(gt["beta"].map(np.asarray))
    assert alpha.shape == (len(gt), 40) and beta.shape == (len(gt), 10)
    kdef = gt[gt["dataset"] == "kdef"]
    for _, grp in kdef.groupby("subject"):  # one α per identity
        a = np.stack(grp["alpha"].map(np.asarray))
        assert np.allclose(a, a[0])
    # expression prototypes: NE is zero plus jitter, the others much larger
    norms = kdef.assign(n=[np.linalg.norm(b) for b in kdef["beta"]]).groupby("expression")["n"].mean()
    assert norms["NE"] < 0.5 * norms.drop("NE").min()
    # gender shift along the documented direction (whitened α)
    marker = json.loads((out / "SYNTHETIC.json").read_text())
    d, sa = np.asarray(marker["gender_direction_whitened"]), np.asarray(marker["sigma_alpha"])
    proj = (alpha / sa) @ d
    assert proj[gt["gender"].eq("F").to_numpy()].mean() < 0 < proj[gt["gender"].eq("M").to_numpy()].mean()


def test_deterministic_and_resumable(synth, assets_dir):
    """Deleting some images and the marker, then generating again with the same parameters, re-renders exactly
    the same bytes (the set is a function of the seed) and the same ground truth."""
    from facelib.data import synthetic

    out, res = synth
    victims = [out / "KDEF" / "AM02" / "AM02HAHL.JPG", out / "KDEF" / "AF01" / "AF01SUFR.JPG",
               out / "fei" / "frontal" / "3b.jpg"]
    before = {p: p.read_bytes() for p in victims}
    gt_before = pd.read_parquet(res["ground_truth"])
    for p in victims:
        p.unlink()
    (out / "SYNTHETIC.json").unlink()
    res2 = synthetic.generate_synthetic(out, n_identities=N_ID, n_fei=N_FEI, seed=3, image_size=SIZE,
                                       assets_dir=assets_dir, progress=False)
    for p in victims:
        assert p.read_bytes() == before[p], p.name
    pd.testing.assert_frame_equal(pd.read_parquet(res2["ground_truth"]), gt_before)
    with pytest.raises(ValueError, match="other parameters"):
        synthetic.generate_synthetic(out, n_identities=N_ID, n_fei=N_FEI, seed=4, image_size=SIZE,
                                     assets_dir=assets_dir, progress=False)


def test_cli_registration():
    from facelib import cli

    args = cli.build_parser().parse_args(["synthetic", "--out", "x", "--identities", "6", "--seed", "2"])
    assert args.out == "x" and args.identities == 6 and args.seed == 2 and args.func is cli.cmd_synthetic
