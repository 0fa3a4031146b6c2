"""Figures for papers and reports (matplotlib, Agg backend): ROC with CI band, FROC, confusion
matrix, calibration, decision curve, training curves, Grad-CAM overlay. Each ``plot_*`` returns
the Figure; each ``save_*`` writes PNG and SVG atomically and returns the paths.

Every ``plot_*`` takes ``mark``: the SYNTHETIC / demo note (:func:`mark_text`) drawn on the
figure itself, so that a figure copied out of a report or a results folder still says so.
"""

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


SYNTHETIC_MARK = "SYNTHETIC data — not patients"
DEMO_MARK = "demo model — not for clinical use"


def mark_text(synthetic: bool = False, demo: bool = False) -> str | None:
    """The note a figure carries: synthetic data and/or demo model, or None."""
    parts = ([SYNTHETIC_MARK] if synthetic else []) + ([DEMO_MARK] if demo else [])
    return " · ".join(parts) or None


def stamp(fig, mark: str | None):
    """Draw ``mark`` across the top of ``fig`` (red, bold); returns the figure."""
    if mark:
        fig.text(0.5, 1.0, mark, ha="center", va="bottom", fontsize=8, weight="bold", color="white",
                 bbox={"facecolor": "#b00020", "edgecolor": "none", "pad": 2}, gid="mediastinal-mark")
    return fig


def figure_marks(fig) -> list[str]:
    """The marks drawn by :func:`stamp` (for tests and checks)."""
    return [t.get_text() for t in fig.texts if t.get_gid() == "mediastinal-mark"]


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


def plot_roc(y: Any, scores: dict[str, Any], ci_band: bool = True, n_boot: int = 300, title: str = "ROC",
             mark: str | None = None):
    """ROC curves of one or more models on the same cases, AUC (DeLong 95% CI) in the legend,
    pointwise bootstrap 95% band of sensitivity for each curve when ``ci_band``; the case
    counts (positives / negatives) under the title and the band named in the legend."""
    from .roc import roc_auc_ci, roc_ci_band, roc_curve

    yy = np.asarray(y)
    n_pos, n_neg = int((yy == 1).sum()), int((yy == 0).sum())
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    for i, (name, s) in enumerate(scores.items()):
        fpr, tpr, _ = roc_curve(y, s)
        r = roc_auc_ci(y, s)
        color = f"C{i}"
        ax.plot(fpr, tpr, color=color,
                label=f"{name}: AUC {r.auc:.3f} (95% CI {r.ci_low:.3f}–{r.ci_high:.3f}, DeLong)")
        if ci_band:
            g, lo, hi = roc_ci_band(y, s, n_boot=n_boot, seed=i)
            ax.fill_between(g, lo, hi, step="post", color=color, alpha=0.15, linewidth=0,
                            label=f"{name}: 95% pointwise bootstrap band of sensitivity ({n_boot} resamples)")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax.set(xlabel="1 − specificity (false-positive rate)", ylabel="Sensitivity", xlim=(0, 1), ylim=(0, 1.01),
           title=f"{title}\nn = {n_pos + n_neg} ({n_pos} positive, {n_neg} negative)")
    ax.legend(loc="lower right", fontsize=6.5)
    return stamp(fig, mark)


def plot_froc(table: Any, title: str = "FROC (lesion-wise)", mark: str | None = None):
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
    return stamp(fig, mark)


def plot_confusion(tp: int, fp: int, tn: int, fn: int, labels: tuple[str, str] = ("negative", "positive"),
                   title: str = "Confusion matrix", mark: str | None = None):
    """2 × 2 confusion matrix; rows are the true classes, columns the predicted, both named by
    ``labels`` (negative class first), each cell with its count and share of its row."""
    plt = _plt()
    m = np.array([[tn, fp], [fn, tp]])
    fig, ax = plt.subplots(figsize=(4.6, 3.8))
    ax.imshow(m, cmap="Blues")
    for i in range(2):
        for j in range(2):
            row = m[i].sum()
            share = f"\n{100 * m[i, j] / row:.0f}% of row" if row else ""
            ax.text(j, i, f"{m[i, j]}{share}", ha="center", va="center",
                    color="white" if m[i, j] > m.max() / 2 else "black", fontsize=12)
    ax.set_xticks([0, 1], [f"predicted\n{labels[0]}", f"predicted\n{labels[1]}"])
    ax.set_yticks([0, 1], [f"true\n{labels[0]}", f"true\n{labels[1]}"])
    ax.set_title(title, fontsize=9)
    return stamp(fig, mark)


def plot_calibration(curve: list[dict[str, Any]], brier: float | None = None, title: str = "Calibration",
                     mark: str | None = None):
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
    return stamp(fig, mark)


def plot_decision_curve(rows: list[dict[str, Any]], title: str = "Decision curve", mark: str | None = None):
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
    return stamp(fig, mark)


def plot_training_curves(log_csv: str | Path, title: str = "Training", mark: str | None = None):
    """Training log CSV (columns: epoch, one or more *loss* columns, other metric columns) →
    losses on the left axis, metrics on the right. A metric measured only every few epochs
    (validation Dice every 5th) is drawn through its measured points with markers — empty
    cells are left out, not drawn as gaps that hide isolated points."""
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
        for c in losses:  # markers while there are few epochs, so a one-epoch run still shows its loss
            ax.plot(sub["epoch"], sub[c], color=f"C{i % 10}", label=prefix + c, marker="o" if len(sub) <= 20 else None,
                    ms=3)
            i += 1
        for c in metrics:
            ok = sub[c].notna()
            if ok.any():
                ax2.plot(sub["epoch"][ok], sub[c][ok], ls="--", marker="o", ms=3, color=f"C{i % 10}",
                         label=prefix + c)
                i += 1
    ax.set(xlabel="Epoch", ylabel="Loss", title=title)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = ax.get_legend_handles_labels()
    if ax2 is not None:
        ax2.set_ylabel("Metric")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=8, loc="best")
    return stamp(fig, mark)


def mark_from_cards(folder: str | Path) -> str | None:
    """The mark for figures of a model folder: from its model card(s) (``*.model.json``):
    ``demo`` and ``training_data.synthetic``."""
    import json

    synthetic = demo = False
    for p in sorted(Path(folder).glob("*.model.json")):
        try:
            card = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(card, dict):
            demo |= bool(card.get("demo"))
            td = card.get("training_data") or {}
            synthetic |= bool(isinstance(td, dict) and td.get("synthetic"))
    return mark_text(synthetic, demo)


def write_training_curves(log_csv: str | Path, out_png: str | Path, title: str = "Training",
                          mark: str | None = None) -> Path | None:
    """Training-curve PNG beside a model. A missing plotting stack (a bare GPU box used only to
    train) must not cost the trained weights, so that case logs a warning and returns ``None``;
    the CSV log stays the record and the figure can be redrawn from it. ``mark=None`` takes the
    SYNTHETIC/demo mark from the model card(s) in the PNG's folder."""
    import logging

    try:
        import matplotlib  # noqa: F401
        import pandas  # noqa: F401
    except ImportError as e:
        logging.getLogger(__name__).warning("training curves not drawn (%s); the CSV log %s has the figures", e, log_csv)
        return None
    if mark is None:
        mark = mark_from_cards(Path(out_png).parent)
    return save_figure(plot_training_curves(log_csv, title=title, mark=mark), out_png, formats=("png",), dpi=100)[0]


def _letter(v: Any) -> str:
    """Anatomical letter of an LPS direction (its largest component): L/R, P/A, S/I."""
    v = np.asarray(v, dtype=float)
    k = int(np.argmax(np.abs(v)))
    return ("L", "P", "S")[k] if v[k] > 0 else ("R", "A", "I")[k]


def orientation_letters(direction: Any) -> dict[str, str]:
    """Letters at the edges of an axial slice shown with ``imshow`` (row 0 at the top):
    columns follow the volume's i axis, rows its j axis."""
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    return {"right": _letter(d[:, 0]), "left": _letter(-d[:, 0]), "bottom": _letter(d[:, 1]),
            "top": _letter(-d[:, 1])}


def plot_gradcam(ct_slice: Any, heat_slice: Any, mask_slice: Any = None, *, direction: Any = None,
                 spacing_xy: tuple[float, float] = (1.0, 1.0), model: str = "", title: str = "",
                 mark: str | None = None, window: tuple[float, float] = (-160.0, 240.0), threshold: float = 0.05):
    """One axial CT slice (W400/L40 by default) with the Grad-CAM map over it (jet, 45 % opaque,
    values ≤ ``threshold`` × max left clear), the tumor outline, a colour bar, the orientation
    letters of the slice's edges and the model's name."""
    plt = _plt()
    img = np.asarray(ct_slice, dtype=float)
    g = np.asarray(heat_slice, dtype=float)
    gmax = float(np.nanmax(g)) if g.size and np.isfinite(g).any() else 0.0
    aspect = float(spacing_xy[1]) / float(spacing_xy[0])
    fig, ax = plt.subplots(figsize=(5.6, 5.0))
    ax.imshow(img, cmap="gray", vmin=window[0], vmax=window[1], aspect=aspect, interpolation="nearest")
    hm = ax.imshow(np.ma.masked_less_equal(g, threshold * max(gmax, 1e-9)), cmap="jet", alpha=0.45,
                   vmin=0.0, vmax=max(gmax, 1e-9), aspect=aspect)
    if mask_slice is not None and np.asarray(mask_slice).any():
        ax.contour(np.asarray(mask_slice) > 0, levels=[0.5], colors="white", linewidths=0.8)
    cb = fig.colorbar(hm, ax=ax, fraction=0.046, pad=0.04)
    if cb.solids is not None:
        cb.solids.set_alpha(1.0)  # the bar shows the colours, not the overlay's transparency
    cb.set_label("Grad-CAM (relative contribution, max = 1)" if abs(gmax - 1.0) < 1e-6 else "Grad-CAM", fontsize=8)
    letters = orientation_letters(np.eye(3) if direction is None else direction)
    kw = {"transform": ax.transAxes, "color": "yellow", "fontsize": 11, "weight": "bold"}
    ax.text(0.5, 0.98, letters["top"], ha="center", va="top", **kw)
    ax.text(0.5, 0.02, letters["bottom"], ha="center", va="bottom", **kw)
    ax.text(0.02, 0.5, letters["left"], ha="left", va="center", **kw)
    ax.text(0.98, 0.5, letters["right"], ha="right", va="center", **kw)
    ax.set_xticks([])
    ax.set_yticks([])
    head = f"model: {model}" if model else ""
    ax.set_title("\n".join(t for t in (title, head) if t), fontsize=8)
    return stamp(fig, mark)
