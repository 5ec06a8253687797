"""Fits that use *who is who* (never an expression label): the person-consistent β and the set fit.

Per-picture fits estimate identity α and expression β from one picture each, so each leaks into the other. Two
remedies, both in landmark mode (68 points, no rendering: cheap):

**Person-consistent expression** (:func:`person_consistent_table`, backends ``tddfa+fit_person`` and
``ict+fit_person``). For every picture, α is held fixed at the *leave-one-out* mean of the same person's per-picture
α (:func:`loo_mean`: the person's other pictures, never the picture itself) and only β and the pose are fitted to
the picture's 68 target points (``Fitter.fit(..., optimize=("beta", "pose"))``), so β has to explain what α does
not: the expression. Works for any per-picture landmark fit — the BFM one (:func:`facelib.fitting.table.fit_table`,
``tddfa+fit_landmarks``) and the ICT one (:func:`facelib.fitting.ict_fit.fit_ict_table`, ``ict``). The rows are
flagged in the table's ``person_grouped`` column (carried into results): the coefficients of a picture used the
*other* pictures of its person. No label is used, but on a protocol that tests unseen people the identity of a test
picture comes from that test person's own pictures of other expressions.

**Set fitting** (:func:`set_fit`, :class:`SetFitAggregator`): one α shared by the k pictures of a set, fitted
jointly (per-picture β and pose), against per-picture fits aggregated by the mean. The aggregator plugs into
:func:`facelib.classify.experiment.run_task` (``aggregator=``): each identity k-set's vector is its set fit's α.
The regulariser counts the shared α once per member (the data and prior terms keep a per-picture fit's balance).

Target landmarks (:func:`target_table`) are those of the per-picture fits (dlib placed by HOG, the tddfa table's
where HOG finds none or |yaw| > 60°), computed once per table and cached. Every fit here is cached as parquet
shards (:func:`facelib.fitting.table.cached_fits`), so reruns are cheap and resumable.

In the study: the ``person_fits`` parameter (:data:`PERSON_FITS`, checked by :func:`check_person_fits`) makes
notebook 02 write the person-consistent tables (:func:`study_variants`, :meth:`facelib.run.Run.person_coeffs`), and
``set_fit`` in ``aggregators`` makes notebook 04 score the identity k-sets of the landmark-fit tables by set fits
(:func:`set_fit_aggregator`, called by :func:`facelib.classify.plan.run_plan`).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import torch

from .. import config
from ..data import labels
from ..face3d.cameras import crop_box, crop_to_image, image_to_crop
from ..executor import Executor, Recipe
from ..io import append_shard, atomic_write_table, read_shards
from .fitter import Fitter
from .table import DlibTargets, cached_fits, fit_key, fit_records, landmark_targets, merge_fits

VERSION = 1
PERSON_NOTE = "identity α from the person's other pictures (leave-one-out mean of their per-picture fits)"
BACKENDS = {"tddfa+fit_landmarks": "tddfa+fit_person", "ict": "ict+fit_person"}
# the study's ``person_fits`` values: the parameter and mode that make the per-picture landmark fit refitted, its
# backend, and the iterations of the refit (those of that per-picture fit, as benchmarks/bench_person.py measured)
PERSON_FITS = {"ict": ("ict_modes", "landmarks", "ict", 150), "tddfa": ("fit_modes", "landmarks", "tddfa+fit_landmarks", 60)}
# ``set_fit`` aggregator: per-picture landmark-fit backend → (backend of the table its set fits start from, iterations)
SET_FITS = {"tddfa+fit_landmarks": ("tddfa", 60), "ict": ("ict", 150)}


# ----------------------------------------------------------------------------------------------- helpers
def _stack(col) -> np.ndarray:
    return np.stack([np.asarray(v, np.float32) for v in col])


def _fingerprint(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def loo_mean(values: np.ndarray, groups) -> np.ndarray:
    """Row i → mean of the rows of i's group *other than i* (n, d). A group of one gives NaN (no other picture)."""
    X = np.asarray(values, np.float64)
    g = np.asarray(groups).astype(str)
    _, inv = np.unique(g, return_inverse=True)
    sums = np.zeros((inv.max() + 1, X.shape[1]))
    np.add.at(sums, inv, X)
    counts = np.bincount(inv).astype(np.float64)
    others = counts[inv] - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (sums[inv] - X) / others[:, None]
    out[others == 0] = np.nan
    return out.astype(np.float32)


def targets_batch(target_landmarks: str):
    """:func:`target_table`'s batch function ``(rows, images_bgr, rois) -> records`` with its own landmarker."""
    landmarker = DlibTargets() if target_landmarks == "dlib" else None

    def batch(rows, images, rois):
        lm, src = landmark_targets(rows, images, target_landmarks, landmarker, rois)
        return [{"sha256": s, "target": np.concatenate([lm[j, :, 0], lm[j, :, 1]]).astype(np.float32).tolist(),
                 "source": src[j]} for j, s in enumerate(rows["sha256"])]

    return batch


def target_table(coeff_table: pd.DataFrame, target_landmarks: str = "dlib", cache_dir=None,
                 progress: bool = False, batch_size: int = 16, executor: Executor | None = None) -> pd.DataFrame:
    """The 68 target points of every ``ok`` picture (the per-picture fits' targets, see module docstring):
    columns ``sha256``, ``target`` (136: x0..x67, y0..y67, image pixels), ``source`` (dlib / table), in the
    table's order. Cached; ``executor``: where the batches run."""
    settings = {"v": VERSION, "target": target_landmarks}
    recipe = Recipe(f"fit-targets-{fit_key(settings)}", targets_batch, target_landmarks=target_landmarks)
    done = cached_fits(coeff_table, "targets", settings, recipe, cache_dir=cache_dir, batch_size=batch_size,
                       progress=progress, desc="targets", executor=executor)
    return done.drop_duplicates("sha256", keep="last").reset_index(drop=True)


def _targets_of(targets: pd.DataFrame, shas) -> np.ndarray:
    by = targets.set_index("sha256")["target"]
    t = _stack(by.reindex(list(shas)))
    return np.stack([t[:, :68], t[:, 68:]], -1)  # (B, 68, 2)


def points_table(coeff_table: pd.DataFrame, targets: pd.DataFrame | None = None, normalise: bool = True
                 ) -> pd.DataFrame:
    """The landmark points themselves as a coefficient-like table (``beta`` = 136 numbers) for
    :func:`facelib.classify.experiment.run_task`: the fits' target points (``targets``) or the table's own
    ``landmarks``. ``normalise``: centred on their mean and divided by their RMS radius (translation and scale
    removed; rotation kept — the head's angle is part of the picture)."""
    t = coeff_table.copy()
    ok = t["status"] == "ok"
    if targets is not None:
        pts = _targets_of(targets, t.loc[ok, "sha256"])
    else:
        lm = _stack(t.loc[ok, "landmarks"])
        pts = np.stack([lm[:, :68], lm[:, 68:]], -1) if lm.shape[1] == 136 else lm[:, :, :2]
    if normalise:
        pts = pts - pts.mean(1, keepdims=True)
        pts = pts / np.sqrt((pts ** 2).sum(-1).mean(1))[:, None, None]
    t["beta"] = None
    t["beta"] = t["beta"].astype(object)
    t.loc[ok, "beta"] = pd.Series([p.T.reshape(-1).tolist() for p in pts], index=t.index[ok], dtype=object)
    t["backend"] = "points68" + ("_norm" if normalise else "") + ("_target" if targets is not None else "_table")
    return t


def person_centred(table: pd.DataFrame, column: str = "beta", person: str = "subject") -> pd.DataFrame:
    """``column`` minus the leave-one-out mean of the same person's other pictures (a cheap person-grouped
    baseline: no refit). Flagged ``person_grouped``."""
    t = table.copy()
    ok = (t["status"] == "ok") & t[column].notna()
    X = _stack(t.loc[ok, column])
    C = X - loo_mean(X, t.loc[ok, person])
    t[column] = t[column].astype(object)
    t.loc[ok, column] = pd.Series(list(C.tolist()), index=t.index[ok], dtype=object)
    t["backend"] = f"{t['backend'].iloc[0]}-person_mean"
    t["person_grouped"] = f"{column} minus the leave-one-out mean {column} of the person's other pictures"
    return t


# ------------------------------------------------------------------------------- the person-consistent β
def person_fit_batch(fitter, init_of: Mapping, targets: pd.DataFrame, start_beta: str, iterations: int,
                     image_size: int):
    """:func:`person_consistent_table`'s batch function ``(rows, images_bgr, rois) -> records``: β and pose
    refitted from each picture's start ``init_of[sha256]`` = (leave-one-out α, β, pose) to its ``targets``."""
    fitter = fitter() if isinstance(fitter, Recipe) else fitter
    src_of = targets.set_index("sha256")["source"]

    def fit_batch(batch_rows, images, rois):
        shas = list(batch_rows["sha256"])
        a, b, p = (np.stack([init_of[s][i] for s in shas]) for i in range(3))
        if start_beta == "zero":
            b = np.zeros_like(b)
        tgt = _targets_of(targets, shas)
        res = fitter.fit({"alpha": a, "beta": b, "pose": p}, rois, image_to_crop(tgt, rois, image_size),
                         mode="landmarks", iterations=iterations, optimize=("beta", "pose"))
        lm_fit = crop_to_image(res.landmarks, rois, image_size)
        err = np.linalg.norm(lm_fit - tgt, axis=-1).mean(-1)
        return fit_records(res, shas, lm_fit, [src_of[s] for s in shas], res.seconds / len(shas),
                           extra_losses=[{"_lm_px": float(e)} for e in err])

    return fit_batch


def bfm_fitter(device, assets_dir) -> Fitter:
    """The BFM (3DDFA) landmark :class:`Fitter` the person-consistent refit of ``tddfa`` uses."""
    return Fitter(device=device, assets_dir=assets_dir)


def ict_fitter(device, assets_dir) -> Fitter:
    """The ICT landmark :class:`Fitter` the person-consistent refit of ``ict`` uses."""
    from .ict_fit import ICTFitter

    return ICTFitter(device=device, assets_dir=assets_dir).fitter


def person_consistent_table(fit_table_: pd.DataFrame, fitter: Fitter, targets: pd.DataFrame,
                            alpha_source: str = "loo_mean", person: str = "subject", iterations: int = 60,
                            start_beta: str = "fit", batch_size: int = 64, image_size: int = 160,
                            cache_dir=None, progress: bool = False, out=None, backend: str | None = None,
                            executor: Executor | None = None) -> pd.DataFrame:
    """β (and pose) refitted with α held at the person's leave-one-out mean (module docstring).

    ``fit_table_``: a per-picture landmark fit (``tddfa+fit_landmarks`` with a BFM :class:`Fitter`, ``ict`` with
    :class:`facelib.fitting.ict_fit.ICTFitter`'s ``.fitter``): its α give the identities, its β / pose the start
    (``start_beta="zero"``: β from 0, the mean expression). ``targets``: :func:`target_table`. Pictures whose
    person has no other fitted picture get status ``no_person_alpha``. Returns a table in the same schema, backend
    :data:`BACKENDS` [input's] (or ``backend``), column ``person_grouped`` set; cached and resumable.
    ``fitter``: the :class:`Fitter`, or a :class:`facelib.executor.Recipe` that builds it (how the workers of
    ``executor`` get theirs without receiving it)."""
    if alpha_source != "loo_mean":
        raise ValueError("alpha_source must be 'loo_mean'")
    if start_beta not in ("fit", "zero"):
        raise ValueError("start_beta must be 'fit' or 'zero'")
    if person not in fit_table_.columns:
        raise ValueError(f"a person-consistent fit needs a {person!r} column (who is who)")
    src = str(fit_table_["backend"].dropna().iloc[0])
    name = backend or BACKENDS.get(src, f"{src}+person")
    ok = (fit_table_["status"] == "ok") & fit_table_["alpha"].notna()
    rows = fit_table_[ok].drop_duplicates("sha256")
    A = _stack(rows["alpha"])
    loo = loo_mean(A, rows[person])
    init_of = {s: (loo[j], np.asarray(b, np.float32), np.asarray(p, np.float32))
               for j, (s, b, p) in enumerate(zip(rows["sha256"], rows["beta"], rows["pose"]))}
    usable = rows[np.isfinite(loo).all(1)]
    settings = {"v": VERSION, "src": src, "alpha": alpha_source, "person": person, "iterations": iterations,
                "start_beta": start_beta, "size": image_size,
                "data": _fingerprint(A, _stack(rows["beta"]), _stack(rows["pose"]),
                                     rows["sha256"].astype(str).to_numpy().astype("S64"), rows[person].astype(str)
                                     .to_numpy().astype("S64")),
                "targets": _fingerprint(_stack(targets["target"]))}

    build = dict(fitter=fitter, init_of=init_of, targets=targets, start_beta=start_beta, iterations=iterations,
                 image_size=image_size)
    recipe = Recipe(f"fit-{name}-{fit_key(settings)}", person_fit_batch, **build)
    done = cached_fits(usable, name, settings, recipe, cache_dir=cache_dir, batch_size=batch_size,
                       progress=progress, desc=f"{name}", executor=executor)
    table = fit_table_.copy()
    table["backend"] = name
    merge_fits(table, done, ("alpha", "beta", "pose", "landmarks", "fit_losses", "fit_seconds"),
               convert=lambda v: v.tolist() if isinstance(v, np.ndarray) else v)
    missing = (table["status"] == "ok") & ~table["sha256"].isin(set(done["sha256"]))
    table.loc[missing, "status"] = "no_person_alpha"
    for col in ("alpha", "beta", "pose"):
        table[col] = table[col].astype(object)
        table.loc[missing, col] = None
    table["person_grouped"] = PERSON_NOTE
    if out is not None:
        atomic_write_table(table, Path(out))
    return table


# --------------------------------------------------------------------------------------------- the set fit
class SharedAlphaFitter(Fitter):
    """A :class:`Fitter` whose α is one variable per *group* of batch rows (``groups``: (B,) group index per
    row, set before :meth:`fit`); β and pose stay per picture. ``init["alpha"]`` must agree within a group."""

    groups: torch.Tensor | None = None

    @classmethod
    def wrap(cls, fitter: Fitter) -> "SharedAlphaFitter":
        new = cls.__new__(cls)
        new.__dict__.update(fitter.__dict__)
        new.groups = None
        return new

    def start_params(self, init, batch):
        params = super().start_params(init, batch)
        g = self.groups
        if g is None or len(g) != batch.size:
            raise ValueError("SharedAlphaFitter.groups must give one group index per batch row")
        params["alpha"] = torch.zeros(int(g.max()) + 1, self.mesh.n_id, device=self.device)
        return params

    def forward(self, params, batch, visibility=None):
        return super().forward({**params, "alpha": params["alpha"][self.groups]}, batch, visibility)


def set_fit(fitter: Fitter, init: Mapping[str, np.ndarray], rois: np.ndarray, target_lm_img: np.ndarray,
            sets: np.ndarray, iterations: int = 60, image_size: int = 160) -> dict[str, np.ndarray]:
    """One α per set, fitted jointly to the set's pictures (landmark mode); β and pose per member.

    ``init``/``rois``/``target_lm_img`` are per *picture* (n, …); ``sets`` (n_sets, k) picture positions. The
    shared α starts at the mean of the members' ``init["alpha"]``. Returns ``alpha`` (n_sets, n_id), ``beta``
    (n_sets, k, n_exp), ``pose`` (n_sets, k, 12), ``seconds``."""
    sets = np.asarray(sets, np.int64)
    n_sets, k = sets.shape
    flat = sets.reshape(-1)
    a0 = np.asarray(init["alpha"], np.float32)[sets].mean(1)  # (n_sets, n_id)
    shared = SharedAlphaFitter.wrap(fitter)
    shared.groups = torch.as_tensor(np.repeat(np.arange(n_sets), k), device=fitter.device)
    start = {"alpha": np.repeat(a0, k, axis=0), "beta": np.asarray(init["beta"], np.float32)[flat],
             "pose": np.asarray(init["pose"], np.float32)[flat]}
    r = np.asarray(rois, np.float32)[flat]
    res = shared.fit(start, r, image_to_crop(np.asarray(target_lm_img, np.float32)[flat], r, image_size),
                     mode="landmarks", iterations=iterations)
    return {"alpha": res.alpha.reshape(n_sets, k, -1)[:, 0], "beta": res.beta.reshape(n_sets, k, -1),
            "pose": res.pose.reshape(n_sets, k, 12), "seconds": res.seconds,
            "alpha_members": res.alpha.reshape(n_sets, k, -1)}


class SetFitAggregator:
    """A :func:`facelib.classify.experiment.run_task` aggregator: a k-set's vector is the α of one joint fit of its
    pictures (:func:`set_fit`). ``task_rows``: the rows run_task classifies, in its order
    (``experiment._task_table(table, task)``); ``init``: the table whose coefficients start the fit (the raw
    tddfa one, as the per-picture fit starts from it), matched by sha256. Set fits are memoised and cached on disk
    (key: the members' sha256s), so every repeat and rerun fits each distinct set once."""

    name = "set_fit"

    def __init__(self, fitter: Fitter, task_rows: pd.DataFrame, init: pd.DataFrame, targets: pd.DataFrame,
                 iterations: int = 60, chunk: int = 256, image_size: int = 160, cache_dir=None):
        self.fitter, self.iterations, self.chunk, self.image_size = fitter, iterations, chunk, image_size
        self.shas = task_rows["sha256"].astype(str).to_numpy()
        by = init.drop_duplicates("sha256").set_index("sha256").reindex(self.shas)
        self.init = {c: _stack(by[c]) for c in ("alpha", "beta", "pose")}
        self.rois = np.stack([crop_box(b) for b in task_rows["box"]]).astype(np.float32)
        self.targets = _targets_of(targets, self.shas)
        settings = {"v": VERSION, "iterations": iterations, "size": image_size,
                    "init": _fingerprint(*self.init.values()), "targets": _fingerprint(self.targets)}
        key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        self.folder = Path(cache_dir or config.cache_dir() / "fitting") / f"set_fit-{key}"
        self.folder.mkdir(parents=True, exist_ok=True)
        done = read_shards(self.folder)
        self.memo = {s: np.asarray(a, np.float32) for s, a in zip(done["sha256"], done.get("alpha", []))}
        self.seconds, self.n_fitted = 0.0, 0

    def seconds_per_set(self) -> float | None:
        """Mean seconds of one set fit over every set fitted for this table (the cache folder's: a rerun, or a
        Dask worker's fits, count too); None when no fit recorded its time."""
        done = read_shards(self.folder)
        secs = pd.to_numeric(done["seconds"], errors="coerce").dropna() if "seconds" in done.columns else []
        return float(np.mean(secs)) if len(secs) else None

    def _key(self, members) -> str:
        return hashlib.sha256("+".join(sorted(self.shas[members])).encode()).hexdigest()

    def aggregate_sets(self, X: np.ndarray, sets: np.ndarray) -> np.ndarray:
        sets = np.asarray(sets, np.int64)
        if X.shape[1] != self.init["alpha"].shape[1]:
            raise ValueError("the set-fit aggregator gives α: use input 'alpha'")
        keys = [self._key(s) for s in sets]
        todo = {}
        for key, s in zip(keys, sets):
            if key not in self.memo:
                todo.setdefault(key, s)
        items = list(todo.items())
        for start in range(0, len(items), self.chunk):
            part = items[start:start + self.chunk]
            r = set_fit(self.fitter, self.init, self.rois, self.targets, np.stack([s for _, s in part]),
                        self.iterations, self.image_size)
            self.seconds += r["seconds"]
            self.n_fitted += len(part)
            shard = pd.DataFrame({"sha256": [kk for kk, _ in part], "alpha": list(r["alpha"].tolist()),
                                  "seconds": r["seconds"] / len(part)})
            append_shard(self.folder, shard)
            self.memo.update({kk: a for (kk, _), a in zip(part, r["alpha"])})
        return np.stack([self.memo[kk] for kk in keys]).astype(np.float32)

    def __repr__(self) -> str:
        return f"<aggregator {self.name}>"



# ----------------------------------------------------------------------------------------------- in the study
class SetFitUnavailable(ValueError):
    """``set_fit`` cannot score this table (not a per-picture landmark fit, or its start table is absent): the
    plan logs the row as skipped with this reason."""


def check_person_fits(params: Mapping) -> list[str]:
    """The ``person_fits`` values of a run's parameters, checked: each must be a key of :data:`PERSON_FITS` and its
    per-picture landmark fit must be configured. Raises ValueError (one line, naming the parameter to add)."""
    values = params.get("person_fits") or []
    values = [values] if isinstance(values, str) else list(values)
    unknown = [v for v in values if v not in PERSON_FITS]
    if unknown:
        raise ValueError(f"person_fits: unknown value(s) {unknown}; known: "
                         + ", ".join(f"{k} (needs {p}: [{m}])" for k, (p, m, _, _) in PERSON_FITS.items()))
    for v in values:
        param, mode, base, _ = PERSON_FITS[v]
        if mode not in (params.get(param) or []):
            raise ValueError(f"person_fits: [{v}] refits the per-picture landmark fit '{base}', which this run does "
                             f"not make: add {mode} to {param} (e.g. --set '{param}=[{mode}]')")
        if v == "tddfa" and (params.get("backend") or "tddfa") != "tddfa":
            raise ValueError(f"person_fits: [tddfa] needs backend tddfa, not {params.get('backend')!r}")
    return values


def scored_on_beta(name: str, table: pd.DataFrame) -> bool:
    """Whether a Table-1 line of this dataset is scored on β (only those can use a person-grouped table), as
    :func:`facelib.classify.plan.rows_for` decides (a test holds them together): KDEF's expression lines; FEI is
    scored on gender only; a dataset of your own when its labels give an expression task."""
    if name in ("kdef", "fei"):
        return name == "kdef"
    return any(t.task == "expression" for t in labels.tasks_for(table, runnable_only=True))


def study_variants(run, coeffs: Mapping[str, pd.DataFrame], person_fits, device: str | None = None,
                   assets_dir=None, progress: bool = True, cache_dir=None, executor: Executor | None = None
                   ) -> dict[tuple[str, str], pd.DataFrame]:
    """Notebook 02's person-consistent tables: for every ``person_fits`` value (:data:`PERSON_FITS`) and every
    dataset of ``coeffs`` (raw backend tables) with a Table-1 line on β (expression), :func:`person_consistent_table`
    of the run's per-picture landmark fit (``ict`` → ``ict+fit_person``, ``tddfa`` → ``tddfa+fit_person``), written
    to :meth:`facelib.run.Run.person_coeffs`. Targets: :func:`target_table` of the raw table (dlib, as the
    per-picture fits). ``prior_fit_seconds`` keeps the per-picture fit's time (the refit needs it first: Table 2's
    cost adds both). ``executor``: where the targets' and the refits' batches run."""
    values = check_person_fits({**run.params, "person_fits": person_fits})
    out: dict[tuple[str, str], pd.DataFrame] = {}
    for name, raw in coeffs.items():
        if not values or not scored_on_beta(name, raw):
            continue
        targets = target_table(raw, "dlib", cache_dir=cache_dir, progress=progress, executor=executor)
        for v in values:
            _, mode, _, iterations = PERSON_FITS[v]
            base = pd.read_parquet(run.ict_coeffs(name, mode) if v == "ict" else run.coeffs(name, mode))
            fitter = Recipe(f"fitter-{v}-{device}", ict_fitter if v == "ict" else bfm_fitter, device=device,
                            assets_dir=assets_dir)
            t = person_consistent_table(base, fitter, targets, iterations=iterations, batch_size=8,
                                        cache_dir=cache_dir, progress=progress, executor=executor)
            t["prior_fit_seconds"] = base["fit_seconds"] if "fit_seconds" in base.columns else np.nan
            atomic_write_table(t, run.person_coeffs(name, v))
            out[(name, v)] = t
    return out


def set_fit_aggregator(task_rows: pd.DataFrame, tables, device: str | None = None, assets_dir=None,
                       cache_dir=None, progress: bool = False) -> SetFitAggregator:
    """The ``set_fit`` aggregator of one coefficient table in the study: ``task_rows`` are the identity rows
    run_task classifies (``experiment._task_table(table, "identity")``), ``tables`` the dataset's coefficient
    tables (raw first). Only the per-picture landmark fits of :data:`SET_FITS` qualify: the BFM fit's set fits
    start from the raw tddfa coefficients (as the per-picture fit does), the ICT fit's from its per-picture fits;
    targets are the per-picture fits' (:func:`target_table` of the raw table). Raises :class:`SetFitUnavailable`."""
    backend = str(task_rows["backend"].iloc[0]) if len(task_rows) else ""
    if backend not in SET_FITS:
        raise SetFitUnavailable(f"set_fit fits the per-picture landmark-fit tables {sorted(SET_FITS)} only, "
                                f"not {backend!r}")
    start, iterations = SET_FITS[backend]
    by = {str(t["backend"].iloc[0]): t for t in tables if len(t)}
    if start not in by or "tddfa" not in by:
        raise SetFitUnavailable(f"set_fit on {backend} needs the {start!r} and 'tddfa' tables of the same pictures")
    targets = target_table(by["tddfa"], "dlib", cache_dir=cache_dir, progress=progress)
    if backend == "ict":
        from .ict_fit import ICTFitter
        fitter = ICTFitter(device=device, assets_dir=assets_dir).fitter
    else:
        fitter = Fitter(device=device, assets_dir=assets_dir)
    return SetFitAggregator(fitter, task_rows, by[start], targets, iterations=iterations, cache_dir=cache_dir)
