"""Evaluate a predictions table: AUC (DeLong CI), paired DeLong comparisons, threshold metrics
(Wilson CIs) at a threshold fixed beforehand, calibration, decision curve, plots, and the cohort
report. This is what ``mediastinal-ai evaluate`` runs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..fileio import atomic_path, atomic_write_json, provenance
from .calibration import brier_score, calibration_curve, net_benefit
from .roc import auc_caveats, check_binary, delong_test, roc_auc_ci
from .thresholds import metrics_rows, threshold_metrics, youden_threshold

log = logging.getLogger(__name__)


def read_predictions(path: str | Path, label_col: str, score_cols: list[str]):
    """Read a CSV (or Parquet) of per-case predictions and check the named columns."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise InputError("predictions file not found", p)
    try:
        df = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read predictions table: {e}", p) from e
    missing = [c for c in [label_col, *score_cols] if c not in df.columns]
    if missing:
        raise InputError(f"column(s) {missing} not in the table; columns are {list(df.columns)}", p)
    df[label_col] = binary_labels(df[label_col], label_col, p)
    unlabelled = df[label_col].isna()
    if unlabelled.any() and not unlabelled.all():
        # e.g. who_risk is empty for non-thymic lesions in a joined cohort table: not evaluable for
        # this label, left out and said (an all-empty column still fails with its own message)
        log.warning("%d of %d rows have no %r label and are left out", int(unlabelled.sum()), len(df), label_col)
        df = df[~unlabelled].reset_index(drop=True)
    for c in score_cols:
        if not pd.api.types.is_numeric_dtype(df[c]):
            raise InputError(f"score column {c!r} is not numeric", p)
    return df


# Text labels that mean 0/1: the manifest's who_risk (low/high) and benign/malignant calls.
TEXT_LABELS = ({"low": 0, "high": 1}, {"benign": 0, "malignant": 1})


def binary_labels(col, name: str = "label", source: str | Path | None = None):
    """A label column as given when numeric; ``low``/``high`` (WHO risk) → 0/1 and
    ``benign``/``malignant`` → 0/1 when it is text, so the manifest's ``who_risk`` column can be
    the truth column directly. Other text is refused naming the values; empty cells stay missing."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
        return col
    text = col.astype("string").str.strip().str.lower()
    values = set(text.dropna().unique().tolist()) - {""}
    for mapping in TEXT_LABELS:
        if values and values <= set(mapping):
            return text.map(mapping).astype(float)
    try:
        return pd.to_numeric(col)
    except (TypeError, ValueError):
        raise InputError(f"label column {name!r} must be 0/1, low/high (WHO risk, high = positive) or "
                         f"benign/malignant; found {sorted(values)[:5]}", source) from None


def class_names(label_col: str) -> tuple[str, str]:
    """How the negative and positive class of a label column are called on figures."""
    k = label_col.lower()
    if "risk" in k:
        return ("WHO low risk", "WHO high risk")
    if "malign" in k or "benign" in k:
        return ("benign", "malignant")
    return (f"{label_col} = 0", f"{label_col} = 1")


def evaluate_predictions(df, label_col: str, score_cols: list[str], out_dir: str | Path, *,
                         threshold: float | None = None, threshold_df=None, ci_method: str = "delong",
                         title: str = "evaluation", synthetic: bool = False, demo: bool = False,
                         predictions_name: str = "", report: bool = True, readers: list[str] | None = None,
                         aided: dict[str, str] | None = None, reader_threshold: float | None = None,
                         froc_table: str | Path | None = None,
                         training_logs: list[str | Path] | None = None,
                         reader_groups: dict[str, list[str]] | None = None,
                         table1_group: str | None = None) -> dict[str, Any]:
    """Compute everything, write summary.json, metrics.csv, predictions.csv, plots (PNG+SVG) and
    cohort_report.html/.pdf into ``out_dir``; return the summary.

    The threshold for sensitivity/specificity etc. is, in order: ``threshold`` as given; Youden
    on ``threshold_df`` (training/validation predictions — the honest choice); otherwise Youden
    on the evaluated data itself, which is optimistic and flagged as such in the summary.

    ``readers``: reader score/call columns (``aided``: reader → aided column) for a reader study
    against the first score column; ``froc_table``: ``froc.csv`` of ``evaluate-seg`` to plot;
    ``training_logs``: ``training_log.csv`` files to plot; ``reader_groups``: group name → reader
    columns (e.g. junior/senior) for the Table-3 layout; ``table1_group``: a column of the table
    by which a baseline-characteristics table (``table1.csv``) is made.
    """
    import pandas as pd

    from . import plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    y_raw = df[label_col].to_numpy()
    y, scores = check_binary(y_raw, *[df[c].to_numpy() for c in score_cols], what="scores")
    score_map = dict(zip(score_cols, scores))
    mark = plots.mark_text(synthetic, demo)  # drawn on every figure, not only the report's first page
    summary: dict[str, Any] = {"title": title, "predictions": predictions_name, "label_col": label_col,
                               "score_cols": score_cols, "n": int(y.size), "n_pos": int(y.sum()),
                               "n_neg": int((1 - y).sum()), "synthetic": synthetic, "demo": demo,
                               "ci_method": ci_method}
    summary["auc"] = []
    for c, s in score_map.items():
        r = roc_auc_ci(y, s, method=ci_method)
        summary["auc"].append({"model": c, "auc": r.auc, "ci_low": r.ci_low, "ci_high": r.ci_high, "se": r.se,
                               "method": r.method, "n_pos": r.n_pos, "n_neg": r.n_neg,
                               "caveats": auc_caveats(y, s, r)})
    summary["comparisons"] = []
    for i, a in enumerate(score_cols):
        for b in score_cols[i + 1:]:
            summary["comparisons"].append({"comparison": f"{a} vs {b}", **delong_test(y, score_map[a], score_map[b]).as_dict()})
    summary["threshold_metrics"], summary["thresholds"] = {}, {}
    if threshold is not None:
        note = f"threshold {threshold} given by the user, applied to every model"
    elif threshold_df is not None:
        note = "threshold per model = Youden index on the separate training/validation predictions, applied unchanged"
    else:
        note = ("threshold per model = Youden index on THESE data (no training/validation predictions given): "
                "optimistic — pass --threshold or --threshold-from for an honest estimate")
    summary["threshold_note"] = note
    metric_rows = []
    for c, s in score_map.items():
        if threshold is not None:
            thr = float(threshold)
        elif threshold_df is not None:
            if c not in threshold_df.columns or label_col not in threshold_df.columns:
                raise InputError(f"training/validation predictions lack column {c!r} or {label_col!r}")
            thr = youden_threshold(threshold_df[label_col].to_numpy(), threshold_df[c].to_numpy())
        else:
            thr = youden_threshold(y, s)
        m = threshold_metrics(y, s, thr)
        summary["thresholds"][c] = thr
        rows = metrics_rows(m)
        summary["threshold_metrics"][f"{c} (threshold {thr:.4g}; TP {m['tp']} FP {m['fp']} TN {m['tn']} FN {m['fn']})"] = rows
        metric_rows += [{"model": c, "threshold": thr, **r} for r in rows]
        plots.save_figure(plots.plot_confusion(m["tp"], m["fp"], m["tn"], m["fn"], labels=class_names(label_col),
                                               title=f"{c} at threshold {thr:.3g}", mark=mark),
                          out / f"confusion_{_safe(c)}")
    summary["mcnemar"] = []
    for i, a in enumerate(score_cols):
        for b in score_cols[i + 1:]:
            from .paired import mcnemar_paired

            ca = (score_map[a] >= summary["thresholds"][a]).astype(int)
            cb = (score_map[b] >= summary["thresholds"][b]).astype(int)
            for what, r in mcnemar_paired(y, ca, cb).items():
                summary["mcnemar"].append({"comparison": f"{a} vs {b}", "metric": what, "value_a": r["value_a"],
                                           "value_b": r["value_b"], "b": r["b"], "c": r["c"], "p": r["p"],
                                           "method": r["method"]})
    summary["brier"], summary["calibration"], summary["decision_curve"] = {}, {}, {}
    for c, s in score_map.items():
        if s.min() >= 0 and s.max() <= 1:
            summary["brier"][c] = brier_score(y, s)
            curve = calibration_curve(y, s, n_bins=min(10, max(2, y.size // 10)), strategy="quantile")
            summary["calibration"][c] = curve
            plots.save_figure(plots.plot_calibration(curve, summary["brier"][c], title=f"Calibration: {c}", mark=mark),
                              out / f"calibration_{_safe(c)}")
            dc = net_benefit(y, s)
            summary["decision_curve"][c] = dc
            plots.save_figure(plots.plot_decision_curve(dc, title=f"Decision curve: {c}", mark=mark),
                              out / f"decision_curve_{_safe(c)}")
    plots.save_figure(plots.plot_roc(y, score_map, title=title, mark=mark), out / "roc")
    if readers:
        summary["reader_study"] = _readers(df, y, score_map[score_cols[0]], readers, aided or {}, reader_threshold)
        summary["reader_study"]["model_column"] = score_cols[0]
        summary["reader_table"] = _reader_table(df, y, score_map[score_cols[0]], readers, aided or {},
                                                reader_groups or {}, reader_threshold, summary["thresholds"][score_cols[0]])
    if table1_group:
        from .table1 import baseline_table

        skip = {*score_cols, table1_group, label_col, *(readers or []), *(aided or {}).values()}
        t1 = baseline_table(df, table1_group, [c for c in df.columns if c not in skip])
        with atomic_path(out / "table1.csv") as tmp:
            t1.to_csv(tmp, index=False)
        summary["table1"] = {"group_col": table1_group,
                             "rows": t1.astype(object).where(t1.notna(), None).to_dict(orient="records")}
    if froc_table is not None:
        try:
            fr = pd.read_csv(froc_table)
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read FROC table: {e}", froc_table) from e
        plots.save_figure(plots.plot_froc(fr, mark=mark), out / "froc")
        summary["froc"] = fr.to_dict(orient="records")
    for i, log_path in enumerate(training_logs or []):
        plots.save_figure(plots.plot_training_curves(log_path, title=f"Training: {Path(log_path).parent.name}",
                                                     mark=plots.mark_from_cards(Path(log_path).parent) or mark),
                          out / f"training_curves_{i + 1}")
    summary["provenance"] = provenance(params={"threshold": threshold, "ci_method": ci_method})
    atomic_write_json(out / "summary.json", summary)
    with atomic_path(out / "metrics.csv") as tmp:
        pd.DataFrame(metric_rows).to_csv(tmp, index=False)
    with atomic_path(out / "predictions.csv") as tmp:
        df.to_csv(tmp, index=False)
    if report:
        from .report import write_cohort_report

        summary["report"] = [str(p) for p in write_cohort_report(out)]
    return summary


def _readers(df, y, model_score, readers: list[str], aided: dict[str, str],
             reader_threshold: float | None) -> dict[str, Any]:
    from .readers import reader_study

    missing = [c for c in [*readers, *aided.values()] if c not in df.columns]
    if missing:
        raise InputError(f"reader column(s) {missing} not in the predictions table")
    return reader_study(y, model_score, {r: df[r].to_numpy() for r in readers},
                        aided={r: df[c].to_numpy() for r, c in aided.items()}, reader_threshold=reader_threshold)


def _reader_table(df, y, model_score, readers, aided, groups, reader_threshold, model_threshold):
    from .readers import reader_table

    return reader_table(y, {r: df[r].to_numpy() for r in readers},
                        aided={r: df[c].to_numpy() for r, c in aided.items()}, groups=groups,
                        model_score=model_score, reader_threshold=reader_threshold, model_threshold=model_threshold)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


def auc_table(summary: dict[str, Any]) -> str:
    lines = []
    for r in summary["auc"]:
        lines.append(f"{r['model']}: AUC {r['auc']:.3f} (95% CI {r['ci_low']:.3f}–{r['ci_high']:.3f}; "
                     f"{r.get('n_pos', '?')} positive / {r.get('n_neg', '?')} negative)")
        lines += [f"  caution: {c}" for c in r.get("caveats", [])]
    lines += [f"{r['comparison']}: ΔAUC {r['auc_diff']:+.3f}, z {r['z']:.2f}, p {r['p']:.4f}"
              for r in summary["comparisons"]]
    lines += [f"{r['comparison']} {r['metric']}: {r['value_a']:.3f} vs {r['value_b']:.3f}, McNemar p {r['p']:.3g}"
              for r in summary.get("mcnemar", [])]
    return "\n".join(lines)


def as_float_array(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=float)
