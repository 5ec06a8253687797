"""Batch extraction: statuses for bad input, cache keyed by content, resume after an interruption, the CLI."""
import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest

from facelib.data import datasets
from facelib.face3d import reconstruct

from .conftest import ROOT


@pytest.fixture(scope="module")
def backend(assets_dir):
    return reconstruct.make_backend("tddfa", "cpu", assets_dir)


class CountingBackend:
    """Wraps a backend and counts how many images it was asked to regress (to prove the cache is used)."""

    def __init__(self, inner):
        self.inner, self.name, self.asset_names, self.settings = inner, inner.name, inner.asset_names, inner.settings
        self.regressed = 0

    def detect(self, images):
        return self.inner.detect(images)

    def regress(self, images, boxes):
        self.regressed += len(images)
        return self.inner.regress(images, boxes)


@pytest.fixture()
def small_set(tmp_path, kdef_root):
    root = tmp_path / "KDEF"
    for name in ("AF01ANS", "AF01HAHL", "AM02NEFR", "AF03SAS"):
        src = next(kdef_root.rglob(f"{name}.JPG"))
        (root / name[:4]).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / name[:4] / src.name)
    cv2.imwrite(str(root / "AF01" / "AF01SUS.JPG"), np.zeros((762, 562, 3), np.uint8))       # black
    (root / "AF01" / "AF01DIS.JPG").write_bytes(b"\xff\xd8garbage")                          # corrupt
    gray = cv2.cvtColor(cv2.imread(str(root / "AF01" / "AF01ANS.JPG")), cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(root / "AF01" / "AF01NES.JPG"), gray)                                      # grayscale
    return root


def test_statuses_cache_and_resume(small_set, backend, tmp_path):
    manifest = datasets.load_kdef(small_set, progress=False)
    counting = CountingBackend(backend)
    cache = tmp_path / "cache"
    partial = reconstruct.reconstruct_manifest(manifest, counting, cache_dir=cache, batch_size=2, progress=False,
                                               limit=2)  # an "interrupted" run: only 2 new images done
    assert counting.regressed == 2 and (partial["status"] == "not_processed").sum() > 0
    table = reconstruct.reconstruct_manifest(manifest, counting, cache_dir=cache, batch_size=2, progress=False)
    status = dict(zip(table["image_id"], table["status"]))
    assert status["AF01SUS"] == "no_face"
    assert status["AF01DIS"].startswith("corrupt_image")
    assert all(status[i] == "ok" for i in ("AF01ANS", "AF01HAHL", "AM02NEFR", "AF03SAS", "AF01NES"))
    assert counting.regressed == 5  # the 2 cached ones were not recomputed
    again = reconstruct.reconstruct_manifest(manifest, counting, cache_dir=cache, progress=False)
    assert counting.regressed == 5  # a rerun with nothing new regresses nothing
    ok = again[again["status"] == "ok"]
    assert reconstruct.coeff_matrix(ok, "alpha").shape == (5, 40)
    assert reconstruct.coeff_matrix(ok, "beta").shape == (5, 10)
    assert reconstruct.coeff_matrix(ok, "landmarks").shape == (5, 136)
    assert set(json.loads(again["assets"].iloc[0])) == set(backend.asset_names)
    # each coded picture keeps the time it cost when it was computed (Table 2's coefficient cost), also from cache
    assert (ok["recon_seconds"].astype(float) > 0).all()
    assert again.set_index("image_id").loc["AF01ANS", "recon_seconds"] == \
        table.set_index("image_id").loc["AF01ANS", "recon_seconds"]
    # the grayscale copy of AF01ANS is reconstructed closer to its colour original than to anyone else
    by_id = ok.set_index("image_id")
    gray_alpha = reconstruct.coeff_matrix(by_id.loc[["AF01NES"]], "alpha")[0]
    dist = {i: np.linalg.norm(reconstruct.coeff_matrix(by_id.loc[[i]], "alpha")[0] - gray_alpha)
            for i in ("AF01ANS", "AM02NEFR", "AF03SAS")}
    assert min(dist, key=dist.get) == "AF01ANS", dist


def test_cache_key_changes_with_settings(backend, assets_dir):
    key1, sums = reconstruct.cache_key(backend, assets_dir)
    other = CountingBackend(backend)
    other.settings = {**backend.settings, "landmarks": "dlib"}
    key2, _ = reconstruct.cache_key(other, assets_dir)
    assert key1 != key2 and sums["mb05"] == reconstruct.assets.get("mb05").sha256


def test_unknown_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="backend must be one of"):
        reconstruct.make_backend("nope")


def test_deep3d_backend_without_checkpoint_says_where_to_get_it(tmp_path, monkeypatch, assets_dir):
    monkeypatch.setenv("FACELIB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="epoch_20.pth"):
        reconstruct.make_backend("deep3d", "cpu", assets_dir)


def test_cli_reconstruct_folder_and_qa(small_set, tmp_path, assets_dir):
    out = tmp_path / "coeffs.parquet"
    qa = tmp_path / "qa.png"
    res = subprocess.run([sys.executable, "-m", "facelib", "reconstruct", "--dataset", "kdef", "--root",
                          str(small_set), "--backend", "tddfa", "--out", str(out), "--qa", str(qa),
                          "--device", "cpu", "--assets", str(assets_dir)], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads(res.stdout[res.stdout.index("{"):])
    assert summary["ok"] == 5 and summary["by_status"]["no_face"] == 1
    table = pd.read_parquet(out)
    assert {"alpha", "beta", "pose", "landmarks", "box", "status", "backend", "subject"} <= set(table.columns)
    assert qa.stat().st_size > 10_000
