"""Feature stability between two readers' masks: the intraclass correlation coefficient.

We use **ICC(2,1)** in Shrout & Fleiss' (1979) notation — two-way random effects,
**absolute agreement**, single rater (McGraw & Wong's ICC(A,1)) — the form usually asked for
in radiomics reproducibility work (Koo & Li 2016): readers are a sample of possible readers,
and a feature whose value shifts systematically with the reader should count as unstable.
From the two-way ANOVA of an n-cases × k-readers table::

    ICC(2,1) = (BMS - EMS) / (BMS + (k - 1)·EMS + k·(JMS - EMS)/n)

with BMS, JMS, EMS the between-case, between-reader and residual mean squares. The study does
not state its ICC form, so the form is selectable (``icc_kind``; the card records it):
ICC(3,1) (two-way mixed, consistency: fixed readers) and ICC(1,1) (one-way random: each case
rated by different readers, WMS = within-case mean square) are available.

Two reliabilities, as published: **inter-observer** (reader 1 vs reader 2's mask) and
**intra-observer** (reader 1's first vs repeat outline two weeks later, manifest column
``mask_reader1_repeat``). A feature is kept when every available ICC exceeds 0.85.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ICC_KINDS = {
    "2,1": "ICC(2,1): two-way random effects, absolute agreement, single rater (Shrout & Fleiss 1979)",
    "3,1": "ICC(3,1): two-way mixed effects, consistency, single rater (Shrout & Fleiss 1979)",
    "1,1": "ICC(1,1): one-way random effects, single rater (Shrout & Fleiss 1979)",
}
DEFAULT_ICC_KIND = "2,1"
ICC_TYPE = ICC_KINDS[DEFAULT_ICC_KIND]


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

    ``kind`` "2,1" (default, absolute agreement), "3,1" (consistency) or "1,1" (one-way). A feature that is
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
        elif kind == "1,1":
            wms = (jms * (k - 1) + ems * (n - 1) * (k - 1)) / (n * (k - 1))  # within-case mean square
            ems = wms
            den = bms + (k - 1) * wms
        else:
            raise ValueError(f"unknown ICC kind {kind!r}; use one of {', '.join(ICC_KINDS)}")
        out = (bms - ems) / den
    out = np.where(den > 0, out, np.where((jms + ems) <= 1e-12 * (1 + np.abs(y).max()), 1.0, 0.0))
    out = np.where(np.isnan(y).any(axis=(0, 1)), np.nan, out)
    return float(out) if np.ndim(out) == 0 else out


def feature_icc(reader1: Any, reader2: Any, kind: str = DEFAULT_ICC_KIND) -> Any:
    """Per-feature ICC (default ICC(2,1)) between two DataFrames indexed by case (same columns).

    Only cases present in both are used; returns a Series ``feature → ICC``.
    """
    import pandas as pd

    common = reader1.index.intersection(reader2.index)
    cols = [c for c in reader1.columns if c in reader2.columns]
    if len(common) < 3:
        raise ValueError(f"ICC needs at least 3 cases read by both readers; found {len(common)}")
    a = reader1.loc[common, cols].to_numpy(float)
    b = reader2.loc[common, cols].to_numpy(float)
    values = icc(np.stack([a, b], axis=1), kind)
    return pd.Series(np.atleast_1d(values), index=cols, name="icc")
