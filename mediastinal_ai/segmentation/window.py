"""Sliding-window inference with Gaussian blending, without importing MONAI.

Why: ``segment`` used ``monai.inferers.sliding_window_inference``, and importing ``monai`` loads
its whole package (torchvision, torch._dynamo, its transforms): 1.5–2.5 s and ≈ 350 MB of a
whole-chest run whose network part takes about 1 s (issue 17). This module computes the same
thing for the one case ``segment`` needs — windows of ``roi`` voxels on a grid at least as large
as ``roi``, Gaussian importance (σ = 0.125 · window size, floored at max(min weight, 1e-3)),
the grid of window starts MONAI uses (step ``int(roi · (1 − overlap))``, the last window flush
with the far edge), windows batched in row-major order, and the same order of float32
operations — so its output equals MONAI's bit for bit (Testing/test_sliding_window.py compares
them). Training (train.py) still uses MONAI, which stays a dependency.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import product
from typing import Any


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Start indices along one axis: evenly stepped, the last one flush with the far edge."""
    if roi >= size:
        return [0]
    step = max(1, int(roi * (1 - overlap)))
    n = next(d for d in range(size) if d * step + roi >= size) + 1
    return [min(d * step, size - roi) for d in range(n)]


def gaussian_importance(roi: Sequence[int], sigma_scale: float = 0.125) -> Any:
    """Separable Gaussian weight of one window (float32, peak 1 at the centre), floored so that
    the corners of a window still count (the floor is the smallest weight, at least 1e-3)."""
    import torch

    w = None
    for n in roi:
        x = torch.arange(-(n - 1) / 2.0, (n - 1) / 2.0 + 1, dtype=torch.float)
        g = torch.exp(x ** 2 / (-2 * (n * sigma_scale) ** 2))
        w = g if w is None else w.unsqueeze(-1) * g
    floor = max(float(w.min()), 1e-3)
    return torch.clamp_(w, min=floor)


def sliding_window(inputs: Any, roi: Sequence[int], batch: int, predictor: Callable[[Any], Any], *,
                   overlap: float = 0.5, sw_device: Any = "cpu", device: Any = "cpu") -> Any:
    """Gaussian-blended ``predictor`` output over ``inputs`` (``1 × C × Z × Y × X``, every spatial
    size at least ``roi``; the caller pads). Windows are moved to ``sw_device`` in batches of
    ``batch``; the blended output and the weight sum live on ``device`` (so a GPU never holds
    the output volume)."""
    import torch

    if inputs.ndim != 2 + len(roi) or inputs.shape[0] != 1:
        raise ValueError(f"inputs must be 1 x C x spatial ({len(roi)} axes), got {tuple(inputs.shape)}")
    size = tuple(int(s) for s in inputs.shape[2:])
    roi = tuple(int(r) for r in roi)
    if any(s < r for s, r in zip(size, roi)):
        raise ValueError(f"inputs {size} smaller than the window {roi}: pad them first")
    starts = list(product(*(window_starts(s, r, overlap) for s, r in zip(size, roi))))
    boxes = [(slice(None), slice(None), *(slice(a, a + r) for a, r in zip(st, roi))) for st in starts]
    w = gaussian_importance(roi).to(sw_device)[None, None]
    w_out = w.to(device)
    out = count = None
    for b0 in range(0, len(boxes), batch):
        group = boxes[b0:b0 + batch]
        x = torch.cat([inputs[bx] for bx in group]).to(sw_device) if len(group) > 1 else inputs[group[0]].to(sw_device)
        y = predictor(x)
        if out is None:  # the output's channels are the predictor's
            out = torch.zeros((1, y.shape[1], *size), dtype=inputs.dtype, device=device)
            count = torch.zeros((1, 1, *size), dtype=inputs.dtype, device=device)
            for bx in boxes:
                count[bx] += w_out
        y *= w.to(dtype=inputs.dtype)
        y = y.to(device)
        for bx, yi in zip(group, y):
            out[bx] += yi
    out /= count
    return out
