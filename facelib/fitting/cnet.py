"""C-Net (Deng et al. 2019, section 5.1): element-wise confidences that aggregate a set of pictures' α into one.

:class:`CNet` is a light network on R-Net's last feature map (it reuses R-Net's features, as the paper does): a
1×1 convolution to 64 channels, ReLU, a 3×3 convolution, ReLU, global average pooling and a linear layer to one
value per α element; confidence c = softplus(·) + 1e-3 > 0. The last layer starts at zero, so an untrained C-Net
gives equal confidences (the plain mean). α_agg = Σ cᵢ ⊙ αᵢ ⊘ Σ cᵢ (:func:`aggregate_torch`).

C-Net is trained by :func:`facelib.fitting.rnet_train.train_cnet`; its confidences are the ``confidence`` column of
a cross-fitted table (:mod:`facelib.fitting.crossfit`), which the ``cnet`` aggregator of
:mod:`facelib.classify.aggregate` uses.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.labels import has_values
from ..io import save_figure
from ..vocab import ANGLES

MIN_CONFIDENCE = 1e-3


class CNet(nn.Module):
    """(B, C, h, w) R-Net feature maps → (B, n_alpha) positive confidences."""

    def __init__(self, in_channels: int, n_alpha: int, hidden: int = 64):
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, hidden, 1)
        self.conv = nn.Conv2d(hidden, hidden, 3, padding=1)
        self.out = nn.Linear(hidden, n_alpha)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.in_channels, self.n_alpha, self.hidden = int(in_channels), int(n_alpha), int(hidden)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.reduce(features))
        x = F.relu(self.conv(x))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return F.softplus(self.out(x)) + MIN_CONFIDENCE


def aggregate_torch(alpha: torch.Tensor, conf: torch.Tensor) -> torch.Tensor:
    """α_agg = Σ cᵢ ⊙ αᵢ ⊘ Σ cᵢ over the set axis: (S, k, d), (S, k, d) → (S, d), differentiable in both."""
    if alpha.shape != conf.shape:
        raise ValueError(f"confidences {tuple(conf.shape)} must match α {tuple(alpha.shape)}")
    return (conf * alpha).sum(1) / conf.sum(1)


@torch.inference_mode()
def confidences(cnet: CNet, features: np.ndarray, batch_size: int = 256, device: str = "cpu") -> np.ndarray:
    """(n, C, h, w) feature maps → (n, n_alpha) confidences (numpy)."""
    cnet.eval().to(device)
    out = [cnet(torch.as_tensor(np.asarray(features[i:i + batch_size], np.float32)).to(device))
           .cpu().numpy() for i in range(0, len(features), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, cnet.n_alpha), np.float32)


def confidence_by_angle(df):
    """Mean confidence per α element for each head-angle group (``angle`` column, KDEF), normalised per picture
    by the picture's mean confidence: a (groups × d) table for :func:`confidence_figure`. A dataset without
    angles (your own folder) gives one group, ``all``."""
    C = np.stack([np.asarray(v, np.float64) for v in df["confidence"]])
    C = C / C.mean(axis=1, keepdims=True)
    frame = pd.DataFrame(C, index=angle_groups(df))
    order = [a for a in ANGLES if a in set(frame.index)] or sorted(set(frame.index))
    return frame.groupby(level=0).mean().reindex(order)


def angle_groups(df) -> np.ndarray:
    """Each row's head-angle group: its ``angle``, or ``all`` for a dataset without angles."""
    if not has_values(df, "angle"):
        return np.full(len(df), "all")
    return df["angle"].fillna("?").astype(str).to_numpy()


def confidence_figure(df, out=None):
    """Heat map: mean relative C-Net confidence per α element (columns) against head angle (rows)."""
    tab = confidence_by_angle(df)
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.2), gridspec_kw={"width_ratios": [3, 1]})
    im = axes[0].imshow(tab.to_numpy(), aspect="auto", cmap="viridis")
    axes[0].set_yticks(range(len(tab)), tab.index)
    axes[0].set_xlabel("α element")
    axes[0].set_title("C-Net confidence / picture mean, by head angle")
    fig.colorbar(im, ax=axes[0])
    raw = np.stack([np.asarray(v, np.float64) for v in df["confidence"]]).mean(1)
    groups = pd_groups(angle_groups(df), raw, list(tab.index))
    axes[1].bar(range(len(groups)), [g.mean() for g in groups], yerr=[g.std() for g in groups])
    axes[1].set_xticks(range(len(groups)), list(tab.index))
    axes[1].set_title("mean confidence per picture")
    fig.tight_layout()
    if out is not None:
        save_figure(fig, out, dpi=110)
    return fig


def pd_groups(labels: np.ndarray, values: np.ndarray, order: list) -> list[np.ndarray]:
    return [values[labels == g] for g in order]
