"""The report's HTML pages: one page per run (its Tables 1–3, figures, notebooks, provenance) and the overview
``reports/index.html`` that lists every run with its status and shows the latest finished run's tables on top.

A run page never mixes runs: it reads only its own folder. Notebooks render without their ``parameters`` cell (the
injected values stay, with a note of the defaults), without test markers and without progress-bar or TqdmWarning
noise on stderr; the executed ``.ipynb`` files keep every output.
"""
from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

import nbformat
import pandas as pd
from nbconvert import HTMLExporter
from nbconvert.preprocessors import TagRemovePreprocessor

from ..io import atomic_write_text
from ..run import profile_header, read_provenance, read_status
from . import findings
from .figures import FIGURE_FILES, context_line, one_class_results
from .table1_display import row_key
from .verdict import (RECONSTRUCTIONS_CAPTION, VERDICT_CAPTION, read_verdict, reconstructions_display,
                      verdict_display)
from .tables import (PROTOCOL_TABLE, TABLE1_GLOSSARY, TABLE2_LEGEND, TABLE3_LEGEND, load_results,
                     pick_table3_result, table1_explained, table1_footnotes, table2_explained, table3_explained,
                     table3_source)

_PROGRESS = re.compile(r"\r|\d+%\|")  # tqdm bars (carriage returns, "45%|")
STYLE = ("body{font-family:sans-serif;max-width:1300px;margin:2em auto;padding:0 1em;color:#222}"
         "table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px}"
         "th{background:#f3f3f3;text-align:left}img{max-width:100%}"
         ".wide{overflow-x:auto}table.results td{white-space:nowrap}.warn{background:#fee;padding:.5em}"
         ".banner{background:#fff6d6;border-left:4px solid #d9a400;padding:.6em .8em}"
         "table.glossary{font-size:13px}table.glossary th{text-align:left;white-space:nowrap;vertical-align:top}"
         "ul.findings li,ul.notes li{margin:.3em 0}"
         ".finished{color:#161}.failed{color:#a11}.running{color:#a60}")


# ---------------------------------------------------------------------------------------------- notebook pages
def quiet_stderr(output) -> bool:
    """Progress bars and the TqdmWarning: noise in a rendered page (the executed notebook keeps them)."""
    if output.get("output_type") != "stream" or output.get("name") != "stderr":
        return False
    text = "".join(output.get("text", ""))
    return not text.strip() or bool(_PROGRESS.search(text)) or "TqdmWarning" in text or "IProgress not found" in text


def for_reading(nb) -> nbformat.NotebookNode:
    """A copy of an executed notebook as a reader should see it: one parameter cell (the injected values, with a
    note of the defaults), no ``NBVAL_*`` comment lines, no progress-bar stderr."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    defaults = next((c.source for c in nb.cells if "parameters" in c.metadata.get("tags", [])), None)
    has_injected = any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if cell.cell_type == "code":
            cell.source = "\n".join(l for l in cell.source.splitlines() if not l.strip().startswith("# NBVAL_"))
            cell.outputs = [o for o in cell.get("outputs", []) if not quiet_stderr(o)]
        if "injected-parameters" in tags and defaults:
            values = [l.split("#")[0].strip() for l in defaults.splitlines()
                      if "=" in l.split("#")[0] and not l.lstrip().startswith("#")]
            cell.source = ("# This run's parameters (injected by the runner). Defaults of the notebook: "
                           + ", ".join(values) + "\n" + cell.source)
    if has_injected:  # the defaults cell is noted above; showing both confuses
        for cell in nb.cells:
            if "parameters" in cell.metadata.get("tags", []):
                cell.metadata.setdefault("tags", []).append("hide-in-report")
    return nb


def notebook_html(nb: Path, dest_dir: Path) -> Path:
    exporter = HTMLExporter(template_name="lab")
    exporter.register_preprocessor(TagRemovePreprocessor(remove_cell_tags={"hide-in-report", "ci-banner"},
                                                         enabled=True), enabled=True)
    body, _ = exporter.from_notebook_node(for_reading(nbformat.read(str(nb), as_version=4)))
    return atomic_write_text(body, Path(dest_dir) / (nb.stem + ".html"))


# -------------------------------------------------------------------------------------------------- run status
def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, TypeError, ValueError):
        return False
    return True


def run_state(folder: Path) -> str:
    """``finished``, ``failed at notebook 04_classification``, ``running (notebook …)`` or ``interrupted …``."""
    st = read_status(folder)
    status, nb = st.get("status"), st.get("notebook")
    if status == "finished":
        return "finished"
    if status == "failed":
        return f"failed at notebook {nb}"
    if status == "running":
        return f"running (notebook {nb})" if _alive(st.get("pid")) else f"interrupted at notebook {nb}"
    return "unknown (no run.json)"


def runs(reports_dir: Path) -> list[dict]:
    """Every run folder under ``reports_dir/runs``, newest first, with what the overview shows of it."""
    out = []
    for folder in sorted((Path(reports_dir) / "runs").glob("*/")):
        st, prov = read_status(folder), read_provenance(folder)
        if not st and not prov:
            continue
        data = "; ".join(f"{k.upper()}: {v.get('ok')} pictures of {v.get('subjects')} people"
                         for k, v in prov.get("data", {}).items())
        if not data:
            data = "synthetic faces" if st.get("synthetic") else "not read yet"
        sets = st.get("overrides") or prov.get("overrides") or []
        out.append({"name": folder.name, "folder": folder, "started": st.get("started", ""),
                    "state": run_state(folder), "data": ("SYNTHETIC — " if prov.get("synthetic") else "") + data,
                    "profile": (st.get("profile") or prov.get("profile") or "?") +
                    (f" + --set {' '.join(sets)}" if sets else ""),
                    "device": st.get("device") or prov.get("device") or "?",
                    "page": folder / "index.html"})
    return sorted(out, key=lambda r: r["started"], reverse=True)


def latest_run_folder(reports_dir: Path, fallback: Path) -> str:
    """The newest finished run's folder (its executed notebooks), relative to the project when it can be; the
    ``fallback`` (the committed notebooks) when no run has finished."""
    done = [r["folder"] for r in runs(reports_dir) if r["state"] == "finished"]
    folder = Path(done[0] if done else fallback).resolve()
    try:
        return str(folder.relative_to(Path(reports_dir).resolve().parent))
    except ValueError:
        return str(folder)


# ------------------------------------------------------------------------------------------------ page pieces
def _head(title: str) -> list[str]:
    return [f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}</style>"
            f"</head><body><h1>{html.escape(title)}</h1>"]


def table1_with_flags(t1: pd.DataFrame, results: list[dict]) -> pd.DataFrame:
    """Table 1 for reading (``tables.table1_explained``: chance, the paper's figures, picture baselines named) plus
    a ``note`` flagging models that predict one class."""
    d = table1_explained(t1, results).copy()
    flagged = {row_key(r, aggregator=False) for r in one_class_results(results)}
    d["note"] = ["⚠ predicts one class for every picture" if row_key(row, aggregator=False) in flagged
                 else "" for _, row in t1.iterrows()]
    return d.astype(object).where(d.notna(), "—")  # a value that does not apply reads as a dash, not NaN


def _code(text: str) -> str:
    """Escape, then `x` → <code>x</code> (the glossary and footnotes are written in Markdown's backticks)."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def glossary_html(columns) -> str:
    """The glossary of the columns shown (``tables.TABLE1_GLOSSARY``), as a two-column table."""
    rows = "".join(f"<tr><th>{html.escape(c)}</th><td>{_code(TABLE1_GLOSSARY[c])}</td></tr>"
                   for c in columns if c in TABLE1_GLOSSARY)
    return f"<details open><summary>What each column means</summary><table class='glossary'>{rows}</table></details>"


def table1_notes_html(t1: pd.DataFrame) -> str:
    """Leakage per protocol and transductive backends (``tables.table1_footnotes``), then the protocols present."""
    notes = "".join(f"<li>{_code(line[2:])}</li>" for line in table1_footnotes(t1).splitlines()
                    if line.startswith("* "))
    present = set(zip(t1["task"], t1["protocol"]))
    protocols = PROTOCOL_TABLE[[(t, p) in present for t, p in zip(PROTOCOL_TABLE["task"], PROTOCOL_TABLE["protocol"])]]
    table = (f"<h3>Protocols</h3>{protocols.to_html(index=False, border=0, classes='glossary')}"
             if len(protocols) else "")
    return f"<ul class='notes'>{notes}</ul>{table}"


def tables_html(folder: Path, dest: Path) -> list[str]:
    """The banner and findings of one run folder, then Tables 1–3, each with a link to its CSV, Table 1 with its
    glossary, leakage notes and protocols, Table 3 with the result it shows."""
    tables, parts = folder / "tables", []
    results = load_results(folder / "results") if (folder / "results").is_dir() else []
    source = pick_table3_result(results)
    t3_caption = "Table 3 — expression confusion matrix (%; rows true, columns predicted)"
    if source:
        t3_caption += f": {table3_source(source)}"
    for name, caption in (("table1", "Table 1 — accuracy (mean ± std over repeats or folds; one split and pooled folds: pooled, with a 95 % interval from resampling people)"),
                          ("table2", "Table 2 — training time per input"),
                          ("table3", t3_caption)):
        csv = tables / f"{name}.csv"
        if not csv.exists():
            continue
        frame = pd.read_csv(csv, index_col=0 if name == "table3" else None)
        if name == "table1":
            t1 = frame
            banner = findings.paper_arms_banner(t1)
            if banner:
                parts.append(f"<p class='banner'><b>What this run can show.</b> {html.escape(banner)}</p>")
            verdict = read_verdict(tables)
            parts.append("<h2>Verdict</h2>")
            if verdict is not None and len(verdict):
                shown = verdict_display(verdict).to_html(index=False, border=0, na_rep="—", classes="results")
                parts.append(f"<div class='wide'>{shown}</div><p><a href='"
                             f"{os.path.relpath(tables / 'verdict.csv', dest.parent)}'>verdict.csv</a> — "
                             f"{html.escape(VERDICT_CAPTION)}</p>")
            parts.append(findings.html_block(verdict))
            rec = read_verdict(tables, "reconstructions")
            if rec is not None and len(rec):
                shown = reconstructions_display(rec).to_html(index=False, border=0, na_rep="—", classes="results")
                fig = folder / "figures" / "reconstructions.png"
                parts.append("<h2>Reconstructions side by side</h2>"
                             + (f"<img src='{os.path.relpath(fig, dest.parent)}' alt='reconstructions'>"
                                if fig.exists() else "")
                             + f"<div class='wide'>{shown}</div><p><a href='"
                             f"{os.path.relpath(tables / 'reconstructions.csv', dest.parent)}'>reconstructions.csv</a>"
                             f" — {html.escape(RECONSTRUCTIONS_CAPTION)}</p>")
            frame = table1_with_flags(t1, results)
        if name == "table2":
            frame = table2_explained(frame)
        if name == "table3":
            counts = tables / "table3_counts.csv"
            counts = pd.read_csv(counts, index_col=0).drop(columns="synthetic", errors="ignore") if counts.exists() \
                else frame.drop(columns="synthetic", errors="ignore") * 0
            frame = table3_explained(frame.drop(columns="synthetic", errors="ignore"), counts)
        digits = {"table1": 1, "table2": 5, "table3": 1}[name]
        shown = frame.to_html(float_format=lambda v: f"{v:.0f}" if float(v).is_integer() and name == "table2"
                              else f"{v:.{digits}f}", border=0, index=name == "table3", na_rep="—", classes="results")
        parts.append(f"<h2>{html.escape(caption)}</h2><div class='wide'>{shown}</div>")
        parts.append(f"<p><a href='{os.path.relpath(csv, dest.parent)}'>{name}.csv</a></p>")
        if name == "table1":
            parts.append(glossary_html(frame.columns) + table1_notes_html(t1))
        else:
            parts.append(f"<p class='legend'>{_code({'table2': TABLE2_LEGEND, 'table3': TABLE3_LEGEND}[name])}</p>")
    return parts


def write_run_page(folder: Path, html_pages: list[Path], dest: Path | None = None) -> Path:
    """One run's page: its status and data, Tables 1–3, figures, notebooks and provenance — nothing of other runs."""
    folder = Path(folder)
    dest = Path(dest or folder / "index.html")
    prov = read_provenance(folder)
    title = ("SYNTHETIC DATA — " if prov.get("synthetic") else "") + f"facelib run {folder.name}"
    parts = _head(title) + [f"<p>Status: <b>{html.escape(run_state(folder))}</b>. "
                            "<a href='../../index.html'>All runs</a></p>"]
    if prov.get("synthetic"):
        parts.append("<p class='warn'>These numbers come from the synthetic KDEF-like set, not real faces.</p>")
    if prov:
        sets = prov.get("overrides") or []
        changed = f", changed by --set {' '.join(sets)}" if sets else ""
        parts.append(f"<p>{html.escape(context_line(prov))}; profile {html.escape(str(prov.get('profile')))}"
                     f"{html.escape(changed)}. Full provenance at the bottom.</p>")
        header = profile_header(prov.get("profile"))
        if header:
            parts.append(f"<p class='profile'><b>About this profile:</b> {html.escape(header)}</p>")
    parts += tables_html(folder, dest)
    report_figures = [folder / "figures" / f for f in FIGURE_FILES if (folder / "figures" / f).exists()]
    others = sorted(p for p in (folder / "figures").glob("*.png") if p not in report_figures)
    if report_figures or others:
        parts.append("<h2>Figures</h2>")
    for png in report_figures + others:
        parts.append(f"<img src='{os.path.relpath(png, dest.parent)}' alt='{html.escape(png.stem)}'>")
    parts.append("<h2>Notebooks</h2><ol>")
    parts += [f"<li><a href='{os.path.relpath(p, dest.parent)}'>{html.escape(p.stem)}</a></li>" for p in html_pages]
    parts.append("</ol>")
    if prov:
        parts.append("<h2>Provenance</h2><pre>" + html.escape(json.dumps(prov, indent=2, default=str)) + "</pre>")
    parts.append("</body></html>")
    return atomic_write_text("\n".join(parts), dest)


KEY_FIGURES = ("per_angle_accuracy.png", "table3_heatmap.png", "training_time.png")


def _key_figure(folder: Path, reports_dir: Path) -> str:
    """A run's key figure as a thumbnail linking to it (the first of :data:`KEY_FIGURES` the run drew), or —."""
    png = next((folder / "figures" / f for f in KEY_FIGURES if (folder / "figures" / f).exists()), None)
    if png is None:
        return "—"
    rel = html.escape(os.path.relpath(png, reports_dir))
    return f"<a href='{rel}'><img src='{rel}' alt='{html.escape(png.stem)}' style='width:180px'></a>"


def _notebook_links(folder: Path, reports_dir: Path) -> str:
    """Links to a run's rendered notebooks (``html/*.html``), numbered, or —."""
    pages = sorted((folder / "html").glob("*.html"))
    return " ".join(f"<a href='{html.escape(os.path.relpath(p, reports_dir))}'>{html.escape(p.stem[:2])}</a>"
                    for p in pages) or "—"


def write_overview(reports_dir: Path) -> Path:
    """``reports/index.html``: every run (name, date, data, profile, device, status, link), then the latest
    finished run's Tables 1–3."""
    reports_dir = Path(reports_dir)
    dest = reports_dir / "index.html"
    listed = runs(reports_dir)
    parts = _head("facelib: 3DMM coefficients vs images — runs")
    parts.append("<table><tr><th>run</th><th>started (UTC)</th><th>data</th><th>profile</th><th>device</th>"
                 "<th>status</th><th>key figure</th><th>notebooks</th></tr>")
    for r in listed:
        cls = r["state"].split()[0]
        link = f"<a href='{os.path.relpath(r['page'], reports_dir)}'>{html.escape(r['name'])}</a>" \
            if r["page"].exists() else html.escape(r["name"])
        parts.append(f"<tr><td>{link}</td><td>{html.escape(r['started'])}</td><td>{html.escape(r['data'])}</td>"
                     f"<td>{html.escape(r['profile'])}</td><td>{html.escape(r['device'])}</td>"
                     f"<td class='{cls}'>{html.escape(r['state'])}</td><td>{_key_figure(r['folder'], reports_dir)}</td>"
                     f"<td>{_notebook_links(r['folder'], reports_dir)}</td></tr>")
    parts.append("</table>")
    latest = next((r for r in listed if r["state"] == "finished"), None)
    if latest:
        prov = read_provenance(latest["folder"])
        parts.append(f"<h2>Latest finished run: {html.escape(latest['name'])}</h2>")
        if prov.get("synthetic"):
            parts.append("<p class='warn'>SYNTHETIC DATA — these numbers describe rendered faces, not KDEF/FEI.</p>")
        parts.append(f"<p>{html.escape(context_line(prov))}. Figures, notebooks and provenance on "
                     f"<a href='{os.path.relpath(latest['page'], reports_dir)}'>its page</a>.</p>")
        parts += tables_html(latest["folder"], dest)
    else:
        parts.append("<p>No run has finished yet.</p>")
    parts.append("</body></html>")
    return atomic_write_text("\n".join(parts), dest)
