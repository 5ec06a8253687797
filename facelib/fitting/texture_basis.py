"""Learning the texture basis from photographs (steps 1–4 of :mod:`facelib.fitting.texture`): fit the frontal
images, sample and de-light their albedo (:func:`sample_albedo`), keep the well-fitted ones and PCA them
(:func:`build_from_table`)."""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import assets
from ..face3d.cameras import crop_box, crop_rgb, crop_to_image, image_to_crop, landmarks_136_to_68
from ..face3d.reconstruct import read_image
from .fitter import Fitter
from .render import rasterize, sh_shading
from .skin import skin_model_for_table
from .texture import MAX_K, bilinear, build_texture_basis, save_texture_basis


@torch.no_grad()
def sample_albedo(fitter, result, images_bgr: list[np.ndarray], rois, min_facing: float = 0.2,
                  depth_tol: float = 1.0) -> np.ndarray:
    """Per-vertex albedo (B, N, 3) (N = the full model's vertices, RGB 0–1, NaN where unobserved) of fitted
    images; ``result`` is a full-mode :class:`facelib.fitting.fitter.FitResult` of ``fitter`` for these images/rois."""
    dev = fitter.device
    f32 = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float32, device=dev)  # noqa: E731
    alpha, beta = f32(result.alpha), f32(result.beta)
    pose = f32(result.pose).reshape(-1, 3, 4)
    rois_t = f32(rois).reshape(-1, 4)
    mesh = fitter.mesh
    p = fitter.posed(mesh, alpha, beta, pose)
    scr = fitter.screen(p, rois_t)
    S = fitter.image_size
    frags = rasterize(scr, mesh.triangles, S, S)
    normals = mesh.vertex_normals(p - pose[:, None, :, 3])
    _, irr = sh_shading(normals, torch.ones_like(normals), f32(result.gamma), return_irradiance=True)
    B, N = scr.shape[:2]
    # visibility: facing the camera and not behind the z-buffer at the vertex's pixel
    xi = scr[..., 0].round().long().clamp(0, S - 1)
    yi = scr[..., 1].round().long().clamp(0, S - 1)
    zbuf = frags.depth[:, 0]
    cov = frags.mask[:, 0] > 0
    bidx = torch.arange(B, device=dev)[:, None].expand(B, N)
    zv = zbuf[bidx, yi, xi]
    # screen depth is -p_z in 120-crop units; depth_tol is in crop pixels of the size-S grid
    tol = depth_tol * 120.0 / S
    inside = (scr[..., 0] >= 0) & (scr[..., 0] <= S - 1) & (scr[..., 1] >= 0) & (scr[..., 1] <= S - 1)
    visible = inside & cov[bidx, yi, xi] & (scr[..., 2] <= zv + tol) & (normals[..., 2] > min_facing)
    xy_img = crop_to_image(scr[..., :2].cpu().numpy(), np.asarray(rois, np.float64), S)
    irr_np = irr.clamp_min(0.05).cpu().numpy()
    vis = visible.cpu().numpy()
    out = np.full((B, fitter.model.n_vertices, 3), np.nan, np.float32)
    parent = mesh.extras["parent_ids"].cpu().numpy()
    for b in range(B):
        rgb = np.ascontiguousarray(images_bgr[b][:, :, ::-1]).astype(np.float32) / 255.0
        col = bilinear(rgb, xy_img[b])
        alb = col / irr_np[b]
        alb[~vis[b]] = np.nan
        out[b, parent] = alb
    return out



def build_from_table(coeff_table: pd.DataFrame, out=None, angle: str | None = "S", max_images: int | None = None,
                     k: int = MAX_K, iterations: int = 40, batch_size: int = 8, image_size: int = 160,
                     keep_quantile: float = 0.8, device: str | None = None, assets_dir=None, skin_model=None,
                     progress: bool = True, return_albedos: bool = False, fitter=None):
    """Fit the ``angle`` rows (ok) of a tddfa coefficient table (full mode, grey albedo + gain), sample and de-light
    their albedo, keep the well-fitted ones and PCA them. Returns the basis dict (saved to ``out`` when given);
    with ``return_albedos`` also the (n, N, 3) albedos used. ``fitter``: a :class:`facelib.fitting.fitter.Fitter`
    of another model whose coefficients the table holds (e.g. the ICT model and an ``ict`` table); default: the
    3DDFA BFM."""
    rows = coeff_table[coeff_table["status"] == "ok"]
    if angle is not None and "angle" in rows.columns:
        rows = rows[rows["angle"] == angle]
    rows = rows.drop_duplicates("sha256")
    if max_images is not None:
        rows = rows.iloc[:max_images]
    if len(rows) < 2:
        raise ValueError("need at least 2 ok images to build a texture basis")
    own_model = fitter is None
    if own_model:
        if skin_model is None:
            skin_model = skin_model_for_table(coeff_table)
        fitter = Fitter(device=device, assets_dir=assets_dir, skin_model=skin_model or None,
                        image_size=image_size)
    image_size = fitter.image_size
    albedos, photo, ids = [], [], []
    bar = tqdm(total=len(rows), desc="texture basis", disable=not progress, unit="img")
    for start in range(0, len(rows), batch_size):
        r = rows.iloc[start:start + batch_size]
        imgs = [read_image(p) for p in r["path"]]
        rois = np.stack([crop_box(b) for b in r["box"]])
        lm = np.stack([landmarks_136_to_68(v) for v in r["landmarks"]])
        init = {c: np.stack([np.asarray(v, np.float32) for v in r[c]]) for c in ("alpha", "beta", "pose")}
        crops = np.stack([crop_rgb(im, ro, image_size) for im, ro in zip(imgs, rois)])
        res = fitter.fit(init, rois, image_to_crop(lm, rois, image_size), crops, mode="full",
                         iterations=iterations)
        alb = sample_albedo(fitter, res, imgs, rois)
        albedos.append(alb)  # colour / irradiance: the fitted grey×gain albedo is not used, only the light
        photo.append(res.terms_last["photo"])
        ids.extend(r["sha256"].astype(str))
        bar.update(len(r))
    bar.close()
    albedos = np.concatenate(albedos)
    photo = np.concatenate(photo)
    keep = photo <= np.quantile(photo, keep_quantile) if len(photo) > 2 else np.ones(len(photo), bool)
    prov = {"images": int(keep.sum()), "candidates": int(len(photo)), "angle": angle,
            "sha256_images": hashlib.sha256("".join(sorted(np.asarray(ids)[keep])).encode()).hexdigest(),
            "image_ids": [str(x) for x in rows["image_id"].to_numpy()[keep]] if "image_id" in rows else [],
            "fit": {"iterations": iterations, "image_size": image_size, "mode": "full", "albedo": "grey+gain"},
            "keep_quantile": keep_quantile, "photo_threshold": float(np.quantile(photo, keep_quantile)),
            "assets": {n: assets.checksum(assets.resolve(n, assets_dir))
                       for n in ("bfm_u_shp", "bfm_w_shp", "bfm_w_exp", "tri", "indices")} if own_model
            else {"model": fitter.model.source, **{k: str(v) for k, v in fitter.model.provenance.items()}}}
    basis = build_texture_basis(albedos[keep], k=k, provenance=prov)
    if out is not None:
        save_texture_basis(out, basis)
    return (basis, albedos[keep]) if return_albedos else basis

