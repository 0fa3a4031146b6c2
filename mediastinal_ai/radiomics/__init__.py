"""Radiomics WHO-risk model: pyradiomics features, ICC/Pearson/LASSO selection, SMOTE + SVM.

Heavy packages (pyradiomics, scikit-learn, imbalanced-learn, skops) are imported inside the
functions, so importing this package is cheap. Main entry points:

* :func:`extract_features` (one case), :func:`extract_cohort` (a manifest, parallel, resumable)
* :func:`train_radiomics` (extract + train + evaluate + save with card)
* :func:`predict_risk` (one case → probability of high risk, group, feature contributions)
* :func:`load_model` (registry name/path → :class:`RadiomicsModel`)
* :func:`icc` (ICC(2,1) / ICC(3,1))
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "check_mask": "extract", "extract_cohort": "extract", "extract_features": "extract", "read_table": "extract",
    "RadiomicsModel": "model_io", "load_model": "model_io", "load_pipeline": "model_io",
    "save_pipeline": "model_io", "PAPER_PARAMS": "params", "load_params": "params",
    "predict_risk": "predict", "result_rows": "predict", "icc": "stability",
    "train_models": "train", "train_radiomics": "train",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Lazy exports: scikit-learn and pandas load only when a function is first used."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
