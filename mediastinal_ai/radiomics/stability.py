"""Feature stability between two readers' masks: the intraclass correlation coefficient.

We use **ICC(2,1)** in Shrout & Fleiss' (1979) notation — two-way random effects,
**absolute agreement**, single rater (McGraw & Wong's ICC(A,1)) — the form usually asked for
in radiomics reproducibility work (Koo & Li 2016): readers are a sample of possible readers,
and a feature whose value shifts systematically with the reader should count as unstable.
From the two-way ANOVA of an n-cases × k-readers table::

    ICC(2,1) = (BMS - EMS) / (BMS + (k - 1)·EMS + k·(JMS - EMS)/n)

with BMS, JMS, EMS the between-case, between-reader and residual mean squares. ICC(3,1)
(consistency, fixed readers) is available for comparison.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ICC_TYPE = "ICC(2,1): two-way random effects, absolute agreement, single rater (Shrout & Fleiss 1979)"


def _mean_squares(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """``y`` is (n cases, k readers[, m features]) → BMS, JMS, EMS (per feature)."""
    n, k = y.shape[0], y.shape[1]
    grand = y.mean(axis=(0, 1))
    case_means = y.mean(axis=1)
    reader_means = y.mean(axis=0)
    ss_total = ((y - grand) ** 2).sum(axis=(0, 1))
    ss_cases = k * ((case_means - grand) ** 2).sum(axis=0)
    ss_readers = n * ((reader_means - grand) ** 2).sum(axis=0)
    ss_error = ss_total - ss_cases - ss_readers
    bms = ss_cases / (n - 1)
    jms = ss_readers / (k - 1)
    ems = ss_error / ((n - 1) * (k - 1))
    return bms, jms, ems, n, k


def icc(ratings: np.ndarray, kind: str = "2,1") -> np.ndarray | float:
    """ICC of a (cases × readers) table, or of a stack (cases × readers × features) at once.

    ``kind`` "2,1" (default, absolute agreement) or "3,1" (consistency). A feature that is
    constant across all cases and readers gets ICC 1 when the readers agree exactly and 0
    otherwise (no between-case variance to explain); NaN inputs give NaN.
    """
    y = np.asarray(ratings, dtype=float)
    if y.ndim not in (2, 3) or y.shape[0] < 2 or y.shape[1] < 2:
        raise ValueError(f"ICC needs at least 2 cases × 2 readers; got shape {y.shape}")
    bms, jms, ems, n, k = _mean_squares(y)
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "2,1":
            den = bms + (k - 1) * ems + k * (jms - ems) / n
        elif kind == "3,1":
            den = bms + (k - 1) * ems
        else:
            raise ValueError(f"unknown ICC kind {kind!r}; use '2,1' or '3,1'")
        out = (bms - ems) / den
    out = np.where(den > 0, out, np.where((jms + ems) <= 1e-12 * (1 + np.abs(y).max()), 1.0, 0.0))
    out = np.where(np.isnan(y).any(axis=(0, 1)), np.nan, out)
    return float(out) if np.ndim(out) == 0 else out


def feature_icc(reader1: Any, reader2: Any) -> Any:
    """Per-feature ICC(2,1) between two DataFrames indexed by case (same columns).

    Only cases present in both are used; returns a Series ``feature → ICC``.
    """
    import pandas as pd

    common = reader1.index.intersection(reader2.index)
    cols = [c for c in reader1.columns if c in reader2.columns]
    if len(common) < 3:
        raise ValueError(f"ICC needs at least 3 cases read by both readers; found {len(common)}")
    a = reader1.loc[common, cols].to_numpy(float)
    b = reader2.loc[common, cols].to_numpy(float)
    values = icc(np.stack([a, b], axis=1))
    return pd.Series(np.atleast_1d(values), index=cols, name="icc")
