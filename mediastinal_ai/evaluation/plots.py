"""Figures for papers and reports (matplotlib, Agg backend): ROC with CI band, FROC, confusion
matrix, calibration, decision curve, training curves. Each ``plot_*`` returns the Figure; each
``save_*`` writes PNG and SVG atomically and returns the paths."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..fileio import atomic_path


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out_stem: str | Path, formats: Sequence[str] = ("png", "svg"), dpi: int = 120) -> list[Path]:
    """Write ``fig`` as <out_stem>.png/.svg (atomically) and close it."""
    plt = _plt()
    out = []
    for fmt in formats:
        path = Path(out_stem).with_suffix(f".{fmt}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, bbox_inches="tight")
        out.append(path)
    plt.close(fig)
    return out


def plot_roc(y: Any, scores: dict[str, Any], ci_band: bool = True, n_boot: int = 300, title: str = "ROC"):
    """ROC curves of one or more models on the same cases, AUC (DeLong 95% CI) in the legend,
    pointwise bootstrap 95% band of sensitivity for each curve when ``ci_band``."""
    from .roc import roc_auc_ci, roc_ci_band, roc_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    for i, (name, s) in enumerate(scores.items()):
        fpr, tpr, _ = roc_curve(y, s)
        r = roc_auc_ci(y, s)
        color = f"C{i}"
        ax.plot(fpr, tpr, color=color,
                label=f"{name}: AUC {r.auc:.3f} ({r.ci_low:.3f}–{r.ci_high:.3f})")
        if ci_band:
            g, lo, hi = roc_ci_band(y, s, n_boot=n_boot, seed=i)
            ax.fill_between(g, lo, hi, step="post", color=color, alpha=0.15, linewidth=0)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set(xlabel="1 − specificity (false-positive rate)", ylabel="Sensitivity", xlim=(0, 1), ylim=(0, 1.01),
           title=title)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def plot_froc(table: Any, title: str = "FROC (lesion-wise)"):
    """FROC from the segmentation evaluation table: rows/columns threshold, sensitivity,
    fp_per_scan (``froc.csv`` of ``mediastinal-ai evaluate-seg``, or a list of dicts)."""
    import pandas as pd

    df = pd.DataFrame(table)
    need = {"sensitivity", "fp_per_scan"}
    if not need <= set(df.columns):
        raise InputError(f"FROC table needs columns {sorted(need)}; found {list(df.columns)}")
    df = df.sort_values("fp_per_scan")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(df["fp_per_scan"], df["sensitivity"], marker="o")
    thr_col = next((c for c in ("threshold", "iou_threshold", "iou") if c in df.columns), None)
    if thr_col:
        for _, r in df.iterrows():
            ax.annotate(f"{r[thr_col]:.2f}", (r["fp_per_scan"], r["sensitivity"]), fontsize=6,
                        xytext=(3, -8), textcoords="offset points")
    ax.set(xlabel="False positives per scan", ylabel="Lesion sensitivity", ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    return fig


def plot_confusion(tp: int, fp: int, tn: int, fn: int, labels: tuple[str, str] = ("negative", "positive"),
                   title: str = "Confusion matrix"):
    plt = _plt()
    m = np.array([[tn, fp], [fn, tp]])
    fig, ax = plt.subplots(figsize=(4, 3.6))
    ax.imshow(m, cmap="Blues")
    for i in range(2):
        for j in range(2):
            ax.text(j, i, str(m[i, j]), ha="center", va="center",
                    color="white" if m[i, j] > m.max() / 2 else "black", fontsize=14)
    ax.set_xticks([0, 1], [f"pred {labels[0]}", f"pred {labels[1]}"])
    ax.set_yticks([0, 1], [f"true {labels[0]}", f"true {labels[1]}"])
    ax.set_title(title)
    return fig


def plot_calibration(curve: list[dict[str, Any]], brier: float | None = None, title: str = "Calibration"):
    """Reliability curve from :func:`calibration.calibration_curve` (Wilson 95% CI bars)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    x = [r["mean_predicted"] for r in curve]
    yv = [r["observed"] for r in curve]
    err = [[max(0.0, o - r["ci_low"]) for o, r in zip(yv, curve)], [max(0.0, r["ci_high"] - o) for o, r in zip(yv, curve)]]
    ax.errorbar(x, yv, yerr=err, marker="o", capsize=3, label="model")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8, label="perfect")
    ax.set(xlabel="Mean predicted probability", ylabel="Observed fraction positive", xlim=(0, 1), ylim=(0, 1),
           title=title + (f" (Brier {brier:.3f})" if brier is not None else ""))
    ax.legend(loc="upper left", fontsize=8)
    return fig


def plot_decision_curve(rows: list[dict[str, Any]], title: str = "Decision curve"):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    t = [r["threshold"] for r in rows]
    ax.plot(t, [r["net_benefit_model"] for r in rows], label="model")
    ax.plot(t, [r["net_benefit_all"] for r in rows], ls="--", label="treat all")
    ax.plot(t, [r["net_benefit_none"] for r in rows], ls=":", color="k", label="treat none")
    top = max(r["net_benefit_model"] for r in rows)
    ax.set(xlabel="Threshold probability", ylabel="Net benefit", ylim=(min(-0.05, -0.1 * abs(top)), max(top, 0.05) * 1.1),
           title=title)
    ax.legend(fontsize=8)
    return fig


def plot_training_curves(log_csv: str | Path, title: str = "Training"):
    """Training log CSV (columns: epoch, one or more *loss* columns, other metric columns) →
    losses on the left axis, metrics on the right."""
    import pandas as pd

    try:
        df = pd.read_csv(log_csv)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read training log: {e}", log_csv) from e
    if "epoch" not in df.columns:
        raise InputError(f"training log needs an 'epoch' column; found {list(df.columns)}", log_csv)
    num = [c for c in df.columns if c != "epoch" and pd.api.types.is_numeric_dtype(df[c])]
    losses = [c for c in num if "loss" in c.lower()]
    metrics = [c for c in num if c not in losses and c.lower() not in ("lr", "time", "seconds", "step")]
    if not losses and not metrics:
        raise InputError("training log has no numeric loss or metric columns", log_csv)
    group_col = next((c for c in df.columns if c != "epoch" and not pd.api.types.is_numeric_dtype(df[c])), None)
    groups = list(df.groupby(group_col, sort=False)) if group_col else [("", df)]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax2 = ax.twinx() if metrics else None
    i = 0
    for g, sub in groups:
        prefix = f"{g} " if g != "" else ""
        for c in losses:
            ax.plot(sub["epoch"], sub[c], color=f"C{i % 10}", label=prefix + c)
            i += 1
        for c in metrics:
            if sub[c].notna().any():
                ax2.plot(sub["epoch"], sub[c], ls="--", color=f"C{i % 10}", label=prefix + c)
                i += 1
    ax.set(xlabel="Epoch", ylabel="Loss", title=title)
    handles, labels = ax.get_legend_handles_labels()
    if ax2 is not None:
        ax2.set_ylabel("Metric")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=8, loc="best")
    return fig


def write_training_curves(log_csv: str | Path, out_png: str | Path, title: str = "Training") -> Path | None:
    """Training-curve PNG beside a model. A missing plotting stack (a bare GPU box used only to
    train) must not cost the trained weights, so that case logs a warning and returns ``None``;
    the CSV log stays the record and the figure can be redrawn from it."""
    import logging

    try:
        import matplotlib  # noqa: F401
        import pandas  # noqa: F401
    except ImportError as e:
        logging.getLogger(__name__).warning("training curves not drawn (%s); the CSV log %s has the figures", e, log_csv)
        return None
    return save_figure(plot_training_curves(log_csv, title=title), out_png, formats=("png",), dpi=100)[0]
