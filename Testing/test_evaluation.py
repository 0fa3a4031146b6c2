"""Statistics on hand-computed cases, bad input, calibration, decision curve, reader study, plots."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mediastinal_ai.errors import InputError
from mediastinal_ai.evaluation import (
    brier_score,
    calibration_curve,
    delong_test,
    multiclass_auc,
    net_benefit,
    roc_auc_ci,
    roc_curve,
    threshold_metrics,
    wilson_ci,
    youden_threshold,
)
from mediastinal_ai.evaluation.roc import midrank

Y4 = [0, 0, 1, 1]
S4 = [0.1, 0.4, 0.35, 0.8]


def test_auc_and_delong_se_by_hand():
    # pairs (pos, neg): 0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4 → 3/4
    r = roc_auc_ci(Y4, S4)
    assert r.auc == pytest.approx(0.75)
    # placements V10 = (0.5, 1), V01 = (1, 0.5): var = 0.125/2 + 0.125/2
    assert r.se == pytest.approx(math.sqrt(0.125))
    assert r.ci_low == pytest.approx(0.75 - 1.959964 * math.sqrt(0.125), abs=1e-5)
    assert r.ci_high == 1.0  # clipped
    assert (r.n_pos, r.n_neg) == (2, 2)


def test_ties_count_half():
    assert roc_auc_ci(Y4, [0.1, 0.4, 0.4, 0.8]).auc == pytest.approx(0.875)
    np.testing.assert_allclose(midrank(np.array([3.0, 1.0, 3.0, 2.0, 3.0])), [4, 1, 4, 2, 4])


def test_score_direction_and_perfect_separation():
    assert roc_auc_ci(Y4, [0.9, 0.8, 0.2, 0.1]).auc == 0.0
    r = roc_auc_ci(Y4, [0.1, 0.2, 0.8, 0.9])
    assert (r.auc, r.se, r.ci_low, r.ci_high) == (1.0, 0.0, 1.0, 1.0)


def test_paired_test_identical_and_different_models():
    y = np.array([0, 1] * 20)
    rng = np.random.default_rng(3)
    s = rng.normal(size=40) + y
    z, p, a, b = delong_test(y, s, s)
    assert (z, p) == (0.0, 1.0) and a == b
    good = y * 3.0 + rng.normal(0, 0.3, 40)
    t = delong_test(y, good, rng.normal(size=40))
    assert t.auc_a > 0.95 and t.p < 0.01 and t.z > 0
    assert delong_test(y, rng.normal(size=40), good).z < 0


def test_bootstrap_ci_reproducible_and_contains_auc():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    s = rng.normal(size=60) + y
    a = roc_auc_ci(y, s, method="bootstrap", n_boot=300, seed=5)
    b = roc_auc_ci(y, s, method="bootstrap", n_boot=300, seed=5)
    d = roc_auc_ci(y, s)
    assert a == b and a.ci_low < a.auc < a.ci_high
    assert abs(a.se - d.se) < 0.03  # bootstrap SD near the DeLong SE
    with pytest.raises(InputError, match="unknown CI method"):
        roc_auc_ci(y, s, method="wald")


def test_roc_curve_points():
    fpr, tpr, thr = roc_curve(Y4, S4)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    assert thr[1] == 0.8


def test_wilson_by_hand():
    lo, hi = wilson_ci(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson_ci(0, 10)[0] == 0.0 and wilson_ci(10, 10)[1] == 1.0
    assert all(math.isnan(v) for v in wilson_ci(0, 0))


def test_threshold_metrics_by_hand():
    y = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    s = [0.9, 0.8, 0.7, 0.2, 0.6, 0.3, 0.1, 0.2, 0.4, 0.05]
    m = threshold_metrics(y, s, 0.5, n_boot=200)
    assert (m["tp"], m["fn"], m["fp"], m["tn"]) == (3, 1, 1, 5)
    assert m["sensitivity"]["value"] == pytest.approx(0.75)
    assert m["specificity"]["value"] == pytest.approx(5 / 6)
    assert m["ppv"]["value"] == pytest.approx(0.75)
    assert m["npv"]["value"] == pytest.approx(5 / 6)
    assert m["accuracy"]["value"] == pytest.approx(0.8)
    assert m["f1"]["value"] == pytest.approx(0.75)
    assert (m["accuracy"]["ci_low"], m["accuracy"]["ci_high"]) == pytest.approx(wilson_ci(8, 10))
    assert m["sensitivity"]["method"] == "Wilson score" and "bootstrap" in m["f1"]["method"]
    assert m["f1"]["ci_low"] <= 0.75 <= m["f1"]["ci_high"]
    none_called = threshold_metrics(y, s, 2.0, n_boot=50)
    assert math.isnan(none_called["ppv"]["value"]) and "undefined" in none_called["ppv"]["note"]


def test_youden_on_train_applied_unchanged_to_test():
    y_train = [0, 0, 0, 1, 1, 1]
    s_train = [0.1, 0.2, 0.45, 0.4, 0.7, 0.9]
    thr = youden_threshold(y_train, s_train)
    # J at 0.4: sens 1, spec 2/3 → 0.667; at 0.7: sens 2/3, spec 1 → 0.667; tie → lower
    assert thr == pytest.approx(0.4)
    m = threshold_metrics([0, 1, 0, 1], [0.41, 0.39, 0.1, 0.95], thr, n_boot=50)
    assert m["threshold"] == thr and (m["tp"], m["fp"]) == (1, 1)


def test_multiclass_auc():
    classes = ["cyst", "thymoma_A", "lymphoma"]
    y = ["cyst", "thymoma_A", "lymphoma"] * 4
    proba = np.tile(np.eye(3), (4, 1)) * 0.7 + 0.1
    r = multiclass_auc(y, proba, classes, n_boot=100)
    assert r.macro_auc == 1.0 and [p["class"] for p in r.per_class] == classes
    r2 = multiclass_auc(y, proba[:, [0, 1, 2]], classes + ["teratoma"][:0], n_boot=50)
    assert r2.skipped == []
    p4 = np.column_stack([proba, np.full(12, 0.1)])
    r3 = multiclass_auc(y, p4, classes + ["teratoma"], n_boot=50)
    assert r3.skipped == ["teratoma"] and "3 classes" in r3.method
    with pytest.raises(InputError, match="not among the classes"):
        multiclass_auc(["x"] * 12, proba, classes)


@pytest.mark.parametrize("y,s,msg", [
    ([1, 1, 1], [0.1, 0.2, 0.3], "only one class"),
    ([0, 0], [0.1, 0.2], "only one class"),
    ([0, 1, 1], [0.1, float("nan"), 0.3], "NaN"),
    ([0, 1, 1], [0.1, 0.2], "length mismatch"),
    ([0, 1, 2], [0.1, 0.2, 0.3], "0/1"),
    ([], [], "empty"),
    ([0, 1], [0.1, float("inf")], "infinite"),
])
def test_bad_input_is_clear(y, s, msg):
    with pytest.raises(InputError, match=msg):
        roc_auc_ci(y, s)
    with pytest.raises(InputError, match=msg):
        threshold_metrics(y, s, 0.5) if len(y) else roc_auc_ci(y, s)


def test_bad_paired_input():
    with pytest.raises(InputError, match="length mismatch"):
        delong_test([0, 1, 1], [0.1, 0.2, 0.3], [0.1, 0.2])


def test_calibration_brier_and_net_benefit_by_hand():
    y = [0, 1, 1, 0]
    p = [0.2, 0.8, 0.6, 0.4]
    assert brier_score(y, p) == pytest.approx((0.04 + 0.04 + 0.16 + 0.16) / 4)
    curve = calibration_curve(y, p, n_bins=2)
    assert [(r["n"], r["observed"]) for r in curve] == [(2, 0.0), (2, 1.0)]
    nb = net_benefit(y, p, thresholds=[0.5])[0]
    # TP 2, FP 0 at 0.5 → 2/4; treat all: 0.5 − 0.5·1
    assert nb["net_benefit_model"] == pytest.approx(0.5) and nb["net_benefit_all"] == pytest.approx(0.0)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        brier_score(y, [0.2, 1.5, 0.3, 0.1])


def test_reader_study():
    from mediastinal_ai.evaluation.readers import reader_study

    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 80)
    model = y * 1.5 + rng.normal(size=80)
    r1 = np.clip(np.round(3 + y + rng.normal(0, 1.2, 80)), 1, 5)
    r1_aided = np.clip(np.round(3 + 1.6 * y + rng.normal(0, 0.8, 80)), 1, 5)
    calls = (rng.random(80) < np.where(y == 1, 0.7, 0.25)).astype(int)
    res = reader_study(y, model, {"R1": r1, "R2": calls}, aided={"R1": r1_aided}, reader_threshold=4)
    rows = {(r["reader"], r["condition"]): r for r in res["readers"]}
    assert set(rows) == {("R1", "unaided"), ("R1", "aided"), ("R2", "unaided")}
    assert rows[("R2", "unaided")]["binary_calls"]
    # binary calls: AUC = (sens + spec) / 2
    r2 = rows[("R2", "unaided")]
    assert r2["auc"] == pytest.approx((r2["sensitivity"] + r2["specificity"]) / 2)
    comps = [t["comparison"] for t in res["tests"]]
    assert comps == ["R1 unaided vs model", "R1 aided vs model", "R1 aided vs unaided", "R2 unaided vs model"]
    assert all(0 <= t["p"] <= 1 for t in res["tests"])
    with pytest.raises(InputError, match="no unaided"):
        reader_study(y, model, {"R1": r1}, aided={"R3": r1})


def test_plots_png_svg(tmp_path):
    from mediastinal_ai.evaluation import plots

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    files = plots.save_figure(plots.plot_roc(y, {"m": rng.normal(size=40) + y}, n_boot=50), tmp_path / "roc")
    fr = pd.DataFrame({"threshold": [0.1, 0.5, 0.9], "sensitivity": [0.95, 0.87, 0.4], "fp_per_scan": [0.5, 0.6, 0.1]})
    files += plots.save_figure(plots.plot_froc(fr), tmp_path / "froc")
    files += plots.save_figure(plots.plot_confusion(3, 1, 5, 1), tmp_path / "cm")
    log = tmp_path / "log.csv"
    pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [0.9, 0.6, 0.5], "val_dice": [0.3, 0.5, 0.6]}).to_csv(log, index=False)
    files += plots.save_figure(plots.plot_training_curves(log), tmp_path / "train")
    assert len(files) == 8
    for f in files:
        assert f.stat().st_size > 1000, f
    assert files[1].read_text().lstrip().startswith(("<?xml", "<svg"))
    with pytest.raises(InputError, match="fp_per_scan"):
        plots.plot_froc(pd.DataFrame({"sensitivity": [1.0]}))
    pd.DataFrame({"step": [1]}).to_csv(log, index=False)
    with pytest.raises(InputError, match="epoch"):
        plots.plot_training_curves(log)
