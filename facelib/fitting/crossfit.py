"""Cross-fitted R-Net (and C-Net) coefficients for a study's own pictures: nothing is coded by a network that saw it.

1. The study's people are split into K subject-disjoint parts (:func:`assign_parts`, K = 2 by default; the
   people of each dataset are shuffled with the seed and dealt round-robin, so each part holds about 1/K of every
   dataset).
2. For each part p, an R-Net is trained label-free (:func:`facelib.fitting.rnet_train.train_rnet`) on the pictures of
   all *other* parts, and codes the pictures of part p. With ``cnet`` on, a C-Net is trained on the same
   training pictures (R-Net frozen) and gives part p's confidences.
3. Trained weights are cached in ``<cache>/rnet/<key>.pt``; the key (:func:`weights_key`) covers the sha256 of
   every training picture, every setting and the checksums of every asset (weights, bases, texture basis, skin
   model) — a change to any of them trains anew; anything else reuses the file. ``processes`` (how many
   processes train each network, :mod:`facelib.fitting.distributed`) is not in the key: the same global batches
   give the same network up to floating-point rounding.
4. Each person is coded by one network, and the networks leave a per-network offset in α: :func:`part_probe`
   measures it (a linear probe predicting ``rnet_part`` on people it never saw; chance 50 % with two parts) and
   :func:`center_parts` removes it per classification split, with means over the split's fit pictures only
   (``run_task`` does this for every R-Net table). Measured on the ci profile's 1-epoch R-Net (dev KDEF + FEI):
   probe 95.7 % (KDEF) / 99.8 % (FEI) raw, 49.9 % / 50.0 % after centering.

The coded table has the coefficient-table schema (docs/ARCHITECTURE.md) with ``backend`` = ``<base>+rnet``,
``alpha``/``beta``/``pose`` (tddfa layout), ``landmarks`` (the R-Net model's 68 points in image pixels),
``gamma`` (27), ``texture`` (δ, when a texture basis is used) or ``gain`` (RGB albedo gain), and the cross-fit
columns ``rnet_part`` (the part the picture is in), ``rnet_network`` (key of the R-Net that coded it: trained
on every part but ``rnet_part``), ``confidence`` (C-Net, one per α element) and ``cnet_network``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .. import assets, config
from ..face3d import rnet as R
from ..face3d.cameras import crop_box, crop_rgb
from ..face3d.morphable import MorphableModel
from ..face3d.reconstruct import read_image
from ..face3d.tddfa import BFMKeypoints, roi_to_image
from ..io import atomic_path, atomic_write_table, save_figure
from . import distributed as D
from . import part_training as PT
from . import rnet_train as T
from .cnet import CNet, confidences
from .fitter import Fitter
from .skin import skin_model_for_table
from .table import dlib_embedder
from .texture import load_texture_basis, with_texture
from .texture_basis import build_from_table

CROSSFIT_VERSION = 1
ASSET_NAMES = ("mb05", "param_mean_std", "bfm_u_shp", "bfm_u_exp", "bfm_w_shp", "bfm_w_exp", "bfm_keypoints",
               "tri", "indices")


@dataclass
class RNetSettings:
    """Everything that changes a trained network (all but ``processes`` enter the cache key)."""

    backbone: str = "mobilenet"
    image_size: int = 120          # render / target resolution of the 3DDFA crop
    mesh_vertices: int = 8000      # coarse training mesh (vertex clustering of the no-neck mesh)
    epochs: int = 6                # paper.yaml: 16 with the cosine schedule (≈ 12 min per full-KDEF-sized part)
    batch_size: int = 16
    lr: float = 1e-4               # pretrained trunk and fc_param
    head_lr: float = 1e-3          # added texture / lighting heads
    schedule: str = "constant"     # after the warm-up: "constant" or "cosine" (to zero at the last step)
    targets: str = "dlib"          # "dlib" (68 points; 3DDFA_V2's where dlib fails) or "table" (frozen 3DDFA_V2)
    perceptual: bool = False       # perceptual term (dlib face-recognition embedding)
    weights: dict = field(default_factory=dict)  # HybridLoss overrides
    seed: int = 0
    identity_weight: float = 0.0   # > 0: person-grouped batches + within-person α spread term (fitting.identity)
    identity_per_person: int = 4   # pictures per person in a grouped batch (only with identity_weight > 0)
    max_seconds: float | None = None  # training time cap per part (the epochs done are recorded)
    init: str | None = "released"  # resnet50: None (random) or the path of Deep3DFaceRecon's epoch_20.pth
    cnet: bool = True
    cnet_k: int = 3
    cnet_steps: int = 150
    cnet_sets_per_step: int = 4
    cnet_lr: float = 1e-3
    processes: int = 1             # processes training each R-Net / C-Net together (fitting.distributed; cpu: gloo,
    #                                cuda: nccl, one GPU each); not in the cache key: same batches, same network

    def key_dict(self, cnet: bool = True) -> dict:
        """Settings entering a cache key (R-Net's leave the C-Net settings out; ``max_seconds`` only when set;
        never ``processes``: a network trained on several processes is the one trained on one)."""
        d = asdict(self)
        d.pop("processes")
        if d["max_seconds"] is None:
            d.pop("max_seconds")
        if d["schedule"] == "constant":  # the default before the setting existed: earlier caches stay valid
            d.pop("schedule")
        if not d["identity_weight"]:  # off (the default before the setting existed): earlier caches stay valid
            d.pop("identity_weight")
            d.pop("identity_per_person")
        return d if cnet else {k: v for k, v in d.items() if not k.startswith("cnet")}


def make_settings(settings: dict | None) -> RNetSettings:
    """:class:`RNetSettings` from a parameter dict; unknown names are an error that lists the known ones."""
    known = set(RNetSettings.__dataclass_fields__)
    unknown = set(settings or {}) - known
    if unknown:
        raise ValueError(f"unknown R-Net settings {sorted(unknown)}; known: {sorted(known)} (+ parts, texture, "
                         "texture_images, tuned_on_test, exposure in notebook 02's rnet_settings)")
    return RNetSettings(**(settings or {}))


# ----------------------------------------------------------------------------------------------- parts and keys
def assign_parts(subjects, k: int = 2, seed: int = 0, strata=None) -> np.ndarray:
    """Part (0..k−1) of every row: all rows of a person share a part; people of each stratum (e.g. dataset) are
    shuffled with ``seed`` and dealt round-robin."""
    subjects = np.asarray(subjects).astype(str)
    strata = np.zeros(len(subjects), dtype=object) if strata is None else np.asarray(strata).astype(str)
    if k < 2:
        raise ValueError("cross-fitting needs k >= 2 parts")
    people = pd.DataFrame({"s": subjects, "g": strata}).drop_duplicates("s")
    if people["s"].nunique() < k:
        raise ValueError(f"{people['s'].nunique()} people cannot be split into {k} subject-disjoint parts")
    rng = np.random.default_rng(seed)
    part_of: dict[str, int] = {}
    offset = 0
    for g in sorted(people["g"].unique()):
        names = np.sort(people.loc[people["g"] == g, "s"].to_numpy())
        for i, s in enumerate(rng.permutation(names)):
            part_of[s] = (i + offset) % k
        offset += len(names)
    return np.array([part_of[s] for s in subjects], np.int64)


def weights_key(train_sha256, settings: dict, asset_sums: dict, extra: dict | None = None) -> str:
    """Cache key of a trained network: sorted training-picture sha256s, settings, asset checksums."""
    payload = {"v": CROSSFIT_VERSION, "train": sorted(map(str, train_sha256)), "settings": settings,
               "assets": asset_sums, "extra": extra or {}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


# ----------------------------------------------------------------------------------------------- coding
def model_landmarks(bfm: BFMKeypoints, coeffs: dict[str, np.ndarray], rois: np.ndarray) -> np.ndarray:
    """(n, 136) x0..x67, y0..y67 image pixels of the coded model's keypoints (as the tddfa backend's)."""
    p62 = np.concatenate([coeffs["pose"], coeffs["alpha"], coeffs["beta"]], axis=1)
    pts = roi_to_image(bfm.project(p62)[:, :2], rois)
    return pts.reshape(len(p62), 136).astype(np.float32)


def _boxes_sha(ok: pd.DataFrame) -> str:
    """Checksum of the detector boxes (the crops depend on them)."""
    boxes = np.stack([np.asarray(b, np.float32)[:4] for b in ok["box"]])
    return hashlib.sha256(boxes.tobytes()).hexdigest()


def _as_rows(arr: np.ndarray | None, n: int) -> list:
    return [None] * n if arr is None else [np.asarray(a, np.float32).tolist() for a in arr]


def rnet_tables(tables: dict[str, pd.DataFrame], k: int = 2, settings: RNetSettings | dict | None = None,
                texture=None, skin_model=None, device: str | None = None, assets_dir=None, cache_dir=None,
                progress: bool = True, log: list | None = None) -> dict[str, pd.DataFrame]:
    """Cross-fitted R-Net (+ C-Net) coefficient tables for tddfa tables ``{name: table}`` (one study).

    ``texture``: a texture basis .npz (:mod:`facelib.fitting.texture`; None: an RGB albedo gain head). ``skin_model``:
    None → one skin model per part, trained on that part's *training* pictures only (cached), so the photometric
    attention never comes from a model that saw the pictures the part's network codes; a SkinModel → that one for
    every part (trained elsewhere, the caller's choice); False → no attention. ``log`` collects one record per part
    (training history summary, seconds, cache hit)."""
    s = settings if isinstance(settings, RNetSettings) else make_settings(settings)
    dev = config.resolve_device(device)
    D.backend_for(dev, s.processes)  # several processes need cpu (gloo) or cuda (nccl): fail before any work
    ok = pd.concat([t[t["status"] == "ok"].assign(_table=name) for name, t in tables.items()], ignore_index=True)
    ok = ok.drop_duplicates("sha256")
    if not len(ok):
        raise ValueError("no ok pictures to train R-Net on")
    parts = assign_parts(ok["subject"], k, s.seed, strata=ok["_table"])
    per_part_skin = skin_model is None
    skin_dir = None if cache_dir is None else Path(cache_dir) / "fitting"
    model = PT.morphable(assets_dir, texture)
    sums = assets.checksums(list(ASSET_NAMES), assets_dir)
    if texture is not None:
        sums["texture"] = assets.sha256_file(texture)
    if s.init not in (None, "released"):  # a user's checkpoint (resnet50: Deep3DFaceRecon's epoch_20.pth)
        sums["init"] = assets.sha256_file(s.init)
    if skin_model:
        sums["skin"] = skin_model.fingerprint()
    elif per_part_skin:
        sums["skin"] = "per-part"  # each part's key adds its own skin model's fingerprint below
    embedder = dlib_embedder() if s.perceptual else None
    composer = PT.composer(model, s, dev, assets_dir, embedder)
    n_tex = model.n_tex
    bfm = BFMKeypoints(assets_dir)
    folder = Path(cache_dir or config.cache_dir() / "rnet")
    folder.mkdir(parents=True, exist_ok=True)
    # the training inputs (crops, fixed landmark targets, skin attention, photo embeddings), computed once
    dkey = weights_key(ok["sha256"], {"size": s.image_size, "targets": s.targets, "perceptual": s.perceptual},
                       {k: v for k, v in sums.items() if k == "skin"}, {"part": "data", "boxes": _boxes_sha(ok)})
    dpath = folder / f"data-{dkey}.npz"
    if dpath.is_file():
        data = T.TrainData.load(dpath)
    else:
        data = T.prepare_data(ok, s.image_size, s.targets, skin_model or None, embedder, progress=progress)
        data.save(dpath)
    if not np.array_equal(data.sha256, ok["sha256"].astype(str).to_numpy()):
        raise RuntimeError(f"{dpath}: cached training data do not match the pictures; delete the file")

    coded: dict[str, np.ndarray] = {}
    conf = np.full((len(ok), model.n_id), np.nan, np.float32)
    rnet_key = np.empty(len(ok), dtype=object)
    cnet_key = np.empty(len(ok), dtype=object)
    for p in range(k):
        train_idx, code_idx = np.flatnonzero(parts != p), np.flatnonzero(parts == p)
        train = data.subset(train_idx)
        part_sums = dict(sums)
        if per_part_skin:  # leak-free: the attention of this part's training comes from its training pictures only
            part_skin = skin_model_for_table(ok.iloc[train_idx], cache_dir=skin_dir)
            train = train.with_attention(part_skin)
            part_sums["skin"] = part_skin.fingerprint()
        key = weights_key(train.sha256, s.key_dict(cnet=False), part_sums, {"n_tex": n_tex, "part": "rnet"})
        path = folder / f"rnet-{key}.pt"
        record = {"part": p, "n_train": len(train_idx), "n_coded": len(code_idx), "rnet_key": key,
                  "train_subjects": sorted(set(train.subject)), "coded_subjects": sorted(set(data.subject[code_idx]))}
        if path.is_file():
            net, meta = R.load_saved_rnet(path, dev)
            record.update(cached=True, **meta.get("summary", {}))
        else:
            torch.manual_seed(s.seed)
            net = R.build_rnet(s.backbone, n_tex, assets_dir, init=s.init).to(dev)
            before = T.evaluate_loss(net, composer, train)
            kw = dict(epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, head_lr=s.head_lr, seed=s.seed + p,
                      max_seconds=s.max_seconds, schedule=s.schedule, identity_weight=s.identity_weight,
                      per_person=s.identity_per_person, progress=progress)
            if s.processes > 1:  # the same training on several processes; their weights come back here
                state, hist, rng = D.launch(PT.train_rnet_part, s.processes, PT.cpu_state(net), s, n_tex, train, kw,
                                            texture, assets_dir, dev, device=dev)
                net.load_state_dict(state)
                torch.set_rng_state(rng)  # as if trained here: C-Net's initial weights are drawn from it
                net.eval()
            else:
                hist = T.train_rnet(net, composer, train, **kw)
            after = T.evaluate_loss(net, composer, train)
            summary = {"epochs_done": hist["epochs_done"], "seconds": hist["seconds"], "steps": hist["steps"],
                       "loss_before": before, "loss_after": after, "stopped_early": hist["stopped_early"]}
            if s.processes > 1:
                summary["processes"] = s.processes
            if s.identity_weight:  # the weighted identity term, mean over the first and the last epoch's steps
                ep = np.asarray(hist["epoch"])
                ident = np.array([t["identity"] for t in hist["terms"]])
                summary.update(identity_first=float(ident[ep == ep.min()].mean()),
                               identity_last=float(ident[ep == ep.max()].mean()))
            R.save_rnet(net, path, {"summary": summary, "key": key, "settings": s.key_dict(cnet=False),
                                    "train_sha256": sorted(train.sha256.tolist())})
            record.update(cached=False, **summary)
        out = R.predict(net, data.crops[code_idx], device=dev, features=s.cnet)
        feats = out.pop("features", None)
        for name, v in out.items():
            coded.setdefault(name, np.zeros((len(ok),) + v.shape[1:], np.float32))[code_idx] = v
        rnet_key[code_idx] = key
        if s.cnet:
            ckey = weights_key(train.sha256, s.key_dict(), part_sums, {"n_tex": n_tex, "part": "cnet", "rnet": key})
            cpath = folder / f"cnet-{ckey}.pt"
            cnet = CNet(net.feature_channels, model.n_id)
            if cpath.is_file():
                cnet.load_state_dict(torch.load(cpath, map_location="cpu", weights_only=True))
                record["cnet_cached"] = True
            else:
                tr = R.predict(net, train.crops, device=dev, features=True)
                tf = tr.pop("features")
                torch.manual_seed(s.seed)
                kw = dict(k=s.cnet_k, steps=s.cnet_steps, sets_per_step=s.cnet_sets_per_step, lr=s.cnet_lr,
                          seed=s.seed + p, max_seconds=s.max_seconds, progress=progress)
                if s.processes > 1:
                    state, ch, rng = D.launch(PT.train_cnet_part, s.processes, PT.cpu_state(cnet), s, model.n_id,
                                              train, tr, tf, kw, texture, assets_dir, dev, device=dev)
                    cnet.load_state_dict(state)
                    torch.set_rng_state(rng)
                    cnet.eval()
                else:
                    ch = T.train_cnet(cnet, composer, train, tr, tf, **kw)
                with atomic_path(cpath) as tmp:
                    torch.save(cnet.state_dict(), tmp)
                record.update(cnet_cached=False, cnet_seconds=ch["seconds"], cnet_loss_first=ch["total"][:10],
                              cnet_loss_last=ch["total"][-10:])
            conf[code_idx] = confidences(cnet, feats, device=dev)
            cnet_key[code_idx] = ckey
        if log is not None:
            log.append(record)

    lm = model_landmarks(bfm, coded, data.rois)
    res = pd.DataFrame({"sha256": data.sha256, "rnet_part": parts, "rnet_network": rnet_key,
                        "alpha": _as_rows(coded["alpha"], len(ok)), "beta": _as_rows(coded["beta"], len(ok)),
                        "pose": _as_rows(coded["pose"], len(ok)), "gamma": _as_rows(coded["gamma"], len(ok)),
                        "texture": _as_rows(coded.get("texture"), len(ok)),
                        "gain": _as_rows(coded.get("gain"), len(ok)),
                        "landmarks": _as_rows(lm, len(ok)),
                        "confidence": _as_rows(conf if s.cnet else None, len(ok)),
                        "cnet_network": cnet_key if s.cnet else [None] * len(ok)}).set_index("sha256")
    out = {}
    for name, t in tables.items():
        t = t.copy()
        base = str(t["backend"].dropna().iloc[0]) if t["backend"].notna().any() else "tddfa"
        t["backend"] = f"{base}+rnet"
        hit = (t["status"] == "ok") & t["sha256"].isin(res.index)
        for col in res.columns:
            if col not in t.columns:
                t[col] = None
            t[col] = t[col].astype(object)
            vals = res[col].reindex(t.loc[hit, "sha256"]).tolist()
            t.loc[hit, col] = pd.Series(vals, index=t.index[hit], dtype=object)
        t["rnet_part"] = t["rnet_part"].astype("Int64")
        out[name] = t
    return out


# ----------------------------------------------------------------------------------------------- identity signal
def center_parts(X: np.ndarray, parts, fit_idx) -> np.ndarray:
    """``X`` with each part's mean over the *fit* rows ``fit_idx`` subtracted from every row of that part (a part
    absent from the fit rows: the fit rows' overall mean). Removes the cross-fit networks' per-part offset
    (:func:`part_probe`) using training pictures only — label-free and not transductive."""
    X = np.asarray(X, dtype=np.float64)
    parts = np.asarray(pd.Series(parts).fillna(-1).astype(int))
    fit_idx = np.asarray(fit_idx, dtype=np.int64)
    out = X - X[fit_idx].mean(0)
    for q in np.unique(parts):
        rows, fit_q = parts == q, fit_idx[parts[fit_idx] == q]
        if len(fit_q):
            out[rows] = X[rows] - X[fit_q].mean(0)
    return out.astype(np.float32)


def part_probe(table: pd.DataFrame, column: str = "alpha", n_splits: int = 5, seed: int = 0,
               center: bool = False) -> dict:
    """Can a linear classifier tell which cross-fit network coded a picture (``rnet_part``) from its ``column``?

    Every person is coded entirely by one network, so the part is a function of the person: an ordinary
    cross-validated probe would learn people, not networks. The probe is therefore scored on *people it never saw*
    (subject-grouped folds, people of each part dealt round-robin): above chance only if the networks leave a
    part-specific signature (an offset, a scale) that generalises across people — a cue a classifier of identity
    or of a label unevenly spread over the parts could use. Probe: standardise + logistic regression (C = 1),
    fit on the training people of each fold; ``center``: first :func:`center_parts` with the probe's training
    people (what :func:`facelib.classify.experiment.run_task` does to R-Net coefficients). Returns ``accuracy``
    (pooled over all held-out pictures),
    ``chance`` (the majority part's share of the pictures), ``person_accuracy`` (a person counts as right when
    most of their pictures are), ``fold_accuracies``, ``n_pictures``, ``n_people``, ``n_parts``, ``column``."""
    if "rnet_part" not in table.columns:
        raise ValueError("part_probe needs an R-Net table (column 'rnet_part', from rnet_tables)")
    ok = table[table["rnet_part"].notna() & table[column].notna()]
    if "status" in ok.columns:
        ok = ok[ok["status"] == "ok"]
    X = np.stack([np.asarray(v, np.float64) for v in ok[column]])
    y = ok["rnet_part"].astype(int).to_numpy()
    people = ok["subject"].astype(str).to_numpy()
    part_of = pd.Series(y, index=people).groupby(level=0).first()
    if part_of.index.nunique() < 2 * n_splits and part_of.index.nunique() >= 4:
        n_splits = max(2, part_of.index.nunique() // 2)
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    for p in sorted(set(part_of)):  # each fold holds people of every part (when there are enough)
        names = np.array(sorted(part_of.index[part_of == p]), dtype=object)
        for i, s in enumerate(names[rng.permutation(len(names))]):
            fold_of[s] = i % n_splits
    fold = np.array([fold_of[s] for s in people])
    pred = np.full(len(y), -1)
    fold_acc = []
    for f in range(n_splits):
        test = fold == f
        if not test.any() or len(set(y[~test])) < 2:
            continue
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
        Xf = center_parts(X, y, np.flatnonzero(~test)) if center else X
        probe.fit(Xf[~test], y[~test])
        pred[test] = probe.predict(Xf[test])
        fold_acc.append(float((pred[test] == y[test]).mean()))
    scored = pred >= 0
    hit = pred[scored] == y[scored]
    by_person = pd.Series(hit, index=people[scored]).groupby(level=0).mean()
    return {"accuracy": float(hit.mean()), "chance": float(np.bincount(y[scored]).max() / scored.sum()),
            "person_accuracy": float((by_person > 0.5).mean()), "fold_accuracies": fold_acc,
            "n_pictures": int(scored.sum()), "n_people": int(len(by_person)), "n_parts": int(len(set(y))),
            "column": column, "centered": bool(center),
            "probe": "standardise + logistic regression, subject-grouped folds"}


# ----------------------------------------------------------------------------------------------- study glue
# What every cross-fitted table's networks saw of Table 1's test side (its ``exposure`` column; a row with it is
# not clean and never feeds the verdict): each part is coded by networks trained on the other part's pictures.
RNET_EXPOSURE = ("R-Net, C-Net and skin model trained without labels on the other cross-fit part's pictures, "
                 "which include Table 1 test pictures of other people")

def study_rnet(coeffs: dict[str, pd.DataFrame], run, settings: dict | None = None, k: int = 2, device=None,
               assets_dir=None, progress: bool = True) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Notebook 02's R-Net step: cross-fitted coding of every dataset of a run, written to
    ``run.coeffs(name, rnet=True)``. ``settings``: :class:`RNetSettings` overrides, plus ``parts`` (K) and
    ``texture`` (True: use/build the run's data-built texture basis ``coeffs/texture_kdef_S.npz`` from at most
    ``texture_images`` frontal KDEF pictures), ``tuned_on_test`` (a note: the settings were chosen by accuracy
    on Table 1's test folds; every table gets a ``tuned_on_test`` column that flags its Table 1 rows),
    ``exposure`` (a note on how the settings were chosen when that choice saw pictures that are Table 1 test
    pictures, e.g. validation sides of repeated random splits; appended to :data:`RNET_EXPOSURE`, which every
    table carries in its ``exposure`` column).
    Returns (tables, one row per part: training summary, plus per dataset the :func:`part_probe` accuracy raw and
    after fit-split part centering, also written to ``coeffs/rnet_part_probe.json``)."""
    s = dict(settings or {})
    k = int(s.pop("parts", k))
    s.pop("texture", None)
    tuned = s.pop("tuned_on_test", None)
    exposure = "; ".join([RNET_EXPOSURE] + ([str(s.pop("exposure"))] if s.get("exposure") else []))
    s.pop("exposure", None)
    n_tex_img = s.pop("texture_images", 100)
    texture = texture_path(run, settings) if "kdef" in coeffs else None
    if texture is not None:
        if not texture.exists():
            build_from_table(coeffs["kdef"], out=texture, max_images=n_tex_img, device=device,
                             assets_dir=assets_dir, progress=progress)
    log: list = []
    tables = rnet_tables(coeffs, k=k, settings=s, texture=texture, device=device, assets_dir=assets_dir,
                         progress=progress, log=log)
    if texture is not None:  # the basis is a PCA over this study's frontal KDEF pictures, coded ones included
        note = (f"R-Net texture basis built from up to {n_tex_img} frontal KDEF pictures of this study "
                "(test pictures included)")
        tables = {name: t.assign(transductive=note) for name, t in tables.items()}
    if tuned:
        note = tuned if isinstance(tuned, str) else "R-Net settings chosen by accuracy on Table 1's test folds"
        tables = {name: t.assign(tuned_on_test=note) for name, t in tables.items()}
    tables = {name: t.assign(exposure=exposure) for name, t in tables.items()}
    for name, t in tables.items():
        atomic_write_table(t, run.coeffs(name, rnet=True))
    probes = {}
    for name, t in tables.items():
        try:
            probes[name] = {"raw": part_probe(t), "centered": part_probe(t, center=True)}
        except ValueError as exc:  # too few people or parts
            probes[name] = {"error": str(exc)}
    (run.dir / "coeffs").mkdir(parents=True, exist_ok=True)
    with atomic_path(run.dir / "coeffs" / "rnet_part_probe.json") as tmp:
        tmp.write_text(json.dumps(probes, indent=1))
    cols = ["part", "n_train", "n_coded", "cached", "epochs_done", "seconds", "stopped_early", "cnet_seconds"]
    summary = pd.DataFrame([{c: r.get(c) for c in cols} | {f"loss_{w}": (r.get(f"loss_{w}") or {}).get("total")
                                                           for w in ("before", "after")} for r in log])
    for name, pr in probes.items():  # constant per row: can a probe tell the parts apart on unseen people?
        for how in ("raw", "centered"):
            if how in pr:
                summary[f"part_probe_{name}_{how}"] = round(pr[how]["accuracy"], 3)
    return tables, summary


def texture_path(run, settings: dict | None) -> Path | None:
    """The run's data-built texture basis when R-Net's settings ask for one (``texture: true``), else None."""
    return run.dir / "coeffs" / "texture_kdef_S.npz" if (settings or {}).get("texture") else None


def reconstruction_figure(table: pd.DataFrame, n: int = 6, texture=None, image_size: int = 160, device=None,
                          assets_dir=None, seed: int = 0, out=None):
    """Coded pictures (cross-fitted: each by a network that never saw its person) beside their rendering from
    the table's coefficients and an overlay; one column per angle when the table has KDEF angles."""
    ok = table[(table["status"] == "ok") & table["alpha"].notna()]
    rows = ok.groupby("angle", group_keys=False).apply(lambda g: g.sample(1, random_state=seed)) \
        if "angle" in ok and ok["angle"].nunique() > 1 else ok.sample(min(n, len(ok)), random_state=seed)
    rows = rows.iloc[:n]
    model = MorphableModel.from_3ddfa(assets_dir)
    if texture is not None:
        model = with_texture(model, load_texture_basis(texture))
    comp = T.Composer(Fitter(model, device=device, assets_dir=assets_dir, image_size=image_size),
                      mesh_vertices=None)
    dev = comp.f.device
    f32 = lambda col: torch.as_tensor(np.stack([np.asarray(v, np.float32) for v in rows[col]])).to(dev)  # noqa
    coeffs = {c: f32(c) for c in ("alpha", "beta", "pose", "gamma")}
    has_tex = "texture" in rows and rows["texture"].notna().all() and model.n_tex > 0
    coeffs["texture" if has_tex else "gain"] = f32("texture" if has_tex else "gain")
    rois = np.stack([crop_box(b) for b in rows["box"]])
    with torch.no_grad():
        r, _ = comp.forward(coeffs, {"rois": torch.as_tensor(rois, dtype=torch.float32, device=dev)})
    photos = [crop_rgb(read_image(p), roi, image_size) for p, roi in zip(rows["path"], rois)]
    fig, axes = plt.subplots(3, len(rows), figsize=(2.2 * len(rows), 6.8), squeeze=False)
    for j in range(len(rows)):
        img = r["pred"][j].permute(1, 2, 0).clamp(0, 1).cpu().numpy()
        m = r["mask"][j, 0].cpu().numpy()[..., None]
        for i, (im, title) in enumerate(((photos[j], str(rows["image_id"].iloc[j])), (img, "R-Net rendering"),
                                         (photos[j] * (1 - m) + img * m, "overlay"))):
            axes[i, j].imshow(np.clip(im, 0, 1))
            axes[i, j].set_title(title, fontsize=8)
            axes[i, j].axis("off")
    fig.tight_layout()
    if out is not None:
        save_figure(fig, out, dpi=100)
    return fig
