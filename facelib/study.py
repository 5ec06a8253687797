"""Run the notebook study: papermill executes the numbered notebooks in order into one run folder, nbconvert
renders each to HTML, and an index page shows Tables 1–3 first and links every notebook.

``python -m facelib study --params notebooks/params/paper.yaml`` is what ``make reproduce`` calls.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

from . import assets, config
from .data.synthetic import generate_synthetic
from .face3d import ict
from .report.index import notebook_html, write_index
from .run import project_path, run_dir

NOTEBOOK_DIR = config.PROJECT_ROOT / "notebooks"
PARAMS_DIR = NOTEBOOK_DIR / "params"


def notebooks() -> list[Path]:
    return sorted(p for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def load_params(path: str | Path) -> dict:
    params = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(params, dict):
        raise ValueError(f"{path}: expected a mapping of notebook parameters")
    return params


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
    if params.get("ict_modes") or backend == "ict":
        try:
            ict.locate(None, params.get("assets"))
        except assets.AssetError as exc:
            problems.append(str(exc))
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
        pages.append(notebook_html(out, run / "html"))
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
