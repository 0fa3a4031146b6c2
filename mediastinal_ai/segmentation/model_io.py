"""Segmentation weights (safetensors) + model card; loading refuses tampered or wrong-shaped files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..models import ModelCard, ResolvedModel, write_card_for
from .plan import Plan


@dataclass
class SegmentationModel:
    net: Any  # UNet3D in eval mode
    plan: Plan
    card: ModelCard
    label: str
    device: str = "cpu"


def save_model(net: Any, plan: Plan, weights_path: str | Path, card: ModelCard) -> Path:
    from safetensors.torch import save_file

    from ..fileio import atomic_path

    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    with atomic_path(weights_path) as tmp:
        save_file(state, str(tmp), metadata={"format": "mediastinal-ai-segmentation"})
    card.architecture = {"name": "UNet3D", "levels": 4, "features": list(plan.features), "block": "conv-BN-ReLU x2",
                         "down": "max-pool", "up": "transposed conv", "init": "Glorot (Xavier) uniform",
                         "output": "1 channel, sigmoid"}
    card.preprocessing = {"plan": plan.to_dict()}
    card.classes = ["background", "anterior mediastinal tumor"]
    return write_card_for(weights_path, card)


def pick_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("device 'cuda' requested but no CUDA GPU is available")
    return device


def load_model(resolved: ResolvedModel, device: str = "auto") -> SegmentationModel:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .network import UNet3D

    card = resolved.card
    if card.task != "segmentation":
        raise ModelError(f"{card.name!r} is a {card.task!r} model, not a segmentation model", resolved.card_path)
    plan = Plan.from_dict(card.preprocessing.get("plan", {}))
    try:
        state = load_file(str(resolved.weights_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(f"cannot read the weights as safetensors ({e})", resolved.weights_path) from e
    net = UNet3D(plan.features, decoder=plan.decoder)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise ModelError(f"weights do not fit the network in the model card ({first})", resolved.weights_path) from e
    dev = pick_device(device)
    net.to(dev).eval()
    return SegmentationModel(net=net, plan=plan, card=card, label=resolved.label, device=dev)
