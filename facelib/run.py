"""A run: where its files live (:class:`Run`), its parameters (:data:`PARAMETER_NAMES`) and its provenance.

What the notebooks import: each builds a ``Run`` from its parameters and reads what the previous notebooks wrote.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import __version__, config
from .classify.precision import choose_precision
from .data.datasets import study_datasets
from .data.synthetic import synthetic_marker
from .errors import FacelibError, format_error
from .io import atomic_write_json

STATUS_FILE = "run.json"  # the runner's record of a run: status, notebook, profile, device, start and end times
PROVENANCE_FILE = "provenance.json"

# --------------------------------------------------------------------------------------- notebook run context
PARAMETER_NAMES = ("run_name", "out_dir", "kdef_root", "fei_root", "assets", "backend", "landmark_source",
                   "device", "seed", "n_folds", "epochs", "image_epochs", "image_size", "batch_size",
                   "identity_session", "identity_max_sets", "models", "image_baseline", "synthetic", "fit_modes",
                   "ict_modes", "dataset", "data_root", "data_csv",
                   "rnet", "rnet_settings", "aggregators", "person_fits", "external", "executor")



def project_path(value: str | Path) -> Path:
    """Relative paths in parameters are relative to the project root, wherever the kernel runs."""
    p = Path(value).expanduser()
    return p if p.is_absolute() else config.PROJECT_ROOT / p



def run_dir(params: dict) -> Path:
    return project_path(params.get("out_dir") or f"reports/runs/{params.get('run_name', 'study')}")



class Run:
    """Where a run's files live. Every notebook builds one from its parameters; each reads what the previous
    notebooks wrote here, so any notebook can be rerun alone."""

    def __init__(self, params: dict):
        self.params = {k: params.get(k) for k in PARAMETER_NAMES}
        self.dir = run_dir(params)
        self._recover_results()
        for sub in ("manifests", "coeffs", "results", "tables", "figures"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_namespace(cls, namespace: dict) -> "Run":
        """A notebook's run from its variables (those named in :data:`PARAMETER_NAMES`)."""
        return cls({k: namespace.get(k) for k in PARAMETER_NAMES})

    def __repr__(self) -> str:
        shown = self.dir.relative_to(config.PROJECT_ROOT) if self.dir.is_relative_to(config.PROJECT_ROOT) else self.dir
        return f"Run({shown}, backend={self.params['backend']}, seed={self.params['seed']})"

    def manifest(self, dataset: str) -> Path:
        return self.dir / "manifests" / f"{dataset}.parquet"

    def coeffs(self, dataset: str, fit: str | None = None, rnet: bool = False) -> Path:
        """Coefficient table of a dataset: the backend's raw output, refined by a fitting mode, or coded by the
        cross-fitted R-Net (``rnet``)."""
        variant = self.params["backend"] + (f"+fit_{fit}" if fit else "") + ("+rnet" if rnet else "")
        return self.dir / "coeffs" / f"{dataset}_{variant}.parquet"

    def coefficient_variants(self, dataset: str) -> list[Path]:
        """Raw first, then one table per fitting mode in ``fit_modes``, then the ICT variants (``ict_modes``), then
        the person-consistent ones (``person_fits``; notebook 02 makes them only for datasets with a Table-1 line
        on β, so only those written are listed), then R-Net's (``rnet``), then the coefficients from outside
        (``external``: those notebook 02 wrote for this dataset)."""
        person = [self.person_coeffs(dataset, v) for v in (self.params.get("person_fits") or [])]
        external = sorted((self.dir / "coeffs").glob(f"{dataset}_ext-*.parquet")) if self.params.get("external") \
            else []
        return ([self.coeffs(dataset)] + [self.coeffs(dataset, m) for m in (self.params.get("fit_modes") or [])]
                + [self.ict_coeffs(dataset, m) for m in (self.params.get("ict_modes") or [])]
                + [p for p in person if p.exists()]
                + ([self.coeffs(dataset, rnet=True)] if self.params.get("rnet") else []) + external)

    def external_coeffs(self, dataset: str, name: str) -> Path:
        """A table of coefficients from outside (:mod:`facelib.face3d.external`, ``external``), named by its method."""
        from .face3d.external import safe_name
        return self.dir / "coeffs" / f"{dataset}_ext-{safe_name(name)}.parquet"

    def person_coeffs(self, dataset: str, which: str) -> Path:
        """Person-consistent table (:mod:`facelib.fitting.person_fit`, ``person_fits``): ``ict`` → ``ict+fit_person``,
        ``tddfa`` → ``<backend>+fit_person``."""
        variant = "ict+fit_person" if which == "ict" else f"{self.params['backend']}+fit_person"
        return self.dir / "coeffs" / f"{dataset}_{variant}.parquet"

    def ict_coeffs(self, dataset: str, mode: str) -> Path:
        """ICT Face Model coefficient table (:mod:`facelib.fitting.ict_fit`): ``ict`` (landmark fit) or
        ``ict+fit_full``."""
        variant = "ict" if mode == "landmarks" else f"ict+fit_{mode}"
        return self.dir / "coeffs" / f"{dataset}_{variant}.parquet"

    @property
    def tables(self) -> Path:
        return self.dir / "tables"

    @property
    def figures(self) -> Path:
        """The report's figures (the Table 3 heatmap, accuracy per angle, training time)."""
        return self.dir / "figures"

    @property
    def results(self) -> Path:
        self._recover_results()
        return self.dir / "results"

    def _recover_results(self) -> None:
        """A swap cut between its two renames leaves ``results`` absent and ``results.old`` whole: take it back."""
        old = self.dir / RESULTS_OLD
        if old.is_dir() and not (self.dir / "results").exists():
            old.rename(self.dir / "results")

    @contextlib.contextmanager
    def fresh_results(self):
        """Yield an empty staging folder for a new set of results; when the block ends without an error, it
        replaces ``results/`` (renamed aside, then the staging folder renamed in, then the old one removed), so the
        folder holds this run's results only. If the block fails or is interrupted, ``results/`` is untouched and
        the staging folder keeps what was finished (cleared at the next start). Nothing is deleted first."""
        self._recover_results()
        staging = self.dir / RESULTS_STAGING
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        yield staging
        results, old = self.dir / "results", self.dir / RESULTS_OLD
        shutil.rmtree(old, ignore_errors=True)
        if results.exists():
            results.rename(old)
        staging.rename(results)
        shutil.rmtree(old, ignore_errors=True)

    def require(self, notebook: str) -> "Run":
        """Check that what ``notebook`` (``"02"``…``"05"``) reads is in this run's folder; else raise
        :class:`MissingRunInputs` naming the command that makes it. Returns the run."""
        stage = str(notebook)[:2]
        datasets = study_datasets(self.params.get("dataset"))
        if stage == "02":
            missing = [p for p in map(self.manifest, datasets) if not p.exists()]
        elif stage in ("03", "04"):
            missing = [p for p in map(self.coeffs, datasets) if not p.exists()]
        elif stage == "05":
            missing = [p for p in (self.tables / "table1.csv",) if not p.exists()] + \
                      ([] if any(self.results.glob("*.json")) else [self.results / "*.json"])
        else:
            missing = []
        if missing:
            raise MissingRunInputs(self, stage, missing)
        return self

    def device(self) -> str:
        return config.resolve_device(self.params.get("device"))

    def provenance(self) -> dict:
        """The run's provenance, computed once from its coefficient tables and kept in ``provenance.json`` (the
        one place the tables, notebook 05 and the index read it from); recomputed when a coefficient table is
        newer or the parameters or profile differ."""
        path = self.dir / PROVENANCE_FILE
        sources = [p for p in map(self.coeffs, study_datasets(self.params.get("dataset"))) if p.exists()]
        if path.exists() and all(p.stat().st_mtime <= path.stat().st_mtime for p in sources):
            kept = json.loads(path.read_text())
            same_run = kept.get("parameters") == json.loads(json.dumps(self.params, default=str)) and \
                kept.get("profile") == read_status(self.dir).get("profile")
            if same_run:
                return kept
        prov = provenance(self, {p.name.split("_")[0]: pd.read_parquet(p) for p in sources})
        atomic_write_json(prov, path)
        return prov



RESULTS_STAGING, RESULTS_OLD = "results.staging", "results.old"  # Run.fresh_results's two neighbours of results/
MAKES = {"02": "01", "03": "01 02", "04": "01 02", "05": "01 02 03 04"}  # which notebooks write a notebook's inputs


class MissingRunInputs(FacelibError):
    """A notebook opened on a run folder that lacks what the earlier notebooks write (e.g. the committed notebooks
    in JupyterLab on a fresh clone): one ``error:`` line naming the missing files, one ``hint:`` naming the
    command that makes them. In a notebook it shows as those two lines, not a traceback."""

    def __init__(self, run: Run, stage: str, missing: list[Path]):
        shown = [str(p.relative_to(config.PROJECT_ROOT)) if p.is_relative_to(config.PROJECT_ROOT) else str(p)
                 for p in missing]
        name = run.dir.name
        profile = config.PROJECT_ROOT / "notebooks" / "params" / f"{name}.yaml"
        if profile.exists():  # a committed profile's run (the committed notebooks: ci)
            command = f"make reproduce PARAMS=notebooks/params/{name}.yaml"
        else:
            command = f"python -m facelib study --run {name} --only {MAKES.get(stage, '')}".strip()
        before = ", ".join(MAKES.get(stage, "").split()) or "before it"
        super().__init__(f"notebook {stage} needs {', '.join(shown[:3])}{' …' if len(shown) > 3 else ''}, "
                         f"which notebooks {before} of run '{name}' write",
                         hint=f"make them with `{command}` (or run notebooks {before} first with the same "
                              "parameters), then run this notebook again")

    def _render_traceback_(self) -> list[str]:  # IPython shows this instead of a traceback
        return format_error(self).splitlines()


def provenance(run: Run, coeffs: dict) -> dict:
    """What a reader needs to trust (or redo) a table: data, backend, asset checksums, device, profile,
    parameters. ``Run.provenance()`` computes it from the run's files and keeps it; call that."""
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
        if synthetic_marker(data[name]["root"]):  # a rendered set passed as a dataset folder
            data[name]["synthetic_marker"] = str(synthetic_marker(data[name]["root"]))
    first = next(iter(coeffs.values()), None)
    has_rows = first is not None and len(first)
    return {
        "run": run.dir.name,
        "profile": read_status(run.dir).get("profile"),
        "overrides": read_status(run.dir).get("overrides") or [],  # `--set key=value` on top of the profile
        "synthetic": bool(run.params.get("synthetic")) or any("synthetic_marker" in d for d in data.values()),
        "backend": str(first["backend"].iloc[0]) if has_rows else run.params.get("backend"),
        "asset_sha256": json.loads(first["assets"].iloc[0]) if has_rows else {},
        "data": data,
        "device": run.device(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "precision": precision_plan(run.device(), run.params.get("image_size")),
        "python": platform.python_version(),
        "facelib": __version__,
        "git_commit": commit,
        "parameters": run.params,
        "executor": run.params.get("executor") or "local",  # where notebooks 02 and 04 ran their batches and splits (facelib.executor)
        # coefficients from outside: method, version, format, group sizes, coverage, file checksums per dataset
        "external": json.loads(ext.read_text()) if (ext := run.dir / "coeffs" / "external.json").exists() else {},
        "coefficient_seconds_per_picture": coefficient_cost(
            [v for name in coeffs for v in run.coefficient_variants(name) if v.exists()]),
    }


def profile_header(profile) -> str:
    """The leading comment of a profile YAML (``# PROFILE: name — what it runs, what it trims``) as plain text,
    '' when the file or comment is missing: the run page shows it, so a trimmed profile says what it trimmed."""
    path = project_path(profile) if profile else None
    if path is None or not path.is_file():
        return ""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(l for l in lines if l)


def precision_plan(device: str, image_size) -> dict:
    """What ``classify.precision.choose_precision`` picks on this run's device for vectors and pictures (each
    result's own ``precision`` in Table 2 is what it actually trained in)."""
    out = {}
    for kind, size in (("vector", None), ("image", image_size)):
        try:
            p = choose_precision(device, kind, int(size) if size else None)
            out[kind] = {"precision": p.name, "channels_last": bool(p.channels_last), "reason": p.reason}
        except Exception as exc:  # noqa: BLE001 — provenance must never fail on an unusual device string
            out[kind] = {"precision": None, "reason": str(exc)}
    return out


def coefficient_cost(tables: list[Path]) -> dict:
    """Seconds per picture of getting each backend's coefficients (Table 2's ``coefficient_seconds_per_picture``):
    the median over a table's coded pictures of the reconstruction (decode + detect + regress, ``recon_seconds``)
    plus, for fitted variants, the per-picture fit (``fit_seconds``; a person-consistent refit adds the per-picture
    fit it starts from, ``prior_fit_seconds``). Pictures reused from the cache keep the time
    measured when they were computed; a backend with no timed picture (caches older than this column, R-Net's
    cross-fitted coding, whose cost is its training) gets None. Over datasets, the median of their medians."""
    per_backend: dict[str, list[float]] = {}
    for path in tables:
        t = pd.read_parquet(path)
        if not len(t) or "backend" not in t.columns:
            continue
        backend = str(t["backend"].iloc[0])
        ok = t[t["status"] == "ok"]
        if "+rnet" in backend or "recon_seconds" not in ok.columns:
            per_backend.setdefault(backend, [])
            continue
        cost = pd.to_numeric(ok["recon_seconds"], errors="coerce")
        for col in ("fit_seconds", "prior_fit_seconds"):
            if col in ok.columns:
                cost = cost + pd.to_numeric(ok[col], errors="coerce")
        cost = cost.dropna()
        per_backend.setdefault(backend, []).extend([float(cost.median())] if len(cost) else [])
    return {b: (round(float(np.median(v)), 5) if v else None) for b, v in per_backend.items()}



# ------------------------------------------------------------------------------------------------ run status
def read_status(folder: str | Path) -> dict:
    """The runner's record of a run (``run.json``); ``{}`` for a folder the runner never wrote one in."""
    path = Path(folder) / STATUS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def write_status(folder: str | Path, **fields) -> dict:
    """Update the run's record; ``updated`` is stamped (ISO 8601, UTC)."""
    status = {**read_status(folder), **fields, "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_json(status, Path(folder) / STATUS_FILE)
    return status


def read_provenance(folder: str | Path) -> dict:
    """A run folder's provenance (``provenance.json``; older runs kept it in ``tables/``); ``{}`` when none."""
    for path in (Path(folder) / PROVENANCE_FILE, Path(folder) / "tables" / PROVENANCE_FILE):
        if path.exists():
            return json.loads(path.read_text())
    return {}


def data_fingerprint(root: str | Path) -> dict:
    """What a dataset folder holds, cheaply: file count, total bytes and a sha256 of the sorted relative paths and
    sizes (no file is read). Equal fingerprints mean the same files (as far as names and sizes tell)."""
    root = Path(root)
    entries = sorted((p.relative_to(root).as_posix(), p.stat().st_size) for p in root.rglob("*")
                     if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
    digest = hashlib.sha256("\n".join(f"{rel}\t{size}" for rel, size in entries).encode()).hexdigest()
    return {"files": len(entries), "bytes": sum(s for _, s in entries), "sha256": digest}
