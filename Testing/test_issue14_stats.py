"""Issue 14 statistics, each checked against an independent implementation (scipy / sklearn /
brute force) on the same data — never against typed-in numbers."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mediastinal_ai.errors import InputError
from mediastinal_ai.evaluation import auc_caveats, threshold_metrics
from mediastinal_ai.evaluation.multiclass import compare_multiclass_auc, confusion_matrix
from mediastinal_ai.evaluation.paired import mcnemar, mcnemar_paired
from mediastinal_ai.evaluation.readers import reader_table
from mediastinal_ai.evaluation.segstats import (
    failure_analysis,
    froc,
    match_lesions,
    mean_sd_ci,
    size_group,
    subgroup_table,
)
from mediastinal_ai.evaluation.table1 import baseline_table


# ----------------------------------------------------------------------------- McNemar
@pytest.mark.parametrize("b,c", [(0, 0), (1, 6), (3, 4), (12, 2), (20, 9), (40, 22)])
def test_mcnemar_matches_scipy(b, c):
    ex = mcnemar(b, c, "exact")
    ref = stats.binomtest(b, b + c, 0.5).pvalue if b + c else 1.0
    assert ex["p"] == pytest.approx(ref, rel=1e-9, abs=1e-12)
    if b + c:
        chi = mcnemar(b, c, "chi2")
        stat = (abs(b - c) - 1) ** 2 / (b + c)
        assert chi["statistic"] == pytest.approx(stat)
        assert chi["p"] == pytest.approx(stats.chi2.sf(stat, 1), rel=1e-9)
        nc = mcnemar(b, c, "chi2", correction=False)
        assert nc["p"] == pytest.approx(stats.chi2.sf((b - c) ** 2 / (b + c), 1), rel=1e-9)
    assert mcnemar(b, c)["method"].startswith("McNemar exact" if b + c < 25 else "McNemar chi")


def test_mcnemar_against_statsmodels_when_installed():
    sm = pytest.importorskip("statsmodels.stats.contingency_tables")
    for b, c in [(3, 11), (30, 14)]:
        table = [[10, b], [c, 7]]
        assert mcnemar(b, c, "exact")["p"] == pytest.approx(sm.mcnemar(table, exact=True).pvalue)
        assert mcnemar(b, c, "chi2")["p"] == pytest.approx(sm.mcnemar(table, exact=False, correction=True).pvalue)


def test_wilson_interval_against_statsmodels_when_installed():
    """The Wilson interval behind every sensitivity/specificity/PPV/NPV CI and the FROC rows."""
    prop = pytest.importorskip("statsmodels.stats.proportion")
    from mediastinal_ai.evaluation.thresholds import wilson_ci

    for k, n in [(0, 5), (1, 5), (5, 5), (17, 40), (93, 120), (3, 1000)]:
        for conf in (0.95, 0.9):
            lo, hi = prop.proportion_confint(k, n, alpha=1 - conf, method="wilson")
            assert wilson_ci(k, n, conf) == pytest.approx((lo, hi), abs=1e-12)


def test_mcnemar_paired_splits_positives_and_negatives():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    a = np.where(rng.random(200) < 0.8, y, 1 - y)
    b = np.where(rng.random(200) < 0.65, y, 1 - y)
    res = mcnemar_paired(y, a, b)
    for what, sel in (("sensitivity", y == 1), ("specificity", y == 0), ("accuracy", np.ones(200, bool))):
        ra, rb = a[sel] == y[sel], b[sel] == y[sel]
        bb, cc = int((ra & ~rb).sum()), int((~ra & rb).sum())
        assert (res[what]["b"], res[what]["c"]) == (bb, cc)
        assert res[what]["value_a"] == pytest.approx(ra.mean())
        ref = stats.binomtest(bb, bb + cc).pvalue if bb + cc < 25 else stats.chi2.sf((abs(bb - cc) - 1) ** 2 / (bb + cc), 1)
        assert res[what]["p"] == pytest.approx(ref, rel=1e-9)
    with pytest.raises(InputError, match="0/1"):
        mcnemar_paired(y, a * 0.7, b)


# ----------------------------------------------------------------------------- multi-class
def test_confusion_matrix_matches_sklearn():
    from sklearn.metrics import confusion_matrix as skcm
    from sklearn.metrics import precision_score, recall_score

    rng = np.random.default_rng(2)
    classes = ["cyst", "thymoma_A", "lymphoma", "schwannoma"]
    t = rng.choice(classes, 150)
    p = np.where(rng.random(150) < 0.6, t, rng.choice(classes, 150))
    cm = confusion_matrix(t, p, classes)
    assert np.array_equal(np.array(cm["matrix"]), skcm(t, p, labels=classes))
    rec = recall_score(t, p, labels=classes, average=None)
    prec = precision_score(t, p, labels=classes, average=None)
    for j, row in enumerate(cm["per_class"]):
        assert row["sensitivity"] == pytest.approx(rec[j])
        assert row["ppv"] == pytest.approx(prec[j])
        # specificity = recall of "not this class"
        spec = recall_score(t != classes[j], p != classes[j])
        assert row["specificity"] == pytest.approx(spec)


def test_multiclass_auc_comparison_against_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    classes = ["a", "b", "c"]
    n = 90
    y = rng.choice(classes, n)
    onehot = (y[:, None] == np.array(classes)[None]).astype(float)
    pa = np.exp(2.0 * onehot + rng.normal(0, 1, (n, 3)))
    pa /= pa.sum(1, keepdims=True)
    pb = np.exp(0.7 * onehot + rng.normal(0, 1, (n, 3)))
    pb /= pb.sum(1, keepdims=True)
    res = compare_multiclass_auc(y, pa, pb, classes, n_boot=300, seed=5)
    assert res["macro_auc_a"] == pytest.approx(roc_auc_score(y, pa, multi_class="ovr", average="macro", labels=classes))
    assert res["macro_auc_b"] == pytest.approx(roc_auc_score(y, pb, multi_class="ovr", average="macro", labels=classes))
    # the bootstrap SD, recomputed with sklearn on the same resampled indices
    r = np.random.default_rng(5)
    diffs = []
    for _ in range(300):
        idx = r.integers(0, n, n)
        yb = y[idx]
        if len(set(yb)) < 3:
            continue
        diffs.append(roc_auc_score(yb, pa[idx], multi_class="ovr", labels=classes)
                     - roc_auc_score(yb, pb[idx], multi_class="ovr", labels=classes))
    assert res["se_diff"] == pytest.approx(np.std(diffs, ddof=1), rel=1e-6)
    assert res["p"] == pytest.approx(2 * stats.norm.sf(abs(res["auc_diff"]) / res["se_diff"]))
    assert res["auc_diff"] > 0 and res["p"] < 0.05
    same = compare_multiclass_auc(y, pa, pa, classes, n_boot=200)
    assert same["auc_diff"] == 0 and same["p"] == 1.0


# ----------------------------------------------------------------------------- reader study
def test_reader_table_matches_sklearn():
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

    rng = np.random.default_rng(4)
    n = 80
    y = rng.integers(0, 2, n)
    readers, aided = {}, {}
    for k, acc in enumerate((0.65, 0.7, 0.72, 0.8, 0.82, 0.85)):
        readers[f"R{k + 1}"] = np.where(rng.random(n) < acc, y, 1 - y)
        aided[f"R{k + 1}"] = np.where(rng.random(n) < acc + 0.08, y, 1 - y)
    groups = {"junior": ["R1", "R2", "R3"], "senior": ["R4", "R5", "R6"]}
    model = y * 0.4 + rng.random(n)
    res = reader_table(y, readers, aided=aided, groups=groups, model_score=model)
    for row in res["rows"]:
        if row["reader"] == "model":
            c = (model >= 0.5).astype(int)
            assert row["auc"] == pytest.approx(roc_auc_score(y, model))
        else:
            c = (aided if row["condition"] == "aided" else readers)[row["reader"]]
            assert row["auc"] == pytest.approx(roc_auc_score(y, c))
        assert row["accuracy"] == pytest.approx(accuracy_score(y, c))
        assert row["sensitivity"] == pytest.approx(recall_score(y, c))
        assert row["specificity"] == pytest.approx(recall_score(1 - y, 1 - c))
        assert row["ppv"] == pytest.approx(precision_score(y, c))
        assert row["npv"] == pytest.approx(precision_score(1 - y, 1 - c))
        assert row["f1"] == pytest.approx(f1_score(y, c))
    for g in res["group_means"]:
        src = aided if g["condition"] == "aided" else readers
        assert g["sensitivity"] == pytest.approx(np.mean([recall_score(y, src[r]) for r in groups[g["group"]]]))
    comps = {c["comparison"]: c for c in res["comparisons"]}
    assert {"R1 aided vs unaided", "junior group aided vs unaided", "junior vs senior (aided)"} <= set(comps)
    r1 = comps["R1 aided vs unaided"]
    bb = int(((aided["R1"] == y) & (readers["R1"] != y)).sum())
    cc = int(((aided["R1"] != y) & (readers["R1"] == y)).sum())
    ref = stats.binomtest(bb, bb + cc).pvalue if bb + cc < 25 else stats.chi2.sf((abs(bb - cc) - 1) ** 2 / (bb + cc), 1)
    assert r1["p_mcnemar_accuracy"] == pytest.approx(ref)
    with pytest.raises(InputError, match="unknown"):
        reader_table(y, readers, groups={"x": ["R9"]})


# ----------------------------------------------------------------------------- segmentation
def test_mean_sd_ci_matches_scipy_t_interval():
    rng = np.random.default_rng(6)
    v = rng.beta(8, 2, 37)
    r = mean_sd_ci(np.append(v, np.nan))
    lo, hi = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((lo, hi))
    assert r["sd"] == pytest.approx(np.std(v, ddof=1)) and r["n_missing"] == 1
    tiny = mean_sd_ci([0.8, 0.9, 0.85])
    assert "caveat" in tiny
    b = mean_sd_ci(v, method="bootstrap", n_boot=500)
    assert b["ci_low"] < v.mean() < b["ci_high"]


def test_subgroups_by_published_size_bins():
    assert [size_group(d) for d in (49.9, 50, 80, 80.1, float("nan"))] == ["< 5 cm", "5–8 cm", "5–8 cm", "> 8 cm",
                                                                           "unknown"]
    df = pd.DataFrame({"dice": [0.5, 0.6, 0.8, 0.9, 0.85, 0.7], "diam": [30, 40, 60, 70, 90, 100]})
    df["size"] = df["diam"].map(size_group)
    rows = subgroup_table(df, ["dice"], "size")
    assert [r["subgroup"] for r in rows] == ["< 5 cm", "5–8 cm", "> 8 cm"]
    assert rows[0]["mean"] == pytest.approx(0.55)


def _brute_match(m, t):
    """Every one-to-one assignment: most pairs with IoU > t, then largest total IoU."""
    n, k = m.shape
    best = (0, 0.0)
    for r in range(0, min(n, k) + 1):
        for rows in itertools.combinations(range(n), r):
            for cols in itertools.permutations(range(k), r):
                if all(m[i, j] > t for i, j in zip(rows, cols)):
                    cand = (r, sum(m[i, j] for i, j in zip(rows, cols)))
                    if cand[0] > best[0] or cand[0] == best[0] and cand[1] > best[1] + 1e-12:
                        best = cand
    return best


def test_hungarian_matching_equals_brute_force():
    rng = np.random.default_rng(7)
    for _ in range(60):
        m = rng.random((rng.integers(1, 5), rng.integers(1, 5))) * (rng.random() < 0.9)
        m[rng.random(m.shape) < 0.4] = 0
        for t in (0.05, 0.3, 0.5):
            pairs = match_lesions(m, t)
            assert len({i for i, _, _ in pairs}) == len(pairs) == len({j for _, j, _ in pairs})
            n, tot = _brute_match(m, t)
            assert len(pairs) == n and sum(p[2] for p in pairs) == pytest.approx(tot)
    # "exceeds": IoU exactly t is not a match
    assert match_lesions(np.array([[0.5]]), 0.5) == []


def test_froc_counts():
    mats = [np.array([[0.7, 0.1], [0.0, 0.4]]), np.zeros((0, 2)), np.array([[0.2]])]
    rows = {r["iou_threshold"]: r for r in froc(mats, (0.05, 0.5))}
    assert rows[0.05]["tp"] == 3 and rows[0.05]["fp"] == 2 and rows[0.05]["sensitivity"] == 1.0
    assert rows[0.5]["tp"] == 1 and rows[0.5]["fp"] == 4 and rows[0.5]["fp_per_scan"] == pytest.approx(4 / 3)
    # lesion sensitivity CI = Wilson (scipy's binomtest), FP/scan CI = exact Poisson: the bounds are
    # the rates at which P(X >= k) and P(X <= k) equal 2.5% (scipy.stats.poisson)
    ci = stats.binomtest(1, 3).proportion_ci(0.95, method="wilson")
    assert (rows[0.5]["sensitivity_ci_low"], rows[0.5]["sensitivity_ci_high"]) == pytest.approx((ci.low, ci.high))
    lo, hi = rows[0.5]["fp_per_scan_ci_low"] * 3, rows[0.5]["fp_per_scan_ci_high"] * 3
    assert stats.poisson.sf(3, lo) == pytest.approx(0.025) and stats.poisson.cdf(4, hi) == pytest.approx(0.025)


def test_failure_analysis_matches_scipy():
    rng = np.random.default_rng(8)
    df = pd.DataFrame({"dice": rng.random(100), "volume": rng.gamma(2, 10, 100), "mean_hu": rng.normal(40, 10, 100)})
    df.loc[df.dice < 0.1, "volume"] /= 5  # small lesions fail
    res = failure_analysis(df, "dice", ["volume", "mean_hu"])
    assert res["n_per_group"] == 10
    s = df.sort_values("dice", kind="mergesort")
    ref = stats.mannwhitneyu(s.volume.iloc[-10:], s.volume.iloc[:10], alternative="two-sided")
    row = res["features"][0]
    assert row["u"] == pytest.approx(ref.statistic) and row["p"] == pytest.approx(ref.pvalue)


# ----------------------------------------------------------------------------- Table 1
def test_baseline_table_chooses_tests_like_scipy():
    rng = np.random.default_rng(9)
    n = 120
    df = pd.DataFrame({"risk": rng.choice(["low", "high"], n),
                       "age": rng.normal(53, 13, n),
                       "size_mm": rng.lognormal(4, 0.6, n),
                       "sex": rng.choice(["F", "M"], n),
                       "site": rng.choice(["anterior", "middle", "posterior"], n, p=[0.8, 0.15, 0.05])})
    t = baseline_table(df, "risk")
    lo, hi = df.risk == "low", df.risk == "high"
    age = t[t.variable == "age"].iloc[0]
    normal = all(stats.shapiro(df.age[g]).pvalue > 0.05 for g in (lo, hi))
    assert age["summary"] == ("mean ± SD" if normal else "median (IQR)")
    size = t[t.variable == "size_mm"].iloc[0]
    assert size["summary"] == "median (IQR)" and size["test"] == "Mann–Whitney U"
    assert size["p"] == pytest.approx(stats.mannwhitneyu(df.size_mm[hi], df.size_mm[lo]).pvalue)
    if normal:
        assert age["p"] == pytest.approx(stats.ttest_ind(df.age[hi], df.age[lo]).pvalue)
        assert age["high"] == f"{df.age[hi].mean():.2f} ± {df.age[hi].std(ddof=1):.2f}"
    sex = t[t.variable == "sex"].iloc[0]
    obs = pd.crosstab(df.sex, df.risk).to_numpy()
    assert sex["p"] == pytest.approx(stats.chi2_contingency(obs, correction=True).pvalue)
    small = pd.DataFrame({"g": ["a"] * 6 + ["b"] * 6, "x": ["y"] * 5 + ["n"] + ["n"] * 5 + ["y"]})
    ts = baseline_table(small, "g")
    row = ts[ts.variable == "x"].iloc[0]
    assert row["test"] == "Fisher exact"
    assert row["p"] == pytest.approx(stats.fisher_exact(pd.crosstab(small.x, small.g).to_numpy()).pvalue)


# ----------------------------------------------------------------------------- issue 18 item 7
def test_caveats_for_tiny_n_and_constant_scores():
    y = np.array([0, 0, 1, 1, 1])
    cav = auc_caveats(y, [0.1, 0.2, 0.8, 0.9, 0.95])
    assert any("only 3 positive and 2 negative" in c for c in cav)
    assert any("zero-width" in c for c in cav)
    const = auc_caveats(np.r_[np.zeros(30), np.ones(30)], np.full(60, 0.3))
    assert any("constant" in c for c in const)
    rng = np.random.default_rng(0)
    yy = rng.integers(0, 2, 400)
    assert auc_caveats(yy, yy + rng.normal(0, 1.5, 400)) == []


def test_f1_k_over_n_equals_f1():
    rng = np.random.default_rng(10)
    y = rng.integers(0, 2, 101)
    s = y * 0.3 + rng.random(101)
    m = threshold_metrics(y, s, 0.6, n_boot=50)
    from sklearn.metrics import f1_score

    assert m["f1"]["value"] == pytest.approx(f1_score(y, s >= 0.6))
    assert m["f1"]["k"] / m["f1"]["n"] == pytest.approx(m["f1"]["value"])
    assert m["f1"]["k"] == 2 * m["tp"] and not math.isnan(m["f1"]["ci_low"])


def test_evaluate_writes_mcnemar_reader_table_table1_and_cli(tmp_path, capsys):
    from mediastinal_ai.cli import main
    from mediastinal_ai.evaluation.evaluate import auc_table, evaluate_predictions

    rng = np.random.default_rng(11)
    n = 60
    y = rng.integers(0, 2, n)
    df = pd.DataFrame({"y": y, "m1": y * 0.5 + rng.random(n), "m2": rng.random(n), "age": rng.normal(50, 9, n),
                       "sex": rng.choice(["F", "M"], n)})
    for k in range(4):
        df[f"R{k}"] = np.where(rng.random(n) < 0.7, y, 1 - y)
        df[f"R{k}a"] = np.where(rng.random(n) < 0.8, y, 1 - y)
    s = evaluate_predictions(df, "y", ["m1", "m2"], tmp_path / "ev", threshold=0.6, report=False,
                             readers=[f"R{k}" for k in range(4)], aided={f"R{k}": f"R{k}a" for k in range(4)},
                             reader_groups={"junior": ["R0", "R1"], "senior": ["R2", "R3"]}, table1_group="y")
    sens = next(r for r in s["mcnemar"] if r["metric"] == "sensitivity")
    ca, cb = df.m1[df.y == 1] >= 0.6, df.m2[df.y == 1] >= 0.6
    bb, cc = int((ca & ~cb).sum()), int((~ca & cb).sum())
    assert (sens["b"], sens["c"]) == (bb, cc)
    assert {r["group"] for r in s["reader_table"]["group_means"]} == {"junior", "senior"}
    t1 = pd.read_csv(tmp_path / "ev" / "table1.csv")
    assert set(t1.variable) == {"n", "age", "sex"}
    assert "McNemar" in auc_table(s)
    df.to_csv(tmp_path / "m.csv", index=False)
    assert main(["table1", "--manifest", str(tmp_path / "m.csv"), "--by", "y", "--variables", "age", "sex",
                 "--out", str(tmp_path / "t1.csv")]) == 0
    assert "written to" in capsys.readouterr().out
    assert main(["table1", "--manifest", str(tmp_path / "m.csv"), "--by", "nope", "--out", str(tmp_path / "x.csv")]) != 0
    assert "group column 'nope'" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()


REAL = __import__("pathlib").Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real-ct"


def test_vendor_from_real_dicom_headers_matches_pydicom():
    import pydicom

    from mediastinal_ai.evaluation.cli_segstats import _vendor
    from mediastinal_ai.evaluation.segstats import vendor_of

    series = [d for d in sorted(REAL.glob("lidc-contrast-slabs/*")) + sorted(REAL.glob("lung-pet-ct-dx/*")) if d.is_dir()]
    if not series:
        pytest.skip(f"real CT samples not found under {REAL}")
    for d in series[:3]:
        f = sorted(d.glob("*.dcm"))[0]
        ref = str(pydicom.dcmread(f, stop_before_pixels=True).get("Manufacturer", "") or "").strip() or "unknown"
        assert vendor_of(str(f)) == ref == _vendor(d)


def test_seg_stats_cli_summary_subgroups_and_failure(tmp_path, capsys):
    from mediastinal_ai.cli import main

    rng = np.random.default_rng(12)
    n = 40
    ids = [f"c{i}" for i in range(n)]
    diam = rng.uniform(20, 120, n)
    dice = np.clip(0.4 + diam / 250 + rng.normal(0, 0.05, n), 0, 1)
    pd.DataFrame({"case_id": ids, "dice": dice, "iou": dice / (2 - dice), "precision": dice, "recall": dice}).to_csv(
        tmp_path / "per_case.csv", index=False)
    (tmp_path / "ct.nii.gz").write_bytes(b"")
    pd.DataFrame({"case_id": ids, "ct": "ct.nii.gz", "lesion_class": rng.choice(["thymoma_AB", "lymphoma"], n),
                  "diameter_mm": diam, "vendor": rng.choice(["GE", "Siemens"], n)}).to_csv(tmp_path / "m.csv", index=False)
    pd.DataFrame({"case_id": ids, "reader": "1", "original_shape_VoxelVolume": diam ** 3,
                  "original_firstorder_Mean": rng.normal(40, 5, n)}).to_csv(tmp_path / "f.csv", index=False)
    assert main(["seg-stats", "--per-case", str(tmp_path / "per_case.csv"), "--manifest", str(tmp_path / "m.csv"),
                 "--features", str(tmp_path / "f.csv"), "--out", str(tmp_path / "o")]) == 0
    res = json.loads((tmp_path / "o" / "seg_stats.json").read_text())
    d = res["summary"][0]
    lo, hi = stats.t.interval(0.95, n - 1, loc=dice.mean(), scale=stats.sem(dice))
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((lo, hi)) and d["sd"] == pytest.approx(dice.std(ddof=1))
    big = [r for r in res["subgroups"]["size_group"] if r["subgroup"] == "> 8 cm" and r["metric"] == "dice"][0]
    assert big["n"] == int((diam > 80).sum()) and big["mean"] == pytest.approx(dice[diam > 80].mean())
    assert {r["subgroup"] for r in res["subgroups"]["vendor"]} == {"GE", "Siemens"}
    fa = res["failure_analysis"]
    vol = [r for r in fa["features"] if r["feature"] == "original_shape_VoxelVolume"][0]
    order = np.argsort(dice, kind="mergesort")
    ref = stats.mannwhitneyu((diam ** 3)[order[-4:]], (diam ** 3)[order[:4]], alternative="two-sided")
    assert fa["n_per_group"] == 4 and vol["p"] == pytest.approx(ref.pvalue)
    assert "dice:" in capsys.readouterr().out
