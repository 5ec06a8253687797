"""The run's HTML index page: Tables 1–3 first (from the run's CSVs), the figures, links to every notebook."""
from __future__ import annotations

import html
import json
import os
from pathlib import Path

import nbformat
import pandas as pd
from nbconvert import HTMLExporter

from .tables import table1_display


def notebook_html(nb: Path, dest_dir: Path) -> Path:
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nbformat.read(str(nb), as_version=4))
    dest = dest_dir / (nb.stem + ".html")
    dest.write_text(body, encoding="utf-8")
    return dest



def write_index(run: Path, html_pages: list[Path], dest: Path) -> Path:
    """Tables 1–3 first (from the run's CSVs), then the figures, then links to every rendered notebook."""
    tables = run / "tables"
    prov = json.loads((tables / "provenance.json").read_text()) if (tables / "provenance.json").exists() else {}
    synthetic = bool(prov.get("synthetic"))
    title = ("SYNTHETIC DATA — " if synthetic else "") + "facelib: 3DMM coefficients vs images"
    parts = [f"<html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
             "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px}"
             "th{background:#f3f3f3}img{max-width:100%}.warn{background:#fee;padding:.5em}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    if synthetic:
        parts.append("<p class='warn'>These numbers come from the synthetic KDEF-like set, not real faces.</p>")
    if prov:
        data = "; ".join(f"{k}: {v.get('ok')} pictures of {v.get('subjects')} people" for k, v in
                         prov.get("data", {}).items())
        parts.append(f"<p>Run <b>{html.escape(run.name)}</b> — backend <b>{html.escape(str(prov.get('backend')))}"
                     f"</b>, device {html.escape(str(prov.get('device')))}, seed "
                     f"{html.escape(str(prov.get('parameters', {}).get('seed')))}; {html.escape(data)}. "
                     "Full provenance at the bottom.</p>")
    for name, caption in (("table1", "Table 1 — accuracy (mean ± std over folds)"),
                          ("table2", "Table 2 — training time per input"),
                          ("table3", "Table 3 — expression confusion matrix (%; rows true, columns predicted)")):
        csv = tables / f"{name}.csv"
        if csv.exists():
            frame = pd.read_csv(csv, index_col=0 if name == "table3" else None)
            if name == "table1":
                frame = table1_display(frame)
            digits = {"table1": 1, "table2": 5, "table3": 1}[name]
            parts.append(f"<h2>{caption}</h2>" + frame.to_html(float_format=lambda v: f"{v:.{digits}f}", border=0,
                                                                 index=name == "table3"))
            parts.append(f"<p><a href='{os.path.relpath(csv, dest.parent)}'>{name}.csv</a></p>")
    for png in sorted(tables.glob("*.png")):
        parts.append(f"<h3>{html.escape(png.stem)}</h3><img src='{os.path.relpath(png, dest.parent)}'>")
    parts.append("<h2>Notebooks</h2><ol>")
    parts += [f"<li><a href='{os.path.relpath(p, dest.parent)}'>{html.escape(p.stem)}</a></li>" for p in html_pages]
    parts.append("</ol>")
    if prov:
        parts.append("<h2>Provenance</h2><pre>" + html.escape(json.dumps(prov, indent=2, default=str)) + "</pre>")
    parts.append("</body></html>")
    dest.write_text("\n".join(parts), encoding="utf-8")
    return dest

