"""Voxel-wise and lesion-wise evaluation, as published.

Lesion-wise: connected components (26-connectivity, < 10 voxels dropped) of prediction and
truth; one-to-one matching at an IoU threshold t by optimal assignment (most matches, then total IoU)
(a pair matches only if IoU ≥ t and neither lesion is matched yet). Sensitivity = matched true
lesions / true lesions; false positives = unmatched predicted lesions; FROC over t = 0.05…0.95.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .postprocess import components

IOU_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))


def voxel_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    p, t = pred > 0, truth > 0
    tp = float(np.logical_and(p, t).sum())
    fp, fn = float(p.sum() - tp), float(t.sum() - tp)
    nan = float("nan")
    return {
        "dice": 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 1.0,
        "iou": tp / (tp + fp + fn) if (tp + fp + fn) else 1.0,
        "precision": tp / (tp + fp) if (tp + fp) else nan,
        "recall": tp / (tp + fn) if (tp + fn) else nan,
    }


def pairwise_iou(pred_labels: np.ndarray, true_labels: np.ndarray) -> np.ndarray:
    """IoU matrix [n_true, n_pred] of labelled components."""
    nt, npred = int(true_labels.max()), int(pred_labels.max())
    m = np.zeros((nt, npred))
    if nt == 0 or npred == 0:
        return m
    both = (true_labels > 0) & (pred_labels > 0)
    inter = np.zeros((nt + 1, npred + 1))
    np.add.at(inter, (true_labels[both], pred_labels[both]), 1)
    st = np.bincount(true_labels.ravel(), minlength=nt + 1)
    sp = np.bincount(pred_labels.ravel(), minlength=npred + 1)
    union = st[1:, None] + sp[None, 1:] - inter[1:, 1:]
    return np.where(union > 0, inter[1:, 1:] / np.maximum(union, 1), 0.0)


def match_lesions(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """One-to-one matches with IoU ≥ ``threshold``: the optimal assignment (most matches, then
    the largest total IoU), not greedy — greedy can miss a match when one prediction overlaps two
    lesions."""
    from ..evaluation.segstats import match_lesions as optimal

    return [(i, j) for i, j, _ in optimal(iou, float(np.nextafter(threshold, -np.inf)))]


def lesion_counts(pred: np.ndarray, truth: np.ndarray, thresholds=IOU_THRESHOLDS) -> list[dict[str, Any]]:
    pl, _ = components(pred > 0)
    tl, _ = components(truth > 0)
    iou = pairwise_iou(pl, tl)
    nt, npred = iou.shape
    out = []
    for t in thresholds:
        tp = len(match_lesions(iou, t))
        out.append({"iou_threshold": t, "true_lesions": nt, "pred_lesions": npred, "tp": tp, "fp": npred - tp,
                    "fn": nt - tp})
    return out


def froc(per_case: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Sum per-case counts per IoU threshold → sensitivity and false positives per scan."""
    n = len(per_case)
    rows = []
    for k in range(len(per_case[0]) if per_case else 0):
        tp = sum(c[k]["tp"] for c in per_case)
        nt = sum(c[k]["true_lesions"] for c in per_case)
        fp = sum(c[k]["fp"] for c in per_case)
        rows.append({"iou_threshold": per_case[0][k]["iou_threshold"],
                     "sensitivity": tp / nt if nt else float("nan"), "fp_per_scan": fp / n, "tp": tp,
                     "true_lesions": nt, "fp": fp, "scans": n})
    return rows
