"""Training and evaluation of the classifiers (Table 1), with timing (Table 2) and confusion counts (Table 3).

* :func:`train_vector_model` — a coefficient-vector classifier (1-D ResNet-34, MLP, or a scikit-learn baseline).
* :func:`train_image_model` — torchvision ResNet-34 on the pictures themselves (the paper's "images" column).
* :func:`run_task` — one task × protocol × input × model over all folds → a JSON-able result dict.
* :func:`classify_main` — the CLI (``python -m facelib classify …``).

Every torch run: cross-entropy, Adam, seeds fixed (``random``, ``numpy``, ``torch``), deterministic algorithms
requested (``warn_only`` where an op has no deterministic kernel), features standardised with statistics of the
training data only, and model selection (best epoch by validation accuracy, optional early stopping) on a
validation split carved from the *training* data only — the test fold is never looked at before the end.
Timing: ``seconds_per_epoch`` is the mean wall time of one training pass (forward+backward+step over the fit
split, no evaluation); ``seconds_per_input`` = that / number of training inputs — the paper's Table 2 quantity.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import random
import sys
import time
from pathlib import Path

# Passive OpenMP waiting: spinning threads make 2-thread torch up to 10× slower when the 2 cores are shared.
# Only effective if torch's OpenMP runtime is not loaded yet (set it in the environment to be sure).
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pandas as pd

from . import protocols as P
from .aggregate import aggregate_sets
from .models import SKLEARN_MODELS, TORCH_VECTOR_MODELS

TASK_LABEL = {"identity": "subject", "expression": "expression", "gender": "gender"}
TASK_DEFAULT_INPUT = {"identity": "alpha", "expression": "beta", "gender": "alpha"}
INPUTS = ("alpha", "beta", "alpha+beta", "image")
MODELS = TORCH_VECTOR_MODELS + SKLEARN_MODELS  # + "resnet34" on images when input == "image"
EXPRESSION_ORDER = P.EXPRESSIONS

# Default epochs, chosen so the whole classification stage on full KDEF + FEI fits 30 min on 2 CPU cores
# (see benchmarks/bench_classify.py). Identity has 11 400 (redundant) aggregated training vectors per fold.
DEFAULT_EPOCHS = {("vector", "identity"): 3, ("vector", "expression"): 12, ("vector", "gender"): 30,
                  ("image", "identity"): 15, ("image", "expression"): 4, ("image", "gender"): 15}
DEFAULT_N_FOLDS = {"paper": 3, "subject_independent": 5, "cross_session": 1, "cross_angle": 5,
                   "leave_expression_out": 7}
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
    import torch

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


def coeff_matrix(df: pd.DataFrame, column: str) -> np.ndarray:
    """Stack a list column into an (n, d) float32 array (one rule for the whole study: reconstruct's)."""
    from .reconstruct import coeff_matrix as stack

    return stack(df, column)


def input_matrix(df: pd.DataFrame, input: str) -> np.ndarray:
    """The feature matrix for ``alpha``, ``beta`` or ``alpha+beta`` (concatenated)."""
    if input == "alpha+beta":
        return np.concatenate([coeff_matrix(df, "alpha"), coeff_matrix(df, "beta")], axis=1)
    if input in ("alpha", "beta"):
        return coeff_matrix(df, input)
    raise ValueError(f"input must be one of {INPUTS[:3]} for a vector model, got {input!r}")


def _n_threads() -> int:
    import torch

    return torch.get_num_threads()


def _carve_validation(y: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split training positions into fit / validation (stratified when every class allows it)."""
    n = len(y)
    idx = np.arange(n)
    if val_fraction <= 0 or n < 4:
        return idx, idx[:0]
    from sklearn.model_selection import train_test_split

    n_val = max(1, int(round(val_fraction * n)))
    classes, counts = np.unique(y, return_counts=True)
    strat = y if (counts.min() >= 2 and n_val >= len(classes) and n - n_val >= len(classes)) else None
    fit, val = train_test_split(idx, test_size=n_val, random_state=seed, stratify=strat)
    return np.sort(fit), np.sort(val)


def _batches(n: int, batch_size: int, gen) -> list:
    import torch

    perm = torch.randperm(n, generator=gen).numpy() if gen is not None else np.arange(n)
    out = [perm[i:i + batch_size] for i in range(0, n, batch_size)]
    if len(out) > 1 and len(out[-1]) == 1:  # BatchNorm cannot train on a batch of one
        out[-2] = np.concatenate([out[-2], out[-1]])
        out.pop()
    return out


def _fit_torch(model, X_fit, y_fit, X_val, y_val, X_test, to_tensor, *, epochs, batch_size, lr, weight_decay,
               patience, device, seed, augment=None, verbose=False, desc="") -> dict:
    """Generic loop: Adam + cross-entropy, best epoch on the validation split, predictions on X_test."""
    import torch
    from torch import nn

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

    ``model``: ``resnet34`` (:class:`~facelib.models.ResNet34Vector`), ``mlp``, or the scikit-learn baselines
    ``logreg`` / ``svm`` (their pipelines standardise internally; one fit = one "epoch" for timing).
    Returns ``predictions`` (on ``X_test``), ``accuracy`` (when ``y_test`` given), ``seconds_per_epoch``,
    ``seconds_per_input``, ``train_seconds``, ``best_epoch``, ``epochs_run``, ``history``, ``n_fit``, ``n_val``,
    ``device``, and ``model`` (the fitted torch module or sklearn pipeline).
    """
    from .config import resolve_device

    X_train = np.asarray(X_train, dtype=np.float32)
    y_train = np.asarray(y_train, dtype=np.int64)
    X_test = None if X_test is None else np.asarray(X_test, dtype=np.float32)
    n_classes = int(n_classes or (y_train.max() + 1))
    set_seed(seed)
    if model in SKLEARN_MODELS:
        from .models import baseline

        pipe = baseline(model, seed=seed)
        t0 = time.perf_counter()
        pipe.fit(X_train, y_train)
        dt = time.perf_counter() - t0
        pred = pipe.predict(X_test) if X_test is not None and len(X_test) else np.zeros(0, dtype=int)
        out = {"predictions": np.asarray(pred), "history": [], "best_epoch": 1, "epochs_run": 1,
               "seconds_per_epoch": dt, "seconds_per_input": dt / max(len(X_train), 1), "train_seconds": dt,
               "n_fit": len(X_train), "n_val": 0, "model": pipe, "device": "cpu"}
    else:
        import torch

        from .models import vector_model

        device = resolve_device(device)
        fit, val = _carve_validation(y_train, val_fraction, seed)
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


def _crop_box(img: np.ndarray, box, margin: float = 1.3) -> np.ndarray:
    """Square crop of side ``margin`` × the box's longer side, centred on the box, zero-padded at the border."""
    x0, y0, x1, y1 = (float(v) for v in list(box)[:4])
    side = margin * max(x1 - x0, y1 - y0)
    if not np.isfinite(side) or side < 4:
        return img
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    a, b = int(round(cx - side / 2)), int(round(cy - side / 2))
    s = int(round(side))
    h, w = img.shape[:2]
    out = np.zeros((s, s), dtype=img.dtype)
    sx0, sy0, sx1, sy1 = max(a, 0), max(b, 0), min(a + s, w), min(b + s, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - b:sy1 - b, sx0 - a:sx1 - a] = img[sy0:sy1, sx0:sx1]
    return out


def load_image(path: str, image_size: int, box=None) -> np.ndarray:
    """Grayscale uint8 ``(image_size, image_size)``, optionally cropped to ``box``; cached in memory."""
    import cv2

    key = (str(path), int(image_size), None if box is None else tuple(float(v) for v in list(box)[:4]))
    hit = _IMAGE_CACHE.get(key)
    if hit is not None:
        return hit
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise FileNotFoundError(f"cannot decode image {path}")
    if box is not None:
        img = _crop_box(img, box)
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
    import torch

    x = torch.from_numpy(np.ascontiguousarray(X)).float().div_(255.0).unsqueeze(1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x.expand(-1, 3, -1, -1) - mean) / std


def _hflip(x, gen):
    import torch

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
    from .config import resolve_device
    from .models import image_resnet34

    device = resolve_device(device)
    set_seed(seed)
    y_train = np.asarray(y_train, dtype=np.int64)
    n_classes = int(n_classes or (y_train.max() + 1))
    X_train = load_images(list(paths_train), image_size, boxes_train)
    X_test = None if paths_test is None else load_images(list(paths_test), image_size, boxes_test)
    fit, val = _carve_validation(y_train, val_fraction, seed)
    net = image_resnet34(n_classes, pretrained=pretrained)
    out = _fit_torch(net, X_train[fit], y_train[fit], X_train[val], y_train[val], X_test, _image_to_tensor,
                     epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, patience=patience,
                     device=device, seed=seed, augment=_hflip if augment else None, verbose=verbose,
                     desc="image-resnet34")
    out.update(device=device, image_size=int(image_size))
    if y_test is not None and X_test is not None and len(X_test):
        out["accuracy"] = float((out["predictions"] == np.asarray(y_test)).mean())
    return out


# ------------------------------------------------------------------------------------------------- run_task
def _task_table(df: pd.DataFrame, task: str) -> pd.DataFrame:
    """Usable rows of the dataset the task is defined on, with a 0..n-1 index."""
    if task not in TASK_LABEL:
        raise ValueError(f"task must be one of {tuple(TASK_LABEL)}, got {task!r}")
    df = df[P.usable_mask(df)]
    label = TASK_LABEL[task]
    if label not in df.columns:
        raise ValueError(f"task {task} needs a {label!r} column")
    df = df[df[label].notna()]
    if "dataset" in df.columns:
        ds = df["dataset"].astype(str)
        want = "fei" if task == "gender" else "kdef"
        if (ds == want).any():
            df = df[ds == want]
    if task == "expression":
        df = df[df["expression"].astype(str).isin(EXPRESSION_ORDER)]
    return df.reset_index(drop=True)


def _classes(task: str, y: pd.Series) -> list[str]:
    present = sorted(set(y.astype(str)))
    if task == "expression":
        return [c for c in EXPRESSION_ORDER if c in present]
    return present


def run_task(coeffs_df: pd.DataFrame, task: str, protocol: str = "paper", input: str | None = None,
             model: str = "resnet34", backend: str | None = None, n_folds: int | None = None,
             epochs: int | None = None, seed: int = 0, device: str | None = None, image_size: int | None = None,
             batch_size: int | None = None, lr: float = 1e-3, weight_decay: float = 1e-4,
             val_fraction: float = 0.1, patience: int | None = None, aggregator=None, pretrained: bool = False,
             crop_to_box: bool = True, protocol_kwargs: dict | None = None, keep_predictions: bool = True,
             num_threads: int | None = None, verbose: bool = False) -> dict:
    """Run one Table-1 cell: ``task`` × ``protocol`` × ``input`` × ``model`` over all folds.

    ``input``: ``alpha``/``beta``/``alpha+beta`` (coefficient vectors; sets aggregated by the fold's aggregator or
    ``aggregator``) or ``image`` (ResNet-34 on pictures; identity sets fall back to their single pictures).
    ``model``: ``resnet34`` (1-D for vectors, torchvision for images), ``mlp``, ``logreg``, ``svm``.
    ``num_threads`` sets ``torch.set_num_threads`` for the run (restored after); on a shared machine one thread
    per process can be an order of magnitude faster than two contending ones.
    Raises :class:`facelib.protocols.ProtocolUnavailable` when the protocol cannot run on this data.

    Returns a JSON-able dict with keys: ``task, protocol, input, model, backend, device, torch_threads,
    torch_version, seed, epochs, n_folds, batch_size, batch_sizes, lr, weight_decay, val_fraction, patience,
    image_size, crop_to_box, classes, fold_accuracies, accuracy_mean, accuracy_std, n_train, n_test`` (means
    over folds, in samples: aggregated sets count once), ``n_train_per_fold, n_test_per_fold, n_train_images,
    seconds_per_input, seconds_per_epoch, train_seconds, wall_seconds, best_epochs, confusion`` (counts summed
    over folds, rows true / columns predicted in ``classes`` order), ``per_angle_accuracy`` (angle → accuracy
    over single-picture test samples; ``{}`` for set samples), ``per_angle_counts``, ``fold_names``,
    ``predictions`` (list of ``{fold, image_id, true, pred, angle}``), ``leak_free``, ``protocol_info``.
    """
    import torch

    old_threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(int(num_threads))
    try:
        return _run_task(coeffs_df, task, protocol, input, model, backend, n_folds, epochs, seed, device,
                         image_size, batch_size, lr, weight_decay, val_fraction, patience, aggregator, pretrained,
                         crop_to_box, protocol_kwargs, keep_predictions, verbose)
    finally:
        torch.set_num_threads(old_threads)


def _run_task(coeffs_df, task, protocol, input, model, backend, n_folds, epochs, seed, device, image_size,
              batch_size, lr, weight_decay, val_fraction, patience, aggregator, pretrained, crop_to_box,
              protocol_kwargs, keep_predictions, verbose) -> dict:
    import torch

    from .config import resolve_device

    t_start = time.perf_counter()
    input = input or TASK_DEFAULT_INPUT[task]
    if input not in INPUTS:
        raise ValueError(f"input must be one of {INPUTS}, got {input!r}")
    kind = "image" if input == "image" else "vector"
    if kind == "image" and model != "resnet34":
        raise ValueError("input 'image' is trained with model 'resnet34' (torchvision) only")
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    device = "cpu" if model in SKLEARN_MODELS else resolve_device(device)
    df = _task_table(coeffs_df, task)
    if not len(df):
        raise ValueError(f"no usable rows for task {task}")
    backend = backend or (str(df["backend"].iloc[0]) if "backend" in df.columns else "unknown")
    n_folds = int(n_folds or DEFAULT_N_FOLDS.get(protocol, 3))
    epochs = int(epochs or DEFAULT_EPOCHS[(kind, task)])
    fixed_batch = int(batch_size) if batch_size else None
    image_size = int(image_size or (64 if device == "cpu" else 224)) if kind == "image" else None
    kwargs = dict(protocol_kwargs or {})
    kwargs.setdefault("seed", seed)
    kwargs.setdefault("n_folds", n_folds)
    if aggregator is not None:
        kwargs.setdefault("aggregator", aggregator)
    folds = P.make_folds(df, task, protocol, **kwargs)

    label = TASK_LABEL[task]
    classes = _classes(task, df[label])
    code = {c: i for i, c in enumerate(classes)}
    y_all = df[label].astype(str).map(code).to_numpy()
    image_ids = df["image_id"].astype(str).to_numpy() if "image_id" in df.columns else np.arange(len(df)).astype(str)
    angles = df["angle"].astype(str).to_numpy() if "angle" in df.columns else None
    X_all = input_matrix(df, input) if kind == "vector" else None
    boxes = None
    if kind == "image" and crop_to_box and "box" in df.columns:
        whole = (df["box_source"].astype(str) == "whole_frame").to_numpy() if "box_source" in df.columns \
            else np.zeros(len(df), dtype=bool)  # a whole-frame fallback box is no face crop: keep the picture
        boxes = [None if (b is None or (isinstance(b, float) and np.isnan(b)) or w) else list(b)
                 for b, w in zip(df["box"], whole)]

    conf = np.zeros((len(classes), len(classes)), dtype=np.int64)
    angle_hits: dict[str, list[int]] = {}
    fold_acc, n_tr, n_te, n_tr_img, spi, spe, tsec, best_epochs, preds = [], [], [], [], [], [], [], [], []
    batch_sizes = []
    threads = _n_threads()
    for fi, fold in enumerate(folds):
        fseed = seed * 1000 + fi
        if kind == "vector":
            agg = fold.aggregator or aggregator
            Xtr, Xte = aggregate_sets(X_all, fold.train, agg), aggregate_sets(X_all, fold.test, agg)
            ytr = y_all[fold.train[:, 0]] if fold.train.ndim == 2 else y_all[fold.train]
            yte = y_all[fold.test[:, 0]] if fold.test.ndim == 2 else y_all[fold.test]
            if fold.train.ndim == 2:  # a set must be one person's pictures
                assert (y_all[fold.train] == ytr[:, None]).all() and (y_all[fold.test] == yte[:, None]).all()
            batch_size = fixed_batch or default_batch_size(kind, len(Xtr))
            res = train_vector_model(Xtr, ytr, Xte, yte, model=model, n_classes=len(classes), epochs=epochs,
                                     batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                                     val_fraction=val_fraction, patience=patience, device=device, seed=fseed,
                                     verbose=verbose)
            test_items = fold.test
            n_tr_img.append(int(len(fold.train_images)))
        else:
            tr, te = fold.train_images, fold.test_images
            ytr, yte = y_all[tr], y_all[te]
            batch_size = fixed_batch or default_batch_size(kind, len(tr))
            res = train_image_model(df["path"].to_numpy()[tr], ytr, df["path"].to_numpy()[te], yte,
                                    boxes_train=None if boxes is None else [boxes[i] for i in tr],
                                    boxes_test=None if boxes is None else [boxes[i] for i in te],
                                    n_classes=len(classes), image_size=image_size, epochs=epochs,
                                    batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                                    val_fraction=val_fraction, patience=patience, device=device, seed=fseed,
                                    pretrained=pretrained, verbose=verbose)
            test_items = te
            n_tr_img.append(int(len(tr)))
            Xtr = tr
        pred = np.asarray(res["predictions"], dtype=np.int64)
        fold_acc.append(float((pred == yte).mean()))
        n_tr.append(int(len(Xtr)))
        n_te.append(int(len(yte)))
        spi.append(res["seconds_per_input"])
        spe.append(res["seconds_per_epoch"])
        tsec.append(res["train_seconds"])
        best_epochs.append(int(res["best_epoch"]))
        batch_sizes.append(int(batch_size))
        np.add.at(conf, (yte, pred), 1)
        single = np.asarray(test_items).ndim == 1
        for j, (t, p) in enumerate(zip(yte, pred)):
            item = test_items[j]
            if single and angles is not None:
                angle_hits.setdefault(angles[item], []).append(int(t == p))
            if keep_predictions:
                ids = image_ids[item] if single else "+".join(image_ids[np.asarray(item)])
                preds.append({"fold": fi, "image_id": str(ids), "true": classes[t], "pred": classes[p],
                              "angle": str(angles[item]) if (single and angles is not None) else ""})
        if verbose:
            print(f"[{task}/{protocol}/{input}/{model}] fold {fi + 1}/{len(folds)} accuracy {fold_acc[-1]:.4f} "
                  f"({n_tr[-1]} train, {n_te[-1]} test, {spe[-1]:.2f} s/epoch)", file=sys.stderr, flush=True)
        del res
    angle_order = [a for a in P.ANGLES if a in angle_hits] + sorted(set(angle_hits) - set(P.ANGLES))
    return {
        "task": task, "protocol": protocol, "input": input, "model": model, "backend": backend,
        "device": device, "torch_threads": threads, "torch_version": torch.__version__, "seed": seed,
        "epochs": epochs, "n_folds": len(folds), "batch_size": batch_sizes[0] if batch_sizes else None,
        "batch_sizes": batch_sizes, "lr": lr,
        "weight_decay": weight_decay, "val_fraction": val_fraction, "patience": patience,
        "image_size": image_size, "crop_to_box": bool(boxes is not None), "classes": classes,
        "fold_names": [f.name for f in folds], "fold_accuracies": fold_acc,
        "accuracy_mean": float(np.mean(fold_acc)), "accuracy_std": float(np.std(fold_acc, ddof=1)) if len(fold_acc) > 1 else 0.0,
        "n_train": float(np.mean(n_tr)), "n_test": float(np.mean(n_te)), "n_train_per_fold": n_tr,
        "n_test_per_fold": n_te, "n_train_images": n_tr_img,
        "seconds_per_input": float(np.mean(spi)), "seconds_per_epoch": float(np.mean(spe)),
        "train_seconds": float(np.sum(tsec)), "wall_seconds": time.perf_counter() - t_start,
        "best_epochs": best_epochs, "confusion": conf.tolist(),
        "per_angle_accuracy": {a: float(np.mean(angle_hits[a])) for a in angle_order},
        "per_angle_counts": {a: len(angle_hits[a]) for a in angle_order},
        "predictions": preds, "leak_free": (task, protocol) in P.LEAK_FREE,
        "protocol_info": _jsonable(folds[0].info) if folds else {},
    }


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


# ------------------------------------------------------------------------------------------------------ CLI
def read_coeffs(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        df = pd.read_csv(path)
        for col in ("alpha", "beta", "box", "pose", "landmarks"):
            if col in df.columns:
                df[col] = df[col].map(lambda v: json.loads(v) if isinstance(v, str) else v)
        return df
    raise ValueError(f"coefficient table must be .parquet or .csv, got {path}")


def result_name(result: dict) -> str:
    backend = str(result.get("backend") or "").replace("+", "_")
    return (f"{result['task']}__{result['protocol']}__{result['input'].replace('+', '_')}__{result['model']}"
            + (f"__{backend}" if backend else ""))


def save_result(result: dict, out_dir: str | Path) -> Path:
    """``<out>/<task>__<protocol>__<input>__<model>.json`` (+ ``….predictions.csv``)."""
    from .io import atomic_write_json, atomic_write_table

    out_dir = Path(out_dir)
    name = result_name(result)
    preds = result.get("predictions") or []
    if preds:
        atomic_write_table(pd.DataFrame(preds), out_dir / f"{name}.predictions.csv")
    slim = {k: v for k, v in result.items() if k != "predictions"}
    slim["predictions_file"] = f"{name}.predictions.csv" if preds else None
    return atomic_write_json(slim, out_dir / f"{name}.json")


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--coeffs", required=True, help="coefficient table (parquet or CSV)")
    p.add_argument("--task", required=True, choices=list(TASK_LABEL))
    p.add_argument("--protocol", default="paper",
                   choices=sorted({k for v in P.PROTOCOLS.values() for k in v}))
    p.add_argument("--input", default=None, choices=list(INPUTS), help="default: alpha (identity, gender), beta")
    p.add_argument("--model", default="resnet34", choices=list(MODELS))
    p.add_argument("--out", default="results", help="folder for the result JSON and predictions CSV")
    p.add_argument("--n-folds", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, mps or auto (default $FACELIB_DEVICE / auto)")
    p.add_argument("--image-size", type=int, default=None, help="image input: default 64 on CPU, 224 on GPU")
    p.add_argument("--backend", default=None)
    p.add_argument("--patience", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true")


def _cmd_classify(args) -> int:
    df = read_coeffs(args.coeffs)
    try:
        result = run_task(df, args.task, args.protocol, args.input, args.model, backend=args.backend,
                          n_folds=args.n_folds, epochs=args.epochs, seed=args.seed, device=args.device,
                          image_size=args.image_size, batch_size=args.batch_size, lr=args.lr,
                          patience=args.patience, num_threads=args.threads, verbose=not args.quiet)
    except P.ProtocolUnavailable as exc:
        print(f"not available: {exc}", file=sys.stderr)
        return 3
    path = save_result(result, args.out)
    print(f"{result['task']}/{result['protocol']}/{result['input']}/{result['model']}: accuracy "
          f"{result['accuracy_mean']:.4f} ± {result['accuracy_std']:.4f} over {result['n_folds']} folds "
          f"({result['seconds_per_epoch']:.2f} s/epoch, {1000 * result['seconds_per_input']:.3f} ms/input) → {path}")
    return 0


def add_cli(sub) -> None:
    """Register ``classify`` on the top-level ``python -m facelib`` subparsers."""
    c = sub.add_parser("classify", help="train and evaluate one task/protocol/input/model (Table 1 cell)")
    _add_arguments(c)
    c.set_defaults(func=_cmd_classify)


def classify_main(argv: list[str] | None = None) -> int:
    """``python -m facelib classify --coeffs FILE --task T --protocol P --input I --model M --out DIR``."""
    p = argparse.ArgumentParser(prog="python -m facelib classify", description=run_task.__doc__.split("\n")[0])
    _add_arguments(p)
    return _cmd_classify(p.parse_args(argv))


# ------------------------------------------------------------------------------------------------ synthetic
def synthetic_coeff_table(n_per_gender: int = 5, sessions=("A",), alpha_dim: int = 40, beta_dim: int = 10,
                          fei_per_gender: int = 0, separation: float = 1.0, seed: int = 0,
                          backend: str = "synthetic") -> pd.DataFrame:
    """A coefficient table shaped like the real one (KDEF-like rows, optional FEI-like rows), with
    class-dependent Gaussians: α = subject centre (+ a gender offset) + noise, β = expression centre + noise.
    ``separation`` scales the centres against unit noise (0 → no signal). For tests and benchmarks only."""
    rng = np.random.default_rng(seed)
    rows = []
    g_axis = rng.normal(size=alpha_dim)
    expr_c = {e: separation * rng.normal(size=beta_dim) for e in P.EXPRESSIONS}

    def subject_centre(g):
        return separation * (rng.normal(size=alpha_dim) + (1.5 if g == "M" else -1.5) * g_axis)

    for g in ("F", "M"):
        for i in range(1, n_per_gender + 1):
            s = f"{g}{i:02d}"
            c = subject_centre(g)
            for sess in sessions:
                for e in P.EXPRESSIONS:
                    for a in P.ANGLES:
                        iid = f"{sess}{s}{e}{a}"
                        rows.append(dict(image_id=iid, path=f"/synthetic/{iid}.JPG", subject=s, gender=g,
                                         session=sess, expression=e, angle=a, dataset="kdef",
                                         alpha=(c + rng.normal(size=alpha_dim)).astype(np.float32).tolist(),
                                         beta=(expr_c[e] + rng.normal(size=beta_dim)).astype(np.float32).tolist()))
        for i in range(1, fei_per_gender + 1):
            sid = i if g == "M" else 100 + i
            s = f"fei{sid:03d}"
            c = subject_centre(g)
            for kind, e in (("a", "neutral"), ("b", "smiling")):
                rows.append(dict(image_id=f"{sid}{kind}", path=f"/synthetic/{sid}{kind}.jpg", subject=s, gender=g,
                                 session="", expression=e, angle="frontal", dataset="fei",
                                 alpha=(c + rng.normal(size=alpha_dim)).astype(np.float32).tolist(),
                                 beta=rng.normal(size=beta_dim).astype(np.float32).tolist()))
    df = pd.DataFrame(rows)
    df["status"] = "ok"
    df["backend"] = backend
    return df


# --------------------------------------------------------------------------------------------- the study plan
# One row per Table-1 line: (dataset, task, protocol, coefficient input). Each runs with every model in
# ``models`` and, with ``image_baseline``, once more as a ResNet-34 on the pictures themselves.
STUDY_ROWS = (
    ("kdef", "identity", "paper", "alpha"),
    ("kdef", "identity", "cross_session", "alpha"),
    ("kdef", "identity", "cross_angle", "alpha"),
    ("kdef", "expression", "paper", "beta"),
    ("kdef", "expression", "subject_independent", "beta"),
    ("fei", "gender", "paper", "alpha"),
    ("fei", "gender", "subject_independent", "alpha"),
)


def study_plan(models=("resnet34", "logreg", "svm"), image_baseline: bool = True, rows=STUDY_ROWS) -> list[dict]:
    plan = []
    for dataset, task, protocol, input in rows:
        plan += [dict(dataset=dataset, task=task, protocol=protocol, input=input, model=m) for m in models]
        if image_baseline:
            plan.append(dict(dataset=dataset, task=task, protocol=protocol, input="image", model="resnet34"))
    return plan


def run_plan(coeffs: dict[str, pd.DataFrame | list[pd.DataFrame]], plan: list[dict], results_dir: str | Path, *,
             n_folds=None,
             epochs=None, image_epochs=None, image_size=None, seed: int = 0, device=None, batch_size=None,
             identity_max_sets: int | None = None, identity_session: str | None = "A",
             progress: bool = True) -> pd.DataFrame:
    """Run every plan entry, save each result as JSON in ``results_dir``; protocols the data cannot support
    (e.g. cross-session on a one-session set) are logged as skipped with the reason. Returns a summary table.

    ``coeffs[dataset]`` may be a list of coefficient tables of the same images (raw backend output, then fitted
    variants): coefficient inputs run on each (their ``backend`` column tells them apart in Table 1), the image
    baseline once."""
    from tqdm.auto import tqdm

    jobs = []
    for entry in plan:
        tables = coeffs[entry["dataset"]]
        tables = tables if isinstance(tables, (list, tuple)) else [tables]
        for df in (tables[:1] if entry["input"] == "image" else tables):
            jobs.append((entry, df))
    rows = []
    for entry, df in tqdm(jobs, desc="classification runs", disable=not progress):
        entry = {**entry, "backend": str(df["backend"].iloc[0])}
        is_image = entry["input"] == "image"
        kwargs = {}
        if entry["task"] == "identity" and entry["protocol"] == "paper" and identity_max_sets:
            kwargs["max_sets"] = int(identity_max_sets)
        if entry["task"] == "identity" and entry["protocol"] in ("paper", "cross_angle", "leave_expression_out"):
            kwargs["session"] = identity_session
        folds = n_folds if entry["protocol"] in ("paper", "subject_independent") else None
        try:
            result = run_task(df, entry["task"], entry["protocol"], entry["input"], entry["model"],
                              backend=entry["backend"], n_folds=folds,
                              epochs=image_epochs if is_image else epochs, seed=seed, device=device,
                              image_size=image_size, batch_size=batch_size, protocol_kwargs=kwargs or None)
        except P.ProtocolUnavailable as exc:
            rows.append({**entry, "status": f"skipped: {exc}"})
            continue
        save_result(result, results_dir)
        rows.append({**entry, "status": "ok", "accuracy_mean": result["accuracy_mean"],
                     "accuracy_std": result["accuracy_std"], "n_folds": result["n_folds"],
                     "seconds_per_input": result["seconds_per_input"]})
    return pd.DataFrame(rows)
