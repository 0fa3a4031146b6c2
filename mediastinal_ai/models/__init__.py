"""Model cards and the model registry (name → verified weights)."""

from .card import CARD_SUFFIX, ModelCard, ResolvedModel, verify, write_card_for
from .registry import DEFAULT_MODELS, install, list_models, resolve, user_models_dir

__all__ = [
    "CARD_SUFFIX", "DEFAULT_MODELS", "ModelCard", "ResolvedModel", "install", "list_models",
    "resolve", "user_models_dir", "verify", "write_card_for",
]
