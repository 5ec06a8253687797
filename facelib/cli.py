"""``python -m facelib …`` — the study's command line. Each subcommand is a thin wrapper over a library call."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from . import assets as assets_mod
from .classify import protocols as P
from .classify.experiment import TASK_LABEL, run_task
from .classify.results import read_coeffs, save_result
from .classify.trainer import INPUTS, MODELS
from .data import datasets
from .data.synthetic import generate_synthetic
from .face3d.reconstruct import BACKENDS, qa_figure, reconstruct_manifest, summarize
from .fitting.fitter import MODES
from .fitting.table import fit_figure, fit_table, loss_summary
from .fitting.texture_basis import build_from_table
from .study import PARAMS_DIR, run_study


def cmd_assets(args) -> int:
    rows = assets_mod.status(args.assets)
    width = max(len(r["file"]) for r in rows)
    print(f"asset folders searched: {', '.join(str(d) for d in assets_mod.search_dirs(args.assets))}")
    for r in rows:
        print(f"{r['state']:<34} {r['file']:<{width}}  {r['licence']}")
    missing = [r for r in rows if r["state"] == "missing"]
    for r in missing:
        print(f"\nmissing {r['file']}: get it from {r['source']}")
    bad = [r for r in rows if r["state"] == "CHECKSUM MISMATCH"]
    return 1 if bad else 0


def cmd_data_check(args) -> int:
    kwargs = {}
    if args.dataset == "fei":
        kwargs["which"] = args.fei_set
    if args.dataset == "folder" and args.csv:
        kwargs["csv"] = args.csv
    try:
        df = datasets.load(args.dataset, args.root, progress=not args.json, **kwargs)
    except datasets.DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = datasets.summarize(df)
    if args.out:
        datasets.save_manifest(df, args.out)
    print(json.dumps(summary, indent=2) if args.json else datasets.format_summary(summary))
    return 0


def cmd_synthetic(args) -> int:
    res = generate_synthetic(args.out, n_identities=args.identities, sessions=tuple(args.sessions), seed=args.seed,
                             n_fei=args.fei, assets_folder=args.assets, progress=not args.quiet)
    print(json.dumps(res, indent=2))
    return 0


def cmd_reconstruct(args) -> int:
    if args.manifest:
        manifest = pd.read_parquet(args.manifest)
    else:
        kwargs = {"csv": args.csv} if args.dataset == "folder" and args.csv else {}
        manifest = datasets.load(args.dataset, args.root, progress=True, **kwargs)
    table = reconstruct_manifest(manifest, args.backend, out=args.out, batch_size=args.batch_size,
                                 device=args.device, assets_folder=args.assets, landmarks=args.landmarks,
                                 fallback=not args.no_fallback)
    print(json.dumps(summarize(table), indent=2))
    if args.qa:
        qa_figure(table, out=args.qa)
    return 0


def cmd_fit(args) -> int:
    table = pd.read_parquet(args.table)
    if args.texture == "build":
        tex_path = Path(args.out).with_name(Path(args.out).stem + "_texture.npz")
        build_from_table(table, out=tex_path, device=args.device, assets_folder=args.assets)
        args.texture = str(tex_path)
    out = fit_table(table, mode=args.mode, iterations=args.iterations, batch_size=args.batch_size,
                    device=args.device, target_landmarks=args.targets, texture=args.texture,
                    image_size=args.size, assets_folder=args.assets, limit=args.limit, out=args.out)
    print(loss_summary(out).round(5).to_string())
    if args.figure:
        fit_figure(table, n=4, texture=args.texture, device=args.device, assets_folder=args.assets, out=args.figure)
    return 0


def _classify_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--coeffs", required=True, help="coefficient table (parquet or CSV)")
    p.add_argument("--task", required=True,
                   help=f"{', '.join(TASK_LABEL)}, or any other label column of the table (a generic task)")
    p.add_argument("--protocol", default="paper",
                   choices=sorted({k for v in P.PROTOCOLS.values() for k in v} | set(P.GENERIC_PROTOCOLS)))
    p.add_argument("--input", default=None, choices=list(INPUTS), help="default: alpha (identity, gender), beta")
    p.add_argument("--model", default="resnet34", choices=list(MODELS))
    p.add_argument("--out", default="results", help="folder for the result JSON and predictions CSV")
    p.add_argument("--n-folds", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="default: the recipe's (facelib.classify.trainer.RECIPE)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, mps or auto (default $FACELIB_DEVICE / auto)")
    p.add_argument("--image-size", type=int, default=None, help="image input: default 64 on CPU, 224 on GPU")
    p.add_argument("--backend", default=None)
    p.add_argument("--patience", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true")


def cmd_classify(args) -> int:
    df = read_coeffs(args.coeffs)
    try:
        result = run_task(df, args.task, args.protocol, args.input, args.model, backend=args.backend,
                          n_folds=args.n_folds, epochs=args.epochs, seed=args.seed, device=args.device,
                          image_size=args.image_size, batch_size=args.batch_size,
                          **({"lr": args.lr} if args.lr else {}),
                          patience=args.patience, num_threads=args.threads, verbose=not args.quiet)
    except P.ProtocolUnavailable as exc:
        print(f"not available: {exc}", file=sys.stderr)
        return 3
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
    p = argparse.ArgumentParser(prog="python -m facelib classify", description=run_task.__doc__.split("\n")[0])
    _classify_arguments(p)
    return cmd_classify(p.parse_args(argv))


def cmd_study(args) -> int:
    run_study(args.params, args.run, args.refresh_committed, args.only)
    return 0


# ---------------------------------------------------------------- parsers
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m facelib", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    a = sub.add_parser("assets", help="list every model file with present / verified / missing")
    a.add_argument("--assets", default=None, help="asset folder (default: $FACELIB_ASSETS, then the user cache)")
    a.set_defaults(func=cmd_assets)

    d = sub.add_parser("data", help="dataset commands")
    dsub = d.add_subparsers(dest="data_command", required=True)
    c = dsub.add_parser("check", help="load a dataset, print counts and every excluded or missing file")
    c.add_argument("--dataset", choices=["kdef", "fei", "folder"], required=True)
    c.add_argument("--root", default=None, help="dataset folder (default: $FACELIB_KDEF / $FACELIB_FEI)")
    c.add_argument("--fei-set", default="frontal", choices=["frontal", "original", "all"])
    c.add_argument("--csv", default=None, help="folder dataset: CSV of path,<label columns>")
    c.add_argument("--json", action="store_true", help="print the summary as JSON")
    c.add_argument("--out", default=None, help="also save the manifest as <out>.parquet and <out>.csv")
    c.set_defaults(func=cmd_data_check)

    _add_synthetic(sub)
    _add_reconstruct(sub)
    _add_fit(sub)
    _add_classify(sub)
    _add_study(sub)
    return p


def _add_synthetic(sub) -> None:
    """Register ``python -m facelib synthetic --out DIR [--identities N] [--seed S] …``."""
    p = sub.add_parser("synthetic", help="render the labelled synthetic KDEF-like + FEI-like set")
    p.add_argument("--out", required=True, help="output folder (KDEF/, fei/, ground_truth.parquet, SYNTHETIC.json)")
    p.add_argument("--identities", type=int, default=20, help="KDEF-like identities, half F half M (default 20)")
    p.add_argument("--fei", type=int, default=40, help="FEI-like identities (default 40)")
    p.add_argument("--sessions", nargs="+", default=["A"], choices=["A", "B"], help="KDEF sessions (default A)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--assets", default=None, help="asset folder (default: $FACELIB_ASSETS)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_synthetic)


def _add_reconstruct(sub) -> None:
    r = sub.add_parser("reconstruct", help="3DMM coefficients for every image of a dataset (cached)")
    r.add_argument("--dataset", choices=["kdef", "fei", "folder"], default="kdef")
    r.add_argument("--root", default=None, help="dataset folder (default: $FACELIB_KDEF / $FACELIB_FEI)")
    r.add_argument("--csv", default=None, help="folder dataset: CSV of path,<label columns>")
    r.add_argument("--manifest", default=None, help="use a saved manifest (.parquet) instead of --dataset/--root")
    r.add_argument("--backend", choices=BACKENDS, default="tddfa")
    r.add_argument("--landmarks", choices=["model", "dlib", "fan"], default="model")
    r.add_argument("--out", required=True, help="coefficient table (.parquet)")
    r.add_argument("--qa", default=None, help="also write the QA figure (PNG)")
    r.add_argument("--device", default=None, help="cpu, cuda, mps or auto (default: $FACELIB_DEVICE or auto)")
    r.add_argument("--assets", default=None, help="asset folder (default: $FACELIB_ASSETS)")
    r.add_argument("--batch-size", type=int, default=32)
    r.add_argument("--no-fallback", action="store_true", help="no whole-frame box for tight crops without a face")
    r.set_defaults(func=cmd_reconstruct)


def _add_fit(sub) -> None:
    r = sub.add_parser("fit", help="analysis-by-synthesis fitting of a tddfa coefficient table")
    r.add_argument("--table", required=True, help="tddfa coefficient table (.parquet)")
    r.add_argument("--mode", choices=MODES, default="landmarks")
    r.add_argument("--iterations", type=int, default=None)
    r.add_argument("--targets", choices=["dlib", "table"], default="dlib")
    r.add_argument("--texture", default=None, help="texture basis .npz, or 'build' to learn one from angle S rows")
    r.add_argument("--size", type=int, default=160, help="crop resolution of full mode")
    r.add_argument("--out", required=True, help="fitted coefficient table (.parquet)")
    r.add_argument("--figure", default=None, help="also write photo|rendering|overlay|loss figure (PNG)")
    r.add_argument("--device", default=None)
    r.add_argument("--assets", default=None)
    r.add_argument("--batch-size", type=int, default=8)
    r.add_argument("--limit", type=int, default=None)
    r.set_defaults(func=cmd_fit)


def _add_study(sub) -> None:
    s = sub.add_parser("study", help="run the notebooks with papermill, render HTML, write the index page")
    s.add_argument("--params", default=str(PARAMS_DIR / "paper.yaml"), help="parameter set (YAML)")
    s.add_argument("--run", default=None, help="run name (folder under reports/runs/)")
    s.add_argument("--only", nargs="*", default=None, help="notebook prefixes to run, e.g. 01 02")
    s.add_argument("--refresh-committed", action="store_true",
                   help="copy the executed notebooks back into notebooks/ (their outputs are what nbval checks)")
    s.set_defaults(func=cmd_study)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)

