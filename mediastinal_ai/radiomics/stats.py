"""Held-out metrics with 95% CIs in the shape the radiomics report prints.

The statistics themselves are :mod:`mediastinal_ai.evaluation`'s (DeLong AUC CI validated
against R's pROC; Wilson score intervals for proportions); this module only adapts them to
the radiomics tables, so the radiomics numbers and every other report agree to the digit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..evaluation import roc_auc_ci, wilson_ci


def wilson(k: int, n: int) -> dict[str, Any]:
    if n == 0:
        return {"value": None, "ci_low": None, "ci_high": None, "k": 0, "n": 0}
    lo, hi = wilson_ci(int(k), int(n))
    return {"value": k / n, "ci_low": lo, "ci_high": hi, "k": int(k), "n": int(n)}


def auc_ci(y: Any, score: Any) -> dict[str, Any]:
    y = np.asarray(y).astype(int)
    s = np.asarray(score, float)
    if y.sum() == 0 or y.sum() == y.size:
        return {"value": None, "ci_low": None, "ci_high": None, "n": int(y.size), "method": "undefined (one class)"}
    r = roc_auc_ci(y, s)
    return {"value": float(r.auc), "ci_low": float(r.ci_low), "ci_high": float(r.ci_high), "se": float(r.se),
            "n": int(y.size), "method": "DeLong"}


def binary_metrics(y: Any, p: Any, threshold: float = 0.5) -> dict[str, Any]:
    """AUC, accuracy, sensitivity, specificity, PPV, NPV and F1 (positive = high risk), each with a 95% CI
    (F1: stratified bootstrap, as in :func:`mediastinal_ai.evaluation.threshold_metrics`)."""
    y = np.asarray(y).astype(int)
    pred = (np.asarray(p, float) >= threshold).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    f1: dict[str, Any] = {"value": None, "ci_low": None, "ci_high": None, "k": 2 * tp, "n": 2 * tp + fp + fn}
    if 0 < y.sum() < y.size:
        from ..evaluation import threshold_metrics

        m = threshold_metrics(y, np.asarray(p, float), threshold, n_boot=1000)["f1"]
        f1 = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in m.items()
              if k in ("value", "ci_low", "ci_high", "k", "n")}
    return {"auc": auc_ci(y, p), "f1": f1, "accuracy": wilson(tp + tn, y.size), "sensitivity": wilson(tp, tp + fn),
            "specificity": wilson(tn, tn + fp), "ppv": wilson(tp, tp + fp), "npv": wilson(tn, tn + fn),
            "threshold": threshold, "confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn}, "n": int(y.size),
            "ci_methods": "AUC: DeLong; proportions: Wilson score; F1: stratified bootstrap"}


def fmt(m: dict[str, Any]) -> str:
    if m.get("value") is None:
        return "n/a"
    return f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"
