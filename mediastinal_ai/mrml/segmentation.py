"""Segmentation results ⇄ MRML: an editable tumor segment, a hidden probability volume and a
lesion table; re-thresholding from the stored probability without re-running the network."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from . import nodes

ATTR_THRESHOLD = "MediastinalAI.threshold"


def _lesion_records(lesions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    recs = []
    for r in lesions:
        c = r.get("centroid_lps_mm") or [np.nan] * 3
        recs.append({"lesion_id": int(r["lesion_id"]), "volume_ml": float(r["volume_ml"]),
                     "max_diameter_mm": float(r["max_diameter_mm"]), "centroid_L_mm": float(c[0]),
                     "centroid_P_mm": float(c[1]), "centroid_S_mm": float(c[2]), "mean_hu": float(r["mean_hu"]),
                     "max_probability": float(r["max_probability"]) if r.get("max_probability") is not None
                     else float("nan")})
    return recs


def _publish(scene: Any, volume_node: Any, probability, mask, lesions, threshold: float, model_label: str,
             segmentation_node: Any = None, probability_node: Any = None, table_node: Any = None) -> dict[str, Any]:
    seg_node, segment_id = nodes.mask_to_segment(scene, mask, volume_node, segmentation_node=segmentation_node)
    seg_node.SetAttribute("MediastinalAI.model", model_label)
    prob_node = nodes.probability_to_node(scene, probability, reference=volume_node, node=probability_node,
                                          name=f"{volume_node.GetName()} tumor probability")
    prob_node.SetAttribute(ATTR_THRESHOLD, f"{threshold:g}")
    cols = ["lesion_id", "volume_ml", "max_diameter_mm", "centroid_L_mm", "centroid_P_mm", "centroid_S_mm", "mean_hu",
            "max_probability"]
    table = nodes.records_to_table(scene, _lesion_records(lesions), name=f"{volume_node.GetName()} lesions",
                                   node=table_node, columns=cols, attributes={"MediastinalAI.model": model_label})
    return {"segmentation_node": seg_node, "segment_id": segment_id, "probability_node": prob_node,
            "table_node": table, "lesions": lesions, "threshold": threshold, "model": model_label}


def segment_tumor(scene: Any, volume_node: Any, model: Any = None, threshold: float = 0.5,
                  roi_lps: tuple[float, ...] | None = None, device: str = "auto", progress: Any = None,
                  cancel: Any = None) -> dict[str, Any]:
    """In-process segmentation of a CT volume node (the batch/headless path; the GUI runs the
    same code in a child process and calls :func:`import_result`)."""
    from ..models import resolve
    from ..segmentation import load_model, segment_volume

    ct = nodes.node_to_volume(volume_node, units="HU")
    m = load_model(resolve(model, task="segmentation"), device=device)
    res = segment_volume(ct, m, threshold=threshold, roi_lps=roi_lps, progress=progress, cancel=cancel)
    return _publish(scene, volume_node, res.probability, res.mask, res.lesions, threshold, m.label)


def import_result(scene: Any, volume_node: Any, result_dir: str | Path, threshold: float | None = None) -> dict[str, Any]:
    """Load a ``mediastinal-ai segment`` output folder into the scene (re-thresholded if asked)."""
    from ..io import read_image
    from ..segmentation import postprocess

    d = Path(result_dir)
    for name in ("probability.nrrd", "result.json"):
        if not (d / name).is_file():
            raise InputError(f"segmentation result is incomplete: {name} missing", d)
    info = json.loads((d / "result.json").read_text(encoding="utf-8"))
    ct = nodes.node_to_volume(volume_node, units="HU")
    prob = read_image(d / "probability.nrrd")
    if prob.shape != ct.shape:
        raise InputError(f"probability map shape {prob.shape} does not match the CT {ct.shape}", d)
    prob = ct.with_array(prob.array.astype(np.float32), units="probability")
    t = float(info.get("threshold", 0.5) if threshold is None else threshold)
    mask, _, lesions = postprocess(ct, prob, t)
    return _publish(scene, volume_node, prob, mask, lesions, t, str(info.get("model", "")))


def rethreshold(scene: Any, probability_node: Any, segmentation_node: Any, segment_id: str, threshold: float,
                table_node: Any = None) -> dict[str, Any]:
    """New threshold on the stored probability map: segment and lesion table are replaced in place."""
    from ..segmentation import postprocess

    prob = nodes.node_to_volume(probability_node, units="probability")
    ct_like = prob.with_array(np.zeros(prob.shape, np.int16), units="HU")
    ref_id = segmentation_node.GetNodeReferenceID("referenceImageGeometryRef")
    ref = scene.GetNodeByID(ref_id) if ref_id else None
    if ref is not None:
        ct_like = nodes.node_to_volume(ref, units="HU")
    mask, _, lesions = postprocess(ct_like, prob, float(threshold))
    nodes.mask_to_segment(scene, mask, ref if ref is not None else probability_node,
                          segmentation_node=segmentation_node, segment_id=segment_id)
    probability_node.SetAttribute(ATTR_THRESHOLD, f"{float(threshold):g}")
    cols = ["lesion_id", "volume_ml", "max_diameter_mm", "centroid_L_mm", "centroid_P_mm", "centroid_S_mm", "mean_hu",
            "max_probability"]
    if table_node is not None:
        nodes.records_to_table(scene, _lesion_records(lesions), node=table_node, columns=cols)
    return {"segmentation_node": segmentation_node, "segment_id": segment_id, "lesions": lesions,
            "table_node": table_node, "threshold": float(threshold)}


def export_dicom_seg(scene: Any, segmentation_node: Any, segment_id: str, volume_node: Any, path: str | Path) -> Path:
    """The (possibly edited) segment as DICOM SEG referencing the CT's source series."""
    from ..segmentation.dicom_seg import write_dicom_seg

    ct = nodes.node_to_volume(volume_node, units="HU")
    mask = nodes.segment_to_mask(segmentation_node, segment_id, volume_node)
    if not np.asarray(mask.array).any():
        raise InputError("the segment is empty: nothing to export")
    return write_dicom_seg(mask, ct, path, manual=segmentation_node.GetAttribute("MediastinalAI.edited") == "1")


def export_mask(scene: Any, segmentation_node: Any, segment_id: str, volume_node: Any, path: str | Path) -> Path:
    """The (possibly edited) segment as NRRD or NIfTI on the CT grid."""
    from ..io import write_image

    return write_image(nodes.segment_to_mask(segmentation_node, segment_id, volume_node), path)
