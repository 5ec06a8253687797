"""Atomic file writes (a crash never leaves a half-written table under its final name), the resumable shard
cache, figure saving, and the one image reader (:func:`read_image`, :func:`decode_image`)."""
from __future__ import annotations

import io as _bytes_io
import json
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError


def current_umask() -> int:
    """The process's umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(text: str, dest: str | os.PathLike) -> Path:
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return dest


@contextmanager
def atomic_path(dest: str | os.PathLike):
    """Yield a temporary path beside ``dest``; on success it is renamed onto ``dest`` in one step."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp makes the file 0600; give it the mode any other file the user writes gets (0666 less the umask),
        # so a shared server can serve the reports.
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_table(df: pd.DataFrame, dest: str | os.PathLike) -> Path:
    """Write a DataFrame as parquet or CSV (by suffix). List columns become JSON text in CSV."""
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        if dest.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        elif dest.suffix == ".csv":
            out = df.copy()
            for col in out.columns:
                if out[col].map(lambda v: isinstance(v, (list, tuple)) or hasattr(v, "tolist")).any():
                    out[col] = out[col].map(lambda v: json.dumps(list(map(float, v))) if v is not None and
                                            hasattr(v, "__len__") else v)
            out.to_csv(tmp, index=False)
        else:
            raise ValueError(f"unsupported table format: {dest.suffix}")
    return dest


def atomic_write_json(obj, dest: str | os.PathLike) -> Path:
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    return dest


# A resumable batch cache: one parquet shard per finished batch, rows keyed by the image's sha256.
def read_shards(folder: str | os.PathLike, columns: list[str] | None = None) -> pd.DataFrame:
    """Every finished batch in ``folder`` (one row per sha256; empty table with ``columns`` when none)."""
    shards = sorted(Path(folder).glob("shard-*.parquet"))
    if not shards:
        return pd.DataFrame(columns=["sha256"] + list(columns or []))
    return pd.concat([pd.read_parquet(s) for s in shards], ignore_index=True).drop_duplicates("sha256")


def append_shard(folder: str | os.PathLike, shard: pd.DataFrame) -> Path:
    """Write one finished batch atomically; an interrupted run keeps every shard written before."""
    n = len(list(Path(folder).glob("shard-*.parquet")))
    return atomic_write_table(shard, Path(folder) / f"shard-{n:05d}-{int(time.time() * 1e3)}.parquet")


def save_figure(fig, out: str | os.PathLike, dpi: int, close: bool = False, **savefig_kwargs) -> Path:
    """Save a matplotlib figure (its folder created); ``close`` releases it (report figures are files only)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, **savefig_kwargs)
    if close:
        import matplotlib.pyplot as plt  # only figure owners call this; io itself does not need matplotlib

        plt.close(fig)
    return out


# ------------------------------------------------------------------------------------------------ images
def decode_image(data: bytes, gray: bool = False) -> np.ndarray | None:
    """Decode an image file's bytes, whatever its name: OpenCV first (JPEG, PNG, TIFF, PGM, BMP, WebP, GIF on
    recent builds), Pillow for the rest (GIF, multi-page TIFF: first frame). 8-bit BGR ``(h, w, 3)`` — grayscale
    files as 3 equal channels — or ``(h, w)`` with ``gray``; 16-bit images are scaled to 8 bits. None when
    neither library can decode it."""
    if not data:
        return None
    flags = cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags | cv2.IMREAD_ANYDEPTH)
    if image is None:
        try:
            with Image.open(_bytes_io.BytesIO(data)) as pil:
                pil.seek(0)
                rgb = np.asarray(pil.convert("L" if gray else "RGB"))
        except (UnidentifiedImageError, OSError, ValueError, EOFError):
            return None
        image = rgb if gray else np.ascontiguousarray(rgb[:, :, ::-1])
    if image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    return image


def read_image(path: str | os.PathLike, gray: bool = False) -> np.ndarray | None:
    """Read one picture (see :func:`decode_image`); None when the file is missing or cannot be decoded."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    return decode_image(data, gray=gray)


def cached_arrays(cache, default_dir: Path, name: str, key: str, make) -> tuple[dict, Path | None, bool]:
    """A conversion cached as ``.npz`` and keyed by its inputs (morphable-model sources share it): ``cache`` is
    False (no cache), None (``default_dir/<name>_<key16>.npz``), a folder, or a ``.npz`` path. A file whose stored
    key differs is rebuilt. Returns (arrays, the cache path or None, whether it was a hit)."""
    path = None
    if cache is not False:
        c = Path(cache) if cache else Path(default_dir)
        path = c if c.suffix == ".npz" else c / f"{name}_{key[:16]}.npz"
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) == key:
                return {k: z[k] for k in z.files}, path, True
    data = make()
    if path is not None:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, key=np.array(key), **data)
    return data, path, False
