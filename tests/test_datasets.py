import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest

from facelib.data import datasets
from facelib.data.datasets import DatasetError

from .conftest import ROOT, face_like_image


def _write(path, img):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


@pytest.fixture()
def bad_kdef(tmp_path):
    """A small KDEF tree with one of every defect the loader must survive."""
    root = tmp_path / "KDEF"
    good = ["AF01ANS", "AF01HAS", "AF01NEHL", "AM02SAFR", "BF01ANS"]
    for i, name in enumerate(good):
        _write(root / name[:4] / f"{name}.JPG", face_like_image(i))
    (root / "AF01" / "AF01DIS.JPG").write_bytes(b"")                                   # zero bytes
    (root / "AF01" / "AF01SUS.JPG").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")  # corrupt
    data = (root / "AF01" / "AF01ANS.JPG").read_bytes()
    (root / "AF01" / "AF01AFS.JPG").write_bytes(data[: len(data) - 300])              # truncated
    _write(root / "AF01" / "AF01SAS.JPG", np.zeros((96, 80, 3), np.uint8))             # black placeholder
    _write(root / "AF01" / "AF01HAHL.JPG", face_like_image(7, gray=True))              # grayscale file
    shutil.copy(root / "AF01" / "AF01HAS.JPG", root / "AF01" / "AF01NES.JPG")          # duplicate bytes
    _write(root / "AF31" / "AF31V.JPG", face_like_image(11))                           # official misname
    _write(root / "AF01" / "holiday.JPG", face_like_image(12))                         # unrelated name
    return root


def test_bad_files_are_reported_not_fatal(bad_kdef):
    df = datasets.load_kdef(bad_kdef, progress=False)
    reason = dict(zip(df["image_id"], df["reason"]))
    assert reason["AF01DIS"].startswith("empty_file")
    assert reason["AF01SUS"].startswith("corrupt_image")
    assert reason["AF01AFS"].startswith("truncated_jpeg")
    assert reason["AF01SAS"].startswith("black_image")
    assert reason["AF01NES"].startswith("duplicate") and "AF01HAS" in reason["AF01NES"]
    assert "AF31SAHL" in reason["AF31V"] and reason["AF31V"].startswith("unparseable_name")
    assert reason["HOLIDAY"].startswith("unparseable_name")
    assert reason["AF01HAHL"] == ""  # grayscale content is usable
    usable = df[df["usable"]]
    assert set(usable["image_id"]) == {"AF01ANS", "AF01HAS", "AF01NEHL", "AM02SAFR", "BF01ANS", "AF01HAHL"}
    # labels parsed from the name; F01 is one person across sessions A and B
    row = df.set_index("image_id").loc["BF01ANS"]
    assert (row.session, row.gender, row.subject, row.expression, row.angle) == ("B", "F", "F01", "AN", "S")
    assert row.expression_name == "angry"
    assert df.set_index("image_id").loc["AF01ANS", "subject"] == "F01"


def test_missing_expected_files_listed(bad_kdef):
    df = datasets.load_kdef(bad_kdef, progress=False)
    missing = df.attrs["missing"]
    # (A,F01), (A,M02), (B,F01) are present → 3 × 35 expected; present names are not missing
    present_named = set(df.dropna(subset=["session"])["image_id"])
    assert len(missing) == 3 * 35 - len(present_named)
    assert "AF01ANFL" in missing and "AF01ANS" not in missing


def test_flat_layout_equals_official_layout(tmp_path, bad_kdef):
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in bad_kdef.rglob("*.JPG"):
        shutil.copy(p, flat / p.name)
    a = datasets.load_kdef(bad_kdef, progress=False).set_index("image_id")
    b = datasets.load_kdef(flat, progress=False).set_index("image_id")
    assert a["usable"].sort_index().equals(b["usable"].sort_index())


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="FACELIB_KDEF"):
        datasets.load_kdef(None)
    with pytest.raises(DatasetError, match="does not exist"):
        datasets.load_kdef(tmp_path / "nope")


def test_fei_missing_label_names_subject(tmp_path):
    root = tmp_path / "fei"
    for sid in (1, 2, 3):
        _write(root / "frontal" / f"{sid}a.jpg", face_like_image(sid, gray=True))
    pd.DataFrame({"subject_id": [1, 2], "gender": ["M", "F"]}).to_csv(root / "fei_gender.csv", index=False)
    with pytest.raises(DatasetError, match=r"without a gender label.*\b3\b"):
        datasets.load_fei(root, progress=False)


def test_fei_csv_beside_images_folder(tmp_path):
    images = tmp_path / "fei" / "frontal"
    for sid in (1, 2):
        _write(images / f"{sid}a.jpg", face_like_image(sid, gray=True))
        _write(images / f"{sid}b.jpg", face_like_image(sid + 10, gray=True))
    _write(images / f"{1}-05.jpg", face_like_image(30))
    pd.DataFrame({"subject_id": [1, 2], "gender": ["m", "F"]}).to_csv(tmp_path / "fei" / "fei_gender.csv",
                                                                      index=False)
    df = datasets.load_fei(images, progress=False)  # CSV found in the parent folder
    assert len(df) == 4 and df["usable"].all()
    assert dict(zip(df["image_id"], df["expression"]))["1b"] == "smiling"
    assert set(df["gender"]) == {"M", "F"}
    orig = datasets.load_fei(images, which="original", progress=False)
    assert list(orig["angle"]) == ["pose05"]


def test_generic_folder_and_csv(tmp_path):
    root = tmp_path / "mine"
    _write(root / "alice" / "1.png", face_like_image(1))
    _write(root / "bob" / "2.png", face_like_image(2))
    _write(root / "stray.png", face_like_image(3))
    df = datasets.load_folder(root, progress=False)
    assert dict(zip(df["image_id"], df["label"].fillna(""))) == {"alice/1.png": "alice", "bob/2.png": "bob",
                                                                  "stray.png": ""}
    assert df.set_index("image_id").loc["stray.png", "reason"].startswith("missing_label")
    pd.DataFrame({"path": ["alice/1.png", "bob/2.png", "carol/9.png"], "gender": ["F", "M", "F"]}).to_csv(
        root / "labels.csv", index=False)
    df = datasets.load_folder(root, csv=root / "labels.csv", progress=False)
    assert df["usable"].sum() == 2
    assert df.attrs["missing"] == ["carol/9.png"]


def test_manifest_round_trip(tmp_path, bad_kdef):
    df = datasets.load_kdef(bad_kdef, progress=False)
    pq, csv = datasets.save_manifest(df, tmp_path / "out" / "manifest")
    back = pd.read_parquet(pq)
    assert list(back.columns)[:15] == datasets.MANIFEST_COLUMNS
    assert back["sha256"].tolist() == df["sha256"].tolist()
    assert len(pd.read_csv(csv)) == len(df)


# ------------------------------------------------------------------------------------- real data in ../shared
def test_real_kdef_dev(kdef_root):
    df = datasets.load_kdef(kdef_root, progress=False)
    s = datasets.summarize(df)
    assert (s["images"], s["usable"], s["subjects"]) == (699, 698, 20)
    assert s["excluded"] == [{"path": "AF10/AF10AFFR.JPG", "reason": "black_image: all-black placeholder"}]
    assert s["missing"] == ["AF01SUFR"]
    assert s["by_angle"] == {"FL": 140, "FR": 138, "HL": 140, "HR": 140, "S": 140}
    assert set(df["width"]) == {562} and set(df["height"]) == {762}


def test_real_fei_frontal(fei_root):
    df = datasets.load_fei(fei_root, progress=False)
    s = datasets.summarize(df)
    assert (s["images"], s["usable"], s["subjects"]) == (400, 400, 200)
    assert s["subjects_by_gender"] == {"F": 100, "M": 100}


def test_cli_data_check_json(kdef_root):
    out = subprocess.run([sys.executable, "-m", "facelib", "data", "check", "--dataset", "kdef",
                          "--root", str(kdef_root), "--json"], capture_output=True, text=True, cwd=ROOT,
                         check=True)
    s = json.loads(out.stdout)
    for key in ("images", "usable", "subjects", "by_gender", "by_expression", "by_angle", "excluded", "missing"):
        assert key in s
    assert (s["images"], s["usable"], s["subjects"]) == (699, 698, 20)
    assert s["excluded"][0]["path"].endswith("AF10AFFR.JPG")
