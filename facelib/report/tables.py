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
* display forms: :func:`table1_explained` (the page's and ``table1.md``'s Table 1: ``chance``, the paper's figures
  for the row's task and protocol as a reference — ``paper_coefficients``, ``paper_images`` —, picture baselines
  named as such), :data:`TABLE1_GLOSSARY` (every column in words; README and pages), :data:`PROTOCOL_TABLE`.
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


# ------------------------------------------------------------------------ Table 1 explained (page, notebook 05)
# Inputs computed from the picture itself — no 3DMM is involved, whatever ``backend`` the result file carries —
# and the words a reader sees for them (the picture arm of ``classify.plan.IMAGE_MODELS``).
PICTURE_INPUT_NAMES = {"image": "picture", "hog": "HOG features", "pixels": "pixels", "dlib": "dlib embedding"}
PICTURE_BACKEND = "— (picture)"

# Every column of Table 1 (its CSV and the page's display form), in words. The one owner: the run page and
# table1.md render it under the table, the README carries :func:`glossary_markdown` verbatim (a test checks).
TABLE1_GLOSSARY = {
    "task": "what is predicted: identity (which of the people), expression (7 KDEF expressions), gender (FEI).",
    "protocol": "how pictures are split into training and test (the protocol table below): `paper` as the paper "
                "wrote it, the others hold out a session, a view, or whole people.",
    "input": "what the classifier is fed: `alpha` (3DMM identity coefficients α), `beta` (expression "
             "coefficients β), both; or a picture baseline computed from the picture itself with no 3DMM: "
             "`picture` (the colour head crop), `HOG features`, `pixels` (Fisherfaces), `dlib embedding` (dlib's "
             "pretrained face-recognition descriptor).",
    "model": "the classifier: `resnet34` (the paper's network: 1-D convolutions on a vector, or torchvision's on "
             "pictures), `logreg`, `svm` (RBF), `linsvm`, `fisherfaces` (PCA → LDA → linear SVM), `mlp`.",
    "backend": "where the coefficients come from: `tddfa` (3DDFA_V2), `deep3d` (the paper's R-Net), `ict` "
               "(ICT Face Model); `+fit_<mode>` refined by the hybrid-loss fit, `+rnet` coded by the "
               "cross-fitted R-Net. `— (picture)`: a picture baseline, no 3DMM.",
    "aggregator": "how the α of a k-picture set becomes one vector (`mean`, `median`, `cnet`: C-Net's "
                  "confidences); empty when the row has no sets.",
    "k": "pictures per test sample: 1 = single pictures; 3 = the identity protocol's 3-picture sets (aggregated "
         "α for coefficient models, the mean of per-picture class scores for per-picture models).",
    "trained_k": 'pictures per training sample of the model scored in this row (1: trained and selected on single pictures; 3: on 3-picture aggregates). k = 1 rows of coefficient models on a set protocol come from a separate single-picture model.',
    "leak_free": "True only when the protocol is leak-free (nothing of a test sample's person, session or view, as the protocol defines, is in training) AND nothing transductive fed the coefficients; False for the paper's identity and expression protocols.",
    "tuned_on_test": "True when the coefficients' settings (R-Net) were chosen by accuracy on Table 1's own test folds: read the row as an upper bound.",
    "accuracy": 'percent of test samples classified correctly: mean ± std over the repeats/folds (`splits`); a single split and pooled folds: the accuracy pooled over every test sample, with a 95 % interval from resampling people in brackets.',
    "accuracy_mean": 'accuracy as a 0–1 fraction: the mean over repeats/folds, or pooled over every test sample for a single split and for pooled folds.',
    "accuracy_std": 'standard deviation of the per-split accuracies (0–1; empty for a single split and for pooled folds, where the spread between held-out conditions is not an uncertainty).',
    "ci_low": 'lower end of the 95 % bootstrap interval (single split, pooled folds), resampling `ci_unit`.',
    "ci_high": 'upper end of that interval.',
    "ci_unit": 'what the interval resamples: people (a cluster bootstrap over subjects) or pictures (no subject column).',
    "chance": "what always answering the most frequent class of the row's test samples would score (the "
              "majority-class rate, summed over the splits; 1 / number of classes when the classes are "
              "balanced). A row near it learnt nothing.",
    "paper": "the paper's figure for this very experiment — only beside a row that repeats it (the paper's "
             "dataset, protocol, ResNet-34, input and k, 224-px pictures); `—` elsewhere.",
    "paper_coefficients": "REFERENCE: the paper's accuracy with 3DMM coefficients (α for identity and gender, "
                          "β for expression; its ResNet-34) for this task and protocol, beside every row of "
                          "them whatever its model — to read a row against, not a replication of it.",
    "paper_images": "REFERENCE: the paper's accuracy with pictures (its ResNet-34 on 224-px images) for this "
                    "task and protocol, beside every row of them.",
    "splits": 'how many splits the accuracy is over and their kind: `repeats` (repeated random splits), `folds` (a partition: every sample tested once), `pooled folds` (held-out conditions such as views, pooled), `single split`.',
    "n_splits": "the number of splits (see `splits`).",
    "split_kind": '`repeats`, `folds`, `pooled folds` or `single split` (see `splits`).',
    "split_accuracies": "pooled folds: each held-out condition's accuracy and test count (e.g. FL+FR 77.0 % (139)).",
    "image_size": "side in pixels of the picture crop a picture model saw (the paper: 224).",
    "epochs_max": "the network's epoch cap (empty for scikit-learn models).",
    "patience": 'epochs without a better validation score before early stopping (empty for scikit-learn models).',
    "epochs_run": 'epochs the scored network trained before early stopping (mean over splits; empty for models without epochs).',
    "best_epoch": "the epoch whose checkpoint was kept (best on the inner validation split), mean over splits.",
    "at_cap": "True when a split's best epoch is the cap: the validation curve was still improving when training stopped.",
    "pretrained": "True when the model starts from weights trained elsewhere (the dlib embedding).",
    "n_fit_pictures": 'distinct pictures the model was fit on, per split (mean).',
    "n_val_pictures": "distinct pictures, disjoint from those, it was selected on (C, early stopping), per split (mean); there is no refit on fit + validation (identity/paper: 15 + 5 of each person's 20 training pictures).",
    "n_fit_sets": 'k-picture sets the model was fit on (set-trained rows only).',
    "n_val_sets": 'k-picture sets it was selected on (set-trained rows only).',
    "max_sets": 'cap on the k-subsets drawn per person and side (empty: every subset).',
    "n_test_pictures": "test pictures per split (rows with k = 1).",
    "n_test_sets": "test k-picture sets per split (rows with k > 1).",
    "transductive": "non-empty when the coefficients came from a step that saw the test pictures without their "
                    "labels (e.g. a texture basis built from the study's own pictures); the note says which.",
    "synthetic": "True when the data are the rendered synthetic faces, not KDEF/FEI.",
    "dataset": "whose pictures: `kdef`, `fei`, or `folder` (your own).",
    "note": "⚠ when the model predicts one class for every test picture (its accuracy is that class's share).",
}


def glossary_markdown(columns=None) -> str:
    """The glossary as a Markdown list (``columns``: only those, in that order; default every entry)."""
    keys = [c for c in (columns if columns is not None else TABLE1_GLOSSARY) if c in TABLE1_GLOSSARY]
    return "\n".join(f"* `{k}`: {TABLE1_GLOSSARY[k]}" for k in keys)


# What each protocol of Table 1 is, in one row (README, notebook 04 and the run page carry it).
PROTOCOL_TABLE = pd.DataFrame([
    ("identity", "paper", "KDEF's 10 people (F01–F05, M01–M05), session A",
     "per person 20 train / 15 test pictures, random per repeat; 3-picture sets", "pictures (same people)",
     "10 % (1 in 10)", "the paper's identity figures (100 % α, 87.3 % pictures); k = 3 is the paper's"),
    ("identity", "cross_session", "the same 10 people, both sessions (full KDEF only)",
     "train session A, test session B (one split)", "a photo session", "10 % (1 in 10)",
     "identity/paper rows: how much of it survives a new session"),
    ("identity", "cross_angle", "the same 10 people, session A",
     "3 folds: test {FL, FR}, {HL, HR} or {S} — a view and its mirror", "head views", "10 % (1 in 10)",
     "identity/paper rows: how much of it survives an unseen view"),
    ("expression", "paper", "every KDEF person (70 on a full KDEF, 20 on the dev set)",
     "random 2975 : 1925 picture split, stratified by expression, repeated", "pictures (test people are also "
     "in training)", "14.3 % (1 in 7)", "the paper's expression figures (83.5 % β, 70.6 % pictures)"),
    ("expression", "subject_independent", "every KDEF person",
     "folds of people (GroupKFold)", "people", "14.3 % (1 in 7)",
     "expression/paper rows: the drop is what knowing the face gave"),
    ("gender", "paper", "FEI: 100 people per repeat, one neutral picture each",
     "50 M + 50 F train, another 50 M + 50 F test, repeated", "people", "50 % (1 in 2)",
     "the paper's gender figures (95.4 % α, 79.8 % pictures)"),
    ("gender", "subject_independent", "FEI: all 200 people, both pictures",
     "folds of people, stratified by gender", "people", "50 % (1 in 2)", "gender/paper rows"),
], columns=["task", "protocol", "people", "split", "held out", "chance", "compare with"])


def protocol_markdown() -> str:
    """:data:`PROTOCOL_TABLE` as Markdown (README and notebook 04 carry it verbatim; a test checks)."""
    return markdown_table(PROTOCOL_TABLE)


def paper_reference(row) -> dict:
    """The paper's Table-1 figures for a row's task and protocol, whatever its model, input or k:
    ``{"paper_coefficients": …, "paper_images": …}`` (0–1), ``None`` values for a task or protocol the paper did
    not run or another dataset than the paper's. A reference to read a row against — :func:`paper_figure` says
    when a row *is* the paper's experiment."""
    p = PAPER_TABLE1.get(row["task"])
    dataset = row.get("dataset")
    if p is None or row["protocol"] != "paper" or (isinstance(dataset, str) and dataset != PAPER_DATASET[row["task"]]):
        return {"paper_coefficients": None, "paper_images": None}
    return {"paper_coefficients": p["coefficients"], "paper_images": p["images"]}


def chance_level(result: dict) -> float | None:
    """The majority-class rate of a result's test samples (confusion row sums, summed over splits): what always
    answering the most frequent class scores; ``1 / len(classes)`` when it kept no confusion; ``None`` when
    neither is known."""
    conf = np.asarray(result.get("confusion") or [], dtype=float)
    if conf.ndim == 2 and conf.sum() > 0:
        return float(conf.sum(axis=1).max() / conf.sum())
    classes = result.get("classes") or []
    return 1.0 / len(classes) if len(classes) else None


def _key(row) -> tuple:
    """A Table-1 row's or a result's identity (aggregator ``None``/NaN/"mean"-less rows compare equal)."""
    def norm(v):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
    return tuple(norm(row.get(c)) for c in ("task", "protocol", "input", "model", "backend", "aggregator"))


def _percent(v) -> str:
    return "—" if v is None or v != v else f"{100 * v:.1f} %"


def table1_explained(t1: pd.DataFrame, results: list[dict] | None = None) -> pd.DataFrame:
    """:func:`table1_display` made to stand alone: picture baselines named as such (``input`` in words, backend
    ``— (picture)``), ``chance`` (from the row's result, :func:`chance_level`) beside the accuracy, and the
    paper's figures for the row's task and protocol (``paper_coefficients``, ``paper_images``) beside ``paper``.
    Every column is in :data:`TABLE1_GLOSSARY`."""
    d = table1_display(t1).copy()
    if not len(d):
        return d.assign(chance=[], paper_coefficients=[], paper_images=[])
    rows = [r for _, r in t1.iterrows()]
    by_key = {_key(r): r for r in (results or [])}
    chance = [chance_level(by_key[_key(r)]) if _key(r) in by_key else None for r in rows]
    refs = [paper_reference(r) for r in rows]
    picture = [r["input"] in PICTURE_INPUT_NAMES for r in rows]
    d["input"] = [PICTURE_INPUT_NAMES.get(r["input"], r["input"]) for r in rows]
    d["backend"] = [PICTURE_BACKEND if pic else r["backend"] for r, pic in zip(rows, picture)]
    d["chance"] = [_percent(c) for c in chance]
    d["paper_coefficients"] = [_percent(r["paper_coefficients"]) for r in refs]
    d["paper_images"] = [_percent(r["paper_images"]) for r in refs]
    # what a reader compares first: the accuracy, chance and the paper's figures side by side
    first = [c for c in ("task", "protocol", "input", "model", "backend", "aggregator", "k", "accuracy", "chance",
                         "paper_coefficients", "paper_images", "paper", "leak_free", "splits") if c in d.columns]
    return d[first + [c for c in d.columns if c not in first]]


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


def table1_markdown(t1: pd.DataFrame, provenance: dict, results: list[dict] | None = None) -> str:
    d = table1_explained(t1, results)
    return (_header(provenance)
            + f"# {_title('Table 1 — classification accuracy (mean ± std over repeats/folds; pooled, with a 95 % interval from resampling people, for a single split and pooled folds)', provenance)}\n\n"
            + markdown_table(d) + "\n\n" + table1_footnotes(t1) + "\n\n## Columns\n\n"
            + glossary_markdown(d.columns) + "\n\n## Protocols\n\n" + protocol_markdown() + "\n")


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
    title = "Table 3 — expression confusion matrix (percent of each true row)"
    if source:
        title += f": {table3_source(source)}"
    return (_header(provenance) + f"# {_title(title, provenance)}\n\n"
            + markdown_table(d, index=True, digits=2)
            + "\n\nRows: true expression; columns: predicted. `paper_diagonal`: the paper's diagonal (its ResNet-34 "
              "on β).\n")


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
    return paths
