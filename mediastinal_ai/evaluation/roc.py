"""ROC AUC with 95% confidence intervals and the paired DeLong test.

Why DeLong: the published studies report AUC with a 95% CI and compare models (and readers) with
DeLong's test, so users must get the same statistic. The variance is DeLong, DeLong &
Clarke-Pearson (1988), computed with the O(n log n) midrank algorithm of Sun & Xu (2014):

    AUC      = (sum of the positives' midranks among all cases − m(m+1)/2) / (m·n)
    V10_i    = (midrank of positive i among all − its midrank among positives) / n
    V01_j    = 1 − (midrank of negative j among all − its midrank among negatives) / m
    Var(AUC) = var(V10)/m + var(V01)/n          (sample variances, ddof = 1)

Ties count one half, as in the Mann-Whitney statistic. The 95% CI is AUC ± z·SE clipped to
[0, 1] (what R's pROC ``ci.auc(method="delong")`` returns; Testing/test_delong_vs_proc.py checks
equality to 1e-6). The paired test uses the covariance of the two AUCs on the same cases:
z = (AUC_a − AUC_b) / sqrt(var_a + var_b − 2·cov_ab), two-sided normal p-value (pROC
``roc.test(method="delong", paired=TRUE)``).

Convention: label 1 = positive (e.g. high risk, malignant); a higher score means "more positive".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class AucResult:
    """AUC with its confidence interval. ``se`` is the DeLong standard error (also filled for
    bootstrap CIs, where it is the bootstrap standard deviation)."""

    auc: float
    ci_low: float
    ci_high: float
    se: float
    method: str = "delong"
    n_pos: int = 0
    n_neg: int = 0
    conf_level: float = 0.95

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"AUC {self.auc:.3f} (95% CI {self.ci_low:.3f}–{self.ci_high:.3f}, {self.method})"


@dataclass(frozen=True)
class DelongTest:
    """Paired DeLong test of AUC(a) vs AUC(b) on the same cases. Unpacks as (z, p, auc_a, auc_b)."""

    z: float
    p: float
    auc_a: float
    auc_b: float
    se_diff: float = float("nan")
    extra: dict[str, Any] = field(default_factory=dict)

    def __iter__(self):
        return iter((self.z, self.p, self.auc_a, self.auc_b))

    def as_dict(self) -> dict[str, Any]:
        return {"z": self.z, "p": self.p, "auc_a": self.auc_a, "auc_b": self.auc_b, "se_diff": self.se_diff,
                "auc_diff": self.auc_a - self.auc_b, "method": "paired DeLong"}


# ----------------------------------------------------------------------------- input checks
def check_binary(y: Any, *scores: Any, what: str = "score") -> tuple[np.ndarray, list[np.ndarray]]:
    """Validate labels (0/1, both classes present) and finite scores of the same length.

    Raises :class:`InputError` with a message that says what is wrong, because these functions
    are reached from user CSVs through the CLI and from every task's evaluation.
    """
    y_arr = np.asarray(y)
    if y_arr.ndim != 1:
        raise InputError(f"labels must be one-dimensional, got shape {y_arr.shape}")
    if y_arr.size == 0:
        raise InputError("no cases to evaluate (empty labels)")
    if y_arr.dtype == bool:
        y_arr = y_arr.astype(int)
    try:
        y_num = y_arr.astype(float)
    except (TypeError, ValueError):
        raise InputError(f"labels must be 0/1 (negative/positive), got values {sorted(set(map(str, y_arr)))[:5]}") from None
    if np.isnan(y_num).any():
        raise InputError(f"labels contain {int(np.isnan(y_num).sum())} missing value(s) (NaN)")
    bad = sorted(set(np.unique(y_num).tolist()) - {0.0, 1.0})
    if bad:
        raise InputError(f"labels must be 0/1 (negative/positive), found {bad[:5]}")
    y_int = y_num.astype(int)
    n_pos = int(y_int.sum())
    if n_pos == 0 or n_pos == y_int.size:
        only = "positive (1)" if n_pos else "negative (0)"
        raise InputError(f"only one class present: all {y_int.size} cases are {only}; "
                         "an AUC needs both positive and negative cases")
    out = []
    for k, s in enumerate(scores):
        name = what if len(scores) == 1 else f"{what} {k + 1}"
        try:
            s_arr = np.asarray(s, dtype=float)
        except (TypeError, ValueError):
            raise InputError(f"{name} must be numbers") from None
        if s_arr.ndim != 1:
            raise InputError(f"{name} must be one-dimensional, got shape {s_arr.shape}")
        if s_arr.size != y_int.size:
            raise InputError(f"length mismatch: {y_int.size} labels but {s_arr.size} values in {name}")
        n_bad = int((~np.isfinite(s_arr)).sum())
        if n_bad:
            raise InputError(f"{name} contains {n_bad} missing or infinite value(s) (NaN/inf); "
                             "drop or impute those cases first")
        out.append(s_arr)
    return y_int, out


def _z(conf_level: float) -> float:
    if not 0.0 < conf_level < 1.0:
        raise InputError(f"confidence level must be between 0 and 1, got {conf_level}")
    return NormalDist().inv_cdf(0.5 + conf_level / 2.0)


# ----------------------------------------------------------------------------- fast DeLong
def midrank(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank, vectorised (sort + unique)."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    _, first, counts = np.unique(xs, return_index=True, return_counts=True)
    group_rank = first + (counts + 1) / 2.0  # 1-based average rank of each tie group
    ranks_sorted = np.repeat(group_rank, counts)
    out = np.empty_like(ranks_sorted)
    out[order] = ranks_sorted
    return out


def delong_placements(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scores (k, n) → (AUCs (k,), V10 (k, m), V01 (k, n_neg)) for validated 0/1 labels."""
    pos = scores[:, y == 1]
    neg = scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    aucs = np.empty(scores.shape[0])
    v10 = np.empty((scores.shape[0], m))
    v01 = np.empty((scores.shape[0], n))
    for r in range(scores.shape[0]):
        tx = midrank(pos[r])
        ty = midrank(neg[r])
        tz = midrank(np.concatenate([pos[r], neg[r]]))
        aucs[r] = (tz[:m].sum() - m * (m + 1) / 2.0) / (m * n)
        v10[r] = (tz[:m] - tx) / n
        v01[r] = 1.0 - (tz[m:] - ty) / m
    return aucs, v10, v01


def delong_covariance(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scores (k, n) → (AUCs (k,), covariance matrix (k, k)) by the fast DeLong algorithm."""
    aucs, v10, v01 = delong_placements(y, scores)
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10, ddof=1)) if m > 1 else np.zeros((len(aucs), len(aucs)))
    s01 = np.atleast_2d(np.cov(v01, ddof=1)) if n > 1 else np.zeros((len(aucs), len(aucs)))
    return aucs, s10 / m + s01 / n


def auc_score(y: Any, score: Any) -> float:
    """Plain ROC AUC (Mann-Whitney with ties = 1/2), validated input."""
    y_i, (s,) = check_binary(y, score)
    return float(delong_placements(y_i, s[None, :])[0][0])


# ----------------------------------------------------------------------------- public API
def roc_auc_ci(y: Any, score: Any, method: str = "delong", conf_level: float = 0.95,
               n_boot: int = 2000, seed: int = 0) -> AucResult:
    """AUC with a confidence interval.

    ``method="delong"``: AUC ± z·SE(DeLong), clipped to [0, 1] — matches pROC.
    ``method="bootstrap"``: stratified bootstrap (positives and negatives resampled separately,
    so every resample has both classes), percentile interval, ``n_boot`` resamples, fixed ``seed``
    so reports are reproducible.
    """
    y_i, (s,) = check_binary(y, score)
    z = _z(conf_level)
    aucs, cov = delong_covariance(y_i, s[None, :])
    auc = float(aucs[0])
    se = math.sqrt(max(float(cov[0, 0]), 0.0))
    n_pos, n_neg = int(y_i.sum()), int((1 - y_i).sum())
    if method == "delong":
        return AucResult(auc, max(0.0, auc - z * se), min(1.0, auc + z * se), se, "delong", n_pos, n_neg, conf_level)
    if method == "bootstrap":
        boot = bootstrap_aucs(y_i, s, n_boot=n_boot, seed=seed)
        alpha = (1.0 - conf_level) / 2.0
        lo, hi = np.quantile(boot, [alpha, 1.0 - alpha])
        return AucResult(auc, float(lo), float(hi), float(np.std(boot, ddof=1)),
                         f"stratified bootstrap ({n_boot} resamples, percentile)", n_pos, n_neg, conf_level)
    raise InputError(f"unknown CI method {method!r}: use 'delong' or 'bootstrap'")


SMALL_CLASS = 10  # fewer positives or negatives than this: the CI is unreliable


def auc_caveats(y: Any, score: Any, result: AucResult | None = None) -> list[str]:
    """Plain-words warnings for an AUC that looks more certain than it is: few positives or
    negatives, a constant (or two-valued) score, a zero-width or clipped interval."""
    y_i, (s,) = check_binary(y, score)
    r = result or roc_auc_ci(y_i, s)
    out = []
    n_pos, n_neg = int(y_i.sum()), int((1 - y_i).sum())
    if min(n_pos, n_neg) < SMALL_CLASS:
        out.append(f"only {n_pos} positive and {n_neg} negative cases: the AUC and its CI are unreliable "
                   f"(the normal approximation needs more; try --ci bootstrap and more cases)")
    n_unique = int(np.unique(s).size)
    if n_unique == 1:
        out.append("the score is constant: AUC 0.5 comes from ties alone, the model does not discriminate")
    elif n_unique == 2:
        out.append("the score takes only two values (binary calls): AUC = (sensitivity + specificity)/2")
    if n_unique > 1 and r.ci_high - r.ci_low < 1e-9:
        out.append("zero-width CI (DeLong SE is 0, e.g. perfect separation): this is not certainty; "
                   "the true AUC can be lower")
    elif r.ci_high >= 1.0 - 1e-12 or r.ci_low <= 1e-12:
        out.append("the CI was clipped to [0, 1]")
    return out


def bootstrap_aucs(y: np.ndarray, score: np.ndarray, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """AUCs of ``n_boot`` stratified bootstrap resamples (validated y/score)."""
    if n_boot < 10:
        raise InputError(f"n_boot must be at least 10, got {n_boot}")
    rng = np.random.default_rng(seed)
    pos, neg = score[y == 1], score[y == 0]
    m, n = pos.size, neg.size
    out = np.empty(n_boot)
    for b in range(n_boot):
        p = pos[rng.integers(0, m, m)]
        q = neg[rng.integers(0, n, n)]
        r = midrank(np.concatenate([p, q]))
        out[b] = (r[:m].sum() - m * (m + 1) / 2.0) / (m * n)
    return out


def delong_test(y: Any, score_a: Any, score_b: Any) -> DelongTest:
    """Paired two-sided DeLong test of AUC(a) = AUC(b) on the same cases.

    Returns a :class:`DelongTest` that unpacks as ``z, p, auc_a, auc_b``. When the two AUC
    estimates are perfectly correlated (identical rankings) the variance of the difference is 0:
    then z = 0, p = 1 if the AUCs are equal.
    """
    y_i, (a, b) = check_binary(y, score_a, score_b, what="scores")
    aucs, cov = delong_covariance(y_i, np.stack([a, b]))
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    diff = float(aucs[0] - aucs[1])
    if var <= 1e-300 or abs(diff) < 1e-15 and var < 1e-12:
        z, p = (0.0, 1.0) if abs(diff) < 1e-15 else (math.copysign(math.inf, diff), 0.0)
        se = math.sqrt(max(var, 0.0))
    else:
        se = math.sqrt(var)
        z = diff / se
        p = math.erfc(abs(z) / math.sqrt(2.0))
    return DelongTest(float(z), float(p), float(aucs[0]), float(aucs[1]), se,
                      {"var_a": float(cov[0, 0]), "var_b": float(cov[1, 1]), "cov_ab": float(cov[0, 1])})


def roc_curve(y: Any, score: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) for the rule "positive if score ≥ threshold", from (0,0) to (1,1)."""
    y_i, (s,) = check_binary(y, score)
    thr = np.unique(s)[::-1]
    pos, neg = s[y_i == 1], s[y_i == 0]
    ps, ns = np.sort(pos), np.sort(neg)
    tpr = (pos.size - np.searchsorted(ps, thr, side="left")) / pos.size
    fpr = (neg.size - np.searchsorted(ns, thr, side="left")) / neg.size
    return (np.concatenate([[0.0], fpr]), np.concatenate([[0.0], tpr]), np.concatenate([[np.inf], thr]))


def roc_ci_band(y: Any, score: Any, n_boot: int = 500, seed: int = 0, conf_level: float = 0.95,
                grid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pointwise sensitivity CI band at fixed false-positive rates by stratified bootstrap
    (vertical averaging). Returns (fpr_grid, tpr_low, tpr_high) for the ROC plot."""
    y_i, (s,) = check_binary(y, score)
    grid = np.linspace(0, 1, 101) if grid is None else np.asarray(grid, float)
    rng = np.random.default_rng(seed)
    pos, neg = s[y_i == 1], s[y_i == 0]
    curves = np.empty((n_boot, grid.size))
    for b in range(n_boot):
        p = pos[rng.integers(0, pos.size, pos.size)]
        q = neg[rng.integers(0, neg.size, neg.size)]
        yy = np.concatenate([np.ones(p.size, int), np.zeros(q.size, int)])
        fpr, tpr, _ = roc_curve(yy, np.concatenate([p, q]))
        # step curve: highest TPR reached at FPR ≤ grid value
        idx = np.searchsorted(fpr, grid, side="right") - 1
        curves[b] = np.maximum.accumulate(tpr)[idx]
    alpha = (1 - conf_level) / 2
    return grid, np.quantile(curves, alpha, axis=0), np.quantile(curves, 1 - alpha, axis=0)


@dataclass(frozen=True)
class MulticlassAucResult:
    """One-vs-rest AUC per class (DeLong CIs) and their unweighted (macro) mean."""

    macro_auc: float
    macro_ci_low: float
    macro_ci_high: float
    per_class: list[dict[str, Any]]
    skipped: list[str]
    method: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def multiclass_auc(y: Any, proba: Any, classes: list[str], n_boot: int = 1000, seed: int = 0,
                   conf_level: float = 0.95) -> MulticlassAucResult:
    """One-vs-rest macro AUC with a per-class table.

    ``y`` holds class labels (values of ``classes``); ``proba`` is (n, len(classes)). Classes
    with no positive or no negative case cannot have an AUC: they are listed in ``skipped`` and
    left out of the macro mean (said in ``method``). The macro CI is a percentile bootstrap over
    cases (resamples lacking a class's positives/negatives drop that class for that resample).
    """
    labels = np.asarray(y).astype(str)
    p = np.asarray(proba, dtype=float)
    classes = [str(c) for c in classes]
    if p.ndim != 2 or p.shape[1] != len(classes):
        raise InputError(f"probabilities must be (cases, {len(classes)} classes), got shape {p.shape}")
    if p.shape[0] != labels.size:
        raise InputError(f"length mismatch: {labels.size} labels but {p.shape[0]} probability rows")
    if not np.isfinite(p).all():
        raise InputError(f"probabilities contain {int((~np.isfinite(p)).sum())} missing or infinite value(s)")
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise InputError(f"labels not among the classes: {unknown[:5]}")
    per, skipped, cols = [], [], []
    for j, c in enumerate(classes):
        yy = (labels == c).astype(int)
        if 0 < yy.sum() < yy.size:
            r = roc_auc_ci(yy, p[:, j], conf_level=conf_level)
            per.append({"class": c, "auc": r.auc, "ci_low": r.ci_low, "ci_high": r.ci_high, "se": r.se,
                        "n_pos": r.n_pos, "n_neg": r.n_neg})
            cols.append(j)
        else:
            skipped.append(c)
    if not per:
        raise InputError("no class has both positive and negative cases: multi-class AUC undefined")
    macro = float(np.mean([r["auc"] for r in per]))
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, labels.size, labels.size)
        lb, pb = labels[idx], p[idx]
        vals = []
        for j in cols:
            yy = (lb == classes[j]).astype(int)
            k = int(yy.sum())
            if 0 < k < yy.size:
                r = midrank(np.concatenate([pb[yy == 1, j], pb[yy == 0, j]]))
                vals.append((r[:k].sum() - k * (k + 1) / 2.0) / (k * (yy.size - k)))
        if vals:
            boots.append(np.mean(vals))
    alpha = (1 - conf_level) / 2
    lo, hi = (np.quantile(boots, [alpha, 1 - alpha]) if len(boots) >= 10 else (np.nan, np.nan))
    method = (f"one-vs-rest, unweighted mean over {len(per)} classes with positives and negatives; "
              f"per-class DeLong CI; macro CI by case bootstrap ({n_boot} resamples, percentile)")
    return MulticlassAucResult(macro, float(lo), float(hi), per, skipped, method)
