"""``python -m facelib …`` — the study's command line. Each subcommand is a thin wrapper over a library call.

Expected failures (:class:`facelib.errors.FacelibError`: missing or bad asset, missing data, unreadable CSV,
unknown label column, a protocol the data cannot support) print ``error: …`` / ``hint: …`` and exit with code 2;
``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd

from . import assets as assets_mod
from .classify import protocols as P
from .classify.experiment import TASK_LABEL, run_task
from .classify.results import read_coeffs, save_result
from .classify.trainer import INPUTS, MODELS
from .config import REPORTS_DIR, resolve_device
from .data import datasets, labels
from .data.synthetic import generate_synthetic
from .errors import EXIT_EXPECTED, FacelibError, format_error
from .face3d.landmarks import LANDMARKERS
from .face3d.reconstruct import BACKENDS, make_backend, qa_figure, reconstruct_manifest, summarize
from .fitting import ict_fit
from .fitting.fitter import MODES
from .fitting.table import fit_figure, fit_table, loss_summary
from .fitting.texture_basis import build_from_table
from .study import NOTEBOOK_DIR, PARAMS_DIR, run_study


def cmd_assets(args) -> int:
    """What the chosen backend needs, where each file goes, and its state; exit 1 when a needed one is missing."""
    rows = assets_mod.status(args.assets)
    need = set(assets_mod.needed(args.backend, args.landmark_source))
    dirs = assets_mod.search_dirs(args.assets)
    print(f"asset folders searched, in order: {', '.join(str(d) for d in dirs)}")
    print(f"a missing file goes in {dirs[0]}/<file> (set FACELIB_ASSETS to use another folder)")
    print("downloadable files are fetched on first use unless FACELIB_OFFLINE=1\n")
    width = max(len(r["file"]) for r in rows)
    for title, group in ((f"needed for backend={args.backend}, landmark source={args.landmark_source}:",
                          [r for r in rows if r["name"] in need]),
                         ("not needed for this choice:", [r for r in rows if r["name"] not in need])):
        print(title)
        for r in group:
            print(f"  {r['state']:<34} {r['file']:<{width}}  {r['licence']}")
    bad = [r for r in rows if r["name"] in need and (r["state"] == "missing" or r["state"] == "CHECKSUM MISMATCH")]
    offline = os.environ.get("FACELIB_OFFLINE", "") in ("1", "true", "yes")
    for r in bad:
        asset = assets_mod.get(r["name"])
        how = "downloaded on first use" if asset.downloadable and not offline else "get it yourself"
        print(f"\n{r['state']}: {r['file']} ({how}) from {r['source']}\n  put it at {dirs[0] / r['file']}")
    mismatch = [r for r in rows if r["state"] == "CHECKSUM MISMATCH"]
    return 1 if bad or mismatch else 0


def _require_file(path, what: str, hint: str) -> Path:
    """An input file the command reads: a clear error (exit 2) when it is not there."""
    if not Path(path).expanduser().is_file():
        raise FacelibError(f"{what} {path} does not exist", hint=hint)
    return Path(path).expanduser()


def _load_dataset(args, progress: bool) -> pd.DataFrame:
    """The manifest of ``--dataset`` (with ``--root``, and for a folder dataset ``--csv``/``--labels``)."""
    kwargs = {}
    if args.dataset == "fei":
        kwargs["which"] = getattr(args, "fei_set", "frontal")
    if args.dataset == "folder":
        if not args.root and not args.csv:
            raise datasets.DatasetError("a folder dataset needs --root <folder> (one sub-folder per label) "
                                        "or --csv <file> (path,<label columns>)")
        kwargs.update(csv=args.csv, labels=args.labels, label_name=args.label_name)
    elif args.csv or args.labels:
        raise datasets.DatasetError(f"--csv and --labels are for --dataset folder, not {args.dataset}")
    return datasets.load(args.dataset, args.root, progress=progress, **kwargs)


def _add_dataset_arguments(p: argparse.ArgumentParser, default: str | None = None) -> None:
    p.add_argument("--dataset", choices=["kdef", "fei", "folder"], default=default, required=default is None,
                   help="which loader: KDEF, FEI, or a folder dataset of your own")
    p.add_argument("--root", default=None,
                   help="dataset folder (default: $FACELIB_KDEF / $FACELIB_FEI; a folder dataset with --csv: the "
                        "CSV's folder)")
    p.add_argument("--csv", default=None, help="folder dataset: CSV of path,<label columns>, paths relative to it")
    p.add_argument("--labels", nargs="+", default=None, help="folder dataset: keep only these label columns")
    p.add_argument("--label-name", default="label",
                   help="folder dataset in <root>/<label>/ folders: the column the folder name goes to "
                        "(subject, expression, gender or any name; default label)")


def cmd_data_check(args) -> int:
    df = _load_dataset(args, progress=not args.json)
    summary = datasets.summarize(df)
    if args.out:
        datasets.save_manifest(df, args.out)
    print(json.dumps(summary, indent=2) if args.json else
          datasets.format_summary(summary) + "\ntasks its labels allow:\n" + labels.describe(df))
    return 0


def cmd_synthetic(args) -> int:
    res = generate_synthetic(args.out, n_identities=args.identities, sessions=tuple(args.sessions), seed=args.seed,
                             n_fei=args.fei, assets_dir=args.assets, progress=not args.quiet)
    print(json.dumps(res, indent=2))
    return 0


def cmd_reconstruct(args) -> int:
    # The model files first: a missing or bad one stops the command before the dataset is scanned.
    backend = make_backend(args.backend, resolve_device(args.device), args.assets, args.landmark_source,
                           not args.no_fallback)
    if args.manifest:
        _require_file(args.manifest, "manifest", "write one with `python -m facelib data check … --out <file>`")
        manifest = pd.read_parquet(args.manifest)
    else:
        manifest = _load_dataset(args, progress=True)
    table = reconstruct_manifest(manifest, backend, out=args.out, batch_size=args.batch_size,
                                 assets_dir=args.assets)
    print(json.dumps(summarize(table), indent=2))
    if args.qa:
        fig = qa_figure(table, out=args.qa)
        print(f"QA figure: {args.qa} ({fig.qa_note})", file=sys.stderr)
    return 0


def cmd_fit(args) -> int:
    _require_file(args.table, "coefficient table", "make one with `python -m facelib reconstruct … --out <file>`")
    table = pd.read_parquet(args.table)
    if args.texture == "build":
        tex_path = Path(args.out).with_name(Path(args.out).stem + "_texture.npz")
        build_from_table(table, out=tex_path, device=args.device, assets_dir=args.assets)
        args.texture = str(tex_path)
    out = fit_table(table, mode=args.mode, iterations=args.iterations, batch_size=args.batch_size,
                    device=args.device, target_landmarks=args.targets, texture=args.texture,
                    image_size=args.size, assets_dir=args.assets, limit=args.limit, out=args.out)
    print(loss_summary(out).round(5).to_string())
    if args.figure:
        fit_figure(table, n=4, texture=args.texture, device=args.device, assets_dir=args.assets, out=args.figure)
    return 0


def cmd_ict(args) -> int:
    table = pd.read_parquet(args.table)
    out = ict_fit.fit_ict_table(table, mode=args.mode, iterations=args.iterations, batch_size=args.batch_size,
                                device=args.device, target_landmarks=args.targets, texture=args.texture,
                                image_size=args.size, assets_dir=args.assets, ict_source=args.source,
                                limit=args.limit, out=args.out)
    ok = out[out["status"] == "ok"]
    err = ict_fit.landmark_error(ok)
    print(f"{len(ok)} pictures fitted ({ict_fit.backend_name(args.mode)}): {ok['fit_seconds'].mean():.3f} "
          f"s/picture; landmark error (px) per angle:")
    print((err.groupby(ok["angle"]).mean() if "angle" in ok.columns else err.describe()).round(2).to_string())
    return 0


def _classify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--coeffs", required=True, help="coefficient table (parquet or CSV)")
    p.add_argument("--task", required=True,
                   help=f"{', '.join(TASK_LABEL)}, or any other label column of the table (a generic task)")
    p.add_argument("--protocol", default="paper",
                   choices=sorted({k for v in P.PROTOCOLS.values() for k in v} | set(P.GENERIC_PROTOCOLS)),
                   help="train/test split rule")
    p.add_argument("--input", default=None, choices=list(INPUTS),
                   help="default: alpha (identity, gender), beta (expression), alpha+beta (other labels)")
    p.add_argument("--model", default="resnet34", choices=list(MODELS), help="classifier")
    p.add_argument("--out", default="results", help="folder for the result JSON and predictions CSV")
    p.add_argument("--n-folds", type=int, default=None, help="folds or repeats (None: the protocol's default)")
    p.add_argument("--epochs", type=int, default=None,
                   help="cap on epochs; networks stop early on the inner validation split (None: the recipe's cap)")
    p.add_argument("--batch-size", type=int, default=None, help="None: 128 for vectors (32 on small sets), 32 for images")
    p.add_argument("--lr", type=float, default=None, help="learning rate (None: the recipe's, facelib.classify.trainer.RECIPE)")
    p.add_argument("--seed", type=int, default=0, help="random seed (splits, initialisation)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps or auto (default $FACELIB_DEVICE / auto)")
    p.add_argument("--image-size", type=int, default=None, help="image input: default 64 on CPU, 224 on GPU")
    p.add_argument("--backend", default=None, help="backend label for the result (None: the table's)")
    p.add_argument("--patience", type=int, default=None, help="early-stopping patience in epochs (None: off)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch log")


def cmd_classify(args) -> int:
    _require_file(args.coeffs, "coefficient table", "make one with `python -m facelib reconstruct … --out <file>`")
    df = read_coeffs(args.coeffs)
    labels.require_task(df, args.task)
    result = run_task(df, args.task, args.protocol, args.input, args.model, backend=args.backend,
                      n_folds=args.n_folds, epochs=args.epochs, seed=args.seed, device=args.device,
                      image_size=args.image_size, batch_size=args.batch_size,
                      **({"lr": args.lr} if args.lr else {}),
                      patience=args.patience, num_threads=args.threads, verbose=not args.quiet)
    path = save_result(result, args.out)
    spread = f"± {result.accuracy_std:.4f}" if result.accuracy_std is not None else \
        f"[{result.accuracy_ci[0]:.4f}, {result.accuracy_ci[1]:.4f}]"
    print(f"{result['task']}/{result['protocol']}/{result['input']}/{result['model']}: accuracy "
          f"{result['accuracy_mean']:.4f} {spread} over {result['n_folds']} {result.split_kind} "
          f"({result['seconds_per_epoch']:.2f} s/epoch, {1000 * result['seconds_per_input']:.3f} ms/input) → {path}")
    return 0


def _add_classify(sub) -> None:
    """Register ``classify`` on the top-level ``python -m facelib`` subparsers."""
    c = sub.add_parser("classify", help="train and evaluate one task/protocol/input/model (Table 1 cell)")
    _classify_arguments(c)
    c.set_defaults(func=cmd_classify)


def classify_main(argv: list[str] | None = None) -> int:
    """``python -m facelib classify --coeffs FILE --task T --protocol P --input I --model M --out DIR``."""
    p = Parser(prog="python -m facelib classify", description=run_task.__doc__.split("\n")[0])
    _classify_arguments(p)
    p.add_argument("--debug", action="store_true", help="show the traceback of an expected error")
    args = p.parse_args(argv)
    return _guarded(cmd_classify, args)


def cmd_study(args) -> int:
    if args.params:
        _require_file(args.params, "parameter file", f"use one of {PARAMS_DIR}/*.yaml or a copy of it")
    run_study(args.params, args.run, args.refresh_committed, args.only, sets=args.set, device=args.device)
    return 0


# ---------------------------------------------------------------- parsers
class Parser(argparse.ArgumentParser):
    """Every parser shows each flag's default in --help."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m facelib", description=__doc__)
    p.add_argument("--debug", action="store_true", help="show the traceback of an expected error")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    a = sub.add_parser("assets", help="the model files the chosen backend needs: state, where each goes; "
                                      "exit 1 when a needed one is missing")
    a.add_argument("--assets", default=None, help="asset folder (None: $FACELIB_ASSETS, then the user cache)")
    a.add_argument("--backend", choices=BACKENDS, default="tddfa", help="reconstruction backend to check for")
    _add_landmark_source(a, "landmarker to check for")
    a.set_defaults(func=cmd_assets)

    d = sub.add_parser("data", help="dataset commands")
    dsub = d.add_subparsers(dest="data_command", required=True)
    c = dsub.add_parser("check", help="load a dataset, print counts and every excluded or missing file")
    _add_dataset_arguments(c)
    c.add_argument("--fei-set", default="frontal", choices=["frontal", "original", "all"], help="FEI subset")
    c.add_argument("--json", action="store_true", help="print the summary as JSON")
    c.add_argument("--out", default=None, help="also save the manifest as <out>.parquet and <out>.csv")
    c.set_defaults(func=cmd_data_check)

    _add_synthetic(sub)
    _add_reconstruct(sub)
    _add_fit(sub)
    _add_ict(sub)
    _add_classify(sub)
    _add_study(sub)
    return p


def _add_landmark_source(p: argparse.ArgumentParser, what: str) -> None:
    """``--landmark-source``: where the 68 points come from (default: the backend's own, ``model``)."""
    p.add_argument("--landmark-source", choices=LANDMARKERS, default="model",
                   help=f"{what}: the backend's own (model), dlib or fan")


def _add_synthetic(sub) -> None:
    """Register ``python -m facelib synthetic --out DIR [--identities N] [--seed S] …``."""
    p = sub.add_parser("synthetic", help="render the labelled synthetic KDEF-like + FEI-like set")
    p.add_argument("--out", required=True, help="output folder (KDEF/, fei/, ground_truth.parquet, SYNTHETIC.json)")
    p.add_argument("--identities", type=int, default=20, help="KDEF-like identities, half F half M (default 20)")
    p.add_argument("--fei", type=int, default=40, help="FEI-like identities (default 40)")
    p.add_argument("--sessions", nargs="+", default=["A"], choices=["A", "B"], help="KDEF sessions (default A)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the rendered faces")
    p.add_argument("--assets", default=None, help="asset folder (default: $FACELIB_ASSETS)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_synthetic)


def _add_reconstruct(sub) -> None:
    r = sub.add_parser("reconstruct", help="3DMM coefficients for every image of a dataset (cached)")
    _add_dataset_arguments(r, default="kdef")
    r.add_argument("--manifest", default=None, help="use a saved manifest (.parquet) instead of --dataset/--root")
    r.add_argument("--backend", choices=BACKENDS, default="tddfa", help="coefficient regressor")
    _add_landmark_source(r, "68-point landmarker")
    r.add_argument("--out", required=True, help="coefficient table (.parquet)")
    r.add_argument("--qa", default=None, help="also write the QA figure (PNG)")
    r.add_argument("--device", default=None, help="cpu, cuda, mps or auto (default: $FACELIB_DEVICE or auto)")
    r.add_argument("--assets", default=None, help="asset folder (default: $FACELIB_ASSETS)")
    r.add_argument("--batch-size", type=int, default=32, help="pictures per batch")
    r.add_argument("--no-fallback", action="store_true", help="no whole-frame box for tight crops without a face")
    r.set_defaults(func=cmd_reconstruct)


def _add_fit(sub) -> None:
    r = sub.add_parser("fit", help="analysis-by-synthesis fitting of a tddfa coefficient table")
    r.add_argument("--table", required=True, help="tddfa coefficient table (.parquet)")
    r.add_argument("--mode", choices=MODES, default="landmarks", help="landmarks (fast) or full (rendered)")
    r.add_argument("--iterations", type=int, default=None, help="optimiser steps (None: the mode's default)")
    r.add_argument("--targets", choices=["dlib", "table"], default="dlib", help="target landmarks: dlib's or the table's")
    r.add_argument("--texture", default=None, help="texture basis .npz, or 'build' to learn one from angle S rows")
    r.add_argument("--size", type=int, default=160, help="crop resolution of full mode")
    r.add_argument("--out", required=True, help="fitted coefficient table (.parquet)")
    r.add_argument("--figure", default=None, help="also write photo|rendering|overlay|loss figure (PNG)")
    r.add_argument("--device", default=None, help="cpu, cuda, mps or auto (None: $FACELIB_DEVICE or auto)")
    r.add_argument("--assets", default=None, help="asset folder (None: $FACELIB_ASSETS)")
    r.add_argument("--batch-size", type=int, default=8, help="pictures per batch")
    r.add_argument("--limit", type=int, default=None, help="fit only the first N rows (None: all)")
    r.set_defaults(func=cmd_fit)


def _add_ict(sub) -> None:
    r = sub.add_parser("ict", help="fit the ICT Face Model (α 100, β 53) to every picture of a tddfa table")
    r.add_argument("--table", required=True, help="tddfa coefficient table (.parquet); an ict table for --mode full")
    r.add_argument("--mode", choices=ict_fit.MODES, default="landmarks",
                   help="landmarks: 68-point fit; full: rendered hybrid-loss fit (start from an ict table)")
    r.add_argument("--iterations", type=int, default=None, help="optimiser steps (None: the mode's default)")
    r.add_argument("--targets", choices=["dlib", "table"], default="dlib",
                   help="landmark targets: dlib's 68 points, or the table's (3DDFA_V2) landmarks")
    r.add_argument("--texture", default=None, help="texture basis .npz over the ICT vertices (full mode)")
    r.add_argument("--size", type=int, default=160, help="crop resolution of full mode")
    r.add_argument("--source", default=None, help="ICT-FaceKit clone or archive (default: the asset ict_facekit)")
    r.add_argument("--out", required=True, help="ICT coefficient table (.parquet)")
    r.add_argument("--device", default=None, help="cpu, cuda, mps or auto (None: $FACELIB_DEVICE or auto)")
    r.add_argument("--assets", default=None, help="asset folder (None: $FACELIB_ASSETS, then the user cache)")
    r.add_argument("--batch-size", type=int, default=8, help="pictures fitted together")
    r.add_argument("--limit", type=int, default=None, help="fit at most this many pictures (None: all)")
    r.set_defaults(func=cmd_ict)


def _add_study(sub) -> None:
    s = sub.add_parser("study", help="run the notebooks with papermill, render HTML, write the report pages")
    s.add_argument("--params", default=None,
                   help=f"profile (YAML); None: the one that suits the device — {PARAMS_DIR / 'paper.yaml'} on a GPU, "
                        f"{PARAMS_DIR / 'cpu.yaml'} (when present) on a CPU")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one parameter (repeatable; YAML values), e.g. --set seed=1 --set models=[logreg]")
    s.add_argument("--device", default=None, help="cpu, cuda, mps or auto (None: the profile's, $FACELIB_DEVICE, auto)")
    s.add_argument("--run", default=None, help="run name (folder under reports/runs/; None: the profile's run_name)")
    s.add_argument("--only", nargs="*", default=None, help="notebook prefixes to run, e.g. 01 02 (None: all)")
    s.add_argument("--refresh-committed", action="store_true",
                   help="copy the executed notebooks back into notebooks/ (their outputs are what nbval checks)")
    s.set_defaults(func=cmd_study)
    e = sub.add_parser("export-coefficients", help="write coefficient tables in the shareable table format "
                                                   "(path + id_*/exp_*/… columns, <file>.yaml beside), which "
                                                   "the study reads back as a backend (parameter external)")
    e.add_argument("--coeffs", nargs="+", required=True, metavar="PARQUET",
                   help="coefficient tables of a run, e.g. reports/runs/ci/coeffs/kdef_tddfa.parquet")
    e.add_argument("--out", required=True,
                   help="a folder (one <table name>.csv each) or, for one table, a .csv / .parquet file")
    e.add_argument("--method", default=None, help="method name written to the YAML beside (default: the backend)")
    e.set_defaults(func=cmd_export_coefficients)
    w = sub.add_parser("latest-run", help="print the folder of the newest finished run's executed notebooks "
                                          "(notebooks/ when no run has finished): what `make lab` opens")
    w.set_defaults(func=cmd_latest_run)


def cmd_export_coefficients(args) -> int:
    from .face3d.external import export_table
    out = Path(args.out)
    single = len(args.coeffs) == 1 and out.suffix.lower() in (".csv", ".parquet")
    for src in args.coeffs:
        _require_file(src, "coefficient table", "a .parquet written by notebook 02 (reports/runs/<run>/coeffs/)")
        table = pd.read_parquet(src)
        dest = out if single else out / f"{Path(src).stem}.csv"
        export_table(table, dest, method=args.method)
        ok = int((table["status"].astype(str) == "ok").sum()) if "status" in table.columns else len(table)
        print(f"{src} → {dest} ({ok} pictures)")
    return 0


def cmd_latest_run(args) -> int:
    from .report.index import latest_run_folder
    print(latest_run_folder(REPORTS_DIR, fallback=NOTEBOOK_DIR))
    return 0


def _guarded(func, args) -> int:
    """Run a command; an expected failure becomes ``error: …`` on stderr and exit code 2 (``--debug``: raise)."""
    try:
        return int(func(args) or 0)
    except FacelibError as exc:
        if getattr(args, "debug", False):
            raise
        print(format_error(exc), file=sys.stderr)
        return EXIT_EXPECTED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _guarded(lambda a: a.func(a), args)

