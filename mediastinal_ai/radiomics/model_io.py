"""Saving and loading the radiomics model: skops (never pickle) + a JSON model card.

Loading refuses any type outside :data:`TRUSTED_TYPES` — the types our pipeline is made of,
beyond those skops already trusts — with a :class:`~mediastinal_ai.errors.ModelError`, so a
crafted ``.skops`` file cannot make us instantiate arbitrary classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..fileio import atomic_path

TRUSTED_TYPES = (
    "imblearn.over_sampling._smote.base.SMOTE",
    "imblearn.pipeline.Pipeline",
    "mediastinal_ai.radiomics.selection.CorrelationFilter",
    "mediastinal_ai.radiomics.selection.LassoSelector",
    "mediastinal_ai.radiomics.selection.StableFeatureSelector",
    "numpy.dtype",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.tree._tree.Tree",
)


def save_pipeline(pipe: Any, path: str | Path) -> Path:
    """Write the fitted pipeline with skops, atomically (drops the reader-2 table first)."""
    import skops.io as sio

    stable = pipe.named_steps.get("stable") if hasattr(pipe, "named_steps") else None
    if stable is not None:
        stable.forget_reader2()
    path = Path(path)
    with atomic_path(path) as tmp:
        sio.dump(pipe, tmp)
    return path


def load_pipeline(path: str | Path) -> Any:
    """Load a skops file, refusing every type not in :data:`TRUSTED_TYPES`."""
    import skops.io as sio

    path = Path(path)
    if not path.is_file():
        raise ModelError("model file not found", path)
    try:
        untrusted = sio.get_untrusted_types(file=path)
    except Exception as e:  # noqa: BLE001 - not a skops archive at all
        raise ModelError(f"not a readable skops model file ({type(e).__name__}: {e})", path) from e
    refused = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if refused:
        raise ModelError(f"model file holds types outside the trusted list, refusing to load: {refused}", path)
    try:
        return sio.load(path, trusted=list(untrusted))
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"could not load the model ({type(e).__name__}: {e})", path) from e


class RadiomicsModel:
    """A loaded radiomics model: the fitted pipeline plus its card (parameters, features)."""

    def __init__(self, pipeline: Any, card: Any, label: str = "", sha256: str = "", path: Path | None = None):
        self.pipeline = pipeline
        self.card = card
        self.label = label or card.name
        self.sha256 = sha256 or card.sha256
        self.path = path

    @property
    def params(self) -> dict[str, Any]:
        return self.card.preprocessing["radiomics_params"]

    @property
    def input_features(self) -> list[str]:
        return list(self.card.input_schema["features"])

    @property
    def threshold(self) -> float:
        return float(self.card.extra.get("threshold", 0.5))


def load_model(resolved: Any = None) -> RadiomicsModel:
    """A :class:`RadiomicsModel` from a registry result, a name, a path, or ``None`` (the default)."""
    from ..models import resolve
    from ..models.card import ResolvedModel

    if not isinstance(resolved, ResolvedModel):
        resolved = resolve(resolved, task="risk-radiomics")
    pipe = load_pipeline(resolved.weights_path)
    card = resolved.card
    if "radiomics_params" not in card.preprocessing or "features" not in card.input_schema:
        raise ModelError("radiomics model card lacks preprocessing.radiomics_params or input_schema.features",
                         resolved.card_path)
    return RadiomicsModel(pipe, card, label=resolved.label, sha256=card.sha256, path=resolved.weights_path)
