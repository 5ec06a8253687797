"""Results → the paper's Tables 1–3 (CSV + Markdown beside the paper's figures), figures, provenance.

Inputs are the :class:`~facelib.classify.experiment.TaskResult` dicts (``to_dict()``, or the JSON files
``facelib.classify.results.save_result`` writes). ``write_tables`` first clears the previous run's table files.
This module builds and writes Tables 1–3 and is where callers import every table name from; the parts live in
:mod:`facelib.report.paper` (the paper's figures, :func:`paper_figure`), :mod:`facelib.report.markdown` (cell format,
tables, titles, the provenance comment) and :mod:`facelib.report.table1_display` (Table 1's display forms, footnotes,
glossary and protocol table), re-exported here.
Outputs in ``out_dir``:

* ``verdict.csv`` — the study's answer per task, protocol and k (:mod:`facelib.report.verdict`: each arm's
  clean row chosen on validation, compared paired on the same splits).
* ``table1.csv`` — ``TABLE1_COLUMNS`` (defined one by one in :data:`TABLE1_GLOSSARY`): one row per result and
  k (accuracy as a 0–1 fraction; ``accuracy_std`` over repeats/folds; ``ci_low``/``ci_high`` a 95 % interval from
  resampling people for a single split and for pooled folds), ``leak_free`` (protocol leak-free and nothing
  transductive), ``tuned_on_test``, training caps and facts, fit / validation / test counts, ``transductive``,
  ``synthetic``; ``table1.md`` adds the paper's figure only beside the rows that repeat the paper's experiment
  (:func:`paper_figure`) and the footnotes (:func:`table1_footnotes`).
* ``table2.csv`` — ``TABLE2_COLUMNS`` (what one input is, batch size, image size, device, threads, the per-picture
  cost of getting coefficients); ``table2.md`` with the paper's (Apple M1/MPS) times beside its own rows only.
* ``table3.csv`` — 7×7 percent (rows true AF AN DI HA NE SA SU, columns predicted; each row sums to 100),
  ``table3_counts.csv`` — the counts summed over folds; ``table3.md`` with the paper's diagonal.
* the figures drawn from these tables are made by ``figures.write_report_figures`` (no plotting here).
* display forms: :func:`table1_explained` (the page's and ``table1.md``'s Table 1: ``chance``, the paper's figures
  for the row's task and protocol as a reference — ``paper_coefficients``, ``paper_images`` —, picture baselines
  named as such), :data:`TABLE1_GLOSSARY` (every column in words; docs/reading.md and pages), :data:`PROTOCOL_TABLE`.
* ``provenance.json`` — the ``provenance`` dict (backend, asset checksums, image counts, device, parameters,
  seed, ``synthetic``); each Markdown file starts with it as an HTML comment. When ``provenance["synthetic"]``
  is true every title says SYNTHETIC.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_path, atomic_write_json
from ..vocab import EXPRESSIONS
from .records import table1_records
from .verdict import reconstructions_table, verdict_table
from .markdown import format_value, markdown_table, provenance_header, synthetic_title
from .paper import (PAPER_AGGREGATOR, PAPER_BACKENDS, PAPER_DATASET, PAPER_DEVICE, PAPER_IMAGE_SIZE, PAPER_K,
                    PAPER_TABLE1, PAPER_TABLE2, PAPER_TABLE3, PAPER_TABLE3_DIAGONAL, paper_figure, paper_reference)
from .table1_display import (FOOTNOTE_CAPS, FOOTNOTE_COUNTS, FOOTNOTE_K1, FOOTNOTE_LEAK_FREE, FOOTNOTE_PAPER,
                             FOOTNOTE_RNET, FOOTNOTE_TUNED, FOOTNOTE_UNCERTAINTY, PICTURE_BACKEND, PICTURE_INPUT_NAMES,
                             PIVOT_CAPTION, PIVOT_MARKS, PROTOCOL_TABLE, TABLE1_GLOSSARY, chance_level,
                             glossary_markdown, protocol_markdown, table1_best, table1_display, table1_explained,
                             table1_footnotes, table1_markdown, table1_pivot)

__all__ = [  # built and written here
    "TABLE1_COLUMNS", "TABLE2_COLUMNS", "INPUT_UNIT", "TABLE_FILES", "EXPRESSIONS", "load_results", "table1",
    "table1_records", "table2",
    "table3", "pick_table3_result", "table2_ratio", "table2_markdown", "table3_markdown", "splits_text",
    "table2_explained", "table3_explained", "TABLE2_LEGEND", "TABLE3_LEGEND",
    "table3_source", "read_table3", "table3_text", "NO_TABLE3", "clear_tables", "write_provenance", "write_table1", "write_table2", "write_table3",
    "write_tables",
    # re-exported from markdown, paper and table1_display
    "format_value", "markdown_table", "provenance_header", "synthetic_title",
    "PAPER_AGGREGATOR", "PAPER_BACKENDS", "PAPER_DATASET", "PAPER_DEVICE", "PAPER_IMAGE_SIZE", "PAPER_K",
    "PAPER_TABLE1", "PAPER_TABLE2", "PAPER_TABLE3", "PAPER_TABLE3_DIAGONAL", "paper_figure", "paper_reference",
    "FOOTNOTE_CAPS", "FOOTNOTE_COUNTS", "FOOTNOTE_K1", "FOOTNOTE_LEAK_FREE", "FOOTNOTE_PAPER", "FOOTNOTE_RNET",
    "FOOTNOTE_TUNED", "FOOTNOTE_UNCERTAINTY", "PICTURE_BACKEND", "PICTURE_INPUT_NAMES", "PIVOT_CAPTION",
    "PIVOT_MARKS", "PROTOCOL_TABLE", "TABLE1_GLOSSARY", "chance_level", "glossary_markdown", "protocol_markdown",
    "table1_best", "table1_display", "table1_explained", "table1_footnotes", "table1_markdown", "table1_pivot"]

TABLE1_COLUMNS = ["task", "protocol", "input", "model", "backend", "aggregator", "k", "trained_k", "leak_free",
                  "protocol_leak_free", "clean", "tuned_on_test", "person_grouped", "exposure", "accuracy_mean", "accuracy_std", "ci_low",
                  "ci_high", "ci_unit", "val_accuracy", "n_splits", "split_kind", "split_accuracies", "image_size",
                  "epochs_max", "patience", "epochs_run", "best_epoch", "at_cap", "learning_epoch", "ran_to_cap",
                  "pretrained", "n_fit_pictures", "n_val_pictures", "n_fit_sets",
                  "n_val_sets", "max_sets", "n_test_pictures", "n_test_sets", "transductive", "synthetic", "dataset"]
TABLE2_COLUMNS = ["task", "input", "model", "backend", "device", "precision", "threads", "batch_size", "image_size", "input_unit",
                  "seconds_per_input", "seconds_per_epoch", "coefficient_seconds_per_picture", "aggregator",
                  "aggregator_seconds_per_set", "synthetic"]

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


def _as_dicts(results) -> list[dict] | dict:
    if hasattr(results, "to_dict"):
        return results.to_dict()
    return [r.to_dict() if hasattr(r, "to_dict") else r for r in results] if isinstance(results, list) else results


def _kind(input: str) -> str:
    return "images" if input == "image" else "coefficients"


# ---------------------------------------------------------------------------------------------------- tables
def table1(results: list[dict], synthetic: bool = False) -> pd.DataFrame:
    """One row per result and set size k (``accuracy_by_k``: a per-picture model is also scored on the identity
    sets; a coefficient model on a set protocol has a k = 1 twin trained on single pictures, shown once): exactly
    ``TABLE1_COLUMNS`` (see :data:`TABLE1_GLOSSARY`). Training facts (``trained_k``, epochs, ``at_cap``,
    ``ran_to_cap``, ``learning_epoch``) and ``val_accuracy`` are those of the model each row scores."""
    return pd.DataFrame([row for row, _, _ in table1_records(results, synthetic)], columns=TABLE1_COLUMNS)


INPUT_UNIT = {"coefficients": "one coefficient vector (a k-set: its aggregate)", "images": "one picture",
              "features": "one picture's feature vector"}


def table2(results: list[dict], synthetic: bool = False, coefficient_cost: dict | None = None) -> pd.DataFrame:
    """Training cost per (task, input, model, backend, device) — the ``paper`` protocol's run where there are
    several — with what one "input" is, the precision it trained in (``fp32``/``bf16``/``fp16``; empty for results
    recorded before it was), the batch size, image size, threads, and (``coefficient_cost``:
    backend → seconds per picture of reconstruction / fitting) the per-picture cost of getting coefficients. An
    aggregator with a cost of its own (``set_fit``: a fit per k-set) gets its own row, with ``aggregator`` and
    ``aggregator_seconds_per_set``."""
    chosen: dict[tuple, dict] = {}
    for r in results:
        costed = r.get("aggregator") if r.get("aggregator_seconds_per_set") is not None else None
        backend = PICTURE_BACKEND if r["input"] in PICTURE_INPUT_NAMES else r.get("backend")
        key = (r["task"], r["input"], r["model"], backend, r.get("device", "cpu"), costed)
        if key not in chosen or (r.get("protocol") == "paper" and chosen[key].get("protocol") != "paper"):
            chosen[key] = r
    cost = coefficient_cost or {}
    rows = [{"task": k[0], "input": k[1], "model": k[2], "backend": k[3], "device": k[4], "aggregator": k[5],
             "aggregator_seconds_per_set": v.get("aggregator_seconds_per_set") if k[5] else None,
             "precision": v.get("precision"), "threads": v.get("torch_threads"), "batch_size": v.get("batch_size"),
             "image_size": v.get("image_size"),
             "input_unit": INPUT_UNIT[_kind3(v)], "seconds_per_input": v.get("seconds_per_input"),
             "seconds_per_epoch": v.get("seconds_per_epoch"),
             "coefficient_seconds_per_picture": cost.get(k[3]) if _kind3(v) == "coefficients" else None,
             "synthetic": bool(synthetic)}
            for k, v in chosen.items()]
    return pd.DataFrame(rows, columns=TABLE2_COLUMNS)


def _kind3(r: dict) -> str:
    return r.get("kind") or ("images" if r["input"] == "image" else "coefficients")


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



def table2_ratio(t2: pd.DataFrame) -> pd.DataFrame:
    """Training seconds per input of the image ResNet-34 over the coefficient ResNet-34, per task and backend."""
    r = t2[t2["model"] == "resnet34"]
    img = r[r["input"] == "image"].groupby("task")["seconds_per_input"].mean()
    vec = r[r["input"] != "image"].groupby(["task", "backend"])["seconds_per_input"].mean().rename("vector")
    out = vec.reset_index()
    out["image"] = pd.to_numeric(out["task"].map(img.to_dict()), errors="coerce").astype(float)
    return out.assign(**{"image / vector": out["image"] / out["vector"]})


TABLE2_LEGEND = (
    "`seconds_per_input`: one training pass (forward + backward + step, no evaluation) divided by the number of fit "
    "inputs; `input_unit` says what one input is (a coefficient vector — for the identity protocol one 3-set "
    "aggregate — or one picture), at the batch size, image size, device, precision (the forward pass's autocast "
    "dtype; scikit-learn rows: what its solver computes in) and torch threads of the row. The coefficient route "
    "also pays `coefficient_seconds_per_picture` once per picture before any training: the median per picture of "
    "reconstruction (decode, detect, regress) plus fitting for `+fit` and ICT backends, measured when each picture "
    "was first coded (a cached picture keeps that time); empty for R-Net (`+rnet`: its cost is its training, in "
    "notebook 02) and for tables coded before this was recorded. A row with an `aggregator` (`set_fit`: one α "
    "fitted jointly to each identity k-set) also pays `aggregator_seconds_per_set`, the mean time of one set fit "
    "(sets fitted once and cached; a cached set keeps the time measured when it was fitted). "
    f"`paper_seconds_per_input` / `paper_seconds_per_epoch`: the paper's times, measured on {PAPER_DEVICE} for its "
    "own ResNet-34s; they are shown only beside those rows and measure different hardware.")


def table2_explained(t2: pd.DataFrame) -> pd.DataFrame:
    """Table 2 with the paper's times (``paper_seconds_per_input``, ``paper_seconds_per_epoch``) beside the rows
    of its own models — a ResNet-34 on raw coefficients of its input or on pictures — and empty elsewhere."""
    d = t2.copy()

    def paper(row, what):
        if row["model"] != "resnet34" or "+" in str(row.get("backend") or ""):
            return None
        if row["input"] not in ("image", PAPER_TABLE1.get(row["task"], {}).get("coefficient_input")):
            return None
        return PAPER_TABLE2.get(row["task"], {}).get(_kind(row["input"]), {}).get(what)

    for what in ("seconds_per_input", "seconds_per_epoch"):
        d[f"paper_{what}"] = [paper(r, what) for _, r in d.iterrows()] if len(d) else []
    return d


def table2_markdown(t2: pd.DataFrame, provenance: dict) -> str:
    return (provenance_header(provenance) + f"# {synthetic_title('Table 2 — training time', provenance)}\n\n"
            + markdown_table(table2_explained(t2)) + "\n\n" + TABLE2_LEGEND + "\n")


TABLE3_LEGEND = ("Rows: true expression; columns: predicted; each row in percent of its pictures (sums to 100), "
                 "counts summed over the splits. `paper_diagonal`: the paper's diagonal (its ResNet-34 on β), a "
                 "reference for the diagonal of this run's matrix; `n`: the pictures of the row.")


def table3_explained(percent: pd.DataFrame, counts: pd.DataFrame) -> pd.DataFrame:
    """Table 3 with the paper's diagonal (``paper_diagonal``) and each row's picture count (``n``) beside it."""
    d = percent.copy()
    d["paper_diagonal"] = [PAPER_TABLE3_DIAGONAL.get(e) for e in d.index]
    d["n"] = counts.sum(axis=1)
    return d


def table3_markdown(percent: pd.DataFrame, counts: pd.DataFrame, provenance: dict, source: dict | None) -> str:
    title = "Table 3 — expression confusion matrix (percent of each true row)"
    if source:
        title += f": {table3_source(source)}"
    return (provenance_header(provenance) + f"# {synthetic_title(title, provenance)}\n\n"
            + markdown_table(table3_explained(percent, counts), index=True, digits=2) + "\n\n" + TABLE3_LEGEND
            + "\n")


def splits_text(result: dict) -> str:
    """'2 repeats', '3 folds', 'one split': what a result's numbers are summed or averaged over."""
    n, kind = result.get("n_folds"), result.get("split_kind") or "folds"
    if kind == "single split" or n == 1:
        return "one split"
    return f"{n} {kind}"


def table3_source(source: dict) -> str:
    """Which result Table 3 shows, in one line: protocol, input, model, backend (a picture input: none) and what
    the counts are summed over — e.g. 'paper protocol · input beta · model logreg · backend tddfa · counts summed
    over 2 repeats'."""
    picture = source.get("input") in PICTURE_INPUT_NAMES
    backend = PICTURE_BACKEND if picture else source.get("backend") or "?"
    input = PICTURE_INPUT_NAMES.get(source.get("input"), source.get("input"))
    return (f"{source.get('protocol')} protocol · input {input} · model {source.get('model')} · backend {backend}"
            f" · counts summed over {splits_text(source)}")


NO_TABLE3 = ("No Table 3 in this run: it has no expression result (a dataset without an `expression` label, or "
             "tasks that leave expression out), so there is no confusion matrix to show.")


def read_table3(tables_dir: str | Path) -> pd.DataFrame | None:
    """``table3.csv`` of a run's tables folder (true expressions as rows), or None when the run wrote none."""
    csv = Path(tables_dir) / "table3.csv"
    return pd.read_csv(csv, index_col=0) if csv.exists() else None


def table3_text(tables_dir: str | Path) -> str:
    """``table3.md`` of a run's tables folder, or :data:`NO_TABLE3` (one line saying why) when the run wrote none."""
    md = Path(tables_dir) / "table3.md"
    return md.read_text() if md.exists() else NO_TABLE3


# ------------------------------------------------------------------------------------------------------ write
def _csv(df: pd.DataFrame, dest: Path, index: bool = False) -> Path:
    with atomic_path(dest) as tmp:
        df.to_csv(tmp, index=index)
    return dest


def _text(text: str, dest: Path) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_text(text)
    return dest


TABLE_FILES = ("table1.csv", "table1.md", "verdict.csv", "reconstructions.csv", "table2.csv", "table2.md", "table3.csv", "table3.md", "table3_counts.csv",
               "table3_heatmap.png", "per_angle_accuracy.png", "training_time.png", "provenance.json")


def clear_tables(out_dir: str | Path) -> None:
    """Remove the files :func:`write_tables` writes, so the folder holds one run's tables only (other figures
    that share the folder are kept)."""
    for name in TABLE_FILES:
        (Path(out_dir) / name).unlink(missing_ok=True)


def write_provenance(provenance: dict, out_dir: str | Path) -> Path:
    return atomic_write_json(provenance, Path(out_dir) / "provenance.json")


def _write_csv_md(name: str, frame: pd.DataFrame, markdown: str, out_dir: Path, provenance: dict) -> dict:
    """``<name>.csv``, ``<name>.md`` and the provenance beside them; returns their paths."""
    return {f"{name}_csv": _csv(frame, out_dir / f"{name}.csv"), f"{name}_md": _text(markdown, out_dir / f"{name}.md"),
            "provenance": write_provenance(provenance, out_dir)}


def write_table1(results: list[dict], out_dir: str | Path, provenance: dict | None = None) -> dict:
    out_dir, provenance, results = Path(out_dir), dict(provenance or {}), _as_dicts(results)
    t1 = table1(results, synthetic=bool(provenance.get("synthetic")))
    return _write_csv_md("table1", t1, table1_markdown(t1, provenance, results), out_dir, provenance)


def write_table2(results: list[dict], out_dir: str | Path, provenance: dict | None = None) -> dict:
    out_dir, provenance, results = Path(out_dir), dict(provenance or {}), _as_dicts(results)
    t2 = table2(results, synthetic=bool(provenance.get("synthetic")),
                coefficient_cost=provenance.get("coefficient_seconds_per_picture"))
    return _write_csv_md("table2", t2, table2_markdown(t2, provenance), out_dir, provenance)


def write_table3(results: list[dict] | dict, out_dir: str | Path, provenance: dict | None = None) -> dict:
    out_dir, provenance, results = Path(out_dir), dict(provenance or {}), _as_dicts(results)
    source = results if isinstance(results, dict) else pick_table3_result(results)
    paths = {"provenance": write_provenance(provenance, out_dir)}
    if source is None:
        return paths
    percent, counts = table3(source)
    synthetic = bool(provenance.get("synthetic"))
    paths.update(table3_csv=_csv(percent.assign(synthetic=synthetic), out_dir / "table3.csv", index=True),
                 table3_counts_csv=_csv(counts.assign(synthetic=synthetic), out_dir / "table3_counts.csv",
                                        index=True),
                 table3_md=_text(table3_markdown(percent, counts, provenance, source), out_dir / "table3.md"))
    return paths


def write_tables(results: list[dict] | str | Path, out_dir: str | Path, provenance: dict | None = None) -> dict:
    """All three tables, their Markdown, the figures and ``provenance.json`` in ``out_dir``; returns the paths."""
    results = load_results(results) if isinstance(results, (str, Path)) else _as_dicts(list(results))
    clear_tables(out_dir)
    paths = {}
    paths.update(write_table1(results, out_dir, provenance))
    paths.update(write_table2(results, out_dir, provenance))
    paths.update(write_table3(results, out_dir, provenance))
    seed = int((provenance or {}).get("seed") or 0)
    paths["verdict_csv"] = _csv(verdict_table(results, seed=seed), Path(out_dir) / "verdict.csv")
    rec = reconstructions_table(results, seed=seed)
    if len(rec):  # several reconstructions (built-in and from outside): each against the same picture row
        paths["reconstructions_csv"] = _csv(rec, Path(out_dir) / "reconstructions.csv")
    return paths