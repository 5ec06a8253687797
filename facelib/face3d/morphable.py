"""The 3D morphable model: one ``MorphableModel`` type, three sources.

Sources
-------
``MorphableModel.from_3ddfa()`` (default, ``source == "3ddfa"``)
    The BFM 2009 bases in 3DDFA's 62-d parameter space (assets ``bfm_u_shp``, ``bfm_u_exp``, ``bfm_w_shp``,
    ``bfm_w_exp``, ``bfm_keypoints``; triangles ``tri`` + ``indices`` from 3DDFA_V2). 53215 vertices,
    identity α 40, expression β 10, no texture basis. Units are BFM's raw units (the ones 3DDFA's pose
    matrix expects; a face is about 1.8e5 wide). Mean shape = ``u_shp + u_exp``.

    - ``keypoints_sim.npy`` holds 204 indices into the *interleaved* xyz array (x0,y0,z0,x1,…);
      the 68 vertex ids are ``keypoints_sim[0::3] // 3``.
    - ``tri.pkl`` is (3, 76073), 0-based, and indexes 3DDFA_V2's 38365-vertex no-neck mesh. ``indices.npy``
      (38365,) maps each no-neck vertex to its row in the 53215-vertex model (checked: mapped edges are
      short, unmapped ones are not), so ``triangles = indices[tri.T]``. Its winding gives inward normals with
      the right-hand rule, so two columns are swapped: every ``triangles`` here is counter-clockwise seen
      from outside, i.e. ``(v1 - v0) × (v2 - v0)`` points out of the face. The 14850 neck/ear vertices
      outside the no-neck mesh belong to no triangle (their normals are zero).
    - No texture basis: ``texture()`` returns a constant grey albedo (``GREY`` = 0.6 in RGB 0–1).

``MorphableModel.from_bfm09(bfm09_mat, exp_pca_bin, aux_folder, cache)`` (``source == "bfm09_front"``)
    The paper's (Deep3DFaceRecon's) 35709-vertex front model, built from the licence-gated BFM 2009
    ``01_MorphableModel.mat`` and Guo et al.'s ``Exp_Pca.bin`` by the documented conversion:
    id = shapePC·shapeEV/1e5 (first 80), exp = expPC·std_exp/1e5 (first 64), tex = texPC·texEV (first 80),
    mean = shapeMU/1e5, vertices = ``trimIndex[idx]`` of BFM09's 53490 (``idx`` alone for the 53215-vertex
    expression basis), both 1-based in the .mat files. Triangles, ``point_buf``, keypoints, skin mask and the
    small photometric-face region come from ``facemodel_info.mat`` (1-based, converted to 0-based here).
    As Deep3D's ``ParametricFaceModel(recenter=True)``, the mean shape is recentred (its vertex mean is
    subtracted). Units: decimetres (BFM µm / 1e5). Texture in RGB 0–255, returned /255. The converted model
    is cached as an .npz keyed by the sha256 of every input file.
    Its vertex set is the same as 3DDFA's 53215-vertex set restricted to ``idx`` (the 68 keypoints coincide).

``ict.load_model(source, assets_dir, cache)`` (``source == "ict"``, layout ``ict``: pose 12, α 100, β 53)
    ICT-FaceKit's ICT Face Model Light (MIT): 26,719 vertices, 100 std-scaled identity modes, 53 ARKit expression
    blend shapes (weights in [0, 1]), centimetres, BFM's axes; built, checked and cached by
    :mod:`facelib.face3d.ict` (the source builds the class; this module does not import it).

Coordinates (all sources): model space is BFM's: x towards the subject's left (image right in a frontal
view), y up, z out of the face towards the viewer (the nose tip has the largest z).

Layouts (``split_coeff``)
    deep3d 257: alpha 80, beta 64, texture 80, angles 3, gamma 27, translation 3 (xy 2 + z 1)
    3ddfa 62:   pose 12 (3×4 [sR|t], row-major), alpha 40, beta 10

Cameras
    ``rotation_from_angles`` — Deep3D's Euler convention R = Rz·Ry·Rx (angles x, y, z in radians), returned
    as the matrix acting on column vectors (v' = R v). Deep3D's ``compute_rotation`` returns Rᵀ for its
    row-vector product ``pts @ rot``; the two agree.
    ``perspective_project`` — Deep3D's camera: after ``transform`` (rotate, then translate), z_cam =
    camera_distance − z; u = f·x/z_cam + c, v_up = f·y/z_cam + c; image rows v = image_size − 1 − v_up (the
    flip Deep3D applies to its landmarks, ``H − 1 − y``). ``flip_y=False`` returns Deep3D's native y-up values.
    ``ortho_project_3ddfa`` — 3DDFA's scaled orthographic camera p = sR·v + t with pose as 3×4 [sR|t];
    in the 120×120 crop: x = p_x − 1, y = 120 − p_y, z = p_z − 1 (3DDFA_V2 ``similar_transform``); with a
    ``roi_box`` the crop coordinates are mapped into the original image as 3DDFA_V2 does.

Length (~470 lines): one class and the loaders of its two sources (3DDFA BFM, BFM09 front) with the cache
that converts them; the loaders build the class's arrays and are not used elsewhere.
"""
from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.io import loadmat

from .. import assets, config
from ..io import cached_arrays

LAYOUT_DEEP3D: tuple[tuple[str, int], ...] = (
    ("alpha", 80), ("beta", 64), ("texture", 80), ("angles", 3), ("gamma", 27), ("translation", 3))
LAYOUT_3DDFA: tuple[tuple[str, int], ...] = (("pose", 12), ("alpha", 40), ("beta", 10))
LAYOUT_ICT: tuple[tuple[str, int], ...] = (("pose", 12), ("alpha", 100), ("beta", 53))
LAYOUTS = {"deep3d": LAYOUT_DEEP3D, "3ddfa": LAYOUT_3DDFA, "ict": LAYOUT_ICT}

GREY = 0.6  # constant albedo of a model without a texture basis (RGB 0-1)
N_VERTS_BFM09 = 53490
N_VERTS_EXP = 53215
N_VERTS_FRONT = 35709
_CACHE_VERSION = "bfm09_front_v1"
_AUX_NAMES = ("std_exp", "bfm_front_idx", "bfm_exp_idx", "facemodel_info")


def _as_tensor(x, device, dtype=torch.float32) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


def _no_float64(a: np.ndarray) -> np.ndarray:
    """float64 → float32 (the model's tensors go to devices without float64, e.g. Apple GPUs); others unchanged."""
    return a.astype(np.float32) if a.dtype == np.float64 else a


def _batch(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(0) if x.dim() == 1 else x


class MorphableModel:
    """Linear face model S = S̄ + B_id α + B_exp β (and T = T̄ + B_tex δ when a texture basis exists).

    Build it with ``from_3ddfa`` or ``from_bfm09``. All tensors are float32 (indices int64) on ``device``;
    every method is batched: coefficients (B, K) → vertices (B, N, 3).
    """

    def __init__(self, *, source: str, layout: str, mean_shape, id_basis, exp_basis, triangles, keypoint_ids,
                 tex_mean=None, tex_basis=None, point_buf=None, units: str = "", extras: dict | None = None,
                 provenance: dict | None = None, device: str | torch.device = "cpu"):
        self.source = source
        self.layout = layout
        self.units = units
        self.provenance = dict(provenance or {})
        self.device = torch.device(device)
        mean = np.asarray(mean_shape, dtype=np.float32).reshape(-1)
        n = mean.size // 3
        id_basis = np.asarray(id_basis, dtype=np.float32).reshape(3 * n, -1)
        exp_basis = np.asarray(exp_basis, dtype=np.float32).reshape(3 * n, -1)
        self.mean_shape = torch.from_numpy(mean.reshape(n, 3).copy())
        # bases stored transposed (K, 3N): coefficients (B, K) @ basis_t -> (B, 3N), xyz interleaved per vertex
        self.id_basis_t = torch.from_numpy(np.ascontiguousarray(id_basis.T))
        self.exp_basis_t = torch.from_numpy(np.ascontiguousarray(exp_basis.T))
        if tex_basis is not None:
            self.tex_mean = torch.from_numpy(np.asarray(tex_mean, dtype=np.float32).reshape(n, 3).copy())
            self.tex_basis_t = torch.from_numpy(
                np.ascontiguousarray(np.asarray(tex_basis, dtype=np.float32).reshape(3 * n, -1).T))
        else:
            self.tex_mean = None
            self.tex_basis_t = None
        tri = np.asarray(triangles, dtype=np.int64)
        if tri.ndim != 2 or tri.shape[1] != 3 or tri.min() < 0 or tri.max() >= n:
            raise ValueError(f"triangles must be (F, 3) 0-based vertex ids < {n}")
        kp = np.asarray(keypoint_ids, dtype=np.int64).reshape(-1)
        if kp.min() < 0 or kp.max() >= n:
            raise ValueError("keypoint ids out of range")
        self.triangles = torch.from_numpy(tri.copy())
        self.keypoint_ids = torch.from_numpy(kp.copy())
        # point_buf: (N, 8) face ids per vertex, 0-based; value F (== n_triangles) pads with a zero face
        self.point_buf = None if point_buf is None else torch.from_numpy(np.asarray(point_buf, dtype=np.int64))
        self.extras = {k: torch.from_numpy(_no_float64(np.asarray(v))) for k, v in (extras or {}).items()}
        self.cache_path: Path | None = None   # from_bfm09: the .npz holding the converted model
        self.cache_hit = False                 # from_bfm09: whether it was read from that cache
        self.to(self.device)

    # ------------------------------------------------------------------ bookkeeping
    def to(self, device) -> "MorphableModel":
        self.device = torch.device(device)
        for key, value in list(vars(self).items()):
            if isinstance(value, torch.Tensor):
                setattr(self, key, value.to(self.device))
        self.extras = {k: v.to(self.device) for k, v in self.extras.items()}
        return self

    @property
    def n_vertices(self) -> int:
        return int(self.mean_shape.shape[0])

    @property
    def n_id(self) -> int:
        return int(self.id_basis_t.shape[0])

    @property
    def n_exp(self) -> int:
        return int(self.exp_basis_t.shape[0])

    @property
    def n_tex(self) -> int:
        return 0 if self.tex_basis_t is None else int(self.tex_basis_t.shape[0])

    @property
    def n_triangles(self) -> int:
        return int(self.triangles.shape[0])

    @property
    def coeff_layout(self) -> tuple[tuple[str, int], ...]:
        return LAYOUTS[self.layout]

    @property
    def coeff_dim(self) -> int:
        return sum(d for _, d in self.coeff_layout)

    def __repr__(self) -> str:
        return (f"MorphableModel(source={self.source!r}, n_vertices={self.n_vertices}, n_id={self.n_id}, "
                f"n_exp={self.n_exp}, n_tex={self.n_tex}, n_triangles={self.n_triangles}, device={self.device})")

    # ------------------------------------------------------------------ coefficients
    def split_coeff(self, vec) -> dict:
        """Name every slice of a coefficient vector (D,) or batch (B, D) in this model's layout.

        numpy in → numpy out; torch in → torch views out.
        """
        layout = self.coeff_layout
        total = sum(d for _, d in layout)
        if vec.shape[-1] != total:
            raise ValueError(f"{self.layout} layout expects {total} coefficients "
                             f"({', '.join(f'{k} {d}' for k, d in layout)}), got {vec.shape[-1]}")
        out, start = {}, 0
        for name, d in layout:
            out[name] = vec[..., start:start + d]
            start += d
        return out

    # ------------------------------------------------------------------ geometry
    def shape(self, alpha=None, beta=None) -> torch.Tensor:
        """Vertices (B, N, 3) of S̄ + B_id α + B_exp β; α (B, n_id) or (n_id,), β (B, n_exp); None = zeros."""
        a = None if alpha is None else _batch(_as_tensor(alpha, self.device))
        b = None if beta is None else _batch(_as_tensor(beta, self.device))
        bsz = a.shape[0] if a is not None else (b.shape[0] if b is not None else 1)
        flat = self.mean_shape.reshape(1, -1).expand(bsz, -1)
        if a is not None:
            if a.shape[-1] != self.n_id:
                raise ValueError(f"alpha has {a.shape[-1]} entries, model has {self.n_id}")
            flat = flat + a @ self.id_basis_t
        if b is not None:
            if b.shape[-1] != self.n_exp:
                raise ValueError(f"beta has {b.shape[-1]} entries, model has {self.n_exp}")
            flat = flat + b @ self.exp_basis_t
        return flat.reshape(bsz, self.n_vertices, 3)

    def texture(self, delta=None, batch_size: int | None = None) -> torch.Tensor:
        """Albedo (B, N, 3), RGB in 0–1: (T̄ + B_tex δ)/255. Without a texture basis: constant ``GREY``."""
        d = None if delta is None else _batch(_as_tensor(delta, self.device))
        bsz = batch_size or (d.shape[0] if d is not None else 1)
        if self.tex_basis_t is None:
            if d is not None and d.shape[-1] != 0:
                raise ValueError(f"source {self.source!r} has no texture basis; pass delta=None")
            return torch.full((bsz, self.n_vertices, 3), GREY, device=self.device)
        flat = self.tex_mean.reshape(1, -1).expand(bsz, -1)
        if d is not None:
            if d.shape[-1] != self.n_tex:
                raise ValueError(f"delta has {d.shape[-1]} entries, model has {self.n_tex}")
            flat = flat + d @ self.tex_basis_t
        return (flat / 255.0).reshape(bsz, self.n_vertices, 3)

    def vertex_normals(self, verts) -> torch.Tensor:
        """Unit vertex normals (B, N, 3): sum of the unit normals (v1−v0)×(v2−v0) of the faces around each vertex
        (Deep3D's ``compute_norm``; via ``point_buf`` when the model has one). Zero for vertices in no face."""
        v = _batch(_as_tensor(verts, self.device))
        t = self.triangles
        v0, v1, v2 = v[:, t[:, 0]], v[:, t[:, 1]], v[:, t[:, 2]]
        fn = F.normalize(torch.cross(v1 - v0, v2 - v0, dim=-1), dim=-1, p=2)
        if self.point_buf is not None:
            fn = torch.cat([fn, torch.zeros_like(fn[:, :1])], dim=1)
            vn = fn[:, self.point_buf].sum(dim=2)
        else:
            vn = torch.zeros_like(v)
            for k in range(3):
                vn = vn.index_add(1, t[:, k], fn)
        return F.normalize(vn, dim=-1, p=2)

    def landmarks(self, verts) -> torch.Tensor:
        """The 68 keypoint vertices (B, 68, D) of vertices (B, N, D) (3-D or projected 2-D)."""
        return _batch(_as_tensor(verts, self.device))[:, self.keypoint_ids]

    # ------------------------------------------------------------------ cameras
    @staticmethod
    def rotation_from_angles(angles) -> torch.Tensor:
        """(B, 3) Euler angles x, y, z (radians) → (B, 3, 3) R = Rz·Ry·Rx acting on column vectors."""
        if isinstance(angles, torch.Tensor) and angles.is_floating_point():
            a = _batch(angles)  # keeps the caller's dtype and device
        else:
            a = _batch(torch.as_tensor(np.asarray(angles), dtype=torch.float32))
        x, y, z = a[:, 0], a[:, 1], a[:, 2]
        one, zero = torch.ones_like(x), torch.zeros_like(x)
        cx, sx, cy, sy, cz, sz = torch.cos(x), torch.sin(x), torch.cos(y), torch.sin(y), torch.cos(z), torch.sin(z)
        rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).reshape(-1, 3, 3)
        ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(-1, 3, 3)
        rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).reshape(-1, 3, 3)
        return rz @ ry @ rx

    def transform(self, verts, angles, translation) -> torch.Tensor:
        """Rigid motion of Deep3D: R(angles)·v + t, batched (B, N, 3)."""
        v = _batch(_as_tensor(verts, self.device))
        rot = self.rotation_from_angles(_as_tensor(angles, self.device))
        t = _batch(_as_tensor(translation, self.device))
        return v @ rot.transpose(1, 2) + t[:, None, :]

    @staticmethod
    def perspective_project(verts, focal: float = 1015.0, center: float = 112.0, camera_distance: float = 10.0,
                            image_size: int = 224, flip_y: bool = True) -> torch.Tensor:
        """Deep3D pinhole camera on already transformed vertices (B, N, 3) → pixel coordinates (B, N, 2).

        z_cam = camera_distance − z; u = focal·x/z_cam + center; v_up = focal·y/z_cam + center;
        with ``flip_y`` (default) the row coordinate is image_size − 1 − v_up (Deep3D's H − 1 − y).
        """
        v = verts if isinstance(verts, torch.Tensor) else torch.as_tensor(np.asarray(verts), dtype=torch.float32)
        v = _batch(v)
        zc = camera_distance - v[..., 2]
        u = focal * v[..., 0] / zc + center
        w = focal * v[..., 1] / zc + center
        if flip_y:
            w = (image_size - 1) - w
        return torch.stack([u, w], dim=-1)

    @staticmethod
    def ortho_project_3ddfa(verts, pose12, size: int = 120, roi_box=None) -> torch.Tensor:
        """3DDFA scaled-orthographic camera: p = sR·v + t with ``pose12`` = 3×4 [sR|t] row-major (B, 12).

        Returns (B, N, 3) in the size×size crop: x = p_x − 1, y = size − p_y (rows down), z = p_z − 1.
        With ``roi_box`` (B, 4) = (sx, sy, ex, ey) of the crop in the image, x/y are mapped into the image, z is
        scaled by the mean scale and shifted so that its minimum is 0 (3DDFA_V2 ``similar_transform``).
        """
        v = verts if isinstance(verts, torch.Tensor) else torch.as_tensor(np.asarray(verts), dtype=torch.float32)
        v = _batch(v)
        p = _batch(_as_tensor(pose12, v.device, v.dtype)).reshape(-1, 3, 4)
        pts = v @ p[:, :, :3].transpose(1, 2) + p[:, None, :, 3]
        x = pts[..., 0] - 1
        y = size - pts[..., 1]
        z = pts[..., 2] - 1
        if roi_box is not None:
            box = _batch(_as_tensor(roi_box, v.device, v.dtype))
            sc_x = (box[:, 2] - box[:, 0]) / size
            sc_y = (box[:, 3] - box[:, 1]) / size
            x = x * sc_x[:, None] + box[:, 0:1]
            y = y * sc_y[:, None] + box[:, 1:2]
            z = z * ((sc_x + sc_y) / 2)[:, None]
            z = z - z.min(dim=1, keepdim=True).values
        return torch.stack([x, y, z], dim=-1)

    # ------------------------------------------------------------------ sources
    @classmethod
    def from_3ddfa(cls, assets_dir=None, device: str | torch.device = "cpu") -> "MorphableModel":
        """3DDFA's BFM bases: 53215 vertices, α 40, β 10, no texture (see the module docstring)."""
        names = ("bfm_u_shp", "bfm_u_exp", "bfm_w_shp", "bfm_w_exp", "bfm_keypoints", "tri", "indices")
        p = {n: assets.resolve(n, assets_dir) for n in names}
        mean = np.load(p["bfm_u_shp"]).astype(np.float32) + np.load(p["bfm_u_exp"]).astype(np.float32)
        w_shp = np.load(p["bfm_w_shp"]).astype(np.float32)
        w_exp = np.load(p["bfm_w_exp"]).astype(np.float32)
        n = mean.size // 3
        kp_flat = np.load(p["bfm_keypoints"]).astype(np.int64).reshape(-1)
        if kp_flat.size != 204 or not (np.all(kp_flat[0::3] % 3 == 0) and np.all(kp_flat[1::3] == kp_flat[0::3] + 1)
                                      and np.all(kp_flat[2::3] == kp_flat[0::3] + 2)):
            raise ValueError(f"{p['bfm_keypoints']}: expected 68 interleaved xyz index triples")
        keypoints = kp_flat[0::3] // 3
        with open(p["tri"], "rb") as fh:
            tri = np.asarray(pickle.load(fh)).astype(np.int64)
        if tri.shape[0] == 3 and tri.shape[1] != 3:
            tri = tri.T
        noneck = np.load(p["indices"]).astype(np.int64).reshape(-1)
        if tri.min() != 0 or tri.max() >= noneck.size or noneck.max() >= n:
            raise ValueError("tri.pkl / indices.npy do not match the 53215-vertex bases (expected 0-based ids into "
                             f"the {noneck.size}-vertex no-neck mesh)")
        triangles = noneck[tri][:, [0, 2, 1]]  # map to 53215 ids; swap winding → outward right-hand normals
        prov = {k: assets.checksum(v) for k, v in p.items()}
        return cls(source="3ddfa", layout="3ddfa", mean_shape=mean, id_basis=w_shp, exp_basis=w_exp,
                   triangles=triangles, keypoint_ids=keypoints, units="BFM raw (3DDFA)",
                   extras={"noneck_ids": noneck}, provenance=prov, device=device)

    @classmethod
    def from_bfm09(cls, bfm09_mat=None, exp_pca_bin=None, aux_folder=None, cache=None, recenter: bool = True,
                   device: str | torch.device = "cpu") -> "MorphableModel":
        """The paper's 35709-vertex front model (see the module docstring).

        ``bfm09_mat`` / ``exp_pca_bin`` default to the assets ``bfm09`` / ``exp_pca``; the auxiliary Deep3D files
        are resolved from ``aux_folder`` (an asset root laid out as ``deep3d_bfm_aux/…``) or FACELIB_ASSETS.
        ``cache``: None → ``$FACELIB_CACHE/morphable/``; a folder; an ``.npz`` path; or False (no cache).
        ``model.cache_hit`` says whether the converted model came from the cache.
        """
        bfm09_mat = Path(bfm09_mat) if bfm09_mat else assets.resolve("bfm09")
        exp_pca_bin = Path(exp_pca_bin) if exp_pca_bin else assets.resolve("exp_pca")
        aux = {n: assets.resolve(n, aux_folder) for n in _AUX_NAMES}
        inputs = {"bfm09": bfm09_mat, "exp_pca": exp_pca_bin, **aux}
        prov = {k: assets.checksum(Path(v)) for k, v in inputs.items()}
        key = hashlib.sha256(json.dumps({"v": _CACHE_VERSION, **prov}, sort_keys=True).encode()).hexdigest()

        data, cache_path, hit = cached_arrays(cache, config.cache_dir() / "morphable", "bfm09_front", key,
                                              lambda: convert_bfm09(bfm09_mat, exp_pca_bin, aux))
        mean = data["meanshape"].reshape(-1, 3).astype(np.float32)
        if recenter:
            mean = mean - mean.mean(axis=0, keepdims=True)
        model = cls(source="bfm09_front", layout="deep3d", mean_shape=mean, id_basis=data["idBase"],
                    exp_basis=data["exBase"], tex_mean=data["meantex"], tex_basis=data["texBase"],
                    triangles=data["tri"], keypoint_ids=data["keypoints"], point_buf=data["point_buf"],
                    units="decimetre (BFM/1e5)", provenance=prov, device=device,
                    extras={"skinmask": data["skinmask"], "front_mask": data["frontmask2_idx"],
                            "front_triangles": data["tri_mask2"]})
        model.cache_path = cache_path
        model.cache_hit = hit
        model.recentered = recenter
        return model


# ---------------------------------------------------------------------- BFM09 conversion (numpy)
def read_exp_pca(path, n_vertices: int = N_VERTS_EXP) -> tuple[np.ndarray, np.ndarray]:
    """Guo et al.'s ``Exp_Pca.bin``: int32 k, float32 mean (3N), float32 k×(3N) components (little endian).

    Returns (mean (3N,), components (3N, k)), rows xyz-interleaved per vertex.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        k = int(np.fromfile(fh, dtype="<i4", count=1)[0])
        expected = 4 + 4 * 3 * n_vertices * (k + 1)
        if k <= 0 or size != expected:
            raise ValueError(f"{path}: not an Exp_Pca.bin for {n_vertices} vertices (k={k}, {size} bytes, "
                             f"expected {expected})")
        mean = np.fromfile(fh, dtype="<f4", count=3 * n_vertices)
        comps = np.fromfile(fh, dtype="<f4", count=3 * n_vertices * k).reshape(k, 3 * n_vertices)
    return mean, comps.T


def _rows(vertex_ids: np.ndarray) -> np.ndarray:
    """xyz-interleaved row numbers of vertex ids."""
    return (3 * vertex_ids[:, None] + np.arange(3)[None, :]).reshape(-1)


def convert_bfm09(bfm09_mat, exp_pca_bin, aux: dict) -> dict:
    """BFM09 + Guo expression basis → the 35709-vertex front model (arrays, 0-based indices, mean not recentred)."""
    bfm = loadmat(str(bfm09_mat), variable_names=["shapeMU", "shapePC", "shapeEV", "texMU", "texPC", "texEV"])
    missing = [k for k in ("shapeMU", "shapePC", "shapeEV", "texMU", "texPC", "texEV") if k not in bfm]
    if missing:
        raise ValueError(f"{bfm09_mat}: not a BFM 2009 01_MorphableModel.mat (missing {missing})")
    front = loadmat(str(aux["bfm_front_idx"]))["idx"].astype(np.int64).reshape(-1) - 1      # into 53215
    trim = loadmat(str(aux["bfm_exp_idx"]))["trimIndex"].astype(np.int64).reshape(-1) - 1    # 53215 → 53490
    shape_ids = trim[front]                                                                  # into 53490
    n09 = bfm["shapeMU"].size // 3
    if n09 != N_VERTS_BFM09 or shape_ids.max() >= n09:
        raise ValueError(f"{bfm09_mat}: expected {N_VERTS_BFM09} vertices, found {n09}")
    r09, rexp = _rows(shape_ids), _rows(front)

    def basis(pc, ev, k, scale):
        pc = np.asarray(pc)
        ev = np.asarray(ev, dtype=np.float64).reshape(-1)
        if pc.shape[1] < k or ev.size < k:
            raise ValueError(f"basis has {pc.shape[1]} components (eigenvalues {ev.size}); {k} needed")
        return (pc[r09 if pc.shape[0] == 3 * n09 else rexp, :k].astype(np.float64) * ev[:k] / scale).astype(np.float32)

    id_base = basis(bfm["shapePC"], bfm["shapeEV"], 80, 1e5)
    tex_base = basis(bfm["texPC"], bfm["texEV"], 80, 1.0)
    _, exp_pc = read_exp_pca(exp_pca_bin)
    std_exp = np.loadtxt(str(aux["std_exp"]), dtype=np.float64).reshape(-1)
    if std_exp.size != exp_pc.shape[1]:
        raise ValueError(f"std_exp.txt has {std_exp.size} values, Exp_Pca.bin {exp_pc.shape[1]} components")
    exp_base = basis(exp_pc, std_exp, 64, 1e5)
    meanshape = (bfm["shapeMU"].reshape(-1)[r09].astype(np.float64) / 1e5).astype(np.float32)
    meantex = bfm["texMU"].reshape(-1)[r09].astype(np.float32)

    info = loadmat(str(aux["facemodel_info"]))
    return {
        "meanshape": meanshape, "meantex": meantex, "idBase": id_base, "exBase": exp_base, "texBase": tex_base,
        "tri": info["tri"].astype(np.int64) - 1,
        "point_buf": info["point_buf"].astype(np.int64) - 1,  # value n_triangles pads (zero face)
        "keypoints": info["keypoints"].astype(np.int64).reshape(-1) - 1,
        "tri_mask2": info["tri_mask2"].astype(np.int64) - 1,
        "frontmask2_idx": info["frontmask2_idx"].astype(np.int64).reshape(-1) - 1,
        "skinmask": info["skinmask"].astype(np.float32).reshape(-1),
    }


def load_lm3d_std(assets_dir=None) -> np.ndarray:
    """Deep3D's standard 3-D landmarks reduced to 5 points (left eye, right eye, nose, left/right mouth) (5, 3)."""
    lm = loadmat(str(assets.resolve("lm3d_std", assets_dir)))["lm"].astype(np.float64)
    return five_points(lm)


def five_points(lm68) -> np.ndarray:
    """68 points (..., 68, D) → 5 (..., 5, D): left eye = mean of 37, 40; right eye = mean of 43, 46; nose 31;
    mouth corners 49, 55 (1-based iBUG numbering), in that order (Deep3D ``extract_5p``)."""
    lm = np.asarray(lm68, dtype=np.float64)
    if lm.ndim < 2 or lm.shape[-2] != 68:
        raise ValueError(f"expected (..., 68, D) landmarks, got {lm.shape}")
    return np.stack([lm[..., [36, 39], :].mean(-2), lm[..., [42, 45], :].mean(-2), lm[..., 30, :],
                     lm[..., 48, :], lm[..., 54, :]], axis=-2)
