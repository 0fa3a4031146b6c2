"""Grad-CAM (Selvaraju et al. 2017) on torch hooks, for the predicted risk group.

The target is the high-risk logit when the model predicts high, and its negative when it
predicts low, so the map always shows the evidence for the group the model chose. Channel
weights are the spatially averaged gradients at ``module`` (the backbone's last feature map,
:func:`mediastinal_ai.cnn.backbones.target_module`); the weighted sum goes through ReLU, is
upsampled bilinearly to the input size and scaled to [0, 1].
"""

from __future__ import annotations

from typing import Any

import numpy as np


def grad_cam(net: Any, x: Any, module: Any) -> tuple[np.ndarray, float]:
    """(heat map (S, S) in [0, 1], P(high risk)) for one input ``x`` of shape (1, C, S, S)."""
    import torch
    import torch.nn.functional as F

    from .backbones import logits_of

    net.eval()
    store: dict[str, Any] = {}

    def hook(_m: Any, _inp: Any, out: Any) -> None:
        store["act"] = out
        if out.requires_grad:
            out.register_hook(lambda g: store.__setitem__("grad", g))

    handle = module.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            xg = x.detach().clone().requires_grad_(True)  # gradients flow even with frozen weights
            logit = logits_of(net(xg)).reshape(-1)[0]
            sign = 1.0 if float(logit.detach()) >= 0 else -1.0
            (sign * logit).backward()
    finally:
        handle.remove()
    if "act" not in store or "grad" not in store:
        raise RuntimeError("Grad-CAM layer was not reached by the forward pass")
    act, grad = store["act"].detach(), store["grad"].detach()
    weights = grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * act).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[0, 0]
    hi = float(cam.max())
    cam = cam / hi if hi > 0 else torch.zeros_like(cam)
    net.zero_grad(set_to_none=True)
    return cam.cpu().numpy().astype(np.float32), float(torch.sigmoid(logit.detach()))
