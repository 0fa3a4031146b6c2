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
