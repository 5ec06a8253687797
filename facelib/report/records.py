"""Table 1's rows from a run's results (:func:`table1_records`): what :func:`facelib.report.tables.table1` shows
and what :mod:`facelib.report.verdict` pairs — one reading of the result files for both."""
from __future__ import annotations

import numpy as np

from .table1_display import PICTURE_BACKEND, PICTURE_INPUT_NAMES


def _mean(v):
    v = [x for x in (v if isinstance(v, (list, tuple)) else [v]) if x is not None]
    return float(np.mean(v)) if v else None


def _split_accuracies(r: dict, d: dict) -> str | None:
    """``FL+FR 77.0 % (139); HL+HR 90.0 % (140); S 81.4 % (70)`` for pooled folds, else None."""
    if r.get("split_kind") != "pooled folds":
        return None
    labels = r.get("fold_labels") or r.get("fold_names") or []
    return "; ".join(f"{lab} {100 * a:.1f} % ({n})" for lab, a, n in
                     zip(labels, d.get("fold_accuracies") or [], d.get("n_test") or []))


def table1_records(results: list[dict], synthetic: bool = False):
    """``(row, by_k entry, result)`` per result and set size k, in :func:`table1`'s order: what Table 1 shows and
    what the verdict (:mod:`facelib.report.verdict`) pairs. A picture row carries no 3DMM backend
    (:data:`PICTURE_BACKEND`); a single-picture model (trained_k 1) of a set protocol is the same model under every
    aggregator, so its k = 1 row comes once, with no aggregator."""
    seen = set()
    for r in results:
        by_k = r.get("accuracy_by_k") or {str(r.get("k", 1)): {
            "mean": r.get("accuracy_mean"), "std": r.get("accuracy_std"), "ci": r.get("accuracy_ci"),
            "n_test": r.get("n_test")}}
        recipe = r.get("recipe") or {}
        cap = r.get("epochs_max")
        picture = r["input"] in PICTURE_INPUT_NAMES
        for k, d in sorted(by_k.items(), key=lambda kv: int(kv[0])):
            k = int(k)
            ci = d.get("ci") or [None, None]
            sets = k > 1
            trained_k = d.get("trained_k")
            if trained_k is None:  # results older than the k = 1 twin: the set-trained model scored off-design
                trained_k = int(r.get("k") or 1) if r.get("kind", "coefficients") == "coefficients" else 1
            aggregator = r.get("aggregator") if (int(trained_k) > 1 or sets) else None
            key = (r["task"], r["protocol"], r["input"], r["model"], r.get("backend"), aggregator, k, int(trained_k))
            if key in seen:
                continue
            seen.add(key)
            best = d.get("best_epochs", r.get("best_epochs"))
            set_trained = int(trained_k) > 1
            ran = d.get("ran_to_cap")
            flags = dict(transductive=r.get("transductive") or "", person_grouped=r.get("person_grouped") or "",
                         tuned_on_test=bool(r.get("tuned_on_test")), exposure=r.get("exposure") or "")
            leak_free = bool(r.get("leak_free")) and not flags["transductive"] and not flags["person_grouped"]
            yield {
                "task": r["task"], "protocol": r["protocol"], "input": r["input"], "model": r["model"],
                "backend": PICTURE_BACKEND if picture else r.get("backend"), "aggregator": aggregator, "k": k,
                "trained_k": int(trained_k), "leak_free": leak_free,
                "protocol_leak_free": bool(r.get("protocol_leak_free", r.get("leak_free"))),
                "clean": leak_free and not flags["tuned_on_test"] and not flags["exposure"],
                "tuned_on_test": flags["tuned_on_test"], "person_grouped": flags["person_grouped"],
                "exposure": flags["exposure"],
                "accuracy_mean": d.get("mean"), "accuracy_std": d.get("std"), "ci_low": ci[0], "ci_high": ci[1],
                "ci_unit": d.get("ci_unit") or (("pictures" if ci[0] is not None else None)),
                "val_accuracy": d.get("val_mean"),
                "n_splits": r.get("n_folds"), "split_kind": r.get("split_kind", "folds"),
                "split_accuracies": _split_accuracies(r, d),
                "image_size": r.get("image_size"), "epochs_max": cap,
                "patience": recipe.get("patience"),
                "epochs_run": _mean(d.get("epochs_run", r.get("epochs_run"))), "best_epoch": _mean(best),
                "at_cap": bool(cap) and any(b is not None and int(b) >= int(cap) for b in (best or [])),
                "learning_epoch": _mean(d.get("learning_epochs")),
                "ran_to_cap": int(sum(bool(x) for x in ran)) if (cap and ran is not None) else None,
                "pretrained": bool(r.get("pretrained")),
                "n_fit_pictures": _mean(r.get("n_fit_pictures")), "n_val_pictures": _mean(r.get("n_val_pictures")),
                "n_fit_sets": _mean(r.get("n_fit_sets")) if set_trained else None,
                "n_val_sets": _mean(r.get("n_val_sets")) if set_trained else None,
                "max_sets": (r.get("protocol_info") or {}).get("max_sets"),
                "n_test_pictures": _mean(r.get("n_test_pictures")) if not sets else None,
                "n_test_sets": _mean(d.get("n_test")) if sets else None,
                "transductive": flags["transductive"], "synthetic": bool(synthetic),
                "dataset": r.get("dataset")}, d, r
