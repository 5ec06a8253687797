"""facelib.fitting.render: coverage, depth test, gradients vs finite differences, SH shading, real BFM meshes."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from facelib.fitting import render as R


def _tri_area(p):
    (x0, y0), (x1, y1), (x2, y2) = p
    return 0.5 * abs((x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0))


def _count_inside(p, H, W):
    """Brute force: integer pixel centres inside (or on) triangle p."""
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    (x0, y0), (x1, y1), (x2, y2) = p

    def e(ax, ay, bx, by):
        return (bx - ax) * (ys - ay) - (by - ay) * (xs - ax)

    a, b, c = e(x1, y1, x2, y2), e(x2, y2, x0, y0), e(x0, y0, x1, y1)
    return ((a >= 0) & (b >= 0) & (c >= 0)) | ((a <= 0) & (b <= 0) & (c <= 0))


def _grid_mesh(n, lo, hi, jitter=0.0, seed=0, z=5.0):
    g = torch.Generator().manual_seed(seed)
    s = torch.linspace(lo, hi, n, dtype=torch.float64)
    yy, xx = torch.meshgrid(s, s, indexing="ij")
    step = (hi - lo) / (n - 1)
    inner = torch.zeros(n, n, dtype=torch.bool)
    inner[1:-1, 1:-1] = True
    jx = (torch.rand(n, n, generator=g, dtype=torch.float64) - 0.5) * jitter * step * inner
    jy = (torch.rand(n, n, generator=g, dtype=torch.float64) - 0.5) * jitter * step * inner
    v = torch.stack([xx + jx, yy + jy, torch.full_like(xx, z)], -1).reshape(-1, 3)
    idx = torch.arange(n * n).reshape(n, n)
    a, b = idx[:-1, :-1].reshape(-1), idx[:-1, 1:].reshape(-1)
    c, d = idx[1:, :-1].reshape(-1), idx[1:, 1:].reshape(-1)
    f = torch.cat([torch.stack([a, b, c], 1), torch.stack([b, d, c], 1)])
    return v, f


# ---------------------------------------------------------------------------------------------- coverage
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_triangle_coverage_matches_area_and_brute_force(seed):
    rng = np.random.default_rng(seed)
    H = W = 128
    p = rng.uniform(5, 123, size=(3, 2))
    v = torch.tensor(np.c_[p, np.ones(3)], dtype=torch.float32)[None]
    out = R.render(v, torch.tensor([[0, 1, 2]]), torch.ones(1, 3, 1), H, W)
    n = out.mask.sum().item()
    area = _tri_area(p)
    perim = sum(np.hypot(*(p[i] - p[(i + 1) % 3])) for i in range(3))
    assert abs(n - area) <= 0.5 * perim + 2, (n, area)
    assert abs(n - area) / area < 0.05
    brute = _count_inside(p, H, W)
    assert np.array_equal(out.mask[0, 0].numpy().astype(bool), brute)
    assert torch.allclose(out.image, out.mask, atol=1e-5)  # constant attribute 1 → image == mask


def test_shared_edges_leave_no_cracks_and_no_double_cover():
    # jittered grid on [10.5, 90.5]²: exactly the 80×80 pixel centres 11..90 are inside the outer square
    v, f = _grid_mesh(41, 10.5, 90.5, jitter=0.8, seed=3)
    frags = R.rasterize(v[None].float(), f, 100, 100)
    m = frags.mask[0, 0]
    assert m.sum().item() == 80 * 80
    assert m[11:91, 11:91].all()
    ids = frags.tri_id[0][m.bool()]
    assert (ids >= 0).all() and (ids < f.shape[0]).all()
    # barycentrics of covered pixels are a partition of unity and non-negative
    b = frags.bary[0].permute(1, 2, 0)[m.bool()]
    assert torch.allclose(b.sum(-1), torch.ones(len(b)), atol=1e-5)
    assert (b > -1e-4).all()


def test_depth_test_nearer_triangle_occludes_farther_either_order():
    near = [[20.0, 20.0, 2.0], [60.0, 20.0, 2.0], [20.0, 60.0, 2.0]]
    far = [[10.0, 10.0, 5.0], [70.0, 10.0, 5.0], [10.0, 70.0, 5.0]]
    for verts, faces, near_id in (
            (near + far, [[0, 1, 2], [3, 4, 5]], 0),
            (far + near, [[0, 1, 2], [3, 4, 5]], 1)):
        v = torch.tensor(verts)[None]
        col = torch.zeros(1, 6, 1)
        col[0, 3 * near_id:3 * near_id + 3] = 1.0  # near triangle white, far black
        out = R.render(v, torch.tensor(faces), col, 80, 80)
        assert out.image[0, 0, 30, 30] == 1.0 and out.tri_id[0, 30, 30] == near_id
        assert out.image[0, 0, 65, 12] == 0.0 and out.tri_id[0, 65, 12] == 1 - near_id
        assert abs(out.depth[0, 0, 30, 30].item() - 2.0) < 1e-5
    # a z-tilted far triangle pierced by the near one: the smaller z wins per pixel
    tilt = torch.tensor([[[10.0, 10.0, 0.0], [70.0, 10.0, 8.0], [10.0, 70.0, 0.0],
                          [10.0, 10.0, 4.0], [70.0, 10.0, 4.0], [10.0, 70.0, 4.0]]])
    out = R.render(tilt, torch.tensor([[0, 1, 2], [3, 4, 5]]), None, 80, 80)
    assert out.tri_id[0, 30, 15] == 0 and out.tri_id[0, 15, 50] == 1  # x < 40 → z < 4 → tilted wins


def test_batch_equals_individual_renders_and_chunking_is_invisible():
    v, f = _grid_mesh(15, 5.3, 58.7, jitter=0.6, seed=1)
    v = v.float()
    v2 = v.clone()
    v2[:, :2] = 64 - v2[:, :2] * 0.8
    col = torch.rand(2, v.shape[0], 3, generator=torch.Generator().manual_seed(0))
    batch = R.render(torch.stack([v, v2]), f, col, 64, 64)
    for i, vv in enumerate((v, v2)):
        single = R.render(vv[None], f, col[i:i + 1], 64, 64)
        assert torch.equal(single.tri_id[0], batch.tri_id[i])
        assert torch.allclose(single.image[0], batch.image[i], atol=1e-6)
    chunked = R.rasterize(torch.stack([v, v2]), f, 64, 64, max_candidates=50)
    assert torch.equal(chunked.tri_id, batch.tri_id)


def test_offscreen_and_degenerate_triangles_are_ignored():
    v = torch.tensor([[[-50.0, -50.0, 1.0], [-10.0, -50.0, 1.0], [-50.0, -10.0, 1.0],   # off screen
                       [5.0, 5.0, 1.0], [20.0, 20.0, 1.0], [35.0, 35.0, 1.0],         # zero area
                       [2.0, 2.0, 1.0], [300.0, 2.0, 1.0], [2.0, 300.0, 1.0]]])       # clipped by the image
    out = R.render(v, torch.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]]), torch.ones(1, 9, 1), 32, 32)
    assert set(out.tri_id.unique().tolist()) <= {-1, 2}
    assert out.mask[0, 0, 2:, 2:].all()


def test_perspective_correct_interpolation():
    # a triangle with depths 1 and 4: perspective-correct barycentrics = (b_i / z_i) normalised
    v = torch.tensor([[[0.0, 0.0, 1.0], [40.0, 0.0, 4.0], [0.0, 40.0, 1.0]]])
    attr = torch.tensor([[[0.0], [1.0], [0.0]]])
    lin = R.render(v, torch.tensor([[0, 1, 2]]), attr, 48, 48)
    per = R.render(v, torch.tensor([[0, 1, 2]]), attr, 48, 48, perspective_correct=True)
    b1 = 20.0 / 40.0  # pixel (x=20, y=10): screen barycentrics b = (0.25, 0.5, 0.25)
    assert abs(lin.image[0, 0, 10, 20].item() - b1) < 1e-5
    expect = (0.5 / 4) / (0.25 / 1 + 0.5 / 4 + 0.25 / 1)
    assert abs(per.image[0, 0, 10, 20].item() - expect) < 1e-5
    assert abs(per.depth[0, 0, 10, 20].item() - 1 / (0.25 + 0.125 + 0.25)) < 1e-5


# ---------------------------------------------------------------------------------------------- gradients
def _fd_setup():
    v, f = _grid_mesh(4, 3.3, 26.9, jitter=0.5, seed=5)
    v[:, 2] = 3.0 + 0.1 * torch.arange(v.shape[0], dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    col = torch.rand(1, v.shape[0], 3, generator=g, dtype=torch.float64)
    wimg = torch.rand(1, 3, 32, 32, generator=g, dtype=torch.float64)
    return v[None], f, col, wimg


def test_gradients_match_finite_differences_position_and_colour():
    v, f, col, wimg = _fd_setup()

    def loss(vv, cc):
        out = R.render(vv, f, cc, 32, 32)
        return (out.image * wimg).sum() + 0.1 * (out.depth * wimg[:, :1]).sum(), out.mask

    vv = v.clone().requires_grad_(True)
    cc = col.clone().requires_grad_(True)
    L, mask0 = loss(vv, cc)
    L.backward()
    eps = 1e-4
    vid = 5  # an interior vertex of the 4×4 grid
    for k in range(3):  # x, y and z of the vertex
        vp, vm = v.clone(), v.clone()
        vp[0, vid, k] += eps
        vm[0, vid, k] -= eps
        Lp, mp = loss(vp, col)
        Lm, mm = loss(vm, col)
        assert torch.equal(mp, mask0) and torch.equal(mm, mask0)  # coverage unchanged: FD is the smooth part
        fd = (Lp - Lm).item() / (2 * eps)
        assert vv.grad[0, vid, k].item() == pytest.approx(fd, rel=1e-4, abs=1e-6)
    assert vv.grad[0, vid, :2].abs().sum() > 0
    for c in range(3):
        cp, cm = col.clone(), col.clone()
        cp[0, vid, c] += eps
        cm[0, vid, c] -= eps
        fd = (loss(v, cp)[0] - loss(v, cm)[0]).item() / (2 * eps)
        assert cc.grad[0, vid, c].item() == pytest.approx(fd, rel=1e-6, abs=1e-8)


def test_float32_backward_runs_and_background_has_no_gradient():
    v, f, col, _ = _fd_setup()
    vv = v.float().requires_grad_(True)
    cc = col.float().requires_grad_(True)
    out = R.render(vv, f, cc, 32, 32, background=0.5)
    assert torch.all(out.image[0, :, 0, 0] == 0.5)  # (0,0) is outside the grid [3.3, 26.9]²
    out.image.sum().backward()
    assert torch.isfinite(vv.grad).all() and torch.isfinite(cc.grad).all()


# ---------------------------------------------------------------------------------------------- shading
def _sh_numpy(n, albedo, gamma, init_lit=0.8):
    """Independent evaluation: real SH Y_lm (Condon–Shortley phase, standard table constants) times Deep3D's
    per-band Lambertian factors (π, 2π/√3, 2π/√8); γ channel-major with +0.8 on each DC coefficient."""
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    Y = np.stack([
        0.28209479 * np.ones_like(x),
        -0.48860251 * y, 0.48860251 * z, -0.48860251 * x,
        1.09254843 * x * y, -1.09254843 * y * z, 0.31539157 * (3 * z * z - 1), -1.09254843 * x * z,
        0.54627422 * (x * x - y * y),
    ], -1)
    band = np.array([np.pi] + [2 * np.pi / np.sqrt(3)] * 3 + [2 * np.pi / np.sqrt(8)] * 5)
    g = gamma.reshape(-1, 3, 9).copy()
    g[:, :, 0] += init_lit
    irr = np.einsum("bnk,bck->bnc", Y * band, g)
    return irr * albedo


def test_sh_shading_matches_numpy_reference():
    rng = np.random.default_rng(0)
    n = rng.normal(size=(2, 50, 3))
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    albedo = rng.uniform(0, 1, size=(2, 50, 3))
    gamma = rng.normal(scale=0.3, size=(2, 27))
    got = R.sh_shading(torch.tensor(n), torch.tensor(albedo), torch.tensor(gamma)).numpy()
    np.testing.assert_allclose(got, _sh_numpy(n, albedo, gamma), rtol=1e-6, atol=1e-8)
    # γ = 0: uniform ambient 0.8·π·Y00 = 0.8·√π/2 ≈ 0.709 times albedo
    amb = R.sh_shading(torch.tensor(n), torch.tensor(albedo), torch.zeros(2, 27))
    np.testing.assert_allclose(amb.numpy(), 0.8 * math.sqrt(math.pi) / 2 * albedo, rtol=1e-6)


# ---------------------------------------------------------------------------------------------- real meshes
@pytest.fixture(scope="module")
def bfm(assets_dir):
    try:
        from facelib.face3d.morphable import MorphableModel
    except ImportError as exc:  # pragma: no cover
        pytest.skip(f"facelib.face3d.morphable not importable: {exc}")
    try:
        return MorphableModel.from_3ddfa(assets_dir)
    except (FileNotFoundError, KeyError) as exc:
        pytest.skip(f"3DDFA BFM assets missing: {exc}")


def test_mean_face_3ddfa_silhouette_and_landmarks(bfm):
    mean = bfm.shape()                                       # (1, 53215, 3), BFM raw units
    ext = (mean.amax(1) - mean.amin(1))[0]
    s = 100.0 / float(ext[1])                                # ~100 px tall face in the 120 crop
    centre = (mean.amax(1) + mean.amin(1))[0] / 2
    pose = torch.zeros(3, 4)
    pose[:, :3] = s * torch.eye(3)
    pose[:, 3] = torch.tensor([61.0, 61.0, 0.0]) - s * centre  # crop x = p_x − 1, y = 120 − p_y
    screen = R.tddfa_screen(mean, pose.reshape(1, 12), size=120)
    normals = bfm.vertex_normals(mean)
    col = R.sh_shading(normals, bfm.texture(), torch.zeros(1, 27))
    out = R.render(screen, bfm.triangles, col, 120, 120)
    m = out.mask[0, 0].bool()
    used = torch.unique(bfm.triangles)
    xy = screen[0, used, :2]
    rows, cols = torch.nonzero(m, as_tuple=True)
    # silhouette bounding box = bounding box of the projected mesh, within a pixel
    assert abs(cols.min().item() - xy[:, 0].min().item()) <= 1.0
    assert abs(cols.max().item() - xy[:, 0].max().item()) <= 1.0
    assert abs(rows.min().item() - xy[:, 1].min().item()) <= 1.0
    assert abs(rows.max().item() - xy[:, 1].max().item()) <= 1.0
    assert m.sum() > 0.5 * (cols.max() - cols.min()) * (rows.max() - rows.min())  # a filled face, no holes
    # the 68 projected landmarks: inner ones (brows, nose, eyes, mouth) on the silhouette; nose tip in front
    lm = bfm.landmarks(screen)[0]
    ij = lm[17:, :2].round().long()
    assert m[ij[:, 1], ij[:, 0]].float().mean() > 0.95
    assert (lm[:, 0] >= cols.min() - 1).all() and (lm[:, 0] <= cols.max() + 1).all()
    nose = lm[30]
    d = out.depth[0, 0, int(nose[1].round()), int(nose[0].round())]
    assert d <= out.depth[0, 0][m].quantile(0.02) + 1.0  # among the nearest 2 % (depth = −z)
    # frontal, default light: the mean normal-facing colour is the ambient 0.709·grey or brighter
    assert out.image[0, :, m].mean() > 0.3


def test_deep3d_camera_renders_front_face(bfm):
    mean = bfm.shape()[0]
    v = (mean - mean.mean(0)) / 1e5                          # BFM µm-ish → decimetres, recentred as Deep3D
    screen = R.deep3d_screen(v[None])
    frags = R.rasterize(screen, bfm.triangles, 224, 224)
    m = frags.mask[0, 0].bool()
    lm = bfm.landmarks(screen)[0]
    ij = lm[17:, :2].round().long()
    assert m[ij[:, 1], ij[:, 0]].all()
    zmin = frags.depth[0, 0][m].min().item()
    assert 8.0 < zmin < 10.0  # camera at 10 dm, the nose ~1.3 dm in front of the centre
    # chin below nose below brows (rows grow downwards)
    assert lm[8, 1] > lm[30, 1] > lm[19, 1]


def test_float_zbuffer_matches_packed():
    v, f = _grid_mesh(21, 4.2, 59.9, jitter=0.7, seed=7)
    v = v.float()
    v[:, 2] = torch.rand(v.shape[0], generator=torch.Generator().manual_seed(2)) + 3.0
    # a second, folded layer on top of the first: overlapping triangles at various depths
    v2 = v.clone()
    v2[:, 0] = 64 - v2[:, 0]
    v2[:, 2] = 3.5
    verts = torch.cat([v, v2])[None]
    faces = torch.cat([f, f + v.shape[0]])
    a = R.rasterize(verts, faces, 64, 64, zbuffer="packed")
    b = R.rasterize(verts, faces, 64, 64, zbuffer="float")
    assert torch.equal(a.tri_id, b.tri_id) and torch.equal(a.mask, b.mask)
    assert torch.allclose(a.depth, b.depth)
    with pytest.raises(ValueError):
        R.rasterize(verts, faces, 64, 64, zbuffer="nope")


def test_photometric_fit_recovers_a_shift():
    """Gradients are useful: recover a sub-pixel 2-D shift of a smoothly coloured mesh from the image alone."""
    from facelib.fitting.losses import photometric_loss

    v, f = _grid_mesh(17, 8.0, 56.0, seed=0)
    v = v.float()
    col = torch.stack([0.5 + 0.4 * torch.sin(v[:, 0] / 6), 0.5 + 0.4 * torch.cos(v[:, 1] / 5),
                       0.5 + 0.2 * torch.sin((v[:, 0] + v[:, 1]) / 9)], -1)[None]
    true = torch.tensor([1.3, -0.8])
    target = R.render((v + torch.cat([true, torch.zeros(1)]))[None], f, col, 64, 64)
    shift = torch.zeros(2, requires_grad=True)
    opt = torch.optim.Adam([shift], lr=0.1)
    for _ in range(80):
        opt.zero_grad()
        out = R.render((v + torch.cat([shift, torch.zeros(1)]))[None], f, col, 64, 64)
        loss = photometric_loss(out.image, target.image, out.mask * target.mask)
        loss.backward()
        opt.step()
    assert torch.allclose(shift.detach(), true, atol=0.1), shift
