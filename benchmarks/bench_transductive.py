"""How much does the study's one transductive step matter? Full-mode fitting (``fit_modes: [full]``) uses a texture
basis built from KDEF's straight pictures and a skin model trained on KDEF pictures — test pictures included, which
Table 1 flags as ``transductive``. This benchmark fits every KDEF picture twice in full mode and prints the accuracy
of the same classifiers on each:

* ``transductive`` — what the study does: texture basis from KDEF angle-S pictures, skin model from the KDEF table;
* ``out_of_sample`` — texture basis and skin model from FEI (other people, other studio), as many pictures.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_transductive.py --coeffs reports/runs/cpu/coeffs \\
        [--repeats 3] [--max-sets 100] [--out /tmp/transductive]

``--coeffs``: a run's ``coeffs`` folder holding ``kdef_tddfa.parquet`` and ``fei_tddfa.parquet``. Fits are cached
(``FACELIB_CACHE``), so a second call only re-scores. Prints seconds per fitted picture, the median final
photometric loss, and logistic-regression accuracy (mean ± std over repeats) on the paper's expression protocol,
the paper's identity protocol (k = 3) and cross-angle identity.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from facelib.classify.experiment import run_task  # noqa: E402
from facelib.classify.results import read_coeffs  # noqa: E402
from facelib.fitting import skin, table, texture_basis  # noqa: E402

CELLS = (("expression", "paper", "beta", {}),
         ("identity", "paper", "alpha", {"session": "A"}),
         ("identity", "cross_angle", "alpha", {"session": "A"}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--coeffs", required=True, help="a run's coeffs folder (kdef_tddfa / fei_tddfa parquet)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats / folds of the classification protocols")
    ap.add_argument("--max-sets", type=int, default=100, help="identity 3-subsets sampled per person and side")
    ap.add_argument("--out", default="/tmp/transductive", help="folder for the texture bases and fitted tables")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kdef = read_coeffs(Path(args.coeffs) / "kdef_tddfa.parquet")
    fei = read_coeffs(Path(args.coeffs) / "fei_tddfa.parquet")
    n_basis = int(((kdef["status"] == "ok") & (kdef["angle"] == "S")).sum())
    sources = {"transductive": (kdef, "S"), "out_of_sample": (fei.sample(frac=1.0, random_state=0), None)}
    rows = []
    for variant, (src, angle) in sources.items():
        t0 = time.perf_counter()
        tex = out / f"texture_{variant}.npz"
        skin_model = skin.skin_model_for_table(src)
        if not tex.exists():
            texture_basis.build_from_table(src, out=tex, angle=angle, max_images=n_basis, device=args.device,
                                           skin_model=skin_model)
        t_basis = time.perf_counter() - t0
        t0 = time.perf_counter()
        fitted = table.fit_table(kdef, "full", device=args.device, texture=tex, skin_model=skin_model,
                                 out=out / f"kdef_full_{variant}.parquet")
        t_fit = time.perf_counter() - t0
        ok = fitted[fitted["status"] == "ok"]
        photo = [json.loads(v).get("photo", [np.nan, np.nan])[1] for v in ok["fit_losses"] if isinstance(v, str)]
        row = {"variant": variant, "basis_pictures": n_basis, "basis_and_skin_s": round(t_basis, 1),
               "fit_s": round(t_fit, 1), "fit_s_per_picture": round(float(np.nanmedian(
                   pd.to_numeric(ok["fit_seconds"], errors="coerce"))), 3),
               "photo_loss_median": round(float(np.nanmedian(photo)), 5) if photo else None}
        for task, protocol, inp, kw in CELLS:
            if protocol == "paper" and task == "identity":
                kw = {**kw, "max_sets": args.max_sets}
            r = run_task(fitted, task, protocol, inp, "logreg", n_folds=args.repeats, seed=0,
                         protocol_kwargs=kw or None)
            row[f"{task}/{protocol}"] = f"{100 * r.accuracy_mean:.1f} ± {100 * (r.accuracy_std or 0):.1f}"
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"load average {tuple(round(x, 2) for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
