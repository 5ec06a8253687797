"""One experiment: a task × protocol × input × model over every fold (:func:`run_task`), the unit of Table 1.

Tasks and their labels, the default input per task, and the default number of folds per protocol live here.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import pandas as pd
import torch

from ..config import resolve_device
from . import protocols as P
from .aggregate import aggregate_sets, make_aggregator
from .models import SKLEARN_MODELS
from .trainer import (DEFAULT_EPOCHS, INPUTS, MODELS, default_batch_size, input_matrix, n_threads,
                      train_image_model, train_vector_model)

TASK_LABEL = {"identity": "subject", "expression": "expression", "gender": "gender"}
TASK_DEFAULT_INPUT = {"identity": "alpha", "expression": "beta", "gender": "alpha"}
EXPRESSION_ORDER = P.EXPRESSIONS
DEFAULT_N_FOLDS = {"paper": 3, "subject_independent": 5, "cross_session": 1, "cross_angle": 5,
                   "leave_expression_out": 7}


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
    Raises :class:`facelib.classify.protocols.ProtocolUnavailable` when the protocol cannot run on this data.

    Returns a JSON-able dict with keys: ``task, protocol, input, model, backend, device, torch_threads,
    torch_version, seed, epochs, n_folds, batch_size, batch_sizes, lr, weight_decay, val_fraction, patience,
    image_size, crop_to_box, classes, fold_accuracies, accuracy_mean, accuracy_std, n_train, n_test`` (means
    over folds, in samples: aggregated sets count once), ``n_train_per_fold, n_test_per_fold, n_train_images,
    seconds_per_input, seconds_per_epoch, train_seconds, wall_seconds, best_epochs, confusion`` (counts summed
    over folds, rows true / columns predicted in ``classes`` order), ``per_angle_accuracy`` (angle → accuracy
    over single-picture test samples; ``{}`` for set samples), ``per_angle_counts``, ``fold_names``,
    ``predictions`` (list of ``{fold, image_id, true, pred, angle}``), ``leak_free``, ``protocol_info``.
    """
    old_threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(int(num_threads))
    try:
        return _run_task(coeffs_df, task=task, protocol=protocol, input=input, model=model, backend=backend,
                         n_folds=n_folds, epochs=epochs, seed=seed, device=device, image_size=image_size,
                         batch_size=batch_size, lr=lr, weight_decay=weight_decay, val_fraction=val_fraction,
                         patience=patience, aggregator=aggregator, pretrained=pretrained, crop_to_box=crop_to_box,
                         protocol_kwargs=protocol_kwargs, keep_predictions=keep_predictions, verbose=verbose)
    finally:
        torch.set_num_threads(old_threads)


def _run_task(coeffs_df, *, task, protocol, input, model, backend, n_folds, epochs, seed, device, image_size,
              batch_size, lr, weight_decay, val_fraction, patience, aggregator, pretrained, crop_to_box,
              protocol_kwargs, keep_predictions, verbose) -> dict:
    """:func:`run_task` without the thread setting (every argument by keyword)."""
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
    agg_name = aggregator if isinstance(aggregator, str) else getattr(aggregator, "name", None)
    if isinstance(aggregator, str):  # "mean", "median", "cnet" (C-Net confidences of the table's rows)
        aggregator = make_aggregator(aggregator, df)
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
    threads = n_threads()
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
        "aggregator": (agg_name or "mean") if kind == "vector" and any(f.train.ndim == 2 for f in folds) else None,
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

