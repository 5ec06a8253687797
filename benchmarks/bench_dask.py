"""Notebooks 02 and 04 on a Dask cluster vs in this process: wall time, the same results, what N workers would give.

Notebook 02 (``--notebooks 02``): its per-picture stages — reconstruction with the run's backend, the landmark fits
the run's profile asks for (``fit_modes`` / ``ict_modes`` landmarks), the dlib targets and the person-consistent
refits (``person_fits``) — once per executor, each from a cold cache of its own (a temporary folder: nothing is
reused), on the run's manifests. Every batch's duration is measured in the local run; the coefficient tables of
the two executors are compared (bit for bit, else the largest difference relative to the column's scale). The rest
of notebook 02 (R-Net / C-Net training, texture bases, figures) runs on the notebook's machine: its share is read
from the run's executed notebook 02 (papermill's cell timings), and bounds the whole notebook's speed-up.

Notebook 04 (``--notebooks 04``):

Runs notebook 04's experiment list (the plan of an existing run folder, with its parameters) once per executor —
``local`` (the study's default) and ``dask:2`` (a LocalCluster of two single-threaded worker processes) — writes
each run's Table 1, compares them byte for byte, and prints the wall times. Every split's duration is measured in the
local run, so the arithmetic for N workers is printed too::

    T(N) ≈ S + W / N + o · n / N,   bounded below by S + max(d)

``S``: the serial part (reading the tables, preparing each cell — picture features included — finishing and saving
the results: here, never on a worker), ``W = Σ d``: the splits' work, ``n`` splits, ``o``: the per-task overhead the
Dask run measured against its own prediction.

    flock /work/heavy.lock .venv/bin/python benchmarks/bench_dask.py --run reports/runs/ci [--executors local dask:2]
        [--notebooks 02 04] [--limit 200]

``--run``: a run folder notebooks 01–03 made (e.g. ``make reproduce PARAMS=notebooks/params/ci.yaml``). Exit code 1
when the Table 1 CSVs differ.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml  # noqa: E402

from facelib.classify import experiment as C  # noqa: E402
from facelib.classify import images  # noqa: E402
from facelib.classify import plan as study_plan  # noqa: E402
from facelib.classify.results import read_coeffs  # noqa: E402
from facelib.data.datasets import study_datasets  # noqa: E402
from facelib.executor import Recipe, make_executor  # noqa: E402
from facelib.face3d import reconstruct  # noqa: E402
from facelib.fitting import ict_fit, person_fit  # noqa: E402
from facelib.fitting import table as fit  # noqa: E402
from facelib.report import tables  # noqa: E402
from facelib.run import Run, project_path  # noqa: E402


def run_04(run: Run, p: dict, spec: str, results: Path, splits: list | None = None,
           prepares: list | None = None) -> float:
    """Notebook 04's results step with executor ``spec`` into ``results``, from cold in-memory caches (picture
    features, decoded pictures: each run computes them, as a fresh notebook would); returns the wall seconds (the
    cluster's start included). ``splits`` / ``prepares``: collect each split's / cell preparation's seconds (local
    runs only)."""
    real_split, real_prepare = C.run_split, C.prepare_cell

    def timed(fn, into):
        def call(*a, **kw):
            t0 = time.perf_counter()
            out = fn(*a, **kw)
            into.append(time.perf_counter() - t0)
            return out
        return call

    images._FEATURES.clear()
    images._CACHE.clear()
    t0 = time.perf_counter()
    coeffs = {name: [read_coeffs(f) for f in run.coefficient_variants(name)] for name in study_datasets(p["dataset"])}
    plan = study_plan.study_plan(models=p["models"], image_baseline=p["image_baseline"],
                                 rows=study_plan.rows_for(coeffs))
    if splits is not None:  # run_task looks them up at each call
        C.run_split, C.prepare_cell = timed(real_split, splits), timed(real_prepare, prepares)
    try:
        with make_executor(spec) as ex:
            study_plan.run_plan(coeffs, plan, results, n_folds=p["n_folds"], epochs=p["epochs"],
                                image_epochs=p["image_epochs"], image_size=p["image_size"], seed=p["seed"],
                                device=run.device(), batch_size=p["batch_size"],
                                identity_max_sets=p["identity_max_sets"], identity_session=p["identity_session"],
                                aggregators=p["aggregators"] or ["mean"], progress=True,
                                **({} if ex.local else {"executor": ex}))
    finally:
        C.run_split, C.prepare_cell = real_split, real_prepare
    return time.perf_counter() - t0


def run_02(run: Run, p: dict, spec: str, cache: Path, limit: int | None = None, batches: list | None = None
           ) -> tuple[float, dict, dict]:
    """Notebook 02's per-picture stages with executor ``spec`` and the cold cache ``cache``: (wall seconds, the
    cluster's start included; {stage: seconds}; {stage name: coefficient table}). ``batches`` collects each batch's
    seconds (local runs)."""
    real = reconstruct._reconstruct_batch, fit._fit_batch

    def timed(fn):
        def call(*a):
            t0 = time.perf_counter()
            out = fn(*a)
            batches.append(time.perf_counter() - t0)
            return out
        return call

    if batches is not None:
        reconstruct._reconstruct_batch, fit._fit_batch = timed(real[0]), timed(real[1])
    stages, out, dev, assets = {}, {}, run.device(), p.get("assets")
    t_start = time.perf_counter()
    try:
        with make_executor(spec) as ex:
            def stage(name, fn):
                t0 = time.perf_counter()
                out[name] = fn()
                stages[name.split(" ")[0]] = stages.get(name.split(" ")[0], 0.0) + time.perf_counter() - t0
                return out[name]

            for name in study_datasets(p["dataset"]):
                m = pd.read_parquet(run.manifest(name))
                m = m.iloc[:limit] if limit else m
                raw = stage(f"reconstruct {name}", lambda: reconstruct.reconstruct_manifest(
                    m, p["backend"], cache_dir=cache / "reconstruct", device=dev, assets_dir=assets, batch_size=32,
                    landmark_source=p.get("landmark_source") or "model", executor=ex))
                if "landmarks" in (p.get("fit_modes") or []) or "tddfa" in (p.get("person_fits") or []):
                    stage(f"fit_landmarks {name}", lambda: fit.fit_table(
                        raw, "landmarks", device=dev, assets_dir=assets, cache_dir=cache / "fitting", executor=ex))
                if p.get("ict_modes") or "ict" in (p.get("person_fits") or []):
                    lm = stage(f"ict_landmarks {name}", lambda: ict_fit.fit_ict_table(
                        raw, "landmarks", device=dev, assets_dir=assets, cache_dir=cache / "fitting", executor=ex))
                    if "full" in (p.get("ict_modes") or []):  # grey albedo + gain: the run's texture basis aside
                        try:
                            stage(f"ict_full {name}", lambda: ict_fit.fit_ict_table(
                                lm, "full", device=dev, assets_dir=assets, cache_dir=cache / "fitting",
                                executor=ex))
                        except ValueError as exc:  # e.g. a skin model without background pixels (tight crops)
                            print(f"[bench 02] ict_full {name}: not timed ({exc})", flush=True)
                values = p.get("person_fits") or []
                if values and person_fit.scored_on_beta(name, raw):
                    targets = stage(f"targets {name}", lambda: person_fit.target_table(
                        raw, "dlib", cache_dir=cache / "fitting", executor=ex))
                    for v in values:
                        base = out[f"{'ict' if v == 'ict' else 'fit'}_landmarks {name}"]
                        recipe = Recipe(f"bench-fitter-{v}", person_fit.ict_fitter if v == "ict" else
                                            person_fit.bfm_fitter, device=dev, assets_dir=assets)
                        stage(f"person_{v} {name}", lambda: person_fit.person_consistent_table(
                            base, recipe, targets, iterations=person_fit.PERSON_FITS[v][3], batch_size=8,
                            cache_dir=cache / "fitting", executor=ex))
    finally:
        reconstruct._reconstruct_batch, fit._fit_batch = real
    return time.perf_counter() - t_start, stages, out


def compare_tables(a: dict, b: dict) -> dict[str, str]:
    """Per table: "identical" (every coefficient bit for bit), else the largest |difference| over the column's
    largest |value|."""
    said = {}
    for name, ta in a.items():
        tb = b[name]
        if "target" in ta.columns:
            cols = ["target"]
        else:
            cols = [c for c in ("alpha", "beta", "pose", "landmarks") if c in ta.columns]
            ta, tb = ta[ta["status"] == "ok"], tb[tb["status"] == "ok"]
        worst = {}
        for c in cols:
            x = np.stack([np.asarray(v, np.float64) for v in ta[c]])
            y = np.stack([np.asarray(v, np.float64) for v in tb[c]])
            worst[c] = 0.0 if np.array_equal(x, y) else float(np.abs(x - y).max() / max(np.abs(x).max(), 1e-30))
        said[name] = "identical" if not any(worst.values()) else \
            "max |Δ| / scale " + ", ".join(f"{c} {v:.1e}" for c, v in worst.items())
    return said


def notebook_02_share(folder: Path) -> tuple[float, float] | None:
    """(notebook 02's seconds, of which its per-picture stages) from a run's executed notebook (papermill's
    cell durations); None when the run has none."""
    nb = next(iter(sorted(folder.rglob("02_*.ipynb"))), None)
    if nb is None:
        return None
    cells = [c for c in json.loads(nb.read_text())["cells"] if c.get("cell_type") == "code"]
    marks = ("reconstruct_manifest", "fit_table(", "ict_fit.study_variants", "person_fit.study_variants")
    total = per_picture = 0.0
    for c in cells:
        d = (c.get("metadata", {}).get("papermill") or {}).get("duration") or 0.0
        total += d
        per_picture += d if any(m in "".join(c["source"]) for m in marks) else 0.0
    return total, per_picture


def bench_02(run: Run, p: dict, folder: Path, executors: list[str], limit: int | None) -> bool:
    walls, stages, tabs, batches = {}, {}, {}, []
    for spec in executors:
        with tempfile.TemporaryDirectory(prefix="bench_dask_02_") as cache:
            local = spec == "local"
            walls[spec], stages[spec], tabs[spec] = run_02(run, p, spec, Path(cache), limit,
                                                           batches if local else None)
        print(f"[bench 02] {spec}: {walls[spec]:.1f} s wall (cold cache; " + ", ".join(
            f"{k} {v:.1f} s" for k, v in stages[spec].items()) + ")", flush=True)
    ref = executors[0]
    same = True
    for spec in executors[1:]:
        for name, said in compare_tables(tabs[ref], tabs[spec]).items():
            print(f"[bench 02] {name}: {spec} vs {ref}: {said}")
            same &= said == "identical"
    n_pics = {name: int((t["status"] == "ok").sum()) if "status" in t.columns else len(t)
              for name, t in tabs[ref].items()}
    for spec in executors:  # dask:1 is one single-threaded worker: the cost on one core
        for stage_name, secs in stages[spec].items():
            n = sum(v for k, v in n_pics.items() if k.split(" ")[0] == stage_name)
            if n:
                how = f"{torch.get_num_threads()} torch threads" if spec == "local" else \
                    f"{spec.split(':')[1] if ':' in spec else '?'} one-thread workers"
                print(f"[bench 02] {spec} {stage_name}: {secs / n * 1e3:.0f} ms per picture, wall ({n} pictures, "
                      f"{how})")
    if batches and "local" in walls:
        W, n, longest = sum(batches), len(batches), max(batches)
        S = max(walls["local"] - W, 0.0)
        print(f"[bench 02] local: {n} batches, work W = {W:.1f} s (longest {longest:.2f} s), serial S = {S:.1f} s "
              f"(model building, reading the tables, writing shards: {100 * S / walls['local']:.0f} %)")
        W1 = sum(stages["dask:1"].values()) if "dask:1" in stages else None  # the work on one core
        if W1:
            print(f"[bench 02] dask:1 (one single-threaded worker): the stages' work on one core W1 = {W1:.1f} s "
                  f"(the local run's torch threads already use several cores: W = {W:.1f} s)")
        for spec in walls:
            if spec.startswith("dask:"):
                k = int(spec.split(":")[1])
                amdahl = f", Amdahl S + W1/{k} = {S + W1 / k:.1f} s" if W1 else ""
                print(f"[bench 02] {spec}: measured {walls[spec]:.1f} s (cluster start included){amdahl}, "
                      f"speed-up against local {walls['local'] / walls[spec]:.2f}×")
        share = notebook_02_share(folder)
        if share:
            total, per_picture = share
            rest = total - per_picture
            print(f"[bench 02] the run's notebook 02: {total:.0f} s, of which per-picture stages {per_picture:.0f} s; "
                  f"the rest ({rest:.0f} s: R-Net / C-Net training, texture bases, figures) stays on the notebook's "
                  f"machine: notebook 02 with N workers ≥ {rest:.0f} s + the stages' S, speed-up ≤ "
                  f"{total / max(rest + S * per_picture / max(walls['local'], 1e-9), 1e-9):.1f}×")
    return same


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="reports/runs/ci", help="a run folder with notebooks 01-03's outputs")
    ap.add_argument("--executors", nargs="+", default=["local", "dask:2"], help="first: the reference (local)")
    ap.add_argument("--out", default=None, help="folder for each run's results and table1.csv (default: a temp)")
    ap.add_argument("--notebooks", nargs="+", default=["02", "04"], choices=["02", "04"])
    ap.add_argument("--limit", type=int, default=None, help="notebook 02: the first N pictures of each dataset")
    ap.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                    help="notebook 02: override the run's parameters (YAML values), e.g. 'ict_modes=[landmarks]' "
                         "'person_fits=[ict]' to time stages the run's profile did not ask for")
    args = ap.parse_args(argv)
    folder = project_path(args.run)
    p = {**{k: None for k in ("dataset", "image_size", "batch_size", "aggregators")},
         **yaml.safe_load((folder / "params.yaml").read_text())}
    p.setdefault("backend", "tddfa")
    ok_02 = True
    if "02" in args.notebooks:
        p02 = {**p, **{k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}}
        ok_02 = bench_02(Run({**p02, "out_dir": str(folder)}).require("02"), p02, folder, args.executors, args.limit)
        if "04" not in args.notebooks:
            return 0 if ok_02 else 1
    run = Run({**p, "out_dir": str(folder)}).require("04")
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_dask_"))
    walls, csvs, splits, prepares = {}, {}, [], []
    for spec in args.executors:
        results = out / spec.replace(":", "_").replace("/", "_")
        results.mkdir(parents=True, exist_ok=True)
        local = spec == "local"
        walls[spec] = run_04(run, p, spec, results, splits if local else None, prepares if local else None)
        t1 = tables.table1(tables.load_results(results))
        csvs[spec] = t1.to_csv(index=False)
        (results / "table1.csv").write_text(csvs[spec])
        print(f"[bench] {spec}: {walls[spec]:.1f} s wall, {len(t1)} Table-1 rows → {results / 'table1.csv'}",
              flush=True)
    ref = args.executors[0]
    same = all(csvs[s] == csvs[ref] for s in csvs)
    for spec in args.executors[1:]:
        print(f"[bench] Table 1 {spec} vs {ref}: {'identical' if csvs[spec] == csvs[ref] else 'DIFFERENT'}")
    if splits and "local" in walls:
        W, n, longest = sum(splits), len(splits), max(splits)
        S = max(walls["local"] - W, 0.0)
        print(f"[bench] local: {n} splits, work W = {W:.1f} s (longest {longest:.2f} s), serial part S = {S:.1f} s "
              f"({100 * S / walls['local']:.0f} % of {walls['local']:.1f} s; preparing {len(prepares)} cells "
              f"{sum(prepares):.1f} s — picture features included —, the rest reading tables, finishing, saving)")
        overhead = 0.0
        for spec in walls:
            if spec.startswith("dask:"):
                k = int(spec.split(":")[1])
                predicted = S + W / k
                overhead = max((walls[spec] - predicted) * k / n, 0.0)
                print(f"[bench] {spec}: measured {walls[spec]:.1f} s, Amdahl {predicted:.1f} s → overhead o ≈ "
                      f"{overhead:.2f} s per task (cluster start, transfers, contention with the client)")
        floor = S + longest
        print("[bench] N workers: " + ", ".join(
            f"{N}: {max(S + W / N + overhead * n / N, floor):.0f} s" for N in (1, 2, 4, 8, 16, 32, 64))
              + f" (floor S + longest split = {floor:.0f} s; speed-up ≤ {walls['local'] / floor:.1f}×)")
    return 0 if same else 1  # notebook 04's Table 1 decides; notebook 02's tables differ by float rounding


if __name__ == "__main__":
    sys.exit(main())
