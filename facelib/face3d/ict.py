"""ICT Face Model Light (ICT-FaceKit, USC ICT, MIT licence) as a third source of :class:`MorphableModel`.

Source files
    ``FaceXModel/`` of https://github.com/ICT-VGL/ICT-FaceKit at commit ``da5f95a6…`` (:data:`ICT_COMMIT`): a
    26,719-vertex head (``generic_neutral_mesh.obj``, quads and a few triangles), 100 identity PCA modes
    (``identity000.obj``…``identity099.obj``, full meshes: mode = mesh − neutral), 53 ARKit-named expression blend
    shapes (the ``expressions`` list of ``vertex_indices.json``, same order; ``PupilDilate_*`` and
    ``cheekRaiser_*`` are not in that list and are not used) and ``vertex_indices.json`` (68 Multi-PIE landmark
    vertices). A user either clones the repository (pass the folder holding ``FaceXModel/``) or has the archive
    ``ict_facekit/ict_facekit_light.tar.xz`` (asset ``ict_facekit``), which is unpacked once into
    ``<cache>/ict_facekit/<archive sha256[:16]>/``: into a temporary folder first, every member checked against
    :data:`facelib.face3d.ict_members.MEMBERS` (all of them, once), a ``.complete`` marker written, then renamed into
    place in one step — an interrupted unpack leaves only a ``*.partial`` folder, never taken as complete and removed
    by the next unpack. A cloned folder is checked member by member for the files read (each sha256 against the
    same list); a wrong checksum raises :class:`facelib.assets.AssetChecksumError` and a missing file
    :class:`facelib.assets.AssetMissingError`, both naming the file.

What the files carry (measured, not assumed)
    - The identity modes are mutually orthogonal (largest |cosine| between two modes 7.5e-5) and their RMS
      displacement over the face area falls from 0.39 cm (mode 0) to 0.008 cm (mode 99): they are principal
      directions already scaled by their standard deviation (the authors' ``randomize_identity`` draws the
      weights from N(0, 1)). So they are used as they are: α is unit-variance (σ_α = 1).
    - Expression shapes are ARKit blend shapes: weights live in [0, 1] (``extras["beta_bounds"]``), 0 = neutral.
    - Units: centimetres; frame: x towards the subject's left, y up, z out of the face — BFM's frame.

Model (``source == "ict"``, ``layout == "ict"``: pose 12, α 100, β 53)
    mean = neutral mesh, id basis = identity_i − neutral, exp basis = shape_j − neutral, all 26,719 vertices; the
    triangles are the head's polygons split into fans (counter-clockwise seen from outside, as the OBJ);
    ``extras["noneck_ids"]`` = the part the fitter renders: the README's *narrow face area* (vertices 0–6705,
    ``area="narrow"``, default) — the face without scalp, ears and neck, like the BFM front face, so the
    photometric term compares skin with skin — or the *full face area* (0–9408, ``area="full"``: with scalp,
    ears and neck, which would be painted over hair and collars). All 68 landmarks lie in the narrow area.
    Landmarks: the 68 of ``vertex_indices.json`` with the README's jawline substitutes for points 0–7 and 9–16
    (``jaw="substitutes"``, default) — after a similarity alignment on the 51 inner points, the substitutes lie
    closer to 3DDFA's BFM jaw keypoints (mean 0.11 vs 0.17 of the face width), which is the convention of the
    study's target landmarks; ``jaw="multipie"`` keeps the original list.
    The converted arrays are cached as ``<cache>/morphable/ict_<key>.npz``, key = sha256 of the members' checksums,
    the jaw choice and :data:`CACHE_VERSION`.

Pose from 3DDFA (:func:`bfm_similarity`, :func:`pose_from_3ddfa`)
    A similarity v_bfm = s·R·v_ict + t maps the ICT neutral's 51 inner landmarks onto the BFM mean's (least squares,
    Umeyama); a 3DDFA pose [M | p] of the BFM face becomes the ICT pose [s·M·R | M·t + p], so the ICT mean face
    starts where 3DDFA put the BFM face, and the fitter's camera (3DDFA's scaled orthographic crop) applies as is.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np

from .. import assets, config
from ..io import cached_arrays
from .ict_members import MEMBERS
from .morphable import MorphableModel

ICT_URL = "https://github.com/ICT-VGL/ICT-FaceKit"
ICT_COMMIT = "da5f95a607f5e6b37755b38d3385d7f2853732e5"
CACHE_VERSION = "ict_v1"
N_IDENTITY = 100
FACE_AREAS = {"narrow": (0, 6705), "full": (0, 9408)}   # README "Face Area Details", inclusive vertex ranges
NEUTRAL = "FaceXModel/generic_neutral_mesh.obj"
INDICES = "FaceXModel/vertex_indices.json"
# README "Facial Landmarks": jawline substitutes for Multi-PIE points 0-7 (subject's right) and 9-16 (left)
JAW_RIGHT = (1278, 1272, 12, 1834, 243, 781, 2199, 1447)
JAW_LEFT = (3661, 4390, 3022, 2484, 4036, 2253, 3490, 3496)
# README "Expression Shapes": closest FACS action unit of each shape
FACS = {
    "browInnerUp": "AU1", "browOuterUp": "AU2", "browDown": "AU4", "cheekSquint": "AU6", "eyeWide": "AU5",
    "eyeSquint": "AU7", "noseSneer": "AU9", "mouthShrugUpper": "AU10", "mouthUpperUp": "AU11",
    "mouthSmile": "AU12", "mouthDimple": "AU14", "mouthFrown": "AU15", "mouthLowerDown": "AU16",
    "mouthShrugLower": "AU17", "mouthPucker": "AU18", "mouthStretch": "AU20", "mouthFunnel": "AU22",
    "mouthPress": "AU24", "jawOpen": "AU27", "mouthRollLower": "AU28", "mouthRollUpper": "AU28",
    "jawForward": "AU29", "jawLeft": "AU30", "jawRight": "AU30", "cheekPuff": "AU33", "eyeBlink": "AU45",
    "eyeLookOut": "AU61/62", "eyeLookIn": "AU61/62", "eyeLookUp": "AU63", "eyeLookDown": "AU64",
}


def facs_name(shape: str) -> str:
    """``mouthSmile_L`` → ``mouthSmile_L (AU12)``; shapes without a FACS unit keep their name."""
    au = FACS.get(shape.rsplit("_", 1)[0] if shape.endswith(("_L", "_R")) else shape)
    return f"{shape} ({au})" if au else shape


# ----------------------------------------------------------------------------------------------- OBJ reader
def read_obj(path, faces: bool = False):
    """Vertices (N, 3) float64 of a Wavefront OBJ (``v x y z`` lines; extra w/colour columns are ignored) and, with
    ``faces``, the polygons as an (F, K) int64 array of 0-based vertex ids, -1 padding rows shorter than the
    longest polygon (``f a/b/c …``: the first of each slash group; negative = relative to the end)."""
    data = Path(path).read_bytes()
    lines = data.splitlines()
    vlines = [ln[2:] for ln in lines if ln[:2] == b"v "]
    rows = [ln.split() for ln in vlines[:1]]
    ncol = len(rows[0]) if rows else 3
    flat = np.array(b" ".join(vlines).split(), dtype=np.float64)
    if flat.size == ncol * len(vlines):
        verts = flat.reshape(len(vlines), ncol)[:, :3]
    else:  # lines of different lengths (optional w / colour): the first three numbers of each, line by line
        verts = np.array([ln.split()[:3] for ln in vlines], dtype=np.float64).reshape(-1, 3)
    if not faces:
        return verts
    polys = []
    for ln in lines:
        if ln[:2] == b"f ":
            ids = [int(tok.split(b"/", 1)[0]) for tok in ln[2:].split()]
            polys.append([i - 1 if i > 0 else len(verts) + i for i in ids])
    k = max((len(p) for p in polys), default=3)
    arr = -np.ones((len(polys), k), np.int64)
    for i, p in enumerate(polys):
        arr[i, :len(p)] = p
    if arr.size and (arr.max() >= len(verts) or arr[arr >= 0].min() < 0):
        raise ValueError(f"{path}: face index out of range")
    return verts, arr


def triangulate(polys: np.ndarray) -> np.ndarray:
    """Polygons (F, K) (-1 padded) → triangles (T, 3) by fans (v0, vi, vi+1), keeping the winding."""
    tris = []
    for i in range(1, polys.shape[1] - 1):
        t = polys[:, [0, i, i + 1]]
        tris.append(t[(t >= 0).all(1)])
    return np.concatenate(tris) if tris else np.zeros((0, 3), np.int64)


# ----------------------------------------------------------------------------------------------- locating files
def _member_error(rel: str, where: Path, why: str) -> assets.AssetMissingError:
    a = assets.get("ict_facekit")
    return assets.AssetMissingError(
        f"ICT-FaceKit file {rel} is {why} in {where}.\n"
        f"  needed for: {a.required_for}\n  get it from: {a.source}\n  licence: {a.licence}\n"
        f"  either clone the repository (pass its folder, which holds FaceXModel/) or put the archive at "
        f"<FACELIB_ASSETS>/{a.relpath}")


def verify_member(folder: Path, rel: str) -> str:
    """sha256 of ``folder/rel`` checked against :data:`MEMBERS`; raises the asset errors naming the file."""
    path = Path(folder) / rel
    if not path.is_file():
        raise _member_error(rel, Path(folder), "missing")
    digest = assets.checksum(path)
    if digest != MEMBERS[rel]:
        raise assets.AssetChecksumError(
            f"ICT-FaceKit file {rel} at {path} has sha256 {digest}, expected {MEMBERS[rel]} (commit {ICT_COMMIT}). "
            f"The file is left in place untouched; replace it with a fresh copy from {ICT_URL}.")
    return digest


def unpack(archive, cache_root=None) -> Path:
    """Unpack the ICT-FaceKit archive once into ``<cache>/ict_facekit/<sha16>/`` (see the module docstring)."""
    archive = Path(archive)
    digest = assets.checksum(archive)
    root = Path(cache_root or config.cache_dir() / "ict_facekit")
    final = root / digest[:16]
    if (final / ".complete").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f".{digest[:16]}.*.partial"):  # an interrupted unpack (older than 1 h: not running)
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{digest[:16]}.", suffix=".partial"))
    try:
        seen = set()
        with tarfile.open(archive, "r:xz") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                rel = m.name.split("/", 1)[1] if "/" in m.name else m.name
                if rel not in MEMBERS:
                    continue  # files outside the checked list are not used
                src = tf.extractfile(m)
                dest = tmp / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                h = hashlib.sha256()
                with open(dest, "wb") as out:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        h.update(block)
                        out.write(block)
                if h.hexdigest() != MEMBERS[rel]:
                    raise assets.AssetChecksumError(
                        f"ICT-FaceKit member {rel} of {archive} has sha256 {h.hexdigest()}, expected {MEMBERS[rel]}")
                seen.add(rel)
        missing = sorted(set(MEMBERS) - seen)
        if missing:
            raise _member_error(missing[0], archive, f"missing ({len(missing)} members missing)")
        (tmp / ".complete").write_text(json.dumps({"archive_sha256": digest, "members": len(seen)}))
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished first
            if not (final / ".complete").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def locate(source=None, assets_dir=None, cache_root=None) -> tuple[Path, bool]:
    """(repository root holding ``FaceXModel/``, members_verified).

    ``source``: a cloned repository (or its ``FaceXModel/`` folder) or the archive; None → a clone at
    ``<assets>/ict_facekit/FaceXModel/`` or the archive asset ``ict_facekit`` (unpacked into the cache).
    ``members_verified`` is True for an unpacked archive (every member checked once at unpack time)."""
    if source is not None:
        p = Path(source).expanduser()
        if p.is_file():
            assets.verify(assets.get("ict_facekit"), p)
            return unpack(p, cache_root), True
        if p.name == "FaceXModel":
            p = p.parent
        if not (p / "FaceXModel").is_dir():
            raise _member_error("FaceXModel/", p, "missing (not a clone of ICT-FaceKit)")
        return p, False
    for d in assets.search_dirs(assets_dir):
        if (d / "ict_facekit" / "FaceXModel").is_dir():
            return d / "ict_facekit", False
    return unpack(assets.resolve("ict_facekit", assets_dir), cache_root), True


# ----------------------------------------------------------------------------------------------- conversion
def member_names(folder: Path) -> tuple[list[str], list[str]]:
    """(identity OBJ members, expression OBJ members) in basis order; the expression order is the ``expressions``
    list of ``vertex_indices.json``."""
    expr = json.loads((Path(folder) / INDICES).read_text())["expressions"]
    return ([f"FaceXModel/identity{i:03d}.obj" for i in range(N_IDENTITY)],
            [f"FaceXModel/{name}.obj" for name in expr])


def landmark_ids(indices: dict, jaw: str = "substitutes") -> np.ndarray:
    lm = np.asarray(indices["idx_to_landmark_verts"], np.int64)
    if lm.size != 68:
        raise ValueError(f"vertex_indices.json lists {lm.size} landmark vertices, expected 68")
    if jaw == "substitutes":
        lm = lm.copy()
        lm[0:8], lm[9:17] = JAW_RIGHT, JAW_LEFT
    elif jaw != "multipie":
        raise ValueError("jaw must be 'substitutes' or 'multipie'")
    return lm


def convert(folder: Path) -> dict:
    """The OBJ files → arrays: mean (N, 3), id_basis (3N, 100), exp_basis (3N, 53) (xyz interleaved), polygons."""
    folder = Path(folder)
    neutral, polys = read_obj(folder / NEUTRAL, faces=True)
    id_names, exp_names = member_names(folder)

    def basis(names):
        out = np.empty((3 * len(neutral), len(names)), np.float32)
        for j, rel in enumerate(names):
            v = read_obj(folder / rel)
            if v.shape != neutral.shape:
                raise ValueError(f"{rel}: {len(v)} vertices, the neutral mesh has {len(neutral)}")
            out[:, j] = (v - neutral).reshape(-1)
        return out

    return {"mean": neutral.astype(np.float32), "id_basis": basis(id_names), "exp_basis": basis(exp_names),
            "polygons": polys, "expression_names": np.array([Path(n).stem for n in exp_names])}


def load_model(source=None, assets_dir=None, cache=None, jaw: str = "substitutes", area: str = "narrow",
               device="cpu"):
    """The ICT Face Model Light as a :class:`MorphableModel` (see the module docstring).

    ``cache``: None → ``$FACELIB_CACHE/morphable/``; a folder; an ``.npz`` path; or False (no cache).
    ``model.cache_hit`` says whether the converted arrays came from the cache."""
    folder, unpacked = locate(source, assets_dir)
    if not unpacked:
        verify_member(folder, INDICES)
    indices = json.loads((folder / INDICES).read_text())
    id_names, exp_names = member_names(folder)
    used = [NEUTRAL, INDICES, *id_names, *exp_names]
    sums = {rel: (MEMBERS[rel] if unpacked else verify_member(folder, rel)) for rel in used}
    if unpacked:
        for rel in used:
            if not (folder / rel).is_file():
                raise _member_error(rel, folder, "missing")
    key = hashlib.sha256(json.dumps({"v": CACHE_VERSION, "jaw": jaw, **sums}, sort_keys=True).encode()).hexdigest()
    data, cache_path, hit = cached_arrays(cache, config.cache_dir() / "morphable", "ict", key, lambda: convert(folder))
    lm = landmark_ids(indices, jaw)
    if area not in FACE_AREAS:
        raise ValueError(f"area must be one of {tuple(FACE_AREAS)}")
    n_exp = data["exp_basis"].shape[1]
    model = MorphableModel(
        source="ict", layout="ict", mean_shape=data["mean"], id_basis=data["id_basis"], exp_basis=data["exp_basis"],
        triangles=triangulate(data["polygons"]), keypoint_ids=lm, units="cm (ICT-FaceKit)", device=device,
        provenance={"ict_facekit": f"{ICT_URL} @ {ICT_COMMIT}", "members_sha256": hashlib.sha256(
            json.dumps(sums, sort_keys=True).encode()).hexdigest(), "jaw": jaw, "area": area},
        extras={"noneck_ids": np.arange(FACE_AREAS[area][0], FACE_AREAS[area][1] + 1, dtype=np.int64),
                "sigma_alpha": np.ones(data["id_basis"].shape[1], np.float32),
                "sigma_beta": np.ones(n_exp, np.float32), "beta_bounds": np.array([0.0, 1.0], np.float32)})
    model.expression_names = [str(s) for s in data["expression_names"]]
    model.cache_path, model.cache_hit = cache_path, hit
    model.key = key
    return model


# ----------------------------------------------------------------------------------------------- BFM frame
def umeyama(src, dst) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity (s, R, t) with dst ≈ s·R·src + t (Umeyama 1991), points (N, 3)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s0, d0 = src - ms, dst - md
    U, S, Vt = np.linalg.svd(d0.T @ s0)
    D = np.eye(3)
    D[2, 2] = np.sign(np.linalg.det(U @ Vt))
    R = U @ D @ Vt
    s = float((S * np.diag(D)).sum() / (s0 ** 2).sum())
    return s, R, md - s * R @ ms


def bfm_similarity(ict_model, bfm_model) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, R, t) mapping the ICT neutral onto the BFM mean by their 51 inner landmarks (17–67)."""
    a = ict_model.mean_shape[ict_model.keypoint_ids].cpu().numpy()[17:]
    b = bfm_model.mean_shape[bfm_model.keypoint_ids].cpu().numpy()[17:]
    return umeyama(a, b)


def pose_from_3ddfa(pose12, similarity) -> np.ndarray:
    """3DDFA poses (B, 12) of the BFM face → poses (B, 12) of the ICT face: [s·M·R | M·t + p]."""
    s, R, t = similarity
    P = np.asarray(pose12, np.float64).reshape(-1, 3, 4)
    M, p = P[:, :, :3], P[:, :, 3]
    out = np.concatenate([s * M @ R, (M @ t + p)[:, :, None]], axis=2)
    return out.reshape(-1, 12).astype(np.float32)


