"""Evaluation: the statistics the studies report (ROC AUC with DeLong CIs and paired tests,
threshold metrics with Wilson CIs, multi-class AUC, calibration, decision curves, reader
studies), plots, and per-case / cohort reports.

Only numpy is imported here so every task can call the statistics cheaply; plots
(matplotlib) and reports live in submodules imported on demand.
"""

from .calibration import brier_score, calibration_curve, net_benefit
from .roc import (
    AucResult,
    DelongTest,
    MulticlassAucResult,
    auc_caveats,
    auc_score,
    check_binary,
    delong_test,
    multiclass_auc,
    roc_auc_ci,
    roc_curve,
)
from .thresholds import metrics_rows, threshold_metrics, wilson_ci, youden_threshold

__all__ = [
    "AucResult", "DelongTest", "MulticlassAucResult", "auc_caveats", "auc_score", "brier_score", "calibration_curve",
    "check_binary", "delong_test", "metrics_rows", "multiclass_auc", "net_benefit", "roc_auc_ci", "roc_curve",
    "threshold_metrics", "wilson_ci", "youden_threshold",
]
