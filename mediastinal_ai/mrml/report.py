""""Save report" for the current scene: gathers what the scene holds (CT, tumor segment, lesion
table, radiomics/CNN/fusion result tables, Grad-CAM volume) into the per-case report of
:mod:`mediastinal_ai.evaluation.report` (HTML + PDF). Each Slicer module's "Save report" button
calls :func:`save_case_report`; it works headless on ``slicer-core``.

The task adapters keep their full results as JSON in table-node attributes (radiomics:
``MediastinalAI.radiomicsResult``, CNN: ``MediastinalAI.result``, fusion:
``MediastinalAI.fusionResult``); tables are recognised by their ``MediastinalAI.role``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from . import nodes

log = logging.getLogger(__name__)

# role attribute → (report part, attribute holding the full JSON result)
RESULT_TABLES = {"radiomics-risk": ("radiomics", "MediastinalAI.radiomicsResult"),
                 "risk-cnn": ("cnn", "MediastinalAI.result"),
                 "fusion": ("fusion", "MediastinalAI.fusionResult")}


def _table_nodes(scene: Any) -> list[Any]:
    n = scene.GetNumberOfNodesByClass("vtkMRMLTableNode")
    return [scene.GetNthNodeByClass(i, "vtkMRMLTableNode") for i in range(n)]


def _json_attr(node: Any, attr: str) -> dict[str, Any] | None:
    text = node.GetAttribute(attr)
    if not text:
        return None
    try:
        d = json.loads(text)
    except ValueError:
        log.warning("table %s: attribute %s is not JSON", node.GetName(), attr)
        return None
    return d if isinstance(d, dict) else None


def gather_scene(scene: Any, volume_node: Any, segmentation_node: Any = None, segment_id: str | None = None,
                 tables: list[Any] | None = None, gradcam_node: Any = None) -> dict[str, Any]:
    """The scene's results for one CT as ``{"ct", "mask", "gradcam", "parts", "lesions"}``.

    ``tables``: the table nodes to use (default: every MediastinalAI table in the scene whose
    source volume is ``volume_node`` or unknown; the last one of each role wins).
    """
    ct = nodes.node_to_volume(volume_node, units="HU")
    mask = None
    if segmentation_node is not None:
        if segment_id is None:
            ids = segmentation_node.GetSegmentation().GetSegmentIDs()
            segment_id = ids[0] if ids else None
        if segment_id is not None:
            mask = nodes.segment_to_mask(segmentation_node, segment_id, volume_node)
    gradcam = nodes.node_to_volume(gradcam_node, units="") if gradcam_node is not None else None
    parts: dict[str, Any] = {"segmentation": None, "radiomics": None, "cnn": None, "fusion": None}
    lesions = None
    vid = volume_node.GetID()
    for t in tables if tables is not None else _table_nodes(scene):
        src = t.GetAttribute("MediastinalAI.sourceVolume")
        if src and not src.startswith(f"{vid}/") and src != vid:
            continue
        role = t.GetAttribute(nodes.ATTR_ROLE) or ""
        if role in RESULT_TABLES:
            key, attr = RESULT_TABLES[role]
            parts[key] = _json_attr(t, attr) or {"rows": nodes.table_to_records(t)}
        elif t.GetName().endswith(" lesions") or role == "lesions":
            lesions = nodes.table_to_records(t)
            model = t.GetAttribute("MediastinalAI.model")
            parts["segmentation"] = {"task": "segmentation", "n_lesions": len(lesions), "model": model or "",
                                     "model_sha256": t.GetAttribute("MediastinalAI.modelSha256") or "",
                                     "demo": "demo" in (model or "").lower()}
    if parts["segmentation"] is None and segmentation_node is not None:
        model = segmentation_node.GetAttribute("MediastinalAI.model")
        if model:
            parts["segmentation"] = {"task": "segmentation", "model": model, "model_sha256": "",
                                     "demo": "demo" in model.lower()}
    return {"ct": ct, "mask": mask, "gradcam": gradcam, "parts": parts, "lesions": lesions}


def save_case_report(scene: Any, volume_node: Any, out_path: str | Path, segmentation_node: Any = None,
                     segment_id: str | None = None, tables: list[Any] | None = None, gradcam_node: Any = None,
                     case_id: str | None = None, synthetic: bool | None = None) -> list[Path]:
    """Write report.html and report.pdf for the current scene into folder ``out_path``."""
    from ..evaluation.report import case_from_parts, render_case_report

    g = gather_scene(scene, volume_node, segmentation_node, segment_id, tables, gradcam_node)
    c = case_from_parts(g["parts"], g["lesions"], g["ct"], g["mask"], g["gradcam"],
                        case_id=case_id or volume_node.GetName(), synthetic=synthetic,
                        folder=f"Slicer scene, volume {volume_node.GetName()!r}")
    return render_case_report(c, Path(out_path))


def save_report_file(scene: Any, volume_node: Any, path: str | Path, **kwargs: Any) -> list[Path]:
    """The report at the file the user chose in a *Save* dialog (``report.html``), with the PDF
    beside it under the same name (or the reverse when a ``.pdf`` was chosen): the paths, HTML
    first. :func:`save_case_report` writes into a folder; it renders into a temporary folder
    beside the target and the two files are moved into place, so a failure leaves nothing behind
    and no folder named ``report.html`` is ever made. ``kwargs`` go to :func:`save_case_report`.
    """
    import os
    import shutil
    import tempfile

    from ..errors import InputError

    target = Path(path)
    if target.suffix.lower() not in (".html", ".htm", ".pdf"):
        target = target.with_name(target.name + ".html")
    if target.is_dir():
        raise InputError("this is a folder: choose a file name for the report", target)
    html_path = target if target.suffix.lower() in (".html", ".htm") else target.with_suffix(".html")
    pdf_path = target.with_suffix(".pdf")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".mediastinalai-report-", dir=str(target.parent))
    try:
        written = save_case_report(scene, volume_node, tmp, **kwargs)
        out = {}
        for f in written:
            dest = pdf_path if Path(f).suffix.lower() == ".pdf" else html_path
            os.replace(f, dest)
            out[dest.suffix.lower() == ".pdf"] = dest
        return [out[k] for k in sorted(out)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
