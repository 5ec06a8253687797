"""Test fixtures shared by tests and benchmarks."""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from facelib.classify import protocols as P


def synthetic_coeff_table(n_per_gender: int = 5, sessions=("A",), alpha_dim: int = 40, beta_dim: int = 10,
                          fei_per_gender: int = 0, separation: float = 1.0, seed: int = 0,
                          backend: str = "synthetic") -> pd.DataFrame:
    """A coefficient table shaped like the real one (KDEF-like rows, optional FEI-like rows), with
    class-dependent Gaussians: α = subject centre (+ a gender offset) + noise, β = expression centre + noise.
    ``separation`` scales the centres against unit noise (0 → no signal). For tests and benchmarks only."""
    rng = np.random.default_rng(seed)
    rows = []
    g_axis = rng.normal(size=alpha_dim)
    expr_c = {e: separation * rng.normal(size=beta_dim) for e in P.EXPRESSIONS}

    def subject_centre(g):
        return separation * (rng.normal(size=alpha_dim) + (1.5 if g == "M" else -1.5) * g_axis)

    for g in ("F", "M"):
        for i in range(1, n_per_gender + 1):
            s = f"{g}{i:02d}"
            c = subject_centre(g)
            for sess in sessions:
                for e in P.EXPRESSIONS:
                    for a in P.ANGLES:
                        iid = f"{sess}{s}{e}{a}"
                        rows.append(dict(image_id=iid, path=f"/synthetic/{iid}.JPG", subject=s, gender=g,
                                         session=sess, expression=e, angle=a, dataset="kdef",
                                         alpha=(c + rng.normal(size=alpha_dim)).astype(np.float32).tolist(),
                                         beta=(expr_c[e] + rng.normal(size=beta_dim)).astype(np.float32).tolist()))
        for i in range(1, fei_per_gender + 1):
            sid = i if g == "M" else 100 + i
            s = f"fei{sid:03d}"
            c = subject_centre(g)
            for kind, e in (("a", "neutral"), ("b", "smiling")):
                rows.append(dict(image_id=f"{sid}{kind}", path=f"/synthetic/{sid}{kind}.jpg", subject=s, gender=g,
                                 session="", expression=e, angle="frontal", dataset="fei",
                                 alpha=(c + rng.normal(size=alpha_dim)).astype(np.float32).tolist(),
                                 beta=rng.normal(size=beta_dim).astype(np.float32).tolist()))
    df = pd.DataFrame(rows)
    df["status"] = "ok"
    df["backend"] = backend
    return df



def tddfa_rows(kdef_root, assets_dir, stems) -> dict | None:
    """3DDFA coefficient rows of KDEF dev pictures by stem (e.g. ``AF01NES``), shaped like the study's coefficient
    table, with the decoded pictures, boxes and raw outputs (``imgs``, ``paths``, ``boxes``, ``out``, ``rows``);
    None when a picture is absent (the caller skips)."""
    import cv2

    from facelib.face3d.reconstruct import TDDFABackend

    paths = [kdef_root / s[:4] / f"{s}.JPG" for s in stems]
    if not all(p.is_file() for p in paths):
        return None
    imgs = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths]
    backend = TDDFABackend(device="cpu", assets_dir=assets_dir)
    boxes = [b for b, _ in backend.detect(imgs)]
    out = backend.regress(imgs, boxes)
    rows = [{"image_id": s, "path": str(p), "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
             "subject": s[1:4], "angle": s[6:], "status": "ok", "backend": "tddfa", "usable": True,
             "box": np.asarray(boxes[i]).tolist(), "box_source": "detector",
             "landmarks": out["landmarks"][i].tolist(), "alpha": out["alpha"][i].tolist(),
             "beta": out["beta"][i].tolist(), "pose": out["pose"][i].tolist()}
            for i, (s, p) in enumerate(zip(stems, paths))]
    return {"imgs": imgs, "paths": paths, "boxes": boxes, "out": out, "rows": rows}


def known_ict_faces(model, yaw_deg=(0.0, 0.0)) -> tuple[dict, np.ndarray]:
    """Two ICT faces with known coefficients — random identities, one smiling with the jaw open, one with brows up
    and eyes wide — posed frontally or turned by ``yaw_deg`` (degrees) so that a 20 cm wide region fills a 120 crop:
    (``{"alpha", "beta", "pose"}``, rois (2, 4))."""
    rng = np.random.default_rng(0)
    alpha = (rng.normal(size=(2, 100)) * 0.5).astype(np.float32)
    beta = np.zeros((2, 53), np.float32)
    names = model.expression_names
    beta[0, [names.index("jawOpen"), names.index("mouthSmile_L"), names.index("mouthSmile_R")]] = [0.6, 0.7, 0.7]
    beta[1, [names.index("browInnerUp_L"), names.index("browInnerUp_R"), names.index("eyeWide_L")]] = 0.8
    s = 120 / 20.0
    rows = []
    for yaw in yaw_deg:
        c, si = np.cos(np.radians(yaw)), np.sin(np.radians(yaw))
        rows.append([s * c, 0, s * si, 60, 0, s, 0, 60, -s * si, 0, s * c, 0])
    rois = np.array([[0, 0, 160, 160]] * 2, np.float32)
    return {"alpha": alpha, "beta": beta, "pose": np.array(rows, np.float32)}, rois


def made_up_result(task: str, protocol: str, input: str, model: str, hits: list[dict], val: float | None,
                   backend: str = "tddfa", k: int = 1, **extra) -> dict:
    """A result dict (as ``results/*.json`` keep it) whose test figures come from ``hits`` — per split, person →
    ``[correct, items]`` — and whose validation accuracy is ``val``: for the report and verdict tests."""
    folds = [sum(h for h, _ in s.values()) / sum(n for _, n in s.values()) for s in hits]
    by_k = {str(k): {"fold_accuracies": folds, "mean": float(np.mean(folds)),
                     "std": float(np.std(folds, ddof=1)) if len(folds) > 1 else None, "ci": None,
                     "n_test": [sum(n for _, n in s.values()) for s in hits], "trained_k": 1 if k == 1 else k,
                     "val_accuracies": [val] * len(hits), "val_mean": val, "person_hits": hits,
                     "best_epochs": [1] * len(hits), "epochs_run": [1] * len(hits), "C": [1.0] * len(hits)}}
    r = {"task": task, "protocol": protocol, "input": input, "model": model, "backend": backend, "k": k,
         "kind": "coefficients" if input in ("alpha", "beta", "alpha+beta") else "features",
         "accuracy_by_k": by_k, "accuracy_mean": by_k[str(k)]["mean"], "n_folds": len(hits),
         "split_kind": "repeats" if len(hits) > 1 else "single split", "leak_free": protocol != "paper",
         "dataset": "fei" if task == "gender" else "kdef", "epochs_max": None, "recipe": {}}
    r.update(extra)
    return r


def person_hits(rates: dict, n: int = 10, splits: int = 3) -> list[dict]:
    """Per split, person → [round(rate × n), n]: a made-up row's test answers per person."""
    return [{p: [int(round(r * n)), n] for p, r in rates.items()} for _ in range(splits)]
