"""Feature-selection steps of the radiomics pipeline, as scikit-learn transformers.

Each step is fitted inside the one imbalanced-learn ``Pipeline`` (see :mod:`.pipeline`), so
in cross-validation and on the held-out test set every choice (which features are stable,
which are redundant, which LASSO keeps) is made from the training cases alone.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from .stability import feature_icc

log = logging.getLogger(__name__)


class StableFeatureSelector(TransformerMixin, BaseEstimator):
    """Keep features whose inter-observer (reader 1 vs reader 2) **and** intra-observer
    (reader 1 vs reader 1's repeat outline, ``reader1_repeat``) ICC exceed ``threshold`` (0.85),
    as the study did; ``icc_kind`` chooses the ICC form (default "2,1"; the study does not say).

    Leak-free ICC: ``X`` is the reader-1 table as a DataFrame indexed by case id;
    ``reader2`` is the reader-2 table for (a superset of) the same cases. ``fit`` computes
    the ICC on the rows of ``X`` only — in cross-validation that is the training fold, so the
    held-out cases' second-reader masks never influence the choice. ``reader2`` is only
    needed to fit; :meth:`forget_reader2` drops it before the model is saved (the model then
    keeps only the column list and the ICC values). Columns with non-finite values in the
    training rows are dropped too (pyradiomics returns NaN for some features of tiny masks).
    Without ``reader2`` (no second reader) no ICC filter is applied and a warning is logged.
    """

    def __init__(self, reader2: Any = None, threshold: float = 0.85, reader1_repeat: Any = None,
                 icc_kind: str = "2,1"):
        self.reader2 = reader2
        self.threshold = threshold
        self.reader1_repeat = reader1_repeat
        self.icc_kind = icc_kind

    def fit(self, X: Any, y: Any = None) -> StableFeatureSelector:
        import pandas as pd

        if not isinstance(X, pd.DataFrame):
            raise TypeError("StableFeatureSelector needs a DataFrame indexed by case id")
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        finite = np.isfinite(X.to_numpy(float)).all(axis=0)
        cols = [c for c, ok in zip(X.columns, finite) if ok]
        kind = getattr(self, "icc_kind", "2,1")
        repeat = getattr(self, "reader1_repeat", None)
        self.icc_, self.icc_intra_ = {}, {}
        keep = list(cols)
        if self.reader2 is None:
            log.warning("no second-reader features: inter-observer ICC filter skipped")
        else:
            values = feature_icc(X[cols], self.reader2, kind)
            self.icc_ = {str(k): float(v) for k, v in values.items()}
            keep = [c for c in keep if values.get(c, np.nan) > self.threshold]
        if repeat is None:
            if self.reader2 is not None:
                log.info("no repeat outline of reader 1: intra-observer ICC filter skipped")
        else:
            values = feature_icc(X[cols], repeat, kind)
            self.icc_intra_ = {str(k): float(v) for k, v in values.items()}
            keep = [c for c in keep if values.get(c, np.nan) > self.threshold]
        self.columns_ = keep
        if not self.columns_:
            raise ValueError(f"no feature has ICC > {self.threshold} (inter- and intra-observer)")
        return self

    def transform(self, X: Any) -> Any:
        import pandas as pd

        if not isinstance(X, pd.DataFrame):
            raise TypeError("StableFeatureSelector needs a DataFrame with the feature names as columns")
        missing = [c for c in self.columns_ if c not in X.columns]
        if missing:
            raise ValueError(f"{len(missing)} features the model needs are missing, e.g. {missing[:3]}")
        return X[self.columns_].to_numpy(float)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray(self.columns_, dtype=object)

    def forget_reader2(self) -> StableFeatureSelector:
        self.reader2 = None
        self.reader1_repeat = None
        return self


class CorrelationFilter(TransformerMixin, BaseEstimator):
    """Drop redundant features: of each pair with Pearson abs(r) > ``threshold`` keep one.

    Greedy in column order (the extraction order: original image first, then filtered): a
    feature is kept when its abs(r) with every feature kept so far is at most ``threshold``.
    Constant features (r undefined) are dropped.
    """

    def __init__(self, threshold: float = 0.9):
        self.threshold = threshold

    def fit(self, X: Any, y: Any = None) -> CorrelationFilter:
        X = np.asarray(X, float)
        self.n_features_in_ = X.shape[1]
        std = X.std(axis=0)
        ok = np.flatnonzero(std > 1e-12 * (1 + np.abs(X).max(axis=0)))
        if ok.size == 0:
            raise ValueError("all features are constant in the training cases")
        z = (X[:, ok] - X[:, ok].mean(0)) / X[:, ok].std(0)
        r = np.abs(z.T @ z / X.shape[0])
        kept: list[int] = []
        for i in range(ok.size):
            if all(r[i, j] <= self.threshold for j in kept):
                kept.append(i)
        self.keep_ = ok[kept]
        return self

    def transform(self, X: Any) -> np.ndarray:
        return np.asarray(X, float)[:, self.keep_]

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        names = np.asarray(input_features if input_features is not None else
                           [f"x{i}" for i in range(self.n_features_in_)], dtype=object)
        return names[self.keep_]


class LassoSelector(TransformerMixin, BaseEstimator):
    """LASSO feature selection with ``cv``-fold cross-validated alpha (``LassoCV``).

    The study's LASSO is the linear (least-squares) LASSO on the 0/1 label with 5-fold CV
    choosing the penalty, as in glmnet-based radiomics work; the features with a non-zero
    coefficient are kept (input must be standardised, the pipeline's scaler does that).
    ``max_features`` optionally caps the count (largest abs coefficients). If the penalty
    zeroes everything (no signal) the single feature with the largest abs correlation with
    the label is kept so the classifier still has an input; ``fallback_`` records that.
    """

    def __init__(self, cv: int = 5, max_features: int | None = None, random_state: int = 0):
        self.cv = cv
        self.max_features = max_features
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> LassoSelector:
        from sklearn.linear_model import LassoCV
        from sklearn.model_selection import StratifiedKFold

        X = np.asarray(X, float)
        y = np.asarray(y, float)
        self.n_features_in_ = X.shape[1]
        n_min = int(min((y == 0).sum(), (y == 1).sum()))
        folds = StratifiedKFold(n_splits=max(2, min(self.cv, n_min)), shuffle=True, random_state=self.random_state)
        lasso = LassoCV(cv=list(folds.split(X, y)), random_state=self.random_state, max_iter=5000, n_jobs=1)
        lasso.fit(X, y)
        self.alpha_ = float(lasso.alpha_)
        self.coef_ = lasso.coef_.copy()
        # for the coefficient-path and CV-error plots (radiomics.plots): the CV grid, the
        # per-fold MSE and the coefficient path of the features that are ever non-zero on it
        from sklearn.linear_model import lasso_path

        self.alphas_ = np.asarray(lasso.alphas_, float)
        self.mse_path_ = np.asarray(lasso.mse_path_, float)  # (n_alphas, n_folds)
        _, coefs, _ = lasso_path(X, y, alphas=self.alphas_, max_iter=5000)
        ever = np.flatnonzero(np.abs(coefs).max(axis=1) > 0)
        self.path_features_ = ever
        self.coef_path_ = coefs[ever]  # (n_ever_nonzero, n_alphas)
        support = np.flatnonzero(np.abs(self.coef_) > 0)
        self.fallback_ = support.size == 0
        if self.fallback_:
            yc = y - y.mean()
            xc = X - X.mean(0)
            den = np.sqrt((xc**2).sum(0) * (yc**2).sum()) + 1e-12
            support = np.array([int(np.argmax(np.abs(xc.T @ yc) / den))])
        if self.max_features and support.size > self.max_features:
            support = support[np.argsort(-np.abs(self.coef_[support]))[: self.max_features]]
        self.support_ = np.sort(support)
        return self

    def transform(self, X: Any) -> np.ndarray:
        return np.asarray(X, float)[:, self.support_]

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        names = np.asarray(input_features if input_features is not None else
                           [f"x{i}" for i in range(self.n_features_in_)], dtype=object)
        return names[self.support_]
