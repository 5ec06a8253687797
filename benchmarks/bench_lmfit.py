"""The landmark-fit options on the dev data: a landmark fit that keeps what its 68 points carry.

    FACELIB_KDEF=... FACELIB_ASSETS=... FACELIB_CACHE=... python benchmarks/bench_lmfit.py \\
        --stage diagnose|levers [--more] [--points] [--variant NAME=MODEL:JSON ...] [--splits 10] \\
        [--out reports/bench_lmfit]

Reads the cached tables of ``benchmarks/bench_person.py`` (3DDFA table, dlib targets, per-picture BFM and ICT
landmark fits: nothing is re-detected; a cache miss stops the run). Scores expression with logreg on the paper split
(``--splits`` repeats) and on unseen people (``--splits`` folds), on the inner *validation* side and on the test
side, and prints per input the mean ± std over splits and the paired difference to a reference input.

``diagnose``: where the expression information goes — the fits' reprojected 68 points against their targets,
α+β, β with the pose, the residual (target − fit), the landmark error per angle and region, accuracy per angle.
``levers``: the per-picture landmark fit refitted (same start, same targets, same iterations) with the options of
:meth:`facelib.fitting.fitter.Fitter.fit` — β regularisation weight, per-angle landmark weights
(:func:`facelib.fitting.losses.yaw_landmark_weights`), β sparsity (L1) — each scored paired against the plain refit
(batch 32; on a 32-picture check it matches the cached batch-8 ICT fit to max |Δβ| 5e-4); ``--points`` adds the
paired difference to the 68 target points, ``--more`` (diagnose) the 3-D model points and α alone. Each variant's
fit and scores are kept in ``--out`` under its name (delete them to refit after changing a variant's options).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from facelib.classify.experiment import run_task  # noqa: E402
from facelib.data import datasets  # noqa: E402
from facelib.face3d.cameras import crop_box, crop_to_image, image_to_crop, pose_yaw  # noqa: E402
from facelib.face3d.reconstruct import reconstruct_manifest  # noqa: E402
from facelib.fitting import person_fit as PF  # noqa: E402
from facelib.fitting.fitter import Fitter  # noqa: E402
from facelib.face3d.ict import load_model  # noqa: E402
from facelib.fitting.ict_fit import ICTFitter, fit_ict_table  # noqa: E402
from facelib.fitting.losses import deep3d_landmark_weights, yaw_landmark_weights  # noqa: E402
from facelib.fitting.table import fit_table  # noqa: E402

REGIONS = {"jaw": range(0, 17), "brows": range(17, 27), "nose": range(27, 36), "eyes": range(36, 48),
           "mouth": range(48, 68)}
LANDMARK_FIT_OPTIONS = (  # the variants measured for docs/bench_person.md "The landmark-fit options" (used when no --variant is given)
    'ict_refit=ict',
    'ict_wexp0.1=ict:{"reg_weights":{"w_exp":0.08}}',
    'ict_wexp10=ict:{"reg_weights":{"w_exp":8.0}}',
    'ict_wexp100=ict:{"reg_weights":{"w_exp":80.0}}',
    'ict_wid10=ict:{"reg_weights":{"w_id":10.0}}',
    'ict_wid0.1=ict:{"reg_weights":{"w_id":0.1}}',
    'ict_l1_3e-4=ict:{"weights":{"sparsity":3e-4}}',
    'ict_l1_1e-3=ict:{"weights":{"sparsity":1e-3}}',
    'ict_l1_3e-3=ict:{"weights":{"sparsity":3e-3}}',
    'ict_occ0=ict:{"occluded":0.0}',
    'ict_occ0_until60=ict:{"occluded":{"occluded":0.0,"until":60.0}}',
    'ict_occ0.25_until60=ict:{"occluded":{"occluded":0.25,"until":60.0}}',
    'ict_jaw_multipie=ict:{"jaw":"multipie"}',
    'bfm_refit=bfm',
    'bfm_wexp0.1=bfm:{"reg_weights":{"w_exp":0.08}}',
    'bfm_wexp10=bfm:{"reg_weights":{"w_exp":8.0}}',
    'bfm_wid10=bfm:{"reg_weights":{"w_id":10.0}}',
    'bfm_l1_1e-3=bfm:{"weights":{"sparsity":1e-3}}',
    'bfm_occ0_until60=bfm:{"occluded":{"occluded":0.0,"until":60.0}}',
    'ict_it600=ict:{"iterations":600}',
    'ict_wexp10_occ0=ict:{"reg_weights":{"w_exp":8.0},"occluded":0.0}',
    'ict_uniform=ict:{"uniform":true}',
    'ict_reg0.1=ict:{"weights":{"reg":3e-5}}',
    'bfm_it240=bfm:{"iterations":240}',
    'bfm_uniform=bfm:{"uniform":true}',
    'ict_reg0.1_it600=ict:{"weights":{"reg":3e-5},"iterations":600}',
    'ict_reg0.01=ict:{"weights":{"reg":3e-6}}',
    'ict_reg0.01_it600=ict:{"weights":{"reg":3e-6},"iterations":600}',
)
SIDES = ("validation", "test")
PROTOCOLS = ("paper", "subject_independent")


# ----------------------------------------------------------------------------------------------- data
def load_cached():
    """(raw 3DDFA table, dlib targets, BFM per-picture fit, ICT per-picture fit), all from the cache."""
    root = Path(os.environ["FACELIB_KDEF"])
    m = datasets.load("kdef", root, progress=False)
    raw = reconstruct_manifest(m, "tddfa", progress=False, limit=0)
    ok = raw["status"] == "ok"
    if raw.loc[ok, "alpha"].isna().any():
        raise SystemExit("3DDFA table not cached")
    targets = PF.target_table(raw)
    bfm = fit_table(raw, "landmarks", progress=False, limit=0)
    ict = fit_ict_table(raw, "landmarks", progress=False, limit=0)
    for name, t in (("bfm", bfm), ("ict", ict)):
        if (t["status"] == "ok").sum() != ok.sum():
            raise SystemExit(f"{name} per-picture fit not cached")
    return raw, targets, bfm, ict


def with_features(table: pd.DataFrame, X: np.ndarray, backend: str) -> pd.DataFrame:
    """``table`` whose ``ok`` rows' ``beta`` column holds the rows of ``X`` (any feature vector)."""
    t = table.copy()
    ok = t["status"] == "ok"
    t["beta"] = None
    t["beta"] = t["beta"].astype(object)
    t.loc[ok, "beta"] = pd.Series([r.tolist() for r in np.asarray(X, np.float32)], index=t.index[ok], dtype=object)
    t["backend"] = backend
    return t


def stack(col) -> np.ndarray:
    return np.stack([np.asarray(v, np.float32) for v in col])


def points(t: pd.DataFrame, col: str = "landmarks") -> np.ndarray:
    """(n, 68, 2) image pixels of the ok rows (136 = x0..x67, y0..y67)."""
    lm = stack(t.loc[t["status"] == "ok", col])
    return np.stack([lm[:, :68], lm[:, 68:]], -1)


def normalise(pts: np.ndarray) -> np.ndarray:
    p = pts - pts.mean(1, keepdims=True)
    return p / np.sqrt((p ** 2).sum(-1).mean(1))[:, None, None]


# ----------------------------------------------------------------------------------------------- scoring
def score(table: pd.DataFrame, splits: int, input: str = "beta") -> dict:
    """{(side, protocol): {"acc": per-split accuracies, "angle": per-angle accuracy}} (logreg, seed 0)."""
    out = {}
    for side in SIDES:
        for proto in PROTOCOLS:
            r = run_task(table, "expression", proto, input, "logreg", n_folds=splits, keep_predictions=False,
                         evaluate=side)
            out[(side, proto)] = {"acc": np.asarray(r["fold_accuracies"], float),
                                  "angle": dict(r["per_angle_accuracy"])}
    return out


def cached_score(path: Path, table: pd.DataFrame, splits: int) -> dict:
    """:func:`score`, kept as JSON next to the cached fit (a rerun with more variants re-scores only those)."""
    if path.exists():
        d = json.loads(path.read_text())
        if d["splits"] == splits:
            return {tuple(k.split("|")): {"acc": np.asarray(v["acc"]), "angle": v["angle"]} for k, v in d["s"].items()}
    s = score(table, splits)
    path.write_text(json.dumps({"splits": splits, "s": {"|".join(k): {"acc": v["acc"].tolist(), "angle": v["angle"]}
                                                        for k, v in s.items()}}))
    return s


def report(scores: dict, refs: dict, title: str) -> list[dict]:
    """Print mean ± std and the paired Δ to each input's reference; returns the rows."""
    rows = []
    for side in SIDES:
        for proto in PROTOCOLS:
            print(f"\n== {title} / {side} / {proto}: mean ± std over splits; Δ paired to the reference", flush=True)
            for name, s in scores.items():
                a = 100 * s[(side, proto)]["acc"]
                ref = refs.get(name)
                d = a - 100 * scores[ref][(side, proto)]["acc"] if ref else np.zeros_like(a)
                ang = " ".join(f"{k}:{100 * v:.0f}" for k, v in s[(side, proto)]["angle"].items())
                print(f"  {name:28s} {a.mean():5.1f} ± {a.std(ddof=1):4.1f}   Δ {d.mean():+5.1f} ± "
                      f"{d.std(ddof=1):4.1f} vs {ref or '-':12s} ({int((d > 0).sum())}/{len(d)} better)  [{ang}]",
                      flush=True)
                rows.append({"input": name, "side": side, "protocol": proto, "mean": a.mean(),
                             "std": a.std(ddof=1), "ref": ref, "d_mean": d.mean(), "d_std": d.std(ddof=1),
                             "better": int((d > 0).sum()), "n": len(d), "per_angle": s[(side, proto)]["angle"]})
    return rows


# ----------------------------------------------------------------------------------------------- diagnose
def residual_table(raw, targets, fits: dict) -> pd.DataFrame:
    """Mean landmark error (image px, and % of the target's RMS radius) per model, angle and region."""
    ok = raw["status"] == "ok"
    tgt = PF._targets_of(targets, raw.loc[ok, "sha256"])
    radius = np.sqrt(((tgt - tgt.mean(1, keepdims=True)) ** 2).sum(-1).mean(1))
    src = targets.set_index("sha256")["source"].reindex(raw.loc[ok, "sha256"]).to_numpy()
    rows = []
    for name, t in fits.items():
        err = np.linalg.norm(points(t) - tgt, axis=-1)  # (n, 68)
        for ang in sorted(raw.loc[ok, "angle"].unique()):
            sel = (raw.loc[ok, "angle"] == ang).to_numpy()
            rec = {"model": name, "angle": ang, "n": int(sel.sum()), "dlib %": 100 * np.mean(src[sel] == "dlib"),
                   "all px": err[sel].mean(), "all %r": 100 * (err[sel] / radius[sel, None]).mean()}
            rec.update({f"{k} %r": 100 * (err[sel][:, list(v)] / radius[sel, None]).mean() for k, v in REGIONS.items()})
            rows.append(rec)
    return pd.DataFrame(rows)


def diagnose(args, raw, targets, bfm, ict):
    ok = raw["status"] == "ok"
    tgt = PF._targets_of(targets, raw.loc[ok, "sha256"])
    res = residual_table(raw, targets, {"bfm": bfm, "ict": ict})
    pd.set_option("display.width", 250)
    print("landmark error of the fits against their 68 targets (mean; px and % of the target's RMS radius):")
    print(res.round(2).to_string(index=False), flush=True)
    feats = {
        "pts_norm (targets)": with_features(raw, normalise(tgt).transpose(0, 2, 1).reshape(len(tgt), -1), "pts"),
        "bfm β": bfm, "ict β": ict,
        "bfm reprojected 68 norm": with_features(raw, normalise(points(bfm)).transpose(0, 2, 1).reshape(
            len(tgt), -1), "bfm_lm"),
        "ict reprojected 68 norm": with_features(raw, normalise(points(ict)).transpose(0, 2, 1).reshape(
            len(tgt), -1), "ict_lm"),
        "ict residual (tgt−fit)/r": with_features(raw, ((tgt - points(ict)) / np.sqrt(
            ((tgt - tgt.mean(1, keepdims=True)) ** 2).sum(-1).mean(1))[:, None, None]).transpose(0, 2, 1).reshape(
            len(tgt), -1), "ict_res"),
        "ict α+β": with_features(raw, np.concatenate([stack(ict.loc[ok, "alpha"]), stack(ict.loc[ok, "beta"])], 1),
                                 "ict_ab"),
        "ict β+pose": with_features(raw, np.concatenate([stack(ict.loc[ok, "beta"]), _rot(ict)], 1), "ict_bp"),
        "bfm α+β": with_features(raw, np.concatenate([stack(bfm.loc[ok, "alpha"]), stack(bfm.loc[ok, "beta"])], 1),
                                 "bfm_ab"),
    }
    if args.more:  # where the fitted shape keeps it: the 68 model points in 3-D without the pose, and their parts
        for name, t in (("ict", ict), ("bfm", bfm)):
            kp = (ICTFitter().fitter if name == "ict" else Fitter()).kp
            a, b = (torch.from_numpy(stack(t.loc[ok, c])) for c in ("alpha", "beta"))
            with torch.no_grad():
                full, no_b, no_a = kp.shape(a, b), kp.shape(a, torch.zeros_like(b)), kp.shape(torch.zeros_like(a), b)
                mean = kp.shape(torch.zeros_like(a[:1]), torch.zeros_like(b[:1]))
            flat = lambda v: v.reshape(len(v), -1).numpy()  # noqa: E731
            feats[f"{name} 3-D 68 (α, β), no pose"] = with_features(raw, flat(full), f"{name}_3d")
            feats[f"{name} 3-D 68 from α only"] = with_features(raw, flat(no_b - mean), f"{name}_3da")
            feats[f"{name} 3-D 68 from β only"] = with_features(raw, flat(no_a - mean), f"{name}_3db")
            feats[f"{name} α alone"] = with_features(raw, a.numpy(), f"{name}_a")
        for k in list(feats)[:9]:
            feats.pop(k)
        feats["pts_norm (targets)"] = with_features(raw, normalise(tgt).transpose(0, 2, 1).reshape(len(tgt), -1),
                                                    "pts")
    refs = {k: "pts_norm (targets)" for k in feats}
    refs["pts_norm (targets)"] = None
    scores = {}
    for name, t in feats.items():
        t0 = time.perf_counter()
        scores[name] = score(t, args.splits)
        print(f"  scored {name} ({time.perf_counter() - t0:.0f} s)", flush=True)
    rows = report(scores, refs, "diagnose")
    return res, rows


def _rot(t: pd.DataFrame) -> np.ndarray:
    P = stack(t.loc[t["status"] == "ok", "pose"]).reshape(-1, 3, 4)[:, :, :3]
    return (P / np.linalg.norm(P, axis=2, keepdims=True)).reshape(len(P), -1)


# ----------------------------------------------------------------------------------------------- levers
def refit(model: str, raw, targets, batch_size: int, **fit_options) -> pd.DataFrame:
    """The per-picture landmark fit again from the same start (BFM: the 3DDFA coefficients, 60 it.; ICT: the neutral
    face at the 3DDFA pose, 150 it.) to the cached targets, with ``fit_options`` for ``Fitter.fit``."""
    ok = raw[raw["status"] == "ok"]
    rois = np.stack([crop_box(b) for b in ok["box"]]).astype(np.float32)
    tgt = PF._targets_of(targets, ok["sha256"])
    pose12 = stack(ok["pose"])
    opts = dict(fit_options)
    jaw, occluded, uniform = opts.pop("jaw", None), opts.pop("occluded", None), opts.pop("uniform", False)
    if model == "ict":
        icf = ICTFitter()
        if jaw:  # the ICT model with another jawline definition (facelib.face3d.ict.landmark_ids)
            icf.fitter = Fitter(load_model(jaw=jaw))
        fitter, iters, init = icf.fitter, 150, icf.initial(pose12)
    else:
        fitter, iters = Fitter(), 60
        init = {k: stack(ok[k]) for k in ("alpha", "beta", "pose")}
    iters = int(opts.pop("iterations", iters))
    lmw = None if occluded is None else yaw_landmark_weights(np.degrees(pose_yaw(pose12)), **(
        occluded if isinstance(occluded, dict) else {"occluded": occluded}))
    if uniform:  # every point weight 1 (Deep3D's 20× on nose and inner mouth undone)
        lmw = (np.ones((len(ok), 68), np.float32) if lmw is None else lmw) / deep3d_landmark_weights().numpy()
    out = {k: [] for k in ("alpha", "beta", "pose", "landmarks")}
    secs = 0.0
    for s in range(0, len(ok), batch_size):
        sl = slice(s, s + batch_size)
        if lmw is not None:
            opts["landmark_weights"] = lmw[sl]
        r = fitter.fit({k: v[sl] for k, v in init.items()}, rois[sl], image_to_crop(tgt[sl], rois[sl], 160),
                       mode="landmarks", iterations=iters, **opts)
        secs += r.seconds
        lm = crop_to_image(r.landmarks, rois[sl], 160)
        out["alpha"].append(r.alpha)
        out["beta"].append(r.beta)
        out["pose"].append(r.pose)
        out["landmarks"].append(np.concatenate([lm[:, :, 0], lm[:, :, 1]], 1))
    t = raw.copy()
    okm = t["status"] == "ok"
    for k, v in out.items():
        t[k] = t[k].astype(object)
        t.loc[okm, k] = pd.Series([r.tolist() for r in np.concatenate(v)], index=t.index[okm], dtype=object)
    t["backend"] = model
    t.attrs["seconds_per_picture"] = secs / len(ok)
    return t


def parse_variant(spec: str) -> tuple[str, str, dict]:
    """``name=model:json-options``, e.g. ``ict_l1=ict:{"weights":{"sparsity":1e-3}}``; besides ``Fitter.fit``'s
    options: ``occluded`` (a number or :func:`yaw_landmark_weights` keywords) and ``jaw`` (ICT's jawline)."""
    name, rest = spec.split("=", 1)
    model, _, opts = rest.partition(":")
    return name, model, json.loads(opts) if opts else {}


def levers(args, raw, targets, bfm, ict):
    ok = raw["status"] == "ok"
    tgt = PF._targets_of(targets, raw.loc[ok, "sha256"])
    scores, refs, tables, secs = {}, {}, {}, {}
    base = {"bfm": "bfm_refit", "ict": "ict_refit"}
    variants = [parse_variant(v) for v in (args.variant or LANDMARK_FIT_OPTIONS)]
    for name, model, opts in variants:
        cache = Path(args.out) / f"{name}.parquet"
        t0 = time.perf_counter()
        if cache.exists():
            t = pd.read_parquet(cache)
        else:
            t = refit(model, raw, targets, args.batch_size, **opts)
            t[["sha256", "alpha", "beta", "pose", "landmarks"]].assign(
                seconds_per_picture=t.attrs["seconds_per_picture"]).to_parquet(cache)
        if "seconds_per_picture" in t.columns:  # cached: merge back into the raw table
            sp = float(t["seconds_per_picture"].iloc[0])
            t = _merge(raw, t, model)
            t.attrs["seconds_per_picture"] = sp
        tables[name] = t
        secs[name] = t.attrs["seconds_per_picture"]
        print(f"  {name}: {model} {opts} fitted in {time.perf_counter() - t0:.1f} s "
              f"({secs[name]:.4f} s/picture)", flush=True)
        scores[name] = cached_score(Path(args.out) / f"{name}.scores.json", t, args.splits)
        refs[name] = base[model] if name != base[model] else None
        b = stack(t.loc[ok, "beta"])
        err = np.linalg.norm(points(t) - tgt, axis=-1).mean(1)
        print(f"    β: mean {b.mean():.3f}, |β|>0.01 {100 * (np.abs(b) > 0.01).mean():.1f} %, "
              f"lm error {err.mean():.2f} px", flush=True)
    if args.points:
        scores["pts_norm (targets)"] = cached_score(Path(args.out) / "pts_norm.scores.json", with_features(
            raw, normalise(tgt).transpose(0, 2, 1).reshape(len(tgt), -1), "pts"), args.splits)
        refs["pts_norm (targets)"] = None
    rows = report(scores, refs, "levers")
    if args.points:  # the target of these options: β at least as good as the 68 points it is fitted to
        rows += report(scores, {k: "pts_norm (targets)" for k in scores if k != "pts_norm (targets)"},
                       "levers vs the 68 target points")
    return rows, secs


def _merge(raw, cached, model):
    t = raw.copy()
    by = cached.set_index("sha256")
    okm = t["status"] == "ok"
    for k in ("alpha", "beta", "pose", "landmarks"):
        t[k] = t[k].astype(object)
        t.loc[okm, k] = pd.Series([np.asarray(v, np.float32).tolist() for v in by[k].reindex(t.loc[okm, "sha256"])],
                                  index=t.index[okm], dtype=object)
    t["backend"] = model
    return t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stage", choices=["diagnose", "levers"], required=True)
    ap.add_argument("--splits", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32, help="refit batch (32 ≈ 8: max |Δβ| 5e-4, 4x faster)")
    ap.add_argument("--variant", action="append", default=[],
                    help="name=model:json fit options (levers); default: the LANDMARK_FIT_OPTIONS list")
    ap.add_argument("--points", action="store_true", help="levers: score the 68 target points too")
    ap.add_argument("--more", action="store_true", help="diagnose: the 3-D model points and α alone instead")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "reports" / "bench_lmfit"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    raw, targets, bfm, ict = load_cached()
    print(f"loaded cached tables in {time.perf_counter() - t0:.1f} s: {int((raw['status'] == 'ok').sum())} pictures",
          flush=True)
    if args.stage == "diagnose":
        res, rows = diagnose(args, raw, targets, bfm, ict)
        res.to_csv(Path(args.out) / f"residuals{'_more' if args.more else ''}.csv", index=False)
    else:
        rows, secs = levers(args, raw, targets, bfm, ict)
        print("seconds per picture:", {k: round(v, 4) for k, v in secs.items()})
    pd.DataFrame(rows).to_json(Path(args.out) / f"{args.stage}{'_more' if args.more else ''}.json",
                               orient="records", indent=1)
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
