"""The case folder's segmentation file: ``segment`` writes segmentation_result.json, and a folder
an older version wrote (its plain result.json) still imports into MRML, re-thresholds and reports
the same (issue 18 item 4)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mediastinal_ai.case_files import LEGACY_RESULT, RESULT_FILES, find_result
from mediastinal_ai.volume import Volume


def _ct() -> Volume:
    arr = np.full((24, 48, 48), -900, np.int16)
    arr[8:16, 16:32, 16:32] = 40
    arr[8:16, 36:44, 4:12] = 40
    return Volume(arr, (2.0, 2.0, 3.0), (-48.0, -48.0, 0.0), units="HU")


def _probability(ct: Volume) -> Volume:
    """Two components: a large one (core 0.9 in a 0.6 rim) and a small one at 0.8 far from it."""
    p = np.zeros(ct.shape, np.float32)
    p[8:16, 16:32, 16:32] = 0.6
    p[10:14, 20:28, 20:28] = 0.9
    p[8:16, 36:44, 4:12] = 0.8
    return ct.with_array(p, units="probability")


def _write_folder(d: Path, roi_lps=None, threshold: float = 0.5) -> Path:
    """A result folder written by the real writer (no network: the maps are given)."""
    from mediastinal_ai.segmentation.inference import SegmentationResult, postprocess_full, write_result

    ct = _ct()
    prob = _probability(ct)
    mask, labels, lesions, dropped = postprocess_full(ct, prob, threshold, roi_lps)
    res = SegmentationResult(prob, mask, labels, lesions, threshold, "unet-demo 0.1", "a" * 64,
                             {"threshold": threshold, "roi_lps": list(roi_lps) if roi_lps else None,
                              "restrict_to_mediastinum": True}, dropped=dropped)
    paths = write_result(res, d, ct)
    assert paths["result"] == d / RESULT_FILES["segmentation"] == d / "segmentation_result.json"
    assert not (d / LEGACY_RESULT).exists()
    return d


def _make_old(d: Path) -> None:
    """What an older ``segment`` left: the same JSON under the plain name."""
    (d / RESULT_FILES["segmentation"]).rename(d / LEGACY_RESULT)


def test_segment_writes_the_schemes_name_and_an_old_folder_is_found(tmp_path):
    d = _write_folder(tmp_path / "case")
    info = json.loads((d / "segmentation_result.json").read_text())
    assert info["task"] == "segmentation" and info["files"]["result"] == "segmentation_result.json"
    assert find_result(d, "segmentation") == d / "segmentation_result.json"
    _make_old(d)
    assert find_result(d, "segmentation") == d / "result.json"
    assert find_result(d, "risk-cnn") is None  # an old segmentation is not taken for another part


def test_report_reads_an_old_folder_like_a_new_one(tmp_path):
    from mediastinal_ai.evaluation.report import gather_case, write_case_report

    new = _write_folder(tmp_path / "new")
    old = _write_folder(tmp_path / "old")
    _make_old(old)
    a, b = gather_case(new)["parts"]["segmentation"], gather_case(old)["parts"]["segmentation"]
    assert a is not None and b == a
    assert b["n_lesions"] == 2 and b["model"] == "unet-demo 0.1"
    html_path, _ = write_case_report(old, tmp_path / "rep")
    text = html_path.read_text(encoding="utf-8")
    assert "a" * 64 in text  # the segmentation model's sha256 came from the old file
    assert "segmentation: not run" not in text


def test_missing_segmentation_result_is_a_clear_error(tmp_path):
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    from mediastinal_ai.errors import InputError
    from mediastinal_ai.mrml import nodes
    from mediastinal_ai.mrml.segmentation import import_result

    d = _write_folder(tmp_path / "case")
    (d / "segmentation_result.json").unlink()
    scene = nodes.new_scene()
    node = nodes.volume_to_node(scene, _ct(), name="CT", role="ct")
    with pytest.raises(InputError, match="segmentation_result.json"):
        import_result(scene, node, d)


def test_mrml_import_and_rethreshold_of_an_old_folder(tmp_path):
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    from mediastinal_ai.mrml import nodes
    from mediastinal_ai.mrml.segmentation import import_result, rethreshold

    ct = _ct()
    got = {}
    for kind in ("new", "old"):
        d = _write_folder(tmp_path / kind)
        if kind == "old":
            _make_old(d)
        scene = nodes.new_scene()
        node = nodes.volume_to_node(scene, ct, name="CT", role="ct")
        r = import_result(scene, node, d)
        n0 = int(nodes.segment_to_mask(r["segmentation_node"], r["segment_id"], node).array.sum())
        r2 = rethreshold(scene, r["probability_node"], r["segmentation_node"], r["segment_id"], 0.85,
                         r["table_node"])
        n1 = int(nodes.segment_to_mask(r["segmentation_node"], r["segment_id"], node).array.sum())
        got[kind] = (len(r["lesions"]), n0, len(r2["lesions"]), n1, r["model"])
    assert got["old"] == got["new"]
    # both components at 0.5; at 0.85 the rim goes and the 0.8 component with it
    assert got["old"][:4] == (2, 16 * 16 * 8 + 8 * 8 * 8, 1, 8 * 8 * 4)
    assert got["old"][4] == "unet-demo 0.1"


@pytest.mark.real_ct
def test_batch_dicom_sr_and_export_read_an_old_folder(real_ct_dir, tmp_path):
    """The batch dicom-sr step (and so pacs.export_result_folder) on a folder whose segmentation
    is an older result.json: the SR is written and carries the folder's lesion."""
    pytest.importorskip("highdicom")
    import pydicom

    from mediastinal_ai.batch.discover import CaseSpec
    from mediastinal_ai.batch.steps import CaseContext
    from mediastinal_ai.batch.task_steps import dicom_sr
    from mediastinal_ai.io import read_ct
    from mediastinal_ai.segmentation.inference import SegmentationResult, postprocess_full, write_result

    series = real_ct_dir / "lung-pet-ct-dx" / "Lung_Dx-A0002_s3"
    if not series.is_dir():
        pytest.skip(f"real DICOM series not found at {series}")
    ct = read_ct(series)
    p = np.zeros(ct.shape, np.float32)
    p[12:16, 180:230, 230:290] = 0.9
    prob = ct.with_array(p, units="probability")
    mask, labels, lesions, _ = postprocess_full(ct, prob, 0.5)
    work = tmp_path / "case"
    write_result(SegmentationResult(prob, mask, labels, lesions, 0.5, "unet-demo 0.1", "a" * 64), work, ct)
    _make_old(work)
    ctx = CaseContext(spec=CaseSpec("case", str(series)), workdir=work, params={})
    ctx._ct = ct
    dicom_sr(ctx)
    assert ctx.results["dicom_sr"] == "measurements_sr.dcm"
    sr = pydicom.dcmread(work / "measurements_sr.dcm")
    texts = []
    stack = list(sr.ContentSequence)
    while stack:
        it = stack.pop()
        if getattr(it, "ValueType", "") == "TEXT":
            texts.append(str(it.TextValue))
        stack += list(getattr(it, "ContentSequence", []))
    assert "lesion 1" in texts
    (work / "result.json").unlink()  # no segmentation at all: refused before anything is written
    (work / "measurements_sr.dcm").unlink()
    from mediastinal_ai.errors import InputError

    with pytest.raises(InputError, match="segment step"):
        dicom_sr(ctx)
    assert not (work / "measurements_sr.dcm").exists()


ROI_LARGE_ONLY = (-20.0, -20.0, 20.0, 18.0, 18.0, 50.0)  # LPS box around the large component only


@pytest.mark.parametrize("old", [False, True], ids=["new", "old-result-json"])
def test_rethreshold_keeps_the_first_runs_roi(tmp_path, old):
    """segment --roi kept only the large component; a re-threshold (MRML) must not bring back
    the small one outside the box, although it is above the new threshold."""
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    from mediastinal_ai.mrml import nodes
    from mediastinal_ai.mrml.segmentation import ATTR_ROI, import_result, rethreshold

    d = _write_folder(tmp_path / "case", roi_lps=ROI_LARGE_ONLY)
    if old:
        _make_old(d)
    ct = _ct()
    scene = nodes.new_scene()
    node = nodes.volume_to_node(scene, ct, name="CT", role="ct")
    r = import_result(scene, node, d)
    assert len(r["lesions"]) == 1
    assert json.loads(r["probability_node"].GetAttribute(ATTR_ROI)) == list(ROI_LARGE_ONLY)
    small = np.zeros(ct.shape, bool)
    small[8:16, 36:44, 4:12] = True
    for t in (0.55, 0.7, 0.5):
        again = rethreshold(scene, r["probability_node"], r["segmentation_node"], r["segment_id"], t,
                            r["table_node"])
        seg = nodes.segment_to_mask(r["segmentation_node"], r["segment_id"], node).array > 0
        assert len(again["lesions"]) == 1, t
        assert not (seg & small).any(), f"the component outside the ROI came back at threshold {t}"
        assert seg.sum() == (16 * 16 * 8 if t < 0.6 else 8 * 8 * 4), t
