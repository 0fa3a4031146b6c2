"""Calibration (reliability curve, Brier score) and decision-curve net benefit.

Why: an AUC says whether a model ranks cases well, not whether "p = 0.8" means 80%. A risk
probability shown to a clinician must be calibrated, and a threshold is only worth using if it
gives more net benefit than treating everyone or no one (Vickers & Elkin 2006).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from .roc import check_binary
from .thresholds import wilson_ci


def _check_proba(y: Any, proba: Any) -> tuple[np.ndarray, np.ndarray]:
    y_i, (p,) = check_binary(y, proba, what="probabilities")
    if (p < 0).any() or (p > 1).any():
        raise InputError(f"probabilities must lie in [0, 1]; found range {p.min():.3g}..{p.max():.3g}")
    return y_i, p


def brier_score(y: Any, proba: Any) -> float:
    """Mean squared difference between predicted probability and outcome (0 = perfect)."""
    y_i, p = _check_proba(y, proba)
    return float(np.mean((p - y_i) ** 2))


def calibration_curve(y: Any, proba: Any, n_bins: int = 10, strategy: str = "uniform") -> list[dict[str, Any]]:
    """Reliability curve: per bin the mean predicted probability and the observed fraction of
    positives with its Wilson 95% CI. ``strategy``: "uniform" (equal-width bins on [0, 1]) or
    "quantile" (equal-count bins, better for small cohorts). Empty bins are omitted."""
    y_i, p = _check_proba(y, proba)
    if n_bins < 1:
        raise InputError(f"n_bins must be ≥ 1, got {n_bins}")
    if strategy == "uniform":
        edges = np.linspace(0, 1, n_bins + 1)
    elif strategy == "quantile":
        edges = np.unique(np.quantile(p, np.linspace(0, 1, n_bins + 1)))
        edges[0], edges[-1] = 0.0, 1.0
    else:
        raise InputError(f"unknown binning strategy {strategy!r}: use 'uniform' or 'quantile'")
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
    rows = []
    for b in range(len(edges) - 1):
        sel = idx == b
        n = int(sel.sum())
        if not n:
            continue
        k = int(y_i[sel].sum())
        lo, hi = wilson_ci(k, n)
        rows.append({"bin_low": float(edges[b]), "bin_high": float(edges[b + 1]), "n": n,
                     "mean_predicted": float(p[sel].mean()), "observed": k / n, "ci_low": lo, "ci_high": hi})
    return rows


def net_benefit(y: Any, proba: Any, thresholds: Any = None) -> list[dict[str, Any]]:
    """Decision curve: net benefit of the model, treat-all and treat-none at each threshold
    probability pt: NB = TP/n − FP/n · pt/(1 − pt)."""
    y_i, p = _check_proba(y, proba)
    pts = np.arange(0.01, 1.0, 0.01) if thresholds is None else np.asarray(thresholds, float)
    if (pts <= 0).any() or (pts >= 1).any():
        raise InputError("decision-curve thresholds must lie strictly between 0 and 1")
    n = y_i.size
    prev = y_i.mean()
    rows = []
    for pt in pts:
        pred = p >= pt
        tp = int((pred & (y_i == 1)).sum())
        fp = int((pred & (y_i == 0)).sum())
        w = pt / (1 - pt)
        rows.append({"threshold": float(pt), "net_benefit_model": tp / n - fp / n * w,
                     "net_benefit_all": float(prev - (1 - prev) * w), "net_benefit_none": 0.0})
    return rows
