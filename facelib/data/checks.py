"""Reading every file of a dataset once: checksum, decodability, truncation, size, all-black placeholders,
duplicates — and the manifest's columns. Shared by the KDEF / FEI loaders (:mod:`.datasets`) and the folder loader
(:mod:`.folder`)."""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..errors import FacelibError
from ..io import decode_image

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}  # KDEF / FEI take these names
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


def require_dir(root: str | Path | None, what: str, env: str) -> Path:
    if root is None:
        raise DatasetError(f"no {what} folder given: pass it explicitly or set {env} (see data/README.md)")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{what} folder {root} does not exist (set {env} or see data/README.md)")
    return root


def check_all(rows: list[dict], root: Path, progress: bool, ids_from_names: bool = True) -> pd.DataFrame:
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
