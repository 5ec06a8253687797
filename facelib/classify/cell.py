"""A Table-1 cell run split by split: :func:`prepare_cell` (once per cell: checks, the task's table, the splits, the
input matrix), :func:`run_split` (one split: inner validation split, training, scoring; seeded by the split, so the
splits of a cell are independent tasks) and :func:`finish_cell` (the :class:`~facelib.classify.experiment.TaskResult`
from the splits' records, in split order). :func:`facelib.classify.experiment.run_task` runs the three in a row;
:func:`facelib.classify.plan.run_plan` with a Dask executor runs every split of every cell as its own task."""
from __future__ import annotations

import sys
import time
from types import SimpleNamespace

import numpy as np

from ..config import resolve_device
from . import protocols as P
from .aggregate import aggregate_sets, make_aggregator
from .experiment import (CPU_IMAGE_SIZE, DEFAULT_N_FOLDS, FEATURE_SIZE, GPU_IMAGE_SIZE, TASK_DEFAULT_INPUT, TaskResult,
                         _boxes, _classes, _fold_label, _jsonable, _kind, _task_table, bootstrap_ci,
                         transductive_note, tuned_on_test_note)
from .images import picture_features
from .models import SKLEARN_MODELS
from .trainer import (INPUTS, MODELS, RECIPE, default_batch_size, input_matrix, n_threads, train_image_model,
                      train_vector_model)
from .validation import inner_split


class Cell(SimpleNamespace):
    """A Table-1 cell made ready to run split by split (:func:`prepare_cell`): what every split reads — the splits
    (``folds``), labels (``y_all``, ``classes``), the input matrix ``X_raw`` (coefficients, picture features) or the
    pictures (``paths``, ``boxes``), the options (``opts``) — and of the coefficient table only the columns
    :func:`~facelib.classify.validation.inner_split` reads (``df``). Its splits are independent (each seeded by
    ``seed * 1000 + split``): :func:`run_split` may run them anywhere, in any order (:mod:`facelib.executor`);
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
                    "trained_k": tk}
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
                                     "best_epochs": [], "epochs_run": [], "C": [], "trained_k": e["trained_k"]})
            for dk, ek in (("fold_accuracies", "accuracy"), ("n_test", "n_test"), ("correct", "correct"),
                           ("groups", "groups"), ("best_epochs", "best_epoch"), ("epochs_run", "epochs_run"),
                           ("C", "C")):
                d[dk].append(e[ek])
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
                "epochs_run": d["epochs_run"], "C": d["C"]}

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
        leak_free=P.is_leak_free(cell.task, protocol) and not cell.transductive,
        protocol_leak_free=P.is_leak_free(cell.task, protocol), leakage=P.LEAKAGE.get((cell.task, protocol), ""),
        transductive=cell.transductive, tuned_on_test=cell.tuned_on_test,
        protocol_info=_jsonable(folds[0].info) if folds else {}, seed=seed, torch_threads=max(acc["threads"]),
        predictions=preds,
        aggregator=(cell.agg_name or "mean") if kind == "coefficients" and any(f.is_sets for f in folds) else None,
        n_fit_pictures=acc["fit_pic"], n_val_pictures=acc["val_pic"], n_fit_sets=acc["fit_set"],
        n_val_sets=acc["val_set"], fold_labels=[_fold_label(f) for f in folds], evaluated_on=cell.opts["evaluate"],
        part_centered=cell.parts is not None,
        precision=next((p for p in acc["prec"] if p), None), c_grids=acc["grid"])
