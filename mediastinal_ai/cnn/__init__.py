"""WHO-risk (low vs high) from a 2D CNN on the tumor ROI, with Grad-CAM. Torch loads lazily."""

from .backbones import BACKBONES, build, spec
from .model import CLASSES, CnnModel, dataset_from_manifest, load_model, predict_risk, roi_recipe, train_cnn

__all__ = ["BACKBONES", "CLASSES", "CnnModel", "build", "dataset_from_manifest", "load_model", "predict_risk",
           "roi_recipe", "spec", "train_cnn"]
