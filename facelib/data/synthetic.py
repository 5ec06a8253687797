"""The study's embedded synthetic default: a labelled KDEF-like and FEI-like set rendered from the morphable model.

When no real dataset is configured the whole study runs on this set (and tests use small ones). Every image is
rendered from known coefficients, so ``ground_truth.parquet`` holds the true α/β of every picture.

Layout written under ``out_dir``::

    KDEF/<S><G><id>/<S><G><id><EX><ANG>.JPG   e.g. KDEF/AF01/AF01ANS.JPG  (KDEF's official naming and layout)
    fei/frontal/<id>a.jpg, <id>b.jpg          FEI-like neutral / smiling, grayscale 162×193 tight crops
    fei/fei_gender.csv                        subject_id,gender
    ground_truth.parquet                      one row per image: labels + alpha (40), beta (10), angles, gamma, …
    SYNTHETIC.json                            the marker: generator version, every parameter, the seed, counts

``load_kdef(out/"KDEF")`` and ``load_fei(out/"fei"/"frontal")`` read them like the real datasets.

Model and units
    ``MorphableModel.from_3ddfa()`` (BFM in 3DDFA's 62-d space, 53215 vertices, α 40, β 10, raw BFM units).
    3DDFA's identity basis ``w_shp`` has **unit-norm, orthogonal columns**: the eigenvalue scale is carried by α,
    not by the basis. So α is drawn as α = σ_α ⊙ (z + g·δ·d), z ~ N(0, I), with σ_α = the per-component standard
    deviation of α in 3DDFA_V2's ``param_mean_std_62d_120x120.pkl`` (the spread of α over its 300W-LP training
    fits: 5.8e5 for the first component down to 1.3e4 for the 40th). Such faces lie in the range the regressor
    saw in training and look like ordinary faces. (The 300W-LP mean of α is not added: the BFM mean face is the
    centre.) The expression basis ``w_exp`` carries its scale (column norms ≈ 2e5), β is O(1).

Gender rule (documented, learnable)
    Identity i of n (0-based): ``F`` for i < n // 2, else ``M`` (KDEF ids F01…, M01… numbered within gender; FEI
    subject ids 1…n_fei in the same order). Gender shifts α along one fixed, seeded unit direction d in the
    *whitened* α space, restricted to the first ``GENDER_COMPONENTS`` (10) components (the large-scale shape
    modes a regressor recovers best): g = −1 for F, +1 for M, δ = ``gender_delta`` (default 1.5). Along d the two
    classes are N(∓δ, 1), so the Bayes accuracy on the true α is Φ(δ) ≈ 93 % — gender is learnable but not
    trivial. Albedo is drawn independently of gender (a classifier must use shape).

Expressions
    7 fixed prototypes β (AF AN DI HA NE SA SU), NE = 0, built (not seeded) by ridge regression of the 10-d
    expression basis on hand-written 3-D displacement targets of the 68 landmarks (``EXPRESSION_TARGETS``: e.g.
    HA = mouth corners up and out + lips parted; SU = brows up + jaw dropped; AN = inner brows down and in + lips
    pressed), scaled by ``expression_gain``. Every image adds jitter N(0, (``beta_jitter``·σ_β)²), σ_β the 3DDFA
    β spread. The FEI-like set uses NE (``a``, neutral) and HA (``b``, smiling).

Pose and camera
    KDEF angles as yaw about the vertical axis, with ``MorphableModel.rotation_from_angles`` (R = Rz·Ry·Rx):
    FL −90°, HL −45°, S 0°, HR +45°, FR +90°. With BFM's axes (x towards the subject's left, z towards the
    viewer) a negative yaw turns the subject's left cheek towards the camera and the nose towards image left,
    as in KDEF's FL pictures (checked against the real KDEF dev images). Pitch and roll jitter N(0, 3°) and
    N(0, 2°), yaw jitter N(0, 2°). The head turns about a point on the neck axis 0.75 face-widths behind the nose
    tip (as a person turning their head), placed at the image centre (x) and ``HEAD_CENTRE_Y`` (y).
    Scaled-orthographic camera; the face is 0.40 of the image width, scale jitter ±4 %. A coarse head proxy
    (hair/skull, neck and shoulder ellipsoids placed from each identity's landmarks; hair length random and
    independent of gender) is drawn behind the face: without it FaceBoxes found 31 % of the faces, with it 97 %.

Appearance
    Per-identity albedo: a base skin tone (light-to-medium range, KDEF's population is mostly light-skinned),
    a smooth random field (sum of random cosines of vertex position, ±6 %), cheek redness, fine per-vertex
    grain; painted regions from the mean-shape landmarks: lips (redder, darker), eyebrows (hair colour), eyes
    (sclera, dark iris and pupil, dark lid line), nostrils, and a hairline band across the top of the forehead.
    Lighting: Deep3D's 27-coefficient SH model (``render.sh_shading``) with a random key light (band 1 ≈ 0.25,
    mainly from the front-top) and mild band-2 terms, near-monochromatic; a random exposure. Background:
    KDEF's warm grey (RGB ≈ 148, 132, 104, measured on the dev images) with a vertical gradient, per-image tint
    and pixel noise; a 0.6-px Gaussian blur softens the silhouette; JPEG quality 92. The FEI-like set is
    grayscale, histogram-equalised, cropped so the eyes sit at 17 % and the mouth at ≈ 70 % of the height.

Determinism
    Every random draw comes from ``np.random.default_rng([seed, stream, …])`` keyed by what it is for (gender
    direction; identity; image), so the set is a function of (seed, parameters) and does not depend on the
    order in which images are rendered or how they are batched (a resumed run re-renders identical bytes). Gender
    depends on i and n, so sets with different ``n_identities`` are different sets.
    Rendering is deterministic on CPU; images are written atomically (temporary file + rename).

Resume
    ``SYNTHETIC.partial.json`` (the parameters) is written first and renamed to ``SYNTHETIC.json`` at the end.
    A second call with the same parameters skips images already on disk (and returns at once when the marker is
    complete); a folder holding a set made with other parameters is an error.

Length (~640 lines, ~75 of them this docstring): one generator whose parts — appearance model, proxy renderer,
KDEF/FEI framing, resumable writer — share its seeds and streams and are not used elsewhere.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..face3d.morphable import MorphableModel
from ..face3d.tddfa import coefficient_sigma
from ..fitting.render import render, sh_shading
from ..io import atomic_path, atomic_write_json, atomic_write_table
from .datasets import ANGLE_CODES, EXPRESSION_CODES

GENERATOR_VERSION = "synthetic_v1"
MARKER = "SYNTHETIC.json"
PARTIAL_MARKER = "SYNTHETIC.partial.json"
GROUND_TRUTH = "ground_truth.parquet"

YAW_DEG = {"FL": -90.0, "HL": -45.0, "S": 0.0, "HR": 45.0, "FR": 90.0}
GENDER_COMPONENTS = 10
KDEF_BACKGROUND_RGB = (148.0, 132.0, 104.0)
FEI_SIZE = (193, 162)  # (height, width) of FEI's spatially normalised crops
HEAD_CENTRE_Y = 0.47    # row of the head pivot (about nose level), fraction of the image height
FACE_WIDTH_FRACTION = 0.40
FACE_WIDTH_UNITS = 1.8e5  # BFM raw units, cheek to cheek of the mean face (about)
STREAMS = {"gender": 1, "kdef_identity": 2, "fei_identity": 3, "kdef_image": 4, "fei_image": 5}

# 68-landmark (iBUG, 0-based) displacement targets, in fractions of the face width (x to the subject's left, y
# up, z towards the viewer). Each entry: (landmark ids, (dx, dy, dz)); a landmark listed twice adds up.
_BROW_R, _BROW_L = list(range(17, 22)), list(range(22, 27))
_BROWS = _BROW_R + _BROW_L
_INNER_BROWS, _OUTER_BROWS = [20, 21, 22, 23], [17, 18, 25, 26]
_LOWER_LIP = [56, 57, 58, 65, 66, 67]
_UPPER_LIP = [50, 51, 52, 61, 62, 63]
_CHIN = [6, 7, 8, 9, 10]
EXPRESSION_TARGETS: dict[str, list[tuple[list[int], tuple[float, float, float]]]] = {
    "NE": [],
    "HA": [([48], (-0.045, 0.045, -0.01)), ([54], (0.045, 0.045, -0.01)), ([49, 59, 60], (-0.02, 0.02, 0.0)),
           ([53, 55, 64], (0.02, 0.02, 0.0)), (_LOWER_LIP, (0.0, -0.02, 0.0)), (_UPPER_LIP, (0.0, 0.01, 0.0)),
           ([1, 2, 3], (-0.01, 0.01, 0.0)), ([13, 14, 15], (0.01, 0.01, 0.0))],
    "SU": [(_BROWS, (0.0, 0.05, 0.0)), (_LOWER_LIP, (0.0, -0.13, 0.0)), (_CHIN, (0.0, -0.10, 0.0)),
           ([5, 11], (0.0, -0.05, 0.0)), ([48], (0.015, -0.03, 0.0)), ([54], (-0.015, -0.03, 0.0)),
           (_UPPER_LIP, (0.0, 0.01, 0.0))],
    "AN": [(_INNER_BROWS, (0.0, -0.035, 0.0)), ([20, 21], (0.02, 0.0, 0.0)), ([22, 23], (-0.02, 0.0, 0.0)),
           ([61, 62, 63], (0.0, -0.01, 0.0)), ([65, 66, 67], (0.0, 0.015, 0.0)), ([48], (0.012, -0.005, 0.0)),
           ([54], (-0.012, -0.005, 0.0)), (_LOWER_LIP, (0.0, 0.01, 0.01))],
    "SA": [(_INNER_BROWS, (0.0, 0.03, 0.0)), (_OUTER_BROWS, (0.0, -0.015, 0.0)), ([48, 54], (0.0, -0.04, 0.0)),
           ([59, 55], (0.0, -0.02, 0.0)), (_LOWER_LIP, (0.0, 0.01, 0.01)), (_CHIN, (0.0, 0.01, 0.0))],
    "AF": [(_BROWS, (0.0, 0.04, 0.0)), (_INNER_BROWS, (0.0, 0.015, 0.0)), ([20, 21], (0.01, 0.0, 0.0)),
           ([22, 23], (-0.01, 0.0, 0.0)), ([48], (-0.035, -0.015, 0.0)), ([54], (0.035, -0.015, 0.0)),
           (_LOWER_LIP, (0.0, -0.06, 0.0)), (_CHIN, (0.0, -0.04, 0.0))],
    "DI": [(_UPPER_LIP, (0.0, 0.03, 0.005)), ([31, 32, 33, 34, 35], (0.0, 0.015, 0.0)),
           (_INNER_BROWS, (0.0, -0.02, 0.0)), ([48, 54], (0.0, -0.015, 0.0)), (_LOWER_LIP, (0.0, 0.0, 0.015)),
           ([66, 57], (0.0, -0.02, 0.0))],
}


# ------------------------------------------------------------------------------------------ model statistics
def expression_prototypes(model, sigma_beta: np.ndarray, gain: float = 1.0, ridge: float = 0.02) -> dict:
    """The 7 prototype β vectors, by ridge regression of the landmark rows of the expression basis on
    ``EXPRESSION_TARGETS`` (prior ‖β/σ_β‖², weight ``ridge``·‖target‖ scale). NE = 0. Deterministic."""
    kp = model.keypoint_ids.cpu().numpy()
    basis = model.exp_basis_t.cpu().numpy().astype(np.float64).T.reshape(model.n_vertices, 3, -1)[kp]  # (68,3,K)
    A = basis.reshape(68 * 3, -1) / FACE_WIDTH_UNITS                    # β → displacement in face widths
    protos = {}
    for code in EXPRESSION_CODES:
        target = np.zeros((68, 3))
        for ids, d in EXPRESSION_TARGETS[code]:
            target[ids] += np.asarray(d)
        if not target.any():
            protos[code] = np.zeros(A.shape[1])
            continue
        # weighted ridge in whitened coordinates u = β / σ_β
        As = A * sigma_beta[None, :]
        lam = ridge * float((As ** 2).sum() / As.shape[1])
        u = np.linalg.solve(As.T @ As + lam * np.eye(As.shape[1]), As.T @ target.reshape(-1))
        protos[code] = gain * u * sigma_beta
    return protos


def gender_direction(seed: int, n_id: int = 40) -> np.ndarray:
    """Unit vector in whitened α space, non-zero on the first ``GENDER_COMPONENTS`` entries only (seeded)."""
    rng = np.random.default_rng([seed, STREAMS["gender"]])
    d = np.zeros(n_id)
    d[:GENDER_COMPONENTS] = rng.standard_normal(GENDER_COMPONENTS)
    return d / np.linalg.norm(d)


def gender_of(i: int, n: int) -> str:
    """The documented rule: identities 0 … n//2 − 1 are F, the rest M."""
    return "F" if i < n // 2 else "M"


# ------------------------------------------------------------------------------------------ appearance
def _polygon_mask(points_xy: np.ndarray, poly: np.ndarray) -> np.ndarray:
    from matplotlib.path import Path as MplPath

    return MplPath(poly).contains_points(points_xy)


def _dist_to_polyline(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    best = np.full(len(points), np.inf)
    for a, b in zip(line[:-1], line[1:]):
        ab = b - a
        t = np.clip(((points - a) @ ab) / max(float(ab @ ab), 1e-12), 0, 1)
        proj = a + t[:, None] * ab
        best = np.minimum(best, np.linalg.norm(points - proj, axis=1))
    return best


class _Regions:
    """Per-vertex semantic weights (0–1) computed once on the mean shape, in face-width units."""

    def __init__(self, model):
        v = model.mean_shape.cpu().numpy().astype(np.float64) / FACE_WIDTH_UNITS
        lm = v[model.keypoint_ids.cpu().numpy()]
        xy, z = v[:, :2], v[:, 2]
        front = z > np.percentile(z, 25)
        self.pos = v
        # lips
        lips = _polygon_mask(xy, lm[48:60, :2]) & front
        d_lip = _dist_to_polyline(xy, np.vstack([lm[48:60, :2], lm[48:49, :2]]))
        self.lips = np.where(lips, 1.0, np.clip(1 - d_lip / 0.008, 0, 1) * front)
        # brows: a band around the brow landmarks, shifted slightly up, tapered at the ends
        brow = np.zeros(len(v))
        for ids in (_BROW_R, _BROW_L):
            line = lm[ids, :2] + np.array([0, 0.008])
            d = _dist_to_polyline(xy, line)
            brow = np.maximum(brow, np.clip(1 - (d - 0.012) / 0.008, 0, 1))
        self.brows = brow * front
        # eyes: sclera inside the eye contour, iris + pupil discs, a dark lid line along the contour
        self.sclera = np.zeros(len(v))
        self.iris = np.zeros(len(v))
        self.pupil = np.zeros(len(v))
        self.lid = np.zeros(len(v))
        for lo in (36, 42):
            poly = lm[lo:lo + 6, :2]
            inside = _polygon_mask(xy, poly) & front
            centre = poly.mean(axis=0)
            width = np.linalg.norm(poly[3] - poly[0])
            r = np.linalg.norm(xy - centre, axis=1)
            self.sclera = np.maximum(self.sclera, inside.astype(float))
            self.iris = np.maximum(self.iris, inside * np.clip(1 - (r - 0.19 * width) / (0.04 * width), 0, 1))
            self.pupil = np.maximum(self.pupil, inside * np.clip(1 - (r - 0.07 * width) / (0.03 * width), 0, 1))
            d = _dist_to_polyline(xy, np.vstack([poly, poly[:1]]))
            self.lid = np.maximum(self.lid, np.clip(1 - d / (0.06 * width), 0, 1) * front)
        # nostrils: just below and inside the nostril landmarks 31 and 35
        nos = np.zeros(len(v))
        for a, b in ((31, 32), (35, 34)):
            c = 0.6 * lm[a, :2] + 0.4 * lm[b, :2] + np.array([0, 0.006])
            nos = np.maximum(nos, np.clip(1 - np.linalg.norm(xy - c, axis=1) / 0.014, 0, 1))
        self.nostrils = nos * front
        # cheeks (for redness)
        cheek = np.zeros(len(v))
        for a, b in ((2, 31), (14, 35)):
            c = 0.5 * (lm[a, :2] + lm[b, :2])
            cheek = np.maximum(cheek, np.exp(-np.sum((xy - c) ** 2, axis=1) / (2 * 0.06 ** 2)))
        self.cheeks = cheek * front
        # forehead height above the brows (for the hairline band)
        self.brow_top = float(lm[_BROWS, 1].max())
        self.top = float(v[:, 1].max())


def identity_albedo(regions: _Regions, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """(N, 3) RGB albedo in 0–1 for one identity, and the few scalars that define it."""
    v = regions.pos
    n = len(v)
    light = np.array([0.86, 0.68, 0.58])
    medium = np.array([0.62, 0.44, 0.32])
    t = float(rng.beta(1.3, 3.0))  # mostly light
    skin = (1 - t) * light + t * medium
    skin = skin * np.exp(rng.normal(0, [0.03, 0.03, 0.04]))
    # smooth random field: a few random cosines of position (wavelength ≥ 1/3 face width)
    field = np.zeros(n)
    for _ in range(6):
        k = rng.normal(0, 1, 3)
        k = k / np.linalg.norm(k) * rng.uniform(1.5, 6.0)
        field += np.cos(2 * np.pi * (v @ k) + rng.uniform(0, 2 * np.pi))
    field = 0.06 * field / np.sqrt(6 / 2)
    grain = rng.normal(0, 0.02, n)
    alb = skin[None, :] * (1 + field + grain)[:, None]
    redness = rng.uniform(0.03, 0.10)
    alb = alb * (1 + regions.cheeks[:, None] * redness * np.array([0.6, -0.5, -0.6]))
    hair = np.array([0.30, 0.20, 0.13]) * rng.uniform(0.3, 1.1)
    lip = skin * np.array([0.85, 0.55, 0.58]) * rng.uniform(0.85, 1.0)
    iris = np.array([0.30, 0.22, 0.15]) * rng.uniform(0.3, 1.2)
    # hairline: a soft band across the top of the forehead, at a random height above the brows
    hairline = regions.brow_top + rng.uniform(0.55, 0.8) * (regions.top - regions.brow_top)
    hair_w = np.clip((v[:, 1] - hairline) / 0.03, 0, 1)
    nos = regions.nostrils[:, None]
    for w, c in ((regions.lips, lip), (regions.brows * 0.85, hair), (hair_w * 0.9, hair)):
        alb = alb * (1 - w[:, None]) + w[:, None] * c[None, :]
    alb = alb * (1 - 0.6 * nos)
    sclera = np.array([0.80, 0.76, 0.74])
    alb = alb * (1 - regions.sclera[:, None]) + regions.sclera[:, None] * sclera
    alb = alb * (1 - regions.iris[:, None]) + regions.iris[:, None] * iris
    alb = alb * (1 - regions.pupil[:, None]) + regions.pupil[:, None] * np.array([0.03, 0.03, 0.03])
    alb = alb * (1 - 0.6 * regions.lid[:, None])
    cloth = np.array([0.45, 0.45, 0.47]) * rng.uniform(0.3, 1.4) * np.exp(rng.normal(0, 0.08, 3))
    look = {"skin_rgb": skin.tolist(), "hair_rgb": hair.tolist(), "cloth_rgb": np.clip(cloth, 0, 1).tolist(),
            "hair_length": float(rng.uniform(-0.05, 0.55))}  # hair reaches this far below the eyes (face widths)
    return np.clip(alb, 0, 1).astype(np.float32), look


def random_gamma(rng: np.random.Generator) -> np.ndarray:
    """Deep3D γ (27,): mild, near-monochromatic SH light with a key light mainly from the front and above."""
    mono = np.zeros(9)
    mono[0] = rng.uniform(0.05, 0.30)                 # exposure on top of init_lit 0.8
    # band 1 (−y, z, −x order in sh_basis): light from above (y>0 → coefficient on −y term negative), front, side
    mono[1] = -rng.uniform(0.05, 0.25)
    mono[2] = rng.uniform(0.10, 0.30)
    mono[3] = rng.normal(0, 0.15)
    mono[4:] = rng.normal(0, 0.05, 5)
    tint = np.exp(rng.normal(0, 0.03, 3))
    g = np.stack([mono * tint[c] + rng.normal(0, 0.01, 9) for c in range(3)])  # (3, 9) channel-major
    return g.reshape(-1)


# ------------------------------------------------------------------------------------------ rendering
def _ellipsoid(centre, radii, n_lat: int = 20, n_lon: int = 40):
    """UV ellipsoid: vertices (V, 3), triangles (F, 3), outward unit normals (V, 3)."""
    th = np.linspace(0, np.pi, n_lat + 1)
    ph = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    T, P = np.meshgrid(th, ph, indexing="ij")
    unit = np.stack([np.sin(T) * np.sin(P), np.cos(T), np.sin(T) * np.cos(P)], -1).reshape(-1, 3)
    radii = np.asarray(radii, dtype=np.float64)
    verts = unit * radii + np.asarray(centre)
    normals = unit / radii
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    tri = []
    for i in range(n_lat):
        for j in range(n_lon):
            a, b = i * n_lon + j, i * n_lon + (j + 1) % n_lon
            c, d = a + n_lon, b + n_lon
            tri += [(a, c, b), (b, c, d)]
    return verts, np.asarray(tri, dtype=np.int64), normals


class _Renderer:
    """Face mesh (53215-vertex BFM, no-neck triangles) over a coarse head proxy: a hair/skull ellipsoid, a neck
    and shoulders (three ellipsoids placed from each identity's landmarks). The proxy is rendered first and the
    face composited on top of it where the face covers a pixel (the face is always in front of its own head)."""

    def __init__(self, model):
        self.model = model
        m = model.mean_shape.cpu().numpy().astype(np.float64)
        self.kp = model.keypoint_ids.cpu().numpy()
        lm = m[self.kp]
        W = FACE_WIDTH_UNITS
        # the head turns about a point on the neck axis, 0.75 face widths behind the nose tip
        self.pivot = torch.tensor([0.0, lm[36:48, 1].mean() - 0.1 * W, lm[30, 2] - 0.75 * W], dtype=torch.float32)
        self.faces = model.triangles

    def proxy(self, alpha: np.ndarray, look: dict):
        """Head proxy of one identity: verts (V,3), tris, normals, albedo (V,3) in model space."""
        v = self.model.shape(torch.as_tensor(alpha[None], dtype=torch.float32))[0].numpy().astype(np.float64)
        lm = v[self.kp]
        W = float(np.linalg.norm(lm[15] - lm[1])) / 0.79   # face-width unit of this identity (mean face: 1.8e5)
        eye_y, chin_y, nose_z = lm[36:48, 1].mean(), lm[8, 1], lm[30, 2]
        cz = nose_z - 0.75 * W
        parts = [  # (centre, radii, kind)
            ((0.0, eye_y + 0.12 * W, cz + 0.02 * W), (0.50 * W, 0.70 * W, 0.64 * W), "head"),
            ((0.0, chin_y - 0.35 * W, cz - 0.05 * W), (0.30 * W, 0.60 * W, 0.33 * W), "neck"),
            ((0.0, chin_y - 1.05 * W, cz - 0.05 * W), (1.25 * W, 0.50 * W, 0.45 * W), "torso"),
        ]
        Vs, Ts, Ns, Cs, off = [], [], [], [], 0
        skin = np.asarray(look["skin_rgb"]) * 0.92
        hair = np.asarray(look["hair_rgb"])
        cloth = np.asarray(look["cloth_rgb"])
        hair_bottom = eye_y - look["hair_length"] * W
        for centre, radii, kind in parts:
            vv, tt, nn = _ellipsoid(centre, radii)
            if kind == "head":
                # hair above the hair line and on the back of the head; skin (ears, temples) low at the front
                back = vv[:, 2] < cz - 0.1 * W
                is_hair = (vv[:, 1] > hair_bottom) | (back & (vv[:, 1] > chin_y + 0.1 * W))
                col = np.where(is_hair[:, None], hair[None, :], skin[None, :])
            elif kind == "neck":
                col = np.broadcast_to(skin * 0.9, vv.shape)
            else:
                col = np.broadcast_to(cloth, vv.shape)
            Vs.append(vv)
            Ts.append(tt + off)
            Ns.append(nn)
            Cs.append(col)
            off += len(vv)
        return (np.concatenate(Vs).astype(np.float32), np.concatenate(Ts), np.concatenate(Ns).astype(np.float32),
                np.concatenate(Cs).astype(np.float32))

    def render(self, alpha, beta, albedo, angles_rad, gamma, height, width, scale, centre_xy, background,
               proxy=None):
        """Batch render. alpha (B,40), beta (B,10), albedo (N,3), angles (B,3), gamma (B,27) numpy;
        centre_xy (B,2) pixels of the pivot; background (B,H,W,3) float 0–1; ``proxy`` from :meth:`proxy` or
        None. Returns (B,H,W,3) float, face mask (B,H,W)."""
        model = self.model
        B = len(alpha)
        with torch.no_grad():
            R = model.rotation_from_angles(torch.as_tensor(np.asarray(angles_rad), dtype=torch.float32))
            g = torch.as_tensor(np.asarray(gamma), dtype=torch.float32)
            s = torch.as_tensor(np.asarray(scale), dtype=torch.float32).reshape(-1, 1)
            c = torch.as_tensor(np.asarray(centre_xy), dtype=torch.float32).reshape(-1, 2)

            def screen(v):
                v = (v - self.pivot) @ R.transpose(1, 2)
                return torch.stack([v[..., 0] * s + c[:, None, 0], c[:, None, 1] - v[..., 1] * s, -v[..., 2]], -1)

            verts = model.shape(torch.as_tensor(alpha, dtype=torch.float32), torch.as_tensor(beta, dtype=torch.float32))
            normals = model.vertex_normals(verts) @ R.transpose(1, 2)
            alb = torch.from_numpy(np.array(albedo, dtype=np.float32))[None].expand(B, -1, -1)
            colour = sh_shading(normals, alb, g).clamp(0, 1)
            scr = screen(verts)
            # back-face culling per image (about half the triangles at any yaw): screen y grows downwards, so a
            # triangle facing the camera has a negative signed area in (x, y_screen)
            t = self.faces
            img = np.empty((B, height, width, 3), np.float32)
            mask = np.empty((B, height, width), np.float32)
            for k in range(B):
                p = scr[k]
                p0, p1, p2 = p[t[:, 0], :2], p[t[:, 1], :2], p[t[:, 2], :2]
                area = (p1[:, 0] - p0[:, 0]) * (p2[:, 1] - p0[:, 1]) - (p1[:, 1] - p0[:, 1]) * (p2[:, 0] - p0[:, 0])
                keep = t[area < 0]
                out = render(p[None], keep, colour[k:k + 1], height, width)
                img[k] = out.image[0].permute(1, 2, 0).numpy()
                mask[k] = out.mask[0, 0].numpy()
            bg = np.array(background, dtype=np.float32)
            if proxy is not None:  # smooth and large: rendered at half resolution and enlarged
                h2, w2 = (height + 1) // 2, (width + 1) // 2
                pv, pt, pn, pc = (torch.from_numpy(x) for x in proxy)
                pn = pn[None].expand(B, -1, -1) @ R.transpose(1, 2)
                pcol = sh_shading(pn, pc[None].expand(B, -1, -1), g).clamp(0, 1)
                ps = screen(pv[None].expand(B, -1, -1))
                ps = torch.cat([(ps[..., :2] + 0.5) * (w2 / width) - 0.5, ps[..., 2:]], -1)
                pout = render(ps, pt, torch.cat([pcol, torch.ones_like(pcol[..., :1])], -1), h2, w2)
                small = pout.image.permute(0, 2, 3, 1).numpy()
                for k in range(B):
                    big = cv2.resize(small[k], (width, height), interpolation=cv2.INTER_LINEAR)
                    pm = big[..., 3:4]
                    bg[k] = big[..., :3] + bg[k] * (1 - pm)
        img = img * mask[..., None] + bg * (1 - mask[..., None])
        return img, mask


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    base = np.array(KDEF_BACKGROUND_RGB) / 255.0 * np.exp(rng.normal(0, 0.015, 3)) * rng.uniform(0.93, 1.07)
    ramp = 1.0 + rng.uniform(-0.12, 0.05) * np.linspace(-1, 1, h)[:, None, None]
    return (base[None, None, :] * ramp * np.ones((1, w, 1))).astype(np.float32)


def _finish(img: np.ndarray, rng: np.random.Generator, noise: float = 0.012) -> np.ndarray:
    img = cv2.GaussianBlur(img, (0, 0), 0.6)
    img = img + rng.normal(0, noise, img.shape).astype(np.float32)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def _write_jpeg(path: Path, image: np.ndarray, quality: int = 92) -> None:
    """Atomic JPEG write; ``image`` RGB (H,W,3) or gray (H,W) uint8."""
    arr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, buf = cv2.imencode(".jpg", arr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.tobytes())

# ------------------------------------------------------------------------------------------ the generator
def generate_synthetic(out_dir, n_identities: int = 20, sessions=("A",), seed: int = 0,
                       image_size: tuple[int, int] = (381, 281), assets_folder=None, progress: bool = True,
                       n_fei: int = 40, gender_delta: float = 1.5, expression_gain: float = 1.0,
                       beta_jitter: float = 0.08, batch_size: int = 35) -> dict:
    """Render the synthetic KDEF-like and FEI-like sets into ``out_dir`` (see the module docstring).

    ``image_size`` is (height, width) of the KDEF-like pictures (default half of KDEF's 762×562).
    Returns ``dict(kdef_root, fei_root, n_images, n_kdef, n_fei_images, ground_truth, marker, seconds)``.
    """
    t0 = time.time()
    n_identities, n_fei, seed = int(n_identities), int(n_fei), int(seed)
    sessions = tuple(str(s).upper() for s in sessions)
    if not 1 <= n_identities or (n_identities + 1) // 2 > 35:
        raise ValueError("n_identities must be 1…70 (KDEF ids are 01–35 per gender)")
    if any(s not in ("A", "B") for s in sessions) or not sessions:
        raise ValueError("sessions must be drawn from ('A', 'B')")
    height, width = int(image_size[0]), int(image_size[1])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = dict(generator=GENERATOR_VERSION, seed=seed, n_identities=n_identities, sessions=list(sessions),
                  image_size=[height, width], n_fei=n_fei, gender_delta=float(gender_delta),
                  expression_gain=float(expression_gain), beta_jitter=float(beta_jitter),
                  gender_rule="identity i of n: F if i < n//2 else M; alpha shifted by -/+ delta along a seeded "
                              "unit direction of the whitened first 10 alpha components",
                  yaw_deg=YAW_DEG, model="3ddfa (BFM, 53215 vertices, alpha 40, beta 10)")
    kdef_root, fei_root = out / "KDEF", out / "fei" / "frontal"
    marker, partial = out / MARKER, out / PARTIAL_MARKER
    for existing in (marker, partial):
        if existing.is_file():
            old = json.loads(existing.read_text())
            if old.get("params") != json.loads(json.dumps(params)):
                raise ValueError(f"{out} already holds a synthetic set made with other parameters ({existing}); "
                                 "use another folder or delete it")
    if marker.is_file() and (out / GROUND_TRUTH).is_file():
        info = json.loads(marker.read_text())
        return _result(out, info, time.time() - t0)
    atomic_write_json({"params": params, "complete": False}, partial)

    model = MorphableModel.from_3ddfa(assets_folder=assets_folder)
    sigma_a, sigma_b = coefficient_sigma(assets_folder)
    protos = expression_prototypes(model, sigma_b, gain=expression_gain)
    gdir = gender_direction(seed, model.n_id)
    regions = _Regions(model)
    renderer = _Renderer(model)

    # ---- plan every image (parameters only; cheap) -------------------------------------------------------
    jobs = []  # (kind, identity key, list of image dicts)
    idents = {}
    for kind, n, stream in (("kdef", n_identities, "kdef_identity"), ("fei", n_fei, "fei_identity")):
        for i in range(n):
            rng = np.random.default_rng([seed, STREAMS[stream], i])
            g = gender_of(i, n)
            z = rng.standard_normal(model.n_id)
            alpha = sigma_a * (z + (-1.0 if g == "F" else 1.0) * gender_delta * gdir)
            albedo, look = identity_albedo(regions, rng)
            idents[(kind, i)] = dict(alpha=alpha, albedo=albedo, gender=g, look=look)
    face_scale = FACE_WIDTH_FRACTION * width / FACE_WIDTH_UNITS
    n_per_g = {"F": 0, "M": 0}
    for i in range(n_identities):
        ident = idents[("kdef", i)]
        g = ident["gender"]
        n_per_g[g] += 1
        num = n_per_g[g]
        for session in sessions:
            subject = f"{session}{g}{num:02d}"
            imgs = []
            for e_i, expr in enumerate(EXPRESSION_CODES):
                for a_i, ang in enumerate(ANGLE_CODES):
                    rng = np.random.default_rng([seed, STREAMS["kdef_image"], i, "AB".index(session), e_i, a_i])
                    beta = protos[expr] + beta_jitter * sigma_b * rng.standard_normal(model.n_exp)
                    angles = np.radians([rng.normal(0, 3.0), YAW_DEG[ang] + rng.normal(0, 2.0), rng.normal(0, 2.0)])
                    scale = face_scale * rng.uniform(0.96, 1.04)
                    centre = (width / 2 + rng.normal(0, 0.01 * width), HEAD_CENTRE_Y * height + rng.normal(0, 0.01 * height))
                    gamma = random_gamma(rng)
                    image_id = f"{subject}{expr}{ang}"
                    imgs.append(dict(dataset="kdef", image_id=image_id, identity=i,
                                     relpath=f"KDEF/{subject}/{image_id}.JPG", subject=f"{g}{num:02d}", gender=g,
                                     session=session, expression=expr, angle=ang, alpha=ident["alpha"], beta=beta,
                                     angles=angles, gamma=gamma, scale=scale, centre=centre,
                                     noise_seed=int(rng.integers(2 ** 31)), bg_seed=int(rng.integers(2 ** 31))))
            jobs.append(("kdef", i, imgs))
    fh, fw = FEI_SIZE
    for i in range(n_fei):
        ident = idents[("fei", i)]
        imgs = []
        for k, (kind, expr) in enumerate((("a", "NE"), ("b", "HA"))):
            rng = np.random.default_rng([seed, STREAMS["fei_image"], i, k])
            beta = protos[expr] + beta_jitter * sigma_b * rng.standard_normal(model.n_exp)
            angles = np.radians([rng.normal(0, 1.5), rng.normal(0, 1.5), rng.normal(0, 1.0)])
            gamma = random_gamma(rng)
            sid = i + 1
            imgs.append(dict(dataset="fei", image_id=f"{sid}{kind}", identity=i, relpath=f"fei/frontal/{sid}{kind}.jpg",
                             subject=f"fei{sid:03d}", gender=ident["gender"], session=None,
                             expression="neutral" if kind == "a" else "smiling", angle="frontal",
                             alpha=ident["alpha"], beta=beta, angles=angles, gamma=gamma,
                             scale=None, centre=None, noise_seed=int(rng.integers(2 ** 31)),
                             bg_seed=int(rng.integers(2 ** 31))))
        jobs.append(("fei", i, imgs))

    # ---- render -----------------------------------------------------------------------------------------------
    n_total = sum(len(j[2]) for j in jobs)
    bar = tqdm(total=n_total, desc="synthetic faces", unit="img", disable=not progress)
    for kind, i, imgs in jobs:
        todo = [im for im in imgs if not (out / im["relpath"]).is_file()]
        bar.update(len(imgs) - len(todo))
        albedo = idents[(kind, i)]["albedo"]
        proxy = renderer.proxy(idents[(kind, i)]["alpha"], idents[(kind, i)]["look"]) if todo else None
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            if kind == "kdef":
                _render_kdef(renderer, chunk, albedo, proxy, height, width, out)
            else:
                _render_fei(renderer, model, chunk, albedo, proxy, out)
            bar.update(len(chunk))
    bar.close()

    # ---- labels, ground truth, marker ----------------------------------------------------------------------
    fei_root.mkdir(parents=True, exist_ok=True)
    labels = pd.DataFrame({"subject_id": list(range(1, n_fei + 1)),
                           "gender": [idents[("fei", i)]["gender"] for i in range(n_fei)]})
    _atomic_csv(labels, out / "fei" / "fei_gender.csv")
    rows = []
    for kind, i, imgs in jobs:
        for im in imgs:
            rows.append(dict(dataset=im["dataset"], image_id=im["image_id"], relpath=im["relpath"],
                             identity=im["identity"], subject=im["subject"], gender=im["gender"],
                             session=im["session"], expression=im["expression"], angle=im["angle"],
                             alpha=[float(x) for x in im["alpha"]], beta=[float(x) for x in im["beta"]],
                             angles=[float(x) for x in im["angles"]], gamma=[float(x) for x in im["gamma"]],
                             skin_rgb=idents[(kind, i)]["look"]["skin_rgb"]))
    gt = pd.DataFrame(rows)
    atomic_write_table(gt, out / GROUND_TRUTH)
    n_kdef = int((gt["dataset"] == "kdef").sum())
    info = {"synthetic": True, "params": params, "complete": True,
            "counts": {"kdef": n_kdef, "fei": int((gt["dataset"] == "fei").sum()), "total": int(len(gt))},
            "prototypes_beta": {k: [float(x) for x in v] for k, v in protos.items()},
            "gender_direction_whitened": [float(x) for x in gdir],
            "sigma_alpha": [float(x) for x in sigma_a], "sigma_beta": [float(x) for x in sigma_b],
            "model_provenance": model.provenance,
            "files": {"kdef_root": "KDEF", "fei_root": "fei/frontal", "fei_labels": "fei/fei_gender.csv",
                      "ground_truth": GROUND_TRUTH},
            "seconds": round(time.time() - t0, 1)}
    atomic_write_json(info, marker)
    partial.unlink(missing_ok=True)
    return _result(out, info, time.time() - t0)


def _result(out: Path, info: dict, seconds: float) -> dict:
    c = info["counts"]
    return dict(kdef_root=str(out / "KDEF"), fei_root=str(out / "fei" / "frontal"), n_images=c["total"],
                n_kdef=c["kdef"], n_fei_images=c["fei"], ground_truth=str(out / GROUND_TRUTH),
                marker=str(out / MARKER), seconds=round(seconds, 1))


def _atomic_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)

def _render_kdef(renderer, chunk, albedo, proxy, height, width, out):
    bgs = [_background(np.random.default_rng(im["bg_seed"]), height, width) for im in chunk]
    img, _ = renderer.render(np.stack([im["alpha"] for im in chunk]), np.stack([im["beta"] for im in chunk]),
                             albedo, np.stack([im["angles"] for im in chunk]),
                             np.stack([im["gamma"] for im in chunk]), height, width,
                             np.array([im["scale"] for im in chunk]), np.array([im["centre"] for im in chunk]),
                             np.stack(bgs), proxy=proxy)
    for k, im in enumerate(chunk):
        _write_jpeg(out / im["relpath"], _finish(img[k], np.random.default_rng(im["noise_seed"])))


def _render_fei(renderer, model, chunk, albedo, proxy, out):
    """Frontal render, then a tight crop placing the eye centres at 17 % of the height, 64 % of the width apart."""
    fh, fw = FEI_SIZE
    H = W = 400
    alpha = np.stack([im["alpha"] for im in chunk])
    # eye centres of each face in model space → scale/centre so the crop lands where FEI's does
    with torch.no_grad():
        v = model.shape(torch.as_tensor(alpha, dtype=torch.float32)).numpy()
    lm = v[:, model.keypoint_ids.cpu().numpy()]
    eye_r, eye_l = lm[:, 36:42].mean(1), lm[:, 42:48].mean(1)
    iod = np.linalg.norm(eye_l[:, :2] - eye_r[:, :2], axis=1)
    crop_h, crop_w = 2 * fh, 2 * fw                    # render at 2× the crop resolution (crop 324×386 of 400²)
    scale = 0.64 * crop_w / iod                        # eye centres 64 % of the crop width apart (FEI's framing)
    mid = 0.5 * (eye_r + eye_l) - renderer.pivot.numpy()[None, :]
    # place the eye midpoint at (W/2, top + 0.17 * crop height)
    top, left = (H - crop_h) // 2, (W - crop_w) // 2
    centre = np.stack([W / 2 - mid[:, 0] * scale, top + 0.17 * crop_h + mid[:, 1] * scale], axis=1)
    bgs = [_background(np.random.default_rng(im["bg_seed"]), H, W) * 0.7 for im in chunk]
    img, _ = renderer.render(alpha, np.stack([im["beta"] for im in chunk]),
                             albedo, np.stack([im["angles"] for im in chunk]),
                             np.stack([im["gamma"] for im in chunk]), H, W, scale, centre, np.stack(bgs),
                             proxy=proxy)
    for k, im in enumerate(chunk):
        crop = img[k, top:top + crop_h, left:left + crop_w]
        gray = cv2.cvtColor(np.clip(crop, 0, 1).astype(np.float32), cv2.COLOR_RGB2GRAY)
        gray = cv2.resize(gray, (fw, fh), interpolation=cv2.INTER_AREA)
        rng = np.random.default_rng(im["noise_seed"])
        g8 = _finish(gray, rng, noise=0.008)
        g8 = cv2.equalizeHist(g8)
        _write_jpeg(out / im["relpath"], g8)
