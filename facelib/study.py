"""Run the notebook study: papermill executes the numbered notebooks in order into one run folder, nbconvert
renders each to HTML, and an index page shows Tables 1–3 first and links every notebook.

``python -m facelib study --params notebooks/params/paper.yaml`` is what ``make reproduce`` calls.
"""
from __future__ import annotations

import html
import json
import os
import shutil
import sys
from pathlib import Path

import yaml

from . import assets, config

NOTEBOOK_DIR = config.PROJECT_ROOT / "notebooks"
PARAMS_DIR = NOTEBOOK_DIR / "params"


def notebooks() -> list[Path]:
    return sorted(p for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def load_params(path: str | Path) -> dict:
    params = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(params, dict):
        raise ValueError(f"{path}: expected a mapping of notebook parameters")
    return params


def project_path(value: str | Path) -> Path:
    """Relative paths in parameters are relative to the project root, wherever the kernel runs."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else config.PROJECT_ROOT / p


def run_dir(params: dict) -> Path:
    return project_path(params.get("out_dir") or f"reports/runs/{params.get('run_name', 'study')}")


def missing_inputs(params: dict) -> list[str]:
    """Everything the study needs that is not there, each with where to get it and where to put it."""

    problems = []
    if not params.get("synthetic"):
        for key, env, what in (("kdef_root", "FACELIB_KDEF", "KDEF images (https://kdef.se, non-commercial)"),
                               ("fei_root", "FACELIB_FEI", "FEI frontal images + fei_gender.csv "
                                                           "(https://fei.edu.br/~cet/facedatabase.html)")):
            value = params.get(key) or os.environ.get(env)
            if not value:
                problems.append(f"{what}: not configured — set {env}=<folder> (see data/README.md)")
            elif not Path(value).expanduser().is_dir():
                problems.append(f"{what}: {value} does not exist — set {env} to the folder holding it")
    backend = params.get("backend", "tddfa")
    needed = ["faceboxes", "mb05", "param_mean_std", "tri", "bfm_u_shp", "bfm_u_exp", "bfm_w_shp", "bfm_w_exp",
              "bfm_keypoints"]
    if backend == "deep3d":
        needed += ["deep3d_epoch20", "lm3d_std"]
    for name in needed:
        try:
            assets.resolve(name, params.get("assets"))
        except assets.AssetError as exc:
            problems.append(str(exc))
    return problems


def _execute(nb: Path, out: Path, params: dict) -> None:
    import papermill as pm

    try:
        pm.execute_notebook(str(nb), str(out), parameters=params, cwd=str(NOTEBOOK_DIR), kernel_name="python3",
                            progress_bar=False, log_output=False)
    except pm.PapermillExecutionError as exc:
        raise SystemExit(f"\nnotebook {nb.name} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}\n"
                         f"executed notebook (with the traceback): {out}") from None


def _to_html(nb: Path, dest_dir: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nbformat.read(str(nb), as_version=4))
    dest = dest_dir / (nb.stem + ".html")
    dest.write_text(body, encoding="utf-8")
    return dest


def write_index(run: Path, html_pages: list[Path], dest: Path) -> Path:
    """Tables 1–3 first (from the run's CSVs), then the figures, then links to every rendered notebook."""
    import pandas as pd

    tables = run / "tables"
    prov = json.loads((tables / "provenance.json").read_text()) if (tables / "provenance.json").exists() else {}
    synthetic = bool(prov.get("synthetic"))
    title = ("SYNTHETIC DATA — " if synthetic else "") + "facelib: 3DMM coefficients vs images"
    parts = [f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
             "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px}"
             "th{background:#f3f3f3}img{max-width:100%}.warn{background:#fee;padding:.5em}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    if synthetic:
        parts.append("<p class='warn'>These numbers come from the synthetic KDEF-like set, not real faces.</p>")
    if prov:
        data = "; ".join(f"{k}: {v.get('ok')} pictures of {v.get('subjects')} people" for k, v in
                         prov.get("data", {}).items())
        parts.append(f"<p>Run <b>{html.escape(run.name)}</b> — backend <b>{html.escape(str(prov.get('backend')))}"
                     f"</b>, device {html.escape(str(prov.get('device')))}, seed "
                     f"{html.escape(str(prov.get('parameters', {}).get('seed')))}; {html.escape(data)}. "
                     "Full provenance at the bottom.</p>")
    for name, caption in (("table1", "Table 1 — accuracy (mean ± std over folds)"),
                          ("table2", "Table 2 — training time per input"),
                          ("table3", "Table 3 — expression confusion matrix (%; rows true, columns predicted)")):
        csv = tables / f"{name}.csv"
        if csv.exists():
            frame = pd.read_csv(csv, index_col=0 if name == "table3" else None)
            if name == "table1":
                from .tables import table1_display

                frame = table1_display(frame)
            digits = {"table1": 1, "table2": 5, "table3": 1}[name]
            parts.append(f"<h2>{caption}</h2>" + frame.to_html(float_format=lambda v: f"{v:.{digits}f}", border=0,
                                                                 index=name == "table3"))
            parts.append(f"<p><a href='{os.path.relpath(csv, dest.parent)}'>{name}.csv</a></p>")
    for png in sorted(tables.glob("*.png")):
        parts.append(f"<h3>{html.escape(png.stem)}</h3><img src='{os.path.relpath(png, dest.parent)}'>")
    parts.append("<h2>Notebooks</h2><ol>")
    parts += [f"<li><a href='{os.path.relpath(p, dest.parent)}'>{html.escape(p.stem)}</a></li>" for p in html_pages]
    parts.append("</ol>")
    if prov:
        parts.append("<h2>Provenance</h2><pre>" + html.escape(json.dumps(prov, indent=2, default=str)) + "</pre>")
    parts.append("</body></html>")
    dest.write_text("\n".join(parts), encoding="utf-8")
    return dest


def run_study(params_file: str | Path, run_name: str | None = None, refresh_committed: bool = False,
              only: list[str] | None = None) -> Path:
    params = load_params(params_file)
    if run_name:
        params["run_name"] = run_name
        params.pop("out_dir", None)
    if os.environ.get("FACELIB_DEVICE") and not params.get("device"):
        params["device"] = os.environ["FACELIB_DEVICE"]
    configured = [params.get(k) or os.environ.get(env) for k, env in (("kdef_root", "FACELIB_KDEF"),
                                                                       ("fei_root", "FACELIB_FEI"))]
    if not params.get("synthetic") and not any(configured):
        print("[study] no dataset configured (FACELIB_KDEF, FACELIB_FEI): running the whole study on the "
              "SYNTHETIC set rendered from the morphable model. Every table says so. See data/README.md to use "
              "KDEF and FEI.", flush=True)
        params["synthetic"] = True
        if not run_name:
            params["run_name"] = "synthetic"
            params.pop("out_dir", None)
    problems = missing_inputs(params)
    if problems:
        raise SystemExit("The study cannot start; missing:\n\n" + "\n\n".join(f"- {p}" for p in problems) +
                         "\n\nSee data/README.md, then run `make reproduce` again.")
    if params.get("synthetic"):
        from .synthetic import generate_synthetic

        made = generate_synthetic(project_path("data/interim/synthetic"), seed=int(params.get("seed") or 0),
                                  assets_folder=params.get("assets"))
        params["kdef_root"], params["fei_root"] = str(made["kdef_root"]), str(made["fei_root"])
    run = run_dir(params)
    run.mkdir(parents=True, exist_ok=True)
    # Stored relative to the project so executed (and committed) notebooks do not carry this machine's paths.
    params["out_dir"] = str(run.relative_to(config.PROJECT_ROOT)) if run.is_relative_to(config.PROJECT_ROOT) \
        else str(run)
    (run / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=True))
    pages = []
    for nb in notebooks():
        if only and not any(nb.name.startswith(o) for o in only):
            continue
        out = run / nb.name
        print(f"[study] {nb.name} → {out.relative_to(config.PROJECT_ROOT) if out.is_relative_to(config.PROJECT_ROOT) else out}", flush=True)
        _execute(nb, out, params)
        (run / "html").mkdir(exist_ok=True)
        pages.append(_to_html(out, run / "html"))
        if refresh_committed:
            shutil.copy(out, nb)
    report_tables = config.REPORTS_DIR / "tables"
    if (run / "tables").is_dir():
        report_tables.mkdir(parents=True, exist_ok=True)
        for f in (run / "tables").iterdir():
            if f.is_file():
                shutil.copy(f, report_tables / f.name)
    index = write_index(run, pages, run / "index.html")
    top = write_index(run, pages, config.REPORTS_DIR / "index.html")
    print(f"[study] done: {index}\n[study] overview: {top}")
    return run


def cmd_study(args) -> int:
    run_study(args.params, args.run, args.refresh_committed, args.only)
    return 0


def add_cli(sub) -> None:
    s = sub.add_parser("study", help="run the notebooks with papermill, render HTML, write the index page")
    s.add_argument("--params", default=str(PARAMS_DIR / "paper.yaml"), help="parameter set (YAML)")
    s.add_argument("--run", default=None, help="run name (folder under reports/runs/)")
    s.add_argument("--only", nargs="*", default=None, help="notebook prefixes to run, e.g. 01 02")
    s.add_argument("--refresh-committed", action="store_true",
                   help="copy the executed notebooks back into notebooks/ (their outputs are what nbval checks)")
    s.set_defaults(func=cmd_study)


# --------------------------------------------------------------------------------------- notebook run context
PARAMETER_NAMES = ("run_name", "out_dir", "kdef_root", "fei_root", "assets", "backend", "landmarks", "device",
                   "seed", "n_folds", "epochs", "image_epochs", "image_size", "batch_size", "identity_session",
                   "identity_max_sets", "models", "image_baseline", "synthetic", "fit_modes")


class Run:
    """Where a run's files live. Every notebook builds one from its parameters; each reads what the previous
    notebooks wrote here, so any notebook can be rerun alone."""

    def __init__(self, params: dict):
        self.params = {k: params.get(k) for k in PARAMETER_NAMES}
        self.dir = run_dir(params)
        for sub in ("manifests", "coeffs", "results", "tables"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_namespace(cls, namespace: dict) -> "Run":
        return cls({k: namespace.get(k) for k in PARAMETER_NAMES})

    def __repr__(self) -> str:
        shown = self.dir.relative_to(config.PROJECT_ROOT) if self.dir.is_relative_to(config.PROJECT_ROOT) else self.dir
        return f"Run({shown}, backend={self.params['backend']}, seed={self.params['seed']})"

    def manifest(self, dataset: str) -> Path:
        return self.dir / "manifests" / f"{dataset}.parquet"

    def coeffs(self, dataset: str, fit: str | None = None) -> Path:
        """Coefficient table of a dataset: the backend's raw output, or refined by a fitting mode."""
        variant = self.params["backend"] + (f"+fit_{fit}" if fit else "")
        return self.dir / "coeffs" / f"{dataset}_{variant}.parquet"

    def coefficient_variants(self, dataset: str) -> list[Path]:
        """Raw first, then one table per fitting mode in ``fit_modes``."""
        return [self.coeffs(dataset)] + [self.coeffs(dataset, m) for m in (self.params.get("fit_modes") or [])]

    @property
    def tables(self) -> Path:
        return self.dir / "tables"

    @property
    def figures(self) -> Path:
        return self.dir / "tables"  # figures sit beside the tables so the index page shows them together

    @property
    def results(self) -> Path:
        return self.dir / "results"

    def device(self) -> str:
        return config.resolve_device(self.params.get("device"))


def provenance(run: Run, coeffs: dict) -> dict:
    """What a reader needs to trust (or redo) a table: data, backend, asset checksums, device, parameters."""
    import platform
    import subprocess

    import torch

    from . import __version__

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=config.PROJECT_ROOT, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    data = {}
    for name, table in coeffs.items():
        data[name] = {"images": int(len(table)), "usable": int(table["usable"].sum()),
                      "ok": int((table["status"] == "ok").sum()),
                      "subjects": int(table.loc[table["status"] == "ok", "subject"].nunique()),
                      "root": str(Path(table["path"].iloc[0]).parent.parent) if len(table) else None}
    first = next(iter(coeffs.values()))
    return {
        "synthetic": bool(run.params.get("synthetic")),
        "backend": str(first["backend"].iloc[0]),
        "asset_sha256": json.loads(first["assets"].iloc[0]),
        "data": data,
        "device": run.device(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "facelib": __version__,
        "git_commit": commit,
        "parameters": run.params,
    }
