"""CT input: DICOM series built here with pydicom (known geometry), the real 20-slice series,
image-file round trips, and every bad input giving an InputError that names the file."""

from __future__ import annotations

import gzip
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mediastinal_ai.errors import InputError
from mediastinal_ai.io import find_dicom_series, read_ct, read_image, read_mask, write_image
from mediastinal_ai.volume import Volume

# the installed console script, as users run it (beside the test interpreter in .venv/bin)
_SCRIPT = Path(sys.executable).parent / "mediastinal-ai"
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "mediastinal_ai.cli"]


def _ct_array(nz=6, ny=10, nx=12, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.integers(-200, 300, size=(nz, ny, nx)).astype(np.int16)
    a[:, 0, :] = -1000
    return a


def write_series(folder: Path, arr: np.ndarray, *, spacing=(0.8, 0.7), dz=2.5, origin=(-50.0, -40.0, 100.0),
                 row=(1.0, 0.0, 0.0), col=(0.0, 1.0, 0.0), modality="CT", slope=1.0, intercept=-1024.0,
                 series_uid=None, positions=None, names=None, extra=None, rgb=False) -> list[Path]:
    """A DICOM series of ``arr`` ([z, y, x] in HU) with known geometry; files named in shuffled order."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = generate_uid()
    row_v, col_v = np.asarray(row, float), np.asarray(col, float)
    normal = np.cross(row_v, col_v)
    stored = np.round((arr.astype(np.float64) - intercept) / slope).astype(np.uint16)
    files = []
    order = np.random.default_rng(1).permutation(len(arr))
    for k in range(len(arr)):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        name = names[k] if names else f"IMG{order[k]:04d}.dcm"
        ds = FileDataset(str(folder / name), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = modality
        ds.SeriesInstanceUID = series_uid
        ds.StudyInstanceUID = study_uid
        ds.FrameOfReferenceUID = generate_uid()
        ds.InstanceNumber = int(len(arr) - k)  # deliberately reversed: sorting must use positions
        pos = positions[k] if positions is not None else np.asarray(origin) + k * dz * normal
        ds.ImagePositionPatient = [float(v) for v in pos]
        ds.ImageOrientationPatient = [*map(float, row_v), *map(float, col_v)]
        ds.PixelSpacing = [spacing[0], spacing[1]]  # row spacing (y), column spacing (x)
        ds.SliceThickness = dz
        ds.Rows, ds.Columns = arr.shape[1], arr.shape[2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.PixelData = stored[k].tobytes()
        if rgb:  # a colour screenshot stored as a series
            ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
            ds.PixelData = np.zeros((arr.shape[1], arr.shape[2], 3), np.uint8).tobytes()
        for key, value in (extra or {}).items():
            setattr(ds, key, value)
        ds.save_as(folder / name, enforce_file_format=True)
        files.append(folder / name)
    return files


def test_dicom_series_geometry_rescale_and_sorting(tmp_path):
    arr = _ct_array()
    write_series(tmp_path / "s", arr, slope=1.0, intercept=-1024.0)
    v = read_ct(tmp_path / "s")
    assert np.array_equal(v.array, arr)
    assert v.spacing_xyz == pytest.approx((0.7, 0.8, 2.5))
    assert v.origin_xyz == pytest.approx((-50.0, -40.0, 100.0))
    assert np.allclose(v.direction, np.eye(3))
    assert v.metadata["modality"] == "CT" and len(v.metadata["dicom_files"]) == 6


def test_oblique_series_matches_simpleitk(tmp_path):
    import SimpleITK as sitk

    a = np.deg2rad(25)
    b = 0.2
    row, col = (np.cos(a), np.sin(a), 0.0), (-np.sin(a) * np.cos(b), np.cos(a) * np.cos(b), -np.sin(b))
    arr = _ct_array(seed=3)
    write_series(tmp_path / "o", arr, row=row, col=col, slope=2.0, intercept=-2048.0)
    v = read_ct(tmp_path / "o")
    r = sitk.ImageSeriesReader()
    r.SetFileNames(r.GetGDCMSeriesFileNames(str(tmp_path / "o")))
    img = r.Execute()
    assert np.array_equal(v.array, sitk.GetArrayFromImage(img).astype(v.array.dtype))
    assert np.allclose(v.spacing_xyz, img.GetSpacing()) and np.allclose(v.origin_xyz, img.GetOrigin(), atol=1e-4)
    assert np.allclose(v.direction.ravel(), img.GetDirection(), atol=1e-6)


@pytest.mark.real_ct
def test_real_dicom_series(real_ct_dir):
    import SimpleITK as sitk

    folder = real_ct_dir / "abdomen_ct_dicom_series"
    v = read_ct(folder)
    r = sitk.ImageSeriesReader()
    r.SetFileNames(r.GetGDCMSeriesFileNames(str(folder)))
    img = r.Execute()
    assert v.shape == (20, 512, 512)
    assert np.array_equal(v.array, sitk.GetArrayFromImage(img))
    assert np.allclose(v.origin_xyz, img.GetOrigin()) and np.allclose(v.spacing_xyz, img.GetSpacing())
    assert v.array.min() == -1024 and v.array.max() == 1839
    assert v.array.dtype == np.int16 and v.units == "HU" and v.metadata["dicom_tags"]["Manufacturer"] == "SIEMENS"
    assert [Path(f).name for f in v.metadata["dicom_files"]] == [Path(f).name for f in r.GetFileNames()]
    one = read_ct(sorted(folder.iterdir())[5])  # one file of the series reads the whole series
    assert np.array_equal(one.array, v.array)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
@pytest.mark.parametrize("oblique", [False, True])
def test_image_roundtrip_keeps_geometry(tmp_path, suffix, oblique):
    d = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]], float)
    if oblique:  # rotation about an arbitrary axis, as a tilted reformat would have
        from scipy.spatial.transform import Rotation

        d = Rotation.from_rotvec([0.3, -0.2, 0.5]).as_matrix()
    v = Volume(_ct_array(), spacing_xyz=(0.7, 0.8, 2.5), origin_xyz=(1.25, -2.5, 300.75), direction=d,
               metadata={"synthetic": True})
    p = write_image(v, tmp_path / f"ct{suffix}")
    back = read_ct(p)
    assert np.array_equal(back.array, v.array) and back.array.dtype == np.int16
    assert np.allclose(back.spacing_xyz, v.spacing_xyz, atol=1e-6) and np.allclose(back.origin_xyz, v.origin_xyz,
                                                                                    atol=1e-4)
    assert np.allclose(back.direction, v.direction, atol=1e-6)  # NIfTI stores the rotation as float32 quaternion
    assert back.metadata.get("synthetic") is True and back.units == "HU"


def test_masks_must_match_the_ct(tmp_path):
    ct = Volume(_ct_array(), spacing_xyz=(0.7, 0.8, 2.5))
    m = np.zeros(ct.shape, np.uint8)
    m[2:4, 3:6, 3:6] = 1
    write_image(ct.with_array(m), tmp_path / "m.nii.gz")
    assert read_mask(tmp_path / "m.nii.gz", ct).array.sum() == 18
    write_image(ct.with_array(np.zeros_like(m)), tmp_path / "empty.nii.gz")
    with pytest.raises(InputError, match="empty"):
        read_mask(tmp_path / "empty.nii.gz", ct)
    write_image(Volume(m, spacing_xyz=(1, 1, 1)), tmp_path / "sp.nii.gz")
    with pytest.raises(InputError, match="spacing"):
        read_mask(tmp_path / "sp.nii.gz", ct)
    write_image(Volume(m[:, :, :5]), tmp_path / "shape.nii.gz")
    with pytest.raises(InputError, match="shape"):
        read_mask(tmp_path / "shape.nii.gz", ct)
    write_image(ct.with_array(m * 3 + (m > 0) * 0 + np.pad(m[:, :, 1:], ((0, 0), (0, 0), (0, 1))) * 2),
                tmp_path / "multi.nii.gz")
    with pytest.raises(InputError, match="not binary"):
        read_mask(tmp_path / "multi.nii.gz", ct)


def _bad_inputs(tmp: Path) -> dict[str, tuple[Path, str]]:
    """What → (path, regex the message must match)."""
    out = {}
    out["missing"] = (tmp / "nope.nii.gz", "not found")
    (tmp / "emptydir").mkdir()
    out["empty folder"] = (tmp / "emptydir", "empty folder")
    (tmp / "notdicom").mkdir()
    (tmp / "notdicom" / "README.txt").write_text("no images here")
    out["folder without DICOM"] = (tmp / "notdicom", "no DICOM")
    write_image(Volume(_ct_array()), tmp / "niftis" / "ct.nii.gz")
    out["folder of NIfTI files"] = (tmp / "niftis", "pass one of them")
    (tmp / "zero.nii.gz").write_bytes(b"")
    out["zero-byte"] = (tmp / "zero.nii.gz", "empty file")
    good = write_image(Volume(_ct_array()), tmp / "good.nii.gz")
    data = good.read_bytes()
    (tmp / "trunc.nii.gz").write_bytes(data[: len(data) // 2])
    out["truncated gzip"] = (tmp / "trunc.nii.gz", "truncated")
    plain = write_image(Volume(_ct_array()), tmp / "plain.nii")
    raw = plain.read_bytes()
    (tmp / "trunc.nii").write_bytes(raw[: len(raw) - 50])  # ITK would read this silently, padding zeros
    out["truncated plain NIfTI"] = (tmp / "trunc.nii", "truncated NIfTI")
    nrrd = write_image(Volume(_ct_array()), tmp / "full.nrrd")
    (tmp / "trunc.nrrd").write_bytes(nrrd.read_bytes()[:-60])
    out["truncated NRRD"] = (tmp / "trunc.nrrd", "cannot read image")
    (tmp / "text.nrrd").write_text("this is not an image")
    out["text as nrrd"] = (tmp / "text.nrrd", "cannot read image")
    (tmp / "raw.nii.gz").write_bytes(gzip.compress(b"\x00" * 100))
    out["garbage nifti"] = (tmp / "raw.nii.gz", "NIfTI")
    (tmp / "scan.png").write_bytes(b"\x89PNG\r\n")
    out["unsupported type"] = (tmp / "scan.png", "unsupported file type")
    write_image(Volume(_ct_array(nz=1)), tmp / "flat.nii.gz")
    out["2D image"] = (tmp / "flat.nii.gz", "2D")
    import SimpleITK as sitk

    rgb = sitk.GetImageFromArray(np.zeros((4, 5, 6, 3), np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(tmp / "rgb.nrrd"))
    out["RGB image"] = (tmp / "rgb.nrrd", "components")
    f = _ct_array().astype(np.float32)
    f[1, 2, 3] = np.nan
    write_image(Volume(f), tmp / "nan.nrrd")  # (ITK's NIfTI writer turns NaN into 0; NRRD keeps it)
    out["NaN voxels"] = (tmp / "nan.nrrd", "NaN")
    f[1, 2, 3] = np.inf
    write_image(Volume(f), tmp / "inf.mha")
    out["inf voxels"] = (tmp / "inf.mha", "infinite")
    write_image(Volume(np.abs(_ct_array()).astype(np.int16) + 100), tmp / "mr.nii.gz")
    out["not HU (no air)"] = (tmp / "mr.nii.gz", "not HU")
    write_image(Volume(_ct_array() + 1024), tmp / "unrescaled.nii.gz")
    out["stored values, rescale not applied"] = (tmp / "unrescaled.nii.gz", "not HU")
    write_image(Volume(_ct_array().astype(np.int32) * 10), tmp / "tenths.nrrd")
    out["tenths of HU"] = (tmp / "tenths.nrrd", "outside the CT scale")
    write_image(Volume(np.zeros((4, 5, 6), np.int16)), tmp / "const.nii.gz")
    out["constant"] = (tmp / "const.nii.gz", "constant")
    m = np.zeros((4, 5, 6), np.uint8)
    m[1:3, 1:3, 1:3] = 1
    write_image(Volume(m, units="label"), tmp / "mask.nii.gz")
    out["a mask given as CT"] = (tmp / "mask.nii.gz", "'label' values")
    write_series(tmp / "mr_series", _ct_array(), modality="MR")
    out["MR series"] = (tmp / "mr_series", "not a CT: Modality MR")
    write_series(tmp / "pt_series", _ct_array(), modality="PT")
    out["PET series"] = (tmp / "pt_series", "not a CT: Modality PT")
    write_series(tmp / "rgb_series", _ct_array(), rgb=True)
    out["RGB DICOM"] = (tmp / "rgb_series", "colour")
    write_series(tmp / "single", _ct_array(nz=1))
    out["single-slice DICOM"] = (tmp / "single", "2D")
    files = write_series(tmp / "corrupt", _ct_array())
    raw = files[2].read_bytes()
    files[2].write_bytes(raw[: len(raw) - 100])
    out["truncated DICOM pixels"] = (tmp / "corrupt", "corrupt or truncated")
    files = write_series(tmp / "cut_header", _ct_array())
    files[0].write_bytes(files[0].read_bytes()[:300])  # the end slice: dropping it would go unnoticed
    out["truncated DICOM header"] = (tmp / "cut_header", "damaged or truncated DICOM file")
    write_series(tmp / "huge", _ct_array(), extra={"Rows": 60000})
    out["absurd DICOM size"] = (tmp / "huge", "implausible image size")
    files = write_series(tmp / "gap", _ct_array())
    files[3].unlink()
    out["missing slice"] = (tmp / "gap", "missing slice")
    zs = [0.0, 2.5, 5.0, 8.0, 10.5, 13.0]
    write_series(tmp / "uneven", _ct_array(), positions=[np.array([-50.0, -40.0, z]) for z in zs])
    out["uneven spacing"] = (tmp / "uneven", "uneven slice spacing")
    pos = [np.array([-50.0 + 3 * k, -40.0, 100.0 + 2.5 * k]) for k in range(6)]
    write_series(tmp / "tilt", _ct_array(), positions=pos)
    out["gantry tilt"] = (tmp / "tilt", "gantry tilt")
    write_series(tmp / "dup", _ct_array(), positions=[np.array([0.0, 0.0, 2.5 * (k // 2)]) for k in range(6)])
    out["duplicate positions"] = (tmp / "dup", "same position")
    write_series(tmp / "mixed", _ct_array(), series_uid="1.2.3.4")
    write_series(tmp / "mixed" / "b", _ct_array(), series_uid="1.2.3.5")
    out["two series tie"] = (tmp / "mixed", "mixed series")
    write_image(Volume(_ct_array(), spacing_xyz=(0.7, 0.7, 400.0)), tmp / "absurd.nii.gz")
    out["absurd spacing"] = (tmp / "absurd.nii.gz", "spacing")
    return out


def test_every_bad_input_gives_a_clear_error(tmp_path):
    for what, (p, reason) in _bad_inputs(tmp_path).items():
        with pytest.raises(InputError) as e:
            read_ct(p)
            pytest.fail(f"no error for {what}")
        msg = str(e.value)
        assert e.value.path is not None and Path(e.value.path).name in msg, (what, msg)
        assert p.name in msg, (what, msg)  # the folder or file the user gave, or a file inside it
        assert re.search(reason, msg), (what, msg)
        assert "Traceback" not in msg and not re.search(r"0x[0-9a-f]{6,}", msg), (what, msg)  # no ITK addresses


def test_irregular_series_can_be_resampled(tmp_path):
    arr = _ct_array()
    files = write_series(tmp_path / "gap", arr)
    files[3].unlink()
    v = read_ct(tmp_path / "gap", on_irregular="resample")
    assert v.shape[0] == 6 and v.metadata["resampled_from_irregular"]
    assert np.array_equal(v.array[0], arr[0]) and np.array_equal(v.array[5], arr[5])
    assert np.allclose(v.array[3], (arr[2].astype(float) + arr[4]) / 2, atol=1)


def test_series_uid_selection(tmp_path):
    write_series(tmp_path / "m", _ct_array(), series_uid="1.2.3.4")
    write_series(tmp_path / "m" / "b", _ct_array(seed=5), series_uid="1.2.3.5")
    assert {s.series_instance_uid for s in find_dicom_series(tmp_path / "m")} == {"1.2.3.4", "1.2.3.5"}
    assert np.array_equal(read_ct(tmp_path / "m", series_uid="1.2.3.5").array, _ct_array(seed=5))
    with pytest.raises(InputError, match="no series"):
        read_ct(tmp_path / "m", series_uid="9.9")


def test_info_cli(tmp_path):
    p = write_image(Volume(_ct_array(), spacing_xyz=(0.7, 0.8, 2.5)), tmp_path / "ct.nrrd")
    r = subprocess.run([*CLI, "info", str(p)], capture_output=True, text=True)
    assert r.returncode == 0 and "spacing (x,y,z) mm: (0.7, 0.8, 2.5)" in r.stdout
    (tmp_path / "bad.nrrd").write_text("nope")
    r = subprocess.run([*CLI, "info", str(tmp_path / "bad.nrrd")], capture_output=True, text=True)
    assert r.returncode == 2 and "bad.nrrd" in r.stderr and "Traceback" not in r.stderr


def test_read_image_has_no_ct_checks(tmp_path):
    p = write_image(Volume(np.zeros((3, 4, 5), np.float32), metadata={"units": "probability"}), tmp_path / "p.nrrd")
    assert read_image(p).array.shape == (3, 4, 5)


def test_dicom_metadata_and_one_file_of_a_series(tmp_path):
    arr = _ct_array()
    files = write_series(tmp_path / "s", arr, series_uid="1.2.9", extra={"SeriesDescription": "SYNTHETIC phantom",
                                                                          "Manufacturer": "ACME", "KVP": "120"})
    write_series(tmp_path / "s", _ct_array(nz=8, seed=4), series_uid="1.2.10",  # a bigger series beside it
                 names=[f"other{k}.dcm" for k in range(8)])
    v = read_ct(files[0])  # one file: its own series, not the biggest one in the folder
    assert v.metadata["series_instance_uid"] == "1.2.9" and np.array_equal(v.array, arr)
    assert v.metadata["synthetic"] is True and v.metadata["other_series"] == ["1.2.10"]
    assert v.metadata["dicom_tags"]["Manufacturer"] == "ACME" and v.metadata["dicom_tags"]["KVP"] == "120"
    assert v.metadata["frame_of_reference_uid"] and v.metadata["study_instance_uid"]
    assert "PatientName" not in v.metadata["dicom_tags"]
    # dicom_files follow the slice positions (the array's z order), not the file names
    import pydicom

    z = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in v.metadata["dicom_files"]]
    assert z == sorted(z) and sorted(v.metadata["dicom_files"]) != v.metadata["dicom_files"]
    assert read_ct(tmp_path / "s").metadata["series_instance_uid"] == "1.2.10"  # folder: the most slices


def test_scanner_padding_and_metal_are_still_hu(tmp_path):
    a = _ct_array(nz=6, ny=20, nx=20).astype(np.int16)
    a[:, -3:, :] = -3024  # outside the reconstruction circle
    a[2, 10, 10] = 20000  # extended-HU metal
    write_series(tmp_path / "pad", a, intercept=-8192.0)
    v = read_ct(tmp_path / "pad")
    assert v.array.min() == -3024 and v.array.max() == 20000
    b = np.full((6, 20, 20), -3024, np.int16)
    b[:, 5:15, 5:15] = 40  # padding + soft tissue only: no air/fat inside the image → not HU
    write_image(Volume(b), tmp_path / "soft.nii.gz")
    with pytest.raises(InputError, match="not HU"):
        read_ct(tmp_path / "soft.nii.gz")
    assert read_ct(tmp_path / "soft.nii.gz", check_hu=False).array.max() == 40


def test_gantry_tilt_resampled_onto_the_normal(tmp_path):
    """A tilted acquisition of a known linear HU field: after resampling, every interior voxel
    holds the field's value at the voxel's physical position."""
    nz, ny, nx, dz, drift = 8, 10, 16, 2.0, 0.35  # slice origins move 0.35 mm along x per slice
    origin = np.array([-20.0, -30.0, 50.0])
    positions = [origin + np.array([k * drift, 0.0, k * dz]) for k in range(nz)]

    def field(p):
        return -200 + 20 * p[..., 0] + 7 * p[..., 1] + 3 * p[..., 2]

    jj, ii = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    arr = np.stack([np.rint(field(np.stack([pos[0] + ii * 0.7, pos[1] + jj * 0.8, np.full(ii.shape, pos[2])], -1)))
                    for pos in positions]).astype(np.int16)
    arr[:, 0, :] = -1000
    write_series(tmp_path / "t", arr, spacing=(0.8, 0.7), positions=positions)
    with pytest.raises(InputError, match="gantry tilt"):
        read_ct(tmp_path / "t")
    v = read_ct(tmp_path / "t", on_irregular="resample")
    assert v.shape == arr.shape and v.metadata["resampled_from_irregular"]
    assert np.allclose(v.origin_xyz, origin) and np.allclose(v.direction, np.eye(3))
    k, j, i = np.meshgrid(np.arange(nz), np.arange(1, ny), np.arange(nx), indexing="ij")
    lps = v.index_to_lps(np.stack([i, j, k], -1))
    inside = (i >= np.ceil(k * drift / 0.7) + 1)  # columns that came from real pixels, not edge padding
    err = np.abs(v.array[k, j, i].astype(float) - field(lps))[inside]
    assert inside.sum() > 500 and err.max() <= 1.5


def test_mask_geometry_errors_say_what_differs(tmp_path):
    ct = Volume(_ct_array(), spacing_xyz=(0.7, 0.8, 2.5), origin_xyz=(10, 20, 30))
    m = np.zeros(ct.shape, np.uint8)
    m[2:4, 3:6, 3:6] = 1
    write_image(Volume(m, spacing_xyz=ct.spacing_xyz, origin_xyz=(10, 20, 32.5)), tmp_path / "o.nii.gz")
    with pytest.raises(InputError, match=r"origin .* off by up to 2\.5 mm"):
        read_mask(tmp_path / "o.nii.gz", ct)
    flip = np.diag([1.0, -1.0, 1.0])
    write_image(Volume(m, spacing_xyz=ct.spacing_xyz, origin_xyz=ct.origin_xyz, direction=flip), tmp_path / "d.nrrd")
    with pytest.raises(InputError, match="orientation"):
        read_mask(tmp_path / "d.nrrd", ct)
    labels = m * 2
    labels[0, 0, 0] = 5
    write_image(ct.with_array(labels), tmp_path / "labels.nrrd")
    assert read_mask(tmp_path / "labels.nrrd", ct, label=2).array.sum() == 18
    with pytest.raises(InputError, match="label 3 does not occur"):
        read_mask(tmp_path / "labels.nrrd", ct, label=3)
    write_image(ct.with_array(np.zeros_like(m)), tmp_path / "empty.nrrd")
    assert read_mask(tmp_path / "empty.nrrd", ct, allow_empty=True).array.sum() == 0


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_units_and_float_maps_round_trip(tmp_path, suffix):
    prob = np.random.default_rng(2).random((4, 5, 6)).astype(np.float32)
    v = Volume(prob, spacing_xyz=(0.5, 0.6, 3.0), units="probability", metadata={"synthetic": True})
    back = read_image(write_image(v, tmp_path / f"p{suffix}"))
    assert back.units == "probability" and back.metadata["synthetic"] is True
    assert back.array.dtype == np.float32 and np.array_equal(back.array, prob) and back.same_geometry(v)
    assert not list(tmp_path.glob(".tmp-*"))  # atomic write left no temporary behind


def test_read_is_one_int16_pass(tmp_path):
    """Reading a series allocates little beyond the int16 stack (no float copy of the volume)."""
    import tracemalloc

    arr = _ct_array(nz=24, ny=128, nx=128)
    write_series(tmp_path / "big", arr)
    read_ct(tmp_path / "big")  # warm imports and caches
    tracemalloc.start()
    v = read_ct(tmp_path / "big")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert v.array.dtype == np.int16 and np.array_equal(v.array, arr)
    assert peak < 2.5 * arr.nbytes, f"peak {peak / 1e6:.1f} MB for a {arr.nbytes / 1e6:.1f} MB volume"


def test_info_cli_dicom_and_resample_warning(tmp_path):
    files = write_series(tmp_path / "gap", _ct_array())
    files[3].unlink()
    r = subprocess.run([*CLI, "info", str(tmp_path / "gap")], capture_output=True, text=True)
    assert r.returncode == 2 and "missing slice" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([*CLI, "info", str(tmp_path / "gap"), "--resample-irregular"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "series chosen:" in r.stdout and "modality: CT" in r.stdout and "warning:" in r.stdout
    assert "shape (z,y,x): (6, 10, 12)" in r.stdout


def test_jpeg_lossless_series_decoded_via_gdcm(tmp_path):
    """pydicom has no JPEG Lossless plugin in this environment; the reader falls back to GDCM."""
    import pydicom
    import SimpleITK as sitk

    arr = _ct_array(seed=7)
    files = write_series(tmp_path / "plain", arr)
    (tmp_path / "jpeg").mkdir()
    for f in files:
        src = pydicom.dcmread(f, stop_before_pixels=True)
        img = sitk.GetImageFromArray(arr[len(files) - int(src.InstanceNumber)][None])  # the slice this file holds
        img.SetSpacing((0.7, 0.8, 2.5))
        img.SetOrigin([float(x) for x in src.ImagePositionPatient])
        for tag, kw in (("0008|0060", "Modality"), ("0020|000e", "SeriesInstanceUID"),
                        ("0020|000d", "StudyInstanceUID"), ("0020|0052", "FrameOfReferenceUID"),
                        ("0008|0016", "SOPClassUID")):
            img.SetMetaData(tag, str(getattr(src, kw)))
        w = sitk.ImageFileWriter()
        w.SetFileName(str(tmp_path / "jpeg" / f.name))
        w.SetUseCompression(True)
        w.SetCompressor("JPEG")
        w.KeepOriginalImageUIDOn()
        w.Execute(img)
    ts = pydicom.dcmread(tmp_path / "jpeg" / files[0].name, stop_before_pixels=True).file_meta.TransferSyntaxUID
    assert "JPEG Lossless" in ts.name
    v = read_ct(tmp_path / "jpeg")
    assert np.array_equal(v.array, arr) and v.same_geometry(read_ct(tmp_path / "plain"))


def test_dicom_read_reports_progress_and_can_be_cancelled(tmp_path):
    from mediastinal_ai.errors import Cancelled
    from mediastinal_ai.progress import CancelToken

    write_series(tmp_path / "s", _ct_array(nz=20))
    seen = []
    read_ct(tmp_path / "s", progress=lambda f, m: seen.append(f))
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        read_ct(tmp_path / "s", cancel=token)
