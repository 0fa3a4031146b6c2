"""McNemar's test for paired binary decisions (the fusion study compares the sensitivity and
specificity of two models on the same cases with it).

For two decision rules applied to the same cases, only the discordant cases carry information:
``b`` = cases rule A gets right and rule B wrong, ``c`` = the reverse. Under H0 (equal
proportions correct) b ~ Binomial(b + c, 1/2).

* ``method="exact"``: two-sided exact binomial p-value, min(1, 2·P(X ≤ min(b, c))) — what
  statsmodels' ``mcnemar(table, exact=True)`` and R's ``exact2x2::mcnemar.exact`` give;
* ``method="chi2"``: (|b − c| − 1)² / (b + c) with Yates' continuity correction, 1 degree of
  freedom (R's ``mcnemar.test`` default; ``correction=False`` drops the −1);
* ``method="auto"`` (default): exact when b + c < 25, else chi-square.

Paired sensitivity is the test on the positive cases (correct = called positive), paired
specificity on the negative cases (correct = called negative).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import InputError
from .roc import check_binary


def _binom_cdf_half(k: int, n: int) -> float:
    """P(X ≤ k) for X ~ Binomial(n, 1/2), summed in exact integers (no scipy needed)."""
    if n == 0:
        return 1.0
    return sum(math.comb(n, i) for i in range(0, k + 1)) / 2.0 ** n


def mcnemar(b: int, c: int, method: str = "auto", correction: bool = True) -> dict[str, Any]:
    """McNemar's test from the two discordant counts ``b`` (A right, B wrong) and ``c``."""
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise InputError(f"discordant counts must be ≥ 0, got b={b}, c={c}")
    if method not in ("auto", "exact", "chi2"):
        raise InputError(f"McNemar method must be 'auto', 'exact' or 'chi2', got {method!r}")
    n = b + c
    use = ("exact" if n < 25 else "chi2") if method == "auto" else method
    out: dict[str, Any] = {"b": b, "c": c, "n_discordant": n}
    if n == 0:
        out.update({"statistic": 0.0, "p": 1.0, "method": f"McNemar {use}; no discordant case"})
        return out
    if use == "exact":
        p = min(1.0, 2.0 * _binom_cdf_half(min(b, c), n))
        out.update({"statistic": float(min(b, c)), "p": float(p), "method": "McNemar exact (binomial, two-sided)"})
    else:
        d = abs(b - c) - (1.0 if correction else 0.0)
        stat = max(d, 0.0) ** 2 / n
        p = math.erfc(math.sqrt(stat / 2.0))  # chi-square with 1 df: P(X > stat)
        out.update({"statistic": float(stat), "p": float(p),
                    "method": "McNemar chi-square, 1 df" + (", continuity-corrected" if correction else "")})
    if n < 10:
        out["caveat"] = f"only {n} discordant case(s): the test has little power"
    return out


def _as_calls(name: str, v: Any, n: int) -> np.ndarray:
    a = np.asarray(v)
    if a.ndim != 1 or a.size != n:
        raise InputError(f"{name}: expected {n} calls, got shape {a.shape}")
    try:
        f = a.astype(float)
    except (TypeError, ValueError):
        raise InputError(f"{name}: calls must be 0/1") from None
    if not np.isin(f, (0.0, 1.0)).all():
        raise InputError(f"{name}: calls must be 0/1 (apply the threshold first), found {sorted(set(f.tolist()))[:5]}")
    return f.astype(int)


def mcnemar_paired(y: Any, calls_a: Any, calls_b: Any, method: str = "auto") -> dict[str, Any]:
    """McNemar tests of two models' 0/1 calls on the same cases: accuracy (all cases),
    sensitivity (positives) and specificity (negatives). Each row gives both proportions."""
    y_i, _ = check_binary(y)
    a = _as_calls("model A", calls_a, y_i.size)
    b = _as_calls("model B", calls_b, y_i.size)
    out = {}
    for what, sel in (("accuracy", np.ones(y_i.size, bool)), ("sensitivity", y_i == 1), ("specificity", y_i == 0)):
        ra, rb = (a[sel] == y_i[sel]), (b[sel] == y_i[sel])
        row = mcnemar(int((ra & ~rb).sum()), int((~ra & rb).sum()), method)
        row.update({"n": int(sel.sum()), "value_a": float(ra.mean()), "value_b": float(rb.mean())})
        out[what] = row
    return out
