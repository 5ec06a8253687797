"""Training and evaluation of the classifiers (Table 1), with timing (Table 2) and confusion counts (Table 3).

* :func:`train_vector_model` — a vector classifier (1-D ResNet-34, MLP, or a scikit-learn baseline) on coefficient
  vectors or per-picture features.
* :func:`train_image_model` — torchvision ResNet-34 on the colour head crops (the paper's "images" column).
One experiment over all folds is :mod:`facelib.classify.experiment`; the study plan :mod:`facelib.classify.plan`.

**One recipe for every network** (vector and image alike, :data:`RECIPE`): cross-entropy, AdamW, a cosine learning
rate schedule over at most ``max_epochs``, early stopping when the validation accuracy has not improved for
``patience`` epochs, and the best-validation checkpoint restored — the number of epochs comes from the validation
curve, never from a time budget. Patience counts only once the network has shown it learnt
(:func:`~facelib.classify.validation.has_learnt`: validation accuracy above the majority rate by one binomial
standard error *and* validation loss below the class prior's): a network still at chance trains on to the cap,
not stopped on a flat start, and ``ran_to_cap`` says so. The validation split is given by the caller (:mod:`facelib.classify.validation`:
disjoint from the fit split in pictures, and in people where the protocol holds people out); without one a
stratified split of the training data is carved. The scikit-learn baselines choose ``C`` on the same split
(ascending grid; only the classifier is refitted, warm-started where it can be; the grid stops once validation
accuracy has fallen twice in a row — ``C_tried`` and ``grid_stop`` say what ran). Precision: chosen by the device
and input (:mod:`facelib.classify.precision`, overridable with ``precision``), returned as ``precision``.
Seeds are fixed (``random``, ``numpy``, ``torch``), deterministic algorithms requested (``warn_only``), features
standardised with statistics of the fit split only. The test side is never looked at before the end.
Timing: ``seconds_per_epoch`` is the mean wall time of one training pass (forward+backward+step over the fit
split, no evaluation); ``seconds_per_input`` = that / number of fit inputs.
"""
from __future__ import annotations

import copy
import os
import random
import sys
import time
import warnings

# Passive OpenMP waiting: spinning threads make 2-thread torch up to 10× slower when the 2 cores are shared.
# Only effective if torch's OpenMP runtime is not loaded yet (set it in the environment to be sure).
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from torch import nn  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from ..config import resolve_device  # noqa: E402
from ..face3d.reconstruct import coeff_matrix  # noqa: E402
from .images import augment_unit, load_images, normalize, unit_tensor  # noqa: E402
from .models import SKLEARN_MODELS, TORCH_VECTOR_MODELS, baseline, image_resnet34, vector_model  # noqa: E402
from .precision import Precision, choose_precision  # noqa: E402
from .validation import has_learnt, learning_threshold, prior_loss  # noqa: E402

INPUTS = ("alpha", "beta", "alpha+beta", "image", "hog", "pixels", "dlib")
MODELS = TORCH_VECTOR_MODELS + SKLEARN_MODELS  # + "resnet34" on images when input == "image"

# The shared recipe: ``max_epochs`` is a cap (runs stop early on the validation curve), never a time budget.
RECIPE = {"optimizer": "AdamW", "schedule": "cosine", "lr": 1e-3, "weight_decay": 0.05,
          "max_epochs": {"vector": 150, "image": 60}, "patience": {"vector": 15, "image": 10},
          "val_fraction": 0.15}
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
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
    perm = torch.randperm(n, generator=gen) if gen is not None else torch.arange(n)
    out = list(perm.split(batch_size))
    if len(out) > 1 and len(out[-1]) == 1:  # BatchNorm cannot train on a batch of one
        out[-2] = torch.cat([out[-2], out[-1]])
        out.pop()
    return out



def softmax_scores(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits.float(), dim=1).numpy()


def _identity(x, gen=None):
    return x


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def make_adamw(params, lr: float, weight_decay: float, device: str) -> torch.optim.Optimizer:
    """AdamW, fused into one kernel per step where this torch has a fused AdamW for the device (CPU since torch
    2.4, CUDA, MPS): the same update, without a Python loop over ~100 parameter tensors every step."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):  # no fused kernel for this device / torch
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def _fit_torch(model, X_fit, y_fit, X_val, y_val, X_test, *, epochs, batch_size, lr, weight_decay, patience,
               device, seed, train_input=None, eval_input=None, precision: Precision | None = None,
               eval_batch: int | None = None, verbose=False, desc="", progress=False) -> dict:
    """The shared recipe: AdamW + cosine schedule over at most ``epochs``, early stopping after ``patience``
    epochs without a better validation (accuracy, then loss) — counted only from the first epoch that meets
    :func:`~facelib.classify.validation.has_learnt` (``learning_epoch``; ``None``: never) — best checkpoint
    restored; class scores on X_test. ``ran_to_cap``: training stopped at the cap, not on the validation curve.

    ``X_*``: tensors already on ``device`` (converted once by the caller; batches are indexed from them).
    ``train_input(xb, gen)`` / ``eval_input(xb)`` turn an indexed batch into the network's input (augmentation,
    normalisation; identity for vectors). ``precision``: the forward pass's autocast and memory format
    (:mod:`facelib.classify.precision`); the loss and the returned logits are float32.
    ``progress``: a bar over the epochs (its total is the cap; the run usually stops earlier, so its ETA is an
    upper bound) showing the validation accuracy and the best epoch so far.
    History per epoch: ``seconds`` (the training pass), of which ``data_seconds`` (indexing, augmentation,
    conversion), and ``val_seconds`` (the validation pass); on an accelerator the split is approximate (kernels
    run asynchronously; the epoch's total is synchronised)."""
    prec = precision or Precision("fp32", device.split(":")[0])
    train_input = train_input or _identity
    eval_input = eval_input or _identity
    model = model.to(device)
    if prec.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = make_adamw(model.parameters(), lr, weight_decay, device)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(int(epochs), 1))
    scaler = prec.scaler()
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(int(seed))
    y_fit_t = torch.as_tensor(y_fit, dtype=torch.long).to(device)
    y_val_t = torch.as_tensor(y_val, dtype=torch.long).to(device)
    step_eval = int(eval_batch or max(batch_size, 256))

    def logits_of(X) -> torch.Tensor:
        """float32 logits of X (on the device), in evaluation mode, without autograd."""
        model.eval()
        outs = []
        with torch.inference_mode(), prec.autocast():
            for i in range(0, len(X), step_eval):
                outs.append(model(eval_input(X[i:i + step_eval])).float())
        return torch.cat(outs) if outs else torch.zeros(0, 1, device=device)

    history, epoch_times = [], []
    bar = tqdm(total=int(epochs), desc=f"{desc} epochs (cap {int(epochs)}, early stop)".strip(), unit="epoch",
               leave=False, disable=not progress, mininterval=0)  # one update per epoch: seconds apart
    best = (-1.0, np.inf)
    best_state, best_epoch, stale = None, 0, 0
    y_val_np = np.asarray(torch.as_tensor(y_val).cpu())
    learnt_at, prior = learning_threshold(y_val_np), prior_loss(y_val_np)  # patience counts from has_learnt
    learning_epoch = None  # first epoch that met the learning rule
    for epoch in range(1, int(epochs) + 1):
        model.train()
        t0 = time.perf_counter()
        t_data = 0.0
        total, n_seen = torch.zeros((), device=device), 0
        for b in _batches(len(X_fit), batch_size, gen):
            td = time.perf_counter()
            idx = b.to(device, non_blocking=True)
            xb, yb = train_input(X_fit.index_select(0, idx), gen), y_fit_t.index_select(0, idx)
            t_data += time.perf_counter() - td
            opt.zero_grad(set_to_none=True)
            with prec.autocast():
                out = model(xb)
            loss = loss_fn(out.float(), yb)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            total += loss.detach() * len(b)
            n_seen += len(b)
        sched.step()
        train_loss = float(total) / max(n_seen, 1)
        _sync(device)
        epoch_times.append(time.perf_counter() - t0)
        rec = {"epoch": epoch, "train_loss": train_loss, "seconds": epoch_times[-1], "data_seconds": t_data,
               "lr": float(opt.param_groups[0]["lr"])}
        if len(X_val):
            tv = time.perf_counter()
            logits = logits_of(X_val)
            val_loss = float(loss_fn(logits, y_val_t))
            val_acc = float((logits.argmax(1) == y_val_t).float().mean())
            rec.update(val_loss=val_loss, val_accuracy=val_acc, val_seconds=time.perf_counter() - tv)
            if (val_acc, -val_loss) > (best[0], -best[1]):
                best, best_epoch, stale = (val_acc, val_loss), epoch, 0
                state = model.state_dict()
                if best_state is None:  # clone once, then copy into the same buffers
                    best_state = {k: v.detach().clone() for k, v in state.items()}
                else:
                    for k, v in state.items():
                        best_state[k].copy_(v)
            elif learning_epoch is not None:
                stale += 1
            if learning_epoch is None and has_learnt(val_acc, val_loss, y_val_np):
                learning_epoch = epoch
        history.append(rec)
        bar.update(1)
        if len(X_val):
            bar.set_postfix(val_acc=f"{rec['val_accuracy']:.3f}", best_epoch=best_epoch, refresh=False)
        if verbose:
            print(f"{desc} epoch {epoch}/{epochs} " + " ".join(f"{k}={v:.4g}" for k, v in rec.items()
                                                              if k != "epoch"), file=sys.stderr, flush=True)
        if patience is not None and len(X_val) and stale >= patience:
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_epoch = len(history)
    scores = (softmax_scores(logits_of(X_test).cpu()) if X_test is not None and len(X_test)
              else np.zeros((0, 1)))
    spe = float(np.mean(epoch_times)) if epoch_times else float("nan")
    return {"predictions": scores.argmax(1) if len(scores) else np.zeros(0, dtype=int), "scores": scores,
            "history": history, "best_epoch": best_epoch, "epochs_run": len(history),
            "learning_threshold": learnt_at, "prior_loss": prior, "learning_epoch": learning_epoch,
            "ran_to_cap": len(history) >= int(epochs),
            "best_val_accuracy": None if best_state is None else best[0],
            "seconds_per_epoch": spe, "seconds_per_input": spe / max(len(X_fit), 1),
            "train_seconds": float(np.sum(epoch_times)), "n_fit": int(len(X_fit)), "n_val": int(len(X_val)),
            "precision": prec.name, "channels_last": bool(prec.channels_last), "precision_reason": prec.reason,
            "model": model}


def sklearn_scores(pipe, X) -> np.ndarray:
    """Per-class scores of a fitted scikit-learn pipeline: probabilities (logreg) or a softmax of the decision
    function (SVMs) — what a set of pictures averages."""
    if hasattr(pipe, "predict_proba") and getattr(pipe[-1], "probability", True):
        try:
            return pipe.predict_proba(X)
        except AttributeError:
            pass
    d = np.asarray(pipe.decision_function(X), dtype=np.float64)
    if d.ndim == 1:
        d = np.stack([-d, d], axis=1)
    d = d - d.max(1, keepdims=True)
    e = np.exp(d)
    return e / e.sum(1, keepdims=True)


def _grid_fell_twice(history: list[dict]) -> bool:
    a = [h["val_accuracy"] for h in history[-3:]]
    return len(a) == 3 and a[2] < a[1] < a[0]


def _fit_sklearn(model, X_fit, y_fit, X_val, y_val, X_test, seed, n_classes, C=None) -> dict:
    """Choose C on the validation split (``C_GRID``, ascending; fixed when ``C`` is given), then score X_test.

    The steps before the classifier (scaler; PCA → LDA for Fisherfaces) do not depend on C: they are fitted once
    and the classifier alone is refitted along the grid (warm-started where it can be: logistic regression).
    The grid stops once the validation accuracy has fallen twice in a row (larger C only overfits more); the
    result's ``history`` lists every C tried, ``C_tried`` the values and ``grid_stop`` why the grid ended.
    Ties keep the smaller C."""
    grid = [C] if C is not None else sorted(C_GRID)
    if C is None and not len(X_val):
        grid = grid[:1]  # nothing to choose on: the first C (what the full grid picked without a validation split)
    pipe = baseline(model, seed=seed, C=grid[0], n_fit=len(X_fit), n_features=X_fit.shape[1])
    name, est = pipe.steps[-1]
    t0 = time.perf_counter()
    prefix = pipe[:-1]
    Z_fit = prefix.fit_transform(X_fit, y_fit)
    Z_val = prefix.transform(X_val) if len(X_val) else X_val
    t_prefix = time.perf_counter() - t0
    best, history = None, []
    stop = ("fixed C" if C is not None else "no validation split: first C" if len(grid) < len(C_GRID)
            else "grid exhausted")
    for c in grid:
        est.set_params(C=c)
        t0 = time.perf_counter()
        with warnings.catch_warnings():  # an unconverged large-C fit is recorded in the history instead
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(Z_fit, y_fit)
        dt = time.perf_counter() - t0
        n_iter, cap = int(np.max(getattr(est, "n_iter_", 0))), getattr(est, "max_iter", -1)
        acc = float((est.predict(Z_val) == y_val).mean()) if len(X_val) else float("nan")
        history.append({"C": c, "val_accuracy": acc, "seconds": dt,
                        "warm_start": bool(getattr(est, "warm_start", False)) and len(history) > 0,
                        "n_iter": n_iter, "converged": cap is None or cap < 0 or n_iter < cap})
        if best is None or acc > best[0]:
            best = (acc, c, copy.deepcopy(est), dt)
        if C is None and _grid_fell_twice(history):
            a = [h["val_accuracy"] for h in history[-3:]]
            stop = (f"validation accuracy fell twice in a row ({a[0]:.4f} → {a[1]:.4f} → {a[2]:.4f} at C = "
                    f"{history[-3]['C']:g}, {history[-2]['C']:g}, {c:g})")
            break
    acc, c, est, dt = best
    pipe = Pipeline(pipe.steps[:-1] + [(name, est)])
    classes = np.asarray(est.classes_, dtype=np.int64)
    scores = np.zeros((0 if X_test is None else len(X_test), n_classes))
    if len(scores):
        scores[:, classes] = sklearn_scores(pipe, X_test)  # a class absent from the fit split scores 0
    one_fit = t_prefix + dt
    return {"predictions": scores.argmax(1) if len(scores) else np.zeros(0, dtype=int),
            "scores": scores, "history": history, "C_tried": [h["C"] for h in history], "grid_stop": stop,
            "best_epoch": 1, "epochs_run": 1, "C": c, "best_val_accuracy": acc, "seconds_per_epoch": one_fit,
            "seconds_per_input": one_fit / max(len(X_fit), 1),
            "train_seconds": float(t_prefix + np.sum([h["seconds"] for h in history])),
            "n_fit": len(X_fit), "n_val": len(X_val), "model": pipe, "device": "cpu", "precision": _sklearn_precision(est)}


def _sklearn_precision(est) -> str:
    """What a fitted scikit-learn classifier computed in: liblinear / libsvm always float64; lbfgs keeps float32."""
    w = getattr(est, "coef_", None)
    if w is None or getattr(est, "dual_coef_", None) is not None:
        return "fp64"
    return "fp32" if np.asarray(w).dtype == np.float32 else "fp64"


# -------------------------------------------------------------------------------------------- vector model
def train_vector_model(X_train, y_train, X_test=None, y_test=None, *, X_val=None, y_val=None,
                       model: str = "resnet34", n_classes: int | None = None, epochs: int | None = None,
                       batch_size: int = 128, lr: float = RECIPE["lr"], weight_decay: float = RECIPE["weight_decay"],
                       val_fraction: float = RECIPE["val_fraction"], patience: int | None = RECIPE["patience"]["vector"],
                       device: str | None = "cpu", seed: int = 0, standardize: bool = True, C: float | None = None,
                       verbose: bool = False, progress: bool = False, desc: str | None = None,
                       precision: str = "auto") -> dict:
    """Train a classifier on vectors (``y``: integer class codes 0..C-1) with the shared recipe.

    ``X_val, y_val``: the validation split (disjoint from ``X_train``); without it a stratified ``val_fraction``
    of ``X_train`` is carved. ``epochs``: the cap (default ``RECIPE["max_epochs"]["vector"]``).
    ``model``: ``resnet34`` (:class:`~facelib.classify.models.ResNet34Vector`), ``mlp``, or the scikit-learn
    baselines (``logreg``, ``svm``, ``linsvm``, ``fisherfaces``; ``C`` chosen on the validation split).
    Returns ``predictions`` and ``scores`` (per-class, on ``X_test``), ``accuracy`` (when ``y_test`` given),
    ``seconds_per_epoch``, ``seconds_per_input``, ``train_seconds``, ``best_epoch``, ``epochs_run``, ``history``,
    ``n_fit``, ``n_val``, ``device``, and ``model`` (the fitted torch module or sklearn pipeline).
    ``progress``: an epoch bar (``desc`` names it) for the networks. ``precision``: ``auto`` (by the device,
    :func:`facelib.classify.precision.choose_precision`), ``fp32``, ``bf16`` or ``fp16`` for the networks; the
    one used is returned as ``precision``.
    """
    X_train = np.asarray(X_train, dtype=np.float32)
    y_train = np.asarray(y_train, dtype=np.int64)
    X_test = None if X_test is None else np.asarray(X_test, dtype=np.float32)
    n_classes = int(n_classes or (y_train.max() + 1))
    if X_val is None:
        fit, val = carve_validation(y_train, val_fraction, seed)
        X_fit, y_fit, X_val, y_val = X_train[fit], y_train[fit], X_train[val], y_train[val]
    else:
        X_fit, y_fit = X_train, y_train
        X_val, y_val = np.asarray(X_val, dtype=np.float32), np.asarray(y_val, dtype=np.int64)
    set_seed(seed)
    if model in SKLEARN_MODELS:
        out = _fit_sklearn(model, X_fit, y_fit, X_val, y_val, X_test, seed, n_classes, C=C)
    else:
        device = resolve_device(device)
        mean = X_fit.mean(0) if standardize else np.zeros(X_fit.shape[1], np.float32)
        std = X_fit.std(0) if standardize else np.ones(X_fit.shape[1], np.float32)
        std = np.where(std > 1e-12, std, 1.0).astype(np.float32)

        def z(X):
            return ((X - mean) / std).astype(np.float32)

        def on_device(X):  # converted once; batches are indexed from it
            return torch.from_numpy(z(X)).to(device)

        net = vector_model(model, X_fit.shape[1], n_classes)
        prec = choose_precision(device, "vector", precision=precision)
        out = _fit_torch(net, on_device(X_fit), y_fit, on_device(X_val), y_val,
                         None if X_test is None else on_device(X_test),
                         epochs=int(epochs or RECIPE["max_epochs"]["vector"]), batch_size=batch_size, lr=lr,
                         weight_decay=weight_decay, patience=patience, device=device, seed=seed, precision=prec,
                         verbose=verbose, desc=desc or model, progress=progress)
        out.update(device=device, standardize_mean=mean.tolist(), standardize_std=std.tolist())
    if y_test is not None and X_test is not None and len(X_test):
        out["accuracy"] = float((out["predictions"] == np.asarray(y_test)).mean())
    return out


# --------------------------------------------------------------------------------------------- image model
FLOAT_BANK_BYTES = 1 << 30  # a split held as float32 up to 1 GiB (48 px: ~30 k pictures), else as uint8


def image_bank(X: np.ndarray, device: str, float_bytes: int = FLOAT_BANK_BYTES) -> torch.Tensor:
    """uint8 pictures (N, S, S, 3) → one (N, 3, S, S) tensor on ``device``: float in [0, 1] when it fits
    ``float_bytes``, else uint8 (scaled per batch by :func:`~facelib.classify.images.normalize`)."""
    as_float = X.size * 4 <= float_bytes
    return unit_tensor(X, as_float=as_float).to(device)


def image_eval_batch(image_size: int) -> int:
    """Evaluation batch for pictures: 256 at ≤ 64 px, fewer for larger pictures (activation memory)."""
    return int(max(32, min(256, 256 * (64 / max(int(image_size), 1)) ** 2)))


def image_inputs(prec: Precision, augment: bool = True, flip: bool = True):
    """(train_input(xb, gen), eval_input(xb)): a [0, 1] (or uint8) batch → the network's input — augmented
    (training, when ``augment``), ImageNet-normalised, in the precision's memory format."""
    def to_unit(xb):
        return xb.float().div_(255.0) if xb.dtype == torch.uint8 else xb

    def eval_input(xb):
        return normalize(to_unit(xb)).contiguous(memory_format=prec.memory_format(4))

    def train_input(xb, gen):
        xb = to_unit(xb)
        if augment:
            xb = augment_unit(xb, gen, flip=flip)
        return normalize(xb).contiguous(memory_format=prec.memory_format(4))

    return train_input, eval_input


def train_image_model(paths_train, y_train, paths_test=None, y_test=None, *, paths_val=None, y_val=None,
                      boxes_train=None, boxes_test=None, boxes_val=None, n_classes: int | None = None,
                      image_size: int = 64, epochs: int | None = None, batch_size: int = 32,
                      lr: float = RECIPE["lr"], weight_decay: float = RECIPE["weight_decay"],
                      val_fraction: float = RECIPE["val_fraction"], patience: int | None = RECIPE["patience"]["image"],
                      device: str | None = "cpu", seed: int = 0, pretrained: bool = False, augment: bool = True,
                      flip: bool = True, verbose: bool = False, progress: bool = False,
                      desc: str | None = None, precision: str = "auto") -> dict:
    """Train torchvision's ResNet-34 on the colour head crops (:mod:`facelib.classify.images`) with the shared
    recipe: ``image_size``², augmentation when ``augment`` (random resized crop, colour jitter, and horizontal
    flips when ``flip``). Validation: ``paths_val``/``y_val`` or a carved split. ``precision``: as
    :func:`train_vector_model` (``auto``: bf16 + channels_last on a CPU with native bf16 from
    ``CPU_BF16_MIN_IMAGE_SIZE`` px, mixed precision on CUDA). Same return keys as :func:`train_vector_model` plus
    ``image_size``.

    Each split is converted once to a (N, 3, S, S) tensor on the device — float in [0, 1] when it fits
    ``FLOAT_BANK_BYTES``, else uint8 scaled per batch — and batches are indexed from it; augmentation
    (:func:`~facelib.classify.images.augment_unit`) and normalisation run batched on the device."""
    device = resolve_device(device)
    set_seed(seed)
    y_train = np.asarray(y_train, dtype=np.int64)
    n_classes = int(n_classes or (y_train.max() + 1))
    X_train = load_images(list(paths_train), image_size, boxes_train)
    X_test = None if paths_test is None else load_images(list(paths_test), image_size, boxes_test)
    if paths_val is None:
        fit, val = carve_validation(y_train, val_fraction, seed)
        X_fit, y_fit, X_val, y_val = X_train[fit], y_train[fit], X_train[val], y_train[val]
    else:
        X_fit, y_fit = X_train, y_train
        X_val, y_val = load_images(list(paths_val), image_size, boxes_val), np.asarray(y_val, dtype=np.int64)
    net = image_resnet34(n_classes, pretrained=pretrained)
    prec = choose_precision(device, "image", image_size=image_size, precision=precision)
    train_input, eval_input = image_inputs(prec, augment=augment, flip=flip)
    out = _fit_torch(net, image_bank(X_fit, device), y_fit, image_bank(X_val, device), y_val,
                     None if X_test is None else image_bank(X_test, device),
                     epochs=int(epochs or RECIPE["max_epochs"]["image"]), batch_size=batch_size, lr=lr,
                     weight_decay=weight_decay, patience=patience, device=device, seed=seed, precision=prec,
                     train_input=train_input, eval_input=eval_input, eval_batch=image_eval_batch(image_size),
                     verbose=verbose, desc=desc or "image-resnet34", progress=progress)
    out.update(device=device, image_size=int(image_size))
    if y_test is not None and X_test is not None and len(X_test):
        out["accuracy"] = float((out["predictions"] == np.asarray(y_test)).mean())
    return out
