"""Differentiable mesh rasteriser in pure PyTorch, spherical-harmonics shading, and screen-space cameras.

Conventions
-----------
Screen space (input of :func:`rasterize` / :func:`render`)
    ``verts`` (B, N, 3): ``x`` = column, ``y`` = row, in pixels of an H×W image, **pixel (row i, column j) has its
    centre at (x = j, y = i)** (OpenCV / landmark-array convention, rows grow downwards). ``z`` is a depth where
    **smaller = closer** to the camera; any monotone depth works (camera-space distance for a perspective camera,
    −z for an orthographic camera looking down −z). A pixel is covered by a triangle when its centre lies inside
    or on the triangle (no top-left rule: a centre exactly on a shared edge is claimed by both triangles and the
    depth test picks one). Both windings are rasterised (no back-face culling; the depth test hides the back).

Algorithm (no custom kernels, device-agnostic, batched)
    1. *Candidates* (no grad): for every triangle, the integer pixel centres inside its bounding box (clipped to
       the image) are enumerated with ``repeat_interleave`` — at 224² most face triangles have 0 or 1 candidate,
       so this is a short list (≈ covered pixels × ~2). Very many candidates (exploding vertices) are processed in
       chunks of at most ``max_candidates``.
    2. *Inside test* with edge functions evaluated on each triangle's vertices sorted by vertex id, so the two
       triangles sharing an edge evaluate that edge with bit-identical arithmetic (no cracks between triangles).
    3. *Z-buffer* (no grad): depth at the pixel centre (screen-linear barycentric interpolation of ``z``) is
       packed with the triangle id into one int64 key (order-preserving float bits in the high word) and reduced
       per pixel with ``scatter_reduce(amin)``. Ties go to the smaller triangle id (deterministic).
    4. *Differentiable pass*: for the visible triangle at each covered pixel the barycentrics are recomputed from
       ``verts`` WITH autograd, so images are differentiable w.r.t. vertex positions (through the barycentrics,
       i.e. interior/shading gradients as nvdiffrast's ``rasterize``+``interpolate`` without ``antialias``; there
       is no gradient for the silhouette moving across pixels) and w.r.t. vertex attributes.

``perspective_correct=True`` treats ``z`` as the camera-space depth w and uses perspective-correct barycentrics
(b_i/w_i normalised). For 224² faces (triangles < 1 px) the difference is negligible; the default is screen-linear.

Deep3D vs nvdiffrast half pixel: :func:`deep3d_screen` uses ``MorphableModel.perspective_project`` (x = u,
y = 223 − v_up, the convention of Deep3D's landmarks). Deep3D's nvdiffrast renderer puts the centre of pixel
(i, j) at u = j + 0.5, v_up = 223.5 − i, i.e. its rendered image is shifted by half a pixel against its own
landmarks; ours is aligned with the landmarks.

Shading
    :func:`sh_shading` is Deep3D's (``bfm.py`` ``compute_color``) Lambertian 3-band (9 coefficients per colour
    channel) spherical-harmonics model. ``gamma`` (B, 27) is laid out channel-major (R0..R8, G0..G8, B0..B8)
    and, as in Deep3D, ``init_lit`` = 0.8 is **added** to the DC coefficient of every channel before shading, so
    γ = 0 means uniform ambient light of irradiance 0.8·π·(1/(2√π)) ≈ 0.709 (colour = 0.709 × albedo).
    The basis is the real SH Y_lm (Condon–Shortley signs) times Deep3D's per-band factors a = (π, 2π/√3, 2π/√8);
    Ramamoorthi–Hanrahan's Lambertian factors are (π, 2π/3, π/4). The difference is a fixed per-band rescaling of
    γ; we keep Deep3D's so that its γ (R-Net outputs, checkpoints) mean the same here. Normals are not flipped
    or clamped (no shadowing), as in Deep3D.

Cameras
    :func:`deep3d_screen` and :func:`tddfa_screen` wrap ``facelib.face3d.morphable``'s projections
    (``perspective_project``, ``ortho_project_3ddfa``) and add the depth channel the rasteriser needs.
    ``perspective_correct=True`` needs depths > 0 (camera-space distance), as :func:`deep3d_screen` returns.

Length (~410 lines, ~50 of them this docstring): the rasteriser, interpolation, SH shading and the two
camera wrappers form one differentiable pipeline.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..face3d.morphable import MorphableModel

__all__ = [
    "Fragments", "RenderOutput", "rasterize", "interpolate", "render", "sh_basis", "sh_shading",
    "SH_A", "SH_C", "INIT_LIT", "deep3d_screen", "tddfa_screen", "DEEP3D_CAMERA", "barycentric",
]

_INT64_MAX = torch.iinfo(torch.int64).max
_LOW32 = 0xFFFFFFFF
# rasterize(zbuffer="auto") by device type: MPS has no int64 scatter-min, so it takes the float z-buffer
AUTO_ZBUFFER = {"mps": "float"}


@dataclass
class Fragments:
    """Per-pixel rasterisation result.

    tri_id: (B, H, W) int64, index into ``faces`` of the visible triangle, −1 where empty.
    bary:   (B, 3, H, W) barycentric weights of ``faces[tri_id]``'s three vertices (0 where empty), differentiable.
    depth:  (B, 1, H, W) interpolated ``z`` of the visible surface (0 where empty), differentiable.
    mask:   (B, 1, H, W) float 1/0 coverage (not differentiable).
    pix:    (P,) flat index b·H·W + i·W + j of the covered pixels; ``vidx`` (P, 3) their triangles' vertex ids
            offset by b·N into the flattened (B·N) vertex array; ``w`` (P, 3) their barycentrics (differentiable).
    """

    tri_id: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor
    mask: torch.Tensor
    pix: torch.Tensor
    vidx: torch.Tensor
    w: torch.Tensor

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.tri_id.shape)  # type: ignore[return-value]


@dataclass
class RenderOutput:
    image: torch.Tensor  # (B, C, H, W) interpolated attributes (``background`` where empty)
    mask: torch.Tensor   # (B, 1, H, W)
    depth: torch.Tensor  # (B, 1, H, W)
    tri_id: torch.Tensor  # (B, H, W)
    bary: torch.Tensor   # (B, 3, H, W)
    fragments: Fragments


def _float_key(z: torch.Tensor) -> torch.Tensor:
    """Order-preserving map float32 → int64 (signed int32 range): a < b ⇔ key(a) < key(b)."""
    i = z.contiguous().view(torch.int32).to(torch.int64)
    return torch.where(i < 0, i ^ 0x7FFFFFFF, i)


def _candidates(x0, y0, xs, ys, W, H, max_candidates):
    """Yield (tri, px, py) chunks of integer pixel centres inside each triangle's clipped bounding box.

    x0/y0/xs/ys: (T,) int64 bbox origin and size (size 0 = no candidate). Chunks hold ≤ max_candidates entries
    (a single triangle larger than that is still yielded whole).
    """
    counts = xs * ys
    nz = torch.nonzero(counts > 0).squeeze(1)
    if nz.numel() == 0:
        return
    counts = counts[nz]
    csum = torch.cumsum(counts, 0)
    total = int(csum[-1])
    bounds = [0]
    if total > max_candidates:  # split the triangle list where the running count crosses multiples of the limit
        marks = torch.arange(max_candidates, total, max_candidates, device=csum.device)
        cut = torch.searchsorted(csum, marks, right=True).tolist()
        for c in cut:
            if bounds[-1] < c < nz.numel():
                bounds.append(c)
    bounds.append(nz.numel())
    for a, b in zip(bounds[:-1], bounds[1:]):
        tri = nz[a:b]
        cnt = counts[a:b]
        start = csum[a:b] - cnt
        n = int(csum[b - 1] - (csum[a - 1] if a > 0 else 0))
        rep = torch.repeat_interleave(torch.arange(b - a, device=cnt.device), cnt, output_size=n)
        off = torch.arange(n, device=cnt.device) + (csum[a - 1] if a > 0 else 0) - start[rep]
        t = tri[rep]
        w = xs[t]
        yield t, x0[t] + off % w, y0[t] + torch.div(off, w, rounding_mode="floor")


_FACE_CACHE: list = []  # [(faces tensor, version, B, N, result)], a few recent entries


def _sorted_face_index(faces: torch.Tensor, B: int, N: int) -> torch.Tensor:
    """(3, B·F) vertex ids (offset by b·N) of every triangle with its vertices sorted by id, vertex-major.

    Cached for the last few ``faces`` tensors (held by reference, keyed by identity and in-place version).
    """
    for entry in _FACE_CACHE:
        if entry[0] is faces and entry[1] == faces._version and entry[2] == B and entry[3] == N:
            return entry[4]
    sf = torch.sort(faces, dim=1).values.t()                              # (3, F)
    if B > 1:
        sf = (sf.unsqueeze(1) + (torch.arange(B, device=faces.device) * N).view(1, B, 1)).reshape(3, -1)
    sf = sf.contiguous()
    _FACE_CACHE.insert(0, (faces, faces._version, B, N, sf))
    del _FACE_CACHE[4:]
    return sf


def barycentric(p, px, py):
    """Barycentrics (P, 3) of pixel centres (px, py) in triangles p (P, 3 vertices, 2+) — differentiable."""
    x0, y0 = p[:, 0, 0], p[:, 0, 1]
    x1, y1 = p[:, 1, 0], p[:, 1, 1]
    x2, y2 = p[:, 2, 0], p[:, 2, 1]
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    e0 = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)
    e1 = (x0 - x2) * (py - y2) - (y0 - y2) * (px - x2)
    e2 = (x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)
    return torch.stack([e0, e1, e2], dim=1) / area.unsqueeze(1)


def rasterize(verts: torch.Tensor, faces: torch.Tensor, height: int, width: int, *,
              perspective_correct: bool = False, max_candidates: int = 4_000_000,
              eps_area: float = 1e-12, zbuffer: str = "auto") -> Fragments:
    """Rasterise triangles ``faces`` (F, 3) int64 of screen-space ``verts`` (B, N, 3) into an H×W image.

    See the module docstring for the coordinate and depth conventions. Returns :class:`Fragments`.
    ``zbuffer``: ``"packed"`` (one int64 ``scatter_reduce(amin)`` of depth bits ‖ triangle id), ``"float"`` (two
    float32 ``scatter_reduce(amin)`` passes: depth, then triangle id among the nearest — for backends without
    int64 scatter-min, e.g. MPS) or ``"auto"`` (:data:`AUTO_ZBUFFER`: float on MPS, packed elsewhere). Both give the
    same result.
    """
    if verts.dim() == 2:
        verts = verts.unsqueeze(0)
    B, N, _ = verts.shape
    H, W = int(height), int(width)
    dev = verts.device
    faces = faces.to(device=dev, dtype=torch.int64)
    F = faces.shape[0]
    HW = H * W
    if F >= 2 ** 31 // max(B, 1):
        raise ValueError("too many triangles for the packed z-buffer")

    with torch.no_grad():
        v = verts.detach().float().reshape(B * N, 3)
        bad = ~torch.isfinite(v).all(dim=1)
        if bool(bad.any()):  # non-finite vertices: their triangles are dropped below
            v = torch.where(bad.unsqueeze(1), torch.zeros_like(v), v)
        vt = v.t().contiguous()                                        # (3, B·N): x, y, z rows
        fidx = _sorted_face_index(faces, B, N)                         # (3, B·F) vertex-major, sorted per face
        X = vt[0].index_select(0, fidx.reshape(-1)).view(3, B * F)
        Y = vt[1].index_select(0, fidx.reshape(-1)).view(3, B * F)
        xmin = torch.ceil(torch.minimum(torch.minimum(X[0], X[1]), X[2])).clamp_(0, W)
        xmax = torch.floor(torch.maximum(torch.maximum(X[0], X[1]), X[2])).clamp_(-1, W - 1)
        ymin = torch.ceil(torch.minimum(torch.minimum(Y[0], Y[1]), Y[2])).clamp_(0, H)
        ymax = torch.floor(torch.maximum(torch.maximum(Y[0], Y[1]), Y[2])).clamp_(-1, H - 1)
        bw = (xmax - xmin + 1).clamp_(min=0).to(torch.int64)
        bh = (ymax - ymin + 1).clamp_(min=0).to(torch.int64)
        if bool(bad.any()):
            fbad = bad.index_select(0, fidx.reshape(-1)).view(3, B * F).any(dim=0)
            bw = torch.where(fbad, torch.zeros_like(bw), bw)
        # only triangles with candidate pixels go on (≈ 1/4 of a 224² face mesh)
        live = torch.nonzero((bw * bh) > 0).squeeze(1)
        zbuf = torch.full((B * HW,), _INT64_MAX, dtype=torch.int64, device=dev)
        if zbuffer == "auto":
            zbuffer = AUTO_ZBUFFER.get(dev.type, "packed")
        if zbuffer not in ("packed", "float"):
            raise ValueError(f"zbuffer must be 'auto', 'packed' or 'float', got {zbuffer!r}")
        packed = zbuffer == "packed"
        if not packed and B * F >= 2 ** 24:
            raise ValueError("zbuffer='float' supports fewer than 2**24 triangles per call")
        fz_pix, fz_depth, fz_tri = [], [], []
        if live.numel():
            fl = fidx.index_select(1, live)                            # (3, T)
            lx = vt[0].index_select(0, fl.reshape(-1)).view(3, -1)
            ly = vt[1].index_select(0, fl.reshape(-1)).view(3, -1)
            lz = vt[2].index_select(0, fl.reshape(-1)).view(3, -1)
            area = (lx[1] - lx[0]) * (ly[2] - ly[0]) - (lx[2] - lx[0]) * (ly[1] - ly[0])
            keep = (area > eps_area) | (area < -eps_area)
            sgn = torch.sign(area)
            cnt_w = torch.where(keep, bw.index_select(0, live), torch.zeros_like(live))
            cnt_h = bh.index_select(0, live)
            x0i = xmin.index_select(0, live).to(torch.int64)
            y0i = ymin.index_select(0, live).to(torch.int64)
            for t, px, py in _candidates(x0i, y0i, cnt_w, cnt_h, W, H, max_candidates):
                x0, x1, x2 = (lx[k].index_select(0, t) for k in range(3))
                y0, y1, y2 = (ly[k].index_select(0, t) for k in range(3))
                fx, fy = px.to(x0.dtype), py.to(x0.dtype)
                # canonical edges (a < b by vertex id): e01, e12, e02; inside ⇔ e12, −e02, e01 share area's sign
                e01 = (x1 - x0) * (fy - y0) - (y1 - y0) * (fx - x0)
                e12 = (x2 - x1) * (fy - y1) - (y2 - y1) * (fx - x1)
                e02 = (x2 - x0) * (fy - y0) - (y2 - y0) * (fx - x0)
                s = sgn.index_select(0, t)
                inside = (e12 * s >= 0) & (e02 * s <= 0) & (e01 * s >= 0)
                sel = torch.nonzero(inside).squeeze(1)
                if sel.numel() == 0:
                    continue
                t, px, py = t[sel], px[sel], py[sel]
                a = area.index_select(0, t)
                b0 = e12.index_select(0, sel) / a
                b1 = -e02.index_select(0, sel) / a
                b2 = e01.index_select(0, sel) / a
                z0, z1, z2 = (lz[k].index_select(0, t) for k in range(3))
                if perspective_correct:
                    depth = 1.0 / (b0 / z0 + b1 / z1 + b2 / z2)
                else:
                    depth = b0 * z0 + b1 * z1 + b2 * z2
                tg = live.index_select(0, t)                           # global triangle id b·F + f
                b_idx = torch.div(tg, F, rounding_mode="floor") if B > 1 else torch.zeros_like(tg)
                pix = b_idx * HW + py * W + px
                if packed:
                    key = (_float_key(depth) << 32) | (tg - b_idx * F)
                    zbuf.scatter_reduce_(0, pix, key, reduce="amin", include_self=True)
                else:
                    fz_pix.append(pix)
                    fz_depth.append(depth)
                    fz_tri.append(tg - b_idx * F)

        if not packed and fz_pix:  # float z-buffer: nearest depth per pixel, then the smallest id among ties
            pix_all, depth_all, tri_all = torch.cat(fz_pix), torch.cat(fz_depth), torch.cat(fz_tri)
            zmin = torch.full((B * HW,), float("inf"), device=dev)
            zmin.scatter_reduce_(0, pix_all, depth_all, reduce="amin", include_self=True)
            win = torch.nonzero(depth_all <= zmin.index_select(0, pix_all)).squeeze(1)
            tmin = torch.full((B * HW,), float(2 ** 24), device=dev)  # float ids: exact below 2^24
            tmin.scatter_reduce_(0, pix_all[win], tri_all[win].float(), reduce="amin", include_self=True)
            hit = tmin < 2 ** 24
            zbuf = torch.where(hit, tmin.to(torch.int64), zbuf)

        covered = zbuf != _INT64_MAX
        pix = torch.nonzero(covered).squeeze(1)
        tri_local = (zbuf.index_select(0, pix) & _LOW32)
        b_of_pix = torch.div(pix, HW, rounding_mode="floor")
        vidx = faces.index_select(0, tri_local) + (b_of_pix * N).unsqueeze(1)  # (P, 3), original winding
        rem = pix - b_of_pix * HW
        py = torch.div(rem, W, rounding_mode="floor")
        px = rem - py * W

    # differentiable pass on the visible triangles only
    pv = verts.reshape(B * N, 3).index_select(0, vidx.reshape(-1)).reshape(-1, 3, 3)
    w = barycentric(pv, px.to(pv.dtype), py.to(pv.dtype))
    z = pv[..., 2]
    if perspective_correct:
        wz = w / z
        zinv = wz.sum(1, keepdim=True)
        w = wz / zinv
        depth = 1.0 / zinv.squeeze(1)
    else:
        depth = (w * z).sum(1)

    tri_id = torch.full((B * HW,), -1, dtype=torch.int64, device=dev)
    tri_id[pix] = tri_local
    bary_img = verts.new_zeros(B * HW, 3).index_copy(0, pix, w)
    depth_img = verts.new_zeros(B * HW).index_copy(0, pix, depth)
    mask = covered.to(verts.dtype)
    return Fragments(
        tri_id=tri_id.view(B, H, W),
        bary=bary_img.view(B, H, W, 3).permute(0, 3, 1, 2),
        depth=depth_img.view(B, 1, H, W),
        mask=mask.view(B, 1, H, W),
        pix=pix, vidx=vidx, w=w,
    )


def interpolate(attrs: torch.Tensor, frags: Fragments, background: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Per-vertex attributes (B, N, C) → image (B, C, H, W) by the fragments' barycentrics (differentiable)."""
    if attrs.dim() == 2:
        attrs = attrs.unsqueeze(0)
    B, H, W = frags.tri_id.shape
    if attrs.shape[0] == 1 and B > 1:
        attrs = attrs.expand(B, -1, -1)
    C = attrs.shape[-1]
    a = attrs.reshape(-1, C).index_select(0, frags.vidx.reshape(-1)).reshape(-1, 3, C)
    vals = (a * frags.w.to(a.dtype).unsqueeze(2)).sum(1)
    if isinstance(background, torch.Tensor) or background != 0.0:
        bg = torch.as_tensor(background, dtype=vals.dtype, device=vals.device).expand(C)
        img = bg.expand(B * H * W, C).clone()
    else:
        img = vals.new_zeros(B * H * W, C)
    img = img.index_copy(0, frags.pix, vals)
    return img.view(B, H, W, C).permute(0, 3, 1, 2)


def render(verts: torch.Tensor, faces: torch.Tensor, attrs: torch.Tensor | None, height: int, width: int, *,
           perspective_correct: bool = False, background: float | torch.Tensor = 0.0,
           zbuffer: str = "auto") -> RenderOutput:
    """Rasterise and interpolate: returns image (B, C, H, W) (None-attrs → C = 0), mask, depth, tri_id, bary."""
    frags = rasterize(verts, faces, height, width, perspective_correct=perspective_correct, zbuffer=zbuffer)
    if attrs is None:
        image = verts.new_zeros(frags.tri_id.shape[0], 0, height, width)
    else:
        image = interpolate(attrs, frags, background)
    return RenderOutput(image=image, mask=frags.mask, depth=frags.depth, tri_id=frags.tri_id, bary=frags.bary,
                        fragments=frags)


# ---------------------------------------------------------------------------------------------- SH shading
SH_A = (math.pi, 2.0 * math.pi / math.sqrt(3.0), 2.0 * math.pi / math.sqrt(8.0))
SH_C = (1.0 / math.sqrt(4.0 * math.pi), math.sqrt(3.0) / math.sqrt(4.0 * math.pi),
        3.0 * math.sqrt(5.0) / math.sqrt(12.0 * math.pi))
INIT_LIT = 0.8


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """Deep3D's 9 SH basis values (already multiplied by the Lambertian a_k and normalisation c_k): (…, 3) → (…, 9).

    Order (n = (x, y, z)): a0c0, −a1c1·y, a1c1·z, −a1c1·x, a2c2·xy, −a2c2·yz, a2c2/(2√3)·(3z²−1), −a2c2·xz,
    a2c2/2·(x²−y²).
    """
    a, c = SH_A, SH_C
    x, y, z = normals[..., 0], normals[..., 1], normals[..., 2]
    k1, k2 = a[1] * c[1], a[2] * c[2]
    return torch.stack([
        torch.full_like(x, a[0] * c[0]),
        -k1 * y, k1 * z, -k1 * x,
        k2 * x * y, -k2 * y * z, 0.5 * k2 / math.sqrt(3.0) * (3.0 * z * z - 1.0), -k2 * x * z,
        0.5 * k2 * (x * x - y * y),
    ], dim=-1)


def sh_shading(normals: torch.Tensor, albedo: torch.Tensor, gamma: torch.Tensor, init_lit: float = INIT_LIT,
               return_irradiance: bool = False):
    """Colour (B, N, 3) = albedo ⊙ irradiance(normal; γ), Deep3D's ``compute_color``.

    normals (B, N, 3) unit, in camera/world orientation (rotated with the face); albedo (B, N, 3) RGB 0–1;
    gamma (B, 27) channel-major [R 9 | G 9 | B 9]; ``init_lit`` (0.8) is added to each channel's first (DC)
    coefficient. With ``return_irradiance`` also returns the (B, N, 3) irradiance.
    """
    g = gamma.reshape(gamma.shape[0], 3, 9).to(normals.dtype)
    g = g + g.new_tensor([init_lit] + [0.0] * 8)
    Y = sh_basis(normals)                               # (B, N, 9)
    irr = torch.einsum("bnk,bck->bnc", Y, g)            # (B, N, 3)
    colour = irr * albedo
    return (colour, irr) if return_irradiance else colour


# ---------------------------------------------------------------------------------------------- cameras
DEEP3D_CAMERA = {"focal": 1015.0, "center": 112.0, "camera_distance": 10.0, "image_size": 224}


def deep3d_screen(verts: torch.Tensor, focal: float = 1015.0, center: float = 112.0, camera_distance: float = 10.0,
                  image_size: int = 224) -> torch.Tensor:
    """Deep3D perspective camera → screen vertices (B, N, 3) for :func:`rasterize`.

    ``verts`` are already rotated + translated (``MorphableModel.transform``). x, y from
    ``MorphableModel.perspective_project`` (x = u, y = image_size − 1 − v_up); z = camera-space depth
    camera_distance − z (smaller = closer). Use ``perspective_correct=True`` for exact perspective interpolation.
    """
    v = verts.unsqueeze(0) if verts.dim() == 2 else verts
    xy = MorphableModel.perspective_project(v, focal=focal, center=center, camera_distance=camera_distance,
                                            image_size=image_size, flip_y=True)
    return torch.cat([xy, (camera_distance - v[..., 2]).unsqueeze(-1)], dim=-1)


def tddfa_screen(verts: torch.Tensor, pose12: torch.Tensor, size: int = 120, roi_box=None) -> torch.Tensor:
    """3DDFA scaled-orthographic camera (sR·v + t, crop size×size, y flipped; ``roi_box`` maps into the image)
    → screen vertices (B, N, 3) for :func:`rasterize` with depth = −z (3DDFA's z grows towards the viewer)."""
    p = MorphableModel.ortho_project_3ddfa(verts, pose12, size=size, roi_box=roi_box)
    return torch.cat([p[..., :2], -p[..., 2:3]], dim=-1)
