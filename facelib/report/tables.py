"""Results → the paper's Tables 1–3 (CSV + Markdown beside the paper's figures), figures, provenance.

Inputs are the :class:`~facelib.classify.experiment.TaskResult` dicts (``to_dict()``, or the JSON files
``facelib.classify.results.save_result`` writes). ``write_tables`` first clears the previous run's table files.
The module is over ~400 lines because it is the one owner of Tables 1–3: the paper's figures, the tables, their
display forms (used by notebook 05 and the index page) and their figures.
Outputs in ``out_dir``:

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

TABLE1_COLUMNS = ["task", "protocol", "input", "model", "backend", "aggregator", "k", "trained_k", "leak_free",
                  "tuned_on_test", "accuracy_mean", "accuracy_std", "ci_low", "ci_high", "ci_unit", "n_splits",
                  "split_kind", "split_accuracies", "image_size", "epochs_max", "patience", "epochs_run",
                  "best_epoch", "at_cap", "pretrained", "n_fit_pictures", "n_val_pictures", "n_fit_sets",
                  "n_val_sets", "max_sets", "n_test_pictures", "n_test_sets", "transductive", "synthetic", "dataset"]
# One sentence per Table 1 column (the README's glossary is written from these).
TABLE1_GLOSSARY = {
    "task": "what is predicted: identity (subject), expression, gender, or another label column",
    "protocol": "how pictures are split into training and test (facelib.classify.protocols)",
    "input": "what the model sees: alpha / beta / alpha+beta coefficients, image (pictures), hog / pixels / dlib "
             "features",
    "model": "the classifier: resnet34, mlp, logreg, svm, linsvm, fisherfaces",
    "backend": "where the coefficients come from (tddfa, deep3d, ict; +fit_<mode> fitted, +rnet cross-fitted "
               "R-Net)",
    "aggregator": "how a k-set's coefficients are combined into one vector (mean, median, cnet); empty without sets",
    "k": "pictures per test sample (3: the identity protocol's 3-picture sets; 1: single pictures)",
    "trained_k": "pictures per training sample of the model scored in this row (1: trained and selected on single "
                 "pictures; 3: on 3-picture aggregates)",
    "leak_free": "true only when the protocol is leak-free and nothing transductive fed the coefficients",
    "tuned_on_test": "true when the coefficients' settings (R-Net) were chosen by accuracy on Table 1's test folds",
    "accuracy_mean": "accuracy (0-1): the mean over repeats/folds, or pooled over every test sample for a single "
                     "split and for pooled folds",
    "accuracy_std": "standard deviation of the accuracy over repeats/folds (empty for a single split and pooled "
                    "folds)",
    "ci_low": "lower end of the 95 % bootstrap interval (single split, pooled folds), resampling ci_unit",
    "ci_high": "upper end of that interval",
    "ci_unit": "what the interval resamples: people (a cluster bootstrap over subjects) or pictures (no subject "
               "column)",
    "n_splits": "number of repeats / folds",
    "split_kind": "repeats (random splits), folds (a partition), pooled folds (held-out conditions, pooled), or "
                  "single split",
    "split_accuracies": "pooled folds: the accuracy and test count of each held-out condition (e.g. FL+FR)",
    "image_size": "side in pixels of the pictures or feature crops the model saw",
    "epochs_max": "the epoch cap of the network (empty for scikit-learn models)",
    "patience": "epochs without a better validation score before early stopping (empty for scikit-learn models)",
    "epochs_run": "epochs trained, mean over splits",
    "best_epoch": "epoch of the restored best-validation checkpoint, mean over splits",
    "at_cap": "true when a split's best epoch is the cap: the validation curve was still improving when training "
              "stopped",
    "pretrained": "whether the network or feature started from pretrained weights",
    "n_fit_pictures": "distinct pictures the model was fit on, per split (mean)",
    "n_val_pictures": "distinct pictures, disjoint from those, it was selected on (C, early stopping), per split "
                      "(mean); no refit on fit + validation",
    "n_fit_sets": "k-sets the model was fit on (set-trained rows only)",
    "n_val_sets": "k-sets it was selected on (set-trained rows only)",
    "max_sets": "cap on the k-subsets drawn per person and side (empty: all subsets)",
    "n_test_pictures": "test pictures per split (k = 1 rows)",
    "n_test_sets": "test k-sets per split (k > 1 rows)",
    "transductive": "what of the coefficients was learnt from the evaluation pictures (empty: nothing)",
    "synthetic": "true for synthetic data (not a result)",
    "dataset": "the dataset the row ran on",
}
TABLE2_COLUMNS = ["task", "input", "model", "backend", "device", "precision", "threads", "batch_size", "image_size", "input_unit",
                  "seconds_per_input", "seconds_per_epoch", "coefficient_seconds_per_picture", "synthetic"]
# The rows that repeat the paper's experiment (:func:`paper_figure`): only these get its figure in the `paper` column.
PAPER_IMAGE_SIZE = 224
PAPER_BACKENDS = ("tddfa", "deep3d")  # raw regressor output (not ICT, not fitted, not a study-trained R-Net)
PAPER_AGGREGATOR = "cnet"             # the paper aggregated identity 3-sets with its C-Net
PAPER_K = {"identity": 3, "expression": 1, "gender": 1}

# The paper's figures (REFERENCE.md). Table 1: accuracy (0–1) with images vs with 3DMM coefficients.
PAPER_TABLE1 = {
    "identity": {"images": 0.873, "coefficients": 1.000, "coefficient_input": "alpha"},
    "expression": {"images": 0.706, "coefficients": 0.835, "coefficient_input": "beta"},
    "gender": {"images": 0.798, "coefficients": 0.954, "coefficient_input": "alpha"},
}
PAPER_DATASET = {"identity": "kdef", "expression": "kdef", "gender": "fei"}  # where the paper measured each task
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


def _as_dicts(results) -> list[dict] | dict:
    if hasattr(results, "to_dict"):
        return results.to_dict()
    return [r.to_dict() if hasattr(r, "to_dict") else r for r in results] if isinstance(results, list) else results


def _kind(input: str) -> str:
    return "images" if input == "image" else "coefficients"


# ---------------------------------------------------------------------------------------------------- tables
def _mean(v):
    v = [x for x in (v if isinstance(v, (list, tuple)) else [v]) if x is not None]
    return float(np.mean(v)) if v else None


def _split_accuracies(r: dict, d: dict) -> str | None:
    """``FL+FR 77.0 % (139); HL+HR 90.0 % (140); S 81.4 % (70)`` for pooled folds, else None."""
    if r.get("split_kind") != "pooled folds":
        return None
    labels = r.get("fold_labels") or r.get("fold_names") or []
    return "; ".join(f"{lab} {100 * a:.1f} % ({n})" for lab, a, n in
                     zip(labels, d.get("fold_accuracies") or [], d.get("n_test") or []))


def table1(results: list[dict], synthetic: bool = False) -> pd.DataFrame:
    """One row per result and set size k (``accuracy_by_k``: a per-picture model is also scored on the identity
    sets; a coefficient model on a set protocol has a k = 1 twin trained on single pictures): exactly
    ``TABLE1_COLUMNS`` (see :data:`TABLE1_GLOSSARY`). Training facts (``trained_k``, epochs, ``at_cap``) are those
    of the model each row scores."""
    rows = []
    for r in results:
        by_k = r.get("accuracy_by_k") or {str(r.get("k", 1)): {
            "mean": r.get("accuracy_mean"), "std": r.get("accuracy_std"), "ci": r.get("accuracy_ci"),
            "n_test": r.get("n_test")}}
        recipe = r.get("recipe") or {}
        cap = r.get("epochs_max")
        for k, d in sorted(by_k.items(), key=lambda kv: int(kv[0])):
            k = int(k)
            ci = d.get("ci") or [None, None]
            sets = k > 1
            trained_k = d.get("trained_k")
            if trained_k is None:  # results older than the k = 1 twin: the set-trained model scored off-design
                trained_k = int(r.get("k") or 1) if r.get("kind", "coefficients") == "coefficients" else 1
            best = d.get("best_epochs", r.get("best_epochs"))
            set_trained = int(trained_k) > 1
            rows.append({
                "task": r["task"], "protocol": r["protocol"], "input": r["input"], "model": r["model"],
                "backend": r.get("backend"), "aggregator": r.get("aggregator"), "k": k, "trained_k": int(trained_k),
                "leak_free": bool(r.get("leak_free")) and not r.get("transductive"),
                "tuned_on_test": bool(r.get("tuned_on_test")),
                "accuracy_mean": d.get("mean"), "accuracy_std": d.get("std"), "ci_low": ci[0], "ci_high": ci[1],
                "ci_unit": d.get("ci_unit") or (("pictures" if ci[0] is not None else None)),
                "n_splits": r.get("n_folds"), "split_kind": r.get("split_kind", "folds"),
                "split_accuracies": _split_accuracies(r, d),
                "image_size": r.get("image_size"), "epochs_max": cap,
                "patience": recipe.get("patience"),
                "epochs_run": _mean(d.get("epochs_run", r.get("epochs_run"))), "best_epoch": _mean(best),
                "at_cap": bool(cap) and any(b is not None and int(b) >= int(cap) for b in (best or [])),
                "pretrained": bool(r.get("pretrained")),
                "n_fit_pictures": _mean(r.get("n_fit_pictures")), "n_val_pictures": _mean(r.get("n_val_pictures")),
                "n_fit_sets": _mean(r.get("n_fit_sets")) if set_trained else None,
                "n_val_sets": _mean(r.get("n_val_sets")) if set_trained else None,
                "max_sets": (r.get("protocol_info") or {}).get("max_sets"),
                "n_test_pictures": _mean(r.get("n_test_pictures")) if not sets else None,
                "n_test_sets": _mean(d.get("n_test")) if sets else None,
                "transductive": r.get("transductive") or "", "synthetic": bool(synthetic),
                "dataset": r.get("dataset")})
    return pd.DataFrame(rows, columns=TABLE1_COLUMNS)


INPUT_UNIT = {"coefficients": "one coefficient vector (a k-set: its aggregate)", "images": "one picture",
              "features": "one picture's feature vector"}


def table2(results: list[dict], synthetic: bool = False, coefficient_cost: dict | None = None) -> pd.DataFrame:
    """Training cost per (task, input, model, backend, device) — the ``paper`` protocol's run where there are
    several — with what one "input" is, the precision it trained in (``fp32``/``bf16``/``fp16``; empty for results
    recorded before it was), the batch size, image size, threads, and (``coefficient_cost``:
    backend → seconds per picture of reconstruction / fitting) the per-picture cost of getting coefficients."""
    chosen: dict[tuple, dict] = {}
    for r in results:
        key = (r["task"], r["input"], r["model"], r.get("backend"), r.get("device", "cpu"))
        if key not in chosen or (r.get("protocol") == "paper" and chosen[key].get("protocol") != "paper"):
            chosen[key] = r
    cost = coefficient_cost or {}
    rows = [{"task": k[0], "input": k[1], "model": k[2], "backend": k[3], "device": k[4],
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


def _given(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def paper_figure(row) -> float | None:
    """The paper's Table-1 accuracy for a row that *is* the paper's experiment; ``None`` for every other row.

    A row qualifies only when all of these hold:

    * its task is one of the paper's (identity, expression, gender) on the paper's dataset (KDEF, KDEF, FEI; a row
      without ``dataset``, from results older than that column, is taken to be KDEF/FEI's), under the ``paper``
      protocol, with the paper's model ``resnet34``;
    * pictures: ``input == "image"`` at 224 px, scored one picture at a time (k = 1);
    * coefficients: the paper's input (α identity, β expression, α gender) from a raw regressor backend
      (:data:`PAPER_BACKENDS`: tddfa or deep3d — not ICT, not fitted ``+fit_*``, not a study-trained ``+rnet``),
      scored at the paper's k (:data:`PAPER_K`), nothing transductive, no settings tuned on test; identity 3-sets
      also need the paper's aggregator (C-Net, :data:`PAPER_AGGREGATOR`) and every 3-subset (no ``max_sets``), and
      a model trained on sets (``trained_k`` 3). No raw backend carries C-Net confidences, so no identity
      coefficient row qualifies today;
    * every identity row also needs every subset (no ``max_sets`` sampling).
    """
    p = PAPER_TABLE1.get(row["task"])
    if p is None or row["protocol"] != "paper" or row["model"] != "resnet34":
        return None
    dataset = row.get("dataset")
    if isinstance(dataset, str) and dataset != PAPER_DATASET[row["task"]]:
        return None  # your own dataset (or another one): the paper never ran it
    k = int(row.get("k") or 1)
    if row["task"] == "identity" and _given(row.get("max_sets")):
        return None  # sampled 3-subsets (and possibly pictures): not the paper's all-subsets protocol
    if row["input"] == "image":
        size = row.get("image_size")
        return p["images"] if k == 1 and _given(size) and int(size) == PAPER_IMAGE_SIZE else None
    if row["input"] != p["coefficient_input"] or str(row.get("backend") or "") not in PAPER_BACKENDS:
        return None
    if k != PAPER_K[row["task"]] or str(row.get("transductive") or "") not in ("", "nan") \
            or bool(row.get("tuned_on_test")) is True:
        return None
    trained_k = int(row["trained_k"]) if _given(row.get("trained_k")) else k
    if k > 1 and (row.get("aggregator") != PAPER_AGGREGATOR or trained_k != k):
        return None
    return p["coefficients"]


def _accuracy_text(m, s, lo, hi) -> str:
    if m is None or m != m:
        return "—"
    if lo is not None and lo == lo:
        return f"{100 * m:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]"
    return f"{100 * m:.1f} ± {100 * s:.1f} %" if s is not None and s == s else f"{100 * m:.1f} %"


def table1_display(t1: pd.DataFrame) -> pd.DataFrame:
    """Table 1 for reading: accuracy as "mean ± std %" over repeats/folds, or "pooled % [95 % interval from
    resampling people]" for a single split and pooled folds; the paper's figure only beside the rows that repeat
    its experiment (:func:`paper_figure`)."""
    d = t1.copy()
    for col in ("k", "ci_low", "ci_high", "image_size", "split_kind", "leak_free", "n_splits"):
        if col not in d.columns:
            d[col] = None if col != "k" else 1
    d["accuracy"] = [_accuracy_text(m, s, lo, hi) for m, s, lo, hi in
                     zip(d["accuracy_mean"], d["accuracy_std"], d["ci_low"], d["ci_high"])]
    d["paper"] = [("—" if v is None else f"{100 * v:.1f} %") for v in
                  (paper_figure(r) for _, r in d.iterrows())] if len(d) else []
    d["splits"] = [f"{n} {kind}" for n, kind in zip(d["n_splits"], d["split_kind"])]
    cols = ["task", "protocol", "input", "model", "backend", "aggregator", "k", "trained_k", "leak_free",
            "tuned_on_test", "accuracy", "paper", "splits", "split_accuracies", "image_size", "epochs_max",
            "patience", "epochs_run", "best_epoch", "at_cap", "pretrained", "n_fit_pictures", "n_val_pictures",
            "n_fit_sets", "n_val_sets", "max_sets", "n_test_pictures", "n_test_sets", "transductive"]
    return d[[c for c in cols if c in d.columns]]


FOOTNOTE_LEAK_FREE = ("`leak_free`: true only when the protocol is leak-free *and* nothing transductive fed the "
                      "coefficients (a transductive backend makes every row it feeds not leak-free).")
FOOTNOTE_TUNED = ("`tuned_on_test`: the coefficients' settings were chosen by accuracy on Table 1's own test folds "
                  "(an optimistic selection); read these rows as an upper bound.")
FOOTNOTE_COUNTS = ("`n_fit_pictures` / `n_val_pictures`: every model (coefficients and pictures alike) is fit on the "
                   "fit pictures of a split's training side and selected (C, early stopping, best epoch) on the "
                   "disjoint validation pictures; it is **not refit** on both. On the paper's identity protocol "
                   "that is 15 + 5 of each person's 20 training pictures, so 3-set models fit on C(15,3) = 455 sets "
                   "per person, not the paper's C(20,3) = 1140.")
FOOTNOTE_K1 = ("`k`: pictures per test sample (k = 3: the identity protocol's 3-picture sets). `trained_k`: what the "
               "scored model was trained and selected on. k = 1 rows of coefficient models on a set protocol come "
               "from a separate model of the same kind trained and selected on single pictures (trained_k 1), not "
               "from the 3-set model scored off-design; per-picture models (pictures, features) are scored on the "
               "3-sets by the mean of their per-picture class scores (k = 3, trained_k 1).")
FOOTNOTE_UNCERTAINTY = ("Accuracy: mean ± std over repeats / folds. A single split, and protocols whose folds are "
                        "held-out conditions (`pooled folds`: cross-angle, leave-expression-out), give the accuracy "
                        "pooled over every test picture with a 95 % interval from resampling people (`ci_unit`), "
                        "and `split_accuracies` lists each held-out condition's accuracy and test count; the "
                        "spread between conditions is not an uncertainty.")
FOOTNOTE_CAPS = ("`epochs_max` / `patience`: the network's epoch cap and early-stopping patience; `at_cap`: a split's "
                 "best epoch was the cap (the validation curve was still improving).")
FOOTNOTE_PAPER = ("`paper`: the paper's figure, only beside rows that repeat its experiment: its dataset and protocol, "
                  "ResNet-34, and either 224-px pictures scored one at a time (k = 1) or the raw coefficients of a "
                  "tddfa / deep3d backend (not ICT, not fitted, not R-Net) of its input (α identity, β expression, "
                  "α gender) at its k, with — for identity — C-Net aggregation of every 3-subset (no `max_sets`) by "
                  "a 3-set model; identity rows need every 3-subset. No raw backend has C-Net confidences, so no "
                  "identity coefficient row qualifies.")
FOOTNOTE_RNET = ("`+rnet` backends: each person is coded by one of two cross-fitted networks, which leave a "
                 "per-network offset in α that a linear probe finds on unseen people; every split subtracts each "
                 "part's mean over its fit pictures before training (facelib.fitting.crossfit.center_parts), after "
                 "which the probe is at chance.")


def table1_footnotes(t1: pd.DataFrame) -> str:
    """One line per protocol present: what it leaks; the transductive and tuned-on-test coefficient tables; and
    the definitions a reader needs (leak_free, counts, k, uncertainty, caps, the paper column)."""
    from ..classify.protocols import LEAKAGE

    lines = [f"* `{t}/{p}`: leakage — {LEAKAGE.get((t, p), 'see facelib.classify.protocols')}"
             for t, p in t1[["task", "protocol"]].drop_duplicates().itertuples(index=False)]
    for b, note in t1.loc[t1["transductive"].astype(str).str.len() > 0, ["backend", "transductive"]] \
            .drop_duplicates().itertuples(index=False):
        lines.append(f"* backend `{b}` is **transductive**: {note}")
    tuned = _flag(t1, "tuned_on_test", False)
    if tuned.any():
        lines.append(f"* {FOOTNOTE_TUNED} Backends: "
                     + ", ".join(f"`{b}`" for b in sorted(set(t1.loc[tuned, "backend"].astype(str)))))
    if t1["backend"].astype(str).str.contains("+rnet", regex=False).any():
        lines.append(f"* {FOOTNOTE_RNET}")
    lines += [f"* {FOOTNOTE_LEAK_FREE}", f"* {FOOTNOTE_COUNTS}", f"* {FOOTNOTE_K1}", f"* {FOOTNOTE_UNCERTAINTY}",
              f"* {FOOTNOTE_CAPS}", f"* {FOOTNOTE_PAPER}"]
    return "\n".join(lines)


PIVOT_MARKS = {"not_leak_free": "†", "tuned_on_test": "‡"}
PIVOT_CAPTION = ("† not leak-free (the protocol leaks, or the coefficients are transductive); ‡ coefficient settings "
                 "tuned on Table 1's test folds")


def _flag(t1: pd.DataFrame, column: str, default: bool) -> pd.Series:
    return t1[column].fillna(default).astype(bool) if column in t1.columns else pd.Series(default, index=t1.index)


def table1_pivot(t1: pd.DataFrame) -> pd.DataFrame:
    """Accuracy text by (task, protocol, k) × (input, model, backend, aggregator): backends and fitted variants stay
    apart. The flags stay with the cells: "†" marks a cell that is not leak-free, "‡" one whose coefficient
    settings were tuned on test (:data:`PIVOT_CAPTION`, also in ``.attrs["caption"]``)."""
    text = table1_display(t1)["accuracy"].astype(str)
    text = text + np.where(_flag(t1, "leak_free", False), "", " " + PIVOT_MARKS["not_leak_free"]) \
        + np.where(_flag(t1, "tuned_on_test", False), " " + PIVOT_MARKS["tuned_on_test"], "")
    d = t1.assign(accuracy=text,
                  aggregator=t1["aggregator"].fillna("") if "aggregator" in t1 else "")  # NaN would drop columns
    out = d.pivot_table(index=["task", "protocol", "k"], columns=["input", "model", "backend", "aggregator"],
                        values="accuracy", aggfunc="first").fillna("")
    out.attrs["caption"] = PIVOT_CAPTION
    return out


def table1_best(t1: pd.DataFrame) -> pd.DataFrame:
    """The best *leak-free* row per (task, protocol, k), with its backend: only rows with ``leak_free`` true and
    settings not tuned on test compete (a group with none is left out). ``chosen_among`` says so and how many rows
    competed — the maximum over several variants on the same test folds is itself an optimistic pick."""
    ok = _flag(t1, "leak_free", False) & ~_flag(t1, "tuned_on_test", False)
    d = t1[ok].dropna(subset=["accuracy_mean"])
    cols = ["task", "protocol", "k", "input", "model", "backend", "leak_free", "accuracy_mean", "chosen_among"]
    if not len(d):
        return pd.DataFrame(columns=[c if c != "accuracy_mean" else "best accuracy" for c in cols])
    groups = d.groupby(["task", "protocol", "k"])
    best = d.loc[groups["accuracy_mean"].idxmax()].copy()
    n = groups.size()
    best["chosen_among"] = [f"best of {n[(t, p, k)]} leak-free rows (not tuned on test) on the test split"
                            for t, p, k in best[["task", "protocol", "k"]].itertuples(index=False)]
    return best[cols].rename(columns={"accuracy_mean": "best accuracy"}).reset_index(drop=True)


def table2_ratio(t2: pd.DataFrame) -> pd.DataFrame:
    """Training seconds per input of the image ResNet-34 over the coefficient ResNet-34, per task and backend."""
    r = t2[t2["model"] == "resnet34"]
    img = r[r["input"] == "image"].groupby("task")["seconds_per_input"].mean()
    vec = r[r["input"] != "image"].groupby(["task", "backend"])["seconds_per_input"].mean().rename("vector")
    out = vec.reset_index()
    out["image"] = pd.to_numeric(out["task"].map(img.to_dict()), errors="coerce").astype(float)
    return out.assign(**{"image / vector": out["image"] / out["vector"]})


def table1_markdown(t1: pd.DataFrame, provenance: dict) -> str:
    d = table1_display(t1)
    return (_header(provenance)
            + f"# {_title('Table 1 — classification accuracy (mean ± std over repeats/folds; pooled, with a 95 % interval from resampling people, for a single split and pooled folds)', provenance)}\n\n"
            + markdown_table(d) + "\n\n" + table1_footnotes(t1) + "\n")


def table2_markdown(t2: pd.DataFrame, provenance: dict) -> str:
    d = t2.copy()

    def paper(row, what):  # only beside the paper's own model on raw coefficients / pictures
        if row["model"] != "resnet34" or "+" in str(row.get("backend") or ""):
            return None
        if row["input"] not in ("image", PAPER_TABLE1.get(row["task"], {}).get("coefficient_input")):
            return None
        return PAPER_TABLE2.get(row["task"], {}).get(_kind(row["input"]), {}).get(what)

    if len(d):
        d["paper_seconds_per_input"] = d.apply(lambda r: paper(r, "seconds_per_input"), axis=1)
        d["paper_seconds_per_epoch"] = d.apply(lambda r: paper(r, "seconds_per_epoch"), axis=1)
    return (_header(provenance) + f"# {_title('Table 2 — training time', provenance)}\n\n" + markdown_table(d)
            + "\n\n`seconds_per_input`: one training pass (forward + backward + step, no evaluation) divided by "
              "the number of fit inputs; `input_unit` says what one input is (a coefficient vector — for the "
              "identity protocol one 3-set aggregate — or one picture), at the batch size, image size, device, "
              "precision (the forward pass's autocast dtype; scikit-learn rows: what its solver computes in) "
              "and torch threads of the row. The coefficient route also pays `coefficient_seconds_per_picture` "
              "once per picture before any training: the median per picture of reconstruction (decode, detect, "
              "regress) plus fitting for `+fit` and ICT backends, measured when each picture was first coded (a "
              "cached picture keeps that time); empty for R-Net (`+rnet`: its cost is its training, in notebook 02) "
              "and for tables coded before this was recorded. "
              f"The paper's times were measured on {PAPER_DEVICE} for its own ResNet-34s; they are shown only "
              "beside those rows and measure different hardware.\n")


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


TABLE_FILES = ("table1.csv", "table1.md", "table2.csv", "table2.md", "table3.csv", "table3.md", "table3_counts.csv",
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
    return _write_csv_md("table1", t1, table1_markdown(t1, provenance), out_dir, provenance)


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
    return paths
