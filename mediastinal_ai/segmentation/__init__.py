"""Anterior mediastinal tumor segmentation with the published 3D U-Net.

Importing this package does not import torch; it is imported when a model is loaded.
"""

from .inference import SegmentationResult, postprocess, segment_volume, write_result
from .model_io import SegmentationModel, load_model, save_model
from .plan import Plan, load_config

__all__ = ["Plan", "SegmentationModel", "SegmentationResult", "load_config", "load_model", "postprocess",
           "save_model", "segment_volume", "write_result"]
