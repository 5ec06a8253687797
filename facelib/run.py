"""A run: where its files live (:class:`Run`), its parameters (:data:`PARAMETER_NAMES`) and its provenance.

What the notebooks import: each builds a ``Run`` from its parameters and reads what the previous notebooks wrote.
"""
from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import __version__, config
from .io import atomic_write_json

STATUS_FILE = "run.json"  # the runner's record of a run: status, notebook, profile, device, start and end times
PROVENANCE_FILE = "provenance.json"

# --------------------------------------------------------------------------------------- notebook run context
PARAMETER_NAMES = ("run_name", "out_dir", "kdef_root", "fei_root", "assets", "backend", "landmarks", "device",
                   "seed", "n_folds", "epochs", "image_epochs", "image_size", "batch_size", "identity_session",
                   "identity_max_sets", "models", "image_baseline", "synthetic", "fit_modes", "ict_modes",
                   "dataset", "data_root", "data_csv",
                   "rnet", "rnet_settings", "aggregators")



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
        for sub in ("manifests", "coeffs", "results", "tables", "figures"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_namespace(cls, namespace: dict) -> "Run":
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
        R-Net's (``rnet``)."""
        return ([self.coeffs(dataset)] + [self.coeffs(dataset, m) for m in (self.params.get("fit_modes") or [])]
                + [self.ict_coeffs(dataset, m) for m in (self.params.get("ict_modes") or [])]
                + ([self.coeffs(dataset, rnet=True)] if self.params.get("rnet") else []))

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
        return self.dir / "results"

    def device(self) -> str:
        return config.resolve_device(self.params.get("device"))

    def provenance(self) -> dict:
        """The run's provenance, computed once from its coefficient tables and kept in ``provenance.json`` (the
        one place the tables, notebook 05 and the index read it from); recomputed when a coefficient table is
        newer or the parameters or profile differ."""
        path = self.dir / PROVENANCE_FILE
        from .data.datasets import study_datasets  # the data layer sits above the run's bookkeeping
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
    first = next(iter(coeffs.values()), None)
    has_rows = first is not None and len(first)
    return {
        "run": run.dir.name,
        "profile": read_status(run.dir).get("profile"),
        "overrides": read_status(run.dir).get("overrides") or [],  # `--set key=value` on top of the profile
        "synthetic": bool(run.params.get("synthetic")),
        "backend": str(first["backend"].iloc[0]) if has_rows else run.params.get("backend"),
        "asset_sha256": json.loads(first["assets"].iloc[0]) if has_rows else {},
        "data": data,
        "device": run.device(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "facelib": __version__,
        "git_commit": commit,
        "parameters": run.params,
        "coefficient_seconds_per_picture": coefficient_cost(
            [v for name in coeffs for v in run.coefficient_variants(name) if v.exists()]),
    }


def coefficient_cost(tables: list[Path]) -> dict:
    """Seconds per picture of getting each backend's coefficients (Table 2's ``coefficient_seconds_per_picture``):
    the median over a table's coded pictures of the reconstruction (decode + detect + regress, ``recon_seconds``)
    plus, for fitted variants, the per-picture fit (``fit_seconds``). Pictures reused from the cache keep the time
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
        if "fit_seconds" in ok.columns:
            cost = cost + pd.to_numeric(ok["fit_seconds"], errors="coerce")
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
