"""Statistics of the segmentation study on per-case / per-lesion tables.

* :func:`mean_sd_ci` — mean ± SD (**sample** SD, ddof = 1, used on screen and in JSON alike)
  with a t-based 95% CI of the mean (the study reports Dice/IoU/precision/recall as mean ± SD
  with 95% CI); a bootstrap CI is available for skewed metrics;
* :func:`summary_table` / :func:`subgroup_table` — those figures for several metric columns,
  overall and by subgroup: tumor size (> 8 cm, 5–8 cm, < 5 cm, :func:`size_group`), scanner
  vendor (DICOM (0008,0070) Manufacturer, :func:`vendor_of`), histology;
* :func:`match_lesions` — optimal one-to-one matching of predicted and true lesions (Hungarian
  algorithm, ``scipy.optimize.linear_sum_assignment``): the matching with the **most** pairs
  whose IoU **exceeds** t (strictly, as published), and among those the largest total IoU;
* :func:`froc` — lesion sensitivity and false positives per scan at each t (0.05…0.95);
* :func:`failure_analysis` — top vs bottom 10% of cases by Dice, compared feature by feature
  (shape and first-order radiomics) with the Mann–Whitney U test.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import InputError
from .thresholds import wilson_ci

SIZE_GROUPS = ("< 5 cm", "5–8 cm", "> 8 cm")
FROC_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))


def mean_sd_ci(values: Any, conf_level: float = 0.95, method: str = "t", n_boot: int = 2000,
               seed: int = 0) -> dict[str, Any]:
    """Mean, sample SD (ddof = 1), median and the CI of the mean (t interval, or percentile
    bootstrap with ``method="bootstrap"``). NaNs are dropped and counted."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    n_nan = int(np.isnan(v).sum())
    v = v[~np.isnan(v)]
    n = int(v.size)
    out: dict[str, Any] = {"n": n, "n_missing": n_nan, "sd_kind": "sample (ddof=1)"}
    if n == 0:
        return {**out, "mean": float("nan"), "sd": float("nan"), "median": float("nan"),
                "ci_low": float("nan"), "ci_high": float("nan"), "method": "no values"}
    mean = float(v.mean())
    sd = float(v.std(ddof=1)) if n > 1 else float("nan")
    out.update({"mean": mean, "sd": sd, "median": float(np.median(v))})
    if n < 2:
        out.update({"ci_low": float("nan"), "ci_high": float("nan"), "method": "one value: no CI",
                    "caveat": "n = 1: no spread, no interval"})
        return out
    if method == "t":
        half = float(stats.t.ppf(0.5 + conf_level / 2, n - 1)) * sd / math.sqrt(n)
        lo, hi = mean - half, mean + half
        m = f"t interval of the mean ({n - 1} df)"
    elif method == "bootstrap":
        rng = np.random.default_rng(seed)
        boots = v[rng.integers(0, n, (n_boot, n))].mean(1)
        lo, hi = (float(x) for x in np.quantile(boots, [(1 - conf_level) / 2, (1 + conf_level) / 2]))
        m = f"percentile bootstrap of the mean ({n_boot} resamples)"
    else:
        raise InputError(f"CI method must be 't' or 'bootstrap', got {method!r}")
    out.update({"ci_low": float(lo), "ci_high": float(hi), "method": m})
    if n < 10:
        out["caveat"] = f"only {n} cases: the interval is wide and its coverage approximate"
    elif sd == 0:
        out["caveat"] = "all values equal: a zero-width interval is not certainty"
    return out


def summary_table(df: Any, metric_cols: list[str], conf_level: float = 0.95) -> list[dict[str, Any]]:
    """One row per metric column: n, mean, SD, median, 95% CI of the mean."""
    missing = [c for c in metric_cols if c not in df.columns]
    if missing:
        raise InputError(f"metric column(s) {missing} not in the table; columns are {list(df.columns)}")
    return [{"metric": c, **mean_sd_ci(df[c].to_numpy(float), conf_level)} for c in metric_cols]


def size_group(diameter_mm: float) -> str:
    """The study's size groups by the largest tumor diameter: < 5 cm, 5–8 cm, > 8 cm."""
    d = float(diameter_mm)
    if not math.isfinite(d):
        return "unknown"
    return "< 5 cm" if d < 50 else ("> 8 cm" if d > 80 else "5–8 cm")


def subgroup_table(df: Any, metric_cols: list[str], by: str, conf_level: float = 0.95) -> list[dict[str, Any]]:
    """Rows (subgroup, metric, n, mean, SD, CI) of each value of column ``by``."""
    if by not in df.columns:
        raise InputError(f"subgroup column {by!r} not in the table; columns are {list(df.columns)}")
    rows = []
    groups = df[by].fillna("unknown").astype(str)
    order = [g for g in SIZE_GROUPS if g in set(groups)] + sorted(set(groups) - set(SIZE_GROUPS))
    for g in order:
        sub = df[groups == g]
        for r in summary_table(sub, metric_cols, conf_level):
            rows.append({"subgroup_by": by, "subgroup": g, **r})
    return rows


def vendor_of(dicom_file: str) -> str:
    """Scanner vendor from a DICOM file's Manufacturer (0008,0070), header only; "unknown" if absent."""
    import pydicom

    try:
        ds = pydicom.dcmread(dicom_file, stop_before_pixels=True, specific_tags=["Manufacturer"])
    except (OSError, pydicom.errors.InvalidDicomError) as e:
        raise InputError(f"cannot read the DICOM header ({e})", dicom_file) from e
    v = str(getattr(ds, "Manufacturer", "") or "").strip()
    return v or "unknown"


def match_lesions(iou: Any, t: float) -> list[tuple[int, int, float]]:
    """Optimal one-to-one matching of true (rows) and predicted (columns) lesions.

    A pair may match only when its IoU **exceeds** ``t``. The matching maximises first the
    number of matched pairs, then their total IoU. Returns ``(true index, predicted index, IoU)``.
    """
    from scipy.optimize import linear_sum_assignment

    m = np.asarray(iou, dtype=float)
    if m.ndim != 2:
        raise InputError(f"IoU matrix must be 2-D (true × predicted), got shape {m.shape}")
    if m.size == 0:
        return []
    ok = m > t
    if not ok.any():
        return []
    big = min(m.shape) + 1.0  # one more match outweighs any IoU total
    w = np.where(ok, big + m, 0.0)
    r, c = linear_sum_assignment(w, maximize=True)
    return [(int(i), int(j), float(m[i, j])) for i, j in zip(r, c, strict=True) if ok[i, j]]


def froc(iou_matrices: list[Any], thresholds: tuple[float, ...] = FROC_THRESHOLDS) -> list[dict[str, Any]]:
    """Lesion-wise sensitivity and false positives per scan at each IoU threshold t.

    ``iou_matrices``: one (true × predicted) IoU matrix per scan (a scan without true lesions
    is a (0, n_pred) matrix). TP = matched pairs (IoU > t), FP = unmatched predictions.
    """
    n_scans = len(iou_matrices)
    if n_scans == 0:
        raise InputError("no scans to evaluate")
    mats = [np.asarray(m, dtype=float) for m in iou_matrices]
    bad = [i for i, m in enumerate(mats) if m.ndim != 2]
    if bad:
        raise InputError(f"IoU matrices must be 2-D (true × predicted); scan(s) {bad[:5]} are not")
    n_true = sum(m.shape[0] for m in mats)
    rows = []
    for t in thresholds:
        tp = fp = 0
        for m in mats:
            k = len(match_lesions(m, t))
            tp += k
            fp += m.shape[1] - k
        lo, hi = wilson_ci(tp, n_true)
        flo, fhi = poisson_rate_ci(fp, n_scans)
        rows.append({"iou_threshold": float(t), "tp": tp, "fp": fp, "n_true": n_true, "n_scans": n_scans,
                     "sensitivity": tp / n_true if n_true else float("nan"), "sensitivity_ci_low": lo,
                     "sensitivity_ci_high": hi, "fp_per_scan": fp / n_scans, "fp_per_scan_ci_low": flo,
                     "fp_per_scan_ci_high": fhi,
                     "rule": "one-to-one (Hungarian), TP when IoU exceeds t; sensitivity Wilson CI, "
                             "FP/scan exact Poisson CI"})
    return rows


def poisson_rate_ci(count: int, exposure: float, conf_level: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) CI of a Poisson rate count/exposure, e.g. false positives per scan."""
    from scipy import stats

    if exposure <= 0:
        return float("nan"), float("nan")
    a = 1 - conf_level
    lo = 0.0 if count == 0 else stats.chi2.ppf(a / 2, 2 * count) / 2
    hi = stats.chi2.ppf(1 - a / 2, 2 * count + 2) / 2
    return float(lo / exposure), float(hi / exposure)


def failure_analysis(df: Any, dice_col: str, feature_cols: list[str], fraction: float = 0.1) -> dict[str, Any]:
    """Top vs bottom ``fraction`` of cases by Dice, compared per feature with the two-sided
    Mann–Whitney U test (scipy). Returns the groups' sizes and one row per feature."""
    from scipy import stats

    if dice_col not in df.columns:
        raise InputError(f"Dice column {dice_col!r} not in the table")
    missing = [c for c in feature_cols if c not in df.columns]
    if missing:
        raise InputError(f"feature column(s) {missing[:5]} not in the table")
    if not 0 < fraction <= 0.5:
        raise InputError(f"fraction must be in (0, 0.5], got {fraction}")
    d = df[df[dice_col].notna()].sort_values(dice_col, kind="mergesort")
    k = int(math.floor(fraction * len(d)))
    if k < 2:
        raise InputError(f"{len(d)} cases give {k} per group at {fraction:.0%}: at least 2 per group are needed")
    bottom, top = d.iloc[:k], d.iloc[-k:]
    rows = []
    for c in feature_cols:
        a, b = top[c].to_numpy(float), bottom[c].to_numpy(float)
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        if a.size < 2 or b.size < 2:
            rows.append({"feature": c, "p": float("nan"), "note": "too few finite values"})
            continue
        res = stats.mannwhitneyu(a, b, alternative="two-sided")
        rows.append({"feature": c, "median_top": float(np.median(a)), "median_bottom": float(np.median(b)),
                     "u": float(res.statistic), "p": float(res.pvalue)})
    out = {"n_per_group": k, "fraction": fraction, "dice_top_min": float(top[dice_col].min()),
           "dice_bottom_max": float(bottom[dice_col].max()), "features": rows,
           "method": "two-sided Mann–Whitney U (scipy.stats.mannwhitneyu), no correction for multiple testing"}
    if k < 10:
        out["caveat"] = f"only {k} cases per group: only large differences can show"
    return out
