"""Reader studies: radiologists' scores or calls with and without AI, compared with the model.

Input: one table with the truth column, the model score column, and for each reader a column
of scores (e.g. a 1–5 confidence scale) or binary calls, unaided and optionally aided (the
same reader with the AI result shown). Binary calls are valid "scores" for DeLong: their AUC is
(sensitivity + specificity)/2, so reader vs model uses the same paired test.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from .roc import check_binary, delong_test, roc_auc_ci
from .thresholds import threshold_metrics


def _reader_summary(y: np.ndarray, s: np.ndarray, threshold: float | None) -> dict[str, Any]:
    r = roc_auc_ci(y, s)
    binary = set(np.unique(s).tolist()) <= {0.0, 1.0}
    thr = 0.5 if binary else threshold
    out: dict[str, Any] = {"auc": r.auc, "auc_ci_low": r.ci_low, "auc_ci_high": r.ci_high, "binary_calls": binary}
    if thr is not None:
        m = threshold_metrics(y, s, thr, n_boot=200)
        out["threshold"] = thr
        for k in ("sensitivity", "specificity"):
            out[k] = m[k]["value"]
            out[f"{k}_ci_low"], out[f"{k}_ci_high"] = m[k]["ci_low"], m[k]["ci_high"]
    return out


def reader_study(y: Any, model_score: Any, readers: dict[str, Any], aided: dict[str, Any] | None = None,
                 reader_threshold: float | None = None, model_threshold: float | None = None) -> dict[str, Any]:
    """Per-reader AUC/sensitivity/specificity and paired DeLong tests.

    ``readers``/``aided``: reader name → scores or 0/1 calls (same cases, same order as ``y``).
    ``reader_threshold``: cut-off for non-binary reader scores (calls ≥ threshold are positive);
    without it only AUCs are given for score readers. Returns ``{"model": {...}, "readers":
    [rows], "tests": [rows]}`` with one test row per reader vs model, aided vs model, and aided
    vs unaided.
    """
    if not readers:
        raise InputError("no reader columns given")
    y_i, (m,) = check_binary(y, model_score, what="model score")
    res: dict[str, Any] = {"model": _reader_summary(y_i, m, model_threshold), "readers": [], "tests": []}
    for name, scores in readers.items():
        _, (s,) = check_binary(y_i, scores, what=f"reader {name!r}")
        res["readers"].append({"reader": name, "condition": "unaided", **_reader_summary(y_i, s, reader_threshold)})
        t = delong_test(y_i, s, m)
        res["tests"].append({"comparison": f"{name} unaided vs model", **t.as_dict()})
        if aided and name in aided:
            _, (sa,) = check_binary(y_i, aided[name], what=f"reader {name!r} aided")
            res["readers"].append({"reader": name, "condition": "aided",
                                   **_reader_summary(y_i, sa, reader_threshold)})
            res["tests"].append({"comparison": f"{name} aided vs model", **delong_test(y_i, sa, m).as_dict()})
            res["tests"].append({"comparison": f"{name} aided vs unaided", **delong_test(y_i, sa, s).as_dict()})
    for name in (aided or {}):
        if name not in readers:
            raise InputError(f"aided reader {name!r} has no unaided column")
    return res
