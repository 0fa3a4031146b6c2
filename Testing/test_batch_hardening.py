"""Batch hardening: a corpus of malformed inputs made here (≥ 50), each ending as a clear error
in the status table without stopping the run, leaving no partial output and nothing outside
--out; bad models refused before any case runs; a bounded fuzz of the loaders; and a kill -9
mid-run followed by a rerun that ends identical to an uninterrupted run."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mediastinal_ai.batch import RunConfig, discover, run_cohort
from mediastinal_ai.cohort import write_manifest
from mediastinal_ai.io import write_image
from mediastinal_ai.volume import Volume

CLI = [sys.executable, "-m", "mediastinal_ai.cli"]


def _ct(shape=(8, 32, 32), seed=0, dtype=np.int16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal(40, 15, size=shape).astype(dtype)
    a[:, :4, :] = -1000
    return a


def _series(folder: Path, n=4, modality="CT", drop=None, tilt=0.0, truncate=None, uid=None):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    uid = uid or generate_uid()
    for k in range(n):
        if drop is not None and k == drop:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"{k}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesInstanceUID, ds.StudyInstanceUID = modality, uid, generate_uid()
        ds.ImagePositionPatient = [tilt * k, 0.0, 3.0 * k]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [1.0, 1.0]
        ds.Rows = ds.Columns = 16
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = 1.0, -1024.0
        px = np.full((16, 16), 1064, np.uint16)
        px[:3] = 0
        ds.PixelData = px.tobytes()
        ds.save_as(folder / f"{k}.dcm", enforce_file_format=True)
        if truncate is not None and k == truncate:
            raw = (folder / f"{k}.dcm").read_bytes()
            (folder / f"{k}.dcm").write_bytes(raw[:-200])
    return folder


def build_corpus(root: Path) -> tuple[Path, dict[str, str]]:
    """Good controls + malformed inputs; returns (manifest, {case_id: 'ok' | 'fail'})."""
    d = root / "input data ünïcode"  # spaces and unicode in every path
    d.mkdir(parents=True)
    good = Volume(_ct(), spacing_xyz=(1.5, 1.5, 3.0))
    rows: list[dict] = []
    expect: dict[str, str] = {}

    def add(cid, ct, outcome="fail", **kw):
        rows.append({"case_id": cid, "ct": str(ct), **kw})
        expect[cid] = outcome

    ok_ct = write_image(good, d / "good ct.nii.gz")
    m = np.zeros(good.shape, np.uint8)
    m[2:5, 10:20, 10:20] = 1
    ok_mask = write_image(good.with_array(m), d / "good mask.nii.gz")
    add("ok_plain", ok_ct, "ok")
    add("ok_with_mask_and_ctc", ok_ct, "ok", mask=str(ok_mask), ctc=9.5, age=60, sex="F", lesion_site="anterior")
    add("ok_dicom", _series(d / "dicom ok"), "ok")

    # --- files that are not CTs
    add("missing_file", d / "nope.nii.gz")
    (d / "zero.nii.gz").write_bytes(b"")
    add("zero_bytes", d / "zero.nii.gz")
    data = ok_ct.read_bytes()
    for i, frac in enumerate((0.1, 0.5, 0.9)):
        (d / f"trunc{i}.nii.gz").write_bytes(data[: int(len(data) * frac)])
        add(f"truncated_gzip_{i}", d / f"trunc{i}.nii.gz")
    rng = np.random.default_rng(0)
    for i in range(3):
        (d / f"rand{i}.nii.gz").write_bytes(rng.integers(0, 256, 2000, dtype=np.uint8).tobytes())
        add(f"random_bytes_{i}", d / f"rand{i}.nii.gz")
    (d / "garbage.nii.gz").write_bytes(gzip.compress(b"\x00" * 400))
    add("gzip_of_garbage", d / "garbage.nii.gz")
    (d / "text.nrrd").write_text("not an image")
    add("text_as_nrrd", d / "text.nrrd")
    (d / "hdr.nhdr").write_text("NRRD0004\ntype: short\ndimension: 3\nsizes: 4 4 4\nencoding: raw\ndata file: gone.raw\n\n")
    add("nrrd_missing_data_file", d / "hdr.nhdr")
    (d / "h.mhd").write_text("ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_SHORT\n"
                             "ElementDataFile = gone.raw\n")
    add("mhd_missing_raw", d / "h.mhd")
    (d / "ct.txt").write_text("x")
    add("wrong_extension", d / "ct.txt")
    write_image(Volume(_ct(shape=(1, 32, 32))), d / "2d.nii.gz")
    add("2d_image", d / "2d.nii.gz")
    f = _ct().astype(np.float32)
    f[2, 5, 5] = np.nan
    write_image(Volume(f), d / "nan.nrrd")
    add("nan_voxels", d / "nan.nrrd")
    f[2, 5, 5] = np.inf
    write_image(Volume(f), d / "inf.mha")
    add("inf_voxels", d / "inf.mha")
    f[2, 5, 5] = -np.inf
    write_image(Volume(f), d / "ninf.nrrd")
    add("minus_inf_voxels", d / "ninf.nrrd")
    write_image(Volume(np.zeros((8, 32, 32), np.int16)), d / "zeros.nii.gz")
    add("constant_image", d / "zeros.nii.gz")
    write_image(Volume(np.abs(_ct()) + 200), d / "mr_like.nii.gz")
    add("no_air_not_hu", d / "mr_like.nii.gz")
    write_image(Volume((_ct() + 1024).astype(np.uint16)), d / "unrescaled.nii.gz")
    add("unrescaled_values", d / "unrescaled.nii.gz")
    write_image(Volume(_ct().astype(np.float32) * 100), d / "huge.nrrd")
    add("values_out_of_range", d / "huge.nrrd")
    write_image(Volume(_ct(), spacing_xyz=(1, 1, 500)), d / "spacing_big.nii.gz")
    add("absurd_spacing_large", d / "spacing_big.nii.gz")
    write_image(Volume(_ct(), spacing_xyz=(1e-4, 1, 1)), d / "spacing_small.nrrd")
    add("absurd_spacing_small", d / "spacing_small.nrrd")
    write_image(Volume(_ct(shape=(1, 1, 1))), d / "one_voxel.nrrd")
    add("one_voxel", d / "one_voxel.nrrd")
    import SimpleITK as sitk

    rgb = sitk.Image([16, 16, 4], sitk.sitkVectorUInt8, 3)
    sitk.WriteImage(rgb, str(d / "rgb.mha"))
    add("rgb_image", d / "rgb.mha")
    img4 = sitk.JoinSeries([good.to_sitk(), good.to_sitk()])
    sitk.WriteImage(img4, str(d / "4d.nrrd"))
    add("4d_image", d / "4d.nrrd")

    # --- DICOM
    add("dicom_mr", _series(d / "mr", modality="MR"))
    add("dicom_pet", _series(d / "pt", modality="PT"))
    add("dicom_us", _series(d / "us", modality="US"))
    add("dicom_single_slice", _series(d / "one", n=1))
    add("dicom_missing_slice", _series(d / "gap", n=5, drop=2))
    add("dicom_gantry_tilt", _series(d / "tilt", tilt=2.0))
    add("dicom_truncated_pixels", _series(d / "trunc", truncate=1))
    (d / "notdicom").mkdir()
    (d / "notdicom" / "a.dcm").write_bytes(b"DICM" * 10)
    add("dicom_folder_without_dicom", d / "notdicom")
    (d / "empty folder").mkdir()
    add("empty_folder", d / "empty folder")
    _series(d / "tie", uid="1.2.3.1")
    _series(d / "tie" / "b", uid="1.2.3.2")
    add("dicom_two_series_tie", d / "tie")

    # --- masks
    def mask_case(cid, arr, vol=good, name=None):
        p = write_image(vol.with_array(arr) if vol is good else Volume(arr, spacing_xyz=vol.spacing_xyz,
                                                                         origin_xyz=vol.origin_xyz),
                        d / (name or f"{cid}.nii.gz"))
        add(cid, ok_ct, mask=str(p))

    mask_case("mask_empty", np.zeros(good.shape, np.uint8))
    mask_case("mask_full", np.ones(good.shape, np.uint8))
    mask_case("mask_shape_mismatch", np.ones((8, 32, 31), np.uint8), vol=Volume(np.zeros((8, 32, 31))))
    mask_case("mask_spacing_mismatch", m, vol=Volume(m, spacing_xyz=(1, 1, 1)))
    mask_case("mask_origin_mismatch", m, vol=Volume(m, spacing_xyz=(1.5, 1.5, 3.0), origin_xyz=(50, 0, 0)))
    mask_case("mask_not_binary", m * 7 + np.roll(m, 3, axis=1) * 3)
    fm = m.astype(np.float32)
    fm[3, 12, 12] = np.nan
    p = write_image(good.with_array(fm), d / "mask_nan.nrrd")
    add("mask_nan", ok_ct, mask=str(p))
    add("mask_missing_file", ok_ct, mask=str(d / "no_mask.nii.gz"))

    # --- CTC / clinical values
    for cid, ctc in (("ctc_negative", -3), ("ctc_absurd", 1e9), ("ctc_zero_point_absurd", "1e308")):
        add(cid, ok_ct, mask=str(ok_mask), ctc=ctc)
    add("age_absurd", ok_ct, mask=str(ok_mask), ctc=9, age=250)
    add("sex_unknown", ok_ct, mask=str(ok_mask), ctc=9, sex="Q")
    add("site_unknown", ok_ct, mask=str(ok_mask), ctc=9, lesion_site="abdomen")

    # --- broken manifest rows (each must become a failed case, not stop discovery)
    rows += [
        {"case_id": "row_no_ct", "ct": ""},
        {"case_id": "row_bad_ctc", "ct": str(ok_ct), "ctc": "lots"},
        {"case_id": "row_bad_malignant", "ct": str(ok_ct), "malignant": 7},
        {"case_id": "row_bad_risk", "ct": str(ok_ct), "who_risk": "medium"},
        {"case_id": "row_ctc_nan", "ct": str(ok_ct), "ctc": "nan"},
        {"case_id": "ok_plain", "ct": str(ok_ct)},  # duplicate id
    ]
    n_good_rows = len(rows) - 6
    for i in range(1, 7):
        expect[f"manifest_row_{n_good_rows + i}"] = "fail"
    manifest = write_manifest(root / "manifest.csv", rows)
    return manifest, expect


def test_malformed_corpus_gives_clear_errors_and_no_partial_output(tmp_path):
    manifest, expect = build_corpus(tmp_path / "in")
    n_bad = sum(v == "fail" for v in expect.values())
    assert n_bad >= 50
    before = set(os.listdir(tmp_path))
    out = tmp_path / "out"
    rows = run_cohort(discover(manifest), out, RunConfig(steps=["qc"]))
    status = {r["case_id"]: r for r in rows}
    assert set(status) == set(expect), set(status) ^ set(expect)
    for cid, want in expect.items():
        r = status[cid]
        if want == "ok":
            assert r["status"] == "ok", (cid, r["error"])
            assert (out / "cases" / cid / "case.json").is_file()
        else:
            assert r["status"] == "failed", cid
            assert r["error"] and not r["error"].startswith("unexpected"), (cid, r["error"])
            assert not (out / "cases" / cid).exists(), cid
    assert set(os.listdir(tmp_path)) - before == {"out"}  # nothing written outside --out
    assert not (out / ".work").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == n_bad and summary["ok"] == 3


def test_bad_models_are_refused_before_any_case_runs(tmp_path):
    from mediastinal_ai.models import ModelCard, write_card_for

    ct = write_image(Volume(_ct()), tmp_path / "ct.nii.gz")
    # a pickled payload posing as weights, honestly hashed
    import pickle

    mdir = tmp_path / "evil"
    mdir.mkdir()
    (mdir / "m.safetensors").write_bytes(pickle.dumps({"x": 1}))
    write_card_for(mdir / "m.safetensors", ModelCard(name="evil", task="segmentation", weights_file="",
                                                     preprocessing={"plan": {}}))
    # a model whose weights changed after the card was written
    tdir = tmp_path / "tampered"
    tdir.mkdir()
    (tdir / "t.safetensors").write_bytes(b"original")
    write_card_for(tdir / "t.safetensors", ModelCard(name="t", task="segmentation", weights_file=""))
    (tdir / "t.safetensors").write_bytes(b"changed!")
    for model, msg in ((tdir, "sha256 mismatch"), (tmp_path / "missing", "not found")):
        out = tmp_path / f"out_{model.name}"
        r = subprocess.run([*CLI, "run", "--input", str(ct), "--out", str(out), "--steps", "segment",
                            "--seg-model", str(model), "--workers", "0"], capture_output=True, text=True)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr
        assert not (out / "cases").exists()
    out = tmp_path / "out_evil"
    r = subprocess.run([*CLI, "run", "--input", str(ct), "--out", str(out), "--steps", "segment",
                        "--seg-model", str(mdir), "--workers", "0"], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    res = (out / "results.csv").read_text()
    assert "failed" in res and ("safetensors" in res or "plan" in res)


def test_loader_fuzz_only_raises_input_errors(tmp_path):
    """Random corruption of a valid NIfTI and NRRD: the reader either reads or raises InputError."""
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from mediastinal_ai.errors import InputError
    from mediastinal_ai.io import read_ct

    good = {s: write_image(Volume(_ct(shape=(4, 16, 16))), tmp_path / f"g{s}").read_bytes() for s in (".nii.gz", ".nrrd")}
    target = tmp_path / "fuzz"
    target.mkdir()

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(suffix=st.sampled_from(sorted(good)), cut=st.floats(0, 1), flips=st.lists(st.tuples(st.floats(0, 1),
                                                                                        st.integers(0, 255)), max_size=8))
    def fuzz(suffix, cut, flips):
        data = bytearray(good[suffix][: max(1, int(len(good[suffix]) * (0.2 + 0.8 * cut)))])
        for pos, val in flips:
            data[int(pos * (len(data) - 1))] = val
        p = target / f"case{suffix}"
        p.write_bytes(bytes(data))
        try:
            read_ct(p)
        except InputError:
            pass

    assert hypothesis  # the module is used through its decorators
    fuzz()


@pytest.mark.slow
def test_kill_mid_run_then_resume_equals_uninterrupted(tmp_path):
    from mediastinal_ai.io import read_image
    from mediastinal_ai.synthetic import generate_cohort

    manifest = generate_cohort(4, tmp_path / "cohort", seed=777, inplane_size=96)
    args = ["--input", str(manifest), "--steps", "segment", "--workers", "0", "--device", "cpu"]
    ref = tmp_path / "ref"
    r = subprocess.run([*CLI, "run", *args, "--out", str(ref)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "killed"
    p = subprocess.Popen([*CLI, "run", *args, "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not any((out / "cases").glob("*/case.json")):
        time.sleep(0.05)
    time.sleep(0.3)
    p.send_signal(signal.SIGKILL)
    p.wait()
    done_before = len(list((out / "cases").glob("*/case.json")))
    assert done_before < 4, "the run finished before it could be killed"
    r = subprocess.run([*CLI, "run", *args, "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"{done_before} skipped" in r.stdout
    for case in sorted((ref / "cases").iterdir()):
        other = out / "cases" / case.name
        a, b = json.loads((case / "case.json").read_text()), json.loads((other / "case.json").read_text())
        assert a["fingerprint"] == b["fingerprint"] and a["results"] == b["results"]
        for f in ("mask.nrrd", "probability.nrrd"):
            assert np.array_equal(read_image(case / f).array, read_image(other / f).array)
        assert (case / "lesions.csv").read_text() == (other / "lesions.csv").read_text()
