"""Saving and loading fusion models: safetensors weights + JSON model card.

The weights file's safetensors header also carries the class list, the input schema
(with the normalisation statistics) and the architecture, so the model is self-describing;
on load these must equal the card's, the class list must be known lesion classes, and every
tensor must have the shape the architecture builds — anything else is refused with
:class:`~mediastinal_ai.errors.ModelError`, never silently "fixed".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from ..models.card import ModelCard, ResolvedModel, write_card_for
from ..taxonomy import BY_NAME
from . import schema as sch

log = logging.getLogger(__name__)
FUSION_TASKS = ("fusion", "fusion-ct-only")
HEADER_FORMAT = "mediastinal-ai-fusion"


def check_classes(classes: Any, source: Any = None, expected: list[str] | None = None) -> list[str]:
    """A card's class list: ≥ 2 unique known lesion class names (and equal to ``expected`` if given)."""
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise ModelError(f"model card must list at least two lesion classes, got {classes!r}", source)
    if len(set(classes)) != len(classes):
        raise ModelError(f"model card lists a class twice: {classes}", source)
    unknown = [c for c in classes if c not in BY_NAME]
    if unknown:
        raise ModelError(f"model card names unknown lesion classes {unknown} (known: {', '.join(BY_NAME)})", source)
    if expected is not None and list(expected) != list(classes):
        raise ModelError(f"model classes {classes} do not match the expected classes {list(expected)}", source)
    return list(classes)


@dataclass
class FusionModel:
    """A verified, loaded fusion (or CT-only) model, ready for inference."""

    net: Any  # DMFN
    card: ModelCard
    resolved: ResolvedModel | None
    device: str = "cpu"

    @property
    def task(self) -> str:
        return self.card.task

    @property
    def classes(self) -> list[str]:
        return list(self.card.classes)

    @property
    def schema(self) -> dict[str, Any]:
        return self.card.input_schema

    @property
    def uses_ctc(self) -> bool:
        return self.task == "fusion"

    @property
    def roi(self) -> dict[str, Any]:
        return self.card.preprocessing["roi"]

    @property
    def label(self) -> str:
        if self.resolved is not None:
            return self.resolved.label
        return f"{self.card.name} (unsaved)"

    @property
    def threshold(self) -> float:
        return float(self.card.extra.get("threshold", 0.5))

    def predict_arrays(self, images: np.ndarray, tabular: np.ndarray | None = None,
                       batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """ROI images (N, S, S) in [0, 1] (+ encoded features (N, F)) → (p_malignant (N,), p_class (N, K))."""
        import torch

        images = np.asarray(images, dtype=np.float32)
        size = int(self.roi["size"])
        if images.ndim != 3 or images.shape[1:] != (size, size):
            raise ModelError(f"model {self.card.name!r} expects ROI images of {size}×{size}, got {images.shape}")
        if self.uses_ctc:
            nf = len(self.schema["features"])
            if tabular is None or np.asarray(tabular).shape != (len(images), nf):
                raise ModelError(f"model {self.card.name!r} expects {nf} tabular features per case")
        self.net.eval()
        pm, pc = [], []
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                x = torch.from_numpy(images[i:i + batch_size]).unsqueeze(1).to(self.device)
                t = None if not self.uses_ctc else torch.from_numpy(np.asarray(tabular[i:i + batch_size], np.float32)).to(self.device)
                lb, lc = self.net(x, t)
                pm.append(torch.softmax(lb, 1)[:, 1].cpu().numpy())
                pc.append(torch.softmax(lc, 1).cpu().numpy())
        return np.concatenate(pm).astype(float), np.concatenate(pc).astype(float)


def build_net(card: ModelCard):
    from .net import DMFN

    arch = card.architecture
    n_tab = len(card.input_schema["features"]) if card.task == "fusion" else 0
    try:
        return DMFN(n_classes=len(card.classes), n_tabular=n_tab, regnet=arch.get("regnet"),
                    tab_hidden=int(arch.get("tab_hidden", 32)), fusion_hidden=int(arch.get("fusion_hidden", 64)),
                    dropout=float(arch.get("dropout", 0.2)))
    except (ValueError, TypeError, KeyError) as e:
        raise ModelError(f"cannot build the network the card describes ({e})") from e


def _check_card(card: ModelCard, source: Any, expected_classes: list[str] | None) -> None:
    if card.task not in FUSION_TASKS:
        raise ModelError(f"model {card.name!r} is a {card.task!r} model, not a fusion model", source)
    check_classes(card.classes, source, expected_classes)
    if card.task == "fusion":
        sch.check_schema(card.input_schema, source)
    elif card.input_schema.get("inputs"):
        raise ModelError("a CT-only model must not declare tabular inputs", source)
    roi = card.preprocessing.get("roi") if isinstance(card.preprocessing, dict) else None
    if not roi or "size" not in roi or "window" not in roi:
        raise ModelError("model card lacks the ROI recipe (preprocessing.roi with size and window)", source)


def save_model(net: Any, weights_path: str | Path, card: ModelCard) -> Path:
    """Write ``<name>.safetensors`` (with the card's classes/schema/architecture in its header)
    and ``<name>.model.json`` beside it (sha256 filled). Returns the card path."""
    from ..nn_common import save_safetensors

    _check_card(card, weights_path, None)
    save_safetensors(net.state_dict(), weights_path, metadata={
        "format": HEADER_FORMAT, "task": card.task, "classes": card.classes,
        "input_schema": card.input_schema, "architecture": card.architecture})
    return write_card_for(weights_path, card)


def load_model(resolved: ResolvedModel, device: str = "cpu", expected_classes: list[str] | None = None,
               expected_task: str | None = None) -> FusionModel:
    """Verified model (:func:`mediastinal_ai.models.resolve`) → :class:`FusionModel`; refuses mismatches."""
    from ..nn_common import load_into, read_safetensors

    card, src = resolved.card, resolved.card_path
    if expected_task is not None and card.task != expected_task:
        raise ModelError(f"model {card.name!r} is a {card.task!r} model, not {expected_task!r}", src)
    _check_card(card, src, expected_classes)
    state, meta = read_safetensors(resolved.weights_path)
    if meta.get("format") != HEADER_FORMAT:
        raise ModelError("weights file is not a MediastinalAI fusion model (header lacks its metadata)",
                         resolved.weights_path)
    if meta.get("task") != card.task:
        raise ModelError(f"weights are a {meta.get('task')!r} model but the card says {card.task!r}", src)
    if meta.get("classes") != card.classes:
        raise ModelError(f"class list in the card {card.classes} does not match the weights' {meta.get('classes')}", src)
    if meta.get("input_schema") != card.input_schema:
        raise ModelError("input schema / normalisation statistics in the card do not match the weights' header", src)
    if meta.get("architecture") != card.architecture:
        raise ModelError("architecture in the card does not match the weights' header", src)
    net = build_net(card)
    load_into(net, state, resolved.weights_path)
    net.to(device).eval()
    log.info("loaded %s model %s", card.task, resolved.label)
    return FusionModel(net=net, card=card, resolved=resolved, device=device)
