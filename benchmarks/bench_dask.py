"""Notebook 04 on a Dask cluster vs in this process: wall time, the same Table 1, and what N workers would give.

Runs notebook 04's experiment list (the plan of an existing run folder, with its parameters) once per executor —
``local`` (the study's default) and ``dask:2`` (a LocalCluster of two single-threaded worker processes) — writes
each run's Table 1, compares them byte for byte, and prints the wall times. Every split's duration is measured in the
local run, so the arithmetic for N workers is printed too::

    T(N) ≈ S + W / N + o · n / N,   bounded below by S + max(d)

``S``: the serial part (reading the tables, preparing each cell — picture features included — finishing and saving
the results: here, never on a worker), ``W = Σ d``: the splits' work, ``n`` splits, ``o``: the per-task overhead the
Dask run measured against its own prediction.

    flock /work/heavy.lock .venv/bin/python benchmarks/bench_dask.py --run reports/runs/ci [--executors local dask:2]

``--run``: a run folder notebooks 01–03 made (e.g. ``make reproduce PARAMS=notebooks/params/ci.yaml``). Exit code 1
when the Table 1 CSVs differ.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml  # noqa: E402

from facelib.classify import experiment as C  # noqa: E402
from facelib.classify import images  # noqa: E402
from facelib.classify import plan as study_plan  # noqa: E402
from facelib.classify.results import read_coeffs  # noqa: E402
from facelib.data.datasets import study_datasets  # noqa: E402
from facelib.executor import make_executor  # noqa: E402
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default="reports/runs/ci", help="a run folder with notebooks 01-03's outputs")
    ap.add_argument("--executors", nargs="+", default=["local", "dask:2"], help="first: the reference (local)")
    ap.add_argument("--out", default=None, help="folder for each run's results and table1.csv (default: a temp)")
    args = ap.parse_args(argv)
    folder = project_path(args.run)
    p = {**{k: None for k in ("dataset", "image_size", "batch_size", "aggregators")},
         **yaml.safe_load((folder / "params.yaml").read_text())}
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
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
