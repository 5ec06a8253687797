"""What a run shows, in sentences, written from its verdict table only (:mod:`facelib.report.verdict`,
``tables/verdict.csv``): per task, protocol and set size, which arm — 3DMM coefficients or pictures — each arm's
row chosen on validation among its clean rows, their test accuracies, the paired difference with its interval,
p-value and verdict; how far the chosen rows are from the paper's figures; and the banner of a run that did not
train the paper's ResNet-34 arms (what it can and cannot show; read from Table 1, which says what ran).

A sentence never claims more than the line: "not distinguishable" unless the Holm-adjusted p-value over the run's
lines is below 0.05 and the interval excludes 0.
"""
from __future__ import annotations

import html

import pandas as pd

from .figures import INPUT_WORDS, MODEL_WORDS, PROTOCOL_WORDS
from .tables import PAPER_DATASET, PAPER_IMAGE_SIZE, PAPER_TABLE1
from .verdict import ARMS, arm, number as _num  # noqa: F401 — arm is this module's public helper too

# The set size of each of the paper's figures: its identity coefficients on 3-picture sets, everything else on
# single pictures (as ``tables.paper_figure`` reads it).
PAPER_K = {"identity": {"coefficients": 3, "pictures": 1}}


def _flag(v) -> bool:
    """A Table 1 flag column's value is set: True or a non-empty note (not NaN, False, '' or 'False')."""
    if v is None or (isinstance(v, float) and v != v):
        return False
    return str(v).strip() not in ("", "False", "0", "nan")


def _pct(v: float) -> str:
    return f"{100 * v:.1f} %"


def _pts(v: float) -> str:
    return f"{100 * abs(v):.1f} points"


def describe(line, prefix: str) -> str:
    """One arm's chosen row in words: model on input (backend, aggregator) — a pretrained picture network says so."""
    g = {f: line.get(f"{prefix}_{f}") for f in ("model", "input", "backend", "aggregator")}
    text = f"{MODEL_WORDS.get(g['model'], str(g['model']))} on {INPUT_WORDS.get(g['input'], str(g['input']))}"
    if prefix == "coef":
        agg = g["aggregator"] if isinstance(g["aggregator"], str) and g["aggregator"] not in ("", "mean") else None
        text += f" ({g['backend']}" + (f", {agg}" if agg else "") + ")"
    elif _flag(line.get("pic_pretrained")):
        text += " (a network pretrained elsewhere on faces)"
    return text


def _arm_text(line, prefix: str, name: str) -> str:
    n = int(line.get(f"{prefix}_candidates") or 0)
    ties = int(_num(line.get(f"{prefix}_val_ties")) or 1)
    tied = f", tied with {ties - 1} other{'s' if ties > 2 else ''} there (the first listed is taken)" if ties > 1 else ""
    return (f"{name} row {describe(line, prefix)} — chosen on validation ({_pct(line[f'{prefix}_val_accuracy'])}"
            f"{tied}) among {n} clean {name} row{'s' if n != 1 else ''} — scores "
            f"{_pct(line[f'{prefix}_test_accuracy'])} on test")


def _head(line) -> str:
    k = int(line["k"])
    return (f"{str(line['task']).capitalize()}, {PROTOCOL_WORDS.get(line['protocol'], line['protocol'])} "
            f"({line['protocol']}" + (f", sets of {k} pictures" if k > 1 else "") + ")")


def _test_text(line) -> str:
    lo, hi, p, ph = (_num(line.get(c)) for c in ("ci_low", "ci_high", "p_value", "p_holm"))
    unit, n = line.get("unit"), int(_num(line.get("n_pairs")) or 0)
    ci = f" [{100 * lo:+.1f}, {100 * hi:+.1f}]" if lo is not None and hi is not None else ""
    return (f"difference {100 * line['difference']:+.1f} points{ci} (95 % interval, {unit} resampled, {n} pairs), "
            f"paired sign-flip p = {p:.3g}" + (f", Holm-adjusted over the run's {int(line['n_tests'])} lines "
                                               f"{ph:.3g}" if ph is not None else ""))


def sentence(line) -> str:
    """One verdict line as a sentence."""
    head, v = _head(line), line["verdict"]
    if v == "one arm":
        have = [(p, n) for p, n in (("coef", "coefficient"), ("pic", "picture"))
                if isinstance(line.get(f"{p}_model"), str)]
        if not have:
            return f"{head}: no clean row with a validation accuracy in either arm; nothing is compared."
        (p, n), = have
        return f"{head}: only the {n} arm has a clean row ({_arm_text(line, p, n)}); the arms are not compared."
    rows = f"{_arm_text(line, 'coef', 'coefficient')}; {_arm_text(line, 'pic', 'picture')}"
    if line.get("unit") == "unpaired":
        return f"{head}: {rows}; the two rows were not scored on the same test samples, so they are not compared."
    if v == "not distinguishable":
        return f"{head}: not distinguishable — {rows}; {_test_text(line)}."
    return f"{head}: {v} win — {rows}; {_test_text(line)}."


def _paper_sentence(lines: pd.DataFrame) -> str | None:
    """How far the chosen rows of a task's ``paper`` protocol are from the paper's figures, each arm at the
    paper's set size for it (:data:`PAPER_K`), on the paper's dataset."""
    task = lines["task"].iloc[0]
    paper = PAPER_TABLE1.get(task)
    if paper is None:
        return None
    parts = []
    for a, prefix, key in (("coefficients", "coef", "coefficients"), ("pictures", "pic", "images")):
        k = PAPER_K.get(task, {}).get(a, 1)
        at = lines[(lines["k"].astype(int) == k) & lines[f"{prefix}_test_accuracy"].notna()]
        if not len(at) or (isinstance(at["dataset"].iloc[0], str) and at["dataset"].iloc[0] != PAPER_DATASET[task]):
            continue
        acc = float(at[f"{prefix}_test_accuracy"].iloc[0])
        gap = acc - paper[key]
        where = "at" if abs(gap) < 0.0005 else ("below" if gap < 0 else "above")
        parts.append(f"the chosen {a[:-1]} row{f' (sets of {k})' if k > 1 else ''}, {_pct(acc)}, is "
                     f"{'' if where == 'at' else _pts(gap) + ' '}{where} the paper's {_pct(paper[key])}")
    if not parts:
        return None
    return ("Against the paper: " + "; ".join(parts) + " (a distance, not a replication, unless the row is the "
            f"paper's ResNet-34 on its input and {PAPER_IMAGE_SIZE}-px pictures; Table 1's `paper` column marks "
            "those).")


def sentences(verdict: pd.DataFrame) -> list[str]:
    """One sentence per verdict line, plus one against the paper after a task's ``paper`` lines."""
    out = []
    if verdict is None or not len(verdict):
        return out
    for i, (_, line) in enumerate(verdict.iterrows()):
        out.append(sentence(line))
        nxt = verdict.iloc[i + 1] if i + 1 < len(verdict) else None
        if line["protocol"] == "paper" and (nxt is None or (nxt["task"], nxt["protocol"]) != (line["task"], "paper")):
            same = verdict[(verdict["task"] == line["task"]) & (verdict["protocol"] == "paper")]
            paper = _paper_sentence(same)
            if paper:
                out.append(paper)
    return out


INTRO = ("The verdict (tables/verdict.csv): per task, protocol and set size, each arm is represented by its clean "
         "row with the best validation accuracy — chosen before any test figure is read — and the two rows are "
         "compared paired, on the same splits and people. A winner is named only when the Holm-adjusted p-value "
         "over all of the run's lines is below 0.05 and the 95 % interval excludes 0:")


def paragraph(verdict: pd.DataFrame | None) -> str:
    """The findings as one paragraph of plain sentences (no verdict lines: says so)."""
    said = sentences(verdict)
    return " ".join([INTRO] + said) if said else "No verdict yet: Table 1 has no clean row to compare."


def markdown(verdict: pd.DataFrame | None, t1: pd.DataFrame | None = None) -> str:
    """The findings for a notebook: the banner (:func:`paper_arms_banner`, from Table 1) when the run has one,
    the intro, then one bullet per sentence."""
    said = sentences(verdict)
    banner = paper_arms_banner(t1) if t1 is not None else None
    body = INTRO + "\n\n" + "\n".join(f"* {s}" for s in said) if said else paragraph(verdict)
    return (f"> **What this run can show.** {banner}\n\n" if banner else "") + body


def html_block(verdict: pd.DataFrame | None) -> str:
    said = sentences(verdict)
    if not said:
        return f"<p>{html.escape(paragraph(verdict))}</p>"
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
