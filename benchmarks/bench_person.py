"""The person-consistent β and the set fit on the dev data: fits that use who-is-who (never an expression label).

    FACELIB_KDEF=... FACELIB_ASSETS=... FACELIB_CACHE=... python benchmarks/bench_person.py \\
        [--folds 3] [--unseen-folds 5] [--max-sets 150] [--evaluate test|validation] [--out reports/bench_person]

Prints logistic-regression accuracy (mean ± std over the protocol's splits: the paper's expression split is 3
*repeats* of a random picture split, unseen people 5 *folds* of people; identity 3 repeats) for:

expression (input β; two protocols: ``paper`` = same people, ``subject_independent`` = unseen people)
    raw 3DDFA β; the per-picture BFM landmark fit (``tddfa+fit_landmarks``); the person-consistent BFM fit
    (``tddfa+fit_person``: α = leave-one-out mean of the person's per-picture α, β + pose refitted); ICT per
    picture (``ict``) and person-consistent (``ict+fit_person``); the 68 points the fits are fitted to (dlib placed by
    HOG / the table's where HOG fails), raw image pixels and normalised (centred, RMS radius 1); the table's own
    3DDFA 68 points; and the cheap person-grouped baseline "β minus the person's leave-one-out mean β" (no refit).
    Every person-grouped row uses the test person's *other* pictures (of other expressions) for identity — on
    unseen people too; flagged ``person_grouped``.
identity (paper's protocol, k = 3, input α)
    per-picture BFM landmark fit + mean of the 3 α's, against one set fit per 3-set (shared α, per-picture β and
    pose, :class:`facelib.fitting.person_fit.SetFitAggregator`); the raw 3DDFA mean beside.
and the seconds per picture of each fit. Fits are cached under FACELIB_CACHE (a rerun only re-scores).
"""
from __future__ import annotations

import argparse
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

from facelib.classify.experiment import _task_table, run_task  # noqa: E402
from facelib.data import datasets  # noqa: E402
from facelib.face3d.reconstruct import reconstruct_manifest  # noqa: E402
from facelib.fitting import person_fit as PF  # noqa: E402
from facelib.fitting.fitter import Fitter  # noqa: E402
from facelib.fitting.ict_fit import ICTFitter, fit_ict_table  # noqa: E402
from facelib.fitting.table import fit_table  # noqa: E402


def _kdef(people: int | None = None) -> pd.DataFrame:
    root = Path(os.environ.get("FACELIB_KDEF") or ROOT.parent / "shared" / "data" / "kdef_dev" / "KDEF")
    m = datasets.load("kdef", root, progress=False)
    if people:  # a smoke run on the first few people
        m = m[m["subject"].isin(sorted(m["subject"].dropna().unique())[:people])].reset_index(drop=True)
    return reconstruct_manifest(m, "tddfa", progress=False)


def _secs(t: pd.DataFrame) -> float:
    ok = t[t["status"] == "ok"]
    return float(np.nanmean(pd.to_numeric(ok["fit_seconds"], errors="coerce")))


def _cell(t, task, protocol, inp, folds, evaluate, **kw) -> dict:
    r = run_task(t, task, protocol, inp, "logreg", n_folds=folds, keep_predictions=False, evaluate=evaluate, **kw)
    return {"accuracy": r["accuracy_mean"], "std": r["accuracy_std"], "splits": f"{r['n_folds']} {r['split_kind']}",
            "person_grouped": bool(r["person_grouped"])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--folds", type=int, default=3, help="repeats of the paper's expression / identity splits")
    ap.add_argument("--unseen-folds", type=int, default=5, help="folds of people (unseen-people expression)")
    ap.add_argument("--max-sets", type=int, default=150, help="identity 3-sets per person and side")
    ap.add_argument("--evaluate", default="test", choices=["test", "validation"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-identity", action="store_true")
    ap.add_argument("--people", type=int, default=None, help="smoke run: only the first N people")
    ap.add_argument("--out", default=str(ROOT / "reports" / "bench_person"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    timing = {}

    t0 = time.perf_counter()
    raw = _kdef(args.people)
    timing["tddfa table"] = time.perf_counter() - t0
    n_ok = int((raw["status"] == "ok").sum())
    print(f"KDEF dev: {len(raw)} pictures, {n_ok} ok, {raw['subject'].nunique()} people", flush=True)

    t0 = time.perf_counter()
    bfm = fit_table(raw, "landmarks", progress=False)
    timing["BFM per-picture fit"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ict = fit_ict_table(raw, "landmarks", progress=False)
    timing["ICT per-picture fit"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    targets = PF.target_table(raw)
    timing["targets (dlib)"] = time.perf_counter() - t0

    fitter = Fitter()
    t0 = time.perf_counter()
    bfm_p = PF.person_consistent_table(bfm, fitter, targets, iterations=60, batch_size=8)
    timing["BFM person-consistent fit"] = time.perf_counter() - t0
    icf = ICTFitter()
    t0 = time.perf_counter()
    ict_p = PF.person_consistent_table(ict, icf.fitter, targets, iterations=150, batch_size=8)
    timing["ICT person-consistent fit"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ict_p0 = PF.person_consistent_table(ict, icf.fitter, targets, iterations=150, start_beta="zero", batch_size=8,
                                        backend="ict+person_b0")
    timing["ICT person-consistent fit, β from 0"] = time.perf_counter() - t0
    for t in (bfm_p, ict_p, ict_p0):
        t.to_parquet(out / f"kdef_{t['backend'].iloc[0]}.parquet")

    variants = {
        "raw 3DDFA β (tddfa)": raw,
        "BFM per-picture fit β (tddfa+fit_landmarks)": bfm,
        "BFM person-consistent β (tddfa+fit_person) [pg]": bfm_p,
        "BFM per-picture β − person LOO mean β [pg]": PF.person_centred(bfm),
        "ICT per-picture β (ict)": ict,
        "ICT person-consistent β (ict+fit_person) [pg]": ict_p,
        "ICT person-consistent β, β from 0 [pg]": ict_p0,
        "ICT per-picture β − person LOO mean β [pg]": PF.person_centred(ict),
        "68 target points, image px": PF.points_table(raw, targets, normalise=False),
        "68 target points, normalised": PF.points_table(raw, targets, normalise=True),
        "68 3DDFA points (table), image px": PF.points_table(raw, None, normalise=False),
        "68 target points normalised − person LOO mean [pg]": PF.person_centred(
            PF.points_table(raw, targets, normalise=True)),
    }
    rows = []
    for label, t in variants.items():
        for proto, folds in (("paper", args.folds), ("subject_independent", args.unseen_folds)):
            t0 = time.perf_counter()
            c = _cell(t, "expression", proto, "beta", folds, args.evaluate)
            rows.append({"task": "expression", "protocol": proto, "input": label, **c,
                         "score_s": round(time.perf_counter() - t0, 1)})
            print(f"  {rows[-1]}", flush=True)
    if not args.skip_identity:
        kw = {"protocol_kwargs": {"max_sets": args.max_sets}}
        for label, t, agg in (("raw 3DDFA α, mean of 3", raw, None), ("BFM per-picture fit α, mean of 3", bfm, None)):
            rows.append({"task": "identity", "protocol": "paper k=3", "input": label,
                         **_cell(t, "identity", "paper", "alpha", args.folds, args.evaluate, **kw)})
            print(f"  {rows[-1]}", flush=True)
        agg = PF.SetFitAggregator(fitter, _task_table(bfm, "identity"), raw, targets, iterations=60)
        t0 = time.perf_counter()
        rows.append({"task": "identity", "protocol": "paper k=3", "input": "BFM set fit α (one α per 3-set)",
                     **_cell(bfm, "identity", "paper", "alpha", args.folds, args.evaluate, aggregator=agg, **kw)})
        print(f"  {rows[-1]}", flush=True)
        timing["set fits (scoring included)"] = time.perf_counter() - t0
        if agg.n_fitted:
            timing["set fit, s per picture"] = agg.seconds / (3 * agg.n_fitted)
            print(f"  set fits: {agg.n_fitted} sets fitted in {agg.seconds:.1f} s", flush=True)
    res = pd.DataFrame(rows)
    res["accuracy"] = res["accuracy"].map(lambda v: f"{100 * v:.1f}")
    res["std"] = res["std"].map(lambda v: "" if v is None or pd.isna(v) else f"{100 * v:.1f}")
    pd.set_option("display.width", 250)
    pd.set_option("display.max_colwidth", 60)
    print(f"\nlogreg accuracy (%) scored on the {args.evaluate} side; [pg] = person_grouped")
    print(res.to_string(index=False))
    res.to_csv(out / f"accuracy_{args.evaluate}.csv", index=False)
    print("\nseconds per picture (mean of the fits' fit_seconds; cached fits keep their first timing):")
    for label, t in (("BFM per-picture", bfm), ("BFM person-consistent", bfm_p), ("ICT per-picture", ict),
                     ("ICT person-consistent", ict_p)):
        print(f"  {label}: {_secs(t):.4f}")
    print("wall clock of each stage this run (s):")
    for k, v in timing.items():
        print(f"  {k}: {v:.4f}" if "per picture" in k else f"  {k}: {v:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
