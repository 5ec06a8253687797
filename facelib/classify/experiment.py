"""One experiment: a task × protocol × input × model over every split (:func:`run_task` → :class:`TaskResult`),
the unit of Table 1.

Inputs come in three kinds: **coefficients** (``alpha``, ``beta``, ``alpha+beta``; a set sample is its members'
aggregate), **images** (ResNet-34 on the colour head crops) and per-picture **features** (``hog``, ``pixels``,
``dlib``). Per-picture models (images, features) train on the fold's pictures; on a set protocol (the paper's
identity) they are also scored on the test *sets* — the mean of the members' class scores — and set-trained
coefficient models are also scored on single test pictures, so every model has a k = 1 and a k = 3 figure
(``accuracy_by_k``). The k = 1 figure of a coefficient model on a set protocol comes from a second model of the
same kind trained and selected on single pictures (the same fit / validation pictures), not from the set-trained
model scored off-design. Every split gets an inner validation split (:mod:`facelib.classify.validation`) for model
selection (C, early stopping, best epoch); models are *not* refit on fit + validation, so they learn from
``n_fit_pictures`` (both arms alike). The test side is used once, at the end (``evaluate="validation"`` scores the
inner validation side instead and never touches it: for choosing settings, e.g. benchmarks/bench_rnet.py quality).

Uncertainty: mean ± std over repeats / folds; a single split, and the protocols whose folds are held-out conditions
(:data:`facelib.classify.protocols.POOLED`: cross-angle, leave-expression-out), report the accuracy pooled over
every test picture with a 95 % interval from resampling *people* (:func:`bootstrap_ci` with ``groups``), and the
per-condition accuracies beside (``fold_labels``, ``fold_accuracies``).

A cell runs in three steps: :func:`prepare_cell` (once: checks, the task's table, the splits, the input matrix),
:func:`run_split` (one split: inner validation split, training, scoring — seeded by the split, so the splits are
independent tasks) and :func:`finish_cell` (the :class:`TaskResult` from the splits' records, in split order).
:func:`run_task` runs them in a row; :func:`facelib.classify.plan.run_plan` with a Dask executor runs every split of
every cell as its own task (:mod:`facelib.executor`).
"""
from __future__ import annotations

import sys
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

from ..config import resolve_device
from . import protocols as P
from .aggregate import aggregate_sets, make_aggregator
from .images import FEATURE_INPUTS, picture_features
from .models import SKLEARN_MODELS
from .task_result import TaskResult, _jsonable  # noqa: F401 — TaskResult is this module's result type
from .trainer import (INPUTS, MODELS, RECIPE, default_batch_size, input_matrix, n_threads, train_image_model,
                      train_vector_model)
from .validation import inner_split

TASK_LABEL = P.TASK_LABEL
TASK_DEFAULT_INPUT = {"identity": "alpha", "expression": "beta", "gender": "alpha"}
EXPRESSION_ORDER = P.EXPRESSIONS
DEFAULT_N_FOLDS = {"paper": 5, "random": 5, "two_picture": 5, "subject_independent": 5, "cross_session": 1,
                   "cross_angle": 3, "leave_expression_out": 7}
CPU_IMAGE_SIZE, GPU_IMAGE_SIZE = 64, 224
N_BOOTSTRAP = 1000
FEATURE_SIZE = {"hog": 64, "pixels": 32, "dlib": 150}  # crop side (px) each feature is computed on


def _task_table(df: pd.DataFrame, task: str) -> pd.DataFrame:
    """Usable rows of the dataset the task is defined on (KDEF for identity/expression, FEI for gender when the
    table holds both), with a label, and a 0..n-1 index."""
    label = P.label_column(task)
    if label not in df.columns:
        raise P.ProtocolUnavailable(f"task {task} needs a {label!r} column; this table's label columns give "
                                    f"tasks {P.tasks_for(df)}")
    df = df[P.usable_mask(df)]
    df = df[df[label].notna()]
    if "dataset" in df.columns and task in TASK_LABEL:
        ds = df["dataset"].astype(str)
        want = "fei" if task == "gender" else "kdef"
        if (ds == want).any():
            df = df[ds == want]
    if task == "expression" and df["expression"].astype(str).isin(EXPRESSION_ORDER).any():
        df = df[df["expression"].astype(str).isin(EXPRESSION_ORDER)]
    return df.reset_index(drop=True)


def _classes(task: str, y: pd.Series) -> list[str]:
    present = sorted(set(y.astype(str)))
    if task == "expression" and set(present) <= set(EXPRESSION_ORDER):
        return [c for c in EXPRESSION_ORDER if c in present]
    return present


def _kind(input: str) -> str:
    return "images" if input == "image" else "features" if input in FEATURE_INPUTS else "coefficients"


def _column_note(df: pd.DataFrame, column: str) -> str:
    if column not in df.columns:
        return ""
    return "; ".join(sorted(set(df[column].astype(str)) - {"", "nan", "None", "False", "<NA>"}))


def transductive_note(df: pd.DataFrame) -> str:
    """'' when the coefficients used nothing learnt from the evaluation pictures; else what was (the table's
    ``transductive`` column when the fitting stage writes one; a full fit's texture basis and skin model)."""
    if _column_note(df, "transductive"):
        return _column_note(df, "transductive")
    backend = str(df["backend"].iloc[0]) if "backend" in df.columns and len(df) else ""
    if "fit_full" in backend or backend.endswith("+full"):
        return "texture basis and skin model built from this table's pictures (test pictures included)"
    return ""


def exposure_note(df: pd.DataFrame) -> str:
    """'' unless a representation that coded the coefficients was trained, without labels, on pictures that
    include Table 1 test pictures (of other people, or of another repeat): the table's ``exposure`` column,
    written by :func:`facelib.fitting.crossfit.study_rnet` for the cross-fitted R-Net and C-Net."""
    return _column_note(df, "exposure")


def tuned_on_test_note(df: pd.DataFrame) -> str:
    """'' unless the coefficient table says its settings were chosen on Table 1's test folds (its
    ``tuned_on_test`` column, written by :func:`facelib.fitting.crossfit.study_rnet` from ``rnet_settings``)."""
    return _column_note(df, "tuned_on_test")


def bootstrap_ci(correct: np.ndarray, seed: int = 0, n: int = N_BOOTSTRAP, groups=None) -> list[float]:
    """Percentile bootstrap 95 % interval of the mean of a 0/1 vector (seeded). With ``groups`` (the person of
    each item) a cluster bootstrap: *people* are drawn with replacement and each draw's accuracy is its people's
    correct items over their items — pictures of one person are not independent, so this is the honest interval;
    without, items are resampled as if independent."""
    correct = np.asarray(correct, dtype=np.float64)
    if not len(correct):
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    if groups is None:
        means = correct[rng.integers(0, len(correct), size=(n, len(correct)))].mean(1)
    else:
        _, inv = np.unique(np.asarray(groups).astype(str), return_inverse=True)
        hits, counts = np.bincount(inv, weights=correct), np.bincount(inv).astype(np.float64)
        g = len(counts)
        draws = rng.multinomial(g, np.full(g, 1.0 / g), size=n)  # times each person is drawn
        means = (draws @ hits) / (draws @ counts)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def run_task(coeffs_df: pd.DataFrame, task: str, protocol: str = "paper", input: str | None = None,
             model: str = "resnet34", **options) -> TaskResult:
    """Run one Table-1 cell: ``task`` × ``protocol`` × ``input`` × ``model`` over all splits.

    ``task``: identity, expression, gender, or any other label column (a generic task). ``input``: ``alpha``,
    ``beta``, ``alpha+beta`` (coefficients), ``image`` (ResNet-34 on pictures), ``hog``/``pixels``/``dlib``
    (per-picture features). ``model``: ``resnet34``, ``mlp``, ``logreg``, ``svm``, ``linsvm``, ``fisherfaces``.
    Options (keyword only; see :func:`prepare_cell`): ``backend, n_folds, epochs`` (the cap;
    runs stop on the validation curve), ``seed, device, image_size, batch_size, lr, weight_decay, val_fraction,
    patience, aggregator, pretrained, crop_to_box, protocol_kwargs, keep_predictions, num_threads, verbose, progress,
    evaluate, center_parts`` (``progress``: an epoch bar per network trained; ``evaluate``: ``"test"``, or
    ``"validation"`` to score each split's inner validation side — carved from its training side — and never its
    test side; ``center_parts``: on R-Net tables, subtract each cross-fit part's fit-split mean, default on).
    ``num_threads`` sets ``torch.set_num_threads`` for the run (restored after).
    Raises :class:`facelib.classify.protocols.ProtocolUnavailable` when the protocol cannot run on this data.
    """
    old_threads = torch.get_num_threads()
    num_threads = options.pop("num_threads", None)
    if num_threads:
        torch.set_num_threads(int(num_threads))
    try:
        return _run_task(coeffs_df, task=task, protocol=protocol, input=input, model=model, **options)
    finally:
        torch.set_num_threads(old_threads)


def _boxes(df: pd.DataFrame, crop_to_box: bool):
    if not (crop_to_box and "box" in df.columns):
        return None
    whole = (df["box_source"].astype(str) == "whole_frame").to_numpy() if "box_source" in df.columns \
        else np.zeros(len(df), dtype=bool)  # a whole-frame fallback box is no face crop: keep the picture
    return [None if (b is None or (isinstance(b, float) and np.isnan(b)) or w) else list(b)
            for b, w in zip(df["box"], whole)]


def _run_task(coeffs_df, **options) -> TaskResult:
    """:func:`prepare_cell`, :func:`run_split` for every split, :func:`finish_cell`: the cell's steps, here."""
    t_start = time.perf_counter()
    cell = prepare_cell(coeffs_df, **options)
    records = [run_split(cell, fi) for fi in range(len(cell.folds))]
    return finish_cell(cell, records, wall_seconds=time.perf_counter() - t_start)


class Cell(SimpleNamespace):
    """A Table-1 cell made ready to run split by split (:func:`prepare_cell`): what every split reads — the splits
    (``folds``), labels (``y_all``, ``classes``), the input matrix ``X_raw`` (coefficients, picture features) or the
    pictures (``paths``, ``boxes``), the options (``opts``) — and of the coefficient table only the columns
    :func:`~facelib.classify.validation.inner_split` reads (``df``). Its splits are independent (each seeded by
    ``seed * 1000 + split``): :func:`run_split` may run them anywhere, in any order (:mod:`facelib.executor`,
    :func:`facelib.classify.plan.run_plan`);
    :func:`finish_cell` puts their records together in split order. Picklable, so it travels to Dask workers."""


def prepare_cell(coeffs_df, *, task, protocol, input, model, backend=None, n_folds=None, epochs=None, seed=0,
                 device=None, image_size=None, batch_size=None, lr=RECIPE["lr"], weight_decay=RECIPE["weight_decay"],
                 val_fraction=RECIPE["val_fraction"], patience=None, aggregator=None, pretrained=False,
                 crop_to_box=True, protocol_kwargs=None, keep_predictions=True, verbose=False,
                 progress=False, evaluate="test", center_parts=True) -> Cell:
    """The part of :func:`run_task` done once per cell (options as there): checks, the task's table, the splits,
    the input matrix. Raises :class:`~facelib.classify.protocols.ProtocolUnavailable` as ``run_task`` does."""
    input = input or TASK_DEFAULT_INPUT.get(task, "alpha")
    if input not in INPUTS:
        raise ValueError(f"input must be one of {INPUTS}, got {input!r}")
    kind = _kind(input)
    if kind == "images" and model != "resnet34":
        raise ValueError("input 'image' is trained with model 'resnet34' (torchvision) only")
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    device = "cpu" if model in SKLEARN_MODELS else resolve_device(device)
    df = _task_table(coeffs_df, task)
    if not len(df):
        raise P.ProtocolUnavailable(f"no usable rows for task {task}")
    if kind == "coefficients" and "alpha" in input and _column_note(df, "person_grouped"):
        raise P.ProtocolUnavailable("a person-grouped table's α comes from its person's other pictures (built "
                                    "from who is who): it is scored on β only")
    agg_name = aggregator if isinstance(aggregator, str) else getattr(aggregator, "name", None)
    if isinstance(aggregator, str):  # "mean", "median", "cnet" (C-Net confidences of the table's rows)
        aggregator = make_aggregator(aggregator, df)
    backend = backend or (str(df["backend"].iloc[0]) if "backend" in df.columns else "unknown")
    net_kind = "image" if kind == "images" else "vector"
    patience = RECIPE["patience"][net_kind] if patience is None else patience
    epochs_max = None if model in SKLEARN_MODELS else int(epochs or RECIPE["max_epochs"][net_kind])
    image_size = int(image_size or (CPU_IMAGE_SIZE if device == "cpu" else GPU_IMAGE_SIZE)) \
        if kind == "images" else FEATURE_SIZE.get(input)
    kwargs = dict(protocol_kwargs or {})
    kwargs.setdefault("seed", seed)
    kwargs.setdefault("n_folds", int(n_folds or DEFAULT_N_FOLDS.get(protocol, 3)))
    if aggregator is not None:
        kwargs.setdefault("aggregator", aggregator)
    folds = P.make_folds(df, task, protocol, **kwargs)
    label = P.label_column(task)
    if evaluate == "validation":  # the test side is never scored: each split's inner validation side is
        folds = [P.Fold(*inner_split(df, f, label, val_fraction, seed=seed * 1000 + i)[:2], name=f.name,
                        aggregator=f.aggregator, info={**f.info, "evaluated_on": "validation"})
                 for i, f in enumerate(folds)]
    elif evaluate != "test":
        raise ValueError(f"evaluate must be 'test' or 'validation', got {evaluate!r}")

    classes = _classes(task, df[label])
    boxes = _boxes(df, crop_to_box) if kind != "coefficients" else None
    # R-Net tables: each person is coded by one of the cross-fit networks, which leave a per-network offset a
    # probe finds on unseen people (crossfit.part_probe); per split, every part's fit-split mean is removed
    parts = df["rnet_part"].to_numpy() if kind == "coefficients" and center_parts and "rnet_part" in df.columns \
        and df["rnet_part"].notna().all() and df["rnet_part"].nunique() > 1 else None
    return Cell(
        task=task, protocol=protocol, input=input, model=model, backend=backend, kind=kind, device=device,
        df=df[[c for c in dict.fromkeys((label, "subject")) if c in df.columns]],  # what inner_split reads
        folds=folds, label=label, classes=classes,
        y_all=df[label].astype(str).map({c: i for i, c in enumerate(classes)}).to_numpy(),
        image_ids=df["image_id"].astype(str).to_numpy() if "image_id" in df.columns
        else np.arange(len(df)).astype(str),
        angles=df["angle"].astype(str).to_numpy() if "angle" in df.columns else None,
        people=df["subject"].astype(str).to_numpy() if "subject" in df.columns else None, boxes=boxes,
        X_raw=input_matrix(df, input) if kind == "coefficients" else
        picture_features(df, input, boxes) if kind == "features" else None,
        paths=df["path"].astype(str).to_numpy() if "path" in df.columns else None, parts=parts,
        k_protocol=int(folds[0].train.shape[1]) if folds[0].is_sets else 1, aggregator=aggregator,
        agg_name=agg_name, epochs_max=epochs_max, image_size=image_size, patience=patience,
        transductive=transductive_note(df) if kind == "coefficients" else "",
        tuned_on_test=tuned_on_test_note(df) if kind == "coefficients" else "",
        exposure=exposure_note(df) if kind == "coefficients" else "",
        person_grouped=_column_note(df, "person_grouped") if kind == "coefficients" else "",
        opts=dict(seed=seed, batch_size=batch_size, lr=lr, weight_decay=weight_decay, val_fraction=val_fraction,
                  pretrained=pretrained, keep_predictions=keep_predictions, verbose=verbose, progress=progress,
                  evaluate=evaluate))


def run_split(cell: Cell, fi: int) -> dict:
    """Train and score split ``fi`` of a prepared cell; returns its record (for :func:`finish_cell`)."""
    t0 = time.perf_counter()
    o, fold, df, label, classes, model = cell.opts, cell.folds[fi], cell.df, cell.label, cell.classes, cell.model
    kind, y_all, X_raw, boxes, paths, people = cell.kind, cell.y_all, cell.X_raw, cell.boxes, cell.paths, cell.people
    batch_size, epochs_max, device, verbose = o["batch_size"], cell.epochs_max, cell.device, o["verbose"]
    train = dict(lr=o["lr"], weight_decay=o["weight_decay"], patience=cell.patience, device=device, verbose=verbose)
    fseed = o["seed"] * 1000 + fi
    fit, val, how = inner_split(df, fold, label, o["val_fraction"], seed=fseed)
    shown = dict(progress=o["progress"], desc=f"{cell.task}/{cell.protocol} {cell.input}→{model} split "
                                              f"{fi + 1}/{len(cell.folds)}")
    test_pics = fold.test_images
    y_of = (lambda s: y_all[s[:, 0]] if s.ndim == 2 else y_all[s])  # noqa: E731 — a set is one person's
    fit_p, val_p = np.unique(fit.ravel()), np.unique(val.ravel())  # the same pictures for every arm
    res_pic, flip = None, None  # res_pic: the model scored at k = 1 when it is not the main one
    if kind == "coefficients":
        agg = fold.aggregator or cell.aggregator
        if cell.parts is None:
            X_all = X_raw
        else:
            from ..fitting.crossfit import center_parts as _center  # heavy module: only for R-Net tables
            X_all = _center(X_raw, cell.parts, fit_p)
        Xfit, Xval = aggregate_sets(X_all, fit, agg), aggregate_sets(X_all, val, agg)
        bs = int(batch_size or default_batch_size("vector", len(Xfit)))
        res = train_vector_model(Xfit, y_of(fit), aggregate_sets(X_all, fold.test, agg), X_val=Xval,
                                 y_val=y_of(val), model=model, n_classes=len(classes), epochs=epochs_max,
                                 batch_size=bs, seed=fseed, **train, **shown)
        scores_main = scores_pic = res["scores"]
        if fold.is_sets:  # k = 1 by design: trained and selected on the single fit / validation pictures
            res_pic = train_vector_model(
                X_all[fit_p], y_all[fit_p], X_all[test_pics], X_val=X_all[val_p], y_val=y_all[val_p],
                model=model, n_classes=len(classes), epochs=epochs_max,
                batch_size=int(batch_size or default_batch_size("vector", len(fit_p))), seed=fseed, **train,
                **{**shown, "desc": shown["desc"] + " (k = 1 model)"})
            scores_pic = res_pic["scores"]
        n_fit_samples = len(Xfit)
    else:
        if kind == "features":
            bs = int(batch_size or default_batch_size("vector", len(fit_p)))
            res = train_vector_model(X_raw[fit_p], y_all[fit_p], X_raw[test_pics], X_val=X_raw[val_p],
                                     y_val=y_all[val_p], model=model, n_classes=len(classes),
                                     epochs=epochs_max, batch_size=bs, seed=fseed, **train, **shown)
        else:
            bs = int(batch_size or default_batch_size("image", len(fit_p)))
            flip = bool(fold.info.get("flip", True))
            pick = (lambda idx: None if boxes is None else [boxes[i] for i in idx])  # noqa: E731
            res = train_image_model(paths[fit_p], y_all[fit_p], paths[test_pics], paths_val=paths[val_p],
                                    y_val=y_all[val_p], boxes_train=pick(fit_p), boxes_test=pick(test_pics),
                                    boxes_val=pick(val_p), n_classes=len(classes), image_size=cell.image_size,
                                    epochs=epochs_max, batch_size=bs, seed=fseed, pretrained=o["pretrained"],
                                    flip=flip, **train, **shown)
        scores_pic = res["scores"]
        scores_main = scores_pic[np.searchsorted(test_pics, fold.test)].mean(1) if fold.is_sets else scores_pic
        n_fit_samples = len(fit_p)
    # every model at k = 1 (single test pictures) and, on a set protocol, at the protocol's k
    epoch_based = model not in SKLEARN_MODELS
    trained_k = cell.k_protocol if kind == "coefficients" else 1
    evals = {1: (scores_pic, test_pics, res_pic or res, 1 if res_pic is not None else trained_k)}
    if fold.is_sets:
        evals[cell.k_protocol] = (scores_main, fold.test, res, trained_k)
    by_k = {}
    for kk, (sc, items, r_k, tk) in evals.items():
        correct = (np.asarray(sc).argmax(1) == y_of(items)).astype(np.int8)
        by_k[kk] = {"accuracy": float(correct.mean()), "n_test": int(len(items)), "correct": correct,
                    "groups": None if people is None else people[items[:, 0] if items.ndim == 2 else items],
                    "best_epoch": int(r_k["best_epoch"]) if epoch_based else None,
                    "epochs_run": int(r_k["epochs_run"]) if epoch_based else None, "C": r_k.get("C"),
                    "trained_k": tk, "val_accuracy": _maybe_float(r_k.get("best_val_accuracy")),
                    "learning_epoch": r_k.get("learning_epoch") if epoch_based else None,
                    "ran_to_cap": bool(r_k.get("ran_to_cap")) if epoch_based else False}
    test_items, yte = fold.test, y_of(fold.test)
    pred = np.asarray(scores_main).argmax(1)
    conf = np.zeros((len(classes), len(classes)), dtype=np.int64)
    np.add.at(conf, (yte, pred), 1)
    angle_hits, preds = [], []
    single = np.asarray(test_items).ndim == 1
    for j, (t, p) in enumerate(zip(yte, pred)):
        item = test_items[j]
        if single and cell.angles is not None:
            angle_hits.append((cell.angles[item], int(t == p)))
        if o["keep_predictions"]:
            ids = cell.image_ids[item] if single else "+".join(cell.image_ids[np.asarray(item)])
            preds.append({"fold": fi, "image_id": str(ids), "true": classes[t], "pred": classes[p],
                          "angle": str(cell.angles[item]) if (single and cell.angles is not None) else ""})
    rec = {"fold": float((pred == yte).mean()),
           "n_tr": int(n_fit_samples + (len(val) if kind == "coefficients" else len(np.unique(val)))),
           "n_te": int(len(yte)), "tr_pic": int(len(fold.train_images)), "te_pic": int(len(test_pics)),
           "tr_set": int(len(fit)) if fold.is_sets and kind == "coefficients" else 0,  # pictures train
           "te_set": int(len(fold.test)) if fold.is_sets else 0, "n_val": int(len(val)),
           "fit_pic": int(len(fit_p)), "val_pic": int(len(val_p)),
           "fit_set": int(len(fit)) if fold.is_sets else 0, "val_set": int(len(val)) if fold.is_sets else 0,
           "spi": res["seconds_per_input"], "spe": res["seconds_per_epoch"], "tsec": res["train_seconds"],
           "best": int(res["best_epoch"]) if epoch_based else None,
           "run": int(res["epochs_run"]) if epoch_based else None, "C": res.get("C"), "prec": res.get("precision"),
           "grid": {"C_tried": res.get("C_tried"), "grid_stop": res.get("grid_stop")}
           if res.get("C_tried") is not None else None, "bs": bs}
    if verbose:
        print(f"[{cell.task}/{cell.protocol}/{cell.input}/{model}] split {fi + 1}/{len(cell.folds)} accuracy "
              f"{rec['fold']:.4f} ({rec['n_tr']} train, {rec['n_te']} test, best epoch {rec['best']}/"
              f"{rec['run']})", file=sys.stderr, flush=True)
    return {**rec, "by_k": by_k, "confusion": conf, "angle_hits": angle_hits, "predictions": preds, "how": how,
            "flip": flip, "threads": n_threads(), "seconds": time.perf_counter() - t0}


SPLIT_FACTS = ("fold", "n_tr", "n_te", "tr_pic", "te_pic", "tr_set", "te_set", "n_val", "fit_pic", "val_pic", "fit_set",
               "val_set", "spi", "spe", "tsec", "best", "run", "C", "prec", "grid", "bs", "threads")


def finish_cell(cell: Cell, records: list[dict], wall_seconds: float) -> TaskResult:
    """The cell's :class:`TaskResult` from its splits' records (:func:`run_split`, in split order)."""
    folds, protocol, model, kind, people, seed = cell.folds, cell.protocol, cell.model, cell.kind, cell.people, \
        cell.opts["seed"]
    acc = {key: [r[key] for r in records] for key in SPLIT_FACTS}
    by_k: dict[int, dict] = {}
    angle_hits: dict[str, list[int]] = {}
    for r in records:
        for kk, e in r["by_k"].items():
            d = by_k.setdefault(kk, {"fold_accuracies": [], "n_test": [], "correct": [], "groups": [],
                                     "best_epochs": [], "epochs_run": [], "C": [], "val_accuracies": [],
                                     "learning_epochs": [], "ran_to_cap": [], "trained_k": e["trained_k"]})
            for dk, ek in (("fold_accuracies", "accuracy"), ("n_test", "n_test"), ("correct", "correct"),
                           ("groups", "groups"), ("best_epochs", "best_epoch"), ("epochs_run", "epochs_run"),
                           ("C", "C"), ("val_accuracies", "val_accuracy"), ("learning_epochs", "learning_epoch"),
                           ("ran_to_cap", "ran_to_cap")):
                d[dk].append(e.get(ek))
        for a, hit in r["angle_hits"]:
            angle_hits.setdefault(a, []).append(hit)
    conf = np.sum([r["confusion"] for r in records], axis=0)
    preds = [p for r in records for p in r["predictions"]]
    single_split = len(folds) == 1
    pooled = single_split or protocol in P.POOLED  # one accuracy over every test picture, interval over people

    def summary(d, kk):
        fa = d["fold_accuracies"]
        correct = np.concatenate(d["correct"])
        groups = None if people is None else np.concatenate(d["groups"])
        return {"fold_accuracies": fa, "mean": float(correct.mean()) if pooled else float(np.mean(fa)),
                "std": None if pooled else float(np.std(fa, ddof=1)),
                "ci": bootstrap_ci(correct, seed, groups=groups) if pooled else None,
                "ci_unit": ("people" if groups is not None else "pictures") if pooled else None,
                "n_test": d["n_test"], "trained_k": d["trained_k"], "best_epochs": d["best_epochs"],
                "epochs_run": d["epochs_run"], "C": d["C"], "val_accuracies": d["val_accuracies"],
                "val_mean": _mean_or_none(d["val_accuracies"]), "learning_epochs": d["learning_epochs"],
                "ran_to_cap": d["ran_to_cap"],
                "person_hits": None if people is None else [person_hits(c, g) for c, g in
                                                            zip(d["correct"], d["groups"])]}

    accuracy_by_k = {str(kk): summary(d, kk) for kk, d in sorted(by_k.items())}
    main = accuracy_by_k[str(cell.k_protocol)]
    angle_order = [a for a in P.ANGLES if a in angle_hits] + sorted(set(angle_hits) - set(P.ANGLES))
    lr, weight_decay, val_fraction = cell.opts["lr"], cell.opts["weight_decay"], cell.opts["val_fraction"]
    return TaskResult(
        task=cell.task, protocol=protocol, input=cell.input, model=model, backend=cell.backend, kind=kind,
        device=cell.device, classes=cell.classes, k=cell.k_protocol,
        split_kind="single split" if single_split else "pooled folds" if pooled else
        "repeats" if protocol in P.REPEATED else "folds",
        fold_names=[f.name for f in folds], fold_accuracies=acc["fold"], accuracy_mean=main["mean"],
        accuracy_std=main["std"], accuracy_ci=main["ci"], accuracy_by_k=accuracy_by_k, n_folds=len(folds),
        n_train=float(np.mean(acc["n_tr"])), n_test=float(np.mean(acc["n_te"])), n_train_pictures=acc["tr_pic"],
        n_test_pictures=acc["te_pic"], n_train_sets=acc["tr_set"], n_test_sets=acc["te_set"], n_val=acc["n_val"],
        validation=records[-1]["how"], epochs_max=cell.epochs_max, epochs_run=acc["run"], best_epochs=acc["best"],
        C=acc["C"],
        recipe={"optimizer": RECIPE["optimizer"], "schedule": RECIPE["schedule"], "lr": lr,
                "weight_decay": weight_decay, "patience": None if model in SKLEARN_MODELS else cell.patience,
                "val_fraction": val_fraction, "C_grid": model in SKLEARN_MODELS},
        batch_size=acc["bs"][0] if acc["bs"] else None, batch_sizes=acc["bs"], image_size=cell.image_size,
        crop_to_box=bool(cell.boxes is not None), flip=records[-1]["flip"],
        pretrained=bool(cell.opts["pretrained"] or cell.input == "dlib"),
        seconds_per_input=float(np.mean(acc["spi"])), seconds_per_epoch=float(np.mean(acc["spe"])),
        train_seconds=float(np.sum(acc["tsec"])), wall_seconds=wall_seconds,
        confusion=conf.tolist(),
        per_angle_accuracy={a: float(np.mean(angle_hits[a])) for a in angle_order},
        per_angle_counts={a: len(angle_hits[a]) for a in angle_order},
        leak_free=P.is_leak_free(cell.task, protocol) and not cell.transductive and not cell.person_grouped,
        protocol_leak_free=P.is_leak_free(cell.task, protocol), leakage=P.LEAKAGE.get((cell.task, protocol), ""),
        transductive=cell.transductive, tuned_on_test=cell.tuned_on_test, exposure=cell.exposure,
        protocol_info=_jsonable(folds[0].info) if folds else {}, seed=seed, torch_threads=max(acc["threads"]),
        predictions=preds,
        aggregator=(cell.agg_name or "mean") if kind == "coefficients" and any(f.is_sets for f in folds) else None,
        n_fit_pictures=acc["fit_pic"], n_val_pictures=acc["val_pic"], n_fit_sets=acc["fit_set"],
        n_val_sets=acc["val_set"], fold_labels=[_fold_label(f) for f in folds], evaluated_on=cell.opts["evaluate"],
        part_centered=cell.parts is not None,
        person_grouped=cell.person_grouped,
        aggregator_seconds_per_set=_aggregator_cost(cell.aggregator) if kind == "coefficients" else None,
        precision=next((p for p in acc["prec"] if p), None), c_grids=acc["grid"],
        input_width=int(cell.X_raw.shape[1]) if cell.X_raw is not None else None)


def person_hits(correct, groups) -> dict:
    """One split's test items per person: ``{person: [correct, items]}`` — what a paired comparison of two rows
    resamples (:mod:`facelib.report.verdict`)."""
    correct, groups = np.asarray(correct, dtype=np.int64), np.asarray(groups).astype(str)
    names, inv = np.unique(groups, return_inverse=True)
    hits, counts = np.bincount(inv, weights=correct, minlength=len(names)), np.bincount(inv, minlength=len(names))
    return {str(n): [int(h), int(c)] for n, h, c in zip(names, hits, counts)}


def _maybe_float(v) -> float | None:
    return None if v is None or (isinstance(v, float) and v != v) else float(v)


def _mean_or_none(values) -> float | None:
    v = [float(x) for x in values if x is not None and x == x]
    return float(np.mean(v)) if v else None


def _aggregator_cost(aggregator) -> float | None:
    """Seconds per k-set of an aggregator that computes something per set (``seconds_per_set()``: set_fit)."""
    cost = getattr(aggregator, "seconds_per_set", None)
    return cost() if callable(cost) else None


def _fold_label(fold) -> str:
    """The held-out condition of a split (a view pair, an expression, a session), else its name."""
    for key in ("test_angle", "test_expression", "test_session"):
        if fold.info.get(key):
            return str(fold.info[key])
    return fold.name
