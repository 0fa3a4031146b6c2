"""CNN WHO-risk prediction in the scene: a result table and the Grad-CAM map as a coloured
overlay volume on the CT grid, plus where the ROI slice is so the GUI can jump there."""

from __future__ import annotations

import json
from typing import Any

from . import nodes


def predict_risk_cnn(scene: Any, volume_node: Any, segmentation_node: Any, segment_id: str, model: Any = None,
                     show: bool = True) -> tuple[Any, Any, dict[str, Any]]:
    from ..cnn import load_model, predict_risk
    from ..models import resolve

    ct = nodes.node_to_volume(volume_node, units="HU")
    mask = nodes.segment_to_mask(segmentation_node, segment_id, volume_node)
    m = model if hasattr(model, "net") else load_model(resolve(model, task="risk-cnn"))
    res = predict_risk(ct, mask, m)
    cam = res.pop("gradcam")
    return publish_risk_cnn(scene, volume_node, res, cam, show=show)


def publish_risk_cnn(scene: Any, volume_node: Any, res: dict[str, Any], cam: Any,
                     show: bool = True) -> tuple[Any, Any, dict[str, Any]]:
    """Put a CNN result (computed here or by the GUI's child process) into the scene: the
    Grad-CAM volume ``cam`` (a Volume on the CT grid), the result table, the overlay."""
    lps = res["roi"]["center_lps"]
    res["roi"]["center_ras"] = [-lps[0], -lps[1], lps[2]]
    cam_node = nodes.volume_to_node(scene, cam, name=f"{volume_node.GetName()} Grad-CAM", role="gradcam")
    if show:
        color = scene.GetFirstNodeByName("ColdToHotRainbow") or scene.GetFirstNodeByName("Rainbow")
        nodes.show_in_slice_views(scene, background=volume_node, foreground=cam_node, foreground_opacity=0.4,
                                  color_node_id=color.GetID() if color is not None else None)
        nodes.jump_slices_to(scene, res["roi"]["center_ras"])
    row = {"model": res["model"], "backbone": res["backbone"], "probability_high_risk": res["probability_high_risk"],
           "group": res["group"], "threshold": res["threshold"], "roi_slice": res["roi"]["slice_index"],
           "model_sha256": res["model_sha256"], "warnings": "; ".join(res.get("warnings") or [])}
    table = nodes.records_to_table(scene, [row], name=f"CNN risk - {volume_node.GetName()}", role="risk-cnn",
                                   attributes={"MediastinalAI.result": json.dumps(res, default=str)})
    nodes.stamp_provenance([table, cam_node], volume_node, model={"name": res["model"], "sha256": res["model_sha256"]},
                           task="risk-cnn", threshold=res["threshold"])
    return table, cam_node, res
