"""Your own dataset: folder datasets in the layouts people ship them, built here from real KDEF faces —
extension-less GIFs named ``<subject>.<condition>`` + a CSV; TIFFs ``<subject>.<expression><n>.<k>.tiff`` listed
in a CSV one folder up; ``root/<label>/<picture>.png``; grayscale and colour; no gender, no angle column. Each
goes through ``data check`` and ``reconstruct --qa`` of the command line in-process, without a traceback; the bad
inputs give their one-line errors and exit code 2."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from facelib import assets
from facelib.cli import main
from facelib.data import datasets, labels
from facelib.errors import EXIT_EXPECTED
from facelib.io import decode_image, read_image

from .conftest import face_like_image

SUBJECTS = ("AF01", "AF02", "AM01", "AM02")
CONDITIONS = {"happy": "HA", "sad": "SA", "normal": "NE"}


def _face(kdef_root, subject: str, expression: str, gray: bool) -> Image.Image:
    src = kdef_root / subject / f"{subject}{expression}S.JPG"
    img = Image.open(src)
    img = img.resize((img.width // 2, img.height // 2))
    return img.convert("L") if gray else img.convert("RGB")


@pytest.fixture(scope="module")
def own_datasets(tmp_path_factory, kdef_root):
    """Three datasets of real faces in three layouts (module scope: reconstructed once)."""
    base = tmp_path_factory.mktemp("own")
    # 1. Yale-like: subject01.happy … (a GIF inside, no extension), grayscale, CSV beside them.
    yale = base / "yalefaces"
    yale.mkdir()
    rows = []
    for i, s in enumerate(SUBJECTS, 1):
        for cond, code in CONDITIONS.items():
            name = f"subject{i:02d}.{cond}"
            _face(kdef_root, s, code, gray=True).save(yale / name, format="GIF")
            rows.append({"path": name, "subject": f"subject{i:02d}", "expression": cond})
    (yale / "Readme.txt").write_text("not a picture")
    pd.DataFrame(rows).to_csv(yale / "labels.csv", index=False)
    # 2. JAFFE-like: images/KA.HA1.29.tiff, CSV one folder up, paths relative to it; colour TIFF.
    jaffe = base / "jaffe"
    (jaffe / "images").mkdir(parents=True)
    rows, k = [], 1
    for s, code in zip(SUBJECTS[:3], ("KA", "KL", "KM")):
        for expr, kdef_expr in (("HA", "HA"), ("SA", "SA"), ("NE", "NE")):
            for n, angle_free_source in enumerate((kdef_expr,), 1):
                name = f"images/{code}.{expr}{n}.{k}.tiff"
                _face(kdef_root, s, angle_free_source, gray=False).save(jaffe / name, format="TIFF")
                rows.append({"path": name, "subject": code, "expression": expr})
                k += 1
    pd.DataFrame(rows).to_csv(jaffe / "labels.csv", index=False)
    # 3. root/<label>/<picture>.png, colour; the same file names under both labels.
    folders = base / "by_label"
    for i, s in enumerate(SUBJECTS):
        for j, code in enumerate(("HA", "NE")):
            out = folders / s[1] / f"{i % 2}{j}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            _face(kdef_root, s, code, gray=False).save(out)
    return {"yale": yale, "jaffe": jaffe, "by_label": folders}


def _run(capsys, argv):
    rc = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


# ------------------------------------------------------------------------------------------------ reading
@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "PPM", "PNG", "JPEG", "BMP"])
@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_reader_takes_any_format_by_content(tmp_path, fmt, mode):
    pixels = face_like_image(3, gray=mode == "L")
    path = tmp_path / "picture"  # no extension: read by content
    Image.fromarray(pixels if mode == "L" else pixels[:, :, ::-1], mode).save(path, format=fmt)
    bgr, gray = read_image(path), read_image(path, gray=True)
    assert bgr.shape == pixels.shape[:2] + (3,) and bgr.dtype == np.uint8 and gray.shape == pixels.shape[:2]
    if fmt in ("TIFF", "PPM", "PNG", "BMP"):  # lossless: the very pixels come back (BGR order)
        assert np.array_equal(bgr if mode == "RGB" else bgr[:, :, 0], pixels)
    assert datasets.looks_like_image(path)
    assert decode_image(b"definitely not a picture") is None and read_image(tmp_path / "absent") is None


def test_ids_are_paths_and_duplicates_are_bytes(tmp_path):
    root = tmp_path / "faces"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        Image.fromarray(face_like_image(ord(label))).save(root / label / "subject01.happy", format="GIF")
    shutil.copy(root / "a" / "subject01.happy", root / "b" / "subject01.sad")  # same bytes, other name
    (root / "a" / "notes.txt").write_text("P7 not an image")
    df = datasets.load_folder(root, progress=False, label_name="subject")
    reason = dict(zip(df["image_id"], df["reason"]))
    assert set(reason) == {"a/subject01.happy", "b/subject01.happy", "b/subject01.sad"}
    assert reason["a/subject01.happy"] == reason["b/subject01.happy"] == ""
    assert reason["b/subject01.sad"] == "duplicate: same bytes as a/subject01.happy"
    assert set(df["subject"]) == {"a", "b"}


# --------------------------------------------------------------------------------------- the three layouts
def test_data_check_each_layout(own_datasets, capsys):
    rc, out, _ = _run(capsys, ["data", "check", "--dataset", "folder", "--csv",
                               str(own_datasets["yale"] / "labels.csv"), "--json"])
    s = json.loads(out)
    assert rc == 0 and (s["images"], s["usable"], s["subjects"]) == (12, 12, 4)
    assert s["by_expression"] == {"happy": 4, "normal": 4, "sad": 4} and s["by_gender"] == {} and s["by_angle"] == {}
    rc, out, _ = _run(capsys, ["data", "check", "--dataset", "folder", "--csv",
                               str(own_datasets["jaffe"] / "labels.csv"), "--json"])
    s = json.loads(out)
    assert rc == 0 and (s["images"], s["usable"], s["subjects"]) == (9, 9, 3)
    rc, out, _ = _run(capsys, ["data", "check", "--dataset", "folder", "--root", str(own_datasets["by_label"]),
                               "--json"])
    s = json.loads(out)
    assert rc == 0 and (s["images"], s["usable"]) == (8, 8) and s["by_label"] == {"label": {"F": 4, "M": 4}}
    manifest = datasets.load_folder(csv=own_datasets["jaffe"] / "labels.csv", progress=False)
    assert manifest["image_id"].is_unique and manifest["image_id"].iloc[0] == "images/KA.HA1.1.tiff"
    assert [t.task for t in labels.tasks_for(manifest)] == ["identity", "expression"]


@pytest.mark.parametrize("layout,expected_ok", [("yale", 12), ("jaffe", 9), ("by_label", 8)])
def test_reconstruct_with_qa_each_layout(own_datasets, assets_dir, tmp_path, capsys, layout, expected_ok):
    src = own_datasets[layout]
    where = ["--root", str(src)] if layout == "by_label" else ["--csv", str(src / "labels.csv")]
    out = tmp_path / f"{layout}.parquet"
    rc, stdout, _ = _run(capsys, ["reconstruct", "--dataset", "folder", *where, "--backend", "tddfa",
                                  "--device", "cpu", "--assets", str(assets_dir), "--out", str(out),
                                  "--qa", str(tmp_path / "qa.png")])
    assert rc == 0 and json.loads(stdout)["ok"] == expected_ok
    table = pd.read_parquet(out)
    assert "angle" not in table.columns or table["angle"].isna().all()
    assert (tmp_path / "qa.png").stat().st_size > 10_000
    runnable = {t.task for t in labels.tasks_for(table, runnable_only=True)}
    assert runnable == ({"label"} if layout == "by_label" else {"identity", "expression"})


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_inputs_one_line_errors(tmp_path, capsys):
    cases = []
    cases.append((["data", "check", "--dataset", "folder", "--csv", str(tmp_path / "nope.csv")],
                  f"error: label CSV {tmp_path / 'nope.csv'} does not exist"))
    (tmp_path / "nopath.csv").write_text("file,subject\na.png,1\n")
    cases.append((["data", "check", "--dataset", "folder", "--csv", str(tmp_path / "nopath.csv")],
                  "has no 'path' column (columns: file, subject)"))
    Image.fromarray(face_like_image(1)).save(tmp_path / "a.png")
    (tmp_path / "ok.csv").write_text("path,subject\na.png,1\n")
    cases.append((["data", "check", "--dataset", "folder", "--csv", str(tmp_path / "ok.csv"), "--labels", "mood"],
                  "error: unknown label column 'mood'"))
    (tmp_path / "gone.csv").write_text("path,subject\nb.png,1\n")
    cases.append((["data", "check", "--dataset", "folder", "--csv", str(tmp_path / "gone.csv")],
                  "none of the 1 pictures listed"))
    cases.append((["data", "check", "--dataset", "folder"], "error: a folder dataset needs --root"))
    (tmp_path / "binary.csv").write_bytes(bytes(range(256)) * 4)
    cases.append((["data", "check", "--dataset", "folder", "--csv", str(tmp_path / "binary.csv")],
                  "error: cannot read"))
    cases.append((["study", "--params", str(tmp_path / "nope.yaml")], "error: parameter file"))
    cases.append((["data", "check", "--dataset", "folder", "--root", str(tmp_path / "void")],
                  "does not exist"))
    cases.append((["classify", "--coeffs", str(tmp_path / "none.parquet"), "--task", "identity"],
                  "error: coefficient table"))
    for argv, expected in cases:
        rc, out, err = _run(capsys, argv)
        assert rc == EXIT_EXPECTED and expected in err, (argv, err)
        assert len(err.strip().splitlines()) <= 2, err


def test_wrong_asset_checksum_is_one_error(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "assets"
    target = bad / assets.get("faceboxes").relpath
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not the FaceBoxes weights")
    Image.fromarray(face_like_image(1)).save(tmp_path / "a.png")
    (tmp_path / "l.csv").write_text("path,subject\na.png,1\n")
    argv = ["reconstruct", "--dataset", "folder", "--csv", str(tmp_path / "l.csv"), "--assets", str(bad),
            "--device", "cpu", "--out", str(tmp_path / "c.parquet")]
    rc, _, err = _run(capsys, argv)
    assert rc == EXIT_EXPECTED and err.startswith("error: asset 'faceboxes'") and "expected" in err
    assert len(err.strip().splitlines()) == 1
    with pytest.raises(assets.AssetChecksumError):  # --debug: the traceback, for whoever debugs it
        main(["--debug", *argv])


def test_too_few_pictures_for_a_task(tmp_path, capsys):
    table = pd.DataFrame({"image_id": list("abcd"), "path": list("abcd"), "dataset": "folder", "usable": True,
                          "status": "ok", "subject": ["s1", "s1", "s2", "s3"], "mood": ["x", "x", "x", "y"],
                          "alpha": [[0.0, 1.0]] * 4, "beta": [[1.0]] * 4})
    table.to_parquet(tmp_path / "c.parquet")
    rc, _, err = _run(capsys, ["classify", "--coeffs", str(tmp_path / "c.parquet"), "--task", "identity"])
    assert rc == EXIT_EXPECTED and "task 'identity' cannot run: column 'subject' has 1 class(es)" in err
    rc, _, err = _run(capsys, ["classify", "--coeffs", str(tmp_path / "c.parquet"), "--task", "gender"])
    assert rc == EXIT_EXPECTED and "needs a label column 'gender'" in err and "subject (identity), mood" in err


# ------------------------------------------------------------------------------------------ labels and study
def test_tasks_follow_the_label_columns():
    table = pd.DataFrame({"image_id": list("abcdef"), "usable": True, "status": "ok", "angle": None,
                          "subject": ["s1", "s1", "s2", "s2", "s3", "s3"], "mood": list("xxyyxy"),
                          "alpha": [[0.0]] * 6, "fit_losses": [None] * 6, "session": "A"})
    tasks = {t.task: t for t in labels.tasks_for(table)}
    assert set(tasks) == {"identity", "mood"}  # no gender / expression column, angle and session are conditions
    assert (tasks["identity"].column, tasks["identity"].input, tasks["identity"].n_classes) == ("subject", "alpha", 3)
    assert (tasks["mood"].column, tasks["mood"].input, tasks["mood"].n_pictures) == ("mood", "alpha+beta", 6)
    table.loc[0, "status"] = "no_face"  # s1 keeps one picture: still 2 classes with 2+ pictures
    assert labels.require_task(table, "identity").n_classes == 2
    assert "identity (column 'subject', input alpha): 2 classes" in labels.describe(table)


def test_study_inputs_of_a_folder_dataset(tmp_path):
    from facelib import study
    from facelib.errors import notebook_failure

    assert datasets.study_datasets(None) == ("kdef", "fei") and datasets.study_datasets("folder") == ("folder",)
    with pytest.raises(datasets.DatasetError, match="unknown dataset parameter 'yale'"):
        datasets.study_datasets("yale")
    problems = study.missing_inputs({"dataset": "folder"})
    assert any(p.startswith("your dataset: not configured") for p in problems)
    assert not any("KDEF" in p for p in problems)  # KDEF and FEI are not needed for your own dataset
    problems = study.missing_inputs({"dataset": "folder", "data_csv": str(tmp_path / "none.csv")})
    assert f"your dataset: label CSV {tmp_path / 'none.csv'} does not exist" in problems[0]
    msg = notebook_failure("04_classification.ipynb", 7, "ProtocolUnavailable", "too few pictures\nmore", "out.ipynb")
    assert msg.splitlines() == ["error: notebook 04_classification.ipynb failed in cell 7: ProtocolUnavailable: "
                                "too few pictures", "hint: the executed notebook out.ipynb shows the cell and its "
                                "traceback"]
