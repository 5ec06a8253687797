"""Coefficients from outside: another method's per-picture 3DMM coefficients as a backend of the study, and the
study's own coefficient tables exported in the same format (so that a run's coefficients can be shared, compared
and fed back in).

Readers (:func:`read_source`, the format found from the path, or named with ``fmt``):

* ``table`` — a CSV or Parquet file: a ``path`` column (the picture's path relative to the dataset root), then
  columns named by group prefix and index, ``id_0 … id_79``, ``exp_0 …``, optionally ``tex_``, ``pose_``, ``jaw_``,
  ``light_``, ``angle_``, ``trans_``, ``cam_`` (:data:`GROUPS`). This is what :func:`export_table` writes.
* ``npz`` — a NumPy ``.npz`` of named arrays, one row per picture: ``paths`` and any of the group names (``id``,
  ``exp``, …; their long names ``alpha``, ``beta``, ``shape``, ``expression`` are taken too).
* ``deep3d`` — Deep3DFaceRecon_pytorch's output folder: one ``.mat`` per picture (``save_coeff``: ``id`` 1×80,
  ``exp`` 1×64, ``tex`` 1×80, ``angle`` 1×3, ``gamma`` 1×27, ``trans`` 1×3, ``lm68`` 1×68×2), named like the
  picture with ``.mat`` for its extension, in the picture's relative folder or flat.
* ``emoca`` — EMOCA's / DECA's saved codes: one folder per picture, named like the picture without its extension,
  holding ``shape.npy`` (FLAME identity, 100), ``exp.npy`` (50), ``pose.npy`` (6: global rotation + jaw), and
  optionally ``tex.npy``, ``detail.npy``, ``cam.npy``, ``light.npy`` (1-D, or with a leading batch axis of 1).

A small YAML declares the method — ``<file>.yaml`` beside a file source (``kdef.csv`` → ``kdef.yaml``), else
``coefficients.yaml`` beside it or inside a folder source: ``method``, ``version``, optionally ``groups`` (group →
expected width, checked). Every file read is checksummed.

:func:`external_table` matches the coefficients to a dataset's manifest (exact relative path; else the path
without its extension; else a unique file stem) and returns the study's coefficient table (``alpha``, ``beta``, …
per picture, ``backend`` = the method's name, ``status`` ``ok`` or ``no_coefficients``) with a coverage report.
Bad input stops with one line (:class:`ExternalCoefficientsError`): a coefficient row matching no picture, a
picture matched twice, a group of the wrong or uneven width, NaN or infinite values, an unknown group. Pictures
without coefficients are kept as ``no_coefficients`` rows (never used by a classifier) and listed, not dropped.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ..errors import FacelibError

# group prefix → the coefficient table's column (the study's names: alpha identity, beta expression, ...)
GROUPS = {"id": "alpha", "exp": "beta", "tex": "texture", "pose": "pose", "jaw": "jaw", "light": "gamma",
          "angle": "angles", "trans": "translation", "cam": "cam"}
ALIASES = {"alpha": "id", "shape": "id", "identity": "id", "beta": "exp", "expression": "exp", "texture": "tex",
           "gamma": "light", "lighting": "light", "angles": "angle", "translation": "trans"}
DEEP3D_KEYS = {"id": "id", "exp": "exp", "tex": "tex", "angle": "angle", "gamma": "light", "trans": "trans"}
EMOCA_FILES = {"shape": "id", "exp": "exp", "tex": "tex", "pose": "pose", "cam": "cam", "light": "light"}
META_FILE = "coefficients.yaml"
FORMATS = ("table", "npz", "deep3d", "emoca")


class ExternalCoefficientsError(FacelibError, ValueError):
    """Coefficients from outside that cannot be used as they are (one line says which and why)."""


# ------------------------------------------------------------------------------------------------------ reading
def detect_format(path: Path) -> str:
    """``table`` / ``npz`` / ``deep3d`` / ``emoca`` from what is at ``path``."""
    path = Path(path)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".csv", ".parquet", ".pq"):
            return "table"
        if suffix == ".npz":
            return "npz"
        raise ExternalCoefficientsError(f"{path}: not a coefficient file (a .csv/.parquet table or a .npz)",
                                        hint="or give a Deep3DFaceRecon .mat folder / an EMOCA codes folder")
    if not path.is_dir():
        raise ExternalCoefficientsError(f"{path}: no such file or folder")
    if next(path.rglob("*.mat"), None) is not None:
        return "deep3d"
    if next(path.rglob("exp.npy"), None) is not None:
        return "emoca"
    raise ExternalCoefficientsError(f"{path}: a folder with neither .mat files (Deep3DFaceRecon) nor */exp.npy "
                                    "(EMOCA/DECA codes)")


def _group(name: str) -> str:
    g = ALIASES.get(name, name)
    if g not in GROUPS:
        raise ExternalCoefficientsError(f"unknown coefficient group {name!r}; known: {', '.join(GROUPS)} "
                                        f"(or {', '.join(ALIASES)})")
    return g


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _read_table(path: Path) -> tuple[list[str], dict[str, np.ndarray], dict]:
    df = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
    if "path" not in df.columns:
        raise ExternalCoefficientsError(f"{path}: no 'path' column (the picture's path relative to the dataset "
                                        f"root); columns: {', '.join(map(str, df.columns[:8]))}")
    cols: dict[str, list[tuple[int, str]]] = {}
    for c in df.columns:
        if c == "path":
            continue
        m = re.fullmatch(r"([A-Za-z]+)_(\d+)", str(c))
        if not m:
            raise ExternalCoefficientsError(f"{path}: column {c!r} is neither 'path' nor <group>_<index> "
                                            f"(groups: {', '.join(GROUPS)})")
        cols.setdefault(_group(m.group(1)), []).append((int(m.group(2)), str(c)))
    groups = {}
    for g, items in cols.items():
        items.sort()
        if [i for i, _ in items] != list(range(len(items))):
            raise ExternalCoefficientsError(f"{path}: group {g!r} has columns {[c for _, c in items][:5]}…, not "
                                            f"{g}_0 … {g}_{len(items) - 1} without gaps")
        groups[g] = df[[c for _, c in items]].to_numpy(dtype=np.float64)
    return df["path"].astype(str).tolist(), groups, {path.name: _sha(path)}


def _read_npz(path: Path) -> tuple[list[str], dict[str, np.ndarray], dict]:
    with np.load(path, allow_pickle=False) as z:
        if "paths" not in z.files:
            raise ExternalCoefficientsError(f"{path}: no 'paths' array (one relative picture path per row); "
                                            f"arrays: {', '.join(z.files)}")
        paths = [str(p) for p in z["paths"]]
        groups = {}
        for name in z.files:
            if name == "paths":
                continue
            a = np.asarray(z[name], dtype=np.float64)
            a = a.reshape(len(a), -1) if a.ndim > 2 else (a[:, None] if a.ndim == 1 else a)
            if len(a) != len(paths):
                raise ExternalCoefficientsError(f"{path}: array {name!r} has {len(a)} rows for {len(paths)} paths")
            groups[_group(name)] = a
    return paths, groups, {path.name: _sha(path)}


def _stack(per_picture: list[dict[str, np.ndarray]], keys: list[str], where: Path) -> dict[str, np.ndarray]:
    """Per-picture arrays → one 2-D array per group (a group every picture has)."""
    out = {}
    for g in sorted({g for d in per_picture for g in d}):
        have = [i for i, d in enumerate(per_picture) if g in d]
        if len(have) != len(per_picture):
            missing = keys[next(i for i in range(len(per_picture)) if g not in per_picture[i])]
            raise ExternalCoefficientsError(f"{where}: group {g!r} is missing for {missing} "
                                            f"({len(per_picture) - len(have)} of {len(per_picture)} pictures)")
        widths = {d[g].size for d in per_picture}
        if len(widths) > 1:
            bad = keys[next(i for i, d in enumerate(per_picture) if d[g].size != per_picture[0][g].size)]
            raise ExternalCoefficientsError(f"{where}: group {g!r} has uneven widths {sorted(widths)} (e.g. {bad})")
        out[g] = np.stack([d[g].ravel() for d in per_picture]).astype(np.float64)
    return out


def _read_deep3d(folder: Path) -> tuple[list[str], dict[str, np.ndarray], dict]:
    from scipy.io import loadmat
    files = sorted(folder.rglob("*.mat"))
    keys, rows, sums = [], [], {}
    for f in files:
        m = loadmat(str(f))
        d = {DEEP3D_KEYS[k]: np.asarray(m[k], dtype=np.float64) for k in DEEP3D_KEYS if k in m}
        if "id" not in d and "exp" not in d:
            raise ExternalCoefficientsError(f"{f}: no 'id' or 'exp' array (Deep3DFaceRecon's save_coeff keys: "
                                            f"{', '.join(DEEP3D_KEYS)}, lm68)")
        keys.append(f.relative_to(folder).with_suffix("").as_posix())
        rows.append(d)
        sums[f.relative_to(folder).as_posix()] = _sha(f)
    return keys, _stack(rows, keys, folder), sums


def _read_emoca(folder: Path) -> tuple[list[str], dict[str, np.ndarray], dict]:
    dirs = sorted({p.parent for p in folder.rglob("exp.npy")})
    keys, rows, sums = [], [], {}
    for d in dirs:
        codes = {}
        for name, g in EMOCA_FILES.items():
            f = d / f"{name}.npy"
            if f.exists():
                a = np.load(f, allow_pickle=False)
                codes[g] = np.asarray(a[0] if a.ndim == 2 and len(a) == 1 else a, dtype=np.float64)
                sums[f.relative_to(folder).as_posix()] = _sha(f)
        if "pose" in codes and codes["pose"].size == 6:  # FLAME: global rotation 3 + jaw 3
            codes["jaw"] = codes["pose"][3:]
        keys.append(d.relative_to(folder).as_posix())
        rows.append(codes)
    return keys, _stack(rows, keys, folder), sums


READERS = {"table": _read_table, "npz": _read_npz, "deep3d": _read_deep3d, "emoca": _read_emoca}


def meta_path(path: Path) -> Path:
    """Where a source's declaration is: ``<file>.yaml`` beside a file (``kdef.csv`` → ``kdef.yaml``), else
    ``coefficients.yaml`` beside it or inside a folder."""
    path = Path(path)
    if path.is_file() and path.with_suffix(".yaml").is_file():
        return path.with_suffix(".yaml")
    return (path if path.is_dir() else path.parent) / META_FILE


def read_meta(path: Path) -> dict:
    """The source's declaration (:func:`meta_path`): method, version, groups; {} when absent."""
    meta = meta_path(path)
    return (yaml.safe_load(meta.read_text()) or {}) if meta.is_file() else {}


def read_source(path, fmt: str | None = None) -> dict:
    """``{"keys", "groups", "checksums", "format", "meta"}`` of a coefficient source (module docstring)."""
    path = Path(path).expanduser()
    fmt = fmt or detect_format(path)
    if fmt not in READERS:
        raise ExternalCoefficientsError(f"unknown coefficient format {fmt!r}; known: {', '.join(FORMATS)}")
    keys, groups, sums = READERS[fmt](path)
    if not keys:
        raise ExternalCoefficientsError(f"{path}: no coefficients in it")
    if "id" not in groups and "exp" not in groups:
        raise ExternalCoefficientsError(f"{path}: neither identity ('id') nor expression ('exp') coefficients")
    meta = read_meta(path)
    for g, a in groups.items():
        bad = ~np.isfinite(a).all(axis=1)
        if bad.any():
            raise ExternalCoefficientsError(f"{path}: group {g!r} has NaN or infinite values for {int(bad.sum())} "
                                            f"picture(s), e.g. {keys[int(np.flatnonzero(bad)[0])]}")
        want = (meta.get("groups") or {}).get(g)
        if want is not None and a.shape[1] != int(want):
            raise ExternalCoefficientsError(f"{path}: group {g!r} is {a.shape[1]} wide; {META_FILE} declares "
                                            f"{int(want)}")
    return {"keys": keys, "groups": groups, "checksums": sums, "format": fmt, "meta": meta}


# ----------------------------------------------------------------------------------------------------- matching
def _norm(p: str) -> str:
    return str(p).replace("\\", "/").lstrip("./")


def match_keys(keys: list[str], relpaths: list[str]) -> np.ndarray:
    """For each coefficient key, the manifest row it belongs to: the same relative path, else the same path
    without its extension, else the same file stem when only one picture has it. A key that matches nothing and
    two keys on one picture are errors."""
    rel = [_norm(r) for r in relpaths]
    exact = {r: i for i, r in enumerate(rel)}
    no_ext: dict[str, list[int]] = {}
    stems: dict[str, list[int]] = {}
    for i, r in enumerate(rel):
        no_ext.setdefault(str(Path(r).with_suffix("")), []).append(i)
        stems.setdefault(Path(r).stem, []).append(i)
    out, unmatched = np.full(len(keys), -1), []
    for j, key in enumerate(keys):
        k = _norm(key)
        if k in exact:
            out[j] = exact[k]
            continue
        for cand in (no_ext.get(k, []), no_ext.get(str(Path(k).with_suffix("")), []), stems.get(Path(k).stem, [])):
            if len(cand) == 1:
                out[j] = cand[0]
                break
        else:
            unmatched.append(key)
    if unmatched:
        raise ExternalCoefficientsError(f"{len(unmatched)} coefficient row(s) match no picture of the dataset, e.g. "
                                        f"{', '.join(map(repr, unmatched[:3]))}",
                                        hint="paths must be relative to the dataset root (as the manifest's relpath)")
    seen: dict[int, str] = {}
    for j, i in enumerate(out):
        if i in seen:
            raise ExternalCoefficientsError(f"picture {relpaths[i]!r} has coefficients twice ({seen[i]!r} and "
                                            f"{keys[j]!r})")
        seen[int(i)] = keys[j]
    return out


def external_table(manifest: pd.DataFrame, source, name: str | None = None, fmt: str | None = None) -> tuple[
        pd.DataFrame, dict]:
    """The study's coefficient table of ``manifest``'s pictures from ``source`` (module docstring), and its report:
    ``method``, ``version``, ``format``, ``group_sizes``, ``coverage`` (pictures with coefficients / usable
    pictures), ``missing`` (relative paths of usable pictures without), ``checksums``."""
    src = read_source(source, fmt)
    rel_col = "relpath" if "relpath" in manifest.columns else "path"
    rows = match_keys(src["keys"], manifest[rel_col].astype(str).tolist())
    method = safe_name(name or src["meta"].get("method") or Path(source).stem)
    t = manifest.copy().reset_index(drop=True)
    for g, a in src["groups"].items():
        col = [None] * len(t)
        for j, i in enumerate(rows):
            col[i] = a[j]
        t[GROUPS[g]] = col
    has = np.zeros(len(t), dtype=bool)
    has[rows] = True
    usable = t["usable"].fillna(False).astype(bool).to_numpy() if "usable" in t.columns else np.ones(len(t), bool)
    t["status"] = np.where(has, "ok", "no_coefficients")
    t["backend"] = method
    missing = t.loc[usable & ~has, rel_col].astype(str).tolist()
    report = {"method": method, "version": str(src["meta"].get("version") or ""), "format": src["format"],
              "source": str(source), "group_sizes": {GROUPS[g]: int(a.shape[1]) for g, a in src["groups"].items()},
              "coverage": [int((has & usable).sum()), int(usable.sum())], "missing": missing,
              "checksums": src["checksums"]}
    return t, report


def coverage_line(dataset: str, report: dict) -> str:
    """``kdef: 690 of 698 usable pictures have deep3d coefficients; 8 without (logged, not used): …``."""
    have, of = report["coverage"]
    line = f"{dataset}: {have} of {of} usable pictures have {report['method']} coefficients"
    if report["missing"]:
        shown = ", ".join(report["missing"][:5]) + (" …" if len(report["missing"]) > 5 else "")
        line += f"; {len(report['missing'])} without (kept as no_coefficients, never classified): {shown}"
    return line


# ----------------------------------------------------------------------------------------------------- export
EXPORT_COLUMNS = {v: k for k, v in GROUPS.items()}  # coefficient table column → group prefix


def export_table(coeffs: pd.DataFrame, out, method: str | None = None, version: str = "") -> Path:
    """Write a coefficient table's usable pictures (``status`` ok) in the ``table`` format (CSV, or Parquet for
    ``.parquet``): ``path`` relative to the dataset root, then ``<group>_<i>`` for every group the table has, and
    ``<file>.yaml`` beside it (method, version, group sizes). Reading it back with :func:`external_table`
    gives the same coefficients, bit for bit (CSV floats are written in their shortest exact form)."""
    out = Path(out)
    ok = coeffs[coeffs["status"].astype(str) == "ok"] if "status" in coeffs.columns else coeffs
    rel = ok["relpath"] if "relpath" in ok.columns else ok["path"]
    frame = {"path": rel.astype(str).to_numpy()}
    sizes = {}
    for col, g in EXPORT_COLUMNS.items():
        if col not in ok.columns or ok[col].isna().any():
            continue
        a = np.stack([np.asarray(v, dtype=np.float64).ravel() for v in ok[col]])
        sizes[g] = int(a.shape[1])
        frame.update({f"{g}_{i}": a[:, i] for i in range(a.shape[1])})
    df = pd.DataFrame(frame)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() in (".parquet", ".pq"):
        df.to_parquet(out, index=False)
    else:
        df.to_csv(out, index=False, float_format=None)
    backend = method or (str(coeffs["backend"].iloc[0]) if "backend" in coeffs.columns and len(coeffs) else "")
    out.with_suffix(".yaml").write_text(yaml.safe_dump(
        {"method": backend, "version": version, "groups": sizes, "exported_from": "facelib"}, sort_keys=False))
    return out


# ------------------------------------------------------------------------------------------------- the study
def specs(external) -> list[dict]:
    """The ``external`` parameter checked: a list of ``{name, <dataset>: path, format}`` (coefficients a user brings,
    per dataset: ``kdef``, ``fei``, ``folder``) or ``{name, export: <variant>}`` (this run's own ``tddfa`` /
    ``ict`` table exported and read back through the same reader: the round trip, on real data)."""
    if not external:
        return []
    if isinstance(external, dict):
        external = [external]
    out = []
    for i, s in enumerate(external):
        if not isinstance(s, dict):
            raise ExternalCoefficientsError(f"external[{i}] is {s!r}: give a mapping such as "
                                            "{name: deep3d, kdef: path/to/kdef.csv, fei: path/to/fei.csv}")
        unknown = set(s) - {"name", "format", "export", "kdef", "fei", "folder"}
        if unknown:
            raise ExternalCoefficientsError(f"external[{i}]: unknown key(s) {sorted(unknown)}; known: name, format, "
                                            "export, kdef, fei, folder")
        if not s.get("export") and not any(s.get(d) for d in ("kdef", "fei", "folder")):
            raise ExternalCoefficientsError(f"external[{i}]: no coefficient path (kdef / fei / folder) and no export")
        if s.get("format") and s["format"] not in FORMATS:
            raise ExternalCoefficientsError(f"external[{i}]: unknown format {s['format']!r}; known: {', '.join(FORMATS)}")
        out.append(dict(s))
    return out


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", str(name)).strip("-") or "external"


def study_external(run, manifests: dict[str, pd.DataFrame], external, exported: dict | None = None,
                   log=print) -> tuple[dict, dict]:
    """Notebook 02's step for coefficients from outside: for every spec (:func:`specs`) and dataset, the study's
    table written to ``run.external_coeffs(dataset, name)``, one coverage line each, and every report in
    ``coeffs/external.json`` (provenance). ``exported``: variant → {dataset: table} for ``export`` specs."""
    import json

    from ..io import atomic_write_json, atomic_write_table
    tables, reports = {}, {}
    for spec in specs(external):
        for dataset, manifest in manifests.items():
            if spec.get("export"):
                source_table = (exported or {}).get(spec["export"], {}).get(dataset)
                if source_table is None:
                    raise ExternalCoefficientsError(f"external export {spec['export']!r}: this run has no such "
                                                    f"table for {dataset} (tddfa, or ict with ict_modes [landmarks])")
                source = export_table(source_table, run.dir / "coeffs" / "exported" / f"{dataset}_{spec['export']}.csv",
                                      method=spec.get("name") or f"{spec['export']}-export")
            elif spec.get(dataset):
                source = Path(spec[dataset]).expanduser()
            else:
                log(f"{dataset}: external {spec.get('name', '?')} gives no coefficients for this dataset (skipped)")
                continue
            table, report = external_table(manifest, source, name=spec.get("name") or (
                f"{spec['export']}-export" if spec.get("export") else None), fmt=spec.get("format"))
            name = report["method"]
            atomic_write_table(table, run.external_coeffs(dataset, name))
            tables[(dataset, name)] = table
            reports[f"{dataset}:{name}"] = {k: v for k, v in report.items() if k != "missing"} | {
                "n_missing": len(report["missing"]), "missing_first": report["missing"][:20]}
            log(coverage_line(dataset, report))
    if reports:
        atomic_write_json(json.loads(json.dumps(reports, default=str)), run.dir / "coeffs" / "external.json")
    return tables, reports
