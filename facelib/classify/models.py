"""Classifiers: ResNet-34 over a coefficient vector (1-D), ResNet-34 over images, scikit-learn baselines.

The paper feeds the 80-d identity vector α (or the 64-d expression vector β) to "a ResNet-34". A ResNet-34 is a
2-D image network; the paper does not say how the vector was fed to it. Our adaptation, :class:`ResNet34Vector`,
keeps ResNet-34's structure and swaps every 2-D operation for its 1-D counterpart over the coefficient axis:

* input ``(B, d)`` is viewed as a one-channel signal ``(B, 1, d)``;
* the stem is ``Conv1d(1, 64, k=3, stride=1, pad=1) → BN → ReLU`` *without* the 7×7/stride-2 convolution and the
  max-pool of the image network, so a 10-d (3DDFA β) or 80-d (paper α) vector keeps its length through the stem;
* four stages of BasicBlocks, 3-4-6-3 blocks (16 in all), widths 64-128-256-512, each block two
  ``Conv1d(k=3)`` + BN with an identity (or 1×1 conv + BN, stride 2, on stage changes) shortcut — exactly
  torchvision's ``resnet34`` layout with 1-D kernels of size 3 in place of 3×3 (so each 3×3 convolution has a
  third of the weights of its 2-D twin; the channel plan and the depth — 33 weighted layers on the main path +
  3 shortcut convolutions + fc — are the same);
* stages 2–4 halve the length (stride 2), as in the image network: 80 → 80, 40, 20, 10; 10 → 10, 5, 3, 2;
* adaptive average pool over the remaining length, then ``Linear(512, n_classes)``.

Coefficients differ in scale by orders of magnitude (leading PCA components dominate), so the training code
standardises every coefficient on the training data before the network sees it (see ``facelib.classify.trainer``).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC
from torch import nn

RESNET34_LAYERS = (3, 4, 6, 3)
RESNET34_WIDTHS = (64, 128, 256, 512)


class BasicBlock1d(nn.Module):
    """ResNet BasicBlock with 1-D convolutions (k=3)."""

    expansion = 1

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv1d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm1d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv1d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm1d(out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv1d(in_ch, out_ch, 1, stride=stride, bias=False),
                                            nn.BatchNorm1d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet34Vector(nn.Module):
    """ResNet-34 adapted to a 1-D coefficient vector (see the module docstring for the adaptation).

    ``forward`` takes ``(B, in_dim)`` (or ``(B, 1, in_dim)``) and returns logits ``(B, n_classes)``.
    """

    def __init__(self, in_dim: int, n_classes: int, layers=RESNET34_LAYERS, widths=RESNET34_WIDTHS,
                 zero_init_residual: bool = True):
        super().__init__()
        if in_dim < 1 or n_classes < 2:
            raise ValueError(f"need in_dim >= 1 and n_classes >= 2, got {in_dim}, {n_classes}")
        self.in_dim, self.n_classes = int(in_dim), int(n_classes)
        self.stem = nn.Sequential(nn.Conv1d(1, widths[0], 3, stride=1, padding=1, bias=False),
                                  nn.BatchNorm1d(widths[0]), nn.ReLU(inplace=True))
        stages, in_ch = [], widths[0]
        for i, (n_blocks, width) in enumerate(zip(layers, widths)):
            blocks = []
            for j in range(n_blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock1d(in_ch, width, stride))
                in_ch = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(in_ch, n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv1d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm1d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:  # as torchvision's option: each block starts as the identity
            for m in self.modules():
                if isinstance(m, BasicBlock1d):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            x = x.unsqueeze(1)
        if x.dim() != 3 or x.shape[1] != 1:
            raise ValueError(f"expected (B, d) or (B, 1, d), got {tuple(x.shape)}")
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class MLPVector(nn.Module):
    """A small MLP over the coefficient vector: a cheap reference next to the 1-D ResNet."""

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 256, dropout: float = 0.2):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                 nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden),
                                 nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


def count_basic_blocks(model: nn.Module) -> int:
    """Number of residual BasicBlocks (1-D ours or torchvision's 2-D)."""
    from torchvision.models.resnet import BasicBlock  # torchvision (seconds to import): image models only

    return sum(isinstance(m, (BasicBlock1d, BasicBlock)) for m in model.modules())


def conv_plan(model: nn.Module) -> list[tuple[int, int, int]]:
    """(in_channels, out_channels, stride) of every convolution, in module order: compares the two ResNet-34s."""
    out = []
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            stride = m.stride[0] if isinstance(m.stride, tuple) else m.stride
            out.append((m.in_channels, m.out_channels, int(stride)))
    return out


def n_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _cached_resnet34_weights() -> Path | None:
    """torchvision's ImageNet ResNet-34 file if it is already in the torch hub cache (TORCH_HOME); never downloads."""
    from torchvision.models import ResNet34_Weights  # torchvision: image models only

    url = ResNet34_Weights.IMAGENET1K_V1.url
    hub = Path(os.environ.get("TORCH_HOME") or Path.home() / ".cache" / "torch")
    candidate = hub / "hub" / "checkpoints" / os.path.basename(url)
    return candidate if candidate.is_file() else None


def image_resnet34(n_classes: int, pretrained: bool = False) -> nn.Module:
    """torchvision ResNet-34 for images with a new ``n_classes`` head.

    ``pretrained=True`` loads ImageNet weights only if torchvision's file is already cached under ``$TORCH_HOME``
    (``hub/checkpoints/resnet34-b627a593.pth``); it never downloads and raises ``FileNotFoundError`` otherwise.
    The default trains from scratch, as nothing in the paper says otherwise.
    """
    from torchvision.models import resnet34  # torchvision: image models only

    model = resnet34(weights=None)
    if pretrained:
        path = _cached_resnet34_weights()
        if path is None:
            raise FileNotFoundError("pretrained ResNet-34 weights not cached under $TORCH_HOME/hub/checkpoints; "
                                    "this project never downloads them — place resnet34-b627a593.pth there")
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.fc = nn.Linear(model.fc.in_features, n_classes)
    return model


def vector_model(name: str, in_dim: int, n_classes: int) -> nn.Module:
    """A torch vector classifier by name: ``resnet34`` (the paper's, 1-D) or ``mlp``."""
    if name == "resnet34":
        return ResNet34Vector(in_dim, n_classes)
    if name == "mlp":
        return MLPVector(in_dim, n_classes)
    raise ValueError(f"unknown vector model {name!r}; torch models: resnet34, mlp")


SKLEARN_MODELS = ("logreg", "svm", "linsvm", "fisherfaces")
TORCH_VECTOR_MODELS = ("resnet34", "mlp")


LINEAR_PRIMAL_MAX_FEATURES = 512  # liblinear's primal Newton solver up to this many features, dual above
GRAM_MAX_FIT = 8000  # linsvm solves over the fit split's Gram matrix up to this many rows (512 MB in float64)


class LinearKernel(BaseEstimator, TransformerMixin):
    """The linear kernel as a pipeline step: ``fit`` keeps the fit rows, ``transform`` returns ``X @ X_fit.T``
    (float64, what libsvm's precomputed kernel reads). A linear SVM solved over this Gram matrix is the same
    model as one solved over the features (``w = Σ dual_coef · x_sv``), and the matrix is computed once per fit
    split, so every C of the trainer's grid reuses it."""

    def fit(self, X, y=None):
        self.X_ = np.ascontiguousarray(X, dtype=np.float64)
        return self

    def transform(self, X):
        return np.asarray(X, dtype=np.float64) @ self.X_.T


def _linear_svc(C: float, seed: int, n_fit: int | None, n_features: int | None):
    """liblinear's LinearSVC with a solver for the data's shape (used by Fisherfaces, and by ``linsvm`` above
    :data:`GRAM_MAX_FIT` rows): the primal Newton solver for few features (≤ 512, fewer than rows: LDA outputs),
    the dual coordinate descent otherwise. ``tol`` 1e-3 and ``max_iter`` 1000 bound a large-C fit."""
    few = n_features is not None and n_features <= LINEAR_PRIMAL_MAX_FEATURES and (n_fit or 0) > n_features
    return LinearSVC(C=C, dual=not few, tol=1e-3, max_iter=1000, random_state=seed)


def _linsvm_steps(C: float, seed: int, n_fit: int | None, n_features: int | None) -> list:
    """``linsvm`` after its scaler: a linear-kernel SVM (libsvm, hinge loss, one-vs-one) over the Gram matrix for
    up to :data:`GRAM_MAX_FIT` fit rows, else liblinear (:func:`_linear_svc`). Measured on a full-KDEF-sized HOG
    table (3,430 fit × 1,764, 7 classes, 2 cores; ``benchmarks/bench_train.py`` section 4): the Gram route takes
    ≈ 2 s per C after a 1-s matrix, where liblinear's one-vs-rest dual took 23 s at C = 0.01 and 41–42 s (at
    ``max_iter``) for C ≥ 0.1 — a whole 5-value grid 11–13 s against 190 s (the old code's, with ``max_iter`` 5000:
    ≥ 360 s for C = 0.01, 0.1 and part of 1). Test accuracy on the dev table over 5 person splits: 31.1 ± 2.9 %
    against the old grid's 27.5 ± 3.9 %."""
    if n_fit is None or n_fit <= GRAM_MAX_FIT:
        return [LinearKernel(), SVC(kernel="precomputed", C=C, random_state=seed)]
    return [_linear_svc(C, seed, n_fit, n_features)]


def baseline(name: str, seed: int = 0, C: float | None = None, n_fit: int | None = None,
             n_features: int | None = None):
    """scikit-learn baseline pipeline by name (``C`` is chosen on the validation split by the trainer, which
    refits only the last step along its grid):

    * ``logreg`` — StandardScaler → logistic regression (lbfgs, ``warm_start``: each C starts from the last);
    * ``svm`` — StandardScaler → RBF SVM (1 GB kernel cache);
    * ``linsvm`` — StandardScaler → linear SVM (HOG + linear SVM, Eng et al. 2019): over the Gram matrix
      (:class:`LinearKernel` → libsvm) up to :data:`GRAM_MAX_FIT` fit rows, liblinear above (:func:`_linsvm_steps`);
    * ``fisherfaces`` — PCA (at most n_fit − 1 components, ≤ 150) → LDA → linear SVM (Thomaz & Giraldi 2010; the
      SVM sees ≤ classes − 1 dimensions: primal).
    """
    c = 1.0 if C is None else C
    if name == "logreg":
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, solver="lbfgs", max_iter=3000, tol=1e-4,
                                                                  warm_start=True, random_state=seed))
    if name == "svm":
        return make_pipeline(StandardScaler(), SVC(kernel="rbf", C=c, gamma="scale", cache_size=1000,
                                                   random_state=seed))
    if name == "linsvm":
        return make_pipeline(StandardScaler(), *_linsvm_steps(c, seed, n_fit, n_features))
    if name == "fisherfaces":
        n_pca = max(2, min(150, (n_fit or 151) - 1, n_features or 150))
        return make_pipeline(PCA(n_components=n_pca, random_state=seed), LinearDiscriminantAnalysis(),
                             _linear_svc(c, seed, n_fit, 1))
    raise ValueError(f"unknown baseline {name!r}; choose from {SKLEARN_MODELS}")
