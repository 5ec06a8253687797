"""Figures of the ICT model: its 68 landmark vertices, mean expression-shape activation per KDEF expression, and
fitted ICT meshes rendered over the pictures (all five angles). Each returns a matplotlib figure and saves it with
:func:`facelib.io.save_figure` when ``out`` is given."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from ..face3d.cameras import crop_box
from ..face3d.ict import facs_name
from ..face3d.morphable import MorphableModel
from ..face3d.reconstruct import read_image
from ..fitting.render import render, tddfa_screen
from ..io import save_figure
from ..vocab import ANGLES, EXPRESSIONS


def _save(fig, out):
    if out:
        save_figure(fig, out, dpi=110, bbox_inches="tight")
    return fig


def _face_triangles(model: MorphableModel) -> torch.Tensor:
    ids = model.extras.get("noneck_ids")
    keep = torch.ones(model.n_vertices, dtype=torch.bool) if ids is None else torch.zeros(model.n_vertices,
                                                                                            dtype=torch.bool)
    if ids is not None:
        keep[ids.cpu()] = True
    t = model.triangles.cpu()
    return t[keep[t].all(1)]


def _shade(model: MorphableModel, verts: torch.Tensor, rot: torch.Tensor | None = None) -> torch.Tensor:
    """Grey Lambert shading (B, N, 3) from a light at the viewer: 0.25 + 0.7·max(n_z, 0) of the posed normals."""
    n = model.vertex_normals(verts if rot is None else verts @ rot.transpose(1, 2))
    return (0.25 + 0.7 * n[..., 2:3].clamp(min=0)).expand(-1, -1, 3)


def landmark_figure(model: MorphableModel, size: int = 640, out=None):
    """The neutral face area, frontal orthographic view, with the 68 landmark vertices numbered (0-based).
    Returns (figure, landmarks (68, 2) in the image's pixels)."""
    v = model.shape().cpu()
    tri = _face_triangles(model)
    face = v[0, torch.unique(tri)]
    lo, hi = face.min(0).values, face.max(0).values
    scale = 0.9 * size / float(max(hi[0] - lo[0], hi[1] - lo[1]))
    c = (lo + hi) / 2
    scr = torch.stack([(v[..., 0] - c[0]) * scale + size / 2, size / 2 - (v[..., 1] - c[1]) * scale, -v[..., 2]], -1)
    img = render(scr, tri, _shade(model, v), size, size, background=1.0).image[0].permute(1, 2, 0).numpy()
    pts = scr[0, model.keypoint_ids.cpu(), :2].numpy()
    fig, ax = plt.subplots(figsize=(7, 7))
    ax.imshow(np.clip(img, 0, 1))
    ax.scatter(pts[:, 0], pts[:, 1], s=10, c="red")
    for i, (x, y) in enumerate(pts):
        ax.annotate(str(i), (x, y), xytext=(3, -3), textcoords="offset points", fontsize=6, color="blue")
    ax.set_title(f"ICT neutral face, 68 landmark vertices ({model.provenance.get('jaw', '')} jaw)", fontsize=9)
    ax.axis("off")
    return _save(fig, out), pts


def expression_activation(table: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """Mean β (expression weight) of each shape per KDEF expression: (7, n_exp), rows AF…SU, columns ``names``."""
    ok = table[table["status"] == "ok"].dropna(subset=["beta"])
    B = np.stack([np.asarray(b, np.float32) for b in ok["beta"]])
    df = pd.DataFrame(B, columns=names)
    df["expression"] = ok["expression"].to_numpy()
    return df.groupby("expression").mean().reindex([e for e in EXPRESSIONS if e in set(df["expression"])])


def expression_heatmap(table: pd.DataFrame, names: list[str], out=None, title: str | None = None):
    """7 × 53 heatmap of :func:`expression_activation`, columns labelled with the shapes' FACS units."""
    act = expression_activation(table, names)
    fig, ax = plt.subplots(figsize=(16, 4.2))
    im = ax.imshow(act.to_numpy(), aspect="auto", cmap="magma", vmin=0, vmax=max(float(act.to_numpy().max()), 1e-6))
    ax.set_yticks(range(len(act)), act.index)
    ax.set_xticks(range(len(names)), [facs_name(n) for n in names], rotation=90, fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01, label="mean weight")
    ax.set_title(title or f"ICT expression weights: mean per KDEF expression ({len(table)} rows)", fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


def overlay_figure(table: pd.DataFrame, model: MorphableModel, picks: list[tuple[str, str]] | None = None,
                   alpha: float = 0.55, out=None):
    """Fitted ICT meshes (grey shaded, 55 % opacity) over the pictures: one row per (subject, expression) in
    ``picks`` (default: the first subject with HA, SU, AN), one column per angle FL HL S HR FR; the fitted 68
    landmarks in red."""
    ok = table[(table["status"] == "ok") & table["alpha"].notna()]
    if picks is None:
        subj = sorted(ok["subject"].unique())[0]
        picks = [(subj, e) for e in ("HA", "SU", "AN")]
    tri = _face_triangles(model)
    fig, axes = plt.subplots(len(picks), len(ANGLES), figsize=(2.4 * len(ANGLES), 2.9 * len(picks)), squeeze=False)
    for r, (subj, expr) in enumerate(picks):
        for c, ang in enumerate(ANGLES):
            ax = axes[r, c]
            ax.axis("off")
            rows = ok[(ok["subject"] == subj) & (ok["expression"] == expr) & (ok["angle"] == ang)]
            if not len(rows):
                continue
            row = rows.iloc[0]
            img = read_image(row["path"])[:, :, ::-1].astype(np.float32) / 255.0
            H, W = img.shape[:2]
            roi = np.asarray(crop_box(np.asarray(row["box"], np.float32)), np.float32)
            with torch.no_grad():
                v = model.shape(np.asarray(row["alpha"], np.float32), np.asarray(row["beta"], np.float32))
                pose = torch.as_tensor(np.asarray(row["pose"], np.float32)).reshape(1, 3, 4)
                scr = tddfa_screen(v, pose.reshape(1, 12), roi_box=torch.as_tensor(roi)[None])
                out_r = render(scr, tri, _shade(model, v, pose[:, :, :3]), H, W)
            m = out_r.mask[0, 0].numpy()[..., None] * alpha
            comp = img * (1 - m) + out_r.image[0].permute(1, 2, 0).numpy() * m
            x0, y0, x1, y1 = [int(round(t)) for t in roi]
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
            ax.imshow(np.clip(comp[y0:y1, x0:x1], 0, 1))
            lm = np.asarray(row["landmarks"], np.float32)
            ax.scatter(lm[:68] - x0, lm[68:] - y0, s=2, c="red")
            ax.set_title(f"{row['image_id']}", fontsize=7)
    fig.tight_layout()
    return _save(fig, out)
