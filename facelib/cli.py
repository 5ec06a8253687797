"""``python -m facelib …`` — the study's command line. Each subcommand is a thin wrapper over a library call."""
from __future__ import annotations

import argparse
import json
import sys

from . import assets as assets_mod
from . import config


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
    from . import datasets

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

    _add_optional_commands(sub)
    return p


def _add_optional_commands(sub) -> None:
    """Stage commands live beside their stages; each registers its own arguments."""
    from . import fitting, reconstruct, study, synthetic, train

    synthetic.add_cli(sub)
    reconstruct.add_cli(sub)
    fitting.add_cli(sub)
    train.add_cli(sub)
    study.add_cli(sub)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
