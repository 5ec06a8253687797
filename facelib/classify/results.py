"""Result files: one JSON per experiment (+ its predictions CSV), and reading coefficient tables."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from ..io import atomic_write_json, atomic_write_table


def read_coeffs(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        df = pd.read_csv(path)
        for col in ("alpha", "beta", "box", "pose", "landmarks"):
            if col in df.columns:
                df[col] = df[col].map(lambda v: json.loads(v) if isinstance(v, str) else v)
        return df
    raise ValueError(f"coefficient table must be .parquet or .csv, got {path}")



def result_name(result: dict) -> str:
    backend = str(result.get("backend") or "").replace("+", "_")
    agg = result.get("aggregator")
    return (f"{result['task']}__{result['protocol']}__{result['input'].replace('+', '_')}__{result['model']}"
            + (f"__{backend}" if backend else "") + (f"__{agg}" if agg and agg != "mean" else ""))



def save_result(result, out_dir: str | Path) -> Path:
    """``<out>/<task>__<protocol>__<input>__<model>.json`` (+ ``….predictions.csv``) of a
    :class:`~facelib.classify.experiment.TaskResult` (or its dict)."""
    out_dir = Path(out_dir)
    result = result.to_dict() if hasattr(result, "to_dict") else result
    name = result_name(result)
    preds = result.get("predictions") or []
    if preds:
        atomic_write_table(pd.DataFrame(preds), out_dir / f"{name}.predictions.csv")
    slim = {k: v for k, v in result.items() if k != "predictions"}
    slim["predictions_file"] = f"{name}.predictions.csv" if preds else None
    return atomic_write_json(slim, out_dir / f"{name}.json")

