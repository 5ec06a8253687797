"""Your own dataset: a folder of labelled face pictures (per-label sub-folders, or a CSV of ``path,<labels>``),
pictures taken by content whatever their names, ids from their paths."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .checks import IMAGE_EXTENSIONS, DatasetError, check_all, require_dir

# A folder dataset also takes files by content: any name (``subject01.happy``) whose first bytes are an image's.
FOLDER_EXTENSIONS = IMAGE_EXTENSIONS | {".gif", ".pgm", ".ppm", ".pbm", ".pnm", ".jp2"}
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*", b"BM", b"RIFF",
                b"\x00\x00\x00\x0cjP")


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


def list_any_images(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts) and looks_like_image(p))


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


def select_labels(available: list[str], labels, where: str) -> list[str]:
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
        keep = select_labels([c for c in table.columns if c != "path"], labels, str(csv))
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
        root = require_dir(root, "image", "--root")
        if labels is not None:
            select_labels([label_name], labels, f"{root} (per-folder labels are in column {label_name!r})")
        for path in list_any_images(root):
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
    df = check_all(present, root, progress, ids_from_names=False)
    if missing_files:
        df = pd.concat([df, pd.DataFrame(missing_files).assign(usable=False)], ignore_index=True)
    df.attrs["missing"] = [r["relpath"] for r in missing_files]
    return df


def folder_problems(data_root: str | None, data_csv: str | None) -> list[str]:
    """What a folder study lacks before it starts (empty when it can start)."""
    if not data_root and not data_csv:
        return ["your dataset: not configured — set data_csv: <labels.csv> (path,<label columns>, paths relative "
                "to it) or data_root: <folder> (one sub-folder per label) in the parameter file"]
    if data_csv and not Path(data_csv).expanduser().is_file():
        return [f"your dataset: label CSV {data_csv} does not exist — set data_csv to the CSV's path"]
    if not data_csv and not Path(data_root).expanduser().is_dir():
        return [f"your dataset: folder {data_root} does not exist — set data_root to the folder of pictures"]
    return []
