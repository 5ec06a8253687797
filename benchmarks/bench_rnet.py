"""R-Net / C-Net benchmarks that print their figures (dev KDEF + FEI from FACELIB_KDEF / FACELIB_FEI / ../shared).

    python benchmarks/bench_rnet.py speed   [--limit 320] [--batch 32] [--threads 2] [--max-side 192] [--reduce 2]
    python benchmarks/bench_rnet.py train   [--steps 8] [--batch 16] [--size 120] [--vertices 8000] [--perceptual]
    python benchmarks/bench_rnet.py quality [--epochs 16] [--perceptual] [--targets dlib|table] [--cnet-steps 150]
                                            [--schedule cosine|constant] [--identity-weight 0]
                                            [--fit landmarks] [--fit full]
                                            [--model logreg] [--folds 3] [--out reports/bench_rnet]

speed    coding throughput of an R-Net (``rnet.RNetCoder``), batched, detection included: JPEG decoded at 1/2
         resolution → FaceBoxes at 192 px → 3DDFA crop → R-Net forward + decoding; pictures/s, and the fast path's
         boxes against the study's (full decode, detection at 384 px).
train    seconds per picture per training step (forward, render, hybrid loss, backward, Adam) on the dev pictures,
         and the extrapolation to one cross-fit part of a full-KDEF-sized study (4900 KDEF + 400 FEI pictures, K = 2:
         2650 training pictures per part): seconds per epoch and the epochs that fit in 15 minutes.
quality  choosing R-Net settings on the dev data: tddfa coefficients (raw), optionally per-picture fitting
         (``--fit landmarks``; ``--fit full``: about 0.6 s per picture), and the cross-fitted R-Net with each
         aggregator (mean, median, cnet) on the paper's identity, expression and gender protocols (``--model``,
         ``--folds``). Each setting is scored on the *inner validation side* of every split (``run_task(...,
         evaluate="validation")``: pictures — for gender people — carved from the split's training side), never on
         a split's test side, so settings chosen from these figures are not tuned on Table 1's test folds. (Caveat:
         with repeated random splits a validation picture of one repeat is a test picture of another; the figures
         are a selection criterion, not a result.) Also prints the cross-fit part probe
         (``crossfit.part_probe``, chance 50 %) and R-Net training time per part, and writes coded tables, a
         reconstruction figure and the C-Net figure to --out. ``--identity-weight W`` > 0 trains with
         person-grouped batches and the within-person α spread term (``facelib.fitting.identity``; training
         people's labels only) and prints the term's mean over the first and last epoch and, as a diagnostic,
         the within-person share of the coded α's spread.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from facelib.classify.experiment import run_task  # noqa: E402
from facelib.data import datasets  # noqa: E402
from facelib.face3d import rnet  # noqa: E402
from facelib.face3d.detect import FaceBoxesDetector, pick_face  # noqa: E402
from facelib.face3d.reconstruct import reconstruct_manifest  # noqa: E402
from facelib.fitting import cnet, crossfit  # noqa: E402
from facelib.fitting import rnet_train as T  # noqa: E402
from facelib.fitting.fitter import Fitter  # noqa: E402
from facelib.fitting.skin import skin_model_for_table  # noqa: E402
from facelib.fitting.table import dlib_embedder, fit_table  # noqa: E402

FULL_PART = 2650  # training pictures of one part, K = 2, full KDEF (4900) + FEI (400)


def _dir(var: str, rel: str) -> Path:
    v = os.environ.get(var)
    p = Path(v) if v else ROOT.parent / "shared" / rel
    if not p.exists():
        raise SystemExit(f"{var} not set and {p} absent")
    os.environ[var] = str(p)
    return p


def tables(progress: bool = False) -> dict[str, pd.DataFrame]:
    out = {}
    for name, var, rel in (("kdef", "FACELIB_KDEF", "data/kdef_dev/KDEF"), ("fei", "FACELIB_FEI", "data/fei")):
        m = datasets.load(name, _dir(var, rel), progress=progress)
        out[name] = reconstruct_manifest(m, "tddfa", progress=progress)
    return out


def bench_speed(args) -> None:
    kdef = _dir("FACELIB_KDEF", "data/kdef_dev/KDEF")
    paths = sorted(p for p in kdef.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:args.limit]
    net = rnet.build_rnet("mobilenet", 0)
    if args.weights:
        net, _ = rnet.load_saved_rnet(args.weights)
    coder = rnet.RNetCoder(net, max_side=args.max_side, reduce=args.reduce, batch_size=args.batch,
                           threads=args.threads)
    coder(paths[:8])  # warm-up
    t0 = time.perf_counter()
    out = coder(paths)
    wall = time.perf_counter() - t0
    n = len(paths)
    print(f"R-Net coding, {n} KDEF pictures (562×762): {n / wall:.1f} pictures/s ({1000 * wall / n:.2f} ms per "
          f"picture), batch {args.batch}, {torch.get_num_threads()} torch threads, {args.threads} decode threads, "
          f"decode 1/{args.reduce}, detection at {args.max_side} px; faces found {int(out['found'].sum())}/{n}")
    # the fast path's boxes against the study's reconstruction path (full decode, detection at 384 px)
    det = FaceBoxesDetector(max_side=384)
    sub = paths[::max(1, n // 64)]
    ref = [pick_face(d, im.shape)[0] for d, im in zip(det([cv2.imread(str(p)) for p in sub]),
                                                      [cv2.imread(str(p)) for p in sub])]
    ious = []
    for p, r in zip(sub, ref):
        b = out["box"][paths.index(p)]
        if r is None or not np.isfinite(b).all():
            continue
        ix = max(0, min(b[2], r[2]) - max(b[0], r[0]))
        iy = max(0, min(b[3], r[3]) - max(b[1], r[1]))
        inter = ix * iy
        ious.append(inter / ((b[2] - b[0]) * (b[3] - b[1]) + (r[2] - r[0]) * (r[3] - r[1]) - inter))
    print(f"  box IoU against full-resolution detection at 384 px: mean {np.mean(ious):.3f}, "
          f"min {np.min(ious):.3f} ({len(ious)} pictures)")
    print(f"  load average {os.getloadavg()[0]:.2f} (a busy machine slows every figure)")


def bench_train(args) -> None:
    tabs = tables()
    ok = pd.concat([t[t["status"] == "ok"] for t in tabs.values()]).sample(frac=1, random_state=0)
    ok = ok.iloc[:args.steps * args.batch]
    skin = skin_model_for_table(ok)
    emb = dlib_embedder() if args.perceptual else None
    comp = T.Composer(Fitter(skin_model=skin, image_size=args.size), embedder=emb, mesh_vertices=args.vertices)
    t0 = time.perf_counter()
    data = T.prepare_data(ok, args.size, "table", skin, emb)
    prep = (time.perf_counter() - t0) / len(data)
    net = rnet.build_rnet("mobilenet", 0)
    T.train_rnet(net, comp, data.subset(np.arange(args.batch)), epochs=1, batch_size=args.batch)  # warm-up
    h = T.train_rnet(net, comp, data, epochs=1, batch_size=args.batch)
    per = h["seconds"] / len(data)
    epoch = per * FULL_PART
    print(f"R-Net training step: {1000 * per:.1f} ms per picture (batch {args.batch}, crop {args.size}², "
          f"{args.vertices or 'full'} mesh vertices, perceptual {'on' if emb else 'off'}, "
          f"{torch.get_num_threads()} threads); data preparation {1000 * prep:.1f} ms per picture")
    print(f"full-KDEF-sized part ({FULL_PART} training pictures): {epoch:.0f} s per epoch → "
          f"{int(900 // epoch)} epochs in 15 min (+ {prep * FULL_PART:.0f} s data preparation, once)")
    print(f"  load average {os.getloadavg()[0]:.2f}")


def bench_quality(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tabs = tables(progress=True)
    variants = {"tddfa": tabs}
    for mode in args.fit or []:
        t0 = time.perf_counter()
        variants[f"tddfa+fit_{mode}"] = {n: fit_table(t, mode, texture=args.texture if mode == "full" else None)
                                        for n, t in tabs.items()}
        print(f"per-picture {mode} fit: {time.perf_counter() - t0:.0f} s")
    settings = dict(epochs=args.epochs, perceptual=args.perceptual, targets=args.targets,
                    image_size=args.size, max_seconds=args.max_seconds, cnet_steps=args.cnet_steps,
                    schedule=args.schedule, identity_weight=args.identity_weight)
    log: list = []
    t0 = time.perf_counter()
    coded = crossfit.rnet_tables(tabs, k=2, settings=settings, log=log)
    print(f"R-Net + C-Net cross-fit: {time.perf_counter() - t0:.0f} s")
    for r in log:
        print(f"  part {r['part']}: {r['n_train']} training pictures, {r.get('epochs_done')} epochs in "
              f"{r.get('seconds', 0):.0f} s, hybrid loss {r.get('loss_before', {}).get('total', float('nan')):.4f}"
              f" → {r.get('loss_after', {}).get('total', float('nan')):.4f}; C-Net {r.get('cnet_seconds', 0):.0f} s"
              f"{' (cached)' if r.get('cached') else ''}")
        if "identity_first" in r:
            print(f"    identity term (weighted, mean per step): first epoch {r['identity_first']:.4f}, last epoch "
                  f"{r['identity_last']:.4f}")
    variants["tddfa+rnet"] = coded
    for n, t in coded.items():
        t.to_parquet(out / f"{n}_tddfa+rnet.parquet")
    crossfit.reconstruction_figure(coded["kdef"], out=out / "rnet_reconstructions.png")
    cnet.confidence_figure(coded["kdef"][coded["kdef"]["status"] == "ok"], out=out / "cnet_confidence.png")
    for n, t in coded.items():
        print(f"  part probe {n}: {crossfit.part_probe(t)['accuracy']:.3f} raw, "
              f"{crossfit.part_probe(t, center=True)['accuracy']:.3f} after fit-split part centering (chance 0.5)")
        w, tot = alpha_spread(t)
        print(f"  coded α {n} (whitened, diagnostic over all coded people): within-person spread {w:.3f} of "
              f"total {tot:.3f} ({w / tot:.1%})")
    res = quality_rows(variants, args.model, args.folds, args.max_sets)
    print("inner-validation accuracy (never a split's test side):")
    print(res.to_string(index=False))
    res.to_csv(out / "quality.csv", index=False)
    (out / "crossfit_log.json").write_text(json.dumps(log, indent=1, default=str))


def alpha_spread(table: pd.DataFrame) -> tuple[float, float]:
    """(mean over people of the mean squared distance of their whitened α from their mean, the same about the
    overall mean) of a coded table's ok rows."""
    from facelib.face3d.tddfa import coefficient_sigma

    ok = table[(table["status"] == "ok") & table["alpha"].notna()]
    A = np.stack([np.asarray(a, np.float64) for a in ok["alpha"]]) / coefficient_sigma()[0]
    s = ok["subject"].astype(str).to_numpy()
    within = np.mean([((A[s == p] - A[s == p].mean(0)) ** 2).sum(1).mean() for p in np.unique(s)])
    return float(within), float(((A - A.mean(0)) ** 2).sum(1).mean())


def quality_rows(variants: dict, model: str = "logreg", folds: int = 3, max_sets: int | None = 150,
                 evaluate: str = "validation") -> pd.DataFrame:
    """One row per coefficient variant × task (× aggregator for R-Net identity): the accuracy each setting gets on
    the inner validation side of every split of the paper's protocols (``evaluate="validation"``: Table 1's test
    folds are never scored)."""
    rows = []
    for label, tb in variants.items():
        for ds, task, inp in (("kdef", "identity", "alpha"), ("kdef", "expression", "beta"),
                              ("fei", "gender", "alpha")):
            if ds not in tb:
                continue
            aggs = ("mean", "median", "cnet") if task == "identity" and label.endswith("rnet") else ("mean",)
            for agg in aggs:
                kw = {"max_sets": max_sets} if task == "identity" else {}
                r = run_task(tb[ds], task, "paper", inp, model, n_folds=folds,
                             aggregator=None if agg == "mean" else agg, protocol_kwargs=kw or None,
                             keep_predictions=False, evaluate=evaluate)
                rows.append({"coefficients": label, "task": task, "aggregator": r.get("aggregator"),
                             "evaluated_on": r.get("evaluated_on"), "accuracy": round(r["accuracy_mean"], 4),
                             "std": None if r["accuracy_std"] is None else round(r["accuracy_std"], 4)})
    return pd.DataFrame(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["speed", "train", "quality"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--limit", type=int, default=320)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--max-side", type=int, default=192, help="speed: detection scale")
    p.add_argument("--reduce", type=int, default=2, help="speed: JPEG decode at 1/reduce (1, 2, 4)")
    p.add_argument("--weights", default=None, help="speed: a trained R-Net (.pt from the cache)")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--size", type=int, default=120)
    p.add_argument("--vertices", type=int, default=8000)
    p.add_argument("--perceptual", action="store_true")
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--max-seconds", type=float, default=None)
    p.add_argument("--targets", default="dlib", choices=["table", "dlib"])
    p.add_argument("--schedule", default="cosine", choices=["constant", "cosine"])
    p.add_argument("--cnet-steps", type=int, default=150)
    p.add_argument("--identity-weight", type=float, default=0.0,
                   help="quality: weight of R-Net's within-person α spread term (0: off)")
    p.add_argument("--fit", action="append", choices=["landmarks", "full"],
                   help="quality: also per-picture fitting in this mode (repeatable)")
    p.add_argument("--texture", default=None, help="quality: texture basis .npz for --fit full")
    p.add_argument("--model", default="logreg")
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--max-sets", type=int, default=150)
    p.add_argument("--out", default=str(ROOT / "reports" / "bench_rnet"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    {"speed": bench_speed, "train": bench_train, "quality": bench_quality}[args.what](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
