"""Threshold metrics with 95% CIs, and the Youden threshold.

Proportions (accuracy, sensitivity, specificity, PPV, NPV) get **Wilson score** intervals:
they stay inside [0, 1] and keep close to nominal coverage at the small counts of these
cohorts, where the Wald interval fails (0/n gives a zero-width interval). F1 is not a binomial
proportion, so its CI is a **stratified bootstrap** percentile interval (seeded; said in the
``method`` field of each metric).

Rule: a case is called positive when ``score >= threshold``. Choose the threshold on training or
validation data (:func:`youden_threshold`) and apply it unchanged to the test data — choosing it
on the test data would flatter sensitivity and specificity.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import InputError
from .roc import _z, check_binary

PROPORTIONS = ("accuracy", "sensitivity", "specificity", "ppv", "npv")
METRIC_NAMES = {"accuracy": "Accuracy", "sensitivity": "Sensitivity", "specificity": "Specificity",
                "ppv": "PPV", "npv": "NPV", "f1": "F1"}


def wilson_ci(k: int, n: int, conf_level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes out of n (NaN, NaN when n = 0)."""
    if n <= 0:
        return float("nan"), float("nan")
    if not 0 <= k <= n:
        raise InputError(f"successes {k} not within 0..{n}")
    z = _z(conf_level)
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - half)  # exact endpoints, not rounding residue
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def confusion_counts(y: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, int]:
    pred = score >= threshold
    pos = y == 1
    return {"tp": int((pred & pos).sum()), "fp": int((pred & ~pos).sum()),
            "tn": int((~pred & ~pos).sum()), "fn": int((~pred & pos).sum())}


def _f1(tp: int, fp: int, fn: int) -> float:
    d = 2 * tp + fp + fn
    return 2 * tp / d if d else float("nan")


def threshold_metrics(y: Any, score: Any, threshold: float, conf_level: float = 0.95,
                      n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Accuracy, sensitivity, specificity, PPV, NPV (Wilson CIs) and F1 (bootstrap CI).

    Returns ``{"threshold", "n", "tp", "fp", "tn", "fn", "<metric>": {"value", "ci_low",
    "ci_high", "k", "n", "method"}}``. A metric whose denominator is 0 (e.g. PPV with no
    positive calls) has value NaN and says so in ``note``.
    """
    y_i, (s,) = check_binary(y, score)
    if threshold is None or not math.isfinite(float(threshold)):
        raise InputError(f"threshold must be a finite number, got {threshold!r}")
    c = confusion_counts(y_i, s, float(threshold))
    tp, fp, tn, fn = c["tp"], c["fp"], c["tn"], c["fn"]
    parts = {"accuracy": (tp + tn, tp + tn + fp + fn), "sensitivity": (tp, tp + fn),
             "specificity": (tn, tn + fp), "ppv": (tp, tp + fp), "npv": (tn, tn + fn)}
    out: dict[str, Any] = {"threshold": float(threshold), "n": int(y_i.size), **c, "conf_level": conf_level}
    for name, (k, n) in parts.items():
        lo, hi = wilson_ci(k, n, conf_level)
        m = {"value": k / n if n else float("nan"), "ci_low": lo, "ci_high": hi, "k": k, "n": n,
             "method": "Wilson score"}
        if not n:
            m["note"] = "undefined: denominator is 0"
        out[name] = m
    out["f1"] = _f1_with_ci(y_i, s, float(threshold), conf_level, n_boot, seed)
    caveats = []
    if min(tp + fn, tn + fp) < 10:
        caveats.append(f"only {tp + fn} positive and {tn + fp} negative cases: wide intervals")
    if np.unique(s).size == 1:
        caveats.append("the score is constant: every case gets the same call")
    if caveats:
        out["caveats"] = caveats
    return out


def _f1_with_ci(y: np.ndarray, s: np.ndarray, thr: float, conf_level: float, n_boot: int,
                seed: int) -> dict[str, Any]:
    c = confusion_counts(y, s, thr)
    value = _f1(c["tp"], c["fp"], c["fn"])
    rng = np.random.default_rng(seed)
    pred = s >= thr
    pos_idx, neg_idx = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    pp, pn = pred[pos_idx], pred[neg_idx]
    boots = np.empty(n_boot)
    for b in range(n_boot):
        tp = int(pp[rng.integers(0, pp.size, pp.size)].sum())
        fp = int(pn[rng.integers(0, pn.size, pn.size)].sum())
        boots[b] = _f1(tp, fp, pp.size - tp)
    boots = boots[np.isfinite(boots)]
    alpha = (1 - conf_level) / 2
    lo, hi = (np.quantile(boots, [alpha, 1 - alpha]) if boots.size else (np.nan, np.nan))
    # k/n is 2·TP / (2·TP + FP + FN), so that k/n equals the F1 value shown beside it
    return {"value": value, "ci_low": float(lo), "ci_high": float(hi), "k": 2 * c["tp"],
            "n": 2 * c["tp"] + c["fp"] + c["fn"], "formula": "2·TP / (2·TP + FP + FN)",
            "method": f"stratified bootstrap ({n_boot} resamples, percentile)"}


def youden_threshold(y: Any, score: Any) -> float:
    """Threshold maximising Youden's J = sensitivity + specificity − 1 for "score ≥ threshold".

    Candidates are the observed scores; among equal J the **lower** threshold wins (favours
    sensitivity, the safer error for a tumor risk call). Compute this on training/validation
    data and pass the result unchanged to :func:`threshold_metrics` on test data.
    """
    y_i, (s,) = check_binary(y, score)
    thr = np.unique(s)
    pos, neg = np.sort(s[y_i == 1]), np.sort(s[y_i == 0])
    sens = (pos.size - np.searchsorted(pos, thr, side="left")) / pos.size
    spec = np.searchsorted(neg, thr, side="left") / neg.size
    j = sens + spec - 1.0
    best = np.flatnonzero(j >= j.max() - 1e-12)
    return float(thr[best[0]])


def metrics_rows(metrics: dict[str, Any], digits: int = 3) -> list[dict[str, Any]]:
    """Flatten :func:`threshold_metrics` output into table rows (metric, value, 95% CI, k/n, method)."""
    rows = []
    for key, label in METRIC_NAMES.items():
        m = metrics[key]
        rows.append({"metric": label, "value": round(m["value"], digits) if math.isfinite(m["value"]) else None,
                     "ci_low": round(m["ci_low"], digits) if math.isfinite(m["ci_low"]) else None,
                     "ci_high": round(m["ci_high"], digits) if math.isfinite(m["ci_high"]) else None,
                     "k/n": f"{m['k']}/{m['n']}", "method": m["method"]})
    return rows
