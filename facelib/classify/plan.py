"""The study plan: one row per Table-1 line (:data:`STUDY_ROWS`), expanded over models (:func:`study_plan`) and run
(:func:`run_plan`), each result saved as JSON."""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from ..data.labels import has_values
from ..vocab import PICTURE_BACKEND
from . import protocols as P
from .aggregate import AGGREGATORS as NAMED_AGGREGATORS
from .images import FEATURE_INPUTS
from .experiment import _column_note, _task_table, finish_cell, prepare_cell, run_split, run_task
from .results import save_result


PICTURE_INPUTS = ("image", *FEATURE_INPUTS)  # computed from the picture itself: one table suffices, no 3DMM

# One row per Table-1 line: (dataset, task, protocol, coefficient input). Each runs with every model in
# ``models`` and, with ``image_baseline``, with every image model in ``IMAGE_MODELS`` on the same splits.
STUDY_ROWS = (
    ("kdef", "identity", "paper", "alpha"),
    ("kdef", "identity", "cross_session", "alpha"),
    ("kdef", "identity", "cross_angle", "alpha"),
    ("kdef", "expression", "paper", "beta"),
    ("kdef", "expression", "subject_independent", "beta"),
    ("fei", "gender", "paper", "alpha"),
    ("fei", "gender", "subject_independent", "alpha"),
)
PAPER_DATASETS = ("kdef", "fei")


def rows_for(coeffs: dict) -> tuple:
    """Table-1 lines for the datasets of a run: KDEF/FEI keep :data:`STUDY_ROWS` (the paper's and the leak-free
    protocols); any other dataset (a folder of your own) gets a line per task its label columns allow
    (:func:`facelib.classify.protocols.tasks_for`) — identity: the paper's set protocol (+ cross-angle with an
    ``angle`` column); expression: the paper's split and, with a ``subject`` column, unseen people; gender and
    other labels: unseen people with a ``subject`` column, else a random split."""
    rows = [r for r in STUDY_ROWS if r[0] in coeffs]
    for name, tables in coeffs.items():
        if name in PAPER_DATASETS:
            continue
        table = tables[0] if isinstance(tables, (list, tuple)) else tables
        has_subject = "subject" in table.columns and table["subject"].nunique() > 1
        for task in P.tasks_for(table):
            if task == "identity":
                protocols = ["paper"] + (["cross_angle"] if has_values(table, "angle") else [])
            elif task == "expression":
                protocols = ["paper"] + (["subject_independent"] if has_subject else [])
            else:
                protocols = ["subject_independent"] if has_subject else ["random"]
            rows += [(name, task, protocol, INPUT_OF.get(task, "alpha+beta")) for protocol in protocols]
    return tuple(rows)


INPUT_OF = {"identity": "alpha", "expression": "beta", "gender": "alpha"}


# The image arm: the paper's ResNet-34 on pictures, and the classic / pretrained baselines a reviewer expects.
IMAGE_MODELS = (("image", "resnet34"),     # colour head crop, augmentation, shared recipe
                ("hog", "linsvm"),          # HOG + linear SVM (Eng et al. 2019)
                ("pixels", "fisherfaces"),  # PCA → LDA → linear SVM (Thomaz & Giraldi 2010)
                ("dlib", "logreg"))         # dlib's pretrained 128-d face descriptor + logistic regression
# Protocols whose number of splits the ``n_folds`` parameter sets (the others have a fixed partition).
SIZED_PROTOCOLS = ("paper", "subject_independent", "two_picture", "random")


def study_plan(models=("resnet34", "logreg", "svm"), image_baseline=True, rows=STUDY_ROWS,
               image_models=IMAGE_MODELS) -> list[dict]:
    """Plan entries (dataset, task, protocol, input, model): every ``models`` on each row's coefficients and, with
    ``image_baseline``, the image arm on the same splits — ``True``: every entry of ``image_models``; a list: only
    those whose input or ``input/model`` it names (e.g. ``[hog, pixels, dlib]`` leaves the image ResNet-34 out);
    ``False``/empty: none."""
    if image_baseline is True:
        chosen = list(image_models)
    elif not image_baseline:
        chosen = []
    else:
        names = {str(n) for n in image_baseline}
        chosen = [(i, m) for i, m in image_models if i in names or f"{i}/{m}" in names]
        unknown = names - {i for i, _ in image_models} - {f"{i}/{m}" for i, m in image_models}
        if unknown:
            raise ValueError(f"image_baseline: unknown image model(s) {sorted(unknown)}; known: "
                             + ", ".join(f"{i}/{m}" for i, m in image_models))
    plan = []
    for dataset, task, protocol, input in rows:
        plan += [dict(dataset=dataset, task=task, protocol=protocol, input=input, model=m) for m in models]
        plan += [dict(dataset=dataset, task=task, protocol=protocol, input=i, model=m) for i, m in chosen]
    return plan


def run_plan(coeffs: dict[str, pd.DataFrame | list[pd.DataFrame]], plan: list[dict], results_dir: str | Path, *,
             n_folds=None, epochs=None, image_epochs=None, image_size=None, seed: int = 0, device=None,
             batch_size=None, identity_max_sets: int | None = None, identity_session: str | None = "A",
             aggregators=("mean",), progress: bool = True, executor=None, assets_dir=None,
             **options) -> pd.DataFrame:
    """Run every plan entry, save each result as JSON in ``results_dir``; protocols the data cannot support
    (e.g. cross-session on a one-session set) and baselines whose model is missing are logged as skipped with the
    reason. Returns a summary table. ``epochs``/``image_epochs`` cap the networks (they stop on the validation
    curve); further ``options`` go to :func:`~facelib.classify.experiment.run_task` unchanged.

    ``coeffs[dataset]`` may be a list of coefficient tables of the same images (raw backend output, then fitted
    variants): coefficient inputs run on each (their ``backend`` column tells them apart in Table 1), the image
    models once. ``aggregators`` (:data:`AGGREGATORS`): the paper's identity rows on coefficients
    (3-subsets) run once per aggregator (``cnet`` only on tables with C-Net confidences, i.e. R-Net-coded ones;
    ``set_fit`` — one α fitted jointly to each set, :func:`facelib.fitting.person_fit.set_fit_aggregator`, its
    models on ``device`` with ``assets_dir`` — only on the per-picture landmark fits, other tables logged as skipped).
    A person-grouped table (``person_grouped`` column: its α came from the person's other pictures) is scored on β
    only: its rows on α are logged as skipped, not run.

    ``executor`` (:func:`facelib.executor.make_executor`; None or local: here, one run after another): on Dask,
    every split of every run is a task (:func:`~facelib.classify.experiment.run_split`), the same results in the
    same order."""
    check_aggregators(aggregators)
    jobs, set_fits = [], {}  # (entry, table, aggregator object or a skip reason); set_fit aggregators by table
    for entry in plan:
        tables = coeffs[entry["dataset"]]
        tables = tables if isinstance(tables, (list, tuple)) else [tables]
        per_picture = entry["input"] in PICTURE_INPUTS
        for df in (tables[:1] if per_picture else tables):
            lacking = [c for c in ("alpha", "beta") if not per_picture and c in entry["input"]
                       and (c not in df.columns or df[c].isna().all())]
            if lacking:  # coefficients from outside may carry one group only
                jobs.append(({**entry, "aggregator": None}, df, f"skipped: table {df['backend'].iloc[0]} has no "
                             f"{' or '.join(lacking)} coefficients"))
                continue
            if not per_picture and "alpha" in entry["input"] and _column_note(df, "person_grouped"):
                jobs.append(({**entry, "aggregator": None}, df, "skipped: a person-grouped table's α comes from "
                             "the person's other pictures; it is scored on β only"))
                continue
            sets = entry["task"] == "identity" and entry["protocol"] == "paper" and not per_picture
            has_conf = "confidence" in df.columns and df["confidence"].notna().any()
            for agg in (list(aggregators or ["mean"]) if sets else ["mean"]):  # only the paper's has k-sets
                if agg == "set_fit":
                    if id(df) not in set_fits:
                        set_fits[id(df)] = _set_fit(df, tables, device, assets_dir, progress)
                    jobs.append(({**entry, "aggregator": agg}, df, set_fits[id(df)]))
                elif agg != "cnet" or has_conf:
                    jobs.append(({**entry, "aggregator": agg}, df, None))
    runs = []  # (summary entry, table, run_task keyword arguments, or a skip reason)
    for entry, df, agg_obj in jobs:
        entry = {**entry, "backend": str(df["backend"].iloc[0])}
        agg = entry.pop("aggregator")
        if isinstance(agg_obj, str):
            runs.append(({**entry, "aggregator": agg}, df, agg_obj))
            continue
        kwargs = {}
        if entry["task"] == "identity" and entry["protocol"] == "paper" and identity_max_sets:
            kwargs["max_sets"] = int(identity_max_sets)
        if entry["task"] == "identity" and entry["protocol"] in ("paper", "cross_angle", "leave_expression_out"):
            kwargs["session"] = identity_session
        folds = n_folds if entry["protocol"] in SIZED_PROTOCOLS else None
        runs.append((entry, df, dict(
            task=entry["task"], protocol=entry["protocol"], input=entry["input"], model=entry["model"],
            backend=entry["backend"], n_folds=folds, epochs=image_epochs if entry["input"] == "image" else epochs,
            seed=seed, device=device, image_size=image_size, batch_size=batch_size, protocol_kwargs=kwargs or None,
            aggregator=agg_obj or (None if agg == "mean" else agg), progress=progress, **options)))
    if executor is not None and not executor.local:
        results = _run_split_tasks(runs, executor, progress)
    else:
        results = (kwargs if isinstance(kwargs, str) else _run_here(df, kwargs)
                   for _, df, kwargs in tqdm(runs, desc="classification runs", disable=not progress))
    rows = []
    for (entry, _, _), result in zip(runs, results):
        shown = {**entry, "backend": PICTURE_BACKEND} if entry["input"] in PICTURE_INPUTS else entry  # no 3DMM
        if isinstance(result, str):
            rows.append({**shown, "status": result})
            continue
        save_result({**result.to_dict(), "dataset": entry["dataset"]}, results_dir)  # Table 1 says whose data
        rows.append({**shown, "aggregator": result.aggregator, "status": "ok",
                     "accuracy_mean": result.accuracy_mean,
                     "accuracy_std": result.accuracy_std, "n_folds": result.n_folds,
                     "epochs_run": result.epochs_run, "seconds_per_input": result.seconds_per_input,
                     "wall_seconds": result.wall_seconds})
    return pd.DataFrame(rows)


SKIPPED = (P.ProtocolUnavailable, FileNotFoundError, ImportError)  # a run that cannot happen: logged, not raised
AGGREGATORS = NAMED_AGGREGATORS + ("set_fit",)  # the ``aggregators`` parameter's values (set_fit: _set_fit)


def check_aggregators(aggregators) -> None:
    """One-line ValueError for a value of ``aggregators`` not in :data:`AGGREGATORS`."""
    unknown = [a for a in (aggregators or []) if a not in AGGREGATORS]
    if unknown:
        raise ValueError(f"aggregators: unknown value(s) {unknown}; known: {', '.join(AGGREGATORS)}")


def _set_fit(df, tables, device, assets_dir, progress):
    """The ``set_fit`` aggregator of a table's identity rows, or ``"skipped: …"`` when it cannot apply."""
    from ..fitting.person_fit import SetFitUnavailable, set_fit_aggregator  # heavy: only when asked

    try:
        return set_fit_aggregator(_task_table(df, "identity"), tables, device=device, assets_dir=assets_dir,
                                  progress=progress)
    except (SetFitUnavailable, P.ProtocolUnavailable) as exc:
        return f"skipped: {exc}"


def _run_here(df, kwargs):
    try:
        return run_task(df, **kwargs)
    except SKIPPED as exc:
        return f"skipped: {exc}"


def _split_task(cell, fi: int):
    try:
        return run_split(cell, fi)
    except SKIPPED as exc:
        return f"skipped: {exc}"


def _run_split_tasks(runs, ex, progress: bool):
    """Each run's cell is prepared here (in order: the picture features are computed once) and its splits sent to
    the executor at once, so the workers start while later cells are prepared; a cell is finished (here) when its
    last split is back. Returns the results (or ``"skipped: …"``) in the runs' order."""
    cells, results, owner = {}, {}, {}
    with ex.tracker("classification splits", progress) as track:
        def collect(block):
            for future, record in track.finished(block):
                i, fi = owner.pop(future)
                cells[i][2][fi] = record
                cell, t_prepare, records, _ = cells[i]
                if all(r is not None for r in records):
                    skipped = next((r for r in records if isinstance(r, str)), None)
                    results[i] = skipped or finish_cell(cell, records, t_prepare + sum(r["seconds"] for r in records))
                    del cells[i]

        for i, (_, df, kwargs) in enumerate(runs):
            if isinstance(kwargs, str):  # skipped before it started (plan: a person-grouped α, no set fit)
                results[i] = kwargs
                continue
            t0 = time.perf_counter()
            try:
                here = {k: v for k, v in kwargs.items() if k not in ("progress", "num_threads")}  # workers: 1 thread
                cell = prepare_cell(df, **here)
            except SKIPPED as exc:
                results[i] = f"skipped: {exc}"
                continue
            shared = ex.put(cell)  # held until the cell is finished: a worker that loses it rebuilds it
            cells[i] = (cell, time.perf_counter() - t0, [None] * len(cell.folds), shared)
            futures = [ex.submit(_split_task, shared, fi) for fi in range(len(cell.folds))]
            owner.update({f: (i, fi) for fi, f in enumerate(futures)})
            track.add(futures)
            collect(block=False)
        collect(block=True)
    return [results[i] for i in range(len(runs))]
