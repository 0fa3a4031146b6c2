"""Issue 16's malformed-input corpus, generated here (nothing copied): at least 130 inputs of the
kinds the outside attack used — lying NIfTI headers, truncations, NaN/inf voxels, declared sizes
far beyond the data, gzip bombs, absurd spacing and field of view, damaged header fields,
non-UTF-8 names, FIFOs and folders posing as files, broken DICOM series, non-CT values and a
few good controls (synthetic in every format, and the real CTs of ../shared/data/real-ct).

Each input goes through what ``info`` and ``segment`` read (``read_ct``) and through ``run``
(discover + the ``qc`` step, in process and, for the cases a crash would hit, on a Dask worker).
The summary test counts, per input, one of: correct refusal, correct acceptance, wrong-silent
success (accepted with other geometry/values than written, or accepted when it must be refused),
crash (any exception other than InputError, or a dead process), hang (over the hang guard) and
misleading refusal (a message that does not say what is wrong, names no file, or shows ITK build
paths, addresses or a traceback). Every count but the first two must be 0. Synthetic images."""

from __future__ import annotations

import gzip
import json
import os
import re
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from test_batch_hardening import _series  # sibling test modules (pytest puts Testing/ on sys.path)
from test_io_headers import LIES, gz, nifti2_from_nifti1, patch

from mediastinal_ai.errors import InputError
from mediastinal_ai.io import read_ct, write_image
from mediastinal_ai.volume import Volume

FS_REFUSED: list[str] = []  # inputs this file system cannot hold (non-UTF-8 names on APFS, Windows)
HANG_GUARD_S = 60.0  # a hang detector, not a timing test: every input here reads in well under 1 s
DOCS = Path(__file__).resolve().parents[1] / "docs" / "batch.md"


@dataclass
class Entry:
    name: str
    path: Path
    refuse: bool
    words: tuple[str, ...] = ()  # a refusal's message must hold one of these (case-insensitive)
    truth: Volume | None = None  # an accepted input must read back as exactly this
    kind: str = ""
    extra: dict = field(default_factory=dict)


def _ct(shape=(8, 32, 32), seed=0, dtype=np.int16) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.normal(40, 15, size=shape).astype(dtype)
    a[:, :4, :] = -1000
    return a


def _vol(shape=(8, 32, 32), spacing=(0.8, 0.8, 2.5), origin=(-12.0, 30.5, 101.0), dtype=np.int16, seed=0) -> Volume:
    return Volume(_ct(shape, seed, dtype), spacing_xyz=spacing, origin_xyz=origin, units="HU",
                  metadata={"synthetic": True})


def _rename_bytes(src: bytes, dst: bytes, name: str) -> bool:
    try:
        os.rename(src, dst)
        return True
    except OSError:
        FS_REFUSED.append(name)
        return False


def build_corpus(root: Path) -> list[Entry]:
    root.mkdir(parents=True, exist_ok=True)
    E: list[Entry] = []

    def refuse(name, path, *words, kind):
        E.append(Entry(name, Path(path), True, tuple(words), kind=kind))

    def accept(name, path, truth, kind):
        E.append(Entry(name, Path(path), False, truth=truth, kind=kind))

    good = _vol()
    # ---------------------------------------------------------------- controls (accepted, geometry exact)
    for suffix in (".nii", ".nii.gz", ".nrrd", ".mha"):
        accept(f"good{suffix}", write_image(good, root / f"good{suffix}", compress=suffix != ".nii"), good, "control")
    oblique = Volume(_ct(), spacing_xyz=(0.7, 0.7, 3.0), origin_xyz=(5.0, -3.0, 40.0), units="HU",
                     direction=np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1]], float), metadata={"synthetic": True})
    for suffix in (".nii.gz", ".nrrd"):
        accept(f"rotated{suffix}", write_image(oblique, root / f"rotated{suffix}"), oblique, "control")
    thick = _vol(shape=(6, 64, 64), spacing=(1.0, 1.0, 49.0))  # 294 mm long: a (thick-slice) CT, kept
    accept("thick_slices_49mm", write_image(thick, root / "thick.nrrd"), thick, "control")

    # ---------------------------------------------------------------- NIfTI headers that lie (ITK reads them)
    def nifti(name: str) -> Path:
        return write_image(good, root / f"{name}.nii", compress=False)

    for lname, off, fmt, values, words in LIES:
        p = patch(nifti(lname), off, fmt, *values)
        refuse(f"nifti_{lname}", p, words, kind="nifti-header")
        refuse(f"nifti_{lname}_gz", gz(p), words, kind="nifti-header")
    more = [
        ("pixdim3_zero", 88, "f", (0.0,), "pixdim[3]"), ("pixdim2_negative", 84, "f", (-1.0,), "pixdim[2]"),
        ("pixdim1_huge", 80, "f", (1e30,), "sform voxel size"), ("sform_inf", 296, "f", (float("inf"),), "sform"),
        ("qoffset_nan", 272, "f", (float("nan"),), "qform"), ("quaternion_inf", 260, "f", (float("inf"),), "qform"),
        ("vox_offset_negative", 108, "f", (-352.0,), "bad NIfTI header"),
        ("vox_offset_nan", 108, "f", (float("nan"),), "bad NIfTI header"),
        ("bitpix_zero", 72, "h", (0,), "bad NIfTI header"), ("dim_negative", 44, "h", (-5,), "bad NIfTI header"),
        ("ndim_eight", 40, "h", (8,), "bad NIfTI header"), ("sizeof_hdr_wrong", 0, "i", (999,), "not a NIfTI"),
        ("magic_analyze", 344, "4s", (b"\0\0\0\0",), "magic"), ("magic_pair", 344, "4s", (b"ni1\0",), "magic"),
        ("declared_1200_cubed", 40, "4h", (3, 1200, 1200, 1200), "declares"),
        ("declared_more_slices", 40, "4h", (3, 32, 32, 400), "truncated"),
        ("scl_slope_inf", 112, "f", (float("inf"),), "intensity scaling"),
    ]
    for lname, off, fmt, values, words in more:
        p = patch(nifti(lname), off, fmt, *values)
        refuse(f"nifti_{lname}", p, words, kind="nifti-header")
    refuse("nifti2", nifti2_from_nifti1(nifti("n2src"), root / "nifti2.nii"), "NIfTI-2", kind="nifti-header")

    # ---------------------------------------------------------------- truncated / random / empty files
    for suffix in (".nii", ".nii.gz", ".nrrd", ".mha"):
        data = (root / f"good{suffix}").read_bytes()
        for frac in (0.05, 0.5, 0.97):
            p = root / f"trunc{int(frac * 100)}{suffix}"
            p.write_bytes(data[: int(len(data) * frac)])
            refuse(f"truncated_{int(frac * 100)}{suffix}", p, "truncated", "corrupt", "cannot read", "not read",
                   "header", kind="truncated")
        (root / f"empty{suffix}").write_bytes(b"")
        refuse(f"empty{suffix}", root / f"empty{suffix}", "empty file", kind="truncated")
        rng = np.random.default_rng(len(suffix))
        (root / f"random{suffix}").write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
        refuse(f"random{suffix}", root / f"random{suffix}", "not a NIfTI", "corrupt", "cannot read", "unknown",
               "damaged", kind="random")
    (root / "text.nrrd").write_text("hello, not an image\n")
    refuse("text_as_nrrd", root / "text.nrrd", "cannot read", "unknown", "damaged", kind="random")
    (root / "gzip_of_text.nii.gz").write_bytes(gzip.compress(b"not a nifti header at all" * 30))
    refuse("gzip_of_text", root / "gzip_of_text.nii.gz", "not a NIfTI", kind="random")

    # ---------------------------------------------------------------- NaN / inf voxels (every format, and all-NaN)
    for suffix in (".nii", ".nii.gz", ".nrrd", ".mha"):
        for what, value in (("nan", np.nan), ("inf", np.inf), ("minus_inf", -np.inf)):
            a = _ct().astype(np.float32)
            a[3, 10, 10:12] = value
            p = write_image(good.with_array(a), root / f"{what}{suffix}", compress=suffix != ".nii")
            refuse(f"{what}_voxels{suffix}", p, "NaN or infinite", kind="nan")
        p = write_image(good.with_array(np.full(good.shape, np.nan, np.float32)), root / f"allnan{suffix}",
                        compress=suffix != ".nii")
        refuse(f"all_nan{suffix}", p, "NaN or infinite", kind="nan")

    # ---------------------------------------------------------------- declared size vs data (tiny file, huge claim)
    (root / "huge.nrrd").write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 1200 1200 1200\nspacings: 1 1 1\n"
                                     b"encoding: raw\nendian: little\n\n" + b"\0" * 1024)
    refuse("nrrd_declares_1200_cubed", root / "huge.nrrd", "declares", kind="size")
    (root / "huge_gz.nrrd").write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 2000 2000 2000\n"
                                        b"spacings: 1 1 1\nencoding: gzip\nendian: little\n\n"
                                        + gzip.compress(b"\0" * (1 << 20)))
    refuse("nrrd_gzip_declares_2000_cubed", root / "huge_gz.nrrd", "declares", kind="size")
    (root / "huge.mha").write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 1500 1500 1500\nElementType = MET_SHORT\n"
                                    b"ElementSpacing = 1 1 1\nElementDataFile = LOCAL\n" + b"\0" * 2048)
    refuse("mha_declares_1500_cubed", root / "huge.mha", "declares", kind="size")
    bomb = root / "bomb.nii.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as f:  # a good image followed by 256 MB of zeros
        f.write((root / "good.nii").read_bytes())
        for _ in range(16):
            f.write(b"\0" * (1 << 24))
    accept("gzip_bomb_after_a_good_image", bomb, good, "size")  # read as the image its header declares, no more

    # ---------------------------------------------------------------- spacing, field of view, direction
    for name, spacing, words in (("spacing_zero", "0 1 1", ("spacing",)), ("spacing_negative", "-1 1 1", ("spacing",)),
                                 ("spacing_nan", "nan 1 1", ("spacing", "cannot read")),
                                 ("spacing_tiny", "0.0001 1 1", ("spacing",)),
                                 ("spacing_60mm", "60 60 60", ("spacing", "field of view"))):
        hdr = (f"ObjectType = Image\nNDims = 3\nDimSize = 32 32 8\nElementType = MET_SHORT\n"
               f"ElementSpacing = {spacing}\nElementDataFile = LOCAL\n").encode()
        (root / f"{name}.mha").write_bytes(hdr + _ct().tobytes())
        refuse(name, root / f"{name}.mha", *words, kind="geometry")
    for name, extra, words in (("mha_offset_nan", "Offset = nan 0 0\nElementSpacing = 1 1 1\n", "Offset"),
                               ("mha_matrix_nan", "TransformMatrix = nan 0 0 0 1 0 0 0 1\n", "TransformMatrix"),
                               ("mha_matrix_short", "TransformMatrix = 1 0 0 0 1 0 0 0\n", "TransformMatrix"),
                               ("mha_spacing_extra_value", "ElementSpacing = 1 1 1 7\n", "spacing"),
                               ("mha_element_size_negative", "ElementSize = -2 2 2\n", "spacing")):
        hdr = (f"ObjectType = Image\nNDims = 3\nDimSize = 32 32 8\nElementType = MET_SHORT\n{extra}"
               "ElementDataFile = LOCAL\n").encode()
        (root / f"{name}.mha").write_bytes(hdr + _ct().tobytes())
        refuse(name, root / f"{name}.mha", words, kind="geometry")
    for name, line, words in (("nrrd_spacing_negative", "spacings: -0.8 0.8 2.5", "spacing"),
                              ("nrrd_spacing_nan", "spacings: nan 0.8 2.5", "spacings"),
                              ("nrrd_origin_nan", "space: left-posterior-superior\nspace directions: (1,0,0) (0,1,0) "
                                                  "(0,0,2)\nspace origin: (nan,0,0)", "space origin")):
        (root / f"{name}.nrrd").write_bytes(f"NRRD0004\ntype: short\ndimension: 3\nsizes: 32 32 8\n{line}\n"
                                            "encoding: raw\nendian: little\n\n".encode() + _ct().tobytes())
        refuse(name, root / f"{name}.nrrd", words, kind="geometry")
    coarse = _vol(shape=(64, 64, 64), spacing=(49.0, 49.0, 49.0))
    refuse("fov_3m_cube_49mm", write_image(coarse, root / "coarse.nrrd"), "field of view", kind="geometry")
    refuse("fov_long_axis", write_image(_vol(shape=(300, 32, 32), spacing=(1, 1, 10.0)), root / "long.nii.gz"),
           "field of view", kind="geometry")
    for name, dirs, words in (("direction_sheared", "(1,0,0) (0.5,1,0) (0,0,2)", "orthonormal"),
                              ("direction_degenerate", "(1,0,0) (1,0,0) (0,0,2)", ("orthonormal", "cannot read")),
                              ("direction_nan", "(nan,0,0) (0,1,0) (0,0,2)", ("space directions",))):
        (root / f"{name}.nhdr").write_text("NRRD0004\ntype: short\ndimension: 3\nsizes: 32 32 8\n"
                                          "space: left-posterior-superior\n"
                                          f"space directions: {dirs}\nencoding: raw\nendian: little\n"
                                          f"data file: {name}.raw\n\n")
        (root / f"{name}.raw").write_bytes(_ct().tobytes())
        refuse(name, root / f"{name}.nhdr", *((words,) if isinstance(words, str) else words), kind="geometry")
    (root / "gone.nhdr").write_text("NRRD0004\ntype: short\ndimension: 3\nsizes: 4 4 4\nencoding: raw\n"
                                    "data file: missing.raw\n\n")
    refuse("nrrd_data_file_missing", root / "gone.nhdr", "cannot read", kind="geometry")

    # ---------------------------------------------------------------- damaged header fields (not text)
    for suffix, key in ((".mha", b"TransformMatrix"), (".mha", b"ElementSpacing"), (".mha", b"Offset"),
                        (".nrrd", b"MediastinalAI_metadata"), (".nrrd", b"space origin")):
        p = write_image(good, root / f"garbled_{key.decode().replace(' ', '_')}{suffix}", compress=False)
        raw = p.read_bytes()
        k = raw.index(key)
        p.write_bytes(raw[:k + 2] + b"\xfb" + raw[k + 3:])
        refuse(f"garbled_field_{key.decode().replace(' ', '_')}{suffix}", p, "not valid text", "cannot read", "damaged",
               kind="header-text")

    # ---------------------------------------------------------------- not HU, wrong dimensionality
    write_image(good.with_array(np.zeros(good.shape, np.int16)), root / "constant.nrrd")
    refuse("constant_image", root / "constant.nrrd", "constant", kind="values")
    write_image(good.with_array(np.abs(_ct()) + 200), root / "mr_like.nii.gz")
    refuse("no_air_mr_like", root / "mr_like.nii.gz", "not HU", "no air", kind="values")
    write_image(good.with_array((_ct() + 1024).astype(np.uint16)), root / "unrescaled.nii.gz")
    refuse("unrescaled", root / "unrescaled.nii.gz", "not HU", "no air", kind="values")
    write_image(good.with_array(_ct().astype(np.float32) * 100), root / "scaled.nrrd")
    refuse("scaled_x100", root / "scaled.nrrd", "outside the CT scale", kind="values")
    write_image(Volume(_ct(shape=(1, 32, 32))), root / "2d.nii.gz")
    refuse("2d_image", root / "2d.nii.gz", "2D", kind="values")
    import SimpleITK as sitk

    sitk.WriteImage(sitk.Image([16, 16, 4], sitk.sitkVectorUInt8, 3), str(root / "rgb.mha"))
    refuse("rgb_image", root / "rgb.mha", "components", kind="values")
    sitk.WriteImage(sitk.JoinSeries([good.to_sitk(), good.to_sitk()]), str(root / "4d.nrrd"))
    refuse("4d_image", root / "4d.nrrd", "4D", kind="values")
    write_image(Volume(np.zeros((1, 1, 1), np.int16)), root / "one_voxel.nrrd")
    refuse("one_voxel", root / "one_voxel.nrrd", "2D", "too small", kind="values")

    # ---------------------------------------------------------------- files that are not files
    os.mkfifo(root / "fifo.nii.gz")
    refuse("fifo_with_image_suffix", root / "fifo.nii.gz", "not a file", kind="not-a-file")
    os.mkfifo(root / "fifo_plain")
    refuse("fifo_without_suffix", root / "fifo_plain", "not a file", "unsupported", kind="not-a-file")
    (root / "folder.nii.gz").mkdir()
    refuse("folder_with_image_suffix", root / "folder.nii.gz", "empty folder", kind="not-a-file")
    (root / "loop.nii.gz").symlink_to(root / "loop.nii.gz")
    refuse("symlink_loop", root / "loop.nii.gz", "not found", "not a file", "symbolic", kind="not-a-file")
    (root / "dangling.nrrd").symlink_to(root / "nowhere.nrrd")
    refuse("dangling_symlink", root / "dangling.nrrd", "not found", kind="not-a-file")
    refuse("missing_file", root / "missing.nii.gz", "not found", kind="not-a-file")
    (root / "notes.txt").write_text("x")
    refuse("wrong_extension", root / "notes.txt", "unsupported", kind="not-a-file")

    # ---------------------------------------------------------------- non-UTF-8 file names (SimpleITK aborted on them)
    badnames = root / "badnames"
    badnames.mkdir()
    for i, (suffix, raw_name) in enumerate(((".nii.gz", b"bad\xff"), (".nrrd", b"caf\xe9"), (".mha", b"\xfe\xfe"))):
        src = write_image(good, badnames / f"tmp{i}{suffix}")
        dst = os.path.join(os.fsencode(badnames), raw_name + suffix.encode())
        if _rename_bytes(os.fsencode(src), dst, f"non_utf8_name{suffix}"):
            refuse(f"non_utf8_name{suffix}", Path(os.fsdecode(dst)), "UTF-8", kind="name")

    # ---------------------------------------------------------------- DICOM series
    dicom = root / "dicom"
    for name, kw, words in (
        ("dicom_mr", {"modality": "MR"}, ("MR", "not a CT", "no CT")),
        ("dicom_pet", {"modality": "PT"}, ("PT", "not a CT", "no CT")),
        ("dicom_single_slice", {"n": 1}, ("single-slice", "2D")),
        ("dicom_missing_slice", {"n": 6, "drop": 2}, ("missing slice",)),
        ("dicom_gantry_tilt", {"tilt": 2.0}, ("tilt",)),
        ("dicom_truncated_pixels", {"truncate": 1}, ("truncated", "damaged", "pixel")),
    ):
        refuse(name, _series(dicom / name, **kw), *words, kind="dicom")
    d = _series(dicom / "good_series")
    accept_dicom = read_ct(d)  # the truth of a DICOM control: its own geometry, tested elsewhere against pydicom
    accept("dicom_good_series", d, accept_dicom, "control")
    d = _series(dicom / "series_with_non_utf8_file")  # pydicom reads it; the run used to fail on hashing its name
    truth = read_ct(d)
    if _rename_bytes(os.fsencode(sorted(d.glob("*.dcm"))[1]), os.path.join(os.fsencode(d), b"sl\xffce.dcm"),
                     "dicom_series_with_non_utf8_file_name"):
        accept("dicom_series_with_non_utf8_file_name", d, truth, "control")
    (dicom / "not_dicom").mkdir(parents=True)
    (dicom / "not_dicom" / "a.dcm").write_bytes(b"DICM" * 10)
    refuse("dicom_folder_without_dicom", dicom / "not_dicom", "DICOM", kind="dicom")
    (dicom / "empty").mkdir()
    refuse("empty_folder", dicom / "empty", "empty folder", kind="dicom")
    import pydicom

    for name, tag, value, words in (("dicom_rows_zero", "Rows", 0, ("implausible", "pixel", "damaged", "shape")),
                                    ("dicom_pixel_spacing_zero", "PixelSpacing", [0.0, 0.0], ("PixelSpacing",)),
                                    ("dicom_orientation_zero", "ImageOrientationPatient", [0.0] * 6,
                                     ("ImageOrientationPatient",)),
                                    ("dicom_positions_equal", "ImagePositionPatient", [0.0, 0.0, 0.0],
                                     ("same position",))):
        s = _series(dicom / name)
        for f in sorted(s.glob("*.dcm")):
            ds = pydicom.dcmread(f)
            setattr(ds, tag, value)
            ds.save_as(f)
        refuse(name, s, *words, kind="dicom")
    return E


# ------------------------------------------------------------------------------------------- judging
_NOISE = re.compile(r"Traceback|SimpleITK-build|\.cxx|0x[0-9a-f]{6,}|unexpected|sitk::ERROR|itk::", re.IGNORECASE)


def judge(e: Entry, fn) -> tuple[str, str]:
    """(verdict, detail) for one input through ``fn`` (a reader returning a Volume)."""
    t = time.perf_counter()
    try:
        v = fn(e.path)
    except InputError as err:
        msg = str(err)
        if time.perf_counter() - t > HANG_GUARD_S:
            return "hang", msg
        if not e.refuse:
            return "wrong_refusal", msg
        ok_words = any(w.lower() in msg.lower() for w in e.words)
        names_file = os.path.basename(os.fsdecode(e.path))[:8].encode("ascii", "backslashreplace").decode() in \
            msg.encode("ascii", "backslashreplace").decode() or ascii(os.fsdecode(e.path))[1:-1][-12:] in msg
        if not ok_words or not names_file or _NOISE.search(msg) or "\n" in msg or len(msg) > 600:
            return "misleading", msg
        return "refused", msg
    except Exception as err:  # noqa: BLE001 - anything but InputError is a crash of the reader
        return "crash", f"{type(err).__name__}: {err}"
    if time.perf_counter() - t > HANG_GUARD_S:
        return "hang", ""
    if e.refuse:
        return "wrong_silent", f"accepted: shape {v.shape} spacing {v.spacing_xyz} origin {v.origin_xyz}"
    truth = e.truth
    same = (v.shape == truth.shape and np.allclose(v.spacing_xyz, truth.spacing_xyz, atol=1e-4)
            and np.allclose(v.origin_xyz, truth.origin_xyz, atol=1e-3) and np.allclose(v.direction, truth.direction,
                                                                                       atol=1e-5)
            and np.array_equal(np.asarray(v.array, np.float64), np.asarray(truth.array, np.float64)))
    return ("accepted", "") if same else ("wrong_silent", f"geometry/values differ: {v.spacing_xyz} {v.origin_xyz}")


def _summary(verdicts: dict[str, tuple[str, str]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for verdict, _ in verdicts.values():
        counts[verdict] = counts.get(verdict, 0) + 1
    return counts


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Entry]:
    return build_corpus(tmp_path_factory.mktemp("corpus"))


def test_corpus_is_big_enough_and_documented(corpus):
    if FS_REFUSED:
        pytest.skip(f"this file system refuses {FS_REFUSED}: the corpus is smaller than the documented one")
    n = len(corpus)
    assert n >= 130, n
    assert len({e.name for e in corpus}) == n
    kinds = {e.kind for e in corpus}
    assert {"nifti-header", "truncated", "nan", "size", "geometry", "header-text", "name", "not-a-file", "dicom",
            "values", "control"} <= kinds
    text = DOCS.read_text(encoding="utf-8")
    assert f"{n} generated inputs" in text, f"docs/batch.md must state the corpus size ({n} generated inputs)"


def test_info_and_segment_reader_over_the_corpus(corpus):
    """``info`` and ``segment`` both read with ``read_ct`` before anything else: every input must
    end as a correct acceptance or a clear refusal. The real CTs of ../shared/data/real-ct are
    added when present (the generated corpus runs without them)."""
    from conftest import REAL_CT_DIR

    verdicts = {e.name: judge(e, read_ct) for e in corpus}
    for f in sorted(REAL_CT_DIR.rglob("*.nii.gz")) if REAL_CT_DIR.is_dir() else []:  # accepted (masks are not CTs)
        if "mask" in f.name:
            continue
        v = read_ct(f)
        verdicts[f"real:{f.name}"] = ("accepted", "") if min(v.shape) > 10 else ("wrong_refusal", str(v.shape))
    counts = _summary(verdicts)
    bad = {k: v for k, v in verdicts.items() if v[0] not in ("refused", "accepted")}
    assert not bad, f"{counts}\n" + "\n".join(f"{k}: {v}" for k, v in bad.items())
    assert counts.get("refused", 0) >= 120 and counts.get("accepted", 0) >= 8, counts


def test_info_cli_over_a_sample_prints_one_clear_line(corpus, capfd):
    """The ``info`` command itself (in process): one ``error:`` line on stderr, exit 2, nothing of ITK."""
    from mediastinal_ai.cli import main

    sample = [e for e in corpus if e.kind in ("nifti-header", "header-text", "geometry", "truncated", "name")][::3]
    assert len(sample) >= 20
    for e in sample:
        capfd.readouterr()
        rc = main(["info", os.fsdecode(e.path)])
        err = capfd.readouterr().err
        lines = [x for x in err.splitlines() if x.strip() and " INFO " not in x]
        assert rc == 2 and len(lines) == 1 and lines[0].startswith("mediastinal-ai info: error:"), (e.name, err)
        assert not _NOISE.search(err), (e.name, err)


def test_run_over_the_corpus_records_every_case(corpus, tmp_path):
    """``run`` (discover + qc, in process): one row per input, failed with the reason or ok, the run
    ends, nothing is written outside --out; summary.json agrees with results.csv."""
    import csv

    from mediastinal_ai.batch import RunConfig, discover, run_cohort
    from mediastinal_ai.cohort import write_manifest

    plain = [e for e in corpus if e.kind != "name"]
    manifest = write_manifest(tmp_path / "corpus.csv", [{"case_id": e.name, "ct": str(e.path)} for e in plain])
    names_dir = next((e.path.parent for e in corpus if e.kind == "name"), None)
    before = set(os.listdir(tmp_path))
    out = tmp_path / "out"
    rows = run_cohort(discover([manifest] + ([names_dir] if names_dir else [])), out,
                      RunConfig(steps=["qc"], workers=0))
    by_id = {r["case_id"]: r for r in rows}
    assert len(rows) == len(corpus)
    for e in plain:
        r = by_id[e.name]
        want = "failed" if e.refuse else "ok"
        assert r["status"] == want, (e.name, r.get("error"))
        if e.refuse:
            assert any(w.lower() in r["error"].lower() for w in e.words) and not _NOISE.search(r["error"]), \
                (e.name, r["error"])
    name_rows = [r for r in rows if r["case_id"] not in {e.name for e in plain}]
    assert len(name_rows) == sum(e.kind == "name" for e in corpus) and all(r["status"] == "failed" and "UTF-8" in r["error"] for r in name_rows)
    assert set(os.listdir(tmp_path)) - before == {"out"}
    table = list(csv.DictReader((out / "results.csv").open(encoding="utf-8")))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["cases"] == len(table) == len(corpus)
    assert summary["failed"] == sum(r["status"] == "failed" for r in table)
    assert summary["ok"] == sum(r["status"] == "ok" for r in table) == sum(not e.refuse for e in plain)


@pytest.mark.slow
def test_run_on_dask_survives_the_native_crash_kinds(corpus, tmp_path):
    """The kinds that once crashed a process (non-UTF-8 names, damaged header fields, huge claims),
    on a Dask worker through the real CLI: the run ends, every case has its row."""
    import subprocess
    import sys

    pick = [e for e in corpus if e.kind in ("header-text", "size") or e.name.startswith("good")]
    from mediastinal_ai.cohort import write_manifest

    manifest = write_manifest(tmp_path / "m.csv", [{"case_id": e.name, "ct": str(e.path)} for e in pick])
    names = [str(e.path.parent) for e in corpus if e.kind == "name"][:1]
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "mediastinal_ai.cli", "run", "--input", str(manifest),
                        *names, "--out", str(out), "--steps", "qc", "--workers", "1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"] == len(pick) + sum(e.kind == "name" for e in corpus) and summary["ok"] == sum(not e.refuse for e in pick)
    assert "Traceback" not in r.stderr and "SimpleITK-build" not in r.stderr


def test_header_patch_helper_is_what_it_claims(tmp_path):
    """The corpus' NIfTI patches hit the fields they name (guards the generator itself)."""
    p = write_image(_vol(), tmp_path / "x.nii", compress=False)
    patch(p, 80, "f", 0.0)
    assert struct.unpack_from("<f", p.read_bytes(), 80)[0] == 0.0
