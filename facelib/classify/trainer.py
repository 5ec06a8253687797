"""Training and evaluation of the classifiers (Table 1), with timing (Table 2) and confusion counts (Table 3).

* :func:`train_vector_model` — a coefficient-vector classifier (1-D ResNet-34, MLP, or a scikit-learn baseline).
* :func:`train_image_model` — torchvision ResNet-34 on the pictures themselves (the paper's "images" column).
One experiment over all folds is :mod:`facelib.classify.experiment`; the study plan :mod:`facelib.classify.plan`.

Every torch run: cross-entropy, Adam, seeds fixed (``random``, ``numpy``, ``torch``), deterministic algorithms
requested (``warn_only`` where an op has no deterministic kernel), features standardised with statistics of the
training data only, and model selection (best epoch by validation accuracy, optional early stopping) on a
validation split carved from the *training* data only — the test fold is never looked at before the end.
Timing: ``seconds_per_epoch`` is the mean wall time of one training pass (forward+backward+step over the fit
split, no evaluation); ``seconds_per_input`` = that / number of training inputs — the paper's Table 2 quantity.
"""
from __future__ import annotations

import copy
import os
import random
import sys
import time

# Passive OpenMP waiting: spinning threads make 2-thread torch up to 10× slower when the 2 cores are shared.
# Only effective if torch's OpenMP runtime is not loaded yet (set it in the environment to be sure).
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from torch import nn  # noqa: E402

from ..config import resolve_device  # noqa: E402
from ..face3d.cameras import square_crop  # noqa: E402
from ..face3d.reconstruct import coeff_matrix  # noqa: E402
from ..io import read_image  # noqa: E402
from .models import SKLEARN_MODELS, TORCH_VECTOR_MODELS, baseline, image_resnet34, vector_model  # noqa: E402

INPUTS = ("alpha", "beta", "alpha+beta", "image")
MODELS = TORCH_VECTOR_MODELS + SKLEARN_MODELS  # + "resnet34" on images when input == "image"

# Default epochs, chosen so the whole classification stage on full KDEF + FEI fits 30 min on 2 CPU cores
# (see benchmarks/bench_classify.py). Identity has 11 400 (redundant) aggregated training vectors per fold.
DEFAULT_EPOCHS = {("vector", "identity"): 3, ("vector", "expression"): 12, ("vector", "gender"): 30,
                  ("image", "identity"): 15, ("image", "expression"): 4, ("image", "gender"): 15}
DEFAULT_BATCH = {"vector": 128, "image": 32}
SMALL_VECTOR_BATCH, SMALL_VECTOR_SET = 32, 2000



def default_batch_size(kind: str, n_train: int) -> int:
    """Vectors: 128 (cheapest per input on CPU) from 2000 training samples, else 32 so a small set (KDEF dev,
    FEI) still gets enough optimiser steps per epoch; images: 32."""
    if kind == "vector" and n_train < SMALL_VECTOR_SET:
        return SMALL_VECTOR_BATCH
    return DEFAULT_BATCH[kind]



# ----------------------------------------------------------------------------------------------- utilities
def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seed ``random``, ``numpy`` and ``torch``; request deterministic kernels (warn-only where unsupported)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False



def input_matrix(df: pd.DataFrame, input: str) -> np.ndarray:
    """The feature matrix for ``alpha``, ``beta`` or ``alpha+beta`` (concatenated)."""
    if input == "alpha+beta":
        return np.concatenate([coeff_matrix(df, "alpha"), coeff_matrix(df, "beta")], axis=1)
    if input in ("alpha", "beta"):
        return coeff_matrix(df, input)
    raise ValueError(f"input must be one of {INPUTS[:3]} for a vector model, got {input!r}")



def n_threads() -> int:
    return torch.get_num_threads()



def carve_validation(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split training positions into fit / validation (stratified when every class allows it)."""
    n = len(y)
    idx = np.arange(n)
    if val_fraction <= 0 or n < 4:
        return idx, idx[:0]
    n_val = max(1, int(round(val_fraction * n)))
    classes, counts = np.unique(y, return_counts=True)
    strat = y if (counts.min() >= 2 and n_val >= len(classes) and n - n_val >= len(classes)) else None
    fit, val = train_test_split(idx, test_size=n_val, random_state=seed, stratify=strat)
    return np.sort(fit), np.sort(val)



def _batches(n: int, batch_size: int, gen) -> list:
    perm = torch.randperm(n, generator=gen).numpy() if gen is not None else np.arange(n)
    out = [perm[i:i + batch_size] for i in range(0, n, batch_size)]
    if len(out) > 1 and len(out[-1]) == 1:  # BatchNorm cannot train on a batch of one
        out[-2] = np.concatenate([out[-2], out[-1]])
        out.pop()
    return out



def _fit_torch(model, X_fit, y_fit, X_val, y_val, X_test, to_tensor, *, epochs, batch_size, lr, weight_decay,
               patience, device, seed, augment=None, verbose=False, desc="") -> dict:
    """Generic loop: Adam + cross-entropy, best epoch on the validation split, predictions on X_test."""
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(int(seed))
    y_fit_t = torch.as_tensor(y_fit, dtype=torch.long)

    def predict(X) -> tuple[np.ndarray, float]:
        model.eval()
        outs = []
        with torch.no_grad():
            for i in range(0, len(X), max(batch_size, 256)):
                outs.append(model(to_tensor(X[i:i + max(batch_size, 256)]).to(device)).float().cpu())
        logits = torch.cat(outs) if outs else torch.zeros(0, 1)
        return logits.argmax(1).numpy(), logits

    history, epoch_times = [], []
    best = (-1.0, np.inf)
    best_state, best_epoch, stale = None, 0, 0
    for epoch in range(1, epochs + 1):
        model.train()
        t0 = time.perf_counter()
        total, n_seen = 0.0, 0
        for b in _batches(len(X_fit), batch_size, gen):
            xb = to_tensor(X_fit[b])
            if augment is not None:
                xb = augment(xb, gen)
            xb, yb = xb.to(device), y_fit_t[b].to(device)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
            n_seen += len(b)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        elif device == "mps":
            torch.mps.synchronize()
        epoch_times.append(time.perf_counter() - t0)
        rec = {"epoch": epoch, "train_loss": total / max(n_seen, 1), "seconds": epoch_times[-1]}
        if len(X_val):
            pv, logits = predict(X_val)
            val_loss = float(loss_fn(logits, torch.as_tensor(y_val, dtype=torch.long)))
            val_acc = float((pv == y_val).mean())
            rec.update(val_loss=val_loss, val_accuracy=val_acc)
            if (val_acc, -val_loss) > (best[0], -best[1]):
                best, best_epoch, stale = (val_acc, val_loss), epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
        history.append(rec)
        if verbose:
            print(f"{desc} epoch {epoch}/{epochs} " + " ".join(f"{k}={v:.4g}" for k, v in rec.items()
                                                              if k != "epoch"), file=sys.stderr, flush=True)
        if patience is not None and len(X_val) and stale >= patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_epoch = len(history)
    pred, _ = predict(X_test) if X_test is not None and len(X_test) else (np.zeros(0, dtype=int), None)
    spe = float(np.mean(epoch_times)) if epoch_times else float("nan")
    return {"predictions": pred, "history": history, "best_epoch": best_epoch, "epochs_run": len(history),
            "seconds_per_epoch": spe, "seconds_per_input": spe / max(len(X_fit), 1),
            "train_seconds": float(np.sum(epoch_times)), "n_fit": int(len(X_fit)), "n_val": int(len(X_val)),
            "model": model}



# -------------------------------------------------------------------------------------------- vector model
def train_vector_model(X_train, y_train, X_test=None, y_test=None, *, model: str = "resnet34",
                       n_classes: int | None = None, epochs: int = 30, batch_size: int = 128, lr: float = 1e-3,
                       weight_decay: float = 1e-4, val_fraction: float = 0.1, patience: int | None = None,
                       device: str | None = "cpu", seed: int = 0, standardize: bool = True,
                       verbose: bool = False) -> dict:
    """Train a classifier on coefficient vectors. ``y`` are integer class codes 0..C-1.

    ``model``: ``resnet34`` (:class:`~facelib.classify.models.ResNet34Vector`), ``mlp``, or the scikit-learn baselines
    ``logreg`` / ``svm`` (their pipelines standardise internally; one fit = one "epoch" for timing).
    Returns ``predictions`` (on ``X_test``), ``accuracy`` (when ``y_test`` given), ``seconds_per_epoch``,
    ``seconds_per_input``, ``train_seconds``, ``best_epoch``, ``epochs_run``, ``history``, ``n_fit``, ``n_val``,
    ``device``, and ``model`` (the fitted torch module or sklearn pipeline).
    """
    X_train = np.asarray(X_train, dtype=np.float32)
    y_train = np.asarray(y_train, dtype=np.int64)
    X_test = None if X_test is None else np.asarray(X_test, dtype=np.float32)
    n_classes = int(n_classes or (y_train.max() + 1))
    set_seed(seed)
    if model in SKLEARN_MODELS:
        pipe = baseline(model, seed=seed)
        t0 = time.perf_counter()
        pipe.fit(X_train, y_train)
        dt = time.perf_counter() - t0
        pred = pipe.predict(X_test) if X_test is not None and len(X_test) else np.zeros(0, dtype=int)
        out = {"predictions": np.asarray(pred), "history": [], "best_epoch": 1, "epochs_run": 1,
               "seconds_per_epoch": dt, "seconds_per_input": dt / max(len(X_train), 1), "train_seconds": dt,
               "n_fit": len(X_train), "n_val": 0, "model": pipe, "device": "cpu"}
    else:
        device = resolve_device(device)
        fit, val = carve_validation(y_train, val_fraction, seed)
        mean = X_train[fit].mean(0) if standardize else np.zeros(X_train.shape[1], np.float32)
        std = X_train[fit].std(0) if standardize else np.ones(X_train.shape[1], np.float32)
        std = np.where(std > 1e-12, std, 1.0).astype(np.float32)

        def z(X):
            return ((X - mean) / std).astype(np.float32)

        net = vector_model(model, X_train.shape[1], n_classes)
        out = _fit_torch(net, z(X_train[fit]), y_train[fit], z(X_train[val]), y_train[val],
                         None if X_test is None else z(X_test), torch.from_numpy, epochs=epochs,
                         batch_size=batch_size, lr=lr, weight_decay=weight_decay, patience=patience,
                         device=device, seed=seed, verbose=verbose, desc=model)
        out.update(device=device, standardize_mean=mean.tolist(), standardize_std=std.tolist())
    if y_test is not None and X_test is not None and len(X_test):
        out["accuracy"] = float((out["predictions"] == np.asarray(y_test)).mean())
    return out



# --------------------------------------------------------------------------------------------- image model
_IMAGE_CACHE: dict[tuple, np.ndarray] = {}



def load_image(path: str, image_size: int, box=None) -> np.ndarray:
    """Grayscale uint8 ``(image_size, image_size)``, optionally cropped to ``box``; cached in memory."""
    key = (str(path), int(image_size), None if box is None else tuple(float(v) for v in list(box)[:4]))
    hit = _IMAGE_CACHE.get(key)
    if hit is not None:
        return hit
    img = read_image(path, gray=True)
    if img is None:
        raise FileNotFoundError(f"cannot decode image {path}")
    if box is not None:
        img = square_crop(img, box)
    img = cv2.resize(img, (int(image_size), int(image_size)), interpolation=cv2.INTER_AREA)
    _IMAGE_CACHE[key] = img
    return img



def load_images(paths, image_size: int, boxes=None) -> np.ndarray:
    boxes = [None] * len(paths) if boxes is None else list(boxes)
    if not len(paths):
        return np.zeros((0, image_size, image_size), dtype=np.uint8)
    return np.stack([load_image(p, image_size, b) for p, b in zip(paths, boxes)])



def _image_to_tensor(X: np.ndarray):
    """uint8 (B, S, S) gray → float (B, 3, S, S), ImageNet-normalised (gray replicated to 3 channels)."""
    x = torch.from_numpy(np.ascontiguousarray(X)).float().div_(255.0).unsqueeze(1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x.expand(-1, 3, -1, -1) - mean) / std



def _hflip(x, gen):
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    x = x.clone()
    x[flip] = x[flip].flip(-1)
    return x



def train_image_model(paths_train, y_train, paths_test=None, y_test=None, *, boxes_train=None, boxes_test=None,
                      n_classes: int | None = None, image_size: int = 64, epochs: int = 10, batch_size: int = 32,
                      lr: float = 1e-3, weight_decay: float = 1e-4, val_fraction: float = 0.1,
                      patience: int | None = None, device: str | None = "cpu", seed: int = 0,
                      pretrained: bool = False, augment: bool = True, verbose: bool = False) -> dict:
    """Train torchvision's ResNet-34 on the pictures (grayscale → 3 channels, ``image_size``², optional box
    crop, random horizontal flips when ``augment``). Same return keys as :func:`train_vector_model` plus
    ``image_size``."""
    device = resolve_device(device)
    set_seed(seed)
    y_train = np.asarray(y_train, dtype=np.int64)
    n_classes = int(n_classes or (y_train.max() + 1))
    X_train = load_images(list(paths_train), image_size, boxes_train)
    X_test = None if paths_test is None else load_images(list(paths_test), image_size, boxes_test)
    fit, val = carve_validation(y_train, val_fraction, seed)
    net = image_resnet34(n_classes, pretrained=pretrained)
    out = _fit_torch(net, X_train[fit], y_train[fit], X_train[val], y_train[val], X_test, _image_to_tensor,
                     epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, patience=patience,
                     device=device, seed=seed, augment=_hflip if augment else None, verbose=verbose,
                     desc="image-resnet34")
    out.update(device=device, image_size=int(image_size))
    if y_test is not None and X_test is not None and len(X_test):
        out["accuracy"] = float((out["predictions"] == np.asarray(y_test)).mean())
    return out

