"""What a run's Table 1 shows, in sentences: which arm — 3DMM coefficients or pictures — wins each task and
protocol, by how much against the spread over repeats / folds, and how far both are from the paper's figures;
and the banner of a run that did not train the paper's ResNet-34 arms (what it can and cannot show).

Everything is read from the run's own Table 1 (``tables.table1``'s CSV). A sentence never claims more than the
numbers: a difference within the combined spread of the two rows reads "not distinguishable"; a difference with
no spread known reads "not tested"; each arm's figure is its *best* row (the page lists them all).

Spread of a row: its standard deviation over the repeats / folds; for a single split, the bootstrap 95 %
interval's half-width / 1.96. Two rows' combined spread: the square root of the sum of their squares.
"""
from __future__ import annotations

import html
import math

import pandas as pd

from .figures import INPUT_WORDS, MODEL_WORDS, PROTOCOL_WORDS
from .tables import PAPER_DATASET, PAPER_IMAGE_SIZE, PAPER_TABLE1, PICTURE_INPUT_NAMES, paper_figure

ARMS = ("coefficients", "pictures")
TASK_ORDER = ("identity", "expression", "gender")
# The set size of each of the paper's figures: its identity coefficients on 3-picture sets, everything else on
# single pictures (as ``tables.paper_figure`` reads it).
PAPER_K = {"identity": {"coefficients": 3, "pictures": 1}}


def arm(input: str) -> str:
    """``pictures`` for a picture input (the picture itself, HOG, pixels, the dlib embedding), else
    ``coefficients``."""
    return "pictures" if input in PICTURE_INPUT_NAMES else "coefficients"


def _num(v) -> float | None:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def spread(row) -> float | None:
    """A row's spread (0–1): std over its splits, or for a single split its bootstrap interval / (2 × 1.96)."""
    std = _num(row.get("accuracy_std"))
    if std is not None:
        return std
    lo, hi = _num(row.get("ci_low")), _num(row.get("ci_high"))
    return (hi - lo) / (2 * 1.96) if lo is not None and hi is not None else None


def _describe(row) -> str:
    bits = [MODEL_WORDS.get(row["model"], str(row["model"])), "on", INPUT_WORDS.get(row["input"], str(row["input"]))]
    if arm(row["input"]) == "coefficients":
        flags = [f for f, on in (("transductive: its fit saw the test pictures", _flag(row.get("transductive"))),
                                 ("settings tuned on the test folds", _flag(row.get("tuned_on_test"))),
                                 ("person-grouped: its β used the person's other pictures, no label",
                                  _flag(row.get("person_grouped")))) if on]
        bits.append(f"({row['backend']}" + (f", {row['aggregator']}" if isinstance(row.get("aggregator"), str)
                                           and row["aggregator"] not in ("", "mean") else "")
                    + "".join(f"; {f}" for f in flags) + ")")
    return " ".join(bits)


def _flag(v) -> bool:
    """A Table 1 flag column's value is set: True or a non-empty note (not NaN, False, '' or 'False')."""
    if v is None or (isinstance(v, float) and v != v):
        return False
    return str(v).strip() not in ("", "False", "0", "nan")


def _splits(row) -> str:
    n, kind = _num(row.get("n_splits")), row.get("split_kind")
    if kind == "single split" or n == 1:
        return "one split"
    return f"{int(n)} {kind}" if n is not None and isinstance(kind, str) else "its splits"


def _pct(v: float) -> str:
    return f"{100 * v:.1f} %"


def _pts(v: float) -> str:
    return f"{100 * abs(v):.1f} points"


def _groups(t1: pd.DataFrame):
    d = t1.dropna(subset=["accuracy_mean"]).copy()
    if not len(d):
        return
    d["_arm"] = [arm(i) for i in d["input"]]
    tasks = [t for t in TASK_ORDER if t in set(d["task"])] + sorted(set(d["task"]) - set(TASK_ORDER))
    for task in tasks:
        dt = d[d["task"] == task]
        protocols = sorted(set(dt["protocol"]), key=lambda p: (p != "paper", p))
        for protocol in protocols:
            dp = dt[dt["protocol"] == protocol]
            for k in sorted(set(dp["k"].fillna(1).astype(int))):
                yield task, protocol, k, dp[dp["k"].fillna(1).astype(int) == k]


def compare(t1: pd.DataFrame) -> list[dict]:
    """Per (task, protocol, k): the best row of each arm, the difference (coefficients − pictures, 0–1), the
    combined spread, and a verdict: ``coefficients`` / ``pictures`` (the difference exceeds the combined spread),
    ``indistinguishable`` (it does not), ``untested`` (no spread known) or ``one arm`` (only one arm ran)."""
    out = []
    for task, protocol, k, g in _groups(t1):
        best = {a: g[g["_arm"] == a].sort_values("accuracy_mean", ascending=False).iloc[0]
                for a in ARMS if (g["_arm"] == a).any()}
        item = {"task": task, "protocol": protocol, "k": k, "best": best, "rows": g,
                "n_rows": {a: int((g["_arm"] == a).sum()) for a in ARMS}}
        if len(best) < 2:
            item["verdict"] = "one arm"
        else:
            c, p = best["coefficients"], best["pictures"]
            diff = float(c["accuracy_mean"]) - float(p["accuracy_mean"])
            sc, sp = spread(c), spread(p)
            combined = math.sqrt(sc ** 2 + sp ** 2) if sc is not None and sp is not None else None
            item.update(difference=diff, spread=combined)
            if combined is None:
                item["verdict"] = "untested"
            elif abs(diff) > combined:
                item["verdict"] = "coefficients" if diff > 0 else "pictures"
            else:
                item["verdict"] = "indistinguishable"
        out.append(item)
    return out


def _paper_sentence(items: list[dict]) -> str | None:
    """How far the best rows of a task's ``paper`` protocol are from the paper's figures, each arm at the paper's
    set size for it (:data:`PAPER_K`), on the paper's dataset; and the rows that repeat the paper's experiment
    (:func:`tables.paper_figure`, the ``paper`` column) against their figure."""
    task = items[0]["task"]
    paper = PAPER_TABLE1.get(task)
    if paper is None or items[0]["protocol"] != "paper":
        return None
    dataset = next(iter(items[0]["best"].values())).get("dataset")
    if isinstance(dataset, str) and dataset != PAPER_DATASET[task]:
        return None
    parts, best = [], {}
    for a, key in (("coefficients", "coefficients"), ("pictures", "images")):
        k = PAPER_K.get(task, {}).get(a, 1)
        row = next((it["best"][a] for it in items if it["k"] == k and a in it["best"]), None)
        if row is None:
            continue
        best[a] = row
        gap = float(row["accuracy_mean"]) - paper[key]
        where = "at" if abs(gap) < 0.0005 else ("below" if gap < 0 else "above")
        parts.append(f"the best {a[:-1]} row{f' (sets of {k})' if k > 1 else ''} is "
                     f"{'' if where == 'at' else _pts(gap) + ' '}{where} the paper's {_pct(paper[key])} with "
                     f"{'3DMM coefficients' if a == 'coefficients' else 'pictures'}")
    if not parts:
        return None
    not_paper = [a for a, r in best.items() if paper_figure(r) is None]
    caveat = ""
    if not_paper:
        which = ("neither best row repeats" if len(not_paper) == 2 else
                 f"the best {not_paper[0][:-1]} row does not repeat")
        caveat = (f" ({which} the paper's experiment, its ResNet-34 on its input and {PAPER_IMAGE_SIZE}-px pictures: "
                  "read it as a distance, not a replication)")
    own = [r for it in items for _, r in it["rows"].iterrows() if paper_figure(r) is not None]
    if own:
        caveat += "; rows that repeat it: " + ", ".join(
            f"{_describe(r)}{f' (sets of {int(r.k)})' if int(r.k) > 1 else ''} {_pct(r['accuracy_mean'])} against "
            f"its {_pct(paper_figure(r))}" for r in own)
    return "Against the paper: " + "; ".join(parts) + caveat + "."


def sentences(t1: pd.DataFrame) -> list[str]:
    """One sentence per (task, protocol, k) of the run's Table 1 (plus one against the paper where it applies)."""
    out, items = [], compare(t1)
    for item in items:
        task, protocol, k, best = item["task"], item["protocol"], item["k"], item["best"]
        head = f"{task.capitalize()}, {PROTOCOL_WORDS.get(protocol, protocol)} ({protocol}" + \
            (f", sets of {k} pictures" if k > 1 else "") + ")"
        v = item["verdict"]
        if v == "one arm":
            (a, r), = best.items()
            out.append(f"{head}: only {a} rows ran (best {_pct(r['accuracy_mean'])}, {_describe(r)}); the arms are "
                       "not compared.")
        else:
            c, p = best["coefficients"], best["pictures"]
            rows = (f"best coefficient row {_pct(c['accuracy_mean'])} ({_describe(c)}, {_splits(c)}) vs best picture "
                    f"row {_pct(p['accuracy_mean'])} ({_describe(p)}, {_splits(p)})")
            if v == "untested":
                out.append(f"{head}: {rows}; no spread is known, so the {_pts(item['difference'])} difference is not "
                           "tested.")
            elif v == "indistinguishable":
                out.append(f"{head}: the arms are not distinguishable — {rows}; the {_pts(item['difference'])} "
                           f"difference is within the combined spread of ±{_pts(item['spread'])}.")
            else:
                win, lose = ("coefficient", "picture") if v == "coefficients" else ("picture", "coefficient")
                ratio = abs(item["difference"]) / item["spread"] if item["spread"] else float("inf")
                out.append(f"{head}: the best {win} row beats the best {lose} row by {_pts(item['difference'])}, "
                           f"{ratio:.1f}× the combined spread of ±{_pts(item['spread'])} — {rows}.")
        pair = [it for it in items if (it["task"], it["protocol"]) == (task, protocol)]
        if item is pair[-1]:  # after the last set size of a task's protocol
            paper = _paper_sentence(pair)
            if paper:
                out.append(paper)
    return out


INTRO = ("What this run's Table 1 shows (each arm's best row per task, protocol and set size; \"spread\": the two "
         "rows' std over their repeats/folds combined — with 2–3 splits a rough estimate; a difference within it "
         "is not a finding):")


def paragraph(t1: pd.DataFrame) -> str:
    """The findings as one paragraph of plain sentences (empty Table 1: says so)."""
    said = sentences(t1)
    return " ".join([INTRO] + said) if said else "Table 1 has no accuracy yet: nothing to report."


def markdown(t1: pd.DataFrame) -> str:
    """The findings for a notebook: the banner (:func:`paper_arms_banner`) when the run has one, the intro, then
    one bullet per sentence."""
    said, banner = sentences(t1), paper_arms_banner(t1)
    body = INTRO + "\n\n" + "\n".join(f"* {s}" for s in said) if said else paragraph(t1)
    return (f"> **What this run can show.** {banner}\n\n" if banner else "") + body


def html_block(t1: pd.DataFrame) -> str:
    said = sentences(t1)
    if not said:
        return f"<p>{html.escape(paragraph(t1))}</p>"
    return (f"<p>{html.escape(INTRO)}</p><ul class='findings'>"
            + "".join(f"<li>{html.escape(s)}</li>" for s in said) + "</ul>")


# ------------------------------------------------------------------------------------------------------ banner
def paper_arms_banner(t1: pd.DataFrame) -> str | None:
    """The banner of a run that did not train the paper's ResNet-34 arms (on coefficients, on pictures), or
    trained its picture arm on smaller pictures than the paper's 224 px: what the run can and cannot show.
    ``None`` when both arms ran as the paper's."""
    if not len(t1):
        return None
    models = set(t1["model"])
    resnet = t1[t1["model"] == "resnet34"]
    coef = resnet[[arm(i) == "coefficients" for i in resnet["input"]]]
    image = resnet[resnet["input"] == "image"]
    missing = ([] if len(coef) else ["on 3DMM coefficients"]) + ([] if len(image) else ["on pictures"])
    if missing:
        ran = ", ".join(sorted(MODEL_WORDS.get(m, str(m)) for m in models))
        return (f"This run did not train the paper's ResNet-34 {' or '.join(missing)} (models that ran: {ran}). "
                "It can show how well 3DMM coefficients and picture features separate the classes with these "
                "models on the same splits, and how far they are from chance. It cannot confirm or refute the "
                "paper's figures, which come from its ResNet-34s: the paper columns are a reference to read the "
                "rows against, not a replication. The paper's arms run in paper.yaml (a GPU) or cpu.yaml.")
    sizes = sorted({int(s) for s in image["image_size"].dropna()} - {PAPER_IMAGE_SIZE})
    if sizes:
        return (f"This run's picture ResNet-34 saw {'/'.join(map(str, sizes))}-px crops, not the paper's "
                f"{PAPER_IMAGE_SIZE} px: its picture rows are a smaller-input version of the paper's picture arm, "
                "and the paper's picture figures are a reference for them, not a replication.")
    return None
