"""Every figure of the study: data and coefficient views, and the report's figures (the Table 3 heatmap, accuracy
per view angle, training time). ``tables.py`` computes the tables; the figures here draw them.

A report figure stands alone: its title names the run, the data, the protocol, the model and the backend
(:func:`context_line`), its axes carry units, its legend is in words, and chance lines / error bars are drawn
where they apply.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import cv2
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter

from ..io import read_image, save_figure
from ..vocab import ANGLE_NAMES, ANGLES, EXPRESSION_NAMES, EXPRESSIONS
from .verdict import reconstructions_table
from .tables import (PAPER_DEVICE, PAPER_TABLE2, PICTURE_INPUT_NAMES, pick_table3_result, splits_text,
                     table2, table3)

PROTOCOL_WORDS = {"paper": "paper's protocol", "subject_independent": "unseen people",
                  "cross_angle": "unseen view angle", "cross_session": "other session",
                  "subject_disjoint": "unseen people", "two_picture": "paper's split, both FEI pictures",
                  "leave_expression_out": "unseen expression", "random": "random split"}
INPUT_WORDS = {"alpha": "identity coefficients α", "beta": "expression coefficients β", "image": "pictures",
               "hog": "HOG features", "pixels": "pixels (Fisherfaces)", "dlib": "dlib face embedding",
               "alpha+beta": "α and β coefficients",
               "alpha_beta": "α and β coefficients"}
MODEL_WORDS = {"resnet34": "ResNet-34", "logreg": "logistic regression", "svm": "RBF SVM", "mlp": "MLP",
               "linsvm": "linear SVM", "fisherfaces": "PCA + LDA + linear SVM"}
FIGURE_FILES = ("reconstructions.png", "table3_heatmap.png", "per_angle_accuracy.png", "training_time.png")


def _save(fig, out):
    if out:
        save_figure(fig, out, dpi=110, bbox_inches="tight")
    return fig


def image_grid(manifest: pd.DataFrame, rows: str | None = "expression", cols: str | None = "angle",
               subject: str | None = None, ncols: int = 6, thumb: int = 110, out=None):
    """Thumbnails: one person's pictures as an expression × angle grid, or simply the first images in a grid."""
    df = manifest if subject is None else manifest[manifest["subject"] == subject]
    if rows and cols:
        row_keys = [k for k in ("AF", "AN", "DI", "HA", "NE", "SA", "SU") if k in set(df[rows])] or \
            sorted(df[rows].dropna().unique())
        col_keys = [k for k in ANGLES if k in set(df[cols])] or \
            sorted(df[cols].dropna().unique())
        cells = [[df[(df[rows] == r) & (df[cols] == c)] for c in col_keys] for r in row_keys]
    else:
        items = [df.iloc[[i]] for i in range(len(df))]
        cells = [items[i:i + ncols] for i in range(0, len(items), ncols)]
        row_keys, col_keys = [""] * len(cells), [""] * ncols
    fig, axes = plt.subplots(len(cells), len(col_keys), figsize=(1.3 * len(col_keys), 1.6 * len(cells)),
                             squeeze=False)
    for r, row in enumerate(cells):
        for c in range(len(col_keys)):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(row) and len(row[c]):
                img = read_image(row[c]["path"].iloc[0])
                if img is not None:
                    h, w = img.shape[:2]
                    img = cv2.resize(img, (thumb, int(thumb * h / w)), interpolation=cv2.INTER_AREA)
                    ax.imshow(img[:, :, ::-1])
                if not rows:
                    ax.set_title(row[c]["image_id"].iloc[0], fontsize=7)
            else:
                ax.axis("off")
            if r == 0 and col_keys[c]:
                ax.set_title(col_keys[c], fontsize=9)
        if row_keys[r]:
            axes[r, 0].set_ylabel(row_keys[r], fontsize=9)
    if subject:
        fig.suptitle(f"subject {subject}", fontsize=10)
    fig.tight_layout()
    return _save(fig, out)


def embedding_plot(vectors: np.ndarray, labels: pd.Series, title: str, out=None, ax=None):
    """2-D PCA projection of coefficient vectors coloured by a label (standardised first, as the classifiers are)."""
    import seaborn as sns  # seaborn (~1 s to import): out of report.index's start-up
    from sklearn.decomposition import PCA  # scikit-learn: out of report.index's start-up
    from sklearn.preprocessing import StandardScaler  # (as above)

    xy = PCA(n_components=2, random_state=0).fit_transform(StandardScaler().fit_transform(vectors))
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 4.5))
    else:
        fig = ax.figure
    labels = pd.Series(labels).astype(str).to_numpy()
    order = sorted(set(labels))
    sns.scatterplot(x=xy[:, 0], y=xy[:, 1], hue=labels, hue_order=order, s=14, ax=ax, legend=len(order) <= 20,
                    palette="tab20" if len(order) > 10 else "tab10")
    ax.set(title=title, xlabel="PC 1", ylabel="PC 2")
    if len(order) <= 20:
        ax.legend(fontsize=6, ncol=2, loc="best", markerscale=0.8)
    return _save(fig, out)


# --------------------------------------------------------------------------------------------- report figures
def words(result: dict) -> str:
    """'expression · unseen people · expression coefficients β · logistic regression · tddfa' for a result dict
    (the backend names raw and fitted coefficient variants apart; a non-mean aggregator is added)."""
    bits = [str(result.get("task")), PROTOCOL_WORDS.get(result.get("protocol"), str(result.get("protocol"))),
            INPUT_WORDS.get(result.get("input"), str(result.get("input"))),
            MODEL_WORDS.get(result.get("model"), str(result.get("model")))]
    if result.get("backend") and result.get("input") in ("alpha", "beta", "alpha+beta"):
        bits.append(str(result["backend"]))
    if result.get("aggregator") not in (None, "mean"):
        bits.append(f"{result['aggregator']} aggregation")
    return " · ".join(bits)


def context_line(provenance: dict) -> str:
    """Run, data and backend in one line: what every report figure's title starts from."""
    params = provenance.get("parameters") or {}
    data = ", ".join(f"{name.upper()} {v.get('ok')} pictures / {v.get('subjects')} people"
                     for name, v in (provenance.get("data") or {}).items())
    bits = [f"run {params.get('run_name') or provenance.get('run') or '?'}",
            ("SYNTHETIC faces: " if provenance.get("synthetic") else "") + (data or "data unknown"),
            f"backend {provenance.get('backend', '?')}", f"device {provenance.get('device', '?')}"]
    return " · ".join(bits)


def _finish(fig, out: Path | None, **savefig_kwargs) -> Path | None:
    fig.tight_layout()
    if out is None:
        return None
    return save_figure(fig, out, dpi=120, close=True, **savefig_kwargs)


def confusion_title(source: dict, provenance: dict, width: int = 88) -> str:
    """The heatmap's title, wrapped to the figure: what it shows (protocol, input, model, backend — a picture
    input has none — and the repeats / folds the counts are summed over), then the run's context line."""
    how = words(source).split(" · ", 1)[1]
    if source.get("input") in PICTURE_INPUT_NAMES:
        how += " · no 3DMM"
    text = f"Table 3 — expression confusion: {how} · counts summed over {splits_text(source)}"
    return "\n".join(_wrap_at_dots(text, width) + _wrap_at_dots(context_line(provenance), width))


def _wrap_at_dots(text: str, width: int) -> list[str]:
    """Lines of at most ``width`` characters, broken between ' · ' parts where possible (inside a part only
    when it is longer than a line)."""
    lines: list[str] = []
    for part in text.split(" · "):
        if lines and len(lines[-1]) + 3 + len(part) <= width:
            lines[-1] += " · " + part
        else:
            lines += textwrap.wrap(part, width) or [""]
    return lines


def plot_confusion(percent: pd.DataFrame, source: dict, provenance: dict, out: Path | None = None):
    """Table 3 as a heatmap: rows the true expression, columns the predicted one, each row in % of its pictures."""
    import seaborn as sns  # seaborn (~1 s to import): out of report.index's start-up

    names = [f"{EXPRESSION_NAMES.get(e, e)} ({e})" for e in percent.index]
    fig, ax = plt.subplots(figsize=(7.5, 6.2))
    sns.heatmap(percent.astype(float), annot=True, fmt=".1f", cmap="Blues", vmin=0, vmax=100, ax=ax,
                xticklabels=[EXPRESSION_NAMES.get(e, e) for e in percent.columns], yticklabels=names,
                cbar_kws={"label": "% of the pictures of the true expression"})
    ax.set_xlabel("predicted expression")
    ax.set_ylabel("true expression")
    ax.set_title(confusion_title(source, provenance), fontsize=8.5)
    ax.tick_params(axis="x", rotation=30)
    return _finish(fig, out) if out else fig


def per_angle_folds(result: dict, results_dir: str | Path | None = None) -> pd.DataFrame:
    """Accuracy per (angle, fold) from a result's predictions (in the dict, or its ``predictions_file`` in
    ``results_dir``); empty when it kept none."""
    pred = pd.DataFrame(result.get("predictions") or [])
    file = Path(results_dir) / result["predictions_file"] if results_dir and result.get("predictions_file") else None
    if pred.empty and file is not None and file.exists():
        pred = pd.read_csv(file)
    if pred.empty or not {"angle", "fold", "true", "pred"} <= set(pred.columns):
        return pd.DataFrame(columns=["angle", "fold", "accuracy"])
    pred["correct"] = pred["true"] == pred["pred"]
    return pred.groupby(["angle", "fold"])["correct"].mean().rename("accuracy").reset_index()


def plot_per_angle(results: list[dict], provenance: dict, out: Path | None = None, task: str = "expression",
                   results_dir: str | Path | None = None):
    """Accuracy per KDEF view angle: one panel per protocol, one line per input × model (× coefficient backend),
    mean ± std over repeats / folds, and the chance line."""
    chosen = [r for r in results if r.get("task") == task and r.get("per_angle_accuracy")]
    if not chosen:
        return None
    protocols = list(dict.fromkeys(r.get("protocol") for r in sorted(chosen, key=words)))
    fig, axes = plt.subplots(1, len(protocols), figsize=(6.2 * len(protocols), 5.2), sharey=True, squeeze=False)
    angles = [a for a in ANGLES if any(a in r["per_angle_accuracy"] for r in chosen)]
    x = np.arange(len(angles))
    n_classes = len(chosen[0].get("classes") or EXPRESSIONS)
    for ax, protocol in zip(axes[0], protocols):
        mine = sorted((r for r in chosen if r.get("protocol") == protocol), key=words)
        for i, r in enumerate(mine):
            folds = per_angle_folds(r, results_dir)
            mean = np.array([100 * r["per_angle_accuracy"].get(a, np.nan) for a in angles])
            std = np.array([100 * folds.loc[folds["angle"] == a, "accuracy"].std(ddof=0) if len(folds) else np.nan
                            for a in angles])
            offset = (i - (len(mine) - 1) / 2) * 0.04
            ax.errorbar(x + offset, mean, yerr=None if np.isnan(std).all() else std, marker="o", capsize=3,
                        label=words(r).split(" · ", 2)[2])
        ax.axhline(100 / n_classes, color="grey", linestyle="--", linewidth=1,
                   label=f"chance (1 in {n_classes}: {100 / n_classes:.1f} %)")
        ax.set_xticks(x, [f"{ANGLE_NAMES[a]}\n({a})" for a in angles], fontsize=8)
        ax.set_xlabel("KDEF camera angle of the test picture")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
        ax.set_title(PROTOCOL_WORDS.get(protocol, str(protocol)), fontsize=9)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1,
                  title="input · model (· coefficient backend)", title_fontsize=7)
    axes[0][0].set_ylabel(f"{task} accuracy (% correct)\nmean ± std over repeats / folds")
    fig.suptitle(f"{task.capitalize()} accuracy per camera angle\n{context_line(provenance)}", fontsize=9)
    fig.subplots_adjust(top=0.86, wspace=0.08)  # legends hang below the panels; the saved file grows to hold them
    return save_figure(fig, out, dpi=120, close=True, bbox_inches="tight") if out else fig


def training_time_pairs(t2: pd.DataFrame) -> pd.DataFrame:
    """ResNet-34 seconds per training input (per epoch), ours beside the paper's, one row per task × input kind.
    The paper times ResNet-34 only, and logistic regression / SVM have no epochs, so only ResNet-34 rows pair."""
    rows = []
    for r in t2[t2["model"] == "resnet34"].itertuples():
        kind = "images" if r.input == "image" else "coefficients"
        paper = PAPER_TABLE2.get(r.task, {}).get(kind, {}).get("seconds_per_input")
        rows.append({"task": r.task, "input": r.input, "kind": kind, "device": r.device,
                     "ours_ms": 1000 * float(r.seconds_per_input), "paper_ms": None if paper is None else 1000 * paper})
    return pd.DataFrame(rows, columns=["task", "input", "kind", "device", "ours_ms", "paper_ms"])


def plot_training_time(t2: pd.DataFrame, provenance: dict, out: Path | None = None):
    """Paired dot plot: per task and input, our ResNet-34's training time per input beside the paper's."""
    d = training_time_pairs(t2)
    if d.empty:
        return None
    d = d.sort_values(["task", "kind"]).reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(8.5, 1.2 + 0.45 * len(d)))
    y = np.arange(len(d))
    for i, r in d.iterrows():
        if r["paper_ms"] is not None:
            ax.plot([r["ours_ms"], r["paper_ms"]], [i, i], color="lightgrey", zorder=1)
    ax.scatter(d["ours_ms"], y, color="tab:blue", zorder=2, label=f"ours ({', '.join(sorted(set(d['device'])))})")
    paper = d.dropna(subset=["paper_ms"])
    ax.scatter(paper["paper_ms"], paper.index, color="tab:orange", marker="D", zorder=2,
               label=f"paper, {PAPER_DEVICE}")
    ax.set_yticks(y, [f"{r.task}: {INPUT_WORDS.get(r.input, r.input)}" for r in d.itertuples()], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("ResNet-34 training time per input picture or vector, per epoch (milliseconds, LOG scale)")
    ax.grid(axis="x", which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"Training time per input: ours beside the paper's\n{context_line(provenance)}", fontsize=8.5)
    return _finish(fig, out) if out else fig


def plot_reconstructions(rec: pd.DataFrame, provenance: dict, out=None):
    """Several reconstructions at a glance: per task / protocol / k (rows), each reconstruction's paired difference
    to the same picture row (points, coloured by reconstruction) with its 95 % interval; left of 0 the pictures
    are better. None when ``rec`` has no tested line."""
    d = rec.dropna(subset=["difference"]) if len(rec) else rec
    if not len(d):
        return None
    labels = list(dict.fromkeys(f"{t} · {p} · k={k}" for t, p, k in zip(d["task"], d["protocol"], d["k"])))
    names = list(dict.fromkeys(d["reconstruction"]))
    fig, ax = plt.subplots(figsize=(8.5, 0.55 * len(labels) + 1.6))
    step = 0.7 / max(len(names), 1)
    for j, name in enumerate(names):
        sub = d[d["reconstruction"] == name]
        y = np.array([labels.index(f"{t} · {p} · k={k}") for t, p, k in zip(sub["task"], sub["protocol"], sub["k"])])
        y = y - 0.35 + step * (j + 0.5)
        x = 100 * sub["difference"].to_numpy(float)
        lo, hi = 100 * sub["ci_low"].to_numpy(float), 100 * sub["ci_high"].to_numpy(float)
        err = np.vstack([np.where(np.isnan(lo), 0, x - lo), np.where(np.isnan(hi), 0, hi - x)])
        ax.errorbar(x, y, xerr=err, fmt="o", ms=5, capsize=3, label=name)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("test accuracy, coefficients − pictures (points; 95 % interval, paired)")
    ax.legend(title="reconstruction (its row chosen on validation)", fontsize=7, title_fontsize=7, loc="best")
    ax.set_title(textwrap.fill(f"{context_line(provenance)} — each reconstruction against the same picture row",
                               100), fontsize=8)
    return _save(fig, out)


def write_report_figures(results: list[dict], out_dir: str | Path, provenance: dict,
                         results_dir: str | Path | None = None) -> dict:
    """The report's figures in ``out_dir`` (those that apply); returns {file name: path}. ``results_dir``:
    where the results' prediction files are (for error bars over folds)."""
    out_dir = Path(out_dir)
    paths = {}
    source = pick_table3_result(results)
    if source is not None:
        paths["table3_heatmap.png"] = plot_confusion(table3(source)[0], source, provenance,
                                                     out_dir / "table3_heatmap.png")
    for name, path in (("per_angle_accuracy.png", plot_per_angle(results, provenance, out_dir / "per_angle_accuracy.png",
                                                                          results_dir=results_dir)),
                       ("training_time.png", plot_training_time(table2(results), provenance,
                                                                out_dir / "training_time.png")),
                       ("reconstructions.png", plot_reconstructions(reconstructions_table(results), provenance,
                                                                    out_dir / "reconstructions.png"))):
        if path is not None:
            paths[name] = path
    return paths


def one_class_results(results: list[dict]) -> list[dict]:
    """Results whose model predicted a single class for every test picture (a constant predictor)."""
    flagged = []
    for r in results:
        conf = np.asarray(r.get("confusion") or [], dtype=float)
        if conf.ndim == 2 and conf.sum() > 0 and (conf.sum(axis=0) > 0).sum() == 1:
            flagged.append(r)
    return flagged
