"""CT + circulating tumor cell fusion (DMFN): benign/malignant and lesion class from a 2D CT
ROI (RegNet) fused with the CTC level and optional clinical inputs (fully connected branch).

Importing this package does not import torch; the network is built on first use.
See ``docs/fusion.md``.
"""

from __future__ import annotations

from .model_io import FusionModel, check_classes, load_model, save_model
from .predict import get_model, predict_fusion, result_rows, validate_for_model
from .schema import CTC_HARD_MAX, ValidatedInputs, validate_inputs

__all__ = [
    "CTC_HARD_MAX", "FusionModel", "ValidatedInputs", "check_classes", "get_model", "load_model",
    "predict_fusion", "result_rows", "save_model", "validate_for_model", "validate_inputs",
]
