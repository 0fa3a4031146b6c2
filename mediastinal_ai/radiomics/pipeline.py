"""The radiomics model as ONE imbalanced-learn pipeline:

    ICC > 0.85 stability filter (inter- and intra-observer) → median imputation → Pearson abs(r) > 0.9 redundancy
    filter → standardisation → LASSO (5-fold CV) selection → SMOTE 1:1 → classifier

Because every step lives in the pipeline, ``cross_val_predict`` and the held-out test refit
the whole chain on training data only: no selection, scaling or oversampling ever sees the
evaluated cases. SMOTE only acts in ``fit`` (imblearn samplers are skipped at predict time).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .selection import CorrelationFilter, LassoSelector, StableFeatureSelector

CLASSIFIERS = ("svm", "logistic", "knn", "extratrees", "mlp")
CLASSIFIER_NAMES = {"svm": "SVM (RBF)", "logistic": "Logistic regression", "knn": "k-nearest neighbours",
                    "extratrees": "Extra trees", "mlp": "Multilayer perceptron"}


def make_classifier(name: str, random_state: int = 0) -> Any:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import ExtraTreesClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC

    if name == "svm":
        # Platt-scaled probabilities (scikit-learn ≥ 1.9 deprecates SVC(probability=True) for this):
        # the sigmoid is fitted on 5-fold out-of-fold decision values, then one SVC on all rows.
        return CalibratedClassifierCV(SVC(kernel="rbf", C=1.0, gamma="scale"), method="sigmoid", cv=5,
                                      ensemble=False)
    if name == "logistic":
        return LogisticRegression(C=1.0, max_iter=2000)
    if name == "knn":
        return KNeighborsClassifier(n_neighbors=7)
    if name == "extratrees":
        return ExtraTreesClassifier(n_estimators=200, min_samples_leaf=2, random_state=random_state, n_jobs=1)
    if name == "mlp":
        return MLPClassifier(hidden_layer_sizes=(16,), alpha=1e-2, max_iter=3000, random_state=random_state)
    raise ValueError(f"unknown classifier {name!r}; choose from {CLASSIFIERS}")


def build_pipeline(classifier: str = "svm", *, reader2: Any = None, icc_threshold: float = 0.85,
                   corr_threshold: float = 0.9, lasso_cv: int = 5, max_features: int | None = None,
                   smote_k: int = 3, random_state: int = 0, reader1_repeat: Any = None,
                   icc_kind: str = "2,1") -> Any:
    """The full model; fit it on a reader-1 DataFrame indexed by case id and 0/1 labels."""
    from imblearn.over_sampling import SMOTE
    from imblearn.pipeline import Pipeline
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    return Pipeline([
        ("stable", StableFeatureSelector(reader2=reader2, threshold=icc_threshold, reader1_repeat=reader1_repeat,
                                         icc_kind=icc_kind)),
        ("impute", SimpleImputer(strategy="median")),
        ("decorrelate", CorrelationFilter(threshold=corr_threshold)),
        ("scale", StandardScaler()),
        ("lasso", LassoSelector(cv=lasso_cv, max_features=max_features, random_state=random_state)),
        ("smote", SMOTE(sampling_strategy="auto", k_neighbors=smote_k, random_state=random_state)),
        ("classifier", make_classifier(classifier, random_state)),
    ])


def selected_features(pipe: Any) -> list[str]:
    """Names of the features the fitted pipeline's classifier sees (after LASSO)."""
    names = pipe.named_steps["stable"].get_feature_names_out()
    names = pipe.named_steps["decorrelate"].get_feature_names_out(names)
    return [str(n) for n in pipe.named_steps["lasso"].get_feature_names_out(names)]


def selection_summary(pipe: Any) -> dict[str, Any]:
    st, dc, la = (pipe.named_steps[k] for k in ("stable", "decorrelate", "lasso"))
    return {"n_input": int(st.n_features_in_), "n_stable": len(st.columns_), "n_decorrelated": int(dc.keep_.size),
            "n_selected": int(la.support_.size), "lasso_alpha": la.alpha_, "lasso_fallback": bool(la.fallback_)}


def contributions(pipe: Any, X: Any) -> list[dict[str, Any]]:
    """Per selected feature: its value and contribution to P(high risk) for the ONE row in X.

    Approximation (an RBF SVM has no additive decomposition): the contribution of feature
    *f* is P(high | x) − P(high | x with *f* set to the training mean), computed in the
    standardised LASSO space, where the training mean is 0. Positive = pushes towards high
    risk. Contributions need not sum to P − P(mean case).
    """
    head = pipe[:-2]  # everything before SMOTE and the classifier
    clf = pipe.named_steps["classifier"]
    z = head.transform(X)
    if z.shape[0] != 1:
        raise ValueError("contributions are computed for one case at a time")
    p = float(clf.predict_proba(z)[0, 1])
    names = selected_features(pipe)
    raw = np.asarray(pipe.named_steps["stable"].transform(X))[0]
    stable_names = list(pipe.named_steps["stable"].columns_)
    out = []
    for j, name in enumerate(names):
        zz = z.copy()
        zz[0, j] = 0.0
        out.append({"feature": name, "value": float(raw[stable_names.index(name)]), "standardised": float(z[0, j]),
                    "contribution": p - float(clf.predict_proba(zz)[0, 1])})
    return out
