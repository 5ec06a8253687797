"""Table 1 (and 2, 3) from existing coefficient tables with a profile's classification settings — notebook 04
without papermill, printing each run's wall time, so a profile's classification cost can be measured.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/run_table1.py --profile notebooks/params/cpu.yaml \\
        --coeffs reports/runs/ci/coeffs --out /tmp/table1_cpu [--only image] [--threads 2]

``--coeffs`` is a run's ``coeffs`` folder (``kdef_<backend>.parquet``, ``fei_<backend>.parquet`` and any
``…+fit_<mode>.parquet`` variants the profile's ``fit_modes`` name). ``--only`` keeps plan entries whose input
or model contains the word. Prints one line per run and the total; results and tables land in ``--out``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from facelib.classify import plan as P  # noqa: E402
from facelib.classify.results import read_coeffs  # noqa: E402
from facelib.report import tables  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", required=True)
    ap.add_argument("--coeffs", required=True, help="a run's coeffs folder")
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", default=None)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    prm = yaml.safe_load(Path(args.profile).read_text())
    folder, backend = Path(args.coeffs), prm.get("backend", "tddfa")
    coeffs = {}
    for name in ("kdef", "fei"):
        files = [folder / f"{name}_{backend}.parquet"] + [folder / f"{name}_{backend}+fit_{m}.parquet"
                                                          for m in (prm.get("fit_modes") or [])]
        coeffs[name] = [read_coeffs(f) for f in files if f.exists()]
        print(f"{name}: {[f.name for f in files if f.exists()]} ({len(coeffs[name][0])} rows)")
    plan = P.study_plan(models=prm.get("models", ("resnet34", "logreg", "svm")),
                        image_baseline=prm.get("image_baseline", True))
    if args.only:
        plan = [e for e in plan if args.only in e["input"] or args.only in e["model"]]
    out = Path(args.out)
    t0 = time.perf_counter()
    summary = P.run_plan(coeffs, plan, out / "results", n_folds=prm.get("n_folds"), epochs=prm.get("epochs"),
                         image_epochs=prm.get("image_epochs"), image_size=prm.get("image_size"),
                         seed=prm.get("seed", 0), device=prm.get("device"), batch_size=prm.get("batch_size"),
                         identity_max_sets=prm.get("identity_max_sets"),
                         identity_session=prm.get("identity_session", "A"), progress=False)
    total = time.perf_counter() - t0
    pd.set_option("display.width", 200)
    cols = [c for c in ("task", "protocol", "input", "model", "backend", "status", "accuracy_mean", "epochs_run",
                        "wall_seconds") if c in summary.columns]
    print(summary[cols].to_string())
    tables.write_tables(out / "results", out / "tables", {"synthetic": bool(prm.get("synthetic")),
                                                            "profile": Path(args.profile).stem})
    print(f"total {total / 60:.1f} min on {torch.get_num_threads()} threads; load average "
          f"{tuple(round(x, 2) for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
