"""Table 1 for reading (the run page, ``table1.md``, notebook 05): its display form, the explained form, the pivot
and the best rows, the footnotes, the glossary of its columns (:data:`TABLE1_GLOSSARY`) and the protocol table."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..classify.protocols import LEAKAGE
from ..vocab import PICTURE_BACKEND
from .markdown import markdown_table, provenance_header, synthetic_title
from .paper import paper_figure, paper_reference

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
    if "ran_to_cap" in d.columns:  # "1/3": splits that ran to the cap, of the row's splits
        d["ran_to_cap"] = [None if r != r or r is None else f"{int(r)}/{int(n)}" if n == n and n else str(int(r))
                           for r, n in zip(d["ran_to_cap"], d["n_splits"])]
    cols = ["task", "protocol", "input", "model", "backend", "aggregator", "k", "trained_k", "leak_free", "clean",
            "tuned_on_test", "person_grouped", "exposure", "accuracy", "val_accuracy", "paper", "splits",
            "split_accuracies", "image_size", "epochs_max", "patience", "epochs_run", "best_epoch", "at_cap",
            "learning_epoch", "ran_to_cap", "pretrained", "n_fit_pictures", "n_val_pictures",
            "n_fit_sets", "n_val_sets", "max_sets", "n_test_pictures", "n_test_sets", "transductive"]
    return d[[c for c in cols if c in d.columns]]


FOOTNOTE_LEAK_FREE = ("`leak_free`: true only when the protocol is leak-free *and* nothing transductive or "
                      "person-grouped fed the coefficients (such a backend makes every row it feeds not leak-free). "
                      "`clean`: leak-free, not tuned on test, and no `exposure` — the only rows the verdict "
                      "chooses from.")
FOOTNOTE_EXPOSURE = ("`exposure`: a network that coded the coefficients was trained, without labels, on pictures that "
                     "include Table 1 test pictures (the cross-fitted R-Net and C-Net: each part is coded by networks "
                     "trained on the other part, test pictures of other people included). The study takes the "
                     "flag route, not a strict re-training per split: such rows are shown, marked ¶, and never "
                     "clean.")
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
FOOTNOTE_CAPS = ("`epochs_max` / `patience`: the network's epoch cap and early-stopping patience, counted only from "
                 "`learning_epoch`, the first epoch whose validation accuracy beat the majority rate by one binomial "
                 "standard error with a validation loss below the class prior's; `ran_to_cap`: splits that trained "
                 "to the cap instead of stopping on the validation curve (a network that never learnt runs to the "
                 "cap); `at_cap`: a split's best epoch was the cap (the validation curve was still improving).")
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
    lines = [f"* `{t}/{p}`: leakage — {LEAKAGE.get((t, p), 'see facelib.classify.protocols')}"
             for t, p in t1[["task", "protocol"]].drop_duplicates().itertuples(index=False)]
    for b, note in t1.loc[t1["transductive"].astype(str).str.len() > 0, ["backend", "transductive"]] \
            .drop_duplicates().itertuples(index=False):
        lines.append(f"* backend `{b}` is **transductive**: {note}")
    tuned = _flag(t1, "tuned_on_test", False)
    if tuned.any():
        lines.append(f"* {FOOTNOTE_TUNED} Backends: "
                     + ", ".join(f"`{b}`" for b in sorted(set(t1.loc[tuned, "backend"].astype(str)))))
    if "person_grouped" in t1.columns:
        for b, note in t1.loc[_text_flag(t1, "person_grouped"),
                              ["backend", "person_grouped"]].drop_duplicates().itertuples(index=False):
            lines.append(f"* backend `{b}` is **person-grouped** ({PIVOT_MARKS['person_grouped']}): {note}. "
                         f"{FOOTNOTE_PERSON}")
    if t1["backend"].astype(str).str.contains("+rnet", regex=False).any():
        lines.append(f"* {FOOTNOTE_RNET}")
    lines += [f"* {FOOTNOTE_LEAK_FREE}", f"* {FOOTNOTE_COUNTS}", f"* {FOOTNOTE_K1}", f"* {FOOTNOTE_UNCERTAINTY}",
              f"* {FOOTNOTE_CAPS}", f"* {FOOTNOTE_PAPER}"]
    if "exposure" in t1.columns and _text_flag(t1, "exposure").any():
        lines.insert(len(lines) - 6, f"* {PIVOT_MARKS['exposure']} {FOOTNOTE_EXPOSURE}")
    return "\n".join(lines)


PIVOT_MARKS = {"not_leak_free": "†", "tuned_on_test": "‡", "person_grouped": "§", "exposure": "¶"}
PIVOT_CAPTION = ("† not leak-free (the protocol leaks, or the coefficients are transductive or person-grouped); "
                 "‡ coefficient settings tuned on Table 1's test folds; § person-grouped coefficients (each "
                 "picture's used its person's other pictures, never a label); ¶ exposure: a network that coded "
                 "the coefficients was trained, without labels, on pictures that include test pictures")
FOOTNOTE_PERSON = ("It uses who is who, never an expression label; on unseen people (`subject_independent`) a test "
                   "picture's identity comes from the same test person's pictures of other expressions.")


def _flag(t1: pd.DataFrame, column: str, default: bool) -> pd.Series:
    return t1[column].fillna(default).astype(bool) if column in t1.columns else pd.Series(default, index=t1.index)


def _text_flag(t1: pd.DataFrame, column: str) -> pd.Series:
    """A note column (``person_grouped``) as a flag: non-empty text."""
    return t1[column].astype(object).fillna("").astype(str).str.len() > 0 if column in t1.columns else \
        pd.Series(False, index=t1.index)


# ------------------------------------------------------------------------ Table 1 explained (page, notebook 05)
# Inputs computed from the picture itself — no 3DMM is involved, whatever ``backend`` the result file carries —
# and the words a reader sees for them (the picture arm of ``classify.plan.IMAGE_MODELS``).
PICTURE_INPUT_NAMES = {"image": "picture", "hog": "HOG features", "pixels": "pixels", "dlib": "dlib embedding"}

# Every column of Table 1 (its CSV and the page's display form), in words. The one owner: the run page and
# table1.md render it under the table, docs/reading.md carries :func:`glossary_markdown` verbatim (a test checks).
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
               "(ICT Face Model); `+fit_<mode>` refined by the hybrid-loss fit (`+fit_person`: β refitted with α "
               "held at the person's other pictures, see `person_grouped`), `+rnet` coded by the "
               "cross-fitted R-Net. `— (picture)`: a picture baseline, no 3DMM.",
    "aggregator": "how the α of a k-picture set becomes one vector (`mean`, `median`, `cnet`: C-Net's "
                  "confidences; `set_fit`: one α fitted jointly to the set's pictures); empty when the row has no "
                  "sets.",
    "k": "pictures per test sample: 1 = single pictures; 3 = the identity protocol's 3-picture sets (aggregated "
         "α for coefficient models, the mean of per-picture class scores for per-picture models).",
    "trained_k": 'pictures per training sample of the model scored in this row (1: trained and selected on single pictures; 3: on 3-picture aggregates). k = 1 rows of coefficient models on a set protocol come from a separate single-picture model.',
    "leak_free": "True only when the protocol is leak-free (nothing of a test sample's person, session or view, as the protocol defines, is in training) AND nothing transductive or person-grouped fed the coefficients; False for the paper's identity and expression protocols.",
    "protocol_leak_free": "True when the protocol itself is leak-free (nothing of a test sample's person, session "
                          "or view is in training); False for the paper's identity and expression splits, whose "
                          "leak both arms share.",
    "clean": "True when `leak_free`, not `tuned_on_test` and no `exposure`: nothing that coded or selected the "
             "row saw a test picture. The verdict chooses each arm's row among the clean rows; on a protocol that "
             "is not leak-free (the paper's identity and expression splits), among the rows clean but for that "
             "protocol's own leak, which both arms share.",
    "exposure": "non-empty when a network that coded the coefficients was trained, without labels, on pictures "
                "that include Table 1 test pictures (the cross-fitted R-Net and C-Net, trained on the other part's "
                "pictures; settings chosen on validation sides of other repeats); such a row is never `clean`.",
    "val_accuracy": "accuracy of the scored model on its inner validation split (the pictures it was selected on, "
                    "disjoint from fit and test), mean over splits, 0–1: what the verdict chooses each arm's row by.",
    "learning_epoch": "the first epoch that met the learning rule (validation accuracy above the majority rate by "
                      "one binomial standard error and validation loss below the class prior's), mean over the "
                      "splits that met it; empty when none did or for models without epochs.",
    "ran_to_cap": "splits whose network trained to the epoch cap instead of stopping on its validation curve, of "
                  "the row's splits (e.g. 1/3); a network that never learnt runs to the cap.",
    "tuned_on_test": "True when the coefficients' settings (R-Net) were chosen by accuracy on Table 1's own test folds: read the row as an upper bound.",
    "person_grouped": "non-empty when each picture's coefficients used its person's other pictures (who is who, "
                      "never a label): the person-consistent β (`+fit_person`, identity held at the leave-one-out "
                      "mean of the person's other pictures); on unseen people that is the test person's own "
                      "pictures of other expressions. Scored on β only.",
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
    "patience": 'epochs without a better validation score before early stopping, counted only from `learning_epoch` (a '
                'network still at chance trains on to the cap); empty for scikit-learn models.',
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


# What each protocol of Table 1 is, in one row (docs/reading.md, notebook 04 and the run page carry it).
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
    """:data:`PROTOCOL_TABLE` as Markdown (docs/reading.md and notebook 04 carry it verbatim; a test checks)."""
    return markdown_table(PROTOCOL_TABLE)




def chance_level(result: dict) -> float | None:
    """The majority-class rate of a result's test samples (confusion row sums, summed over splits): what always
    answering the most frequent class scores; ``1 / len(classes)`` when it kept no confusion; ``None`` when
    neither is known."""
    conf = np.asarray(result.get("confusion") or [], dtype=float)
    if conf.ndim == 2 and conf.sum() > 0:
        return float(conf.sum(axis=1).max() / conf.sum())
    classes = result.get("classes") or []
    return 1.0 / len(classes) if len(classes) else None


def row_key(row, aggregator: bool = True) -> tuple:
    """A Table-1 row's or a result's identity: task, protocol, input, model, backend (a picture input's is always
    :data:`PICTURE_BACKEND`, whatever its result file carries) and, with ``aggregator``, the aggregator
    (``None``/NaN/'' compare equal)."""
    def norm(v):
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
    backend = PICTURE_BACKEND if row.get("input") in PICTURE_INPUT_NAMES else row.get("backend")
    base = tuple(norm(row.get(c)) for c in ("task", "protocol", "input", "model")) + (norm(backend),)
    return base + (norm(row.get("aggregator")),) if aggregator else base


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
    by_key = {row_key(r, aggregator=False): r for r in (results or [])}  # the same test samples per aggregator
    chance = [chance_level(by_key[row_key(r, False)]) if row_key(r, False) in by_key else None for r in rows]
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
        + np.where(_flag(t1, "tuned_on_test", False), " " + PIVOT_MARKS["tuned_on_test"], "") \
        + np.where(_text_flag(t1, "person_grouped"), " " + PIVOT_MARKS["person_grouped"], "") \
        + np.where(_text_flag(t1, "exposure"), " " + PIVOT_MARKS["exposure"], "")
    d = t1.assign(accuracy=text,
                  aggregator=t1["aggregator"].fillna("") if "aggregator" in t1 else "")  # NaN would drop columns
    out = d.pivot_table(index=["task", "protocol", "k"], columns=["input", "model", "backend", "aggregator"],
                        values="accuracy", aggfunc="first").fillna("")
    out.attrs["caption"] = PIVOT_CAPTION
    return out


def table1_best(t1: pd.DataFrame) -> pd.DataFrame:
    """EXPLORATION ONLY — the best *clean* row per (task, protocol, k) **on the test split**, with its backend.
    A maximum over many rows on the same test folds is an optimistic pick (the winner's curse); it never feeds the
    verdict, which chooses each arm's row on validation (:mod:`facelib.report.verdict`). ``chosen_among`` says so
    and how many rows competed."""
    ok = _flag(t1, "clean", False) if "clean" in t1.columns else \
        _flag(t1, "leak_free", False) & ~_flag(t1, "tuned_on_test", False)
    d = t1[ok].dropna(subset=["accuracy_mean"])
    cols = ["task", "protocol", "k", "input", "model", "backend", "leak_free", "accuracy_mean", "chosen_among"]
    if not len(d):
        return pd.DataFrame(columns=[c if c != "accuracy_mean" else "best accuracy" for c in cols])
    groups = d.groupby(["task", "protocol", "k"])
    best = d.loc[groups["accuracy_mean"].idxmax()].copy()
    n = groups.size()
    best["chosen_among"] = [f"exploration: best of {n[(t, p, k)]} clean rows on the test split (not the verdict)"
                            for t, p, k in best[["task", "protocol", "k"]].itertuples(index=False)]
    return best[cols].rename(columns={"accuracy_mean": "best accuracy"}).reset_index(drop=True)

def table1_markdown(t1: pd.DataFrame, provenance: dict, results: list[dict] | None = None) -> str:
    d = table1_explained(t1, results)
    return (provenance_header(provenance)
            + f"# {synthetic_title('Table 1 — classification accuracy (mean ± std over repeats/folds; pooled, with a 95 % interval from resampling people, for a single split and pooled folds)', provenance)}\n\n"
            + markdown_table(d) + "\n\n" + table1_footnotes(t1) + "\n\n## Columns\n\n"
            + glossary_markdown(d.columns) + "\n\n## Protocols\n\n" + protocol_markdown() + "\n")
