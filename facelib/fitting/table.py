"""Fitting a whole coefficient table (:func:`fit_table`, cached and resumable), its target landmarks, a loss
summary and the photo | rendering | overlay figure.

Target landmarks (:func:`fit_table`): dlib's 68-point predictor placed by dlib's own HOG detector on the backend's
crop (:class:`DlibTargets`). Where HOG finds no face or the backend's yaw exceeds 60° (KDEF's full profiles), the
backend's own landmarks are the target (so the landmark term starts at 0 there and only the other terms act);
``fit_losses["_target"]`` records which. The 3DDFA landmarks are 3-D-consistent (jaw points on the hidden side)
while dlib's contour follows the visible silhouette; on half profiles the two disagree by 15–30 px on the jaw.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Mapping

import cv2
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from .. import config
from ..face3d.cameras import crop_box, crop_image, crop_rgb, crop_to_image, image_to_crop, landmarks_136_to_68, pose_yaw
from ..face3d.landmarks import DlibLandmarker
from ..face3d.morphable import MorphableModel
from ..face3d.reconstruct import read_image
from ..executor import Executor, Recipe, run_batches
from ..io import append_shard, atomic_write_table, read_shards, save_figure
from . import face_embedding
from .fitter import MODES, Fitter
from .skin import skin_model_for_table
from .texture import load_texture_basis, with_texture

FIT_VERSION = 2


def dlib_embedder(model=None) -> Callable:
    """The perceptual term's embedder from :mod:`facelib.fitting.face_embedding` (PyTorch port of dlib's face descriptor):
    ``(images (B, 3, H, W) RGB 0–1, landmarks (B, 68, 2)) → (B, 128)``, dlib's chip alignment from the landmarks."""
    net = model if model is not None else face_embedding.load_dlib_resnet()

    def embedder(images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        return face_embedding.embed(images * 255.0, landmarks, model=net.to(images.device))

    embedder.name = "dlib_resnet"  # type: ignore[attr-defined]
    return embedder


class DlibTargets:
    """dlib's 68-point shape predictor placed by dlib's own HOG frontal-face detector.

    The shape predictor is trained on the HOG detector's boxes; fed FaceBoxes' (larger) box it drifts badly on
    non-frontal faces (tens of pixels on KDEF's half profiles). So the HOG detector is run on the backend's crop
    (``roi``, resampled to 320 px, upsampled once) and the detection that overlaps the backend's box most is used.
    Where HOG finds no face (profiles), ``None`` is returned for that image and the caller falls back.
    """

    name = "dlib"

    def __init__(self):
        import dlib  # optional dependency: only dlib's landmark targets

        self._marker = DlibLandmarker()
        self._det = dlib.get_frontal_face_detector()

    def __call__(self, images_bgr, boxes, rois) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = []
        for img, box, roi in zip(images_bgr, boxes, rois):
            crop = crop_image(img, roi)
            side = crop.shape[0]
            small = cv2.resize(crop, (320, 320), interpolation=cv2.INTER_AREA)
            dets = self._det(np.ascontiguousarray(small[:, :, ::-1]), 1)
            if len(dets) == 0:
                out.append(None)
                continue
            sc = side / 320.0
            x0, y0 = int(round(roi[0])), int(round(roi[1]))
            cands = [np.array([d.left() * sc + x0, d.top() * sc + y0, d.right() * sc + x0, d.bottom() * sc + y0])
                     for d in dets]
            b = np.asarray(box, np.float64)[:4]

            def overlap(c):
                ix = max(0.0, min(c[2], b[2]) - max(c[0], b[0]))
                iy = max(0.0, min(c[3], b[3]) - max(c[1], b[1]))
                return ix * iy

            best = max(cands, key=overlap)
            out.append(self._marker([img], [best])[0] if overlap(best) > 0 else None)
        return out


def landmark_targets(rows: pd.DataFrame, images: list[np.ndarray], source, landmarker, rois=None,
                      max_yaw: float = 60.0):
    """(B, 68, 2) target landmarks in image pixels and the source used per image ("dlib" or "table").

    dlib is not trusted beyond ``max_yaw`` degrees of the backend's yaw (its 2-D contour points do not match the
    model's on profiles) nor where its detector finds no face: the table's landmarks are the target there."""
    own = np.stack([landmarks_136_to_68(v) for v in rows["landmarks"]])
    if source == "table":
        return own, ["table"] * len(rows)
    boxes = [np.asarray(b, np.float32) for b in rows["box"]]
    if rois is None:
        rois = [crop_box(b) for b in boxes]
    found = landmarker(images, boxes, rois)
    yaw = np.degrees(np.abs(pose_yaw(np.stack([np.asarray(v, np.float32) for v in rows["pose"]]))))
    found = [None if y > max_yaw else f for f, y in zip(found, yaw)]
    lm = np.stack([own[i] if f is None else np.asarray(f, np.float32) for i, f in enumerate(found)])
    return lm, ["table" if f is None else "dlib" for f in found]


def fit_table(coeff_table: pd.DataFrame, mode: str = "landmarks", iterations: int | None = None,
              batch_size: int = 8, device: str | None = None, weights: Mapping[str, float | None] | None = None,
              target_landmarks: str = "dlib", texture: str | Path | None = None, skin_model=None,
              embedder: Callable | None = None, image_size: int = 160, assets_dir=None,
              cache_dir: str | Path | None = None, progress: bool = True, limit: int | None = None,
              optimize: tuple[str, ...] | None = None, out: str | Path | None = None,
              executor: Executor | None = None) -> pd.DataFrame:
    """Fit every ``ok`` row of a tddfa coefficient table; returns a table in the same schema.

    ``alpha``, ``beta``, ``pose`` hold the fitted coefficients, ``landmarks`` the fitted model's 68 points (image
    pixels), ``gamma`` / ``texture`` the lighting / texture coefficients (full mode), ``backend`` =
    ``"<backend>+fit_<mode>"``. Extra column ``fit_losses``: JSON {term: [first, last]} of the weighted per-image
    terms. Rows that are not ``ok`` are copied unchanged (backend renamed). ``target_landmarks``: ``"dlib"``
    (:class:`DlibTargets`: dlib placed by its own HOG detector; where it finds no face, e.g. profiles, the table's
    landmarks are the target; ``fit_losses["_target"]`` says which) or ``"table"`` (the table's own landmarks —
    for 3DDFA those are its model's, so the landmark loss starts at 0). ``texture``: a texture .npz
    (:mod:`facelib.fitting.texture`) used in full mode. ``skin_model``: SkinModel, None → trained on the table
    (:func:`skin_model_for_table`, cached), False → no attention. Resumable: finished batches are cached in
    ``<cache>/fitting/<key>/`` as parquet shards keyed by the image sha256. ``executor``: where the batches run
    (:mod:`facelib.executor`; None: here).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    backends = set(coeff_table["backend"].dropna())
    if backends and not all(str(b).startswith("tddfa") for b in backends):
        raise ValueError(f"fit_table fits 3DDFA coefficients; table backend is {backends}")
    base = str(next(iter(backends))) if backends else "tddfa"
    name = f"{base}+fit_{mode}"
    if target_landmarks not in ("dlib", "table"):
        raise ValueError("target_landmarks must be 'dlib' or 'table'")
    tex_sha = None
    if mode == "full" and texture is not None:
        tb = load_texture_basis(texture)
        tex_sha = tb["provenance"].get("sha256") or hashlib.sha256(Path(texture).read_bytes()).hexdigest()
    if mode == "full" and skin_model is None:
        skin_model = skin_model_for_table(coeff_table, cache_dir=cache_dir)
    settings = {"v": FIT_VERSION, "mode": mode, "iterations": iterations, "weights": dict(weights or {}),
                "target": target_landmarks, "texture": tex_sha, "size": image_size, "optimize": optimize,
                "embedder": None if embedder is None else getattr(embedder, "name", type(embedder).__name__),
                "skin": skin_model.fingerprint() if skin_model else False}  # which skin model, not just one
    build = dict(mode=mode, iterations=iterations, weights=weights, target_landmarks=target_landmarks,
                 texture=texture if mode == "full" else None, skin_model=skin_model or None, embedder=embedder,
                 image_size=image_size, optimize=optimize, device=device, assets_dir=assets_dir)
    recipe = Recipe(f"fit-{name}-{fit_key(settings)}-{device}", bfm_fit_batch, built=bfm_fit_batch(**build), **build)
    done = cached_fits(coeff_table, name, settings, recipe, cache_dir=cache_dir, limit=limit,
                       batch_size=batch_size, progress=progress, desc=f"fit ({mode})", executor=executor)
    table = coeff_table.copy()
    table["backend"] = name
    if "fit_losses" not in table.columns:
        table["fit_losses"] = None
    if len(done):
        merge_fits(table, done, ("alpha", "beta", "pose", "landmarks", "gamma", "texture", "fit_losses",
                                 "fit_seconds"), convert=_as_list)
    if out is not None:
        atomic_write_table(table, Path(out))
    return table


def bfm_fit_batch(mode: str, iterations, weights, target_landmarks: str, texture, skin_model, embedder,
                  image_size: int, optimize, device, assets_dir) -> Callable:
    """:func:`fit_table`'s batch function ``(rows, images_bgr, rois) -> records``, with its own 3DDFA model,
    :class:`Fitter` and landmarker (what a worker builds from the :class:`facelib.executor.Recipe`)."""
    model = MorphableModel.from_3ddfa(assets_dir)
    if mode == "full" and texture is not None:
        model = with_texture(model, load_texture_basis(texture))
    fitter = Fitter(model, device=device, assets_dir=assets_dir, skin_model=skin_model, embedder=embedder,
                    image_size=image_size)
    landmarker = DlibTargets() if target_landmarks == "dlib" else None

    def fit_batch(rows, images, rois):
        lm_img, sources = landmark_targets(rows, images, target_landmarks, landmarker, rois)
        init = {k: np.stack([np.asarray(v, np.float32) for v in rows[k]]) for k in ("alpha", "beta", "pose")}
        crops = np.stack([crop_rgb(im, r, image_size) for im, r in zip(images, rois)]) if mode == "full" else None
        res = fitter.fit(init, rois, image_to_crop(lm_img, rois, image_size), crops, mode=mode,
                         iterations=iterations, weights=weights, optimize=optimize)
        lm_fit = crop_to_image(res.landmarks, rois, image_size)
        return fit_records(res, rows["sha256"], lm_fit, sources, res.seconds / len(rows))

    return fit_batch


def fit_key(settings: dict) -> str:
    """The fitting cache's key of ``settings`` (its folder ``<cache>/fitting/<name>-<key>/``)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cached_fits(coeff_table: pd.DataFrame, name: str, settings: dict, fit_batch, *, cache_dir=None,
                limit: int | None = None, batch_size: int = 8, progress: bool = True, desc: str = "fit",
                executor: Executor | None = None) -> pd.DataFrame:
    """The resumable loop every per-picture fit shares: pictures are fitted in batches by
    ``fit_batch(rows, images_bgr, rois) -> records`` (:func:`fit_records`), each batch appended as a shard to a
    cache folder keyed by ``settings``; pictures already there are skipped (an interrupted run resumes).
    ``fit_batch`` is a :class:`facelib.executor.Recipe` that builds that function (how a worker of ``executor``
    gets its own fitter), or the function itself (sent as it is). Returns every cached record (one row per fitted
    picture; the latest wins on repeats)."""
    key = fit_key(settings)
    folder = Path(cache_dir or config.cache_dir() / "fitting") / f"{name}-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    done = read_shards(folder)
    ok = coeff_table[coeff_table["status"] == "ok"].drop_duplicates("sha256")
    todo = ok[~ok["sha256"].isin(set(done["sha256"]))]
    if limit is not None:
        todo = todo.iloc[:limit]
    recipe = fit_batch if isinstance(fit_batch, Recipe) else Recipe.of(fit_batch, f"fit-{name}-{key}")
    shards = [done]

    def write(shard: pd.DataFrame) -> None:
        append_shard(folder, shard)
        shards.append(shard)

    run_batches(_fit_batch, recipe, [todo.iloc[start:start + batch_size] for start in range(0, len(todo), batch_size)],
                write, executor, desc=desc, progress=progress)
    done = pd.concat(shards, ignore_index=True).drop_duplicates("sha256", keep="last")
    # the table's order, whatever order the batches finished in (fingerprints of the result stay the same)
    order = done["sha256"].map({s: i for i, s in enumerate(ok["sha256"])})
    return done.iloc[np.argsort(order.fillna(len(ok)).to_numpy(), kind="stable")].reset_index(drop=True)


def _fit_batch(recipe: Recipe, rows: pd.DataFrame) -> pd.DataFrame:
    """One batch's shard (a task of :func:`cached_fits`): read the pictures, crop boxes, fit."""
    images = [read_image(p) for p in rows["path"]]
    rois = np.stack([crop_box(b) for b in rows["box"]])
    return pd.DataFrame(recipe()(rows, images, rois))


def fit_records(res, shas, lm_fit: np.ndarray, sources, seconds: float, extra_losses=None) -> list[dict]:
    """One shard row per fitted picture (the fitting caches of :func:`fit_table` and the ICT fit share it):
    coefficients, fitted 68 landmarks in image pixels (x0..x67, y0..y67), every loss term at the start and the
    end (``fit_losses`` JSON with the landmark target's source; ``extra_losses[j]`` adds keys) and seconds."""
    rec = []
    for j, sha in enumerate(shas):
        losses = {k: [float(res.terms_first[k][j]), float(res.terms_last[k][j])] for k in res.terms_last}
        losses.update({"_target": sources[j], **(extra_losses[j] if extra_losses is not None else {})})
        rec.append({"sha256": sha, "alpha": res.alpha[j].tolist(), "beta": res.beta[j].tolist(),
                    "pose": res.pose[j].tolist(),
                    "landmarks": np.concatenate([lm_fit[j, :, 0], lm_fit[j, :, 1]]).astype(np.float32).tolist(),
                    "gamma": None if res.gamma is None else res.gamma[j].tolist(),
                    "texture": None if res.texture is None else res.texture[j].tolist(),
                    "fit_losses": json.dumps(losses), "fit_seconds": seconds})
    return rec


def merge_fits(table: pd.DataFrame, done: pd.DataFrame, columns, convert=lambda v: v) -> pd.DataFrame:
    """Write the cached fits ``done`` (latest per sha256) into ``table``'s ``columns`` for its ``ok`` rows, in
    place; ``convert`` maps each cached value (arrays from parquet) to what the table stores."""
    by = done.drop_duplicates("sha256", keep="last").set_index("sha256")
    hit = table["sha256"].isin(by.index) & (table["status"] == "ok")
    for col in columns:
        if col not in table.columns:
            table[col] = None
        table[col] = table[col].astype(object)
        vals = by[col].reindex(table.loc[hit, "sha256"]).tolist()
        table.loc[hit, col] = pd.Series([convert(v) for v in vals], index=table.index[hit], dtype=object)
    return table


def _as_list(v):
    if isinstance(v, np.ndarray):
        return v.astype(np.float32).tolist()
    return v


def loss_summary(table: pd.DataFrame, by: str | None = None) -> pd.DataFrame:
    """Mean weighted per-term loss at the start (tddfa) and the end (fitted) from a fitted table's ``fit_losses``."""
    rows = []
    for _, r in table[table["fit_losses"].notna()].iterrows():
        d = json.loads(r["fit_losses"])
        rec = {f"{k}_{s}": v[i] for k, v in d.items() if not k.startswith("_")
               for i, s in enumerate(("first", "last"))}
        if by:
            rec[by] = r[by]
        rows.append(rec)
    df = pd.DataFrame(rows)
    return df.groupby(by).mean() if by else df.mean().to_frame("mean").T


def fit_figure(coeff_table: pd.DataFrame, image_ids=None, n: int = 4, iterations: int = 40, texture=None,
               skin_model=None, target_landmarks: str = "dlib", image_size: int = 160, device: str | None = None,
               assets_dir=None, out=None, seed: int = 0):
    """Fit a few images (full mode) and draw one row per image: photo (crop) | rendering | overlay | per-term loss
    curve (weighted terms, log scale). ``image_ids`` picks rows by ``image_id``; else ``n`` ok rows at random.
    Returns (figure, FitResult)."""
    ok = coeff_table[coeff_table["status"] == "ok"]
    rows = ok[ok["image_id"].isin(list(image_ids))] if image_ids is not None else \
        ok.sample(min(n, len(ok)), random_state=seed)
    model = MorphableModel.from_3ddfa(assets_dir)
    if texture is not None:
        model = with_texture(model, load_texture_basis(texture))
    if skin_model is None:
        skin_model = skin_model_for_table(coeff_table)
    fitter = Fitter(model, device=device, assets_dir=assets_dir, skin_model=skin_model or None,
                    image_size=image_size)
    imgs = [read_image(p) for p in rows["path"]]
    rois = np.stack([crop_box(b) for b in rows["box"]])
    landmarker = DlibTargets() if target_landmarks == "dlib" else None
    lm, _ = landmark_targets(rows, imgs, target_landmarks, landmarker, rois)
    init = {k: np.stack([np.asarray(v, np.float32) for v in rows[k]]) for k in ("alpha", "beta", "pose")}
    crops = np.stack([crop_rgb(im, r, image_size) for im, r in zip(imgs, rois)])
    tl = image_to_crop(lm, rois, image_size)
    first = fitter.fit(init, rois, tl, crops, mode="full", iterations=0, keep_render=True)
    res = fitter.fit(init, rois, tl, crops, mode="full", iterations=iterations, keep_render=True,
                     per_image_history=True)
    B = len(rows)
    fig, axes = plt.subplots(B, 5, figsize=(12.5, 2.6 * B), squeeze=False)
    for i in range(B):
        m = res.mask[i][..., None]
        panels = [(crops[i], "photo (crop)"), (first.render[i] * first.mask[i][..., None] + crops[i] *
                                               (1 - first.mask[i][..., None]), "tddfa start"),
                  (res.render[i], f"fitted ({iterations} it)"), (crops[i] * (1 - m) + res.render[i] * m, "overlay")]
        for j, (im, title) in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(np.clip(im, 0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=8)
        target_name = "dlib's 68 landmarks (target)" if target_landmarks == "dlib" else "table's landmarks (target)"
        axes[i, 3].scatter(tl[i, :, 0], tl[i, :, 1], s=2, c="lime", label=target_name)
        axes[i, 3].scatter(res.landmarks[i, :, 0], res.landmarks[i, :, 1], s=2, c="red",
                           label="fitted model's landmarks")

        axes[i, 0].set_ylabel(str(rows["image_id"].iloc[i]), fontsize=8)
        ax = axes[i, 4]
        for k, v in res.history_per_image.items():
            ax.semilogy(np.maximum(v[:, i], 1e-5), label=k, lw=1)
        ax.set_xlabel("iteration", fontsize=7)
        ax.set_ylabel("weighted loss (log)", fontsize=7)
        ax.set_title("weighted loss terms", fontsize=8)
        ax.tick_params(labelsize=6)
        if i == 0:
            ax.legend(fontsize=6)
    fig.suptitle(f"Analysis-by-synthesis fit, full mode (rendered hybrid loss), {iterations} iterations, starting "
                 f"from the {rows['backend'].iloc[0] if 'backend' in rows else 'backend'} coefficients", fontsize=9)
    handles, labels = axes[0, 3].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, markerscale=4, title="overlay points")
    fig.tight_layout(rect=(0, 0.07 if B < 3 else 0.04, 1, 0.97))
    if out:
        save_figure(fig, out, dpi=100, close=False)
    return fig, res
