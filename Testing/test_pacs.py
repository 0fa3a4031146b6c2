"""PACS outputs on real DICOM series: BINARY and FRACTIONAL SEG, TID 1500 SR, provenance.

Every object written here is checked with dciodvfy (dicom3tools): zero errors. Locally the
dciodvfy checks skip with a reason when it is not installed; under CI (.ci/run installs it and
sets MEDIASTINAL_AI_REQUIRE_DCIODVFY=1) a missing dciodvfy fails instead.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from mediastinal_ai.errors import InputError

pytest.importorskip("highdicom")

SERIES = {
    "abdomen-blank-uids": "abdomen_ct_dicom_series",
    "lung-pet-ct-dx": "lung-pet-ct-dx/Lung_Dx-A0002_s3",
    "lidc-contrast": "lidc-contrast-slabs/LIDC-IDRI-0001",
}


@pytest.fixture(scope="session")
def dciodvfy():
    from mediastinal_ai.pacs.validate import dciodvfy as run
    from mediastinal_ai.pacs.validate import have_dciodvfy

    if not have_dciodvfy():
        if os.environ.get("MEDIASTINAL_AI_REQUIRE_DCIODVFY") == "1":
            pytest.fail("dciodvfy is required here (MEDIASTINAL_AI_REQUIRE_DCIODVFY=1) but not installed: "
                        "apt-get install dicom3tools")
        pytest.skip("dciodvfy not installed (Debian package dicom3tools); .ci/run installs it for CI")

    def check(path):
        v = run(path)
        assert v.ok, f"dciodvfy errors in {path.name}:\n" + "\n".join(v.errors)
        return v

    return check


def _case(ct, boxes):
    """A mask of boxes on the CT grid, its lesion labels and table, and a smooth probability map
    (synthetic lesions drawn on real CT; not a model's output)."""
    from mediastinal_ai.segmentation.postprocess import components, lesion_table

    m = np.zeros(ct.shape, np.uint8)
    for z0, z1, y0, y1, x0, x1 in boxes:
        m[z0:z1, y0:y1, x0:x1] = 1
    labels, _ = components(m > 0)
    from scipy import ndimage

    prob = ndimage.gaussian_filter(m.astype(np.float32), 2.0)
    prob = np.clip(prob / max(prob.max(), 1e-6), 0, 1).astype(np.float32)
    lesions = lesion_table(labels, ct, prob)
    for r in lesions:
        r.update(compartment="anterior", confidence=0.8, review=False)
    return m, labels, lesions, ct.with_array(prob, units="probability")


def _predictions():
    """Prediction results shaped as predict-radiomics / predict-cnn / predict-fusion write them."""
    return {
        "radiomics": {"probability_high_risk": 0.71, "group": "high", "threshold": 0.5,
                      "features": [{"feature": "original_shape_Maximum3DDiameter", "value": 41.5}],
                      "model": {"name": "demo-risk-radiomics-svm", "version": "0.1.0", "sha256": "c" * 64,
                                "demo": True}},
        "cnn": {"probability_high_risk": 0.33, "group": "low", "threshold": 0.5, "model_sha256": "d" * 64,
                "model": "demo-risk-cnn v0.2.0 sha256:dddddddddddd (demo — not for clinical use)"},
        "fusion": {"inputs": {"ctc": 8.5}, "ctc_unit": "FU/3mL", "ct_only": None, "fusion": {
            "model": "demo-fusion-dmfn v0.1.0 sha256:eeeeeeeeeeee (demo — not for clinical use)",
            "model_name": "demo-fusion-dmfn", "model_sha256": "e" * 64, "demo": True, "p_malignant": 0.64,
            "threshold": 0.5, "call": "malignant",
            "top3": [{"class": "thymoma_B2", "display": "Thymoma type B2", "probability": 0.41},
                     {"class": "lymphoma", "display": "Lymphoma", "probability": 0.22},
                     {"class": "thymic_cyst", "display": "Thymic cyst", "probability": 0.12}]}},
    }


def _sr_items(ds):
    """All content items of an SR (depth first)."""
    out = []

    def walk(seq):
        for it in seq:
            out.append(it)
            if "ContentSequence" in it:
                walk(it.ContentSequence)

    walk(ds.ContentSequence)
    return out


@pytest.mark.real_ct
@pytest.mark.parametrize("key", list(SERIES))
def test_seg_fractional_seg_and_sr_on_real_series_pass_dciodvfy_and_round_trip(key, real_ct_dir, tmp_path, dciodvfy):
    import highdicom as hd
    import pydicom

    from mediastinal_ai.io import read_ct
    from mediastinal_ai.pacs import ModelRef
    from mediastinal_ai.pacs.export import EXPORT_JSON, FRACTIONAL_FILE, SEG_FILE, SR_FILE, export_case

    ct = read_ct(real_ct_dir / SERIES[key])
    nz = ct.shape[0]
    m, labels, lesions, prob = _case(ct, [(nz // 2 - 2, nz // 2 + 2, 200, 250, 220, 280),
                                          (nz // 2 - 1, nz // 2 + 1, 300, 316, 300, 316)])
    assert len(lesions) == 2
    unc = ct.with_array((prob.array * (1 - prob.array)).astype(np.float32), units="probability")
    model = ModelRef("demo-seg-unet3d", "0.3.0", "a" * 64, True, "segmentation")
    paths = export_case(ct, tmp_path, mask=ct.with_array(m), lesions=lesions, seg_model=model, labels=labels,
                        probability=prob, uncertainty=unc, predictions=_predictions(), threshold=0.5,
                        radiomics_features=True)
    assert set(paths) == {SEG_FILE, FRACTIONAL_FILE, SR_FILE, EXPORT_JSON}
    for name in (SEG_FILE, FRACTIONAL_FILE, SR_FILE):
        dciodvfy(paths[name])
    assert not list(tmp_path.glob(".tmp-*"))

    series_uid = {str(pydicom.dcmread(f, stop_before_pixels=True).get("SeriesInstanceUID") or "")
                  for f in ct.metadata["dicom_files"]}.pop()
    # BINARY SEG: one segment per lesion, the same voxels, coded region, AI algorithm with model identity
    seg = hd.seg.segread(paths[SEG_FILE])
    assert len(seg.SegmentSequence) == 2
    back = seg.get_volume(combine_segments=True).array if hasattr(seg, "get_volume") else None
    assert back is None or int(np.count_nonzero(back)) == int(m.sum())
    from mediastinal_ai.segmentation.dicom_seg import read_dicom_seg

    assert np.array_equal(read_dicom_seg(paths[SEG_FILE], ct).array, m)
    s1 = seg.SegmentSequence[0]
    assert s1.SegmentAlgorithmType == "AUTOMATIC"
    assert s1.AnatomicRegionSequence[0].CodeValue == "72410000"  # Mediastinum
    assert s1.AnatomicRegionSequence[0].AnatomicRegionModifierSequence[0].CodeValue == "255549009"  # Anterior
    alg = s1.SegmentationAlgorithmIdentificationSequence[0]
    assert alg.AlgorithmName == "demo-seg-unet3d" and alg.AlgorithmVersion == "0.3.0"
    assert "a" * 64 in alg.AlgorithmParameters and "demo — not for clinical use" in alg.AlgorithmParameters
    assert "demo — not for clinical use" in seg.SeriesDescription
    assert str(seg.StudyInstanceUID).strip() and str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID).strip()
    if series_uid:  # the real series' own UID is referenced, not a new one
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid

    # FRACTIONAL SEG: probability (segment 1) and uncertainty (segment 2), 8-bit
    frac = pydicom.dcmread(paths[FRACTIONAL_FILE])
    assert frac.SegmentationType == "FRACTIONAL" and frac.SegmentationFractionalType == "PROBABILITY"
    assert [s.SegmentLabel for s in frac.SegmentSequence] == ["Tumor probability", "Tumor probability uncertainty (SD)"]
    fr = hd.seg.segread(paths[FRACTIONAL_FILE])
    k = nz // 2
    pos = [float(v) for v in ct.index_to_lps(np.array([[0.0, 0.0, k]]))[0]]
    frames = [i for i, it in enumerate(frac.PerFrameFunctionalGroupsSequence)
              if np.allclose([float(v) for v in it.PlanePositionSequence[0].ImagePositionPatient], pos, atol=0.01)
              and int(it.SegmentIdentificationSequence[0].ReferencedSegmentNumber) == 1]
    assert len(frames) == 1
    stored = frac.pixel_array[frames[0]].astype(np.float32) / 255.0
    assert np.abs(stored - prob.array[k]).max() <= 0.5 / 255 + 1e-6
    assert fr is not None

    # SR: TID 1500, a volumetric group per lesion referencing its segment, the predictions
    sr = hd.sr.srread(paths[SR_FILE])
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert "demo — not for clinical use" in sr.SeriesDescription
    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == 2
    by_id = {int(g.tracking_identifier.split()[-1]): g for g in groups}
    for r in lesions:
        g = by_id[r["lesion_id"]]
        ref = g.referenced_segment
        assert ref.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert list(ref.referenced_segment_numbers) == [r["lesion_id"]]
        values = {(mm.name.meaning, mm.derivation.meaning if mm.derivation else ""): mm.value
                  for mm in g.get_measurements()}
        assert values[("Volume", "")] == pytest.approx(r["volume_ml"])
        assert values[("Diameter", "Maximum")] == pytest.approx(r["max_diameter_mm"])
        assert values[("Attenuation Coefficient", "Mean")] == pytest.approx(r["mean_hu"])
        sd = float(ct.array[labels == r["lesion_id"]].std())
        assert values[("Attenuation Coefficient", "Standard Deviation")] == pytest.approx(sd, abs=0.06)
    ds = pydicom.dcmread(paths[SR_FILE])
    items = _sr_items(ds)
    texts = [str(it.TextValue) for it in items if it.ValueType == "TEXT"]
    nums = {str(it.ConceptNameCodeSequence[0].CodeMeaning): float(it.MeasuredValueSequence[0].NumericValue)
            for it in items if it.ValueType == "NUM"}
    codes = [(str(it.ConceptNameCodeSequence[0].CodeMeaning), str(it.ConceptCodeSequence[0].CodeMeaning))
             for it in items if it.ValueType == "CODE"]
    assert nums["Probability of high-risk WHO type"] in (0.71, 0.33)
    assert nums["Probability of malignancy"] == pytest.approx(0.64)
    assert nums["Circulating tumor cells (input)"] == pytest.approx(8.5)
    assert nums["Number of lesions found"] == 2
    assert nums["original_shape_Maximum3DDiameter"] == pytest.approx(41.5)
    assert ("Lesion Risk", "High risk") in codes and ("Lesion Risk", "Low risk") in codes
    assert ("Benign or malignant", "Malignant") in codes and ("Lesion class, rank 1", "Thymoma type B2") in codes
    for name, sha in (("demo-risk-radiomics-svm", "c"), ("demo-risk-cnn", "d"), ("demo-fusion-dmfn", "e"),
                      ("demo-seg-unet3d", "a")):
        assert name in texts and f"model_sha256={sha * 64}" in texts
    assert "note=demo — not for clinical use" in texts
    # provenance sidecar
    rec = json.loads(paths[EXPORT_JSON].read_text(encoding="utf-8"))
    assert rec["schema"] == "mediastinal-ai-provenance/1" and rec["package_version"]
    assert rec["source"]["series_instance_uid"] == str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)
    assert {m["name"] for m in rec["models"]} >= {"demo-seg-unet3d", "demo-risk-cnn", "demo-fusion-dmfn"}
    assert rec["files"][SR_FILE]["sop_instance_uid"] == ds.SOPInstanceUID
    assert bool(rec["warnings"]) == (key == "abdomen-blank-uids")


@pytest.mark.real_ct
def test_blank_uids_are_generated_deterministically_or_refused(real_ct_dir):
    from mediastinal_ai.io import read_ct
    from mediastinal_ai.pacs import prepare_sources
    from mediastinal_ai.pacs.sources import check_uids

    ct = read_ct(real_ct_dir / "abdomen_ct_dicom_series")
    assert check_uids(ct, "generate") == ["SeriesInstanceUID", "StudyInstanceUID"]
    a, b = prepare_sources(ct), prepare_sources(ct)
    assert a.study_instance_uid == b.study_instance_uid and a.series_instance_uid == b.series_instance_uid
    assert a.study_instance_uid != a.series_instance_uid and a.generated_uids
    assert "generated deterministic UIDs" in a.warnings[0]
    with pytest.raises(InputError, match="blank SeriesInstanceUID, StudyInstanceUID"):
        prepare_sources(ct, on_missing_uids="refuse")
    with pytest.raises(InputError, match="refuse-blank-uids"):
        check_uids(ct, "refuse")


@pytest.mark.real_ct
def test_stripped_series_edited_segment_and_empty_result(real_ct_dir, tmp_path, dciodvfy):
    """A real series with patient/study attributes deleted and UIDs blanked: the edited SEG is
    SEMIAUTOMATIC and valid; a case without lesions gets an SR saying 0 lesions and no SEG."""
    import pydicom

    from mediastinal_ai.io import read_ct
    from mediastinal_ai.pacs import ModelRef
    from mediastinal_ai.pacs.export import SEG_FILE, SR_FILE, export_case
    from mediastinal_ai.segmentation.dicom_seg import write_dicom_seg

    src = real_ct_dir / "lidc-contrast-slabs" / "LIDC-IDRI-0003"
    for f in sorted(src.glob("*.dcm")):
        ds = pydicom.dcmread(f)
        for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                    "AccessionNumber", "ReferringPhysicianName", "StudyID", "SeriesNumber"):
            if key in ds:
                delattr(ds, key)
        ds.StudyInstanceUID = ""
        ds.SeriesInstanceUID = ""
        ds.save_as(tmp_path / f.name)
    ct = read_ct(tmp_path)
    m, labels, lesions, prob = _case(ct, [(3, 8, 220, 260, 240, 290)])
    p = write_dicom_seg(ct.with_array(m), ct, tmp_path / "out" / "edited.dcm", manual=True,
                        model=ModelRef("demo-seg-unet3d", "0.3.0", "a" * 64, True))
    dciodvfy(p)
    s = pydicom.dcmread(p).SegmentSequence[0]
    assert s.SegmentAlgorithmType == "SEMIAUTOMATIC" and "(AI, edited)" in pydicom.dcmread(p).ContentDescription
    assert s.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == "demo-seg-unet3d"

    empty = export_case(ct, tmp_path / "empty", mask=ct.with_array(np.zeros(ct.shape, np.uint8)), lesions=[],
                        seg_model=ModelRef("demo-seg-unet3d", "0.3.0", "a" * 64, True), probability=prob,
                        threshold=0.5)
    assert SEG_FILE not in empty and SR_FILE in empty
    dciodvfy(empty[SR_FILE])
    items = _sr_items(pydicom.dcmread(empty[SR_FILE]))
    n = [float(it.MeasuredValueSequence[0].NumericValue) for it in items if it.ValueType == "NUM"
         and it.ConceptNameCodeSequence[0].CodeMeaning == "Number of lesions found"]
    assert n == [0.0]


def test_non_dicom_ct_is_refused_and_nothing_is_written(tmp_path):
    from mediastinal_ai.pacs import ModelRef
    from mediastinal_ai.pacs.export import export_case
    from mediastinal_ai.volume import Volume

    ct = Volume(np.zeros((4, 8, 8), np.int16), metadata={"format": "nii.gz"})
    with pytest.raises(InputError, match="DICOM SEG needs a CT read from a DICOM series"):
        export_case(ct, tmp_path / "o", mask=ct.with_array(np.ones(ct.shape, np.uint8)), lesions=[],
                    seg_model=ModelRef("m"))
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.mark.real_ct
def test_export_dicom_cli_from_a_segment_folder(real_ct_dir, tmp_path, dciodvfy, capsys):
    """``export-dicom`` on a segment output folder (written by write_result from a synthetic
    probability map on the real CT) and prediction JSONs; --validate runs dciodvfy."""
    from mediastinal_ai import cli
    from mediastinal_ai.io import read_ct
    from mediastinal_ai.segmentation.inference import SegmentationResult, write_result

    ct = read_ct(real_ct_dir / "lung-pet-ct-dx" / "Lung_Dx-A0002_s3")
    m, labels, lesions, prob = _case(ct, [(12, 16, 180, 230, 230, 290), (14, 16, 300, 320, 200, 220)])
    res = SegmentationResult(prob, ct.with_array(m, units="label"), labels, lesions, 0.5,
                             "demo-seg-unet3d v0.3.0 sha256:aaaaaaaaaaaa (demo — not for clinical use)", "a" * 64)
    seg_dir = tmp_path / "seg"
    write_result(res, seg_dir, ct)
    preds = _predictions()
    for k in ("radiomics", "cnn", "fusion"):
        (tmp_path / f"{k}.json").write_text(json.dumps(preds[k]), encoding="utf-8")
    rc = cli.main(["export-dicom", "--ct", str(real_ct_dir / "lung-pet-ct-dx" / "Lung_Dx-A0002_s3"),
                   "--seg-result", str(seg_dir), "--radiomics", str(tmp_path / "radiomics.json"),
                   "--cnn", str(tmp_path / "cnn.json"), "--fusion", str(tmp_path / "fusion.json"),
                   "--out", str(tmp_path / "pacs"), "--validate"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "(dciodvfy: 0 errors" in out and out.count("dciodvfy:") == 3
    for name in ("segmentation.dcm", "probability_seg.dcm", "measurements_sr.dcm"):
        dciodvfy(tmp_path / "pacs" / name)
    rec = json.loads((tmp_path / "pacs" / "dicom_export.json").read_text(encoding="utf-8"))
    assert rec["models"][0] == {"name": "demo-seg-unet3d", "version": "0.3.0", "sha256": "a" * 64, "demo": True,
                                "task": "segmentation"}
    # the lesion table matched the saved mask: one segment per lesion
    import pydicom

    assert len(pydicom.dcmread(tmp_path / "pacs" / "segmentation.dcm").SegmentSequence) == 2
    # an edited mask (one lesion erased) no longer matches: re-measured, one lesion, SEMIAUTOMATIC
    from mediastinal_ai.io import write_image

    m2 = (labels == 1).astype(np.uint8)
    write_image(ct.with_array(m2, units="label"), seg_dir / "mask.nrrd")
    rc = cli.main(["export-dicom", "--ct", str(real_ct_dir / "lung-pet-ct-dx" / "Lung_Dx-A0002_s3"),
                   "--seg-result", str(seg_dir), "--out", str(tmp_path / "pacs2")])
    assert rc == 0
    ds = pydicom.dcmread(tmp_path / "pacs2" / "segmentation.dcm")
    assert len(ds.SegmentSequence) == 1 and ds.SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"
    dciodvfy(tmp_path / "pacs2" / "measurements_sr.dcm")


def test_dciodvfy_present_under_ci():
    """CI must really validate: .ci/run installs dicom3tools and sets the flag."""
    if os.environ.get("MEDIASTINAL_AI_REQUIRE_DCIODVFY") != "1":
        pytest.skip("not under CI (.ci/run sets MEDIASTINAL_AI_REQUIRE_DCIODVFY=1)")
    assert shutil.which("dciodvfy"), "dciodvfy missing under CI: .ci/run must install dicom3tools"


def _synthetic_dicom_series(folder, seed=91_235, cls="thymoma_B2"):
    """A synthetic case (labelled synthetic) written as a DICOM series; returns (files, case)."""
    from pydicom.uid import generate_uid
    from test_io import write_series

    from mediastinal_ai.synthetic import generate_case

    c = generate_case(seed, cls)
    sx, sy, sz = c.ct.spacing_xyz
    files = write_series(folder, c.ct.array.astype(np.int16), spacing=(sy, sx), dz=sz, origin=c.ct.origin_xyz,
                         extra={"FrameOfReferenceUID": generate_uid(), "PatientID": "SYNTH2",
                                "PatientName": "SYNTHETIC^CASE"})
    return files, c


def _fake_segment_volume(case):
    """segment_volume with the network replaced by a known probability map (the synthetic case's
    own lesion, blurred), so the DICOM wiring tests are fast; post-processing is the real one."""
    from mediastinal_ai.segmentation import inference

    def fake(ct, model, *, threshold=0.5, **kw):
        from scipy import ndimage

        lab = np.asarray(case.mask.array) > 0
        p = np.clip(ndimage.gaussian_filter(lab.astype(np.float32), 1.0) * 1.2, 0, 1).astype(np.float32)
        prob = ct.with_array(p, units="probability")
        mask, labels, lesions, _ = inference.postprocess_full(ct, prob, threshold)
        unc = ct.with_array((p * (1 - p) * 0.5).astype(np.float32), units="probability")
        return inference.SegmentationResult(prob, mask, labels, lesions, threshold, model.label, model.card.sha256,
                                            {"threshold": threshold, "plan": model.plan.to_dict()}, uncertainty=unc)

    return fake


def test_batch_dicom_sr_step_on_a_synthetic_dicom_series(tmp_path, dciodvfy, monkeypatch):
    """run --steps segment,dicom-sr on a DICOM series (synthetic, written by the test): SEG,
    fractional SEG and SR are in the case folder, pass dciodvfy, and the SR references the SEG."""
    import pydicom

    import mediastinal_ai.segmentation as segpkg
    from mediastinal_ai.batch import RunConfig, discover, run_cohort

    _, case = _synthetic_dicom_series(tmp_path / "dicom" / "case1")
    monkeypatch.setattr(segpkg, "segment_volume", _fake_segment_volume(case))
    rows = run_cohort(discover(tmp_path / "dicom"), tmp_path / "out", RunConfig(steps=["segment", "dicom-sr"],
                                                                                 workers=0))
    assert [r["status"] for r in rows] == ["ok"], rows
    case_dir = next((tmp_path / "out" / "cases").iterdir())
    assert rows[0]["dicom_sr"] == "measurements_sr.dcm"
    sr = pydicom.dcmread(case_dir / "measurements_sr.dcm")
    dciodvfy(case_dir / "measurements_sr.dcm")
    items = _sr_items(sr)
    n = [float(it.MeasuredValueSequence[0].NumericValue) for it in items if it.ValueType == "NUM"
         and it.ConceptNameCodeSequence[0].CodeMeaning == "Number of lesions found"]
    assert n == [float(rows[0]["n_lesions"])] and n[0] >= 1
    if int(rows[0]["n_lesions"]):
        for name in ("segmentation.dcm", "probability_seg.dcm"):
            dciodvfy(case_dir / name)
        seg_uid = pydicom.dcmread(case_dir / "segmentation.dcm", stop_before_pixels=True).SOPInstanceUID
        refs = {str(r.ReferencedSOPInstanceUID) for it in items if it.ValueType == "IMAGE"
                for r in it.ReferencedSOPSequence}
        assert seg_uid in refs
    rec = json.loads((case_dir / "dicom_export.json").read_text(encoding="utf-8"))
    assert "measurements_sr.dcm" in rec["files"] and rec["models"][0]["task"] == "segmentation"


def test_segment_cli_dicom_sr_writes_seg_fractional_seg_and_sr(tmp_path, monkeypatch, dciodvfy):
    """segment --dicom-sr wiring, with the network replaced by a known probability map (the
    synthetic case's own lesion, blurred) so the test is fast; the model card is the demo's."""
    import pydicom

    import mediastinal_ai.segmentation as segpkg
    from mediastinal_ai import cli

    _, case = _synthetic_dicom_series(tmp_path / "dicom")
    monkeypatch.setattr(segpkg, "segment_volume", _fake_segment_volume(case))
    rc = cli.main(["segment", "--input", str(tmp_path / "dicom"), "--out", str(tmp_path / "o"), "--dicom-sr",
                   "--device", "cpu"])
    assert rc == 0
    for name in ("segmentation.dcm", "probability_seg.dcm", "measurements_sr.dcm"):
        assert (tmp_path / "o" / name).is_file(), name
        dciodvfy(tmp_path / "o" / name)
    alg = pydicom.dcmread(tmp_path / "o" / "segmentation.dcm").SegmentSequence[0] \
        .SegmentationAlgorithmIdentificationSequence[0]
    from mediastinal_ai.models import resolve

    card = resolve(None, task="segmentation").card
    assert alg.AlgorithmName == card.name and alg.AlgorithmVersion == card.version
    assert card.sha256 in alg.AlgorithmParameters
    rec = json.loads((tmp_path / "o" / "dicom_export.json").read_text(encoding="utf-8"))
    assert rec["plan"] and rec["plan"] == json.loads((tmp_path / "o" / "segmentation_result.json").read_text())["params"]["plan"]
    assert rec["source"]["kind"] == "dicom-series" and rec["models"][0]["sha256"] == card.sha256


@pytest.mark.real_ct
def test_source_provenance_names_the_series_or_the_file_sha256(real_ct_dir):
    import hashlib

    from mediastinal_ai.fileio import provenance, source_provenance
    from mediastinal_ai.io import read_ct

    ct = read_ct(real_ct_dir / "lidc-contrast-slabs" / "LIDC-IDRI-0003")
    s = source_provenance(ct)
    assert s["kind"] == "dicom-series" and s["series_instance_uid"].startswith("1.3.6.1.4.1.14519")
    assert s["n_files"] == len(ct.metadata["dicom_files"])
    f = real_ct_dir / "mediastinum_crop_ct.nii.gz"
    s = source_provenance(read_ct(f))
    assert s == {"kind": "file", "path": str(f), "sha256": hashlib.sha256(f.read_bytes()).hexdigest()}
    p = provenance(source=s)
    assert p["schema"] == "mediastinal-ai-provenance/1" and p["package_version"] and p["source"] is s


def test_nrrd_and_nifti_headers_record_the_writing_software(tmp_path):
    import SimpleITK as sitk

    from mediastinal_ai import __version__
    from mediastinal_ai.io import read_image, write_image
    from mediastinal_ai.io.images import META_KEY
    from mediastinal_ai.volume import Volume

    v = Volume(np.zeros((4, 5, 6), np.uint8), units="label", metadata={"case_id": "c1"})
    write_image(v, tmp_path / "m.nrrd")
    img = sitk.ReadImage(str(tmp_path / "m.nrrd"))
    meta = json.loads(img.GetMetaData(META_KEY))
    assert meta["written_by"] == {"schema": "mediastinal-ai-provenance/1",
                                  "produced_by": f"mediastinal-ai {__version__}", "package_version": __version__}
    assert "written_by" not in read_image(tmp_path / "m.nrrd").metadata  # not carried into derived files


@pytest.mark.real_ct
def test_batch_dicom_sr_step_puts_the_case_predictions_in_the_sr(real_ct_dir, tmp_path, dciodvfy):
    """The dicom-sr step on a case folder as segment + radiomics/cnn/fusion leave it (the
    prediction JSONs shaped as those steps write them): the SR holds every prediction and
    references the segment step's SEG, which is not rewritten."""
    import pydicom

    from mediastinal_ai.batch.discover import CaseSpec
    from mediastinal_ai.batch.steps import CaseContext
    from mediastinal_ai.batch.task_steps import dicom_sr
    from mediastinal_ai.io import read_ct
    from mediastinal_ai.pacs import ModelRef
    from mediastinal_ai.pacs.export import export_case
    from mediastinal_ai.segmentation.inference import SegmentationResult, write_result

    series = real_ct_dir / "lung-pet-ct-dx" / "Lung_Dx-A0002_s3"
    ct = read_ct(series)
    m, labels, lesions, prob = _case(ct, [(12, 16, 180, 230, 230, 290)])
    work = tmp_path / "case"
    label = "demo-seg-unet3d v0.3.0 sha256:aaaaaaaaaaaa (demo — not for clinical use)"
    write_result(SegmentationResult(prob, ct.with_array(m, units="label"), labels, lesions, 0.5, label, "a" * 64),
                 work, ct)
    export_case(ct, work, mask=ct.with_array(m), lesions=lesions, seg_model=ModelRef.from_label(label, "a" * 64),
                labels=labels, probability=prob, threshold=0.5, kinds=("seg", "fractional"))
    seg_uid = pydicom.dcmread(work / "segmentation.dcm", stop_before_pixels=True).SOPInstanceUID
    preds = _predictions()
    for key, name in (("radiomics", "radiomics_result.json"), ("cnn", "cnn_result.json"),
                      ("fusion", "fusion_result.json")):
        (work / name).write_text(json.dumps(preds[key]), encoding="utf-8")
    ctx = CaseContext(spec=CaseSpec("case", str(series)), workdir=work, params={})
    ctx._ct = ct
    dicom_sr(ctx)
    assert ctx.results["dicom_sr"] == "measurements_sr.dcm" and "measurements_sr.dcm" in ctx.outputs
    dciodvfy(work / "measurements_sr.dcm")
    assert pydicom.dcmread(work / "segmentation.dcm", stop_before_pixels=True).SOPInstanceUID == seg_uid
    items = _sr_items(pydicom.dcmread(work / "measurements_sr.dcm"))
    refs = {str(r.ReferencedSOPInstanceUID) for it in items if it.ValueType == "IMAGE" for r in it.ReferencedSOPSequence}
    assert str(seg_uid) in refs
    ids = [str(it.TextValue) for it in items if it.ValueType == "TEXT"
           and it.ConceptNameCodeSequence[0].CodeMeaning == "Tracking Identifier"]
    assert ids == ["lesion 1", "segmentation summary", "WHO risk (radiomics)", "WHO risk (CNN)", "CT+CTC fusion"]
    rec = json.loads((work / "dicom_export.json").read_text(encoding="utf-8"))
    assert set(rec["files"]) == {"segmentation.dcm", "probability_seg.dcm", "measurements_sr.dcm"}


@pytest.mark.real_ct
def test_segment_refuse_blank_uids_stops_before_inference(real_ct_dir, tmp_path, capsys, monkeypatch):
    import mediastinal_ai.segmentation as segpkg
    from mediastinal_ai import cli

    def never(*a, **k):
        raise AssertionError("inference must not start")

    monkeypatch.setattr(segpkg, "segment_volume", never)
    monkeypatch.setattr(segpkg, "load_model", never)
    rc = cli.main(["segment", "--input", str(real_ct_dir / "abdomen_ct_dicom_series"), "--out", str(tmp_path / "o"),
                   "--dicom-sr", "--refuse-blank-uids"])
    err = capsys.readouterr().err
    assert rc != 0 and "blank SeriesInstanceUID, StudyInstanceUID" in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


@pytest.mark.real_ct
def test_a_ct_not_on_its_dicom_slices_is_refused(real_ct_dir):
    from mediastinal_ai.io import read_ct
    from mediastinal_ai.pacs import prepare_sources

    ct = read_ct(real_ct_dir / "lidc-contrast-slabs" / "LIDC-IDRI-0003")
    with pytest.raises(InputError, match="not on its 10 DICOM slices"):
        prepare_sources(ct.with_array(ct.array, dicom_files=ct.metadata["dicom_files"][:-1]))
    resampled = ct.with_array(ct.array)
    resampled.metadata["resampled_from_irregular"] = True
    with pytest.raises(InputError, match="resampled from an irregular series"):
        prepare_sources(resampled)
