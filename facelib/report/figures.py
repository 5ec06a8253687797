"""Figures for looking at data and coefficients (report tables and their plots live in ``tables.py``)."""
from __future__ import annotations


import cv2
import numpy as np
import pandas as pd

from ..io import read_image, save_figure


def _save(fig, out):
    if out:
        save_figure(fig, out, dpi=110, bbox_inches="tight")
    return fig


def image_grid(manifest: pd.DataFrame, rows: str | None = "expression", cols: str | None = "angle",
               subject: str | None = None, ncols: int = 6, thumb: int = 110, out=None):
    """Thumbnails: one person's pictures as an expression × angle grid, or simply the first images in a grid."""
    import matplotlib.pyplot as plt

    df = manifest if subject is None else manifest[manifest["subject"] == subject]
    if rows and cols:
        row_keys = [k for k in ("AF", "AN", "DI", "HA", "NE", "SA", "SU") if k in set(df[rows])] or \
            sorted(df[rows].dropna().unique())
        col_keys = [k for k in ("FL", "HL", "S", "HR", "FR") if k in set(df[cols])] or \
            sorted(df[cols].dropna().unique())
        cells = [[df[(df[rows] == r) & (df[cols] == c)] for c in col_keys] for r in row_keys]
    else:
        items = [df.iloc[[i]] for i in range(len(df))]
        cells = [items[i:i + ncols] for i in range(0, len(items), ncols)]
        row_keys, col_keys = [""] * len(cells), [""] * ncols
    fig, axes = plt.subplots(len(cells), len(col_keys), figsize=(1.3 * len(col_keys), 1.6 * len(cells)),
                             squeeze=False)
    for r, row in enumerate(cells):
        for c in range(len(col_keys)):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(row) and len(row[c]):
                img = read_image(row[c]["path"].iloc[0])
                if img is not None:
                    h, w = img.shape[:2]
                    img = cv2.resize(img, (thumb, int(thumb * h / w)), interpolation=cv2.INTER_AREA)
                    ax.imshow(img[:, :, ::-1])
                if not rows:
                    ax.set_title(row[c]["image_id"].iloc[0], fontsize=7)
            else:
                ax.axis("off")
            if r == 0 and col_keys[c]:
                ax.set_title(col_keys[c], fontsize=9)
        if row_keys[r]:
            axes[r, 0].set_ylabel(row_keys[r], fontsize=9)
    if subject:
        fig.suptitle(f"subject {subject}", fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


def embedding_plot(vectors: np.ndarray, labels: pd.Series, title: str, out=None, ax=None):
    """2-D PCA projection of coefficient vectors coloured by a label (standardised first, as the classifiers are)."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    xy = PCA(n_components=2, random_state=0).fit_transform(StandardScaler().fit_transform(vectors))
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4.5))
    else:
        fig = ax.figure
    labels = pd.Series(labels).astype(str).to_numpy()
    order = sorted(set(labels))
    sns.scatterplot(x=xy[:, 0], y=xy[:, 1], hue=labels, hue_order=order, s=14, ax=ax, legend=len(order) <= 20,
                    palette="tab20" if len(order) > 10 else "tab10")
    ax.set(title=title, xlabel="PC 1", ylabel="PC 2")
    if len(order) <= 20:
        ax.legend(fontsize=6, ncol=2, loc="best", markerscale=0.8)
    return _save(fig, out)
