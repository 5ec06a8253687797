"""Raw images → manifest: one row per image file, with its labels, checksum, size and whether it is usable.

Loaders never crash on a bad file: every file that cannot be used stays in the manifest with ``usable=False``
and a ``reason``. Column meanings are documented in docs/ARCHITECTURE.md.
"""
from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .. import config
from ..errors import FacelibError
from ..io import atomic_write_table, decode_image
from ..vocab import ANGLE_NAMES, EXPRESSION_NAMES
from ..vocab import ANGLES as ANGLE_CODE_ORDER
from ..vocab import EXPRESSIONS as EXPRESSION_CODE_ORDER
from .labels import TASK_COLUMN, label_columns

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
# A folder dataset also takes files by content: any name (``subject01.happy``) whose first bytes are an image's.
FOLDER_EXTENSIONS = IMAGE_EXTENSIONS | {".gif", ".pgm", ".ppm", ".pbm", ".pnm", ".jp2"}
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*", b"BM", b"RIFF",
                b"\x00\x00\x00\x0cjP")

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

MANIFEST_COLUMNS = ["image_id", "path", "relpath", "dataset", "sha256", "width", "height", "subject", "gender",
                    "session", "expression", "expression_name", "angle", "usable", "reason"]


class DatasetError(FacelibError, ValueError):
    """A dataset that cannot be loaded at all (missing folder, missing labels, unreadable CSV)."""


# --------------------------------------------------------------------------------------------- image checks
@dataclass
class ImageCheck:
    sha256: str | None
    width: int | None
    height: int | None
    reason: str  # "" when usable


def is_black(image: np.ndarray, level: int = 20, max_fraction: float = 0.01) -> bool:
    """KDEF's placeholders are black frames with a few stray bright pixels: <1% of pixels above ``level``."""
    gray = image if image.ndim == 2 else image.max(axis=2)
    return float((gray > level).mean()) < max_fraction


def check_image(path: Path) -> ImageCheck:
    """Read a file once: checksum, decodability, truncation, size, and all-black placeholders."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return ImageCheck(None, None, None, f"unreadable_file: {exc.strerror or exc}")
    if not data:
        return ImageCheck(None, None, None, "empty_file: zero bytes")
    digest = hashlib.sha256(data).hexdigest()
    image = decode_image(data)
    height, width = image.shape[:2] if image is not None else (None, None)
    # libjpeg fills a truncated stream with grey and only warns; a JPEG must end with its EOI marker.
    if data[:2] == b"\xff\xd8" and len(data) > 64 and not data.rstrip(b"\x00\n\r ").endswith(b"\xff\xd9"):
        return ImageCheck(digest, width, height, "truncated_jpeg: file ends before the end-of-image marker")
    if image is None:
        return ImageCheck(digest, None, None, "corrupt_image: cannot be decoded")
    if is_black(image):
        return ImageCheck(digest, width, height, "black_image: all-black placeholder")
    return ImageCheck(digest, width, height, "")


def _list_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def looks_like_image(path: Path) -> bool:
    """An image by its name (known extension) or, whatever its name, by its first bytes."""
    if path.suffix.lower() in FOLDER_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return False
    netpbm = head[:1] == b"P" and head[1:2] in b"123456" and head[2:3] in (b" ", b"\t", b"\r", b"\n")
    return netpbm or (head.startswith(_IMAGE_MAGIC) and (not head.startswith(b"RIFF") or head[8:12] == b"WEBP"))


def _list_any_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts) and looks_like_image(p))


def _require_dir(root: str | Path | None, what: str, env: str) -> Path:
    if root is None:
        raise DatasetError(f"no {what} folder given: pass it explicitly or set {env} (see data/README.md)")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{what} folder {root} does not exist (set {env} or see data/README.md)")
    return root


def _check_all(rows: list[dict], root: Path, progress: bool, ids_from_names: bool = True) -> pd.DataFrame:
    """Fill checksum/size/usable/reason for every row; mark byte-identical copies as duplicates (and, where the
    id comes from the file name — KDEF, FEI — two files of the same name)."""
    first_by_sha: dict[str, str] = {}
    first_by_id: dict[tuple[str, str], str] = {}
    # Decoding dominates and OpenCV releases the GIL, so threads give a real speed-up.
    with ThreadPoolExecutor(max_workers=min(4, (os.cpu_count() or 1) + 1)) as pool:
        checks = list(tqdm(pool.map(check_image, [Path(r["path"]) for r in rows]), total=len(rows),
                           desc=f"checking {root.name}", disable=not progress, unit="img"))
    for row, check in zip(rows, checks):
        row.update(sha256=check.sha256, width=check.width, height=check.height)
        reason = row.get("reason") or check.reason
        if not reason and check.sha256 in first_by_sha:
            reason = f"duplicate: same bytes as {first_by_sha[check.sha256]}"
        if not reason and ids_from_names and row.get("image_id"):
            key = (row["dataset"], row["image_id"].upper())
            if key in first_by_id:
                reason = f"duplicate: another file is also named {row['image_id']} ({first_by_id[key]})"
            else:
                first_by_id[key] = row["relpath"]
        if not reason:
            first_by_sha[check.sha256] = row["relpath"]
        row["reason"] = reason
        row["usable"] = not reason
    df = pd.DataFrame(rows)
    for col in MANIFEST_COLUMNS:
        if col not in df.columns:
            df[col] = None
    extra = [c for c in df.columns if c not in MANIFEST_COLUMNS]
    df = df[MANIFEST_COLUMNS + extra]
    df["usable"] = df["usable"].astype(bool)
    return df


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
    root = _require_dir(root, "KDEF", "FACELIB_KDEF")
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
    df = _check_all(rows, root, progress)
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
    root = _require_dir(root, "FEI", "FACELIB_FEI")
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
    df = _check_all(rows, root, progress)
    df.attrs["missing"] = []
    return df


# ------------------------------------------------------------------------------------------------ generic
# Manifest columns a CSV may not use as labels (they are the loader's own).
RESERVED_COLUMNS = {"image_id", "relpath", "dataset", "sha256", "width", "height", "usable", "reason"}


def read_label_csv(csv: str | Path) -> pd.DataFrame:
    """A folder dataset's CSV: a ``path`` column (relative to the CSV's folder, or absolute) and label columns,
    every label read as text (``1`` and ``"1"`` are the same subject). Clear errors for what cannot be used."""
    csv = Path(csv).expanduser()
    if not csv.is_file():
        raise DatasetError(f"label CSV {csv} does not exist",
                           hint="pass --csv <file> with columns path,<label columns> (paths relative to the CSV)")
    try:
        table = pd.read_csv(csv, dtype=str, keep_default_na=False, na_values=[""], skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {csv} as CSV: {str(exc).strip().splitlines()[0]}",
                           hint="a header line path,<label columns>, then one line per picture") from None
    table.columns = [str(c).strip() for c in table.columns]
    if "path" not in table.columns:
        raise DatasetError(f"{csv} has no 'path' column (columns: {', '.join(table.columns) or 'none'})",
                           hint="the first line must name the columns, e.g. path,subject,expression")
    clash = sorted(RESERVED_COLUMNS & set(table.columns))
    if clash:
        raise DatasetError(f"{csv}: column(s) {', '.join(clash)} are reserved for the manifest",
                           hint="rename them in the CSV")
    table = table[table["path"].notna()]
    if table.empty:
        raise DatasetError(f"{csv} lists no pictures")
    return table


def _select_labels(available: list[str], labels, where: str) -> list[str]:
    if labels is None:
        return available
    labels = [labels] if isinstance(labels, str) else list(labels)
    unknown = [c for c in labels if c not in available]
    if unknown:
        raise DatasetError(f"unknown label column {', '.join(map(repr, unknown))} in {where}",
                           hint=f"label columns there: {', '.join(available) or 'none'}")
    return labels


def load_folder(root: str | Path | None = None, csv: str | Path | None = None, progress: bool = True,
                labels=None, label_name: str = "label") -> pd.DataFrame:
    """Any labelled face folder, in one of two layouts:

    * ``root/<label>/<picture>``: the folder name is the label, in column ``label_name`` (``label`` by default;
      name it ``subject``, ``expression`` or ``gender`` to give it that meaning);
    * a CSV ``path,<label columns>`` with paths relative to the CSV's folder (``root`` not needed).

    Pictures are taken by content, whatever their name (``subject01.happy`` holding a GIF), in any format OpenCV
    or Pillow reads. A picture's ``image_id`` is its path relative to the dataset (unique); only byte-identical
    copies count as duplicates. Columns ``subject``/``gender``/``expression``/``angle`` keep their study meaning
    (see :mod:`facelib.data.labels`); ``labels`` keeps only those label columns (an unknown one is an error).
    """
    rows = []
    if csv:
        table = read_label_csv(csv)
        base = Path(csv).expanduser().resolve().parent
        root = Path(root).expanduser().resolve() if root else base
        keep = _select_labels([c for c in table.columns if c != "path"], labels, str(csv))
        for rec in table.to_dict("records"):
            given = Path(str(rec["path"]).strip()).expanduser()
            path = (given if given.is_absolute() else base / given).resolve()
            rel = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.as_posix()
            row = {c: (None if pd.isna(rec[c]) else str(rec[c]).strip()) for c in keep}
            row.update(path=str(path), relpath=rel, dataset="folder", image_id=rel, reason="")
            if not path.is_file():
                row["reason"] = "missing_file: listed in the CSV but not on disk"
            rows.append(row)
    else:
        root = _require_dir(root, "image", "--root")
        if labels is not None:
            _select_labels([label_name], labels, f"{root} (per-folder labels are in column {label_name!r})")
        for path in _list_any_images(root):
            rel = path.relative_to(root)
            row = {"path": str(path.resolve()), "relpath": rel.as_posix(), "dataset": "folder",
                   "image_id": rel.as_posix(), "reason": ""}
            if len(rel.parts) < 2:
                row["reason"] = "missing_label: picture is not inside a <label>/ folder"
            else:
                row[label_name] = rel.parts[0]
            rows.append(row)
        if not rows:
            raise DatasetError(f"no pictures found under {root}",
                               hint="put them in one folder per label (root/<label>/<picture>) or list them in "
                                    "a CSV (--csv)")
    present = [r for r in rows if not r["reason"].startswith("missing_file")]
    missing_files = [r for r in rows if r["reason"].startswith("missing_file")]
    if not present:
        raise DatasetError(f"none of the {len(rows)} pictures listed in {csv} exists "
                           f"(first: {missing_files[0]['path']})",
                           hint="paths in the CSV are relative to the CSV's own folder")
    df = _check_all(present, root, progress, ids_from_names=False)
    if missing_files:
        df = pd.concat([df, pd.DataFrame(missing_files).assign(usable=False)], ignore_index=True)
    df.attrs["missing"] = [r["relpath"] for r in missing_files]
    return df


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
