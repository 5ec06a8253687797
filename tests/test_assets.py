import hashlib
import shutil
import subprocess
import sys

import pytest

from facelib import assets

from .conftest import ROOT


def test_manifest_is_complete_and_unique():
    names = [a.name for a in assets.MANIFEST]
    assert len(names) == len(set(names))
    for a in assets.MANIFEST:
        assert a.source and a.licence and "/" in a.relpath
        if a.downloadable and a.sha256 is None:
            assert a.name.startswith("fan_"), f"{a.name}: downloadable assets need a checksum"


def test_real_assets_verify(assets_dir):
    rows = {r["name"]: r for r in assets.status(assets_dir)}
    for a in assets.MANIFEST:
        if a.sha256:
            assert rows[a.name]["state"] == "verified", a.name
            assert (assets_dir / a.relpath).stat().st_size == a.size
    path = assets.resolve("mb05", assets_dir)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == assets.get("mb05").sha256


def test_sha256_matches_shared_sums(assets_dir):
    sums = dict(line.split()[::-1] for line in (assets_dir / "SHA256SUMS").read_text().splitlines() if line)
    for a in assets.MANIFEST:
        if a.sha256:
            assert sums[a.relpath] == a.sha256


def test_wrong_checksum_is_refused_and_kept(tmp_path):
    a = assets.get("param_mean_std")
    bad = tmp_path / a.relpath
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not the real file")
    with pytest.raises(assets.AssetChecksumError, match="expected"):
        assets.resolve("param_mean_std", tmp_path)
    assert bad.read_bytes() == b"not the real file"  # never deleted silently
    assert {r["name"]: r["state"] for r in assets.status(tmp_path)}["param_mean_std"] == "CHECKSUM MISMATCH"


def test_missing_asset_offline_names_file_source_licence_and_place(tmp_path):
    with pytest.raises(assets.AssetMissingError) as err:
        assets.resolve("mb05", tmp_path, download=False)
    msg = str(err.value)
    assert "mb05_120x120.pth" in msg and "github.com/cleardusk/3DDFA_V2" in msg
    assert "MIT" in msg and str(tmp_path / "3ddfa_v2" / "mb05_120x120.pth") in msg


def test_gated_asset_message_says_how_to_obtain(tmp_path):
    with pytest.raises(assets.AssetMissingError, match="registration required"):
        assets.resolve("bfm09", tmp_path)


def test_cache_is_second_in_line(tmp_path, monkeypatch, assets_dir):
    cache = tmp_path / "cache"
    monkeypatch.setenv("FACELIB_CACHE", str(cache))
    monkeypatch.delenv("FACELIB_ASSETS", raising=False)
    a = assets.get("tri")
    (cache / "assets" / a.relpath).parent.mkdir(parents=True)
    shutil.copy(assets_dir / a.relpath, cache / "assets" / a.relpath)
    assert assets.resolve("tri") == cache / "assets" / a.relpath


def test_cli_lists_states(assets_dir):
    out = subprocess.run([sys.executable, "-m", "facelib", "assets", "--assets", str(assets_dir)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("verified") == sum(1 for a in assets.MANIFEST if a.sha256)
    assert "missing" in out.stdout and "bfm09/01_MorphableModel.mat" in out.stdout
