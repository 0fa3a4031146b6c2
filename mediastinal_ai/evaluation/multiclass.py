"""Multi-class statistics the fusion study reports: the confusion matrix with per-class
sensitivity/specificity/PPV/NPV (Wilson CIs), and a paired test between the multi-class
(one-vs-rest macro) AUCs of two models on the same cases.

Test between macro AUCs: the macro AUC has no closed-form variance, so the difference is
tested with a **paired case bootstrap** (the same resampled cases for both models, as pROC's
``roc.test(method="bootstrap")`` does for binary AUCs): z = ΔAUC / SD(bootstrap ΔAUC),
two-sided normal p-value, and a percentile CI of ΔAUC. Each class also gets the paired DeLong
test of its one-vs-rest AUCs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from .roc import delong_test, midrank
from .thresholds import wilson_ci


def _labels(y: Any, classes: list[str]) -> np.ndarray:
    lab = np.asarray(y).astype(str)
    unknown = sorted(set(lab) - set(classes))
    if unknown:
        raise InputError(f"labels not among the classes: {unknown[:5]}")
    return lab


def _proba(p: Any, n: int, k: int, what: str) -> np.ndarray:
    a = np.asarray(p, dtype=float)
    if a.shape != (n, k):
        raise InputError(f"{what}: probabilities must be ({n} cases, {k} classes), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise InputError(f"{what}: probabilities contain missing or infinite values")
    return a


def confusion_matrix(y_true: Any, y_pred: Any, classes: list[str]) -> dict[str, Any]:
    """Rows = truth, columns = prediction, in ``classes`` order; per class one-vs-rest
    sensitivity (recall), specificity, PPV and NPV with Wilson 95% CIs."""
    classes = [str(c) for c in classes]
    t = _labels(y_true, classes)
    p = _labels(y_pred, classes)
    if t.size != p.size:
        raise InputError(f"length mismatch: {t.size} labels but {p.size} predictions")
    idx = {c: i for i, c in enumerate(classes)}
    m = np.zeros((len(classes), len(classes)), dtype=int)
    np.add.at(m, (np.array([idx[c] for c in t], int), np.array([idx[c] for c in p], int)), 1)
    n = int(m.sum())
    per = []
    for i, c in enumerate(classes):
        tp = int(m[i, i])
        fn = int(m[i].sum() - tp)
        fp = int(m[:, i].sum() - tp)
        tn = n - tp - fn - fp
        row: dict[str, Any] = {"class": c, "n_true": tp + fn, "n_pred": tp + fp, "tp": tp, "fp": fp, "tn": tn, "fn": fn}
        for name, k, d in (("sensitivity", tp, tp + fn), ("specificity", tn, tn + fp), ("ppv", tp, tp + fp),
                           ("npv", tn, tn + fn)):
            lo, hi = wilson_ci(k, d)
            row[name] = k / d if d else float("nan")
            row[f"{name}_ci_low"], row[f"{name}_ci_high"] = lo, hi
            row[f"{name}_k/n"] = f"{k}/{d}"
        per.append(row)
    return {"classes": classes, "matrix": m.tolist(), "n": n, "accuracy": float(np.trace(m) / n) if n else float("nan"),
            "per_class": per, "rows": "truth", "columns": "prediction",
            "ci_method": "Wilson score (one-vs-rest counts)"}


def _macro_auc(lab: np.ndarray, p: np.ndarray, classes: list[str], cols: list[int]) -> float:
    vals = []
    for j in cols:
        yy = lab == classes[j]
        k = int(yy.sum())
        if 0 < k < yy.size:
            r = midrank(np.concatenate([p[yy, j], p[~yy, j]]))
            vals.append((r[:k].sum() - k * (k + 1) / 2.0) / (k * (yy.size - k)))
    return float(np.mean(vals)) if vals else float("nan")


def compare_multiclass_auc(y: Any, proba_a: Any, proba_b: Any, classes: list[str], n_boot: int = 2000,
                           seed: int = 0, conf_level: float = 0.95) -> dict[str, Any]:
    """Paired comparison of two models' one-vs-rest macro AUCs on the same cases.

    Classes without a positive or a negative case are left out (listed in ``skipped``); in a
    bootstrap resample a class that loses its positives or negatives is left out of both
    models' means for that resample only.
    """
    from statistics import NormalDist

    classes = [str(c) for c in classes]
    lab = _labels(y, classes)
    a = _proba(proba_a, lab.size, len(classes), "model A")
    b = _proba(proba_b, lab.size, len(classes), "model B")
    if n_boot < 100:
        raise InputError(f"n_boot must be at least 100, got {n_boot}")
    cols = [j for j, c in enumerate(classes) if 0 < int((lab == c).sum()) < lab.size]
    skipped = [c for j, c in enumerate(classes) if j not in cols]
    if not cols:
        raise InputError("no class has both positive and negative cases: multi-class AUC undefined")
    auc_a, auc_b = _macro_auc(lab, a, classes, cols), _macro_auc(lab, b, classes, cols)
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_boot)
    for i in range(n_boot):
        idx = rng.integers(0, lab.size, lab.size)
        diffs[i] = _macro_auc(lab[idx], a[idx], classes, cols) - _macro_auc(lab[idx], b[idx], classes, cols)
    diffs = diffs[np.isfinite(diffs)]
    sd = float(np.std(diffs, ddof=1))
    diff = auc_a - auc_b
    if sd > 0:
        z = diff / sd
        p = 2.0 * (1.0 - NormalDist().cdf(abs(z)))
    else:
        z, p = (0.0, 1.0) if abs(diff) < 1e-15 else (float("inf") if diff > 0 else float("-inf"), 0.0)
    alpha = (1 - conf_level) / 2
    lo, hi = np.quantile(diffs, [alpha, 1 - alpha])
    per_class = []
    for j in cols:
        yy = (lab == classes[j]).astype(int)
        t = delong_test(yy, a[:, j], b[:, j])
        per_class.append({"class": classes[j], "n_pos": int(yy.sum()), **t.as_dict()})
    out = {"macro_auc_a": auc_a, "macro_auc_b": auc_b, "auc_diff": diff, "diff_ci_low": float(lo),
           "diff_ci_high": float(hi), "se_diff": sd, "z": float(z), "p": float(p), "n": int(lab.size),
           "classes_used": [classes[j] for j in cols], "skipped": skipped, "per_class": per_class,
           "method": (f"paired case bootstrap of the one-vs-rest macro AUC difference ({n_boot} resamples, "
                      f"seed {seed}): z = ΔAUC/SD, two-sided normal p; percentile CI; per class paired DeLong")}
    small = [r["class"] for r in per_class if r["n_pos"] < 5]
    if small:
        out["caveat"] = f"{len(small)} class(es) with < 5 positive cases ({', '.join(small[:5])}): their AUCs are noisy"
    return out
