"""'Export DICOM SR...' of both Slicer modules: the MRML adapter on slicer-core with a real DICOM
CT, a segment, the lesion table and a radiomics result table; every file passes dciodvfy."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
pytest.importorskip("highdicom")

from conftest import REAL_CT_DIR  # noqa: E402

from mediastinal_ai.mrml import nodes  # noqa: E402

pytestmark = [pytest.mark.mrml, pytest.mark.real_ct]
SERIES = REAL_CT_DIR / "lidc-contrast-slabs" / "LIDC-IDRI-0003"


def _validate(path):
    from mediastinal_ai.pacs.validate import dciodvfy, have_dciodvfy

    if not have_dciodvfy():
        if os.environ.get("MEDIASTINAL_AI_REQUIRE_DCIODVFY") == "1":
            pytest.fail("dciodvfy required under CI but not installed")
        return  # the structure checks below still run
    v = dciodvfy(path)
    assert v.ok, "\n".join(v.errors)


def _scene_case():
    from mediastinal_ai.io import read_ct
    from mediastinal_ai.segmentation.postprocess import components, lesion_table

    if not SERIES.is_dir():
        pytest.skip(f"real CT samples not found at {SERIES}")
    vol = read_ct(SERIES)
    scene = nodes.new_scene()
    ct = nodes.volume_to_node(scene, vol, name="CT")
    mask = np.zeros(vol.shape, np.uint8)
    mask[3:7, 200:250, 200:260] = 1
    mask[4:6, 320:336, 300:316] = 1
    segmentation, segment_id = nodes.mask_to_segment(scene, mask, ct)
    labels, _ = components(mask > 0, min_voxels=1)
    rows = lesion_table(labels, vol)
    for r in rows:
        r.update(compartment="anterior", confidence=0.77, review=False)
    return scene, vol, ct, segmentation, segment_id, mask, rows


def test_export_dicom_sr_from_the_scene(tmp_path):
    import pydicom

    from mediastinal_ai.mrml.pacs import ATTR_DICOM_EXPORT, ATTR_PROVENANCE, export_dicom_sr

    scene, vol, ct, segmentation, segment_id, mask, rows = _scene_case()
    table_rows = [{k: r[k] for k in ("lesion_id", "volume_ml", "max_diameter_mm", "mean_hu", "compartment",
                                     "confidence", "review")} for r in rows]
    lesions = nodes.records_to_table(scene, table_rows, name="CT lesions", role="lesions",
                                     attributes={"MediastinalAI.model": "demo-seg-unet3d v0.3.0 sha256:aaaaaaaaaaaa "
                                                 "(demo — not for clinical use)", "MediastinalAI.modelSha256": "a" * 64})
    rad = {"probability_high_risk": 0.62, "group": "high", "threshold": 0.5,
           "features": [{"feature": "original_firstorder_Mean", "value": 35.0}],
           "model": {"name": "demo-risk-radiomics-svm", "version": "0.1.0", "sha256": "c" * 64, "demo": True}}
    nodes.records_to_table(scene, [{"item": "P(high risk)", "value": 0.62}], name="CT radiomics risk",
                           role="radiomics-risk", attributes={"MediastinalAI.radiomicsResult": json.dumps(rad)})
    written = export_dicom_sr(scene, ct, segmentation, segment_id, tmp_path,
                              dicom_files=vol.metadata["dicom_files"], radiomics_features=True)
    assert {"segmentation.dcm", "measurements_sr.dcm", "dicom_export.json"} <= set(written)
    for name in ("segmentation.dcm", "measurements_sr.dcm"):
        _validate(written[name])
    seg = pydicom.dcmread(written["segmentation.dcm"])
    assert len(seg.SegmentSequence) == 2 and seg.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
    assert seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "demo-seg-unet3d"
    sr = pydicom.dcmread(written["measurements_sr.dcm"])
    items = []

    def walk(seq):
        for it in seq:
            items.append(it)
            walk(it.get("ContentSequence", []))

    walk(sr.ContentSequence)
    names = {str(it.ConceptNameCodeSequence[0].CodeMeaning) for it in items if "ConceptNameCodeSequence" in it}
    texts = {str(it.TextValue) for it in items if it.ValueType == "TEXT"}
    assert {"Probability of high-risk WHO type", "original_firstorder_Mean", "Volume"} <= names
    assert "model_sha256=" + "c" * 64 in texts and "demo-risk-radiomics-svm" in texts
    assert "model_sha256=" + "a" * 64 in texts  # the segmentation model, from the lesion table
    assert json.loads(segmentation.GetAttribute(ATTR_PROVENANCE))["schema"] == "mediastinal-ai-provenance/1"
    assert json.loads(segmentation.GetAttribute(ATTR_DICOM_EXPORT))["measurements_sr.dcm"]["sop_instance_uid"] == \
        sr.SOPInstanceUID

    # the segment edited (a lesion erased) no longer matches the table: re-measured, SEMIAUTOMATIC
    nodes.mask_to_segment(scene, (mask * (np.arange(mask.shape[1])[None, :, None] < 300)).astype(np.uint8), ct,
                          segmentation_node=segmentation, segment_id=segment_id)
    written = export_dicom_sr(scene, ct, segmentation, segment_id, tmp_path / "edited",
                              dicom_files=vol.metadata["dicom_files"], tables=[lesions])
    seg = pydicom.dcmread(written["segmentation.dcm"])
    assert len(seg.SegmentSequence) == 1 and seg.SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"
    _validate(written["measurements_sr.dcm"])


def test_export_dicom_sr_refuses_a_ct_without_dicom_files_and_writes_nothing(tmp_path):
    from mediastinal_ai.errors import InputError
    from mediastinal_ai.mrml.pacs import export_dicom_sr
    from mediastinal_ai.volume import Volume

    scene, vol, _, _, _, mask, rows = _scene_case()
    ct = nodes.volume_to_node(scene, Volume(vol.array, vol.spacing_xyz, vol.origin_xyz, vol.direction), name="bare")
    segmentation, segment_id = nodes.mask_to_segment(scene, mask, ct)
    with pytest.raises(InputError, match="needs a CT loaded from DICOM"):
        export_dicom_sr(scene, ct, segmentation, segment_id, tmp_path / "o")
    assert not (tmp_path / "o").exists()


@pytest.fixture
def app_scene(monkeypatch):
    """A scene set as slicer.mrmlScene with the app-only modules stubbed (as test_slicer_modules_logic does)."""
    import sys

    from test_slicer_modules_logic import REPO, _stub_modules

    for name, module in _stub_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
        if name.startswith("slicer."):
            monkeypatch.setattr(slicer, name.split(".", 1)[1], module, raising=False)
    s = nodes.new_scene()
    monkeypatch.setattr(slicer, "mrmlScene", s, raising=False)
    monkeypatch.syspath_prepend(str(REPO / "MediastinalAI"))
    yield s
    for name in [n for n in sys.modules if n.startswith("MediastinalAILib")]:
        del sys.modules[name]


def test_both_modules_logic_export_dicom_sr(app_scene, tmp_path, monkeypatch):
    """The modules' logic methods behind the 'Export DICOM SR...' buttons (module files loaded
    on slicer-core with the app-only names stubbed)."""
    import pydicom
    from test_slicer_modules_logic import _load

    from mediastinal_ai.io import read_ct

    scene = app_scene

    if not SERIES.is_dir():
        pytest.skip(f"real CT samples not found at {SERIES}")
    vol = read_ct(SERIES)
    ct = nodes.volume_to_node(scene, vol, name="CT")
    mask = np.zeros(vol.shape, np.uint8)
    mask[3:7, 200:250, 200:260] = 1
    segmentation, segment_id = nodes.mask_to_segment(scene, mask, ct)
    monkeypatch.setattr(slicer, "dicomDatabase", None, raising=False)
    for module, logic_name in (("MediastinalAI", "MediastinalAILogic"),
                               ("MediastinalAIRadiomics", "MediastinalAIRadiomicsLogic")):
        logic = getattr(_load(module), logic_name)()
        out = tmp_path / module
        written = logic.exportDicomSr(ct, segmentation, segment_id, str(out))
        assert "measurements_sr.dcm" in written and "segmentation.dcm" in written
        _validate(written["measurements_sr.dcm"])
        assert pydicom.dcmread(written["measurements_sr.dcm"]).Modality == "SR"
