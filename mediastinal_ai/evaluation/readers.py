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


_TABLE_METRICS = ("accuracy", "sensitivity", "specificity", "ppv", "npv", "f1")


def _calls(y: np.ndarray, s: np.ndarray, threshold: float | None, who: str) -> np.ndarray:
    if set(np.unique(s).tolist()) <= {0.0, 1.0}:
        return s.astype(int)
    if threshold is None:
        raise InputError(f"{who} gives scores, not 0/1 calls: pass a reader threshold")
    return (s >= threshold).astype(int)


def _table_row(y: np.ndarray, s: np.ndarray, calls: np.ndarray) -> dict[str, Any]:
    tp = int(((calls == 1) & (y == 1)).sum())
    tn = int(((calls == 0) & (y == 0)).sum())
    fp = int(((calls == 1) & (y == 0)).sum())
    fn = int(((calls == 0) & (y == 1)).sum())
    r = roc_auc_ci(y, s)
    row: dict[str, Any] = {"auc": r.auc, "auc_ci_low": r.ci_low, "auc_ci_high": r.ci_high}
    for name, k, d in (("accuracy", tp + tn, y.size), ("sensitivity", tp, tp + fn), ("specificity", tn, tn + fp),
                       ("ppv", tp, tp + fp), ("npv", tn, tn + fn)):
        row[name] = k / d if d else float("nan")
        row[f"{name}_k/n"] = f"{k}/{d}"
    d = 2 * tp + fp + fn
    row["f1"] = 2 * tp / d if d else float("nan")
    row["f1_k/n"] = f"{2 * tp}/{d}"
    row.update({"tp": tp, "fp": fp, "tn": tn, "fn": fn})
    return row


def reader_table(y: Any, readers: dict[str, Any], *, aided: dict[str, Any] | None = None,
                 groups: dict[str, list[str]] | None = None, model_score: Any = None,
                 reader_threshold: float | None = None, model_threshold: float | None = None) -> dict[str, Any]:
    """The reader study in the layout of the radiomics/CNN study's Table 3.

    One row per reader and condition (unaided / aided) with accuracy, sensitivity, specificity,
    PPV, NPV, F1 (k/n beside each) and AUC (DeLong CI; for 0/1 calls the AUC is (sens + spec)/2);
    group rows (e.g. ``{"junior": [...], "senior": [...]}``) hold the unweighted **mean over the
    group's readers** of each metric, as the study reports group means. Comparisons, per
    reader: aided vs unaided by paired DeLong (AUC) and McNemar (accuracy); per group: paired
    DeLong on the group's mean call per case (a pooled score), and the mean change of each
    metric. ``model_score`` adds the model as a row (at ``model_threshold``, default 0.5).
    """
    from .paired import mcnemar

    if not readers:
        raise InputError("no reader columns given")
    aided = aided or {}
    groups = groups or {}
    y_i, _ = check_binary(y)
    for r in aided:
        if r not in readers:
            raise InputError(f"aided reader {r!r} has no unaided column")
    for g, members in groups.items():
        unknown = [m for m in members if m not in readers]
        if unknown or not members:
            raise InputError(f"reader group {g!r}: unknown or no readers {unknown}")
    data: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    rows = []
    for cond, source in (("unaided", readers), ("aided", aided)):
        for name, v in source.items():
            _, (s,) = check_binary(y_i, v, what=f"reader {name!r} {cond}")
            c = _calls(y_i, s, reader_threshold, f"reader {name!r}")
            data[(name, cond)] = (s, c)
            group = next((g for g, mem in groups.items() if name in mem), "")
            rows.append({"reader": name, "group": group, "condition": cond, **_table_row(y_i, s, c)})
    if model_score is not None:
        _, (m,) = check_binary(y_i, model_score, what="model score")
        thr = 0.5 if model_threshold is None else float(model_threshold)
        rows.append({"reader": "model", "group": "", "condition": f"threshold {thr:g}",
                     **_table_row(y_i, m, (m >= thr).astype(int))})
    group_rows = []
    for g, members in groups.items():
        for cond in ("unaided", "aided"):
            rr = [r for r in rows if r["reader"] in members and r["condition"] == cond]
            if len(rr) != len(members):
                continue
            group_rows.append({"group": g, "condition": cond, "n_readers": len(rr),
                               **{k: float(np.mean([r[k] for r in rr])) for k in (*_TABLE_METRICS, "auc")}})
    comparisons = []
    for name in aided:
        (su, cu), (sa, ca) = data[(name, "unaided")], data[(name, "aided")]
        d = delong_test(y_i, sa, su)
        mc = mcnemar(int(((ca == y_i) & (cu != y_i)).sum()), int(((ca != y_i) & (cu == y_i)).sum()))
        comparisons.append({"comparison": f"{name} aided vs unaided", "auc_diff": d.auc_a - d.auc_b, "p_delong": d.p,
                            "accuracy_diff": float((ca == y_i).mean() - (cu == y_i).mean()),
                            "p_mcnemar_accuracy": mc["p"], "mcnemar_method": mc["method"]})
    for g, members in groups.items():
        if all(m in aided for m in members):
            su = np.mean([data[(m, "unaided")][1] for m in members], axis=0)
            sa = np.mean([data[(m, "aided")][1] for m in members], axis=0)
            d = delong_test(y_i, sa, su)
            gu = next(r for r in group_rows if r["group"] == g and r["condition"] == "unaided")
            ga = next(r for r in group_rows if r["group"] == g and r["condition"] == "aided")
            comparisons.append({"comparison": f"{g} group aided vs unaided", "p_delong": d.p,
                                "auc_diff": ga["auc"] - gu["auc"],
                                **{f"{k}_diff": ga[k] - gu[k] for k in _TABLE_METRICS},
                                "note": "DeLong on the group's mean call per case (pooled readers)"})
    names = list(groups)
    for i, g1 in enumerate(names):
        for g2 in names[i + 1:]:
            for cond in ("unaided", "aided"):
                if all((m, cond) in data for m in groups[g1] + groups[g2]):
                    s1 = np.mean([data[(m, cond)][1] for m in groups[g1]], axis=0)
                    s2 = np.mean([data[(m, cond)][1] for m in groups[g2]], axis=0)
                    d = delong_test(y_i, s1, s2)
                    comparisons.append({"comparison": f"{g1} vs {g2} ({cond})", "auc_diff": d.auc_a - d.auc_b,
                                        "p_delong": d.p, "note": "DeLong on each group's mean call per case"})
    out = {"rows": rows, "group_means": group_rows, "comparisons": comparisons, "n": int(y_i.size),
           "n_pos": int(y_i.sum()), "group_mean": "unweighted mean of the group's readers"}
    if y_i.size < 30:
        out["caveat"] = f"only {y_i.size} cases: reader metrics and tests are imprecise"
    return out
