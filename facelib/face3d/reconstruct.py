"""Manifest → coefficient table: detect the face, crop/align it, regress 3DMM coefficients; batched and cached.

The cache lives in ``<cache>/reconstruct/<backend>-<key>/`` as parquet shards, one per finished batch, keyed by
the image's sha256. Batches run here or on the study's ``executor`` (:func:`facelib.executor.run_batches`: each
worker builds the backend once, the shards are written here as batches finish). The key covers the backend, its settings and the checksums of every asset it uses, so a new
weight file never reuses stale coefficients. An interrupted run keeps its finished shards and resumes; a rerun
with nothing new only reads the shards.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from .. import assets, config
from ..errors import FacelibError
from ..executor import Executor, Recipe, run_batches
from ..io import append_shard, atomic_write_table, read_image, read_shards, save_figure
from ..vocab import ANGLES
from .deep3d import Deep3DRegressor
from .detect import FaceBoxesDetector, pick_face
from .landmarks import make_landmarker
from .tddfa import TDDFARegressor

BACKENDS = ("tddfa", "deep3d", "ict")
# Backends built in a later stage (the ict backend fits with facelib.fitting) register themselves with
# ``register_backend``; face3d imports none of them, ``make_backend`` imports the named module on first use.
LATER_BACKENDS = {"ict": "facelib.fitting.ict_fit"}
_REGISTERED: dict[str, object] = {}
RESULT_COLUMNS = ["status", "backend", "box", "box_source", "landmarks", "alpha", "beta", "pose", "texture",
                  "angles", "gamma", "translation", "recon_seconds"]
VECTOR_COLUMNS = ["box", "landmarks", "alpha", "beta", "pose", "texture", "angles", "gamma", "translation"]
CACHE_VERSION = 1  # bump when the extraction changes in a way the asset checksums do not capture


def coeff_matrix(df: pd.DataFrame, column: str) -> np.ndarray:
    """Stack a list column (``alpha``, ``beta``, ``landmarks``…) into an (n, d) float32 array."""
    if not len(df):
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([np.asarray(v, dtype=np.float32) for v in df[column]])


__all__ = ["BACKENDS", "coeff_matrix", "make_backend", "qa_figure", "read_image", "reconstruct_manifest",
           "summarize"]  # read_image is facelib.io's, re-exported for the stages that read pictures through here


# ------------------------------------------------------------------------------------------------- backends
class TDDFABackend:
    """FaceBoxes → 3DDFA_V2 crop rule → MobileNetV1×0.5 (mb05): pose 12, α 40, β 10, 68 landmarks."""

    name = "tddfa"
    asset_names = ("faceboxes", "mb05", "param_mean_std", "bfm_u_shp", "bfm_u_exp", "bfm_w_shp", "bfm_w_exp",
                   "bfm_keypoints")

    def __init__(self, device: str = "cpu", assets_dir=None, landmark_source: str = "model", fallback: bool = True):
        self.detector = FaceBoxesDetector(device=device, assets_dir=assets_dir)
        self.regressor = TDDFARegressor(device=device, assets_dir=assets_dir)
        self.landmarker = make_landmarker(landmark_source, device)
        # "landmarks": the cache key's name for the landmark source, kept so that existing caches stay valid
        self.settings = {"landmarks": landmark_source, "fallback": fallback}
        self.fallback = fallback

    def detect(self, images: list[np.ndarray]) -> list[tuple[np.ndarray | None, str]]:
        return [pick_face(b, img.shape, fallback=self.fallback) for b, img in zip(self.detector(images), images)]

    def regress(self, images: list[np.ndarray], boxes: list[np.ndarray]) -> dict[str, np.ndarray]:
        out = self.regressor(images, boxes)
        if self.landmarker is not None:
            lm = self.landmarker(images, boxes)
            out["landmarks"] = np.concatenate([lm[:, :, 0], lm[:, :, 1]], axis=1)
        return {k: out[k] for k in ("alpha", "beta", "pose", "landmarks")}


class Deep3DBackend:
    """The paper's pipeline: FaceBoxes → 68 landmarks (3DDFA's, dlib or FAN) → 5-point alignment → R-Net
    (ResNet-50, ``epoch_20.pth``): α 80, β 64, texture 80, angles 3, γ 27, translation 3.

    The face box and the 68 landmarks come from a :class:`TDDFABackend` it holds (composition: it *uses* that
    pipeline for detection and landmarks; it is not one)."""

    name = "deep3d"
    asset_names = TDDFABackend.asset_names + ("deep3d_epoch20", "lm3d_std")

    def __init__(self, device: str = "cpu", assets_dir=None, landmark_source: str = "model", fallback: bool = True):
        self.rnet = Deep3DRegressor(device=device, assets_dir=assets_dir)  # clear error if gated file absent
        self.front = TDDFABackend(device, assets_dir, landmark_source, fallback)
        self.settings = self.front.settings

    def detect(self, images: list[np.ndarray]) -> list[tuple[np.ndarray | None, str]]:
        return self.front.detect(images)

    def regress(self, images, boxes):
        lm = self.front.regress(images, boxes)["landmarks"]
        lm68 = [np.stack([row[:68], row[68:]], axis=1) for row in lm]
        out = self.rnet(images, lm68)
        out["landmarks"] = lm
        out["pose"] = np.concatenate([out["angles"], out["translation"]], axis=1)
        return out


def register_backend(name: str, factory) -> None:
    """``factory(device, assets_dir, landmark_source, fallback)`` → a backend (``detect``, ``regress``, ``name``,
    …)."""
    _REGISTERED[name] = factory


def make_backend(name: str, device: str = "cpu", assets_dir=None, landmark_source: str = "model",
                 fallback: bool = True):
    if name in LATER_BACKENDS and name not in _REGISTERED:
        importlib.import_module(LATER_BACKENDS[name])
    if name in _REGISTERED:
        return _REGISTERED[name](device, assets_dir, landmark_source, fallback)
    if name == "tddfa":
        return TDDFABackend(device, assets_dir, landmark_source, fallback)
    if name == "deep3d":
        return Deep3DBackend(device, assets_dir, landmark_source, fallback)
    raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")


# ---------------------------------------------------------------------------------------------------- cache
def cache_key(backend, assets_dir=None) -> tuple[str, dict]:
    sums = assets.checksums(list(backend.asset_names), assets_dir)
    payload = {"backend": backend.name, "settings": backend.settings, "assets": sums, "version": CACHE_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16], sums


def _reconstruct_batch(recipe: Recipe, items: list[tuple[str, str]]) -> pd.DataFrame:
    """One batch's shard (a task of :func:`reconstruct_manifest`): decode, detect, regress; ``recon_seconds`` is
    the batch's wall time shared by its pictures."""
    backend = recipe()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool, torch.inference_mode():
        rows = _process_batch(backend, items, pool)
    for row in rows:
        row["recon_seconds"] = (time.perf_counter() - t0) / len(items)
    return pd.DataFrame(rows)


def backend_recipe(backend, key: str, device: str, assets_dir=None, landmark_source: str = "model",
                   fallback: bool = True) -> Recipe:
    """How a worker builds ``backend`` (already built here): by name for the known backends, else the object itself
    is sent."""
    name = getattr(backend, "name", None)
    if name in BACKENDS and type(backend).__module__.startswith("facelib.") and \
            getattr(backend, "settings", {}).get("landmarks") == landmark_source:
        return Recipe(f"reconstruct-{name}-{key}-{device}", make_backend, built=backend, name=name, device=device,
                      assets_dir=assets_dir, landmark_source=landmark_source, fallback=fallback)
    return Recipe.of(backend, f"reconstruct-{name}-{key}")


def _process_batch(backend, items: list[tuple[str, str]], pool) -> list[dict]:
    """items: (sha256, path). Returns one result dict per item; never raises for a bad image."""
    images = list(pool.map(read_image, [p for _, p in items]))
    results = [{"sha256": sha, "status": "ok", "backend": backend.name} for sha, _ in items]
    good = [i for i, img in enumerate(images) if img is not None]
    for i in set(range(len(items))) - set(good):
        results[i]["status"] = "decode_error"
    picks = backend.detect([images[i] for i in good]) if good else []
    faces = []
    for i, (box, source) in zip(good, picks):
        if box is None:
            results[i]["status"] = "no_face"
        else:
            results[i].update(box=np.asarray(box, np.float32).tolist(), box_source=source)
            faces.append(i)
    if faces:
        out = backend.regress([images[i] for i in faces], [np.asarray(results[i]["box"]) for i in faces])
        for j, i in enumerate(faces):
            for key, arr in out.items():
                results[i][key] = np.asarray(arr[j], np.float32).tolist()
    return results


def reconstruct_manifest(manifest: pd.DataFrame, backend: str | object = "tddfa", out: str | Path | None = None,
                         cache_dir: str | Path | None = None, batch_size: int = 32, device: str | None = None,
                         assets_dir=None, landmark_source: str = "model", fallback: bool = True,
                         progress: bool = True, limit: int | None = None, executor: Executor | None = None
                         ) -> pd.DataFrame:
    """Coefficient table for every decodable image of a manifest (see docs/ARCHITECTURE.md for columns).

    Images the manifest could not decode keep the manifest's reason as ``status``. ``limit`` processes at most that
    many new images (used by tests to simulate an interrupted run). ``executor``: where the batches run
    (:mod:`facelib.executor`; None: here).
    """
    dev = config.resolve_device(device)
    if isinstance(backend, str):
        backend = make_backend(backend, dev, assets_dir, landmark_source, fallback)
    key, sums = cache_key(backend, assets_dir)
    folder = Path(cache_dir or config.cache_dir() / "reconstruct") / f"{backend.name}-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    done = read_shards(folder, RESULT_COLUMNS)
    known = set(done["sha256"])

    decodable = manifest[manifest["width"].notna() & manifest["sha256"].notna()]
    todo = decodable.drop_duplicates("sha256")
    todo = todo[~todo["sha256"].isin(known)]
    if limit is not None:
        todo = todo.iloc[:limit]
    items = list(zip(todo["sha256"], todo["path"]))
    batches = [items[start:start + batch_size] for start in range(0, len(items), batch_size)]
    shards = [done]

    def write(shard: pd.DataFrame) -> None:
        append_shard(folder, shard)
        shards.append(shard)

    run_batches(_reconstruct_batch, backend_recipe(backend, key, dev, assets_dir, landmark_source, fallback),
                batches, write, executor, desc=f"reconstruct ({backend.name})", progress=progress)
    done = pd.concat(shards, ignore_index=True) if len(shards) > 1 else done

    table = manifest.merge(done.drop_duplicates("sha256"), on="sha256", how="left", suffixes=("", "_recon"))
    undecodable = table["status"].isna()
    table.loc[undecodable, "status"] = table.loc[undecodable, "reason"].where(
        table.loc[undecodable, "reason"].astype(bool), "not_processed")
    table["backend"] = backend.name
    table["assets"] = json.dumps(sums, sort_keys=True)
    for col in RESULT_COLUMNS:
        if col not in table.columns:
            table[col] = None
    if out is not None:
        atomic_write_table(table, Path(out))
    return table


def summarize(table: pd.DataFrame) -> dict:
    return {"images": int(len(table)), "ok": int((table["status"] == "ok").sum()),
            "by_status": {str(k): int(v) for k, v in table["status"].value_counts().items()},
            "whole_frame_boxes": int((table["box_source"] == "whole_frame").sum())}


# ------------------------------------------------------------------------------------------------ QA figure
def qa_groups(ok: pd.DataFrame, group: str | None = "angle") -> tuple[str | None, list]:
    """The column the QA figure's rows follow and its values: ``group`` when the table has it with a value, else
    the first of angle / expression / subject / another label that does, else one row of everything (None)."""
    candidates = [group] + [c for c in ("angle", "expression", "subject", "label") if c != group]
    for column in candidates:
        if column and column in ok.columns and ok[column].notna().any():
            values = set(ok[column].dropna().astype(str))
            return column, [a for a in ANGLES if a in values] or sorted(values)
    return None, [None]


def qa_figure(table: pd.DataFrame, per_group: int = 4, group: str | None = "angle", out: str | Path | None = None,
              seed: int = 0, max_groups: int = 8):
    """A grid: one row per angle (or ``group``; see :func:`qa_groups` when the table lacks it), a few images
    each, detector box and 68 landmarks drawn. ``fig.qa_note`` says which grouping was used and why."""
    ok = table[table["status"] == "ok"]
    if ok.empty:
        raise FacelibError("no picture was reconstructed (status ok): nothing to show in the QA figure",
                           hint=f"statuses: {dict(table['status'].value_counts())}")
    column, groups = qa_groups(ok, group)
    groups = groups[:max_groups]
    note = (f"rows: {column}" if column == group else
            f"no {group!r} column with values: rows by {column}" if column else
            f"no {group!r} (nor any label) column: one row of pictures")
    fig, axes = plt.subplots(len(groups), per_group, figsize=(2.2 * per_group, 2.6 * len(groups)), squeeze=False)
    for r, g in enumerate(groups):
        rows = ok if column is None else ok[ok[column].astype(str) == g]
        rows = rows.sample(min(per_group, len(rows)), random_state=seed) if len(rows) else rows
        for c in range(per_group):
            ax = axes[r, c]
            ax.axis("off")
            if c >= len(rows):
                continue
            row = rows.iloc[c]
            img = read_image(row["path"])
            if img is None:
                continue
            img = img[:, :, ::-1]
            x0, y0, x1, y1 = np.asarray(row["box"])[:4]
            pad = 0.25 * max(x1 - x0, y1 - y0)
            h, w = img.shape[:2]
            cx0, cy0 = int(max(0, x0 - pad)), int(max(0, y0 - pad))
            cx1, cy1 = int(min(w, x1 + pad)), int(min(h, y1 + pad))
            ax.imshow(img[cy0:cy1, cx0:cx1])
            lm = np.asarray(row["landmarks"])
            ax.scatter(lm[:68] - cx0, lm[68:] - cy0, s=3, c="lime")
            ax.add_patch(plt.Rectangle((x0 - cx0, y0 - cy0), x1 - x0, y1 - y0, fill=False, ec="red", lw=0.8))
            ax.set_title(f"{Path(str(row['image_id'])).name[-22:]} ({row['box_source']})", fontsize=7)
        axes[r, 0].text(-0.1, 0.5, "" if g is None else str(g), transform=axes[r, 0].transAxes, ha="right",
                        va="center", fontsize=11)
    fig.tight_layout()
    fig.qa_note = note
    if out:
        save_figure(fig, out, dpi=110)
    return fig
