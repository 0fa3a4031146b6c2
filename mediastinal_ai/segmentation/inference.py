"""Whole-CT inference: resample to the plan's spacing, sliding window with Gaussian blending,
probability back on the CT grid, threshold + components + lesion table."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..progress import CancelToken, ProgressCallback, check, report
from ..volume import Volume
from .plan import normalise, resample
from .postprocess import components, lesion_table, restrict_to_box

log = logging.getLogger(__name__)


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


def predict_probability(ct: Volume, model: Any, *, overlap: float = 0.5, progress: ProgressCallback | None = None,
                        cancel: CancelToken | None = None) -> Volume:
    import torch
    from monai.inferers import sliding_window_inference

    check_ct(ct)
    plan = model.plan
    report(progress, 0.02, "resampling to the model's spacing")
    work = resample(ct, plan.target_spacing_xyz)
    x = normalise(work.array, plan.hu_window)
    pad = [max(0, p - s) for p, s in zip(plan.patch_size_zyx, x.shape)]
    if any(pad):
        x = np.pad(x, [(0, p) for p in pad], mode="edge")
    total = _n_windows(x.shape, plan.patch_size_zyx, overlap)
    done = [0]

    def predictor(t: torch.Tensor) -> torch.Tensor:
        check(cancel)
        out = model.net(t)
        done[0] += t.shape[0]
        report(progress, 0.05 + 0.85 * done[0] / total, f"window {done[0]}/{total}")
        return out

    t = torch.from_numpy(x)[None, None].to(model.device)
    with torch.no_grad(), torch.autocast("cuda", enabled=model.device.startswith("cuda")):
        logits = sliding_window_inference(t, plan.patch_size_zyx, sw_batch_size=2, predictor=predictor,
                                          overlap=overlap, mode="gaussian")
    prob = torch.sigmoid(logits.float())[0, 0].cpu().numpy()
    prob = prob[: work.shape[0], : work.shape[1], : work.shape[2]].astype(np.float32)
    report(progress, 0.92, "resampling the probability map to the CT grid")
    back = resample(work.with_array(prob, units="probability"), ct.spacing_xyz, reference=ct)
    return ct.with_array(np.clip(back.array, 0, 1).astype(np.float32), units="probability")


def postprocess(ct: Volume, probability: Volume, threshold: float = 0.5,
                roi_lps: tuple[float, ...] | None = None) -> tuple[Volume, np.ndarray, list[dict[str, Any]]]:
    if not 0.0 < threshold < 1.0:
        raise InputError(f"threshold must be between 0 and 1, got {threshold}")
    p = restrict_to_box(probability.array, ct, roi_lps)
    labels, _ = components(p >= threshold)
    lesions = lesion_table(labels, ct, probability.array)
    return ct.with_array((labels > 0).astype(np.uint8), units="label"), labels, lesions


def segment_volume(ct: Volume, model: Any, *, threshold: float = 0.5, roi_lps: tuple[float, ...] | None = None,
                   device: str | None = None, progress: ProgressCallback | None = None,
                   cancel: CancelToken | None = None) -> SegmentationResult:
    """One CT → probability map, tumor mask and lesion table (``model`` from :func:`load_model`)."""
    prob = predict_probability(ct, model, progress=progress, cancel=cancel)
    mask, labels, lesions = postprocess(ct, prob, threshold, roi_lps)
    report(progress, 1.0, f"{len(lesions)} lesion(s)")
    return SegmentationResult(prob, mask, labels, lesions, threshold, model.label, model.card.sha256,
                              {"threshold": threshold, "roi_lps": list(roi_lps) if roi_lps else None,
                               "plan": model.plan.to_dict()})


def write_result(result: SegmentationResult, out_dir: str | Path, ct: Volume | None = None) -> dict[str, Path]:
    """mask.nrrd, probability.nrrd, lesions.csv, result.json — each written atomically."""
    import csv

    from ..fileio import atomic_path, atomic_write_json, provenance
    from ..io import write_image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"mask": out / "mask.nrrd", "probability": out / "probability.nrrd", "lesions": out / "lesions.csv",
             "result": out / "result.json"}
    write_image(result.mask, paths["mask"])
    write_image(result.probability, paths["probability"])
    cols = ["lesion_id", "volume_ml", "max_diameter_mm", "centroid_lps_mm", "mean_hu", "max_probability", "voxels"]
    with atomic_path(paths["lesions"]) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in result.lesions:
            w.writerow({**r, "centroid_lps_mm": " ".join(map(str, r["centroid_lps_mm"]))})
    atomic_write_json(paths["result"], {
        "task": "segmentation", "n_lesions": len(result.lesions), "lesions": result.lesions,
        "threshold": result.threshold, "model": result.model_label, "model_sha256": result.model_sha256,
        "demo": "demo" in result.model_label, "files": {k: v.name for k, v in paths.items()},
        **provenance(params=result.params),
    })
    return paths
