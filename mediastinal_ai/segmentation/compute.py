"""How much arithmetic a segmentation config asks for, and a plain note when it is GPU-scale
but about to run on a CPU (issue 18 item 5: the paper config ran 7 min on a CPU without
finishing one epoch, and said nothing).

The figures are floating-point operations of the 3D U-Net counted by torch's own
``FlopCounterMode`` on meta tensors (no memory, no compute), times the work a run does
(training: forward + backward ≈ 3 × forward, per patch, per batch, per iteration; inference:
sliding windows × test-time passes). Dividing by :data:`CPU_FLOPS` (the rate measured for
inference) gives a LOWER bound on the CPU time: backward passes run slower, and data loading,
augmentation and validation come on top. The progress bar's ETA then measures the real rate.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

CPU_FLOPS = 2.0e11  # FLOP/s: what inference of the paper network reached on the 2-core dev machine
#                    (benchmarks/README.md: 12 windows × 336 GFLOP in 20.8 s); training runs slower
GPU_FLOPS = 3.0e13  # FLOP/s: a rough sustained rate of one current data-centre GPU (mixed precision)
GPU_SCALE_SECONDS = 2 * 3600.0  # a run whose CPU lower bound exceeds this is called GPU-scale


def unet_flops(features: tuple[int, ...], patch_zyx: tuple[int, ...]) -> float | None:
    """The same count as :func:`forward_flops`, from the architecture (network.py) in closed form:
    2 · C_in · C_out · kernel voxels per output voxel of every convolution (per *input* voxel of a
    transposed one), bias and the rest not counted, as torch's counter does. ``None`` for a
    patch the 3 poolings do not divide (the network needs one that they do).

    Why: tracing the network under ``FlopCounterMode`` took 1.8 s of every ``segment`` run, for
    a note that is printed only for slow runs (issue 17); tested equal to the traced count."""
    if len(features) != 4 or any(int(p) % 8 for p in patch_zyx):
        return None
    f = [int(x) for x in features]
    vol = [float(np.prod([int(p) // 2 ** lv for p in patch_zyx])) for lv in range(4)]

    def block(cin: int, cout: int, v: float) -> float:
        return 2.0 * 27 * v * (cin * cout + cout * cout)

    total = block(1, f[0], vol[0]) + block(f[0], f[1], vol[1]) + block(f[1], f[2], vol[2]) + block(f[2], f[3], vol[3])
    for i in (2, 1, 0):
        total += 2.0 * 8 * f[i + 1] * f[i] * vol[i + 1]  # transposed conv 2x2x2, stride 2
        total += block(2 * f[i], f[i], vol[i])
    return total + 2.0 * f[0] * vol[0]  # 1x1x1 head, one output channel


@lru_cache(maxsize=16)
def forward_flops(features: tuple[int, ...], patch_zyx: tuple[int, ...]) -> float:
    """FLOPs of one forward pass of ``UNet3D(features)`` on one patch (batch 1)."""
    closed = unet_flops(features, patch_zyx)
    if closed is not None:
        return closed
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .network import UNet3D

    with torch.device("meta"):
        net = UNet3D(tuple(int(f) for f in features))
        x = torch.empty(1, 1, *(int(p) for p in patch_zyx))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(x)
    return float(counter.get_total_flops())


def _hours(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def training_estimate(config: dict[str, Any], epochs: int | None = None, batch_size: int | None = None) -> dict[str, Any]:
    """Arithmetic of a training run of ``config`` (a segmentation YAML as a dict)."""
    plan, t = config["plan"], config.get("training", {})
    epochs = int(epochs or t.get("epochs", 30))
    bs = int(batch_size or t.get("batch_size", 3))
    iters = int(t.get("iterations_per_epoch", 50))
    fwd = forward_flops(tuple(plan["features"]), tuple(plan["patch_size_zyx"]))
    per_epoch = 3.0 * fwd * bs * iters
    return {"forward_gflop_per_patch": round(fwd / 1e9, 1), "tflop_per_epoch": round(per_epoch / 1e12, 2),
            "epochs": epochs, "cpu_seconds_per_epoch_at_least": per_epoch / CPU_FLOPS,
            "cpu_seconds_at_least": per_epoch * epochs / CPU_FLOPS,
            "gpu_seconds_roughly": per_epoch * epochs / GPU_FLOPS}


def training_note(config: dict[str, Any], device: str, *, name: str = "this config", epochs: int | None = None,
                  batch_size: int | None = None) -> str | None:
    """A note for the user when training ``config`` on ``device`` == 'cpu' is GPU-scale, else None."""
    if device != "cpu":
        return None
    e = training_estimate(config, epochs, batch_size)
    if e["cpu_seconds_at_least"] < GPU_SCALE_SECONDS:
        return None
    return (f"note: {name} is GPU-scale: {e['tflop_per_epoch']} TFLOP per epoch × {e['epochs']} epochs "
            f"({e['forward_gflop_per_patch']} GFLOP per forward patch). On this CPU that is at least "
            f"{_hours(e['cpu_seconds_per_epoch_at_least'])} per epoch and {_hours(e['cpu_seconds_at_least'])} in all "
            f"(a GPU: roughly {_hours(e['gpu_seconds_roughly'])}). Train on a CUDA GPU (--device cuda), or use "
            "--config segmentation_demo / fewer --epochs for a CPU run.")


def inference_estimate(plan: Any, shape_at_plan_zyx: tuple[int, ...], passes: int = 1,
                       overlap: float = 0.5) -> dict[str, Any]:
    """Windows and arithmetic of segmenting a volume of ``shape_at_plan_zyx`` voxels (at the plan's spacing)."""
    from .inference import _n_windows

    patch = tuple(int(p) for p in plan.patch_size_zyx)
    shape = tuple(max(int(s), p) for s, p in zip(shape_at_plan_zyx, patch))
    windows = _n_windows(shape, patch, overlap) * max(1, int(passes))
    flops = windows * forward_flops(tuple(plan.features), patch)
    return {"windows": windows, "tflop": round(flops / 1e12, 2), "cpu_seconds_at_least": flops / CPU_FLOPS}


def inference_note(plan: Any, ct: Any, device: str, passes: int = 1, limit_s: float = 120.0) -> str | None:
    """A note when segmenting ``ct`` (whole volume: an upper bound, the mediastinal crop is smaller)
    on a CPU takes at least ``limit_s``; None otherwise."""
    if device != "cpu":
        return None
    ext = [n * s for n, s in zip(ct.shape, tuple(ct.spacing_xyz)[::-1])]
    sp = tuple(plan.target_spacing_xyz)[::-1]
    shape = tuple(max(1, int(round(e / s))) for e, s in zip(ext, sp))
    e = inference_estimate(plan, shape, passes)
    if e["cpu_seconds_at_least"] < limit_s:
        return None
    return (f"note: segmenting this CT with this model on a CPU takes a while: up to {e['windows']} windows, "
            f"{e['tflop']} TFLOP, at least about {_hours(e['cpu_seconds_at_least'])} (less when cropped to the "
            "mediastinum); a CUDA GPU (--device cuda) takes seconds.")
