"""Whole-CT inference: resample to the plan's spacing, sliding window with Gaussian blending,
probability back on the CT grid, threshold + components + lesion table."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..anatomy import MIDDLE, ChestAnatomy
from ..errors import InputError
from ..progress import CancelToken, ProgressCallback, check, report
from ..volume import Volume
from .plan import Plan, normalise, resample
from .postprocess import (
    component_box,
    components,
    foreground_box,
    label_boxes,
    lazy_zeros,
    lesion_table,
    restrict_to_box,
)

log = logging.getLogger(__name__)

CROP_MARGIN_MM = 20.0  # context kept around the mediastinum for the network
MIN_INSIDE_FRACTION = 0.5  # a component with less of its volume in the mediastinal envelope is dropped
# Probabilities (and SDs) below this are stored as 0: the map is resampled back to the CT grid only
# around what the network found, which is most of the time of a whole-chest run otherwise (issue 17).
# Every threshold the tools offer (>= 0.01) gives the same mask.
PROBABILITY_FLOOR = 1e-3


@dataclass
class SegmentationResult:
    probability: Volume  # float32 on the CT grid
    mask: Volume  # uint8 on the CT grid (lesions kept after post-processing)
    labels: np.ndarray  # int32 lesion ids
    lesions: list[dict[str, Any]]
    threshold: float
    model_label: str = ""
    model_sha256: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    uncertainty: Volume | None = None  # float32 on the CT grid: SD of the mirrored passes
    anatomy: dict[str, Any] = field(default_factory=dict)  # ChestAnatomy.summary()
    dropped: list[dict[str, Any]] = field(default_factory=list)  # components outside the mediastinum
    warnings: list[str] = field(default_factory=list)
    chest: ChestAnatomy | None = None  # the anatomy itself (saved so re-thresholding drops the same components)


@dataclass
class ProbabilityMaps:
    """What the network says, on the CT's own grid, and where it looked."""

    probability: Volume
    uncertainty: Volume
    anatomy: ChestAnatomy | None
    info: dict[str, Any] = field(default_factory=dict)


def _n_windows(shape: tuple[int, ...], roi: tuple[int, ...], overlap: float) -> int:
    n = 1
    for s, r in zip(shape, roi):
        step = max(1, int(r * (1 - overlap)))
        n *= 1 if s <= r else math.ceil((s - r) / step) + 1
    return n


def check_ct(ct: Volume) -> None:
    a = ct.array
    if ct.units not in ("HU", ""):
        raise InputError(f"expected a CT in HU, got {ct.units!r} values", ct.metadata.get("source"))
    if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
        raise InputError("the CT holds NaN or infinite voxels", ct.metadata.get("source"))
    extent = np.asarray(ct.shape[::-1]) * np.asarray(ct.spacing_xyz)
    if extent.min() < 20:
        raise InputError(f"volume too small to hold a mediastinal tumor ({extent.round(1).tolist()} mm)",
                         ct.metadata.get("source"))


TTA_CHOICES = ("auto", "none", "x", "xy", "xyz")
_AXIS_OF = {"x": 2, "y": 1, "z": 0}  # numpy axis of each canonical direction


def tta_flips(tta: str | bool | None, plan: Plan, device: str) -> list[tuple[int, ...]]:
    """The mirrored passes to average (numpy axes to flip; () is the plain pass).

    ``auto``: the mirrors the network was trained with (``plan.mirror_axes``; none for a network
    trained without mirroring), all combinations (up to 8 passes, as nnU-Net) for demo-scale
    networks or on a GPU, left-right only for a published-size network on a CPU, where 8 passes
    would take minutes. An explicit choice is honoured as given."""
    from itertools import combinations

    if tta is True:
        tta = "auto"
    if tta in (None, False, "none"):
        return [()]
    if tta not in TTA_CHOICES:
        raise InputError(f"tta must be one of {', '.join(TTA_CHOICES)}, got {tta!r}")
    if tta == "auto":
        tta = plan.mirror_axes
        if not (device.startswith("cuda") or plan.features[0] < 32):
            tta = "x" if "x" in tta else ""
    axes = [_AXIS_OF[c] for c in tta]
    return [c for k in range(len(axes) + 1) for c in combinations(axes, k)]


PRECISION_CHOICES = ("auto", "fp32", "bf16", "fp16")
#: windows per network call, by measurement (benchmarks/README.md): the demo network's 84 windows
#: of a real chest crop took 198 / 115 / 63 / 34 s of network time at batch 1 / 2 / 4 / 8 (bf16,
#: 2 shared cores; same masks): its small convolutions fill the cores only in batches. The
#: published network's 48×128×128 windows are wide enough alone: 0.383 / 0.386 / 0.433 s per window
#: at batch 1 / 2 / 4, and `segment` on the real 512×512×300 CT 17.4-20.1 s of network time at
#: batch 1 against 19.6-22.3 s at batch 2 (Xeon with AMX, bf16, fused conv + ReLU, 2 runs each,
#: 2026-12-05), with half the activations in memory at a time.
SW_BATCH_SIZE = {"demo": 8, "published": 1}


def cpu_has_native_bf16() -> bool:
    """AMX or AVX512-BF16: bfloat16 convolutions run natively (oneDNN), not emulated."""
    import torch

    cpu = getattr(torch, "cpu", None)
    try:
        return bool(torch.backends.mkldnn.is_available() and (cpu._is_amx_tile_supported()
                                                              or cpu._is_avx512_bf16_supported()))
    except AttributeError:
        return False


def choose_precision(precision: str | None, device: str) -> str:
    """The arithmetic of the window network. ``auto``: bfloat16 on a CPU that computes it
    natively (3-4x faster than fp32 there; Dice >= 0.99 against fp32, tested), fp32 on other
    CPUs (emulated bfloat16 is slower than fp32); bfloat16 autocast on a GPU that supports it,
    float16 autocast on older GPUs."""
    import torch

    precision = precision or "auto"
    if precision not in PRECISION_CHOICES:
        raise InputError(f"precision must be one of {', '.join(PRECISION_CHOICES)}, got {precision!r}")
    cuda = device.startswith("cuda")
    if precision == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and not cuda:
        raise InputError("precision fp16 needs a GPU (use bf16 or fp32 on a CPU)")
    return precision


def _fold_batchnorm(net: Any) -> Any:
    """A copy of ``net`` (eval mode) with every Conv3d→BatchNorm3d and ConvTranspose3d→BatchNorm3d
    pair folded into one convolution: the same function, one pass over each activation less."""
    import copy

    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    out = copy.deepcopy(net).eval()
    for m in out.modules():
        if isinstance(m, torch.nn.Sequential):
            for i in range(len(m) - 1):
                if isinstance(m[i], (torch.nn.Conv3d, torch.nn.ConvTranspose3d)) \
                        and isinstance(m[i + 1], torch.nn.BatchNorm3d):
                    m[i] = fuse_conv_bn_eval(m[i], m[i + 1], transpose=isinstance(m[i], torch.nn.ConvTranspose3d))
                    m[i + 1] = torch.nn.Identity()
    return out


def cpu_window_module(net: Any, precision: str, fuse_relu: bool | None = None) -> Any:
    """The module a CPU runs for ``net`` (left untouched) in ``precision`` (``fp32`` | ``bf16``):
    batch norm folded into the convolutions, weights in ``channels_last_3d`` (the layout oneDNN's
    kernels want, no reorder before every convolution), bfloat16 weights for ``bf16``.

    ``fuse_relu`` (default: for ``bf16``): every convolution + ReLU one oneDNN call
    (:mod:`.onednn`, where PyTorch has the fused kernels). By measurement (Xeon with AMX, 2
    threads, benchmarks/window_layout.py): bf16 1.19-1.26x (demo network) and 1.28-1.37x
    (published) faster, the same logits; fp32 0.94-0.97x / 1.05-1.12x, so fp32 keeps separate
    ReLUs. Shared with the benchmarks so that they time what ``segment`` runs."""
    import torch

    from . import onednn

    folded = _fold_batchnorm(net)
    if (precision == "bf16" if fuse_relu is None else fuse_relu) and onednn.fused_ops_available():
        folded = onednn.fuse_conv_relu(folded)
    folded = folded.to(memory_format=torch.channels_last_3d)
    return folded.to(torch.bfloat16) if precision == "bf16" else folded


def window_network(model: Any, precision: str) -> Any:
    """``f(windows) -> float32 logits`` for float32 windows on the model's device, in the given
    precision (see :func:`choose_precision`); built once per model and precision.

    CPU: :func:`cpu_window_module` — in bfloat16 on AMX/AVX512-BF16, else fp32 (fp32 in
    channels_last_3d too: on an AVX2-only CPU (AMD EPYC, 2 threads, quiet) the demo network ran
    1.82x and the published one 1.11x faster than in the default layout, logits equal to 1.4e-6;
    benchmarks/window_layout.py, benchmarks/README.md "fp32 layout"). GPU: the network under
    ``torch.autocast`` (bf16/fp16) with channels_last_3d activations."""
    import torch

    cache = model.__dict__.setdefault("_window_networks", {})
    if precision in cache:
        return cache[precision]
    device = str(model.device)
    fmt = torch.channels_last_3d
    if device.startswith("cuda"):
        net = _fold_batchnorm(model.net).to(memory_format=fmt)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)

        def run(x: Any) -> Any:
            with torch.autocast("cuda", dtype=dtype or torch.float16, enabled=dtype is not None):
                return net(x.contiguous(memory_format=fmt)).float().contiguous()
    else:
        net = cpu_window_module(model.net, precision)
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32

        def run(x: Any) -> Any:
            return net(x.to(dtype).contiguous(memory_format=fmt)).float().contiguous()
    cache[precision] = run
    return run


def _crop_box(canon: Volume, anatomy: ChestAnatomy | None, margin_mm: float) -> tuple[slice, slice, slice] | None:
    if anatomy is None or not anatomy.covers_mediastinum:
        return None
    box = anatomy.mediastinum_box_lps(margin_mm)
    if box is None:
        return None
    lo, hi = box
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    ijk = canon.lps_to_index(corners)
    n = np.asarray(canon.shape[::-1])
    i0 = np.clip(np.floor(ijk.min(0)).astype(int), 0, n - 1)
    i1 = np.clip(np.ceil(ijk.max(0)).astype(int) + 1, 1, n)
    return (slice(i0[2], i1[2]), slice(i0[1], i1[1]), slice(i0[0], i1[0]))


def _box_origin(vol: Volume, box: tuple[slice, slice, slice]) -> tuple[float, ...]:
    """LPS position of the first voxel of ``vol[box]``."""
    return tuple(vol.index_to_lps(np.array([box[2].start, box[1].start, box[0].start], float)))


def _sub_volume(vol: Volume, box: tuple[slice, slice, slice]) -> Volume:
    return Volume(np.ascontiguousarray(vol.array[box]), spacing_xyz=vol.spacing_xyz,
                  origin_xyz=_box_origin(vol, box), direction=vol.direction, units=vol.units,
                  metadata=vol.metadata)


def _sub_grid(vol: Volume, box: tuple[slice, slice, slice]) -> Volume:
    """The geometry of ``vol[box]`` without its voxels (a zero-cost broadcast array): a resampling
    reference needs the grid only, and copying the CT's box for it cost ~60 MB and a pass."""
    shape = tuple(s.stop - s.start for s in box)
    return Volume(np.broadcast_to(np.zeros((), np.uint8), shape), spacing_xyz=vol.spacing_xyz,
                  origin_xyz=_box_origin(vol, box), direction=vol.direction, units=vol.units)


def _back_to_ct_grid(arrays: list[np.ndarray], work: Volume, sub: Volume,
                     out: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """Maps on the network grid ``work`` → ``sub``'s grid (linear), clipped to [0, 1], values under
    :data:`PROBABILITY_FLOOR` set to 0. ``out``: zero-filled float32 arrays of ``sub``'s shape
    (e.g. the crop's view of a whole-CT map) written in place instead of new arrays, so the
    crop-sized maps are not allocated and copied twice; only their non-zero voxels are written.

    Only the part of ``sub`` whose interpolation reads a value at or above the floor is resampled:
    the box of those ``work`` voxels, two voxels wider, and the ``sub`` voxels that fall inside
    it. Everything outside interpolates values under the floor only, so it is 0 either way;
    inside, the values are those a resampling of the whole map gives, up to the float rounding of
    the sub-grid's origin (≤ 1e-8, far below the stored 1e-4 steps; equal voxel for voxel in the
    tested geometries)."""
    if out is None:
        out = [lazy_zeros(sub.shape, np.float32) for _ in arrays]
    hot = np.zeros(work.shape, bool)
    for a in arrays:
        hot |= a >= PROBABILITY_FLOOR
    if not hot.any():
        return out
    idx = np.argwhere(hot)
    lo = np.maximum(idx.min(0) - 2, 0)
    hi = np.minimum(idx.max(0) + 3, np.asarray(work.shape))
    wbox = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    # sub voxels that lie within the box's sampled extent; the ones outside it (and outside the
    # whole map, where both read the default 0) interpolate cold voxels only
    # (the resampler also reads up to half a voxel beyond a map's first and last samples)
    corners = np.array([[x, y, z] for x in (lo[2] - 0.5, hi[2] - 0.5) for y in (lo[1] - 0.5, hi[1] - 0.5)
                        for z in (lo[0] - 0.5, hi[0] - 0.5)], float)
    ijk = sub.lps_to_index(work.index_to_lps(corners))
    n = np.asarray(sub.shape[::-1])
    i0 = np.clip(np.ceil(ijk.min(0) - 1e-6).astype(int), 0, n)
    i1 = np.clip(np.floor(ijk.max(0) + 1e-6).astype(int) + 1, 0, n)
    sbox = (slice(i0[2], i1[2]), slice(i0[1], i1[1]), slice(i0[0], i1[0]))
    if any(s.stop <= s.start for s in sbox):
        return out
    w_sub, s_sub = _sub_volume(work, wbox), _sub_grid(sub, sbox)
    for a, o in zip(arrays, out):
        part = resample(w_sub.with_array(np.ascontiguousarray(a[wbox], dtype=np.float32), units="probability"),
                        sub.spacing_xyz, reference=s_sub, default=0.0).array
        np.clip(part, 0.0, 1.0, out=part)
        part[part < PROBABILITY_FLOOR] = 0.0
        # ``o`` is zero-filled: writing only the non-zero voxels leaves the pages of the (mostly
        # zero) box untouched, and untouched pages take no memory (issue 17: peak RSS)
        np.copyto(o[sbox], part, where=part > 0)
    return out


def predict_maps(ct: Volume, model: Any, *, overlap: float = 0.5, tta: str | bool | None = "auto",
                 crop: bool | str = "auto", anatomy: ChestAnatomy | None = None, progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None, precision: str | None = "auto",
                 sw_batch_size: int | None = None) -> ProbabilityMaps:
    """Probability and uncertainty maps on ``ct``'s grid.

    The CT is put in canonical order first (:mod:`mediastinal_ai.orientation`), so the answer does
    not depend on how the file stored its voxels; the network runs on a crop around the
    mediastinum found by :func:`mediastinal_ai.anatomy.analyse_chest` (the whole field of view when
    the CT does not cover the mediastinum), once per mirrored pass, and everything is mapped back
    exactly onto the input grid.

    ``precision`` (:func:`choose_precision`) sets the window network's arithmetic; the windows
    run on the model's device (``sw_device``) while the blended output, the mirrored passes and
    their sums stay in CPU memory, so a GPU holds the network and a batch of windows, never the
    output volume."""
    import time

    import torch

    from ..anatomy import analyse_chest
    from ..orientation import CANONICAL, canonical, restore_volume
    from .cpu_memory import reuse_freed_memory
    from .window import sliding_window

    t0 = time.perf_counter()
    check_ct(ct)
    plan = model.plan
    canon, orient = canonical(ct)
    report(progress, 0.01, "finding the chest anatomy")
    if anatomy is None:
        anatomy = analyse_chest(canon)
    box = _crop_box(canon, anatomy, CROP_MARGIN_MM) if crop is True or (crop == "auto" and plan.crop_to_mediastinum) \
        else None
    sub = _sub_volume(canon, box) if box is not None else canon
    report(progress, 0.03, "resampling to the model's spacing")
    work = resample(sub, plan.target_spacing_xyz)
    x = normalise(work.array, plan.hu_window)
    pad = [max(0, p - s) for p, s in zip(plan.patch_size_zyx, x.shape)]
    if any(pad):
        x = np.pad(x, [(0, p) for p in pad], mode="edge")
    flips = tta_flips(tta, plan, model.device)
    per_pass = _n_windows(x.shape, plan.patch_size_zyx, overlap)
    total = per_pass * len(flips)
    done = [0]
    precision = choose_precision(precision, str(model.device))
    net = window_network(model, precision)
    batch = sw_batch_size or SW_BATCH_SIZE["demo" if plan.features[0] < 32 else "published"]
    net_seconds = [0.0]

    def predictor(t: torch.Tensor) -> torch.Tensor:
        check(cancel)
        t1 = time.perf_counter()
        out = net(t)
        net_seconds[0] += time.perf_counter() - t1
        done[0] += t.shape[0]
        report(progress, 0.05 + 0.85 * done[0] / total, f"window {done[0]}/{total}")
        return out

    t = torch.from_numpy(x)[None, None]  # stays in CPU memory; windows go to the model's device
    s1 = None
    s2 = None
    t_sw = time.perf_counter()
    # CPU: freed activations kept for the next layer and window instead of fresh memory maps
    # (cpu_memory: 1.81x on a published bf16 window, 1.31x fp32; same logits)
    with torch.inference_mode(), reuse_freed_memory(enabled=not str(model.device).startswith("cuda")):
        for axes in flips:
            dims = [a + 2 for a in axes]
            inp = torch.flip(t, dims) if dims else t
            logits = sliding_window(inp, plan.patch_size_zyx, batch, predictor, overlap=overlap,
                                    sw_device=model.device, device="cpu")
            p = torch.sigmoid(logits.float())
            if dims:
                p = torch.flip(p, dims)
            s1 = p if s1 is None else s1 + p
            s2 = p * p if s2 is None else s2 + p * p
    sw_seconds = time.perf_counter() - t_sw
    n = float(len(flips))
    mean = (s1 / n)[0, 0].cpu().numpy()
    sd = torch.sqrt(torch.clamp(s2 / n - (s1 / n) ** 2, min=0.0))[0, 0].cpu().numpy()
    crop_zyx = (slice(0, work.shape[0]), slice(0, work.shape[1]), slice(0, work.shape[2]))
    mean, sd = mean[crop_zyx], sd[crop_zyx]
    report(progress, 0.92, "resampling the probability map to the CT grid")
    t_back = time.perf_counter()
    # the whole-CT maps are zero-filled (untouched pages cost no memory) and the crop's part is
    # written into them directly
    full = [lazy_zeros(canon.shape, np.float32) for _ in range(2)]
    _back_to_ct_grid([mean, sd], work, sub, out=[f[box] if box is not None else f for f in full])
    maps = []
    while full:
        maps.append(restore_volume(canon.with_array(full.pop(0)), ct, orient, units="probability"))
    back_seconds = time.perf_counter() - t_back
    info = {"canonical_orientation": CANONICAL, "reoriented": orient.describe(),
            "crop": None if box is None else {"lps_min": [round(float(v), 1) for v in sub.index_to_lps(
                np.zeros(3))], "shape_zyx": list(sub.shape)},
            "cropped_to_mediastinum": box is not None, "tta_passes": len(flips), "tta_flips_numpy_axes": [list(f) for f in flips],
            "windows_per_pass": per_pass, "precision": precision, "sw_batch_size": batch, "overlap": overlap,
            "network_input_zyx": list(x.shape), "network_seconds": round(net_seconds[0], 2),
            "sliding_window_seconds": round(sw_seconds, 2), "resample_back_seconds": round(back_seconds, 2),
            "probability_floor": PROBABILITY_FLOOR, "seconds": round(time.perf_counter() - t0, 2)}
    return ProbabilityMaps(maps[0], maps[1].with_array(maps[1].array, units="uncertainty (SD)"), anatomy, info)


def predict_probability(ct: Volume, model: Any, *, overlap: float = 0.5, progress: ProgressCallback | None = None,
                        cancel: CancelToken | None = None, **kw: Any) -> Volume:
    """The probability map alone (see :func:`predict_maps`)."""
    return predict_maps(ct, model, overlap=overlap, progress=progress, cancel=cancel, **kw).probability


REVIEW_CONFIDENCE = 0.75
SMALL_LESION_MM = 20.0


def _review(row: dict[str, Any], contrast_touch: float | None, middle_touch: float | None = None) -> list[str]:
    """Reasons a reader should check this lesion: low confidence and the study's failure modes.

    ``contrast_touch``: share of the lesion's one-voxel shell that is enhanced blood (contrast CT
    only); ``middle_touch``: share of the shell in the middle mediastinum (heart, pericardium,
    great vessels) from the anatomy step, which also works without contrast."""
    why = []
    if row.get("confidence") is not None and row["confidence"] < REVIEW_CONFIDENCE:
        why.append(f"low confidence ({row['confidence']:.2f})")
    if row["max_diameter_mm"] < SMALL_LESION_MM:
        why.append("small lesion (< 2 cm), a known failure mode")
    if -10.0 <= row["mean_hu"] <= 25.0 and row.get("compartment") in ("anterior", "middle"):
        why.append("near-water density: cyst or pericardial effusion? (effusion is a known failure mode)")
    if contrast_touch is not None and contrast_touch >= 0.10:
        why.append("touches enhanced vessels (aorta/great vessels), a known failure mode")
    elif middle_touch is not None and middle_touch >= 0.25:
        why.append("abuts the heart/pericardium or great vessels (middle mediastinum), a known failure mode")
    if row.get("compartment") not in ("anterior", None):
        why.append(f"outside the anterior mediastinum ({row.get('compartment')})")
    return why


def postprocess_full(ct: Volume, probability: Volume, threshold: float = 0.5,
                     roi_lps: tuple[float, ...] | None = None, *, anatomy: ChestAnatomy | None = None,
                     uncertainty: Volume | None = None, restrict_to_mediastinum: bool = True,
                     ) -> tuple[Volume, np.ndarray, list[dict[str, Any]], list[dict[str, Any]]]:
    """Threshold → components (≥ 10 voxels) → lesion table; with ``anatomy``, every lesion gets its
    compartment and components mostly outside the mediastinal envelope are dropped (listed in the
    fourth return value) unless ``restrict_to_mediastinum`` is off."""
    from ..anatomy import lesion_compartment

    if not 0.0 < threshold < 1.0:
        raise InputError(f"threshold must be between 0 and 1, got {threshold}")
    p = restrict_to_box(probability.array, ct, roi_lps)
    binary = p >= threshold
    # everything below works inside the box of the voxels over the threshold, grown by the one
    # voxel the shell below reaches (whole-volume passes took seconds on a 512×512×300 CT)
    fbox = foreground_box(binary, margin=1)
    labels, n = components(binary, box=fbox)  # the same labels in any box holding every true voxel
    del binary
    dropped: list[dict[str, Any]] = []
    if anatomy is not None and restrict_to_mediastinum and n:
        dropped = _drop_outside_mediastinum(labels, n, ct, anatomy, fbox)
    boxes = label_boxes(labels, fbox) if fbox is not None else []
    lesions = lesion_table(labels, ct, probability.array, boxes=boxes)
    if anatomy is not None or uncertainty is not None:
        keep = []
        for row in lesions:
            lid = row["lesion_id"]
            sl = component_box(labels, lid, boxes, margin=1)  # everything below stays inside the box
            sel = labels[sl] == lid
            if uncertainty is not None:
                row["confidence"] = round(float(probability.array[sl][sel].mean()), 3)
                row["mean_uncertainty"] = round(float(uncertainty.array[sl][sel].mean()), 4)
            touch = middle = None
            if anatomy is not None:
                origin = np.array([b.start for b in sl])
                idx = (np.argwhere(sel) + origin)[:, ::-1].astype(float)
                comp, inside = lesion_compartment(anatomy, ct.index_to_lps(idx))
                row["compartment"] = comp
                row["inside_mediastinum"] = round(inside, 3)  # >= MIN_INSIDE_FRACTION when restricted
                shell = ndimage.binary_dilation(sel, iterations=1) & ~sel
                hu = ct.array[sl][shell]
                touch = float((hu > 150).mean()) if hu.size and anatomy.stats.get("contrast", False) else None
                sidx = (np.argwhere(shell) + origin)[:, ::-1].astype(float)
                middle = float((anatomy.codes_at(ct.index_to_lps(sidx)) == MIDDLE).mean()) if len(sidx) else None
            reasons = _review(row, touch, middle)
            row["review"] = bool(reasons)
            row["review_reasons"] = "; ".join(reasons)
            keep.append(row)
        lesions = keep
    mask = lazy_zeros(labels.shape, np.uint8)  # written where there are lesions only: untouched pages cost nothing
    if fbox is not None:
        np.copyto(mask[fbox], 1, where=labels[fbox] > 0)
    return ct.with_array(mask, units="label"), labels, lesions, dropped


def _drop_outside_mediastinum(labels: np.ndarray, n: int, ct: Volume, anatomy: ChestAnatomy,
                              box: tuple[slice, ...] | None) -> list[dict[str, Any]]:
    """Zero the components of ``labels`` (1..n, largest first) with less than
    :data:`MIN_INSIDE_FRACTION` of their voxels in the mediastinal envelope and renumber the rest
    1..k in the same order; the dropped ones' rows (volume, centroid, compartment, share inside).

    Done for all components at once before the lesion table (:func:`~mediastinal_ai.anatomy.chest.label_compartments`):
    measuring every one of thousands of noise components first took seconds (issue 17)."""
    from ..anatomy.chest import label_compartments

    c = label_compartments(anatomy, ct, labels, n, box)
    drop = c["inside"] < MIN_INSIDE_FRACTION
    drop[0] = False
    if not drop.any():
        return []
    rows = [{"volume_ml": round(float(c["voxels"][i]) * ct.voxel_volume_mm3 / 1000.0, 3),
             "centroid_lps_mm": [round(float(v), 1) for v in c["centroid_lps"][i]],
             "compartment": str(c["compartment"][i]), "inside_mediastinum": round(float(c["inside"][i]), 3)}
            for i in np.flatnonzero(drop)]
    remap = np.zeros(n + 1, labels.dtype)
    keep = np.flatnonzero(~drop)[1:]
    remap[keep] = np.arange(1, len(keep) + 1, dtype=labels.dtype)
    sub = labels[box] if box is not None else labels
    np.copyto(sub, remap[sub], where=sub > 0)
    return rows


def postprocess(ct: Volume, probability: Volume, threshold: float = 0.5,
                roi_lps: tuple[float, ...] | None = None, **kw: Any) -> tuple[Volume, np.ndarray, list[dict[str, Any]]]:
    mask, labels, lesions, _ = postprocess_full(ct, probability, threshold, roi_lps, **kw)
    return mask, labels, lesions


def segment_volume(ct: Volume, model: Any, *, threshold: float = 0.5, roi_lps: tuple[float, ...] | None = None,
                   device: str | None = None, tta: str | bool | None = "auto", crop: bool | str = "auto",
                   restrict_to_mediastinum: bool = True, progress: ProgressCallback | None = None,
                   cancel: CancelToken | None = None) -> SegmentationResult:
    """One CT → probability and uncertainty maps, tumor mask and lesion table (``model`` from
    :func:`load_model`). ``crop`` limits inference to the mediastinum (``auto``: when the model
    was trained on such crops); ``restrict_to_mediastinum`` drops components mostly outside it (on
    by default). Both are recorded in ``params``."""
    if not 0.0 < threshold < 1.0:  # before minutes of inference
        raise InputError(f"threshold must be between 0 and 1, got {threshold}")
    maps = predict_maps(ct, model, tta=tta, crop=crop, progress=progress, cancel=cancel)
    report(progress, 0.96, "finding lesions")
    mask, labels, lesions, dropped = postprocess_full(ct, maps.probability, threshold, roi_lps, anatomy=maps.anatomy,
                                                      uncertainty=maps.uncertainty,
                                                      restrict_to_mediastinum=restrict_to_mediastinum)
    anat = maps.anatomy.summary() if maps.anatomy is not None else {}
    report(progress, 1.0, f"{len(lesions)} lesion(s)")
    for w in anat.get("warnings", []):
        log.warning("%s: %s", ct.metadata.get("source", "CT"), w)
    return SegmentationResult(maps.probability, mask, labels, lesions, threshold, model.label, model.card.sha256,
                              {"threshold": threshold, "roi_lps": list(roi_lps) if roi_lps else None,
                               "tta": tta if isinstance(tta, str) else bool(tta), "crop_to_mediastinum": crop,
                               "restrict_to_mediastinum": restrict_to_mediastinum,
                               "min_inside_fraction": MIN_INSIDE_FRACTION, "plan": model.plan.to_dict(),
                               "inference": maps.info},
                              uncertainty=maps.uncertainty, anatomy=anat, dropped=dropped,
                              warnings=list(anat.get("warnings", [])), chest=maps.anatomy)


def write_result(result: SegmentationResult, out_dir: str | Path, ct: Volume | None = None) -> dict[str, Path]:
    """mask.nrrd, probability.nrrd, lesions.csv, segmentation_result.json — each written atomically
    (the case folder's names: :mod:`mediastinal_ai.case_files`).

    The probability and uncertainty maps are stored as uint16 fixed point (value · 10000, see
    :mod:`mediastinal_ai.io.probability`): exact re-thresholding at any threshold with up to four
    decimals, written in well under a second; :func:`~mediastinal_ai.io.probability.read_probability`
    reads them (and the float32 maps of earlier versions) back as float32."""
    import csv

    from ..case_files import RESULT_FILES
    from ..fileio import atomic_path, atomic_write_json, provenance, source_provenance
    from ..io import write_image
    from ..io.probability import write_probability

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"mask": out / "mask.nrrd", "probability": out / "probability.nrrd", "lesions": out / "lesions.csv",
             "result": out / RESULT_FILES["segmentation"]}
    write_image(result.mask, paths["mask"])
    write_probability(result.probability, paths["probability"])
    if result.uncertainty is not None:
        paths["uncertainty"] = out / "uncertainty.nrrd"
        write_probability(result.uncertainty, paths["uncertainty"])
    if result.chest is not None:
        paths.update({f"anatomy_{k}": v for k, v in result.chest.save(out).items()})
    cols = ["lesion_id", "volume_ml", "max_diameter_mm", "centroid_lps_mm", "mean_hu", "max_probability", "voxels",
            "compartment", "inside_mediastinum", "confidence", "mean_uncertainty", "review", "review_reasons"]
    with atomic_path(paths["lesions"]) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in result.lesions:
            w.writerow({**r, "centroid_lps_mm": " ".join(map(str, r["centroid_lps_mm"]))})
    atomic_write_json(paths["result"], {
        "task": "segmentation", "n_lesions": len(result.lesions), "lesions": result.lesions,
        "threshold": result.threshold, "model": result.model_label, "model_sha256": result.model_sha256,
        "demo": "demo" in result.model_label, "anatomy": result.anatomy, "dropped_outside_mediastinum":
        result.dropped, "warnings": result.warnings, "files": {k: v.name for k, v in paths.items()},
        **provenance(params=result.params, source=source_provenance(ct) if ct is not None else {"kind": "unknown", "path": ""}),
    })
    return paths
