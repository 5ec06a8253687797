"""Markdown for the report's tables: one cell format, the table, the SYNTHETIC title and the provenance comment."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

def format_value(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, (tuple, list)):
        return "–".join(format_value(x, digits) for x in v)
    if isinstance(v, (float, np.floating)):
        return f"{v:.{digits}g}" if abs(v) < 1e-3 and v != 0 else f"{v:.{digits}f}".rstrip("0").rstrip(".")
    return str(v)


def markdown_table(df: pd.DataFrame, index: bool = False, digits: int = 4) -> str:
    d = df.reset_index() if index else df
    header = "| " + " | ".join(map(str, d.columns)) + " |"
    sep = "|" + "|".join("---" for _ in d.columns) + "|"
    body = ["| " + " | ".join(format_value(v, digits) for v in row) + " |" for row in d.itertuples(index=False)]
    return "\n".join([header, sep, *body])


def synthetic_title(text: str, provenance: dict) -> str:
    return f"SYNTHETIC — {text} (synthetic data, not a result)" if provenance.get("synthetic") else text


def provenance_header(provenance: dict) -> str:
    return "<!-- provenance: " + json.dumps(provenance, sort_keys=True, default=str).replace("--", "- -") + " -->\n"

