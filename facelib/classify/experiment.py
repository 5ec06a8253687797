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
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch

from . import protocols as P
from .images import FEATURE_INPUTS


TASK_LABEL = P.TASK_LABEL
TASK_DEFAULT_INPUT = {"identity": "alpha", "expression": "beta", "gender": "alpha"}
EXPRESSION_ORDER = P.EXPRESSIONS
DEFAULT_N_FOLDS = {"paper": 5, "random": 5, "two_picture": 5, "subject_independent": 5, "cross_session": 1,
                   "cross_angle": 3, "leave_expression_out": 7}
CPU_IMAGE_SIZE, GPU_IMAGE_SIZE = 64, 224
N_BOOTSTRAP = 1000
FEATURE_SIZE = {"hog": 64, "pixels": 32, "dlib": 150}  # crop side (px) each feature is computed on


@dataclass
class TaskResult:
    """One Table-1 cell (all splits). ``to_dict()`` is JSON-able; ``r["key"]`` / ``r.get`` read fields."""
    task: str
    protocol: str
    input: str
    model: str
    backend: str
    kind: str                      # coefficients / images / features
    device: str
    classes: list
    k: int                         # the protocol's set size (1: single pictures)
    split_kind: str                # repeats (random splits), folds (a partition), single split
    fold_names: list
    fold_accuracies: list
    accuracy_mean: float
    accuracy_std: float | None     # None for a single split and pooled folds (see accuracy_ci)
    accuracy_ci: list | None       # 95 % interval from resampling people (single split, pooled folds), else None
    accuracy_by_k: dict            # "1"/"3" → {fold_accuracies, mean, std, ci, ci_unit, n_test, trained_k,
                                   #            best_epochs, epochs_run, C} (training facts of the model scored)
    n_folds: int
    n_train: float                 # training samples (fit + validation) per split, mean
    n_test: float
    n_train_pictures: list
    n_test_pictures: list
    n_train_sets: list
    n_test_sets: list
    n_val: list
    validation: str                # how the inner validation split was drawn
    epochs_max: int | None
    epochs_run: list
    best_epochs: list
    C: list
    recipe: dict
    batch_size: int | None
    batch_sizes: list
    image_size: int | None
    crop_to_box: bool
    flip: bool | None
    pretrained: bool
    seconds_per_input: float
    seconds_per_epoch: float
    train_seconds: float
    wall_seconds: float
    confusion: list
    per_angle_accuracy: dict
    per_angle_counts: dict
    leak_free: bool                # the protocol is leak-free AND nothing transductive fed the coefficients
    leakage: str
    transductive: str
    protocol_info: dict
    seed: int = 0
    torch_threads: int = 1
    torch_version: str = torch.__version__
    aggregator: str | None = None   # identity sets: mean / median / cnet (None: no sets)
    predictions: list = field(default_factory=list)
    protocol_leak_free: bool | None = None  # the protocol's own flag (protocols.is_leak_free)
    tuned_on_test: str = ""        # why the coefficients' settings were chosen on Table 1's test folds ('' : not)
    n_fit_pictures: list = field(default_factory=list)  # distinct pictures models were fit on, per split
    n_val_pictures: list = field(default_factory=list)  # distinct pictures they were selected on (C, epochs)
    precision: str | None = None    # the training precision (fp32 / bf16 / fp16; classify.precision)
    c_grids: list = field(default_factory=list)  # scikit-learn: per split the C values tried and why the grid stopped
    n_fit_sets: list = field(default_factory=list)      # k-sets fit on (set protocols; 0 otherwise)
    n_val_sets: list = field(default_factory=list)
    fold_labels: list = field(default_factory=list)     # the held-out condition of each split (e.g. FL+FR)
    evaluated_on: str = "test"     # "validation": scored on the inner validation side (choosing settings)
    part_centered: bool = False    # R-Net coefficients: each cross-fit part's fit-split mean subtracted per split

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))

    def __getitem__(self, key):
        return getattr(self, key)

    def __contains__(self, key) -> bool:
        return isinstance(key, str) and key in self.__dataclass_fields__

    def get(self, key, default=None):
        return getattr(self, key, default)

    def keys(self):
        return self.to_dict().keys()


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
    Options (keyword only; see :func:`facelib.classify.cell.prepare_cell`): ``backend, n_folds, epochs`` (the cap;
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
    from .cell import finish_cell, prepare_cell, run_split  # the cell's steps (cell.py imports this module)

    t_start = time.perf_counter()
    cell = prepare_cell(coeffs_df, **options)
    records = [run_split(cell, fi) for fi in range(len(cell.folds))]
    return finish_cell(cell, records, wall_seconds=time.perf_counter() - t_start)


def _fold_label(fold) -> str:
    """The held-out condition of a split (a view pair, an expression, a session), else its name."""
    for key in ("test_angle", "test_expression", "test_session"):
        if fold.info.get(key):
            return str(fold.info[key])
    return fold.name


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
