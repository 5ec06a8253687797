"""The ``ict`` backend: ICT Face Model Light coefficients (α 100, β 53) fitted per picture.

Pipeline: the tddfa backend's detection, crop (``roi``) and pose (FaceBoxes → 3DDFA_V2) place the BFM face; the pose
is carried over to the ICT mean face (:func:`facelib.face3d.ict.pose_from_3ddfa`), which starts at α = 0, β = 0
(neutral); then :class:`facelib.fitting.fitter.Fitter` fits α, β and the pose:

``mode="landmarks"`` → backend ``ict``
    Landmark term (dlib's 68 points placed by dlib's HOG detector, :class:`facelib.fitting.table.DlibTargets`; the
    tddfa table's landmarks where HOG finds no face or |yaw| > 60°) + regulariser; β projected onto [0, 1] every step.
``mode="full"`` → backend ``ict+fit_full``
    The landmark fit, then the rendered hybrid loss (photometric with skin attention, landmark, regulariser,
    lighting; grey albedo with a per-image RGB gain, or a texture basis over the ICT vertices when one is given).

Tables have the coefficient-table schema (``alpha`` 100, ``beta`` 53, ``pose`` 12 = the ICT face's [sR|t] in
3DDFA's crop frame, ``landmarks`` = the fitted model's 68 points in image pixels) plus ``fit_losses`` and
``fit_seconds``; everything downstream (aggregation, protocols, tables) reads them as any backend's.
Resumable: finished batches are cached as parquet shards in ``<cache>/fitting/<backend>-<key>/``.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd

import torch

from ..face3d.cameras import crop_box, crop_rgb, crop_to_image, image_to_crop
from ..face3d.ict import bfm_similarity, load_model, pose_from_3ddfa
from ..face3d.morphable import MorphableModel
from ..face3d.reconstruct import TDDFABackend, register_backend
from ..executor import Executor, Recipe
from ..io import atomic_write_table
from .fitter import Fitter
from .skin import skin_model_for_table
from .table import DlibTargets, cached_fits, fit_key, fit_records, landmark_targets, merge_fits
from .texture import load_texture_basis, with_texture
from .texture_basis import build_from_table

MODES = ("landmarks", "full")
ITERATIONS = {"landmarks": 150, "full": 40}   # landmark mode starts from the neutral mean face: more steps
VERSION = 1


def backend_name(mode: str) -> str:
    return "ict" if mode == "landmarks" else f"ict+fit_{mode}"


class ICTFitter:
    """The ICT model, its similarity to the BFM frame, and a :class:`Fitter` over its face area."""

    def __init__(self, device: str | None = None, assets_dir=None, ict_source=None, texture=None,
                 skin_model=None, embedder: Callable | None = None, image_size: int = 160):
        model = load_model(ict_source, assets_dir)
        self.similarity = bfm_similarity(model, MorphableModel.from_3ddfa(assets_dir))
        self.texture_sha = None
        if texture is not None:
            tb = load_texture_basis(texture)
            base, model = model, with_texture(model, tb)
            model.key, model.expression_names = base.key, base.expression_names
            self.texture_sha = tb["provenance"].get("sha256") or hashlib.sha256(Path(texture).read_bytes()).hexdigest()
        self.model = model
        self.fitter = Fitter(model, device=device, assets_dir=assets_dir, skin_model=skin_model,
                             embedder=embedder, image_size=image_size)
        self.image_size = int(image_size)

    def initial(self, pose12: np.ndarray) -> dict:
        """Neutral mean face (α = β = 0) at the 3DDFA poses (B, 12)."""
        B = len(pose12)
        return {"alpha": np.zeros((B, self.model.n_id), np.float32),
                "beta": np.zeros((B, self.model.n_exp), np.float32), "pose": pose_from_3ddfa(pose12, self.similarity)}

    def fit(self, init: dict, rois, target_lm_img, images_bgr=None, mode: str = "landmarks",
            iterations: int | None = None, weights: Mapping[str, float | None] | None = None):
        """Fit one batch; ``target_lm_img`` (B, 68, 2) in image pixels. Full mode runs the landmark fit first when
        ``init`` is the neutral start (``init["_from"] == "tddfa"``). Returns (FitResult, landmark FitResult|None)."""
        tl = image_to_crop(target_lm_img, rois, self.image_size)
        first = None
        if mode == "landmarks" or init.get("_from") == "tddfa":
            first = self.fitter.fit(init, rois, tl, mode="landmarks", iterations=ITERATIONS["landmarks"]
                                    if mode != "landmarks" or iterations is None else iterations)
            if mode == "landmarks":
                return first, None
            init = {"alpha": first.alpha, "beta": first.beta, "pose": first.pose}
        crops = np.stack([crop_rgb(im, r, self.image_size) for im, r in zip(images_bgr, rois)])
        res = self.fitter.fit(init, rois, tl, crops, mode="full", iterations=iterations or ITERATIONS["full"],
                              weights=weights)
        return res, first


def ict_fit_batch(mode: str, iterations, weights, target_landmarks: str, from_ict: bool, device, assets_dir,
                  ict_source, texture, skin_model, embedder, image_size: int) -> Callable:
    """:func:`fit_ict_table`'s batch function ``(rows, images_bgr, rois) -> records`` with its own
    :class:`ICTFitter` (``.icf``) and landmarker (what a worker builds from the :class:`facelib.executor.Recipe`)."""
    icf = ICTFitter(device=device, assets_dir=assets_dir, ict_source=ict_source, texture=texture,
                    skin_model=skin_model, embedder=embedder, image_size=image_size)
    landmarker = DlibTargets() if target_landmarks == "dlib" else None

    def fit_batch(rows, images, rois):
        lm_img, sources = landmark_targets(rows, images, target_landmarks, landmarker, rois)
        if from_ict:  # the tddfa pose is gone; dlib's targets need only box/landmarks, yaw from the ICT pose
            init = {k: np.stack([np.asarray(v, np.float32) for v in rows[k]]) for k in ("alpha", "beta", "pose")}
        else:
            init = {**icf.initial(np.stack([np.asarray(v, np.float32) for v in rows["pose"]])), "_from": "tddfa"}
        res, first = icf.fit(init, rois, lm_img, images, mode=mode, iterations=iterations, weights=weights)
        lm_fit = crop_to_image(res.landmarks, rois, image_size)
        err = np.linalg.norm(lm_fit - lm_img, axis=-1).mean(-1)
        secs = (res.seconds + (first.seconds if first is not None else 0.0)) / len(rows)
        return fit_records(res, rows["sha256"], lm_fit, sources, secs,
                           extra_losses=[{"_lm_px": float(e)} for e in err])

    fit_batch.icf = icf
    return fit_batch


def fit_ict_table(coeff_table: pd.DataFrame, mode: str = "landmarks", iterations: int | None = None,
                  batch_size: int = 8, device: str | None = None, weights: Mapping[str, float | None] | None = None,
                  target_landmarks: str = "dlib", texture=None, skin_model=None, embedder: Callable | None = None,
                  image_size: int = 160, assets_dir=None, ict_source=None, cache_dir=None, progress: bool = True,
                  limit: int | None = None, out=None, executor: Executor | None = None) -> pd.DataFrame:
    """ICT coefficients for every ``ok`` row of a tddfa coefficient table (or, for ``mode="full"``, continuing an
    ``ict`` table); returns a table in the same schema with backend :func:`backend_name` (see the module docstring).
    ``target_landmarks``: ``"dlib"`` or ``"table"`` (the tddfa table's own landmarks). ``executor``: where the
    batches run (:mod:`facelib.executor`; None: here)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    backends = {str(b) for b in coeff_table["backend"].dropna()}
    if backends and not (all(b.startswith("tddfa") for b in backends) or backends == {"ict"}):
        raise ValueError(f"fit_ict_table starts from a tddfa table (or an ict table for full mode); got {backends}")
    from_ict = backends == {"ict"}
    if from_ict and mode != "full":
        raise ValueError("an ict table is already landmark-fitted; use mode='full' to refine it")
    name = backend_name(mode)
    if mode == "full" and skin_model is None:
        skin_model = skin_model_for_table(coeff_table, cache_dir=cache_dir)
    if target_landmarks not in ("dlib", "table"):
        raise ValueError("target_landmarks must be 'dlib' or 'table'")
    build = dict(mode=mode, iterations=iterations, weights=weights, target_landmarks=target_landmarks,
                 from_ict=from_ict, device=device, assets_dir=assets_dir, ict_source=ict_source,
                 texture=texture if mode == "full" else None, skin_model=(skin_model or None) if mode == "full"
                 else None, embedder=embedder if mode == "full" else None, image_size=image_size)
    fit_batch = ict_fit_batch(**build)
    icf = fit_batch.icf
    settings = {"v": VERSION, "mode": mode, "iterations": iterations, "weights": dict(weights or {}),
                "target": target_landmarks, "texture": icf.texture_sha, "size": image_size, "model": icf.model.key,
                "area": icf.model.provenance["area"],
                "from": "ict" if from_ict else "tddfa",
                "skin": skin_model.fingerprint() if skin_model else False, "embedder": None if embedder is None
                else getattr(embedder, "name", type(embedder).__name__)}
    recipe = Recipe(f"fit-{name}-{fit_key(settings)}-{device}", ict_fit_batch, built=fit_batch, **build)
    done = cached_fits(coeff_table, name, settings, recipe, cache_dir=cache_dir, limit=limit,
                       batch_size=batch_size, progress=progress, desc=f"ict ({mode})", executor=executor)
    table = coeff_table.copy()
    table["backend"] = name
    by = done.drop_duplicates("sha256", keep="last").set_index("sha256") if len(done) else None
    if by is not None:
        merge_fits(table, done, ("alpha", "beta", "pose", "landmarks", "gamma", "texture", "fit_losses", "fit_seconds"),
                   convert=lambda v: v.tolist() if isinstance(v, np.ndarray) else v)
    # rows not fitted (not ok, or beyond ``limit``) carry no ICT coefficients: never the tddfa ones
    missing = ~table["sha256"].isin(by.index if by is not None else []) | (table["status"] != "ok")
    for col in ("alpha", "beta", "pose", "gamma", "texture"):
        table.loc[missing, col] = None
    table.loc[missing & (table["status"] == "ok"), "status"] = "not_fitted"
    if out is not None:
        atomic_write_table(table, Path(out))
    return table


def landmark_error(table: pd.DataFrame) -> pd.Series:
    """Per-image mean distance (pixels) between the fitted model's 68 landmarks and the fit's targets."""
    vals = table["fit_losses"].map(lambda s: json.loads(s).get("_lm_px") if isinstance(s, str) else None)
    return pd.to_numeric(vals, errors="coerce")


class ICTBackend:
    """``make_backend("ict")``: the tddfa backend, then the ICT landmark fit per batch (see the module docstring).
    The targets are dlib's (placed by HOG) where found, else the tddfa landmarks."""

    name = "ict"

    def __init__(self, device: str = "cpu", assets_dir=None, landmark_source: str = "model", fallback: bool = True,
                 ict_source=None):
        self.tddfa = TDDFABackend(device, assets_dir, landmark_source, fallback)
        self.icf = ICTFitter(device=device, assets_dir=assets_dir, ict_source=ict_source)
        self.targets = DlibTargets()
        self.asset_names = self.tddfa.asset_names
        self.settings = {**self.tddfa.settings, "ict_model": self.icf.model.key, "v": VERSION,
                         "area": self.icf.model.provenance["area"],
                         "iterations": ITERATIONS["landmarks"]}

    def detect(self, images):
        return self.tddfa.detect(images)

    def regress(self, images, boxes):
        out = self.tddfa.regress(images, boxes)
        rows = pd.DataFrame({"landmarks": list(out["landmarks"]), "box": list(boxes), "pose": list(out["pose"])})
        rois = np.stack([crop_box(b) for b in boxes])
        lm_img, _ = landmark_targets(rows, images, "dlib", self.targets, rois)
        with torch.inference_mode(False), torch.enable_grad():
            res, _ = self.icf.fit(self.icf.initial(out["pose"]), rois, lm_img, mode="landmarks")
        lm = crop_to_image(res.landmarks, rois, self.icf.image_size)
        return {"alpha": res.alpha, "beta": res.beta, "pose": res.pose,
                "landmarks": np.concatenate([lm[:, :, 0], lm[:, :, 1]], axis=1)}


def build_ict_texture(ict_table: pd.DataFrame, out=None, angle: str | None = "S", max_images: int | None = None,
                      device: str | None = None, assets_dir=None, ict_source=None, skin_model=None,
                      image_size: int = 160, progress: bool = True) -> dict:
    """A texture (albedo) PCA basis over the ICT vertices learnt from the pictures, as
    :mod:`facelib.fitting.texture_basis` does for the BFM: full-mode fits (grey albedo + gain) of the ``angle`` rows
    of an ``ict`` table, de-lit vertex colours of the well-fitted ones, PCA
    (:func:`facelib.fitting.texture_basis.build_from_table` with an ICT fitter)."""
    if skin_model is None:
        skin_model = skin_model_for_table(ict_table)
    icf = ICTFitter(device=device, assets_dir=assets_dir, ict_source=ict_source, skin_model=skin_model or None,
                    image_size=image_size)
    return build_from_table(ict_table, out=out, angle=angle, max_images=max_images, device=device,
                            assets_dir=assets_dir, progress=progress, fitter=icf.fitter)


def study_variants(run, coeffs: dict[str, pd.DataFrame], modes, device: str | None = None, assets_dir=None,
                   progress: bool = True, texture: bool = True, executor: Executor | None = None
                   ) -> dict[tuple[str, str], pd.DataFrame]:
    """The ICT coefficient tables of a study run (:meth:`facelib.run.Run.ict_coeffs`) for every dataset of
    ``coeffs`` (tddfa tables) and every mode in ``modes`` (``landmarks`` → ``ict``, ``full`` → ``ict+fit_full``,
    which continues from the landmark fit; that one is computed, and written, whenever ``full`` is asked).
    Full mode uses a texture basis over the ICT vertices built from KDEF's frontal pictures
    (``<run>/coeffs/texture_ict_kdef_S.npz``, :func:`build_ict_texture`; the first dataset's when there is no KDEF)
    unless ``texture`` is False (grey albedo + gain). ``executor``: where the fits' batches run (the texture basis
    is built here)."""
    out: dict[tuple[str, str], pd.DataFrame] = {}
    modes = list(modes or [])
    unknown = set(modes) - set(MODES)
    if unknown:
        raise ValueError(f"ict_modes must be among {MODES}, got {sorted(unknown)}")
    if not modes:
        return out
    lms = {name: fit_ict_table(table, "landmarks", device=device, assets_dir=assets_dir, progress=progress,
                               out=run.ict_coeffs(name, "landmarks"), executor=executor)
           for name, table in coeffs.items()}
    tex = None
    if "full" in modes and texture:
        src = "kdef" if "kdef" in lms else next(iter(lms))
        tex = run.dir / "coeffs" / f"texture_ict_{src}_S.npz"
        if not tex.exists():
            build_ict_texture(lms[src], out=tex, device=device, assets_dir=assets_dir, progress=progress)
    for name, lm in lms.items():
        if "landmarks" in modes:
            out[(name, "landmarks")] = lm
        if "full" in modes:
            out[(name, "full")] = fit_ict_table(lm, "full", device=device, assets_dir=assets_dir, texture=tex,
                                                progress=progress, out=run.ict_coeffs(name, "full"),
                                                executor=executor)
    return out


register_backend("ict", ICTBackend)
