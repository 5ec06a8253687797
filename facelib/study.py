"""Run the notebook study: papermill executes the numbered notebooks in order into one run folder, nbconvert
renders each to HTML, and the report pages list every run (``report.index``).

``python -m facelib study`` is what ``make reproduce`` calls. The profile (``notebooks/params/*.yaml``) suits the
device unless one is named: ``paper.yaml`` (the faithful study) on a GPU, ``cpu.yaml`` on a CPU when it exists.
``--set key=value`` overrides one parameter (YAML syntax for the value). ``--run NAME`` on an existing run reuses
the parameters it was made with (``reports/runs/NAME/params.yaml``), so ``--run NAME --only 04 05 --set …`` reruns
two notebooks of that run; notebook 04 replaces the run's results only once the new ones are complete
(:meth:`facelib.run.Run.fresh_results`).

Progress of a batch run: papermill streams the kernel's stderr (``stderr_file``) to this terminal as it arrives,
so the library's tqdm bars (reconstruction, fitting, classification runs; rate and ETA) show live — tqdm.auto falls
back to the text bar in a kernel without ipywidgets, and ``facelib`` silences the fallback's warning. A papermill
engine (``facelib``) announces each stage (the markdown heading above the running cell). The executed notebooks
keep their own outputs as before; the terminal gets a copy.
"""
from __future__ import annotations

import difflib
import os
import shutil
import sys
import time
from pathlib import Path

import nbformat
import papermill as pm
import yaml
from jupyter_client.kernelspec import KernelSpecManager
from papermill.engines import NBClientEngine, papermill_engines

from . import assets, config, executor
from .data.datasets import folder_problems
from .data.synthetic import generate_synthetic
from .errors import format_error, notebook_failure
from .face3d import ict
from .report.index import notebook_html, quiet_stderr, write_overview, write_run_page
from .run import PARAMETER_NAMES, PROVENANCE_FILE, project_path, read_status, run_dir, write_status

NOTEBOOK_DIR = config.PROJECT_ROOT / "notebooks"
PARAMS_DIR = NOTEBOOK_DIR / "params"
KERNEL_NAME = "facelib"  # installed by `make env` (ipykernel install --sys-prefix --name facelib)
CI_BANNER_TAG = "ci-banner"
CI_BANNER = ("> **These outputs come from the small CI run** (`notebooks/params/ci.yaml`: the 20-person dev subset "
             "of KDEF and FEI's frontal set, 2 repeats/folds, sampled identity subsets, a 1-epoch R-Net, and only the "
             "cheap convergent models — logistic regression / SVM on coefficients, HOG, Fisherfaces and dlib "
             "baselines on pictures; no ResNet-34), not from the full study; figures that would show dataset faces "
             "are left out. They are what `make test` compares against. **Your run's executed notebooks** are in "
             "`reports/runs/<run>/` after `make reproduce`; `make lab` opens the latest one.")


def notebooks() -> list[Path]:
    return sorted(p for p in NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def load_params(path: str | Path) -> dict:
    params = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(params, dict):
        raise ValueError(f"{path}: expected a mapping of notebook parameters")
    return params


def apply_overrides(params: dict, sets: list[str] | None) -> dict:
    """``["seed=1", "models=[logreg]"]`` → params updated; values are YAML (``null``, numbers, lists). An unknown
    name stops with one line that suggests the closest parameter (``landmarks`` → ``landmark_source``)."""
    given = {}
    for item in sets or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise SystemExit(f"--set {item!r}: expected key=value, e.g. --set seed=1")
        if key not in PARAMETER_NAMES:
            close = difflib.get_close_matches(key, PARAMETER_NAMES, n=1)
            maybe = f" (did you mean '{close[0]}'?)" if close else ""
            raise SystemExit(f"--set {key}: not a notebook parameter{maybe}; known: {', '.join(PARAMETER_NAMES)}")
        given[key] = yaml.safe_load(value) if value.strip() else None
    return {**params, **given}


DEMO_PROFILE = PARAMS_DIR / "demo.yaml"


def demo_when_no_data(params_file, run_name: str | None = None):
    """No profile asked for, no existing run to continue and no dataset configured: the short synthetic demo
    (``demo.yaml``, minutes) rather than the CPU profile on synthetic faces (over an hour)."""
    if params_file is None and previous_params(run_name) is None and DEMO_PROFILE.exists() and not any(
            os.environ.get(env) for env in ("FACELIB_KDEF", "FACELIB_FEI")):
        return DEMO_PROFILE
    return params_file


def choose_profile(device: str | None = None) -> Path:
    """The profile that suits the device: the paper's on a GPU (CUDA or Apple MPS); the CPU profile, when there is
    one, on a CPU."""
    resolved = config.resolve_device(device or os.environ.get("FACELIB_DEVICE"))
    cpu = PARAMS_DIR / "cpu.yaml"
    return PARAMS_DIR / "paper.yaml" if resolved.startswith(("cuda", "mps")) or not cpu.exists() else cpu


def check_params(params: dict) -> None:
    """Parameter values checked before any notebook runs (one-line ValueError): ``aggregators`` and
    ``person_fits`` (each person-consistent fit needs its per-picture landmark fit configured)."""
    from .classify.plan import check_aggregators
    from .fitting.person_fit import check_person_fits

    check_aggregators(params.get("aggregators"))
    check_person_fits(params)


def missing_inputs(params: dict) -> list[str]:
    """Everything the study needs that is not there, each with where to get it and where to put it."""
    problems = []
    if params.get("dataset") == "folder":  # your own dataset instead of KDEF + FEI
        problems += folder_problems(*[project_path(v) if v else None
                                      for v in (params.get("data_root"), params.get("data_csv"))])
    elif not params.get("synthetic"):
        for key, env, what in (("kdef_root", "FACELIB_KDEF", "KDEF images (https://kdef.se, non-commercial)"),
                               ("fei_root", "FACELIB_FEI", "FEI frontal images + fei_gender.csv "
                                                           "(https://fei.edu.br/~cet/facedatabase.html)")):
            value = params.get(key) or os.environ.get(env)
            if not value:
                problems.append(f"{what}: not configured — set {env}=<folder> (see data/README.md)")
            elif not Path(value).expanduser().is_dir():
                problems.append(f"{what}: {value} does not exist — set {env} to the folder holding it")
    if params.get("ict_modes") or params.get("backend") == "ict":
        try:
            ict.locate(None, params.get("assets"))
        except assets.AssetError as exc:
            problems.append(str(exc))
    for name in assets.needed(params.get("backend", "tddfa"), params.get("landmark_source")):
        try:
            assets.resolve(name, params.get("assets"))
        except assets.AssetError as exc:
            problems.append(str(exc))
    return problems


# ------------------------------------------------------------------------------------------ execution, progress
def _stage(nb, index: int) -> str | None:
    """The markdown heading above a cell: what the notebook is doing there."""
    for cell in reversed(nb.cells[:index]):
        if cell.cell_type == "markdown" and CI_BANNER_TAG not in cell.metadata.get("tags", []):
            heading = next((l for l in reversed(cell.source.splitlines()) if l.startswith("#")), None)
            if heading:
                return heading.lstrip("#").strip()[:100]
    return None


class StageEngine(NBClientEngine):
    """papermill's nbclient engine, printing the stage whenever the running cell enters a new one."""

    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
        start, shown = nb_man.cell_start, {"stage": None}

        def cell_start(cell, cell_index=None, **kw):
            stage = _stage(nb_man.nb, cell_index) if cell_index is not None else None
            if stage and stage != shown["stage"]:
                shown["stage"] = stage
                print(f"[study]   · {stage}", file=sys.stderr, flush=True)
            return start(cell, cell_index, **kw)

        nb_man.cell_start = cell_start
        return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)


papermill_engines.register("facelib", StageEngine)


def kernel_name() -> str:
    """The project's kernel when installed (``make env`` does it) and its Python exists, else this interpreter's
    ``python3`` (with one line saying why: a kernel installed from a since-deleted environment points at a Python
    that is gone)."""
    manager = KernelSpecManager()
    if KERNEL_NAME in manager.find_kernel_specs():
        argv = manager.get_kernel_spec(KERNEL_NAME).argv
        if argv and Path(argv[0]).exists():
            return KERNEL_NAME
        print(f"[study] kernel '{KERNEL_NAME}' points at a Python that does not exist ({argv[0] if argv else '?'}; "
              f"`make env` or `.venv/bin/python -m ipykernel install --sys-prefix --name {KERNEL_NAME}` reinstalls "
              "it); using python3", flush=True)
        return "python3"
    print(f"[study] kernel '{KERNEL_NAME}' is not installed (make env installs it); using python3", flush=True)
    return "python3"


def drop_banner(executed: Path) -> None:
    """Remove the committed copies' CI banner from an executed notebook (a user's run is not the CI run)."""
    node = nbformat.read(str(executed), as_version=4)
    kept = [c for c in node.cells if CI_BANNER_TAG not in c.metadata.get("tags", [])]
    if len(kept) != len(node.cells):
        node.cells = kept
        nbformat.write(node, str(executed))


def with_banner(executed: Path, dest: Path) -> None:
    """Copy an executed notebook into notebooks/ with the CI banner as its first cell and the project's kernel."""
    node = nbformat.read(str(executed), as_version=4)
    banner = nbformat.v4.new_markdown_cell(CI_BANNER, metadata={"tags": [CI_BANNER_TAG]})
    node.cells.insert(0, banner)
    node.metadata["kernelspec"] = {"display_name": "facelib (.venv)", "language": "python", "name": KERNEL_NAME}
    strip_pictures(node)
    strip_progress(node)
    nbformat.write(node, str(dest))


def strip_progress(node) -> None:
    """Drop progress-bar stderr (hundreds of ``\\r`` fragments when a network trains) from the cells whose output
    nbval ignores, so the committed notebooks stay readable; compared outputs are left as they are."""
    for cell in node.cells:
        if cell.cell_type == "code" and "nbval-ignore-output" in cell.metadata.get("tags", []):
            cell.outputs = [o for o in cell.get("outputs", []) if not quiet_stderr(o)]


FACES_TAG = "shows-faces"  # a notebook cell whose figure shows dataset faces
PICTURES_REMOVED = "[figure not committed: it shows dataset faces (KDEF/FEI may not be redistributed); " \
                   "`make reproduce` draws it in reports/runs/<run>/]"


def strip_pictures(node) -> None:
    """Remove the image outputs of the cells tagged :data:`FACES_TAG` from a notebook that goes into the
    repository: those figures show KDEF and FEI faces, whose licences forbid redistribution; a one-line note takes
    the picture's place. Every other figure (plots, curves, heatmaps: no face) is kept. Figures sit only in cells
    whose output nbval ignores, so the comparison is unchanged."""
    for cell in node.cells:
        if cell.cell_type != "code" or FACES_TAG not in cell.metadata.get("tags", []):
            continue
        for out in cell.get("outputs", []):
            data = out.get("data") or {}
            if any(k.startswith("image/") for k in data):
                for k in [k for k in data if k.startswith("image/")]:
                    del data[k]
                data["text/plain"] = PICTURES_REMOVED


def _execute(nb: Path, out: Path, params: dict, kernel: str) -> None:

    try:
        pm.execute_notebook(str(nb), str(out), parameters=params, cwd=str(NOTEBOOK_DIR),
                            kernel_name=kernel, engine_name="facelib", progress_bar=False, log_output=False,
                            stderr_file=sys.stderr)
    except pm.PapermillExecutionError as exc:
        raise NotebookFailed(notebook_failure(nb.name, exc.exec_count, exc.ename, exc.evalue, out)) from None
    finally:
        if out.exists():
            drop_banner(out)


class NotebookFailed(RuntimeError):
    pass


def _shown(path: Path) -> Path:
    return path.relative_to(config.PROJECT_ROOT) if path.is_relative_to(config.PROJECT_ROOT) else path


# ------------------------------------------------------------------------------------------------------- study
def previous_params(run_name: str | None) -> Path | None:
    """The parameters an existing run was made with (``reports/runs/<run>/params.yaml``), or None."""
    if not run_name:
        return None
    path = run_dir({"run_name": run_name}) / "params.yaml"
    return path if path.exists() else None


def prepare_params(params_file: str | Path | None, run_name: str | None = None, sets: list[str] | None = None,
                   device: str | None = None) -> tuple[dict, Path]:
    """Profile + ``--set`` overrides + ``--device``; returns (params, file). The profile: ``params_file``; else, when
    ``run_name`` is an existing run, the parameters it was made with (rerunning some of its notebooks keeps them);
    else the one that suits the device."""
    try:
        profile = Path(params_file) if params_file else previous_params(run_name) or choose_profile(device)
    except (ValueError, RuntimeError) as exc:
        raise SystemExit(f"device: {exc}") from None
    params = apply_overrides(load_params(profile), sets)
    if run_name:
        params["run_name"] = run_name
        params.pop("out_dir", None)
    if device:
        params["device"] = device
    elif os.environ.get("FACELIB_DEVICE") and not params.get("device"):
        params["device"] = os.environ["FACELIB_DEVICE"]
    params.setdefault("image_size", None)  # a profile without it leaves the size to the device (64 CPU, 224 GPU)
    try:
        config.resolve_device(params.get("device"))
    except (ValueError, RuntimeError) as exc:
        raise SystemExit(f"device: {exc}") from None
    return params, profile


def run_study(params_file: str | Path | None = None, run_name: str | None = None, refresh_committed: bool = False,
              only: list[str] | None = None, sets: list[str] | None = None, device: str | None = None) -> Path:
    params_file = demo_when_no_data(params_file, run_name)
    params, profile = prepare_params(params_file, run_name, sets, device)
    try:  # a Dask scheduler that cannot be reached: say so before notebook 01, not when notebook 04 needs it
        executor.check(params.get("executor"))
    except executor.ExecutorUnavailable as exc:
        raise SystemExit(format_error(exc)) from None
    configured = [params.get(k) or os.environ.get(env) for k, env in (("kdef_root", "FACELIB_KDEF"),
                                                                       ("fei_root", "FACELIB_FEI"))]
    if not params.get("synthetic") and params.get("dataset") != "folder" and not any(configured):
        print("[study] no dataset configured (FACELIB_KDEF, FACELIB_FEI): running the whole study on the "
              "SYNTHETIC set rendered from the morphable model. Every table says so. See data/README.md to use "
              "KDEF and FEI.", flush=True)
        params["synthetic"] = True
        if not run_name:
            params["run_name"] = "synthetic"
            params.pop("out_dir", None)
    try:  # a parameter value the notebooks would reject: say so before notebook 01, in one line
        check_params(params)
    except ValueError as exc:
        raise SystemExit(f"The study cannot start: {exc}") from None
    problems = missing_inputs(params)
    if problems:
        raise SystemExit("The study cannot start; missing:\n\n" + "\n\n".join(f"- {p}" for p in problems) +
                         "\n\nSee data/README.md, then run `make reproduce` again.")
    print(f"[study] profile {_shown(profile)}, device {config.resolve_device(params.get('device'))}", flush=True)
    if params.get("synthetic"):
        made = generate_synthetic(project_path("data/interim/synthetic"), seed=int(params.get("seed") or 0),
                                  assets_dir=params.get("assets"))
        params["kdef_root"], params["fei_root"] = str(made["kdef_root"]), str(made["fei_root"])
    run = run_dir(params)
    run.mkdir(parents=True, exist_ok=True)
    # Rerunning notebooks of an existing run with its own parameters: it keeps its profile, earlier --set changes
    # and the times of the notebooks not rerun.
    before = read_status(run) if not params_file and previous_params(run_name) == profile else {}
    if before:
        print(f"[study] rerunning run {run.name} with its parameters ({_shown(profile)})", flush=True)
    # Stored relative to the project so executed (and committed) notebooks do not carry this machine's paths.
    params["out_dir"] = str(_shown(run))
    (run / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=True))
    write_status(run, status="running", pid=os.getpid(), notebook=None,
                 profile=before.get("profile") or str(_shown(profile)),
                 overrides=list(before.get("overrides") or []) + list(sets or []),
                 device=config.resolve_device(params.get("device")), synthetic=bool(params.get("synthetic")),
                 started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), finished=None, elapsed={})
    kernel, pages, elapsed = kernel_name(), [], dict(before.get("elapsed") or {}) if only else {}
    try:
        for nb in notebooks():
            if only and not any(nb.name.startswith(o) for o in only):
                continue
            out = run / nb.name
            write_status(run, notebook=nb.stem)
            print(f"[study] {nb.name} → {_shown(out)}", flush=True)
            t0 = time.perf_counter()
            _execute(nb, out, params, kernel)
            elapsed[nb.stem] = round(time.perf_counter() - t0, 1)
            print(f"[study] {nb.name} done in {_elapsed(elapsed[nb.stem])}", flush=True)
            write_status(run, elapsed=elapsed)
            pages.append(notebook_html(out, run / "html"))
            if refresh_committed:
                with_banner(out, nb)
    except NotebookFailed as exc:
        write_status(run, status="failed", elapsed=elapsed)
        _publish(run, pages)
        raise SystemExit(str(exc)) from None
    except BaseException:
        write_status(run, status="failed", elapsed=elapsed)
        _publish(run, pages)
        raise
    write_status(run, status="finished", notebook=None, elapsed=elapsed,
                 finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    index = _publish(run, pages)
    print("[study] time per notebook: " + ", ".join(f"{k} {_elapsed(v)}" for k, v in elapsed.items()))
    print(f"[study] done: {_shown(index)}\n[study] all runs: {_shown(config.REPORTS_DIR / 'index.html')}")
    return run


def _elapsed(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m} min {s:02d} s" if m else f"{seconds:.1f} s"


def _publish(run: Path, pages: list[Path]) -> Path:
    """The run's page, ``reports/tables/`` (the latest finished run's, one run only) and the overview."""
    # every notebook page of the run: those rendered now and, after a partial rerun (--only), the earlier ones
    index = write_run_page(run, sorted(set(pages) | set((run / "html").glob("*.html"))))
    if read_status(run).get("status") == "finished" and (run / "tables").is_dir():
        publish_tables(run, config.REPORTS_DIR / "tables")
    write_overview(config.REPORTS_DIR)
    return index


def publish_tables(run: Path, dest: Path) -> Path:
    """Replace ``dest`` with this run's tables and provenance: never a mix of runs."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in sorted((run / "tables").glob("*")) + [run / PROVENANCE_FILE]:
        if f.is_file():
            shutil.copyfile(f, tmp / f.name)  # new files: the user's umask, not the source's mode
    (tmp / "RUN.txt").write_text(f"These tables are from run {run.name} ({_shown(run)}).\n")
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest
