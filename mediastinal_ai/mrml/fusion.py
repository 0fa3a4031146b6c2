"""MRML adapter for the CT + CTC fusion model ("Predict with CTC").

The CTC panel of the MediastinalAI module reads its fields, calls :func:`predict_with_ctc`
and shows the result; the same call works headless on ``slicer-core``. Inputs are validated
by :func:`mediastinal_ai.fusion.validate_inputs` (the GUI may call it on each edit to show the
warnings before predicting).
"""

from __future__ import annotations

import json
from typing import Any

import slicer

from ..fusion import predict_fusion, result_rows
from . import nodes

ROLE = "fusion"
ATTR_RESULT = "MediastinalAI.fusionResult"
ATTR_SOURCE = "MediastinalAI.sourceVolume"


def _existing_table(scene: slicer.vtkMRMLScene, volume_node: Any, segment_id: str) -> Any:
    for n in nodes.nodes_by_attribute(scene, nodes.ATTR_ROLE, ROLE, "vtkMRMLTableNode"):
        if n.GetAttribute(ATTR_SOURCE) == f"{volume_node.GetID()}/{segment_id}":
            return n
    return None


def predict_with_ctc(scene: slicer.vtkMRMLScene, volume_node: Any, segmentation_node: Any, segment_id: str,
                     ctc: Any, age: Any = None, sex: Any = None, lesion_site: Any = None, model: Any = None, *,
                     device: str = "cpu", table_node: Any = None) -> tuple[Any, dict[str, Any]]:
    """Predict benign/malignant and the lesion class for one segment from CT + CTC.

    Returns ``(table_node, result)``. The table has one row for the fused model and one for
    the CT-only baseline (P(malignant), call, top-3 classes with probabilities, model, inputs,
    warnings); the full result is also kept as JSON in the table's ``MediastinalAI.fusionResult``
    attribute, so the scene keeps it when saved. A second prediction for the same volume and
    segment updates the same table. Raises :class:`~mediastinal_ai.errors.InputError` for
    refused inputs and :class:`~mediastinal_ai.errors.ModelError` for a model that does not fit.
    """
    ct = nodes.node_to_volume(volume_node)
    mask = nodes.segment_to_mask(segmentation_node, segment_id, ct)
    result = predict_fusion(ct, mask, ctc, age, sex, lesion_site, model=model, device=device)
    return publish_fusion(scene, volume_node, segment_id, result, table_node=table_node)


def publish_fusion(scene: slicer.vtkMRMLScene, volume_node: Any, segment_id: str, result: dict[str, Any],
                   table_node: Any = None) -> tuple[Any, dict[str, Any]]:
    """Put a fusion result (computed here or by the GUI's child process) into a table node."""
    lps = result["roi"]["center_lps"]
    result["roi"]["center_ras"] = [-lps[0], -lps[1], lps[2]]
    result["segment_id"] = segment_id
    if table_node is None:
        table_node = _existing_table(scene, volume_node, segment_id)
    fused = result["fusion"]
    table_node = nodes.records_to_table(
        scene, result_rows(result), name=f"CTC fusion - {volume_node.GetName()}", node=table_node, role=ROLE,
        attributes={
            ATTR_SOURCE: f"{volume_node.GetID()}/{segment_id}",
            "MediastinalAI.model": fused["model"],
            "MediastinalAI.modelSha256": fused["model_sha256"],
            ATTR_RESULT: json.dumps(result, default=str),
        })
    nodes.stamp_provenance([table_node], volume_node, model={"name": fused["model"], "sha256": fused["model_sha256"]},
                           task="fusion", segment_id=segment_id)
    result["table_node_id"] = table_node.GetID()
    return table_node, result


def stored_result(table_node: Any) -> dict[str, Any] | None:
    """The full result kept with a fusion table (e.g. after reloading a scene)."""
    text = table_node.GetAttribute(ATTR_RESULT) if table_node is not None else None
    return json.loads(text) if text else None
