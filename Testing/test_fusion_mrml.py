"""CT + CTC fusion through the MRML adapter on slicer-core: 'Predict with CTC' writes the table."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("torch")
slicer = pytest.importorskip("slicer")

from mediastinal_ai.errors import InputError, ModelError  # noqa: E402
from mediastinal_ai.mrml import nodes  # noqa: E402
from mediastinal_ai.mrml.fusion import predict_with_ctc, stored_result  # noqa: E402
from mediastinal_ai.volume import Volume  # noqa: E402

pytestmark = pytest.mark.mrml


def _case():
    """A small CT-like volume with a soft-tissue lesion and its mask (hand-made, HU)."""
    rng = np.random.default_rng(1)
    ct = rng.normal(-80, 15, (24, 72, 72)).astype(np.int16)  # fat-like background
    zz, yy, xx = np.mgrid[:24, :72, :72]
    lesion = ((zz - 12) / 5.0) ** 2 + ((yy - 30) / 12.0) ** 2 + ((xx - 38) / 14.0) ** 2 <= 1
    ct[lesion] = rng.normal(45, 12, lesion.sum()).astype(np.int16)
    vol = Volume(ct, spacing_xyz=(0.7, 0.7, 2.5), origin_xyz=(-25.0, -20.0, 100.0))
    return vol, vol.with_array(lesion.astype(np.uint8), units="label")


@pytest.fixture(scope="module")
def scene_case():
    ct, mask = _case()
    scene = nodes.new_scene()
    vn = nodes.volume_to_node(scene, ct, "CT")
    sn, sid = nodes.mask_to_segment(scene, mask, vn)
    return scene, vn, sn, sid


def test_predict_with_ctc_writes_table_with_fused_and_ct_only_rows(scene_case):
    scene, vn, sn, sid = scene_case
    table, result = predict_with_ctc(scene, vn, sn, sid, "11.5", age=63, sex="F", lesion_site="anterior")
    assert table.IsA("vtkMRMLTableNode")
    prov = json.loads(table.GetAttribute("MediastinalAI.provenance"))
    assert prov["model"]["sha256"] == result["fusion"]["model_sha256"] and prov["params"]["task"] == "fusion"
    assert prov["produced_by"].startswith("mediastinal-ai")
    rows = nodes.table_to_records(table)
    assert [r["model_kind"] for r in rows] == ["fusion (CT + CTC)", "CT only"]
    for r, key in zip(rows, ("fusion", "ct_only"), strict=True):
        assert isinstance(r["p_malignant"], float) and 0.0 <= r["p_malignant"] <= 1.0
        assert math.isclose(r["p_malignant"], result[key]["p_malignant"], rel_tol=1e-9)
        assert r["class_1"] == result[key]["top3"][0]["class"]
        assert r["p_class_1"] >= r["p_class_2"] >= r["p_class_3"]
    assert rows[0]["ctc"] == 11.5 and rows[0]["ctc_unit"] == result["ctc_unit"] == result["inputs"]["ctc_unit"]  # the model's unit
    fused = result["fusion"]
    assert math.isclose(fused["p_benign"] + fused["p_malignant"], 1.0, rel_tol=1e-6)
    assert len(fused["top3"]) == 3 and math.isclose(sum(fused["class_probabilities"].values()), 1.0, rel_tol=1e-5)
    assert result["ct_only"] is not None and result["ct_only"]["model_name"].endswith("ct-only")
    # ROI on the lesion's largest slice, position given in RAS for the GUI
    assert result["roi"]["slice_index"] == 12
    assert len(result["roi"]["center_ras"]) == 3
    # the scene keeps the whole result; a second prediction updates the same table
    assert stored_result(table)["fusion"]["p_malignant"] == fused["p_malignant"]
    n_tables = scene.GetNumberOfNodesByClass("vtkMRMLTableNode")
    table2, result2 = predict_with_ctc(scene, vn, sn, sid, 2.0)
    assert table2 is table and scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == n_tables
    assert any("age not given" in n for n in result2["notes"])
    assert json.loads(table.GetAttribute("MediastinalAI.fusionResult"))["inputs"]["ctc"] == 2.0


def test_predict_with_ctc_refuses_bad_inputs_before_predicting(scene_case):
    scene, vn, sn, sid = scene_case
    n_tables = scene.GetNumberOfNodesByClass("vtkMRMLTableNode")
    for bad, msg in ((-3, "negative"), ("twelve", "must be a number"), (float("nan"), "finite"), (5000, "not plausible")):
        with pytest.raises(InputError, match=msg):
            predict_with_ctc(scene, vn, sn, sid, bad)
    with pytest.raises(InputError, match="lesion site"):
        predict_with_ctc(scene, vn, sn, sid, 5, lesion_site="left")
    assert scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == n_tables


def test_out_of_training_range_ctc_gives_visible_warning(scene_case):
    scene, vn, sn, sid = scene_case
    table, result = predict_with_ctc(scene, vn, sn, sid, 400)
    assert any("outside the range seen in training" in w for w in result["warnings"])
    assert "outside the range seen in training" in nodes.table_to_records(table)[0]["warnings"]


def test_wrong_model_task_is_refused(scene_case):
    scene, vn, sn, sid = scene_case
    with pytest.raises(ModelError):
        predict_with_ctc(scene, vn, sn, sid, 5, model="demo-fusion-ct-only")
