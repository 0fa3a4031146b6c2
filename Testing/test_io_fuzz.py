"""Bounded fuzz of the CT readers: random byte corruption of a good DICOM slice or NIfTI file
must end in a Volume or an InputError naming the file, never another exception."""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_io import _ct_array, write_series  # sibling test module (pytest puts Testing/ on sys.path)

from mediastinal_ai.errors import InputError
from mediastinal_ai.io import read_ct, write_image
from mediastinal_ai.volume import Volume

FUZZ = settings(max_examples=int(os.environ.get("IO_FUZZ_EXAMPLES", "25")), deadline=None, database=None,
                derandomize="IO_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the damaged values

corruptions = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=12)


def _corrupt(data: bytes, edits: list[tuple[float, int]], cut: float | None) -> bytes:
    b = bytearray(data)
    for where, value in edits:
        b[int(where * len(b))] = value
    if cut is not None:
        b = b[: int(cut * len(b))]
    return bytes(b)


def _read(path: Path) -> None:
    try:
        read_ct(path)
    except InputError as e:
        assert e.path is not None and str(e)
    # any other exception type fails the test


@pytest.fixture(scope="module")
def good_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_src")
    write_series(root / "series", _ct_array(nz=3, ny=8, nx=8))
    write_image(Volume(_ct_array(nz=3, ny=8, nx=8)), root / "ct.nii")
    return root


@FUZZ
@given(edits=corruptions, header_only=st.booleans(), cut=st.none() | st.floats(0, 1))
def test_corrupted_dicom_slice(good_files, edits, header_only, cut):
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d) / "series"
        shutil.copytree(good_files / "series", folder)
        victim = sorted(folder.iterdir())[1]
        data = victim.read_bytes()
        if header_only:  # concentrate on the tags (the first ~600 bytes) rather than the pixels
            edits = [(w * min(1.0, 600 / len(data)), v) for w, v in edits]
        victim.write_bytes(_corrupt(data, edits, cut))
        _read(folder)


@FUZZ
@given(edits=corruptions, compressed=st.booleans(), cut=st.none() | st.floats(0, 1))
def test_corrupted_nifti(good_files, edits, compressed, cut):
    data = (good_files / "ct.nii").read_bytes()
    edits = [(w * 352 / len(data), v) for w, v in edits]  # the header is where parsing can go wrong
    bad = _corrupt(data, edits, cut)
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / ("ct.nii.gz" if compressed else "ct.nii")
        p.write_bytes(gzip.compress(bad) if compressed else bad)
        _read(p)


def test_random_bytes_with_image_names():
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        for name in ("x.nii", "x.nii.gz", "x.nrrd", "x.mha", "x.mhd", "x.nhdr"):
            p = Path(d) / name
            p.write_bytes(rng.integers(0, 256, 2000, dtype=np.uint8).tobytes())
            with pytest.raises(InputError):
                read_ct(p)


@FUZZ
@given(cut=st.floats(0.05, 1, exclude_max=True), which=st.sampled_from(["dicom", "nii", "nii.gz"]))
def test_any_truncation_is_refused(good_files, cut, which):
    """A truncated file must never read as a (wrong) volume: ITK and pydicom would often accept it."""
    with tempfile.TemporaryDirectory() as d:
        if which == "dicom":
            target = Path(d) / "series"
            shutil.copytree(good_files / "series", target)
            victim = sorted(target.iterdir())[1]
        else:
            target = victim = Path(d) / f"ct.{which}"
            data = (good_files / "ct.nii").read_bytes()
            victim.write_bytes(gzip.compress(data) if which == "nii.gz" else data)
        data = victim.read_bytes()
        victim.write_bytes(data[: int(cut * len(data))])
        with pytest.raises(InputError):
            read_ct(target)
