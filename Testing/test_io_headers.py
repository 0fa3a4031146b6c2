"""Lying image headers (issue 16, items 2, 3 and 7): NIfTI geometry read by us, not trusted to ITK;
NaN/inf voxels refused (all-NaN too); declared size checked before any allocation; bounded gzip
reading; non-UTF-8 names refused before SimpleITK. All images here are synthetic."""

from __future__ import annotations

import gzip
import os
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from mediastinal_ai.errors import InputError
from mediastinal_ai.io import read_ct, write_image
from mediastinal_ai.volume import Volume


def synthetic_ct(shape=(6, 24, 24), dtype=np.int16, seed=0) -> np.ndarray:
    """A tiny synthetic 'CT' (air band + soft tissue), enough for the HU rule."""
    rng = np.random.default_rng(seed)
    a = rng.normal(40, 15, size=shape).astype(dtype)
    a[:, :4, :] = -1000
    return a


def good_nifti(path: Path, dtype=np.int16, spacing=(0.8, 0.8, 2.5)) -> Path:
    vol = Volume(synthetic_ct(dtype=dtype), spacing_xyz=spacing, origin_xyz=(-10.0, 5.0, 30.0), units="HU",
                 metadata={"synthetic": True})
    return write_image(vol, path, compress=False)


def patch(path: Path, offset: int, fmt: str, *values) -> Path:
    raw = bytearray(path.read_bytes())
    struct.pack_into("<" + fmt, raw, offset, *values)
    path.write_bytes(bytes(raw))
    return path


def gz(path: Path) -> Path:
    out = path.with_name(path.name + ".gz")
    out.write_bytes(gzip.compress(path.read_bytes(), compresslevel=1))
    return out


def test_control_reads(tmp_path):
    v = read_ct(good_nifti(tmp_path / "ok.nii"))
    assert np.allclose(v.spacing_xyz, (0.8, 0.8, 2.5), rtol=1e-5)
    v = read_ct(gz(good_nifti(tmp_path / "ok2.nii")))
    assert v.shape == (6, 24, 24)


# (name, offset, struct format, values, words the message must hold)
LIES = [
    ("pixdim1_zero", 80, "f", (0.0,), "pixdim[1]"),
    ("pixdim2_inf", 84, "f", (float("inf"),), "pixdim[2]"),
    ("pixdim3_nan", 88, "f", (float("nan"),), "pixdim[3]"),
    ("pixdim1_negative", 80, "f", (-0.8,), "pixdim[1]"),
    ("quaternion_nan", 256, "f", (float("nan"),), "qform"),
    ("quaternion_norm_gt_1", 256, "3f", (0.9, 0.9, 0.9), "qform"),
    ("qoffset_inf", 268, "f", (float("inf"),), "qform"),
    ("sform_nan", 280, "f", (float("nan"),), "sform"),
    ("sform_scale_vs_pixdim", 280, "f", (7.0,), "sform voxel size"),
    ("qform_sform_mirror", 256, "3f", (1.0, 0.0, 0.0), "qform and sform"),
    ("qform_sform_origin", 268, "f", (123.0,), "qform and sform"),
    ("scl_inter_inf", 116, "f", (float("inf"),), "intensity scaling"),
    ("dim_zero", 42, "h", (0,), "bad NIfTI header"),
]


@pytest.mark.parametrize("name,offset,fmt,values,words", LIES, ids=[x[0] for x in LIES])
@pytest.mark.parametrize("compressed", [False, True], ids=["nii", "niigz"])
def test_lying_nifti_header_is_refused(tmp_path, name, offset, fmt, values, words, compressed):
    p = patch(good_nifti(tmp_path / f"{name}.nii"), offset, fmt, *values)
    if compressed:
        p = gz(p)
    with pytest.raises(InputError) as e:
        read_ct(p)
    assert words in str(e.value), str(e.value)


def test_nan_and_inf_voxels_refused_not_zeroed(tmp_path):
    p = good_nifti(tmp_path / "nan.nii", dtype=np.float32)
    raw = bytearray(p.read_bytes())
    off = int(struct.unpack_from("<f", raw, 108)[0])
    struct.pack_into("<2f", raw, off + 40, float("nan"), float("-inf"))
    p.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="2 voxel"):
        read_ct(p)
    with pytest.raises(InputError, match="2 voxel"):
        read_ct(gz(p))


def test_all_nan_is_called_nan_not_constant(tmp_path):
    vol = Volume(np.full((4, 8, 8), np.nan, np.float32), spacing_xyz=(1, 1, 1), units="HU", metadata={"synthetic": True})
    p = write_image(vol, tmp_path / "allnan.nii.gz")
    with pytest.raises(InputError, match="all voxels are NaN"):
        read_ct(p)


def test_declared_size_refused_before_allocation(tmp_path):
    p = tmp_path / "huge.nrrd"  # 1200^3 int16 declared (3.4 GB), 1 kB of data
    p.write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 1200 1200 1200\nspacings: 1 1 1\n"
                  b"encoding: raw\nendian: little\n\n" + b"\0" * 1024)
    t = time.perf_counter()
    with pytest.raises(InputError, match="declares"):
        read_ct(p)
    assert time.perf_counter() - t < 5
    n = good_nifti(tmp_path / "big.nii")
    patch(n, 40, "4h", 3, 1200, 1200, 1200)
    with pytest.raises(InputError, match="declares"):
        read_ct(n)


def test_gzip_bomb_reads_only_the_declared_bytes(tmp_path):
    ok = good_nifti(tmp_path / "b.nii").read_bytes()
    bomb = tmp_path / "bomb.nii.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as f:  # a valid image followed by 1 GB of zeros
        f.write(ok)
        zeros = b"\0" * (1 << 24)
        for _ in range(64):
            f.write(zeros)
    assert bomb.stat().st_size < 3_000_000
    t = time.perf_counter()
    import mediastinal_ai.io.images as images

    images._check_nifti_complete(bomb)  # must not stream the whole gigabyte
    assert time.perf_counter() - t < 1.0


@pytest.mark.skipif(os.name != "posix", reason="byte file names are a POSIX thing")
def test_non_utf8_name_refused_before_simpleitk(tmp_path):
    src = good_nifti(tmp_path / "x.nii")
    bad = os.path.join(os.fsencode(tmp_path), b"bad\xff\xfe.nii")
    try:
        os.rename(os.fsencode(src), bad)
    except OSError:
        pytest.skip("file system refuses non-UTF-8 names")
    with pytest.raises(InputError, match="UTF-8"):
        read_ct(os.fsdecode(bad))


def test_fifo_and_permission_are_named(tmp_path):
    fifo = tmp_path / "pipe.nii"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a file"):
        read_ct(fifo)
    p = good_nifti(tmp_path / "locked.nii")
    p.chmod(0)
    try:
        if os.access(p, os.R_OK):
            pytest.skip("running as root: permissions are not enforced")
        with pytest.raises(InputError, match="permission denied"):
            read_ct(p)
    finally:
        p.chmod(0o644)


def test_real_ct_headers_still_accepted(real_ct_dir):
    f = real_ct_dir / "mediastinum_crop_ct.nii.gz"
    if not f.is_file():
        pytest.skip("real CT sample absent")
    v = read_ct(f)
    assert np.allclose(v.spacing_xyz, (1.5, 1.5, 1.5), atol=1e-3)


# ----------------------------------------------------------------------------- added after review
def test_analyze_style_magic_is_refused(tmp_path):
    """A .nii whose magic is not 'n+1' is read by ITK as Analyze 7.5, without its orientation."""
    for compressed in (False, True):
        p = patch(good_nifti(tmp_path / f"analyze{int(compressed)}.nii"), 344, "4s", b"\0\0\0\0")
        with pytest.raises(InputError, match="magic"):
            read_ct(gz(p) if compressed else p)


def nifti2_from_nifti1(src: Path, dst: Path, **override) -> Path:
    """The same image as a NIfTI-2 file (header fields converted by hand, voxels unchanged)."""
    raw = src.read_bytes()
    f = lambda fmt, off: struct.unpack_from("<" + fmt, raw, off)  # noqa: E731
    dims, pixdim, vox = f("8h", 40), list(f("8f", 76)), int(f("f", 108)[0])
    quat, srow = list(f("6f", 256)), list(f("12f", 280))
    pixdim = override.get("pixdim", pixdim)
    h = bytearray(540)
    struct.pack_into("<i8s2h", h, 0, 540, b"n+2\0\r\n\x1a\n", *f("2h", 70))
    struct.pack_into("<8q", h, 16, *dims)
    struct.pack_into("<8d", h, 104, *pixdim)
    struct.pack_into("<q2d", h, 168, 544, *f("2f", 112))
    struct.pack_into("<2i6d12d", h, 344, *f("2h", 252), *quat, *srow)
    struct.pack_into("<i", h, 500, f("B", 123)[0])  # xyzt_units
    dst.write_bytes(bytes(h) + b"\0" * 4 + raw[vox:])
    return dst


def test_nifti2_is_refused_by_name(tmp_path):
    src = good_nifti(tmp_path / "one.nii")
    for p in (nifti2_from_nifti1(src, tmp_path / "two.nii"), gz(nifti2_from_nifti1(src, tmp_path / "two2.nii"))):
        with pytest.raises(InputError, match="NIfTI-2 files cannot be read"):
            read_ct(p)


def test_header_field_that_is_not_text_is_a_clear_error(tmp_path):
    """SimpleITK raised a bare TypeError on it ('unexpected error'); ITK skips a garbled field name."""
    p = write_image(Volume(synthetic_ct(), spacing_xyz=(1, 1, 2), metadata={"synthetic": True}), tmp_path / "a.mha")
    raw = p.read_bytes()
    k = raw.index(b"TransformMatrix")
    p.write_bytes(raw[:k + 5] + b"\xfb" + raw[k + 6:])
    with pytest.raises(InputError, match="not valid text"):
        read_ct(p)


def test_itk_chatter_never_reaches_stderr(tmp_path, capfd, caplog):
    """ITK/MetaIO print multi-line messages with build paths on fd 2; they go to the log, tidied."""
    import logging

    p = write_image(Volume(synthetic_ct(), spacing_xyz=(1, 1, 2), metadata={"synthetic": True}), tmp_path / "t.mha",
                    compress=False)
    p.write_bytes(p.read_bytes()[:-500])  # MetaIO: "M_ReadElementsData: data not read completely"
    capfd.readouterr()
    with caplog.at_level(logging.INFO, logger="mediastinal_ai.io.images"), pytest.raises(InputError):
        read_ct(p)
    assert capfd.readouterr().err == ""
    from mediastinal_ai.io.images import native_messages_to_log

    with caplog.at_level(logging.INFO, logger="mediastinal_ai.io.images"), native_messages_to_log(p):
        os.write(2, b"WARNING: In /tmp/SimpleITK-build/ITK/Modules/IO/NIFTI/src/itkNiftiImageIO.cxx, line 1053\n"
                    b"NiftiImageIO (0x55ac18edbc10): t.mha is Analyze file and it's deprecated \n\n")
    assert capfd.readouterr().err == ""
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ITK")]
    assert any("is Analyze file" in m for m in logged), logged
    assert not any("SimpleITK-build" in m or "0x55" in m or "line 1053" in m for m in logged), logged


def test_field_of_view_bounds_resampling(tmp_path):
    """49 mm voxels on a 64³ grid claim a 3 m cube: refused before any model resamples it."""
    vol = Volume(synthetic_ct(shape=(64, 64, 64)), spacing_xyz=(49, 49, 49), metadata={"synthetic": True})
    with pytest.raises(InputError, match="field of view"):
        read_ct(write_image(vol, tmp_path / "coarse.nrrd"))
    flat = Volume(synthetic_ct(shape=(8, 512, 512)), spacing_xyz=(1.0, 1.0, 49), metadata={"synthetic": True})
    assert read_ct(write_image(flat, tmp_path / "thick_slices.nrrd")).shape == (8, 512, 512)  # 392 mm: a CT
    from conftest import REAL_CT_DIR

    from mediastinal_ai.io.images import check_field_of_view

    for f in sorted(REAL_CT_DIR.rglob("*.nii.gz")) if REAL_CT_DIR.is_dir() else []:  # every real CT passes
        if "mask" not in f.name:
            check_field_of_view(read_ct(f), f)
    series = REAL_CT_DIR / "abdomen_ct_dicom_series"
    if series.is_dir():
        assert read_ct(series).shape[0] == 20
