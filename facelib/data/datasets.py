"""Raw images → manifest: one row per image file, with its labels, checksum, size and whether it is usable.

Loaders never crash on a bad file: every file that cannot be used stays in the manifest with ``usable=False``
and a ``reason``. Column meanings are documented in docs/ARCHITECTURE.md.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pandas as pd

from .. import config
from ..io import atomic_write_table
from ..vocab import ANGLE_NAMES, EXPRESSION_NAMES
from ..vocab import ANGLES as ANGLE_CODE_ORDER
from ..vocab import EXPRESSIONS as EXPRESSION_CODE_ORDER
from .checks import (IMAGE_EXTENSIONS, MANIFEST_COLUMNS, DatasetError, ImageCheck, check_all, check_image, is_black,
                     require_dir)
from .folder import (FOLDER_EXTENSIONS, RESERVED_COLUMNS, folder_problems, load_folder, looks_like_image,
                     read_label_csv)
from .labels import TASK_COLUMN, label_columns

__all__ = ["IMAGE_EXTENSIONS", "MANIFEST_COLUMNS", "DatasetError", "ImageCheck", "check_image", "is_black",
           "FOLDER_EXTENSIONS", "RESERVED_COLUMNS", "folder_problems", "load_folder", "looks_like_image",
           "read_label_csv", "load", "load_kdef", "load_fei", "study_datasets", "save_manifest", "summarize",
           "format_summary"]

EXPRESSIONS = EXPRESSION_NAMES  # code → name
EXPRESSION_CODES = EXPRESSION_CODE_ORDER
ANGLES = ANGLE_NAMES  # code → name
ANGLE_CODES = ANGLE_CODE_ORDER
KDEF_FULL_COUNT = 4900  # 70 people × 2 sessions × 7 expressions × 5 angles

_KDEF_NAME = re.compile(r"^(?P<session>[AB])(?P<gender>[FM])(?P<id>\d{2})(?P<expression>AF|AN|DI|HA|NE|SA|SU)"
                        r"(?P<angle>FL|HL|S|HR|FR)$", re.IGNORECASE)
# The official KDEF zip ships two files under truncated names.
KDEF_KNOWN_MISNAMED = {"AF31V": "AF31SAHL", "AM31H": "AM31SUHR"}

_FEI_FRONTAL = re.compile(r"^(?P<id>\d{1,3})(?P<kind>[ab])$", re.IGNORECASE)
_FEI_ORIGINAL = re.compile(r"^(?P<id>\d{1,3})-(?P<pose>\d{2})$")
FEI_FRONTAL_EXPRESSION = {"a": "neutral", "b": "smiling"}


def _list_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


# --------------------------------------------------------------------------------------------------- KDEF
def parse_kdef_name(stem: str) -> dict | None:
    m = _KDEF_NAME.match(stem)
    if not m:
        return None
    g = {k: v.upper() for k, v in m.groupdict().items()}
    return {"session": g["session"], "gender": g["gender"], "subject": f"{g['gender']}{g['id']}",
            "expression": g["expression"], "expression_name": EXPRESSIONS[g["expression"]],
            "angle": g["angle"], "image_id": stem.upper()}


def load_kdef(root: str | Path | None, progress: bool = True) -> pd.DataFrame:
    """Manifest of a KDEF folder, official layout (``AF01/AF01ANS.JPG``) or flat.

    ``df.attrs["missing"]`` lists the expected files that are absent: for every (session, person) present, all
    7 expressions × 5 angles (a complete KDEF has 4900 files).
    """
    root = require_dir(root, "KDEF", "FACELIB_KDEF")
    rows = []
    for path in _list_images(root):
        stem = path.stem
        row = {"path": str(path.resolve()), "relpath": str(path.relative_to(root)), "dataset": "kdef",
               "image_id": stem.upper(), "reason": ""}
        parsed = parse_kdef_name(stem)
        if parsed:
            row.update(parsed)
        elif stem.upper() in KDEF_KNOWN_MISNAMED:
            true = KDEF_KNOWN_MISNAMED[stem.upper()]
            row["reason"] = (f"unparseable_name: {path.name} is how the official KDEF zip ships {true}; "
                             f"rename it to {true}{path.suffix} to use it")
        else:
            row["reason"] = (f"unparseable_name: {path.name} does not match KDEF's "
                             "<session A/B><gender F/M><id 01-35><expression><angle>.JPG")
        rows.append(row)
    if not rows:
        raise DatasetError(f"no images found under KDEF folder {root}")
    df = check_all(rows, root, progress)
    df.attrs["missing"] = kdef_missing(df)
    return df


def kdef_missing(df: pd.DataFrame) -> list[str]:
    """Expected KDEF image ids absent from the folder, for every (session, person) that is present."""
    named = df.dropna(subset=["session", "subject"])
    present = set(named["image_id"])
    missing = []
    for session, subject in sorted(set(zip(named["session"], named["subject"]))):
        for expression in EXPRESSION_CODES:
            for angle in ANGLE_CODES:
                image_id = f"{session}{subject}{expression}{angle}"
                if image_id not in present:
                    missing.append(image_id)
    return missing


# ---------------------------------------------------------------------------------------------------- FEI
def find_fei_labels(root: Path) -> Path:
    """``fei_gender.csv`` inside the FEI folder, or beside it (the folder's parent)."""
    for candidate in (root / "fei_gender.csv", root.parent / "fei_gender.csv"):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"fei_gender.csv (columns subject_id,gender) not found in {root} or {root.parent}; "
                       "see data/README.md")


def load_fei(root: str | Path | None, which: str = "frontal", labels_csv: str | Path | None = None,
             progress: bool = True) -> pd.DataFrame:
    """Manifest of the FEI face database.

    ``which``: ``frontal`` (``<id>a.jpg`` neutral / ``<id>b.jpg`` smiling, the spatially normalised set),
    ``original`` (``<id>-<pose>.jpg``, poses 01–14) or ``all``. Gender comes from ``fei_gender.csv``; a subject
    with an image but no label is an error that names it.
    """
    if which not in ("frontal", "original", "all"):
        raise ValueError("which must be 'frontal', 'original' or 'all'")
    root = require_dir(root, "FEI", "FACELIB_FEI")
    labels_path = Path(labels_csv) if labels_csv else find_fei_labels(root)
    labels = pd.read_csv(labels_path)
    if not {"subject_id", "gender"} <= set(labels.columns):
        raise DatasetError(f"{labels_path} must have columns subject_id,gender; has {list(labels.columns)}")
    gender_of = {int(s): str(g).strip().upper() for s, g in zip(labels["subject_id"], labels["gender"])}
    bad = {s: g for s, g in gender_of.items() if g not in ("M", "F")}
    if bad:
        raise DatasetError(f"{labels_path}: gender must be M or F, got {bad}")
    rows = []
    for path in _list_images(root):
        stem = path.stem
        row = {"path": str(path.resolve()), "relpath": str(path.relative_to(root)), "dataset": "fei",
               "image_id": stem, "reason": ""}
        m_front, m_orig = _FEI_FRONTAL.match(stem), _FEI_ORIGINAL.match(stem)
        if m_front and which in ("frontal", "all"):
            sid, kind = int(m_front["id"]), m_front["kind"].lower()
            row.update(expression=FEI_FRONTAL_EXPRESSION[kind], expression_name=FEI_FRONTAL_EXPRESSION[kind],
                       angle="frontal")
        elif m_orig and which in ("original", "all"):
            sid, pose = int(m_orig["id"]), int(m_orig["pose"])
            if not 1 <= pose <= 14:
                row["reason"] = f"unparseable_name: FEI pose must be 01-14, got {m_orig['pose']}"
            row.update(angle=f"pose{pose:02d}", expression="smiling" if pose == 12 else "neutral")
            row["expression_name"] = row["expression"]
        elif m_front or m_orig:
            continue  # the other FEI set, not requested
        else:
            row["reason"] = "unparseable_name: expected FEI <id>a.jpg, <id>b.jpg or <id>-<pose>.jpg"
            rows.append(row)
            continue
        row["subject"] = f"fei{sid:03d}"
        row["subject_id"] = sid
        rows.append(row)
    if not rows:
        raise DatasetError(f"no FEI images ({which}) found under {root}")
    unlabeled = sorted({r["subject_id"] for r in rows if "subject_id" in r and r["subject_id"] not in gender_of})
    if unlabeled:
        raise DatasetError(f"FEI subjects without a gender label in {labels_path}: "
                           f"{', '.join(str(s) for s in unlabeled)}")
    for r in rows:
        if "subject_id" in r:
            r["gender"] = gender_of[r["subject_id"]]
    df = check_all(rows, root, progress)
    df.attrs["missing"] = []
    return df


STUDY_DATASETS = {None: ("kdef", "fei"), "paper": ("kdef", "fei"), "kdef": ("kdef",), "fei": ("fei",),
                  "folder": ("folder",)}


def study_datasets(dataset: str | None) -> tuple[str, ...]:
    """The manifests a study run makes, from its ``dataset`` parameter: None (or ``paper``) → KDEF and FEI, as
    the paper; ``folder`` → one dataset of your own (``data_root`` / ``data_csv``); ``kdef`` or ``fei`` alone."""
    if dataset not in STUDY_DATASETS:
        raise DatasetError(f"unknown dataset parameter {dataset!r}",
                           hint="use null (KDEF + FEI), kdef, fei or folder (with data_root or data_csv)")
    return STUDY_DATASETS[dataset]


def load(dataset: str, root: str | Path | None = None, progress: bool = True, **kwargs) -> pd.DataFrame:
    """Dispatch on the dataset name; ``root`` defaults to the dataset's environment variable."""
    if dataset == "kdef":
        return load_kdef(root or config.kdef_root(), progress=progress)
    if dataset == "fei":
        return load_fei(root or config.fei_root(), progress=progress, **kwargs)
    if dataset == "folder":
        return load_folder(root, progress=progress, **kwargs)
    raise DatasetError(f"unknown dataset {dataset!r}", hint="use kdef, fei or folder")


# ------------------------------------------------------------------------------------------ save / summary
def save_manifest(df: pd.DataFrame, out: str | Path) -> tuple[Path, Path]:
    """Write ``<out>.parquet`` and ``<out>.csv`` (atomically) and return both paths."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix in (".parquet", ".csv") else out
    return atomic_write_table(df, stem.with_suffix(".parquet")), atomic_write_table(df, stem.with_suffix(".csv"))


def summarize(df: pd.DataFrame) -> dict:
    """Counts a reader checks first; the same dict is printed by ``python -m facelib data check --json``."""
    usable = df[df["usable"]]

    def counts(col):
        if col not in usable.columns:
            return {}
        return {str(k): int(v) for k, v in sorted(Counter(usable[col].dropna()).items())}

    return {
        "dataset": sorted(df["dataset"].dropna().unique().tolist()),
        "images": int(len(df)),
        "usable": int(len(usable)),
        "subjects": int(usable["subject"].nunique()) if "subject" in usable else 0,
        "by_gender": counts("gender"),
        "by_expression": counts("expression"),
        "by_angle": counts("angle"),
        "by_session": counts("session"),
        "by_label": {c: counts(c) for c in label_columns(df) if c not in TASK_COLUMN.values()},
        "subjects_by_gender": ({str(g): int(n) for g, n in usable.groupby("gender")["subject"].nunique().items()}
                               if "gender" in usable and usable["gender"].notna().any() else {}),
        "excluded": [{"path": str(p), "reason": str(r)} for p, r in
                     zip(df.loc[~df["usable"], "relpath"], df.loc[~df["usable"], "reason"])],
        "missing": list(df.attrs.get("missing", [])),
    }


def format_summary(summary: dict) -> str:
    lines = [f"dataset: {', '.join(summary['dataset'])}",
             f"images: {summary['images']}   usable: {summary['usable']}   subjects: {summary['subjects']}"]
    for key in ("subjects_by_gender", "by_gender", "by_expression", "by_angle", "by_session"):
        if summary.get(key):
            lines.append(f"{key.replace('_', ' ')}: " + ", ".join(f"{k} {v}" for k, v in summary[key].items()))
    for column, by in summary.get("by_label", {}).items():
        lines.append(f"by {column}: " + ", ".join(f"{k} {v}" for k, v in by.items()))
    lines.append(f"excluded: {len(summary['excluded'])}")
    lines += [f"  {e['path']}: {e['reason']}" for e in summary["excluded"]]
    lines.append(f"missing expected files: {len(summary['missing'])}")
    lines += [f"  {m}" for m in summary["missing"]]
    return "\n".join(lines)
