"""The six published ImageNet backbones (torchvision), each with a one-logit head for
P(high WHO risk), and the layer Grad-CAM reads.

ImageNet weights are never downloaded: ``pretrained=PATH`` loads a torchvision ImageNet state
dict from a local file (``weights_only=True``) before the head is replaced; without it the
network starts from scratch and the model card says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelError


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    input_size: int
    target_layer: str  # module path Grad-CAM hooks


BACKBONES: dict[str, BackboneSpec] = {
    "densenet121": BackboneSpec("densenet121", 224, "features"),
    "resnet101": BackboneSpec("resnet101", 224, "layer4"),
    "inception_v3": BackboneSpec("inception_v3", 299, "Mixed_7c"),
    "vgg11": BackboneSpec("vgg11", 224, "features"),
    "mobilenet_v2": BackboneSpec("mobilenet_v2", 224, "features"),
    "shufflenet_v2_x1_0": BackboneSpec("shufflenet_v2_x1_0", 224, "conv5"),
}


def spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ModelError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}") from None


def build(name: str, pretrained: str | Path | None = None) -> Any:
    """A backbone with a 1-logit head (logit of high WHO risk)."""
    import torch
    from torch import nn
    from torchvision import models

    s = spec(name)
    kw: dict[str, Any] = {"weights": None}
    if name == "inception_v3":
        kw.update(aux_logits=True, init_weights=True)
    net = getattr(models, name)(**kw)
    if pretrained:
        p = Path(pretrained)
        if not p.is_file():
            raise ModelError("pretrained weights file not found", p)
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
            net.load_state_dict(state, strict=True)
        except (RuntimeError, OSError, ValueError, KeyError) as e:
            raise ModelError(f"not a torchvision ImageNet state dict for {name} ({str(e).splitlines()[0]})", p) from e
    if name in ("densenet121",):
        net.classifier = nn.Linear(net.classifier.in_features, 1)
    elif name in ("resnet101", "shufflenet_v2_x1_0"):
        net.fc = nn.Linear(net.fc.in_features, 1)
    elif name == "inception_v3":
        net.fc = nn.Linear(net.fc.in_features, 1)
        net.AuxLogits.fc = nn.Linear(net.AuxLogits.fc.in_features, 1)
    elif name in ("vgg11", "mobilenet_v2"):
        last = net.classifier[-1]
        net.classifier[-1] = nn.Linear(last.in_features, 1)
    net.mediastinal_backbone = s.name  # type: ignore[attr-defined]
    return net


def logits_of(out: Any) -> Any:
    """Inception returns (logits, aux_logits) in training mode; everything else a tensor."""
    return out.logits if hasattr(out, "logits") else out


def target_module(net: Any, name: str) -> Any:
    mod = net
    for part in spec(name).target_layer.split("."):
        mod = getattr(mod, part)
    return mod
