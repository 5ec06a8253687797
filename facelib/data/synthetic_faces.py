"""One synthetic face: the model statistics, appearance and rendering behind :mod:`facelib.data.synthetic`.

The seams of :mod:`facelib.data.synthetic`'s specification (its docstring says what each part does and why):
model statistics (expression prototypes from ``EXPRESSION_TARGETS``, the gender direction and rule), appearance
(per-identity albedo painted from landmark regions, SH lighting), and rendering (the head proxy, the
scaled-orthographic render, background, noise, blur and JPEG; a KDEF-like and an FEI-like picture per chunk).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from matplotlib.path import Path as MplPath

from ..fitting.render import render, sh_shading
from ..io import atomic_path
from .datasets import EXPRESSION_CODES

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

    return MplPath(poly).contains_points(points_xy)


def _dist_to_polyline(points: np.ndarray, line: np.ndarray) -> np.ndarray:
    best = np.full(len(points), np.inf)
    for a, b in zip(line[:-1], line[1:]):
        ab = b - a
        t = np.clip(((points - a) @ ab) / max(float(ab @ ab), 1e-12), 0, 1)
        proj = a + t[:, None] * ab
        best = np.minimum(best, np.linalg.norm(points - proj, axis=1))
    return best


class Regions:
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


def identity_albedo(regions: Regions, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
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


class Renderer:
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


def render_kdef(renderer, chunk, albedo, proxy, height, width, out):
    bgs = [_background(np.random.default_rng(im["bg_seed"]), height, width) for im in chunk]
    img, _ = renderer.render(np.stack([im["alpha"] for im in chunk]), np.stack([im["beta"] for im in chunk]),
                             albedo, np.stack([im["angles"] for im in chunk]),
                             np.stack([im["gamma"] for im in chunk]), height, width,
                             np.array([im["scale"] for im in chunk]), np.array([im["centre"] for im in chunk]),
                             np.stack(bgs), proxy=proxy)
    for k, im in enumerate(chunk):
        _write_jpeg(out / im["relpath"], _finish(img[k], np.random.default_rng(im["noise_seed"])))


def render_fei(renderer, model, chunk, albedo, proxy, out):
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
