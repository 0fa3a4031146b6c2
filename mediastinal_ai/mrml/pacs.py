"""PACS export of the scene's results for one CT ("Export DICOM SR..." in both Slicer modules).

Gathers what the scene holds (the tumour segment, the lesion table, the radiomics / CNN / fusion
result tables: :func:`mediastinal_ai.mrml.report.gather_scene`) and writes, into one folder, the
BINARY SEG (one segment per lesion), the FRACTIONAL SEG of the probability map when the scene
has it, the TID 1500 SR referencing both the SEG and the CT series, and dicom_export.json
(:func:`mediastinal_ai.pacs.export.export_case`). The CT must come from DICOM: its node carries
``dicom_files`` or the caller passes the files (a CT loaded by Slicer's DICOM browser:
:func:`mediastinal_ai.mrml.segmentation.dicom_files_for_node`).

Lesion measurements come from the segment as it is now: when it still matches the lesion table
(same lesions, same sizes) the table's compartment, confidence and review flags are kept;
otherwise (edited in Segment Editor) the lesions are re-measured on the segment and the SEG is
marked SEMIAUTOMATIC.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..pacs.sr import finite_float
from . import nodes

ATTR_PROVENANCE = nodes.ATTR_PROVENANCE  # JSON, shared schema (docs/provenance.md)
ATTR_DICOM_EXPORT = "MediastinalAI.dicomExport"  # JSON: the SOP instance UIDs last written


def _table_lesions(records: list[dict[str, Any]] | None, labels: np.ndarray, ct: Any) -> list[dict[str, Any]] | None:
    """The lesion table's rows when they describe ``labels`` (same count, same volumes)."""
    from ..segmentation.postprocess import lesion_table

    fresh = lesion_table(labels, ct)
    if not records or len(records) != len(fresh):
        return None
    out = []
    for r, f in zip(sorted(records, key=lambda r: int(float(r.get("lesion_id", 0)))), fresh):
        v = finite_float(r.get("volume_ml"))
        if v is None or abs(v - f["volume_ml"]) > max(0.002, 0.001 * f["volume_ml"]):
            return None
        row = dict(f)
        for k in ("compartment", "confidence", "max_probability", "review"):
            if r.get(k) not in (None, ""):
                row[k] = r[k] if k in ("compartment", "review") else finite_float(r[k])
        if isinstance(row.get("review"), str):
            row["review"] = row["review"].strip().lower() in ("1", "true", "yes")
        out.append(row)
    return out


def export_dicom_sr(scene: Any, volume_node: Any, segmentation_node: Any, segment_id: str | None, out_dir: str | Path,
                    *, dicom_files: list[str] | None = None, probability_node: Any = None,
                    tables: list[Any] | None = None, radiomics_features: bool = False,
                    on_missing_uids: str = "generate") -> dict[str, Path]:
    """Write SEG, fractional SEG (with ``probability_node``), SR and dicom_export.json into
    ``out_dir``; returns name → path. The written UIDs and the provenance are kept as attributes
    of the segmentation node."""
    from ..pacs import ModelRef
    from ..pacs.export import EXPORT_JSON, export_case
    from ..segmentation.postprocess import components
    from .report import gather_scene
    from .segmentation import is_edited

    if segmentation_node is None:
        raise InputError("no tumor segmentation: segment the CT (or pick a segmentation) first")
    g = gather_scene(scene, volume_node, segmentation_node, segment_id, tables)
    ct = g["ct"]
    files = list(dicom_files or ct.metadata.get("dicom_files") or [])
    if not files:
        raise InputError("DICOM SR/SEG export needs a CT loaded from DICOM (from the DICOM browser or a DICOM "
                         "folder); for other CTs save NRRD/NIfTI and the report")
    ct = ct.with_array(ct.array, dicom_files=files)
    mask = g["mask"]
    if mask is None or not np.asarray(mask.array).any():
        raise InputError("the segment is empty: nothing to export")
    labels, _ = components(np.asarray(mask.array) > 0, min_voxels=1)
    lesions = _table_lesions(g["lesions"], labels, ct)
    edited = is_edited(segmentation_node) or lesions is None
    if lesions is None:
        from ..segmentation.postprocess import lesion_table

        lesions = lesion_table(labels, ct)
    seg_part = g["parts"].get("segmentation") or {}
    seg_model = ModelRef.from_label(str(seg_part.get("model") or "unknown"), str(seg_part.get("model_sha256") or ""),
                                    task="segmentation")
    predictions = {k: v for k, v in g["parts"].items()
                   if k in ("radiomics", "cnn", "fusion") and isinstance(v, dict) and "rows" not in v}
    prob = None
    if probability_node is not None:
        prob = nodes.node_to_volume(probability_node, units="probability")
        if prob.shape != ct.shape:
            raise InputError(f"probability map shape {prob.shape} does not match the CT {ct.shape}")
        prob = ct.with_array(np.asarray(prob.array, np.float32), units="probability")
    unc = None
    if probability_node is not None:
        from .segmentation import REF_UNCERTAINTY

        unc_node = probability_node.GetNodeReference(REF_UNCERTAINTY)
        if unc_node is not None:
            u = nodes.node_to_volume(unc_node, units="probability")
            unc = ct.with_array(np.asarray(u.array, np.float32), units="probability") if u.shape == ct.shape else None
    threshold = finite_float(probability_node.GetAttribute("MediastinalAI.threshold")) if probability_node is not None \
        else None
    paths = export_case(ct, out_dir, mask=mask, lesions=lesions, seg_model=seg_model, labels=labels,
                        probability=prob, uncertainty=unc, predictions=predictions, threshold=threshold, edited=edited,
                        radiomics_features=radiomics_features, on_missing_uids=on_missing_uids,
                        params={"command": "slicer", "volume": volume_node.GetName()})
    record = json.loads(paths[EXPORT_JSON].read_text(encoding="utf-8"))
    segmentation_node.SetAttribute(ATTR_DICOM_EXPORT, json.dumps(record.get("files", {})))
    segmentation_node.SetAttribute(ATTR_PROVENANCE, json.dumps({k: record[k] for k in (
        "schema", "produced_by", "package_version", "created_utc", "source", "models", "params") if k in record}))
    return paths
