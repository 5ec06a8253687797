"""Coefficients from outside: each reader on files in its method's real format (Deep3DFaceRecon's .mat keys and
shapes, EMOCA/DECA code folders, CSV, Parquet, npz), written here since no real output can be downloaded; every
bad input stops with one line; the export → read round trip gives the same coefficients bit for bit and the same
Table-1 result; several reconstructions are compared side by side."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.io import savemat

from facelib.classify import experiment as E
from facelib.face3d import external as X
from facelib.report import tables
from facelib.report.verdict import reconstructions_table
from tests.fixtures import made_up_result, person_hits, synthetic_coeff_table


@pytest.fixture(scope="module")
def synth():
    t = synthetic_coeff_table(4, seed=5)
    t["relpath"] = [f"{s[:1]}{s}/{i}.JPG" for s, i in zip(t["subject"], t["image_id"])]
    t["status"], t["usable"], t["backend"] = "ok", True, "synthetic"
    return t


def manifest(t):
    return t.drop(columns=["alpha", "beta", "status", "backend"])


def test_csv_and_parquet_round_trip_bit_for_bit_and_the_same_table1_result(synth, tmp_path):
    for name in ("coeffs.csv", "coeffs.parquet"):
        out = X.export_table(synth, tmp_path / name)
        assert out.with_suffix(".yaml").is_file()
        back, report = X.external_table(manifest(synth), out)
        assert report["coverage"] == [len(synth), len(synth)] and report["method"] == "synthetic"
        assert report["group_sizes"] == {"alpha": 40, "beta": 10} and list(report["checksums"]) == [name]
        for col in ("alpha", "beta"):
            assert all(np.array_equal(np.asarray(a, np.float64), b) for a, b in zip(synth[col], back[col]))
    a = E.run_task(synth, "expression", "subject_independent", input="beta", model="logreg", n_folds=2).to_dict()
    b = E.run_task(back, "expression", "subject_independent", input="beta", model="logreg", n_folds=2).to_dict()
    assert a["fold_accuracies"] == b["fold_accuracies"] and a["predictions"] == b["predictions"]
    assert b["backend"] == "synthetic"


def test_npz_with_long_names(synth, tmp_path):
    m = manifest(synth)
    np.savez(tmp_path / "c.npz", paths=m["relpath"].to_numpy().astype(str),
             alpha=np.stack(synth["alpha"]), expression=np.stack(synth["beta"]))
    (tmp_path / "coefficients.yaml").write_text("method: mynet\nversion: '2.1'\ngroups: {id: 40, exp: 10}\n")
    t, report = X.external_table(m, tmp_path / "c.npz")
    assert (report["method"], report["version"], report["format"]) == ("mynet", "2.1", "npz")
    assert (t["backend"] == "mynet").all() and len(t["alpha"].iloc[0]) == 40


def test_deep3dfacerecon_mat_files(synth, tmp_path):
    """One .mat per picture as Deep3DFaceRecon's save_coeff writes it (1×80 id, 1×64 exp, 1×80 tex, 1×3 angle,
    1×27 gamma, 1×3 trans, 1×68×2 lm68), in the pictures' relative folders, named like the picture."""
    m = manifest(synth).head(12)
    rng = np.random.default_rng(0)
    for rel in m["relpath"]:
        f = tmp_path / "out" / rel.replace(".JPG", ".mat")
        f.parent.mkdir(parents=True, exist_ok=True)
        savemat(str(f), {"id": rng.normal(size=(1, 80)), "exp": rng.normal(size=(1, 64)),
                         "tex": rng.normal(size=(1, 80)), "angle": rng.normal(size=(1, 3)),
                         "gamma": rng.normal(size=(1, 27)), "trans": rng.normal(size=(1, 3)),
                         "lm68": rng.normal(size=(1, 68, 2))})
    t, report = X.external_table(m, tmp_path / "out", name="deep3d-official")
    assert report["format"] == "deep3d" and report["coverage"] == [12, 12] and len(report["checksums"]) == 12
    assert report["group_sizes"] == {"alpha": 80, "beta": 64, "texture": 80, "angles": 3, "gamma": 27,
                                     "translation": 3}
    first = tmp_path / "out" / m["relpath"].iloc[0].replace(".JPG", ".mat")
    from scipy.io import loadmat
    assert np.array_equal(t["alpha"].iloc[0], loadmat(str(first))["id"].ravel())


def test_emoca_code_folders(synth, tmp_path):
    """EMOCA's save_codes: one folder per picture (named like it, no extension) with shape/exp/tex/pose/detail.npy,
    with or without the leading batch axis; the jaw is pose[3:]."""
    m = manifest(synth).head(8)
    for j, rel in enumerate(m["relpath"]):
        d = tmp_path / "codes" / rel.split("/")[-1].replace(".JPG", "")
        d.mkdir(parents=True)
        lead = (1,) if j % 2 else ()
        np.save(d / "shape.npy", np.full(lead + (100,), j, np.float32))
        np.save(d / "exp.npy", np.full(lead + (50,), -j, np.float32))
        np.save(d / "tex.npy", np.zeros(lead + (50,), np.float32))
        np.save(d / "pose.npy", np.arange(6, dtype=np.float32).reshape(lead + (6,)))
        np.save(d / "detail.npy", np.zeros(lead + (128,), np.float32))
    t, report = X.external_table(m, tmp_path / "codes", name="emoca")
    assert report["format"] == "emoca" and report["group_sizes"] == {"alpha": 100, "beta": 50, "texture": 50,
                                                                       "pose": 6, "jaw": 3}
    assert t["alpha"].iloc[3][0] == 3 and list(t["jaw"].iloc[0]) == [3, 4, 5]


def test_partial_coverage_is_reported_and_nothing_is_dropped(synth, tmp_path):
    part = synth.iloc[5:].copy()
    X.export_table(part, tmp_path / "c.csv")
    t, report = X.external_table(manifest(synth), tmp_path / "c.csv")
    assert len(t) == len(synth) and (t["status"] == "no_coefficients").sum() == 5
    assert report["coverage"] == [len(synth) - 5, len(synth)] and report["missing"] == list(synth["relpath"][:5])
    line = X.coverage_line("kdef", report)
    assert line.startswith(f"kdef: {len(synth) - 5} of {len(synth)} usable pictures") and synth["relpath"][0] in line


@pytest.mark.parametrize("case, message", [
    ("unmatched", "1 coefficient row(s) match no picture of the dataset, e.g. 'nowhere/x.JPG'"),
    ("duplicate", "has coefficients twice"),
    ("width", "group 'id' is 40 wide; coefficients.yaml declares 80"),
    ("nan", "group 'exp' has NaN or infinite values for 1 picture(s)"),
    ("unknown", "unknown coefficient group 'foo'"),
    ("nopath", "no 'path' column"),
    ("gap", "without gaps"),
])
def test_bad_input_is_one_clear_line(synth, tmp_path, case, message):
    X.export_table(synth, tmp_path / "c.csv")
    df = pd.read_csv(tmp_path / "c.csv")
    if case == "unmatched":
        df.loc[0, "path"] = "nowhere/x.JPG"
    elif case == "duplicate":
        df.loc[1, "path"] = df.loc[0, "path"].replace(".JPG", "")
    elif case == "width":
        (tmp_path / "c.yaml").unlink()
        (tmp_path / "coefficients.yaml").write_text("method: m\ngroups: {id: 80}\n")
    elif case == "nan":
        df.loc[2, "exp_3"] = np.nan
    elif case == "unknown":
        df["foo_0"] = 1.0
    elif case == "nopath":
        df = df.rename(columns={"path": "file"})
    elif case == "gap":
        df = df.drop(columns="exp_4")
    df.to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(X.ExternalCoefficientsError) as err:
        X.external_table(manifest(synth), tmp_path / "c.csv")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_uneven_mat_widths_and_bad_specs(synth, tmp_path):
    m = manifest(synth).head(2)
    for j, rel in enumerate(m["relpath"]):
        f = tmp_path / rel.split("/")[-1].replace(".JPG", ".mat")
        savemat(str(f), {"id": np.zeros((1, 80 if j else 79)), "exp": np.zeros((1, 64))})
    with pytest.raises(X.ExternalCoefficientsError, match="uneven widths"):
        X.external_table(m, tmp_path)
    with pytest.raises(X.ExternalCoefficientsError, match="unknown key"):
        X.specs([{"name": "x", "kdef": "a.csv", "path": "b"}])
    with pytest.raises(X.ExternalCoefficientsError, match="no coefficient path"):
        X.specs([{"name": "x"}])
    with pytest.raises(X.ExternalCoefficientsError, match="unknown format"):
        X.specs([{"kdef": "a", "format": "obj"}])
    assert X.specs(None) == [] and X.specs({"kdef": "a.csv"}) == [{"kdef": "a.csv"}]


def test_several_reconstructions_side_by_side():
    """Each reconstruction's row is chosen on validation among its own rows and compared with the same picture
    row; reconstructions.csv carries its input width."""
    people = {f"p{i:02d}": 0.6 for i in range(12)}
    res = [made_up_result("expression", "subject_independent", "beta", "logreg", person_hits(people), 0.6,
                          input_width=10),
           made_up_result("expression", "subject_independent", "beta", "logreg", person_hits(
               {p: 0.8 for p in people}), 0.7, backend="deep3d-official", input_width=64),
           made_up_result("expression", "subject_independent", "hog", "logreg", person_hits(
               {p: 0.5 for p in people}), 0.5)]
    rec = reconstructions_table(res)
    assert rec["reconstruction"].tolist() == ["deep3d-official", "tddfa"]
    assert rec["coef_width"].tolist() == [64, 10] and set(rec["pic_input"]) == {"hog"}
    assert rec["difference"].round(3).tolist() == [0.3, 0.1] and rec["n_tests"].tolist() == [2, 2]
    assert not len(reconstructions_table(res[::2]))  # one reconstruction: nothing side by side


def test_export_command(synth, tmp_path, capsys):
    from facelib.cli import main
    synth.to_parquet(tmp_path / "kdef_synthetic.parquet")
    assert main(["export-coefficients", "--coeffs", str(tmp_path / "kdef_synthetic.parquet"),
                 "--out", str(tmp_path / "shared")]) == 0
    out = tmp_path / "shared" / "kdef_synthetic.csv"
    assert out.is_file() and "method: synthetic" in out.with_suffix(".yaml").read_text()
    assert f"({len(synth)} pictures)" in capsys.readouterr().out
    assert main(["export-coefficients", "--coeffs", str(tmp_path / "missing.parquet"), "--out", "x"]) == 2
