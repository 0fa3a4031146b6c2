"""Held-out metrics with 95% CIs for the radiomics report.

AUC: DeLong et al. (1988) variance (structural components), CI = AUC ± 1.96·SE clipped to
[0, 1]; :mod:`mediastinal_ai.evaluation`'s ``roc_auc_ci`` is used instead when that module
provides it (the project's validated statistics). Proportions (accuracy, sensitivity,
specificity, PPV, NPV): Wilson score interval.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

Z95 = 1.959963984540054


def wilson(k: int, n: int) -> dict[str, Any]:
    if n == 0:
        return {"value": None, "ci_low": None, "ci_high": None, "k": 0, "n": 0}
    p = k / n
    den = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / den
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / den
    return {"value": p, "ci_low": max(0.0, centre - half), "ci_high": min(1.0, centre + half), "k": int(k), "n": int(n)}


def auc_ci(y: Any, score: Any) -> dict[str, Any]:
    y = np.asarray(y).astype(int)
    s = np.asarray(score, float)
    if y.sum() == 0 or y.sum() == y.size:
        return {"value": None, "ci_low": None, "ci_high": None, "n": int(y.size), "method": "undefined (one class)"}
    try:
        from ..evaluation import roc_auc_ci  # type: ignore[attr-defined]
    except ImportError:
        roc_auc_ci = None
    if roc_auc_ci is not None:
        r = roc_auc_ci(y, s)
        return {"value": float(r.auc), "ci_low": float(r.ci_low), "ci_high": float(r.ci_high), "n": int(y.size),
                "method": "DeLong (mediastinal_ai.evaluation)"}
    pos, neg = s[y == 1], s[y == 0]
    # psi(X, Y) = 1 if X > Y, 0.5 if tie: structural components per case
    cmp = (pos[:, None] > neg[None, :]).astype(float) + 0.5 * (pos[:, None] == neg[None, :])
    auc = float(cmp.mean())
    v10, v01 = cmp.mean(axis=1), cmp.mean(axis=0)
    var = (v10.var(ddof=1) / pos.size if pos.size > 1 else 0.0) + (v01.var(ddof=1) / neg.size if neg.size > 1 else 0.0)
    se = math.sqrt(max(var, 0.0))
    return {"value": auc, "ci_low": max(0.0, auc - Z95 * se), "ci_high": min(1.0, auc + Z95 * se), "se": se,
            "n": int(y.size), "method": "DeLong"}


def binary_metrics(y: Any, p: Any, threshold: float = 0.5) -> dict[str, Any]:
    """AUC, accuracy, sensitivity, specificity, PPV, NPV (positive = high risk), each with a 95% CI."""
    y = np.asarray(y).astype(int)
    pred = (np.asarray(p, float) >= threshold).astype(int)
    tp = int(((pred == 1) & (y == 1)).sum())
    tn = int(((pred == 0) & (y == 0)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    return {"auc": auc_ci(y, p), "accuracy": wilson(tp + tn, y.size), "sensitivity": wilson(tp, tp + fn),
            "specificity": wilson(tn, tn + fp), "ppv": wilson(tp, tp + fp), "npv": wilson(tn, tn + fn),
            "threshold": threshold, "confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn}, "n": int(y.size),
            "ci_methods": "AUC: DeLong; proportions: Wilson score"}


def fmt(m: dict[str, Any]) -> str:
    if m.get("value") is None:
        return "n/a"
    return f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"
