"""The DMFN network: RegNet image branch + fully connected tabular branch → fused → two heads.

::

    ROI (1×S×S, CT window W350/L50 → [0, 1])
        └─ grey → 3 channels, ImageNet mean/std ─ RegNet stem + trunk ─ global avg pool ─ f_img (C)
    tabular features (schema.encode: CTC z-score, age z + missing flag, sex / site one-hot + missing flag)
        └─ Linear(F, 32) ─ ReLU ─ Dropout ─ Linear(32, 32) ─ ReLU ─ f_tab (32)
    concat(f_img, f_tab) ─ Linear(C+32, 64) ─ ReLU ─ Dropout ─┬─ head_binary: Linear(64, 2)  (benign, malignant)
                                                             └─ head_class:  Linear(64, K)  (card's classes)

The CT-only baseline is the same class with ``n_tabular=0``: no tabular branch, the fusion
layer sees ``f_img`` alone. Softmax is applied at prediction time (the losses take logits).

Image branch: torchvision's RegNet. ``{"preset": "regnet_y_400mf"}`` (4.3 M parameters, the
default for real data) or any RegNet design space point ``{"depth", "w_0", "w_a", "w_m",
"group_width", "se_ratio"}`` (torchvision ``BlockParams.from_init_params``) — the demo models use
:data:`TINY_REGNET` (a 6-block RegNetY, ~0.23 M parameters) so that they are small enough to
commit and train on a CPU. Weights are random-initialised (torchvision's RegNet init): ImageNet
weights cannot be downloaded at run time.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

PRESETS = ("regnet_y_400mf", "regnet_x_400mf", "regnet_y_800mf", "regnet_x_800mf")
TINY_REGNET: dict[str, Any] = {"depth": 6, "w_0": 16, "w_a": 16.0, "w_m": 2.0, "group_width": 8, "se_ratio": 0.25}
DEFAULT_REGNET: dict[str, Any] = {"preset": "regnet_y_400mf"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_regnet(cfg: dict[str, Any]) -> nn.Module:
    import torchvision.models as tvm
    from torchvision.models.regnet import BlockParams, RegNet

    if "preset" in cfg:
        name = cfg["preset"]
        if name not in PRESETS:
            raise ValueError(f"unknown RegNet preset {name!r}; choose from {', '.join(PRESETS)}")
        return getattr(tvm, name)(weights=None)
    keys = ("depth", "w_0", "w_a", "w_m", "group_width", "se_ratio")
    missing = [k for k in keys if k not in cfg]
    if missing:
        raise ValueError(f"RegNet config lacks {missing}")
    bp = BlockParams.from_init_params(**{k: cfg[k] for k in keys})
    return RegNet(bp, norm_layer=partial(nn.BatchNorm2d, eps=1e-5, momentum=0.1))


class DMFN(nn.Module):
    def __init__(self, n_classes: int, n_tabular: int, regnet: dict[str, Any] | None = None,
                 tab_hidden: int = 32, fusion_hidden: int = 64, dropout: float = 0.2):
        super().__init__()
        if n_classes < 2:
            raise ValueError("the multi-class head needs at least 2 classes")
        rn = build_regnet(regnet or DEFAULT_REGNET)
        self.stem, self.trunk, self.pool = rn.stem, rn.trunk_output, rn.avgpool
        self.image_features = rn.fc.in_features
        self.n_tabular = n_tabular
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if n_tabular > 0:
            self.tabular = nn.Sequential(
                nn.Linear(n_tabular, tab_hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                nn.Linear(tab_hidden, tab_hidden), nn.ReLU(inplace=True))
            fused_in = self.image_features + tab_hidden
        else:
            self.tabular = None
            fused_in = self.image_features
        self.fusion = nn.Sequential(nn.Linear(fused_in, fusion_hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.head_binary = nn.Linear(fusion_hidden, 2)
        self.head_class = nn.Linear(fusion_hidden, n_classes)

    def forward(self, image: torch.Tensor, tabular: torch.Tensor | None = None,
                image_keep: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of both heads. ``image_keep`` (B,) of 0/1, training only: modality dropout —
        samples with 0 have their image features zeroed, so the fused layers must also learn
        from the tabular branch."""
        if image.ndim != 4 or image.shape[1] != 1:
            raise ValueError(f"expected a grey ROI batch (B, 1, H, W), got {tuple(image.shape)}")
        x = (image.expand(-1, 3, -1, -1) - self.mean) / self.std
        f = self.pool(self.trunk(self.stem(x))).flatten(1)
        if image_keep is not None:
            f = f * image_keep.to(f.dtype).view(-1, 1)
        if self.tabular is not None:
            if tabular is None or tabular.ndim != 2 or tabular.shape[1] != self.n_tabular:
                got = None if tabular is None else tuple(tabular.shape)
                raise ValueError(f"expected tabular features (B, {self.n_tabular}), got {got}")
            f = torch.cat([f, self.tabular(tabular)], dim=1)
        h = self.fusion(f)
        return self.head_binary(h), self.head_class(h)


# ---------------------------------------------------------------------------- losses
def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample Shannon entropy (nats) of softmax(logits)."""
    logp = torch.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum(dim=1)


def head_loss(logits: torch.Tensor, target: torch.Tensor, kind: str = "ce", beta: float = 0.1,
              weight: torch.Tensor | None = None) -> torch.Tensor:
    """Loss of one head.

    ``"ce"``: cross-entropy. ``"neutral"``: the entropy-regularised ("neutral") variant,
    ``CE − β·H(softmax(logits))`` averaged over the batch — the confidence penalty of
    Pereyra et al. (2017), which pulls over-confident outputs toward the neutral (uniform)
    distribution. Samples whose target is -1 (class not in the model) are ignored.
    """
    keep = target >= 0
    if not bool(keep.any()):
        return logits.sum() * 0.0
    logits, target = logits[keep], target[keep]
    ce = nn.functional.cross_entropy(logits, target, weight=weight)
    if kind == "ce":
        return ce
    if kind == "neutral":
        return ce - beta * entropy(logits).mean()
    raise ValueError(f"unknown loss {kind!r}; choose 'ce' or 'neutral'")
