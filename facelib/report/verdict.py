"""The study's answer as a table: per task, protocol and set size k, do 3DMM coefficients classify as well as
pictures? One line each in ``tables/verdict.csv`` (:data:`VERDICT_COLUMNS`), chosen before any test figure is read:

1. **Selection on validation.** Each arm (coefficients; pictures — the picture itself, HOG, pixels, the dlib
   embedding) is represented by its *clean* Table 1 row (:func:`facelib.report.tables.table1_records`: leak-free,
   not tuned on test, no exposure; on the paper's leaking protocols the protocol's own leak, shared by both arms,
   is allowed and the line says ``protocol_leak_free`` False — :func:`candidate`) with the best validation
   accuracy (``val_accuracy``: the scored model on its
   inner validation split, mean over splits). Ties keep the row listed first (Table 1's order) and are counted
   (``*_val_ties``: rows at the chosen validation accuracy, the chosen one included). The number of candidates of each
   arm is recorded; a best-on-test view (``tables.table1_best``) is exploration and never feeds this table.
2. **Paired comparison.** Both rows were scored on the same splits and the same test samples. With people known
   (a ``subject`` column), each person's correct answers are summed over every split for both rows; the
   difference is the pooled difference of the two accuracies, its 95 % interval a percentile bootstrap over
   *people* (:data:`N_BOOTSTRAP` draws, seeded), its p-value a two-sided sign-flip permutation test over people
   (exact up to :data:`EXACT_UP_TO` people, else :data:`N_PERMUTATIONS` seeded random flips). Without people,
   the unit is the split: per-split differences, an exact sign-flip test and a t interval.
3. **Several tests.** A run tests every line at once, so each p-value is also given Holm-adjusted over the run's
   lines (``p_holm``, ``n_tests``). A line names a winner only when ``p_holm`` < :data:`ALPHA` *and* the interval
   excludes 0; otherwise the arms are "not distinguishable".
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from scipy import stats

from .table1_display import PICTURE_INPUT_NAMES
from .records import table1_records

ALPHA = 0.05
N_BOOTSTRAP = 2000
N_PERMUTATIONS = 20000
EXACT_UP_TO = 16
ARMS = ("coefficients", "pictures")
ARM_PREFIX = {"coefficients": "coef", "pictures": "pic"}
ROW_FIELDS = ("backend", "input", "model", "aggregator")
VERDICT_COLUMNS = (["task", "protocol", "k", "dataset", "protocol_leak_free"]
                   + [f"coef_{f}" for f in ROW_FIELDS] + ["coef_candidates"]
                   + [f"pic_{f}" for f in ROW_FIELDS] + ["pic_candidates", "pic_pretrained", "selected_on",
                                                        "coef_val_ties", "pic_val_ties",
                                                        "coef_val_accuracy", "pic_val_accuracy",
                                                        "coef_test_accuracy", "pic_test_accuracy", "difference",
                                                        "ci_low", "ci_high", "unit", "n_pairs", "p_value", "p_holm",
                                                        "n_tests", "verdict"])
VERDICTS = ("coefficients", "pictures", "not distinguishable", "one arm")
TASK_ORDER = ("identity", "expression", "gender")


def arm(input: str) -> str:
    """``pictures`` for a picture input (the picture itself, HOG, pixels, the dlib embedding), else
    ``coefficients``."""
    return "pictures" if input in PICTURE_INPUT_NAMES else "coefficients"


# --------------------------------------------------------------------------------------------- the statistics
def sign_flip_p(diffs, seed: int = 0, exact_up_to: int = EXACT_UP_TO, n: int = N_PERMUTATIONS) -> float:
    """Two-sided p-value of a paired sign-flip permutation test on the sum of ``diffs`` (one per pair): the share
    of sign patterns whose |sum| reaches the observed |sum| — every pattern up to ``exact_up_to`` pairs, else ``n``
    seeded random ones ((hits + 1) / (n + 1)). 1.0 with no pairs or all differences zero."""
    d = np.asarray(diffs, dtype=np.float64)
    d = d[d != 0]
    if not len(d):
        return 1.0
    observed = abs(d.sum()) - 1e-12 * max(1.0, float(np.abs(d).sum()))
    if len(d) <= exact_up_to:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=len(d))))
        return float((np.abs(signs @ d) >= observed).mean())
    rng = np.random.default_rng(seed)
    signs = rng.choice((1.0, -1.0), size=(n, len(d)))
    return float(((np.abs(signs @ d) >= observed).sum() + 1) / (n + 1))


def people_bootstrap_ci(diff_hits, counts, seed: int = 0, n: int = N_BOOTSTRAP) -> tuple[float, float]:
    """Percentile 95 % interval of the pooled paired difference Σ D_p / Σ N_p, drawing people with replacement
    (``diff_hits``: per person, coefficient minus picture correct answers; ``counts``: that person's test items)."""
    d, c = np.asarray(diff_hits, dtype=np.float64), np.asarray(counts, dtype=np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(len(d), np.full(len(d), 1.0 / len(d)), size=n)
    means = (draws @ d) / (draws @ c)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def t_interval(diffs) -> tuple[float, float]:
    """95 % t interval of the mean of per-split paired differences (NaN for fewer than two)."""
    d = np.asarray(diffs, dtype=np.float64)
    if len(d) < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return float(d.mean() - half), float(d.mean() + half)


def holm(p_values) -> list[float]:
    """Holm's step-down adjustment (NaN stays NaN and does not count as a test)."""
    p = np.asarray(p_values, dtype=np.float64)
    ok = np.flatnonzero(~np.isnan(p))
    out = np.full(len(p), np.nan)
    running = 0.0
    for rank, i in enumerate(ok[np.argsort(p[ok], kind="stable")]):
        running = max(running, min(1.0, (len(ok) - rank) * p[i]))
        out[i] = running
    return out.tolist()


def paired(coef: dict, pic: dict, seed: int = 0) -> dict:
    """The paired comparison of two ``accuracy_by_k`` entries scored on the same splits: ``unit`` (people or
    splits), ``n_pairs``, ``difference`` (pooled over people, or the mean per-split difference), ``ci_low`` /
    ``ci_high`` and ``p_value``; ``unit`` says ``unpaired`` when the two rows' test samples differ."""
    hc, hp = coef.get("person_hits"), pic.get("person_hits")
    if hc and hp and len(hc) == len(hp):
        people = sorted(set().union(*[set(s) for s in hc]) | set().union(*[set(s) for s in hp]))
        D, N, same = np.zeros(len(people)), np.zeros(len(people)), True
        index = {p: i for i, p in enumerate(people)}
        for sc, sp in zip(hc, hp):
            if set(sc) != set(sp) or any(sc[p][1] != sp[p][1] for p in sc):
                same = False
                break
            for p, (h, n) in sc.items():
                D[index[p]] += h - sp[p][0]
                N[index[p]] += n
        if same and N.sum() > 0:
            lo, hi = people_bootstrap_ci(D, N, seed=seed)
            return {"unit": "people", "n_pairs": len(people), "difference": float(D.sum() / N.sum()),
                    "ci_low": lo, "ci_high": hi, "p_value": sign_flip_p(D, seed=seed)}
    fc, fp = coef.get("fold_accuracies") or [], pic.get("fold_accuracies") or []
    if len(fc) != len(fp) or not len(fc) or list(coef.get("n_test") or []) != list(pic.get("n_test") or []):
        return {"unit": "unpaired", "n_pairs": 0, "difference": float("nan"), "ci_low": float("nan"),
                "ci_high": float("nan"), "p_value": float("nan")}
    d = np.asarray(fc, dtype=np.float64) - np.asarray(fp, dtype=np.float64)
    lo, hi = t_interval(d)
    return {"unit": "splits", "n_pairs": len(d), "difference": float(d.mean()), "ci_low": lo, "ci_high": hi,
            "p_value": sign_flip_p(d, seed=seed)}


# ------------------------------------------------------------------------------------------------- the table
def number(v) -> float | None:
    """A table cell as a float, or None when it is empty, NaN or not a number."""
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


_num = number


def _group_key(row) -> tuple:
    task = row["task"]
    order = TASK_ORDER.index(task) if task in TASK_ORDER else len(TASK_ORDER)
    return (order, task, row["protocol"] != "paper", row["protocol"], int(row["k"]))


def candidate(row) -> bool:
    """May the row represent its arm? Clean (Table 1's ``clean``) — except that on a protocol that is not
    leak-free (the paper's identity and expression splits: the test people are in training) the protocol's own
    leak, which both arms share, is allowed; the line then says ``protocol_leak_free`` False. Nothing that coded
    or selected the row may have seen a test picture: not transductive, not person-grouped, not tuned on test,
    no exposure."""
    own = bool(row.get("transductive")) or bool(row.get("person_grouped")) or bool(row.get("tuned_on_test")) \
        or bool(row.get("exposure"))
    return not own and (bool(row.get("clean")) or not bool(row.get("protocol_leak_free", row.get("leak_free"))))


def choose(candidates: list[tuple[dict, dict]]) -> tuple[dict, dict] | None:
    """The candidate with the best validation accuracy (ties: the first listed); None without one."""
    best = None
    for row, d in candidates:
        v = _num(row.get("val_accuracy"))
        if v is not None and (best is None or v > _num(best[0]["val_accuracy"])):
            best = (row, d)
    return best


def _groups(results: list[dict]) -> dict[tuple, dict[str, list]]:
    groups: dict[tuple, dict[str, list]] = {}
    for row, d, r in table1_records(results):
        if _num(row.get("accuracy_mean")) is None:
            continue
        row = {**row, "input_width": r.get("input_width")}
        g = groups.setdefault(_group_key(row), {a: [] for a in ARMS})
        g[arm(row["input"])].append((row, d, candidate(row)))
    return groups


def _line(key: tuple, g: dict, seed: int, coefficient_rows=None) -> dict:
    """One comparison: each arm's row chosen on validation among its candidates (the coefficient arm's restricted
    to ``coefficient_rows`` when given), then the paired test."""
    _, task, _, protocol, k = key
    line = {"task": task, "protocol": protocol, "k": k, "selected_on": "validation",
            "protocol_leak_free": all(bool(row.get("protocol_leak_free", True)) for a in ARMS for row, _, _ in g[a])}
    chosen = {}
    for a in ARMS:
        clean = [(row, d) for row, d, ok in g[a] if ok and _num(row.get("val_accuracy")) is not None
                 and (a == "pictures" or coefficient_rows is None or coefficient_rows(row))]
        pre = ARM_PREFIX[a]
        line[f"{pre}_candidates"] = len(clean)
        pick = choose(clean)
        if pick is None:
            continue
        chosen[a] = pick
        row = pick[0]
        line["dataset"] = line.get("dataset") or row.get("dataset")
        line[f"{pre}_val_ties"] = sum(_num(r.get("val_accuracy")) == _num(row["val_accuracy"]) for r, _ in clean)
        line.update({f"{pre}_{f}": row.get(f) for f in ROW_FIELDS})
        line[f"{pre}_val_accuracy"] = _num(row["val_accuracy"])
        line[f"{pre}_test_accuracy"] = _num(row["accuracy_mean"])
        if a == "coefficients":
            line["coef_width"] = row.get("input_width")
    if "pictures" in chosen:
        line["pic_pretrained"] = bool(chosen["pictures"][0].get("pretrained"))
    if len(chosen) < 2:
        line["verdict"] = "one arm"
    else:
        p = paired(chosen["coefficients"][1], chosen["pictures"][1], seed=seed)
        line.update(p)
        line["difference"] = line["coef_test_accuracy"] - line["pic_test_accuracy"] \
            if p["unit"] != "unpaired" else float("nan")
    return line


def _finish(lines: list[dict], columns: list[str], alpha: float) -> pd.DataFrame:
    out = pd.DataFrame(lines, columns=columns)
    out["p_holm"] = holm(out["p_value"].astype(float)) if len(out) else []
    out["n_tests"] = int(out["p_value"].notna().sum()) if len(out) else []
    out["verdict"] = [_decide(r, alpha) for _, r in out.iterrows()]
    return out


def verdict_table(results: list[dict], seed: int = 0, alpha: float = ALPHA) -> pd.DataFrame:
    """One line per (task, protocol, k) of a run's results: exactly :data:`VERDICT_COLUMNS` (module docstring)."""
    groups = _groups(results)
    return _finish([_line(key, groups[key], seed) for key in sorted(groups)], VERDICT_COLUMNS, alpha)


RECONSTRUCTION_COLUMNS = (["task", "protocol", "k", "reconstruction", "coef_width"]
                          + [c for c in VERDICT_COLUMNS if c not in ("task", "protocol", "k", "coef_backend")])


def reconstructions_table(results: list[dict], seed: int = 0, alpha: float = ALPHA) -> pd.DataFrame:
    """Several reconstructions side by side: per (task, protocol, k), one line per coefficient backend (built-in or
    from outside) — that reconstruction's clean row chosen on validation against the same picture row as the
    verdict, paired on the same splits — with its input width (``coef_width``: the α / β / α+β length). Holm over
    this table's lines. Empty when the run has one reconstruction."""
    groups = _groups(results)
    backends = sorted({row["backend"] for g in groups.values() for row, _, ok in g["coefficients"] if ok})
    if len(backends) < 2:
        return pd.DataFrame(columns=RECONSTRUCTION_COLUMNS)
    lines = []
    for key in sorted(groups):
        for b in backends:
            if not any(row["backend"] == b for row, _, _ in groups[key]["coefficients"]):
                continue
            line = _line(key, groups[key], seed, coefficient_rows=lambda row, b=b: row["backend"] == b)
            lines.append({**line, "reconstruction": b})
    return _finish(lines, RECONSTRUCTION_COLUMNS, alpha)


def _decide(r, alpha: float) -> str:
    """A line's verdict: a winner only when the Holm-adjusted p-value is below ``alpha`` and the interval
    excludes 0."""
    if r["verdict"] == "one arm":
        return "one arm"
    lo, hi, ph, diff = _num(r["ci_low"]), _num(r["ci_high"]), _num(r["p_holm"]), _num(r["difference"])
    wins = ph is not None and ph < alpha and lo is not None and hi is not None and (lo > 0 or hi < 0)
    return ("coefficients" if diff > 0 else "pictures") if wins and diff is not None else "not distinguishable"


def read_verdict(tables_dir, name: str = "verdict") -> pd.DataFrame | None:
    """``verdict.csv`` (or ``reconstructions.csv`` with ``name``) of a run's tables folder, or None when the run
    wrote none."""
    from pathlib import Path
    csv = Path(tables_dir) / f"{name}.csv"
    return pd.read_csv(csv) if csv.exists() else None


VERDICT_CAPTION = ("one line per task, protocol and k: each arm's clean row chosen on validation (candidates: clean "
                   "rows with a validation accuracy), its validation and test accuracy, the paired test difference "
                   "(coefficients − pictures) with its 95 % interval over the unit resampled, the paired sign-flip "
                   "p-value, Holm-adjusted over the run's lines, and the verdict.")


def verdict_display(verdict: pd.DataFrame) -> pd.DataFrame:
    """The verdict for reading: each arm's row in one cell, accuracies and the difference in percent."""
    def row_text(r, pre):
        if not isinstance(r.get(f"{pre}_model"), str):
            return "—"
        agg = r.get(f"{pre}_aggregator")
        agg = f", {agg}" if isinstance(agg, str) and agg else ""
        where = f" ({r[f'{pre}_backend']}{agg})" if pre == "coef" else " (pretrained)" if r.get("pic_pretrained") \
            is True else ""
        return f"{r[f'{pre}_model']} on {r[f'{pre}_input']}{where}"

    def pct(v):
        return "—" if v is None or v != v else f"{100 * v:.1f}"

    return pd.DataFrame([{
        "task": r["task"], "protocol": r["protocol"], "k": r["k"], "verdict": r["verdict"],
        "coefficient row (candidates)": f"{row_text(r, 'coef')} ({r['coef_candidates']})",
        "picture row (candidates)": f"{row_text(r, 'pic')} ({r['pic_candidates']})",
        "validation % coef / pic": f"{pct(r['coef_val_accuracy'])} / {pct(r['pic_val_accuracy'])}",
        "test % coef / pic": f"{pct(r['coef_test_accuracy'])} / {pct(r['pic_test_accuracy'])}",
        "difference (points) [95 %]": "—" if r["difference"] != r["difference"] else
        f"{100 * r['difference']:+.1f} [{pct(r['ci_low'])}, {pct(r['ci_high'])}]",
        "unit (pairs)": "—" if not isinstance(r["unit"], str) else f"{r['unit']} ({int(r['n_pairs'])})",
        "p / Holm": "—" if r["p_value"] != r["p_value"] else f"{r['p_value']:.3g} / {r['p_holm']:.3g}"}
        for _, r in verdict.iterrows()])


RECONSTRUCTIONS_CAPTION = ("one line per task, protocol, k and reconstruction (built-in or from outside): that "
                           "reconstruction's clean row chosen on validation against the same picture row as the "
                           "verdict, paired on the same splits; `coef_width`: the length of its input vector; "
                           "Holm over this table's lines.")


def reconstructions_display(rec: pd.DataFrame) -> pd.DataFrame:
    """:func:`reconstructions_table` for reading: the verdict's display with the reconstruction and its width."""
    d = verdict_display(rec.assign(coef_backend=rec["reconstruction"]))
    d.insert(3, "reconstruction", rec["reconstruction"].to_numpy())
    d.insert(4, "width", rec["coef_width"].to_numpy())
    return d
