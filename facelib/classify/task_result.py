"""The result of one Table-1 cell (:class:`TaskResult`), as :func:`facelib.classify.experiment.run_task` returns it
and ``results/*.json`` keep it."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import torch


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
                                   #            best_epochs, epochs_run, C, val_accuracies, val_mean,
                                   #            learning_epochs, ran_to_cap, person_hits} (the model scored)
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
    leak_free: bool                # the protocol is leak-free AND nothing transductive / person-grouped fed them
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
    person_grouped: str = ""       # non-empty: a picture's coefficients used its person's other pictures (no label)
    aggregator_seconds_per_set: float | None = None  # an aggregator with a cost of its own (set_fit): s per k-set
    exposure: str = ""             # non-empty: a network that coded the coefficients saw test pictures (no labels)
    input_width: int | None = None  # length of the input vector (coefficients: α, β or α+β; features: theirs)

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


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
