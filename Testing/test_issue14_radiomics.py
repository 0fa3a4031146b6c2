"""Issue 14, radiomics: intra- beside inter-observer ICC (both > 0.85), selectable ICC form
checked against an independent one-way ANOVA (scipy), F1 in the metrics table, LASSO path and
CV-error plots from what LassoCV computed, and the feature count of the shipped parameter files
against pyradiomics' own feature lists (vs the study's 1,743)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], float)


def test_icc_1_1_equals_one_way_anova_from_scipy():
    from mediastinal_ai.radiomics.stability import ICC_KINDS, icc

    rng = np.random.default_rng(0)
    for y in (SHROUT_FLEISS, rng.normal(size=(25, 2)) + rng.normal(size=(25, 1)) * 2):
        k = y.shape[1]
        f = stats.f_oneway(*y).statistic  # groups = cases: F = BMS / WMS
        assert icc(y, "1,1") == pytest.approx((f - 1) / (f + k - 1), rel=1e-10)
    assert round(icc(SHROUT_FLEISS, "1,1"), 2) == 0.17  # Shrout & Fleiss' Table 4
    assert set(ICC_KINDS) == {"1,1", "2,1", "3,1"}
    with pytest.raises(ValueError, match="unknown ICC kind"):
        icc(SHROUT_FLEISS, "2,k")


def _tables(seed=1, n=40, p=6):
    rng = np.random.default_rng(seed)
    ids = [f"c{i:03d}" for i in range(n)]
    X = pd.DataFrame(rng.normal(size=(n, p)), index=ids, columns=[f"f{i}" for i in range(p)])
    r2 = X + 0.1 * rng.normal(size=X.shape)
    rep = X + 0.1 * rng.normal(size=X.shape)
    return X, r2, rep, rng


def test_feature_kept_only_when_inter_and_intra_observer_icc_exceed_085():
    from mediastinal_ai.radiomics.selection import StableFeatureSelector
    from mediastinal_ai.radiomics.stability import feature_icc

    X, r2, rep, rng = _tables()
    r2["f0"] = rng.normal(size=len(r2))  # readers disagree on f0
    rep["f1"] = rng.normal(size=len(rep))  # reader 1 does not repeat f1
    y = np.array([0, 1] * 20)
    sel = StableFeatureSelector(reader2=r2, reader1_repeat=rep).fit(X, y)
    assert "f0" not in sel.columns_ and "f1" not in sel.columns_ and {"f2", "f3"} <= set(sel.columns_)
    inter, intra = feature_icc(X, r2), feature_icc(X, rep)
    assert sel.columns_ == [c for c in X.columns if inter[c] > 0.85 and intra[c] > 0.85]
    only_inter = StableFeatureSelector(reader2=r2).fit(X, y)
    assert "f1" in only_inter.columns_ and only_inter.icc_intra_ == {}
    c31 = StableFeatureSelector(reader2=r2, icc_kind="3,1").fit(X, y)
    assert c31.icc_["f2"] == pytest.approx(float(feature_icc(X, r2, "3,1")["f2"]))
    assert sel.forget_reader2().reader1_repeat is None


def test_manifest_repeat_column_and_extract_readers(tmp_path):
    from mediastinal_ai.cohort import read_manifest

    (tmp_path / "ct.nii.gz").write_bytes(b"")
    (tmp_path / "m1.nii.gz").write_bytes(b"")
    (tmp_path / "m1r.nii.gz").write_bytes(b"")
    (tmp_path / "m.csv").write_text("case_id,ct,mask,mask_reader1_repeat\nc1,ct.nii.gz,m1.nii.gz,m1r.nii.gz\n")
    c = read_manifest(tmp_path / "m.csv")[0]
    assert c.mask_reader1_repeat is not None and c.mask_reader1_repeat.name == "m1r.nii.gz"
    from mediastinal_ai.radiomics.extract import READER_COLUMNS

    assert READER_COLUMNS["1r"] == "mask_reader1_repeat"


def test_f1_in_the_radiomics_metrics_table():
    from sklearn.metrics import f1_score

    from mediastinal_ai.radiomics.stats import binary_metrics
    from mediastinal_ai.radiomics.train import metrics_table

    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 80)
    p = np.clip(y * 0.3 + rng.random(80) * 0.7, 0, 1)
    m = binary_metrics(y, p, 0.5)
    assert m["f1"]["value"] == pytest.approx(f1_score(y, p >= 0.5))
    assert m["f1"]["k"] / m["f1"]["n"] == pytest.approx(m["f1"]["value"])
    table = metrics_table({"models": {"svm": {"name": "SVM (RBF)", "cv_auc_train": m["auc"], "test": m}}})
    assert table.splitlines()[0].endswith("| F1 |") and f"{m['f1']['value']:.3f}" in table.splitlines()[2]


def test_lasso_path_and_cv_error_come_from_lassocv(tmp_path):
    from sklearn.linear_model import LassoCV, lasso_path
    from sklearn.model_selection import StratifiedKFold

    from mediastinal_ai.radiomics.plots import plot_lasso
    from mediastinal_ai.radiomics.selection import LassoSelector

    rng = np.random.default_rng(3)
    X = rng.normal(size=(80, 12))
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(0, 1, 80) > 0).astype(int)
    sel = LassoSelector(cv=5, random_state=0).fit(X, y)
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(X, y))
    ref = LassoCV(cv=folds, random_state=0, max_iter=5000).fit(X, y.astype(float))
    assert np.allclose(sel.mse_path_, ref.mse_path_) and sel.alpha_ == pytest.approx(ref.alpha_)
    _, coefs, _ = lasso_path(X, y.astype(float), alphas=ref.alphas_, max_iter=5000)
    assert np.allclose(sel.coef_path_, coefs[sel.path_features_])
    assert 0 in sel.path_features_ and 0 in sel.support_
    fig = plot_lasso(sel, [f"feat{i}" for i in range(12)], synthetic=True)
    assert len(fig.axes) == 2 and "SYNTHETIC" in fig._suptitle.get_text()
    from mediastinal_ai.evaluation.plots import save_figure

    assert all(p.stat().st_size > 1000 for p in save_figure(fig, tmp_path / "lasso"))


def _n_features(params: dict) -> int:
    from radiomics import getFeatureClasses

    classes = getFeatureClasses()
    enabled = {n: sum(1 for deprecated in c.getFeatureNames().values() if not deprecated) for n, c in classes.items()}
    per_type = sum(enabled[n] for n in params["featureClass"] if n != "shape")
    types = 0
    for name, cfg in params["imageType"].items():
        if name == "LoG":
            types += len((cfg or {}).get("sigma", []))
        elif name == "Wavelet":
            types += 8
        else:
            types += 1
    return (enabled["shape"] if "shape" in params["featureClass"] else 0) + types * per_type, types


def test_paper_parameter_feature_count_versus_the_studys_1743():
    pytest.importorskip("radiomics")
    from mediastinal_ai.radiomics.params import load_params

    n, types = _n_features(load_params("paper"))
    # what the YAML comment and docs/radiomics.md state, recomputed from pyradiomics' feature lists
    assert (n, types) == (1688, 18)
    # the study's 1,743 = 14 shape + 19 image types × (18 first-order + 73 texture); pyradiomics 3.1
    # gives 75 texture features per image type, so no image-type list reproduces 1,743 exactly
    assert all(_n_features({"featureClass": {"shape": None, "firstorder": None, "glcm": None, "glrlm": None,
                                             "glszm": None, "gldm": None, "ngtdm": None},
                            "imageType": {"Original": {}, "LoG": {"sigma": [1.0] * k}, "Wavelet": {}}})[0] != 1743
               for k in range(1, 12))
