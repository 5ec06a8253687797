"""Test fixtures shared by tests and benchmarks."""
from __future__ import annotations

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

