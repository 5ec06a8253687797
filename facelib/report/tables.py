"""Results → the paper's Tables 1–3 (CSV + Markdown beside the paper's figures), figures, provenance.

Inputs are the dicts :func:`facelib.classify.trainer.run_task` returns (or the JSON files ``train.save_result`` writes).
Outputs in ``out_dir``:

* ``table1.csv`` — ``task, protocol, input, model, backend, accuracy_mean, accuracy_std, n_folds, n_train,
  n_test`` (accuracy as a 0–1 fraction); ``table1.md`` adds the paper's figure for each paper-protocol row.
* ``table2.csv`` — ``task, input, model, device, seconds_per_input, seconds_per_epoch``; ``table2.md`` with
  the paper's (Apple M1/MPS) times beside ours.
* ``table3.csv`` — 7×7 percent (rows true AF AN DI HA NE SA SU, columns predicted; each row sums to 100),
  ``table3_counts.csv`` — the counts summed over folds; ``table3.md`` with the paper's diagonal.
* the figures drawn from these tables are made by ``figures.write_report_figures`` (no plotting here).
* ``provenance.json`` — the ``provenance`` dict (backend, asset checksums, image counts, device, parameters,
  seed, ``synthetic``); each Markdown file starts with it as an HTML comment. When ``provenance["synthetic"]``
  is true every title says SYNTHETIC.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_path, atomic_write_json
from ..vocab import EXPRESSIONS

TABLE1_COLUMNS = ["task", "protocol", "input", "model", "backend", "aggregator", "accuracy_mean", "accuracy_std",
                  "n_folds", "n_train", "n_test"]
TABLE2_COLUMNS = ["task", "input", "model", "device", "seconds_per_input", "seconds_per_epoch"]

# The paper's figures (REFERENCE.md). Table 1: accuracy (0–1) with images vs with 3DMM coefficients.
PAPER_TABLE1 = {
    "identity": {"images": 0.873, "coefficients": 1.000, "coefficient_input": "alpha"},
    "expression": {"images": 0.706, "coefficients": 0.835, "coefficient_input": "beta"},
    "gender": {"images": 0.798, "coefficients": 0.954, "coefficient_input": "alpha"},
}
# Table 2: training time per input (s) and per epoch (s, a range where the paper gives one; None: not given),
# on an Apple M1 (MPS).
PAPER_TABLE2 = {
    "identity": {"images": {"seconds_per_input": 0.054, "seconds_per_epoch": None},
                 "coefficients": {"seconds_per_input": 0.005, "seconds_per_epoch": None}},
    "expression": {"images": {"seconds_per_input": 0.062, "seconds_per_epoch": (150.76, 219.61)},
                   "coefficients": {"seconds_per_input": 0.001, "seconds_per_epoch": (4.05, 4.33)}},
    "gender": {"images": {"seconds_per_input": 0.006, "seconds_per_epoch": (79.10, 99.56)},
               "coefficients": {"seconds_per_input": 0.003, "seconds_per_epoch": (38.18, 44.56)}},
}
PAPER_DEVICE = "Apple M1 (mps)"
# Table 3: only the diagonal (percent of each true expression predicted correctly) is recorded in REFERENCE.md.
PAPER_TABLE3_DIAGONAL = {"AF": 75.26, "AN": 65.00, "DI": 86.75, "HA": 95.77, "NE": 93.22, "SA": 80.57, "SU": 85.78}
PAPER_TABLE3 = pd.DataFrame(np.diag([PAPER_TABLE3_DIAGONAL[e] for e in EXPRESSIONS]), index=list(EXPRESSIONS),
                            columns=list(EXPRESSIONS)).where(np.eye(7, dtype=bool))  # off-diagonal: not recorded


# -------------------------------------------------------------------------------------------------- loading
def load_results(path: str | Path) -> list[dict]:
    """Every result JSON in a folder (or one file), sorted by name."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.glob("*.json"))
    out = []
    for f in files:
        if f.name == "provenance.json":
            continue
        d = json.loads(f.read_text())
        if {"task", "protocol", "accuracy_mean"} <= set(d):
            out.append(d)
    return out


def _kind(input: str) -> str:
    return "images" if input == "image" else "coefficients"


# ---------------------------------------------------------------------------------------------------- tables
def table1(results: list[dict]) -> pd.DataFrame:
    """One row per result: exactly ``TABLE1_COLUMNS``."""
    rows = [{c: r.get(c) for c in TABLE1_COLUMNS} for r in results]
    return pd.DataFrame(rows, columns=TABLE1_COLUMNS)


def table2(results: list[dict]) -> pd.DataFrame:
    """Training cost per (task, input, model, device); the ``paper`` protocol's run where there are several."""
    chosen: dict[tuple, dict] = {}
    for r in results:
        key = (r["task"], r["input"], r["model"], r.get("device", "cpu"))
        if key not in chosen or (r.get("protocol") == "paper" and chosen[key].get("protocol") != "paper"):
            chosen[key] = r
    rows = [{"task": k[0], "input": k[1], "model": k[2], "device": k[3],
             "seconds_per_input": v.get("seconds_per_input"), "seconds_per_epoch": v.get("seconds_per_epoch")}
            for k, v in chosen.items()]
    return pd.DataFrame(rows, columns=TABLE2_COLUMNS)


def pick_table3_result(results: list[dict]) -> dict | None:
    """The expression result Table 3 is drawn from: paper protocol, β, ResNet-34 first."""
    expr = [r for r in results if r["task"] == "expression" and r.get("confusion")]
    if not expr:
        return None

    def rank(r):
        return (r.get("protocol") != "paper", r.get("input") != "beta", r.get("model") != "resnet34",
                "+fit" in str(r.get("backend")), str(r.get("backend")).startswith("ict"))

    return sorted(expr, key=rank)[0]


def table3(result: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(percent, counts): 7×7, rows true AF…SU, columns predicted; a row of percent sums to 100 (NaN if empty)."""
    classes = list(result["classes"])
    counts = pd.DataFrame(np.asarray(result["confusion"], dtype=np.int64), index=classes, columns=classes)
    counts = counts.reindex(index=list(EXPRESSIONS), columns=list(EXPRESSIONS), fill_value=0)
    counts.index.name = "true"
    totals = counts.sum(axis=1).replace(0, np.nan)
    percent = counts.div(totals, axis=0) * 100.0
    percent.index.name = "true"
    return percent, counts


# --------------------------------------------------------------------------------------------------- markdown
def _fmt(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, (tuple, list)):
        return "–".join(_fmt(x, digits) for x in v)
    if isinstance(v, (float, np.floating)):
        return f"{v:.{digits}g}" if abs(v) < 1e-3 and v != 0 else f"{v:.{digits}f}".rstrip("0").rstrip(".")
    return str(v)


def markdown_table(df: pd.DataFrame, index: bool = False, digits: int = 4) -> str:
    d = df.reset_index() if index else df
    header = "| " + " | ".join(map(str, d.columns)) + " |"
    sep = "|" + "|".join("---" for _ in d.columns) + "|"
    body = ["| " + " | ".join(_fmt(v, digits) for v in row) + " |" for row in d.itertuples(index=False)]
    return "\n".join([header, sep, *body])


def _title(text: str, provenance: dict) -> str:
    return f"SYNTHETIC — {text} (synthetic data, not a result)" if provenance.get("synthetic") else text


def _header(provenance: dict) -> str:
    return "<!-- provenance: " + json.dumps(provenance, sort_keys=True, default=str).replace("--", "- -") + " -->\n"


def table1_display(t1: pd.DataFrame) -> pd.DataFrame:
    """Table 1 for reading: accuracy as "mean ± std %", the paper's figure beside each comparable row."""
    d = t1.copy()
    d["accuracy"] = [f"{100 * m:.1f} ± {100 * s:.1f} %" if m == m else "—"
                     for m, s in zip(d["accuracy_mean"], d["accuracy_std"].fillna(0))]

    def paper(row):
        p = PAPER_TABLE1.get(row["task"])
        if p is None or row["protocol"] != "paper":
            return "—"
        kind = _kind(row["input"])
        if kind == "coefficients" and row["input"] != p["coefficient_input"]:
            return "—"
        return f"{100 * p[kind]:.1f} %"

    d["paper"] = d.apply(paper, axis=1) if len(d) else []
    cols = ["task", "protocol", "input", "model", "backend", "aggregator", "accuracy", "paper", "n_folds", "n_train",
            "n_test"]
    return d[[c for c in cols if c in d.columns]]  # tables written before the aggregator column have none


def table1_markdown(t1: pd.DataFrame, provenance: dict) -> str:
    d = table1_display(t1)
    cols = list(d.columns)
    return (_header(provenance) + f"# {_title('Table 1 — classification accuracy (mean ± std over folds)', provenance)}\n\n"
            + markdown_table(d[cols]) + "\n\nPaper: " + "; ".join(
                f"{t} {100 * v['images']:.1f} % (images) → {100 * v['coefficients']:.1f} % ({v['coefficient_input']})"
                for t, v in PAPER_TABLE1.items())
            + ". The paper's protocols (`paper`) leak identity for expression; the other protocols do not.\n")


def table2_markdown(t2: pd.DataFrame, provenance: dict) -> str:
    d = t2.copy()

    def paper(row, what):
        p = PAPER_TABLE2.get(row["task"], {}).get(_kind(row["input"]), {})
        return p.get(what)

    d["paper_seconds_per_input"] = d.apply(lambda r: paper(r, "seconds_per_input"), axis=1)
    d["paper_seconds_per_epoch"] = d.apply(lambda r: paper(r, "seconds_per_epoch"), axis=1)
    return (_header(provenance) + f"# {_title('Table 2 — training time', provenance)}\n\n" + markdown_table(d)
            + f"\n\nPaper times were measured on {PAPER_DEVICE}; ours on the device column "
              "(seconds per training input per epoch, and seconds per epoch).\n")


def table3_markdown(percent: pd.DataFrame, counts: pd.DataFrame, provenance: dict, source: dict | None) -> str:
    d = percent.copy()
    d["paper_diagonal"] = [PAPER_TABLE3_DIAGONAL[e] for e in d.index]
    d["n"] = counts.sum(axis=1)
    src = (f"from {source['task']}/{source['protocol']}/{source['input']}/{source['model']}, confusion summed over "
           f"{source.get('n_folds')} folds" if source else "")
    return (_header(provenance) + f"# {_title('Table 3 — expression confusion matrix (percent of each true row)', provenance)}\n\n"
            + markdown_table(d, index=True, digits=2)
            + f"\n\nRows: true expression; columns: predicted. {src}. `paper_diagonal`: the paper's diagonal.\n")


# ------------------------------------------------------------------------------------------------------ write
def _csv(df: pd.DataFrame, dest: Path, index: bool = False) -> Path:
    with atomic_path(dest) as tmp:
        df.to_csv(tmp, index=index)
    return dest


def _text(text: str, dest: Path) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_text(text)
    return dest


def write_provenance(provenance: dict, out_dir: str | Path) -> Path:
    return atomic_write_json(provenance, Path(out_dir) / "provenance.json")


def _write_csv_md(name: str, frame: pd.DataFrame, markdown: str, out_dir: Path, provenance: dict) -> dict:
    """``<name>.csv``, ``<name>.md`` and the provenance beside them; returns their paths."""
    return {f"{name}_csv": _csv(frame, out_dir / f"{name}.csv"), f"{name}_md": _text(markdown, out_dir / f"{name}.md"),
            "provenance": write_provenance(provenance, out_dir)}


def write_table1(results: list[dict], out_dir: str | Path, provenance: dict | None = None) -> dict:
    out_dir, provenance = Path(out_dir), dict(provenance or {})
    t1 = table1(results)
    return _write_csv_md("table1", t1, table1_markdown(t1, provenance), out_dir, provenance)


def write_table2(results: list[dict], out_dir: str | Path, provenance: dict | None = None) -> dict:
    out_dir, provenance = Path(out_dir), dict(provenance or {})
    t2 = table2(results)
    return _write_csv_md("table2", t2, table2_markdown(t2, provenance), out_dir, provenance)


def write_table3(results: list[dict] | dict, out_dir: str | Path, provenance: dict | None = None) -> dict:
    out_dir, provenance = Path(out_dir), dict(provenance or {})
    source = results if isinstance(results, dict) else pick_table3_result(results)
    paths = {"provenance": write_provenance(provenance, out_dir)}
    if source is None:
        return paths
    percent, counts = table3(source)
    paths.update(table3_csv=_csv(percent, out_dir / "table3.csv", index=True),
                 table3_counts_csv=_csv(counts, out_dir / "table3_counts.csv", index=True),
                 table3_md=_text(table3_markdown(percent, counts, provenance, source), out_dir / "table3.md"))
    return paths


def write_tables(results: list[dict] | str | Path, out_dir: str | Path, provenance: dict | None = None) -> dict:
    """All three tables, their Markdown, the figures and ``provenance.json`` in ``out_dir``; returns the paths."""
    if isinstance(results, (str, Path)):
        results = load_results(results)
    paths = {}
    paths.update(write_table1(results, out_dir, provenance))
    paths.update(write_table2(results, out_dir, provenance))
    paths.update(write_table3(results, out_dir, provenance))
    return paths
