"""Baseline characteristics ("Table 1") of a cohort, split by a group column (e.g. WHO risk
low/high, benign/malignant, or train/test), as the studies report it.

Continuous variables: Shapiro–Wilk in every group (n ≥ 3); when no group rejects normality
(p > ``alpha``) the row shows mean ± SD (sample SD) and the groups are compared with Student's
t-test (two groups) or one-way ANOVA; otherwise median (IQR) and the Mann–Whitney U test (two
groups) or Kruskal–Wallis. Categorical variables: n (%) per level; chi-square test of
independence, or Fisher's exact test for a 2×2 table whose expected counts are < 5. All tests
are scipy's; the test used is named in each row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError


def _fmt(x: float, digits: int) -> str:
    return f"{x:.{digits}f}"


def _continuous(name: str, groups: dict[str, np.ndarray], alpha: float, digits: int) -> dict[str, Any]:
    from scipy import stats

    vals = {g: v[np.isfinite(v)] for g, v in groups.items()}
    normal_p = {g: (float(stats.shapiro(v).pvalue) if v.size >= 3 and np.ptp(v) > 0 else float("nan"))
                for g, v in vals.items()}
    normal = all(np.isfinite(p) and p > alpha for p in normal_p.values())
    row: dict[str, Any] = {"variable": name, "type": "continuous", "level": "",
                           "shapiro_p": normal_p, "summary": "mean ± SD" if normal else "median (IQR)"}
    for g, v in vals.items():
        if v.size == 0:
            row[g] = "—"
        elif normal:
            row[g] = f"{_fmt(v.mean(), digits)} ± {_fmt(v.std(ddof=1) if v.size > 1 else float('nan'), digits)}"
        else:
            q1, q2, q3 = np.percentile(v, [25, 50, 75])
            row[g] = f"{_fmt(q2, digits)} ({_fmt(q1, digits)}–{_fmt(q3, digits)})"
    present = [v for v in vals.values() if v.size >= 2]
    if len(present) < 2:
        row.update({"test": "none (a group has < 2 values)", "p": float("nan")})
    elif len(present) == 2:
        a, b = present
        if normal:
            row.update({"test": "Student t-test", "p": float(stats.ttest_ind(a, b).pvalue)})
        else:
            row.update({"test": "Mann–Whitney U", "p": float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)})
    elif normal:
        row.update({"test": "one-way ANOVA", "p": float(stats.f_oneway(*present).pvalue)})
    else:
        row.update({"test": "Kruskal–Wallis", "p": float(stats.kruskal(*present).pvalue)})
    return row


def _categorical(name: str, col: Any, grp: Any, group_levels: list[str], digits: int) -> list[dict[str, Any]]:
    import pandas as pd
    from scipy import stats

    c = col.astype("string").fillna("missing")
    tab = pd.crosstab(c, grp).reindex(columns=group_levels, fill_value=0)
    tab_test = tab.drop(index="missing", errors="ignore")
    tab_test = tab_test.loc[tab_test.sum(axis=1) > 0, tab_test.sum(axis=0) > 0]
    test, p = "none (fewer than 2 levels or groups)", float("nan")
    if tab_test.shape[0] >= 2 and tab_test.shape[1] >= 2:
        obs = tab_test.to_numpy()
        expected = stats.contingency.expected_freq(obs)
        if obs.shape == (2, 2) and (expected < 5).any():
            test, p = "Fisher exact", float(stats.fisher_exact(obs).pvalue)
        else:
            res = stats.chi2_contingency(obs, correction=obs.shape == (2, 2))
            test = "chi-square" + (" (Yates)" if obs.shape == (2, 2) else "")
            p = float(res.pvalue)
            if (expected < 5).any():
                test += "; expected counts < 5: approximate"
    rows = []
    totals = tab.sum(axis=0)
    for i, level in enumerate(tab.index):
        row: dict[str, Any] = {"variable": name, "type": "categorical", "level": str(level), "summary": "n (%)",
                               "test": test if i == 0 else "", "p": p if i == 0 else float("nan")}
        for g in group_levels:
            n = int(tab.loc[level, g])
            row[g] = f"{n} ({100 * n / totals[g]:.{max(0, digits - 1)}f}%)" if totals[g] else "0"
        rows.append(row)
    return rows


def baseline_table(df: Any, group_col: str, variables: list[str] | None = None, *, alpha: float = 0.05,
                   digits: int = 2, max_levels: int = 20) -> Any:
    """A DataFrame: one row per continuous variable, one per level of a categorical one,
    a column per group (and ``overall``), the test and its p-value."""
    import pandas as pd

    if group_col not in df.columns:
        raise InputError(f"group column {group_col!r} not in the table; columns are {list(df.columns)}")
    d = df[df[group_col].notna() & (df[group_col].astype(str) != "")]
    grp = d[group_col].astype(str)
    levels = sorted(set(grp))
    if len(levels) < 2:
        raise InputError(f"group column {group_col!r} has fewer than two groups ({levels})")
    skip = {group_col, "case_id", "ct", "mask", "mask_reader2", "split_seed"}
    variables = variables or [c for c in d.columns if c not in skip]
    rows: list[dict[str, Any]] = [{"variable": "n", "type": "count", "level": "", "summary": "n",
                                   **{g: str(int((grp == g).sum())) for g in levels},
                                   "overall": str(len(d)), "test": "", "p": float("nan")}]
    for v in variables:
        if v not in d.columns:
            raise InputError(f"variable {v!r} not in the table")
        col = d[v]
        numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col) and col.nunique() > 2
        if numeric:
            x = col.to_numpy(float)
            row = _continuous(v, {g: x[(grp == g).to_numpy()] for g in levels}, alpha, digits)
            allv = x[np.isfinite(x)]
            if row["summary"] == "mean ± SD":
                row["overall"] = f"{allv.mean():.{digits}f} ± {allv.std(ddof=1):.{digits}f}"
            elif allv.size:
                q1, q2, q3 = np.percentile(allv, [25, 50, 75])
                row["overall"] = f"{q2:.{digits}f} ({q1:.{digits}f}–{q3:.{digits}f})"
            row["shapiro_p"] = "; ".join(f"{g}: {p:.3g}" for g, p in row["shapiro_p"].items())
            rows.append(row)
        elif col.nunique() <= max_levels:
            cat = _categorical(v, col, grp, levels, digits)
            n_all = len(col)
            counts = col.astype("string").fillna("missing").value_counts()
            for r in cat:
                n = int(counts.get(r["level"], 0))
                r["overall"] = f"{n} ({100 * n / n_all:.{max(0, digits - 1)}f}%)"
            rows += cat
    cols = ["variable", "level", "type", "summary", *levels, "overall", "test", "p", "shapiro_p"]
    return pd.DataFrame(rows).reindex(columns=cols)


def write_baseline_table(manifest: str | Path, group_col: str, out_csv: str | Path,
                         variables: list[str] | None = None) -> Path:
    """Table 1 of a cohort manifest (CSV) written atomically as CSV; returns the path."""
    import pandas as pd

    from ..fileio import atomic_path

    p = Path(manifest)
    if not p.is_file():
        raise InputError("manifest not found", p)
    try:
        df = pd.read_csv(p)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read the manifest: {e}", p) from e
    table = baseline_table(df, group_col, variables)
    out = Path(out_csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    return out
