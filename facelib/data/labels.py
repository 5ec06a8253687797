"""Which label column means which task — the one owner of that mapping.

``subject`` → identity, ``expression`` → expression, ``gender`` → gender; any other label column of a folder
dataset (a CSV column, or ``label`` from per-label folders) → a generic task of the same name. ``angle`` and
``session`` are conditions (protocols and per-angle figures use them), not tasks. :func:`tasks_for` reads a
manifest or coefficient table and says which tasks its labels allow, and why the others cannot run.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..errors import FacelibError

TASK_COLUMN = {"identity": "subject", "expression": "expression", "gender": "gender"}
TASK_INPUT = {"identity": "alpha", "expression": "beta", "gender": "alpha"}
GENERIC_INPUT = "alpha+beta"  # a label of unknown meaning may depend on identity and expression alike
CONDITION_COLUMNS = ("angle", "session")
# Columns every stage adds that are not labels: the manifest's own, the reconstruction's, the fitting's.
NOT_LABELS = {"image_id", "path", "relpath", "dataset", "sha256", "width", "height", "usable", "reason",
              "expression_name", "subject_id", "status", "backend", "box", "box_source", "landmarks", "alpha",
              "beta", "pose", "texture", "angles", "gamma", "translation", "assets", *CONDITION_COLUMNS}
MIN_CLASSES, MIN_PER_CLASS = 2, 2


class UnknownLabel(FacelibError, ValueError):
    """A task or label column the table does not have."""


@dataclass(frozen=True)
class LabelTask:
    task: str          # identity, expression, gender, or the generic column's name
    column: str        # the label column
    input: str         # default coefficient input
    n_classes: int     # classes with at least MIN_PER_CLASS usable pictures
    n_pictures: int    # usable pictures with a label
    reason: str = ""   # why it cannot run ("" = it can)

    @property
    def runnable(self) -> bool:
        return not self.reason


def column_for(task: str) -> str:
    """The label column of a task (a generic task's column is its own name)."""
    return TASK_COLUMN.get(task, task)


def task_for_column(column: str) -> str:
    return {c: t for t, c in TASK_COLUMN.items()}.get(column, column)


def default_input(task: str) -> str:
    return TASK_INPUT.get(task, GENERIC_INPUT)


def _usable(table: pd.DataFrame) -> pd.DataFrame:
    mask = pd.Series(True, index=table.index)
    if "usable" in table.columns:
        mask &= table["usable"].fillna(False).astype(bool)
    if "status" in table.columns:
        mask &= table["status"].eq("ok")
    return table[mask]


def label_columns(table: pd.DataFrame) -> list[str]:
    """Label columns of a table: the study's known ones first, then any other non-list column with a value."""
    known = [c for c in TASK_COLUMN.values() if c in table.columns and table[c].notna().any()]
    other = [c for c in table.columns if c not in NOT_LABELS and c not in TASK_COLUMN.values()
             and not str(c).startswith("fit_") and not str(c).endswith("_recon") and table[c].notna().any()
             and not table[c].dropna().map(lambda v: isinstance(v, (list, tuple, dict)) or hasattr(v, "shape")).any()]
    return known + other


def tasks_for(table: pd.DataFrame, runnable_only: bool = False) -> list[LabelTask]:
    """One :class:`LabelTask` per label column (see the module's docstring); a task needs at least 2 classes of
    at least 2 usable pictures each, otherwise ``reason`` says what is missing."""
    usable = _usable(table)
    tasks = []
    for column in label_columns(table):
        values = usable[column].dropna().astype(str)
        values = values[values.str.strip() != ""]
        counts = values.value_counts()
        n_classes = int((counts >= MIN_PER_CLASS).sum())
        reason = ""
        if n_classes < MIN_CLASSES:
            reason = (f"column {column!r} has {n_classes} class(es) with at least {MIN_PER_CLASS} usable pictures; "
                      f"a task needs {MIN_CLASSES}")
        task = task_for_column(column)
        tasks.append(LabelTask(task, column, default_input(task), n_classes, int(len(values)), reason))
    return [t for t in tasks if t.runnable] if runnable_only else tasks


def require_task(table: pd.DataFrame, task: str) -> LabelTask:
    """The task's :class:`LabelTask`, or a clear error naming the label columns the table has."""
    found = {t.task: t for t in tasks_for(table)}
    if task not in found:
        have = ", ".join(f"{t.column} ({t.task})" if t.task != t.column else t.column for t in found.values())
        raise UnknownLabel(f"task {task!r} needs a label column {column_for(task)!r}, which this table lacks",
                           hint=f"label columns here: {have or 'none'}")
    if not found[task].runnable:
        raise UnknownLabel(f"task {task!r} cannot run: {found[task].reason}",
                           hint="label more pictures, or choose another task")
    return found[task]


def describe(table: pd.DataFrame) -> str:
    """One line per label column: the task it gives and its classes, or why it cannot run."""
    lines = []
    for t in tasks_for(table):
        what = f"{t.task} (column {t.column!r}, input {t.input})"
        lines.append(f"{what}: {t.n_classes} classes, {t.n_pictures} labelled pictures" if t.runnable else
                     f"{what}: not run — {t.reason}")
    return "\n".join(lines) or "no label columns: nothing to classify (add a CSV column or per-label folders)"


def colour_column(table: pd.DataFrame, prefer: str) -> str | None:
    """The label to colour a figure by: ``prefer`` when the table has it, else its first label column."""
    columns = label_columns(table)
    return prefer if prefer in columns else (columns[0] if columns else None)


def has_values(table: pd.DataFrame, column: str) -> bool:
    """Whether a (condition) column such as ``angle`` is present with at least one value."""
    return column in table.columns and bool(table[column].notna().any())
