"""Slicer "Save report": the per-case report from what a scene holds (headless slicer-core)."""

from __future__ import annotations

import json

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install -e '.[slicer]')")

from mediastinal_ai.mrml import nodes  # noqa: E402
from mediastinal_ai.mrml.report import gather_scene, save_case_report  # noqa: E402


def test_save_case_report_from_scene(tmp_path):
    from mediastinal_ai.synthetic import generate_case

    case = generate_case(5, "thymoma_AB", inplane_size=48)
    scene = nodes.new_scene()
    vol = nodes.volume_to_node(scene, case.ct, "syn_0005", role="ct")
    seg, sid = nodes.mask_to_segment(scene, case.mask, vol, name="tumor")
    seg.SetAttribute("MediastinalAI.model", "unet-demo")
    nodes.records_to_table(scene, [{"lesion_id": 1, "volume_ml": 12.5, "max_diameter_mm": 30.0}],
                           name="syn_0005 lesions", attributes={"MediastinalAI.model": "unet-demo"})
    res = {"probability_high_risk": 0.22, "group": "low", "threshold": 0.5,
           "model": {"name": "radiomics-svm-demo", "sha256": "e" * 64, "demo": True}}
    nodes.records_to_table(scene, [{"probability_high_risk": 0.22}], name="risk", role="radiomics-risk",
                           attributes={"MediastinalAI.radiomicsResult": json.dumps(res),
                                       "MediastinalAI.sourceVolume": f"{vol.GetID()}/{sid}"})
    # a result for another CT must not leak in
    nodes.records_to_table(scene, [{"p": 1}], name="other", role="fusion",
                           attributes={"MediastinalAI.fusionResult": json.dumps({"fusion": {"p_malignant": 0.99}}),
                                       "MediastinalAI.sourceVolume": "vtkMRMLScalarVolumeNode999/x"})
    g = gather_scene(scene, vol, seg, sid)
    assert g["mask"].array.sum() == case.mask.array.sum()
    assert g["parts"]["radiomics"]["probability_high_risk"] == 0.22 and g["parts"]["fusion"] is None
    assert g["lesions"][0]["volume_ml"] == 12.5
    html, pdf = save_case_report(scene, vol, tmp_path / "rep", segmentation_node=seg, segment_id=sid)
    text = html.read_text(encoding="utf-8")
    assert "SYNTHETIC" in text and "demo — not for clinical use" in text
    assert "0.220" in text and "e" * 64 in text and "CT + CTC fusion: not run" in text
    assert text.count("data:image/png;base64,") == 1
    assert pdf.read_bytes()[:5] == b"%PDF-"
    assert np.isfinite(g["ct"].array).all()
