"""Image files (NIfTI, NRRD, MHA/MHD) and the CT plausibility checks shared with DICOM."""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..fileio import atomic_path
from ..volume import Volume

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
META_KEY = "MediastinalAI_metadata"  # JSON of the Volume's metadata, in NRRD/MHA headers
# A CT in HU holds air (about -1000) and no value far outside the scanner range.
HU_MIN, HU_MAX = -1100.0, 4100.0
AIR_OR_FAT_HU = -200.0  # a CT of the chest always holds something below this (lung, air, fat)
MAX_OUTSIDE_FRACTION = 0.01
PADDING_MIN_FRACTION = 0.001
NOTES_PREFIX = "MediastinalAI"  # NIfTI keeps only an 80-character 'descrip': units + synthetic go there
MAX_SPACING_MM = 50.0


def _suffix_ok(p: Path) -> bool:
    return p.name.lower().endswith(IMAGE_SUFFIXES)


def check_path_name(p: Path) -> None:
    """Refuse a path that is not valid UTF-8 before it reaches native code.

    Why: SimpleITK aborts the whole process (SIGABRT) on a file name it cannot convert, which
    would end a batch instead of failing one case.
    """
    try:
        str(p).encode("utf-8")
    except UnicodeEncodeError:
        raise InputError("path is not valid UTF-8 (native readers and writers cannot use it); rename it",
                         ascii(str(p))) from None


_MHA_SPACING = ("ElementSpacing", "ElementSize")
_MHA_ORIGIN = ("Offset", "Position", "Origin")
_MHA_MATRIX = ("TransformMatrix", "Rotation", "Orientation")


def _header_lines(p: Path) -> list[str]:
    """The text header of a MetaImage (up to ``ElementDataFile``) or NRRD (up to the blank line)."""
    with open(p, "rb") as f:
        raw = f.read(1 << 16)
    lines = []
    nrrd = p.name.lower().endswith((".nrrd", ".nhdr"))
    for line in raw.split(b"\n"):
        text = line.decode("latin-1").rstrip("\r")
        if nrrd and not text.strip():
            break
        lines.append(text)
        if not nrrd and text.split("=")[0].strip() == "ElementDataFile":
            break
    return lines


def _numbers(value: str, what: str, p: Path) -> np.ndarray:
    try:
        v = np.array([float(t) for t in re.split(r"[\s,()]+", value.strip()) if t], dtype=np.float64)
    except ValueError:
        raise InputError(f"bad {what} in the header: {value.strip()[:80]!r} is not a list of numbers", p) from None
    if not np.all(np.isfinite(v)):
        raise InputError(f"bad {what} in the header: {value.strip()[:80]!r} holds NaN or infinite values", p)
    return v


def _text_header_geometry(p: Path) -> dict:
    """Read the geometry fields of an MHA/MHD or NRRD header ourselves; refuse values that lie.

    Why: ITK reads a negative spacing as its absolute value (the mirroring is lost), a NaN NRRD
    spacing as 1 mm, a NaN MetaImage ``Offset`` as 0 and ignores extra values; each gave a
    silently wrong geometry. Every spacing must be a positive finite number, every origin and
    direction value finite, with one value per axis. Returns what was read, for
    :func:`_compare_text_header` to hold ITK's reading against.
    """
    nrrd = p.name.lower().endswith((".nrrd", ".nhdr"))
    fields: dict[str, str] = {}
    for line in _header_lines(p):
        if nrrd:
            if line.startswith("#") or ":=" in line or ":" not in line:
                continue
            k, v = line.split(":", 1)
        else:
            if "=" not in line:
                continue
            k, v = line.split("=", 1)
        fields.setdefault(k.strip(), v.strip())
    try:
        ndim = int(fields.get("dimension" if nrrd else "NDims", "0"))
    except ValueError:
        ndim = 0
    spacing = origin = None
    if nrrd:
        if "spacings" in fields:
            spacing = _numbers(fields["spacings"], "spacings", p)
        if "space directions" in fields:
            vecs = re.findall(r"\(([^)]*)\)", fields["space directions"])
            rows = [_numbers(v, "space directions", p) for v in vecs]
            if any(len(r) != len(rows[0]) for r in rows) or any(np.linalg.norm(r) <= 0 for r in rows):
                raise InputError(f"bad space directions in the header: {fields['space directions'][:80]!r}", p)
            if spacing is None and rows:  # one vector per spatial axis ("none" axes are not listed)
                spacing = np.array([np.linalg.norm(r) for r in rows])
                ndim = 0
        if "space origin" in fields:
            origin = np.abs(_numbers(fields["space origin"], "space origin", p))  # RAS or LPS: compare magnitudes
    else:
        key = next((k for k in _MHA_SPACING if k in fields), None)
        if key:
            spacing = _numbers(fields[key], key, p)
        key = next((k for k in _MHA_ORIGIN if k in fields), None)
        if key:
            origin = _numbers(fields[key], key, p)
            if ndim and len(origin) != ndim:
                raise InputError(f"bad {key} in the header: {len(origin)} values for a {ndim}D image", p)
        key = next((k for k in _MHA_MATRIX if k in fields), None)
        if key and ndim and len(_numbers(fields[key], key, p)) != ndim * ndim:
            raise InputError(f"bad {key} in the header: not {ndim}x{ndim} values", p)
    if spacing is not None:
        if ndim and len(spacing) != ndim:
            raise InputError(f"bad voxel spacing in the header: {len(spacing)} values for a {ndim}D image", p)
        if np.any(spacing <= 0):
            raise InputError(f"bad voxel spacing in the header: {spacing.tolist()} (every spacing must be a "
                             "positive number of mm; a negative one does not mirror the image in this format)", p)
    return {"nrrd": nrrd, "spacing": spacing, "origin": origin}


def _compare_text_header(p: Path, ours: dict, itk_spacing: tuple, itk_origin: tuple) -> None:
    """ITK's reading of spacing and origin must be the header's own (see :func:`_text_header_geometry`)."""
    spacing, origin = ours["spacing"], ours["origin"]
    if spacing is not None:
        n = min(len(spacing), len(itk_spacing))
        if not np.allclose(spacing[:n], np.asarray(itk_spacing[:n], dtype=np.float64), rtol=1e-5):
            raise InputError(f"inconsistent header: spacing {spacing.tolist()} read as {list(itk_spacing)} by ITK", p)
    if origin is not None:
        theirs = np.asarray(itk_origin, dtype=np.float64)
        theirs = np.abs(theirs) if ours["nrrd"] else theirs
        n = min(len(origin), len(theirs))
        if not np.allclose(origin[:n], theirs[:n], atol=1e-3):
            raise InputError(f"inconsistent header: origin {origin.tolist()} read as {list(itk_origin)} by ITK", p)


def _metadata_of(reader: Any, p: Path) -> dict[str, str]:
    """The header's key/value fields; a header with a field that is not valid text is refused.

    Why: SimpleITK raised a bare ``TypeError`` on such a field (a damaged NRRD/MHA header),
    which reached the user as an "unexpected error"; and ITK itself skips a field whose name
    it cannot read (``Transf\\x94rmMatrix``), silently using a default geometry instead.
    """
    keys: dict[str, str] = {}
    names: list[str] = []
    try:
        names = list(reader.GetMetaDataKeys())
        for k in names:
            keys[k] = reader.GetMetaData(k)
    except (TypeError, UnicodeDecodeError, SystemError):
        bad = next((ascii(k) for k in names if not _is_text(k)), "a field")
        raise InputError(f"damaged image header: field {bad} is not valid text", p) from None
    return keys


def _is_text(k: str) -> bool:
    try:
        k.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


_NATIVE_NOISE = re.compile(r"^(WARNING|ERROR): In .*, line \d+$")
_NATIVE_PREFIX = re.compile(r"^\w+ \(0x[0-9a-fA-F]+\): ")


def tidy_native_message(text: str) -> list[str]:
    """ITK/MetaIO's stderr chatter as short lines: no build paths, source lines or object addresses."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or _NATIVE_NOISE.match(line):
            continue
        line = _NATIVE_PREFIX.sub("", line)
        out.append(re.sub(r"(/[^\s:]+)+/(?=[^/\s]+\.(cxx|cpp|h|hxx)\b)", "", line)[:300])
    return out


@contextlib.contextmanager
def native_messages_to_log(p: Path | None = None):
    """Catch what native readers print on file descriptor 2 and log it, tidied, instead.

    Why: ITK prints multi-line warnings with its build paths and object addresses straight to
    stderr (``WARNING: In /tmp/SimpleITK-build/ITK/Modules/IO/NIFTI/...``), and MetaIO prints
    parser chatter; users saw them beside our own clear message. The messages go to the log
    (one line each, ``ITK:`` prefix), where ``-v`` shows them.
    """
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, AttributeError, ValueError):
        yield
        return
    try:
        sink = os.memfd_create("itk-stderr") if hasattr(os, "memfd_create") else None
    except OSError:
        sink = None
    tmp = None
    if sink is None:
        import tempfile

        tmp = tempfile.TemporaryFile()
        sink = tmp.fileno()
    os.dup2(sink, 2)
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.lseek(sink, 0, os.SEEK_SET)
        data = b""
        while chunk := os.read(sink, 1 << 16):
            data += chunk
            if len(data) > 1 << 20:
                break
        if tmp is not None:
            tmp.close()
        else:
            os.close(sink)
        for line in tidy_native_message(data.decode("utf-8", "replace")):
            log.info("ITK%s: %s", f" ({p.name})" if p is not None else "", line)


def read_image_file(path: str | Path, units: str | None = None) -> Volume:
    """Read a 3D scalar image with SimpleITK into a Volume; clear errors for everything else.

    ``units`` overrides the units stored in the file; ``None`` keeps the stored ones ("" when
    the file says nothing). The stored units always stay in ``metadata["units"]``.
    """
    p = Path(path)
    check_path_name(p)
    if not p.exists():
        raise InputError("file not found", p)
    if not p.is_file():
        raise InputError("not a file (a folder, FIFO or device)", p)
    if not os.access(p, os.R_OK):
        raise InputError("permission denied: the file cannot be read by this user", p)
    if not _suffix_ok(p):
        raise InputError(f"unsupported file type; expected one of {', '.join(IMAGE_SUFFIXES)} or a DICOM folder", p)
    if p.stat().st_size == 0:
        raise InputError("empty file (0 bytes)", p)
    name = p.name.lower()
    voxel_check = None
    if name.endswith((".nii", ".nii.gz")):
        # ITK reads a truncated NIfTI silently, filling the rest with zeros: the header is checked now,
        # the voxel stream (one more decompression of a .nii.gz) beside ITK's own read, on another core
        header = _checked_nifti_header(p)
        voxel_check = _Beside(_check_nifti_voxels, p, header)
    try:
        img, keys = _read_with_itk(p, name)
    except InputError:
        if voxel_check is not None:
            voxel_check.result()  # a truncated or corrupt file says so rather than with ITK's reason
        raise
    if voxel_check is not None:
        voxel_check.result()
    meta: dict = {"format": _format_name(p)}
    if META_KEY in keys:
        try:
            stored = json.loads(keys[META_KEY])
            if isinstance(stored, dict):
                stored.pop("written_by", None)  # describes that file, not the volume: not carried on
                meta.update(stored)
        except json.JSONDecodeError:
            log.warning("%s: unreadable %s header field ignored", p, META_KEY)
    descrip = keys.get("descrip", "") + " " + keys.get("ITK_FileNotes", "")
    if "SYNTHETIC" in descrip.upper():
        meta["synthetic"] = True
    m = re.search(NOTES_PREFIX + r" units=(\S+)", descrip)
    if m and "units" not in meta and m.group(1) != "-":
        meta["units"] = m.group(1)
    meta["source"] = str(p)
    meta["format"] = _format_name(p)
    try:
        vol = Volume.from_sitk(img, units=meta.get("units", "") if units is None else units, metadata=meta)
    except ValueError as e:
        raise InputError(str(e), p) from e
    if max(vol.spacing_xyz) > MAX_SPACING_MM or min(vol.spacing_xyz) < 0.01:
        raise InputError(f"implausible voxel spacing {vol.spacing_xyz} mm", p)
    d = vol.direction
    if not np.allclose(d.T @ d, np.eye(3), atol=1e-3):
        raise InputError("direction matrix is not orthonormal (sheared image)", p)
    return vol


def _read_with_itk(p: Path, name: str):
    """SimpleITK image and header keys of ``p``; every failure as an InputError naming the file."""
    import SimpleITK as sitk

    text_header = _text_header_geometry(p) if name.endswith((".mha", ".mhd", ".nrrd", ".nhdr")) else None
    try:
        with native_messages_to_log(p):
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(p))
            reader.ReadImageInformation()
        dim = reader.GetDimension()
        size = reader.GetSize()
        if reader.GetNumberOfComponents() != 1:
            raise InputError(f"image has {reader.GetNumberOfComponents()} components per voxel (RGB or vector "
                             "image); a scalar 3D image is needed", p)
        if dim == 2 or (dim >= 3 and size[2] == 1):
            raise InputError(f"2D image (size {size}); a 3D volume is needed", p)
        if dim > 4 or (dim == 4 and size[3] != 1):
            raise InputError(f"{dim}D image (size {size}); a 3D volume is needed", p)
        check_declared_size(size, p)  # before ITK allocates what a tiny header claims
        if text_header is not None:
            _compare_text_header(p, text_header, reader.GetSpacing(), reader.GetOrigin())
        with native_messages_to_log(p):
            img = reader.Execute()
        keys = _metadata_of(reader, p)
    except InputError:
        raise
    except RuntimeError as e:
        raise InputError(f"cannot read image: {_itk_reason(str(e))}", p) from e
    if img.GetDimension() == 4:
        img = img[:, :, :, 0]
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("multi-component (RGB or vector) image; a scalar 3D image is needed", p)
    return img, keys


def _format_name(p: Path) -> str:
    n = p.name.lower()
    return next(s.lstrip(".") for s in IMAGE_SUFFIXES if n.endswith(s))


def _itk_reason(message: str) -> str:
    """The useful part of an ITK exception (no build paths, object addresses or stale errno)."""
    if "Unable to determine ImageIO reader" in message:
        return "unknown or damaged image format"
    lines = []
    for line in message.splitlines():
        line = re.sub(r"(ITK ERROR|sitk::ERROR): ?(\w+\(0x[0-9a-f]+\): )?", "", line.strip())
        if not line or line.startswith("Exception thrown") or line.startswith("Reason: No such file") \
                or line.endswith(("trouble", ":")) or "trouble reading" in line:
            continue
        lines.append(line)
    return "; ".join(lines[-2:])[:300] or "unknown ITK error"


def max_voxels() -> int:
    """The largest image (in voxels) read before allocating; ``$MEDIASTINAL_AI_MAX_VOXELS`` overrides.

    Why: a header is a claim, not a size; a 21 kB NRRD may announce 1200³ voxels and ITK
    allocates them all before failing. 600 M voxels is > 512×512×2000, the largest chest CT
    a scanner writes, and ~1.2 GB as int16.
    """
    import os

    try:
        return int(os.environ.get("MEDIASTINAL_AI_MAX_VOXELS", "600000000"))
    except ValueError:
        return 600_000_000


def check_declared_size(shape: tuple[int, ...] | list[int], p: Path) -> None:
    """Refuse a declared image size over :func:`max_voxels` before any voxel is allocated."""
    n = int(np.prod([int(x) for x in shape], dtype=np.float64))
    if n > max_voxels():
        raise InputError(f"the header declares {'x'.join(str(int(x)) for x in shape)} = {n:,} voxels, more than the "
                         f"{max_voxels():,} a CT may have (set MEDIASTINAL_AI_MAX_VOXELS to allow more)", p)


_NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}  # NIfTI datatype codes whose voxels can be NaN/inf


def _quaternion_affine(b: float, c: float, d: float, pix: np.ndarray, qfac: float) -> np.ndarray:
    """The qform's 3x3 matrix (NIfTI-1 standard, RAS), columns scaled by the voxel size."""
    a2 = 1.0 - (b * b + c * c + d * d)
    a = np.sqrt(max(a2, 0.0))
    r = np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                  [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                  [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b]])
    return r * np.array([pix[0], pix[1], pix[2] * (-1.0 if qfac < 0 else 1.0)])


def _nifti_fields(header: bytes, p: Path) -> dict:
    """The fields of a NIfTI-1 header that decide geometry, size and values.

    Why a reader of our own: ITK takes an Analyze-style header (damaged magic) without
    orientation, and checks neither voxel size nor qform/sform consistency (see
    :func:`_check_nifti_geometry`). NIfTI-2 is refused by name (ITK cannot read it and said
    only "unknown or damaged image format").
    """
    import struct

    if len(header) < 348:
        raise InputError(f"truncated NIfTI header ({len(header)} bytes)", p)
    for endian in "<>":
        sizeof_hdr = struct.unpack(endian + "i", header[:4])[0]
        if sizeof_hdr in (348, 540):
            break
    else:
        raise InputError("not a NIfTI file (bad header size field)", p)
    if sizeof_hdr == 540:
        raise InputError("NIfTI-2 files cannot be read (ITK reads NIfTI-1 only); save the image as NIfTI-1 or NRRD", p)
    e = endian
    magic = header[344:348]
    if magic != b"n+1\0":
        raise InputError(f"not a single-file NIfTI-1 image: magic {magic!r} instead of b'n+1\\x00' (an old "
                         "Analyze 7.5 file or a damaged header: its orientation cannot be trusted)", p)
    f = {"dims": struct.unpack(e + "8h", header[40:56]),
         "datatype": struct.unpack(e + "h", header[70:72])[0], "bitpix": struct.unpack(e + "h", header[72:74])[0],
         "pixdim": struct.unpack(e + "8f", header[76:108]), "vox_offset": struct.unpack(e + "f", header[108:112])[0],
         "scl": struct.unpack(e + "2f", header[112:120]), "codes": struct.unpack(e + "2h", header[252:256]),
         "quat": struct.unpack(e + "6f", header[256:280]), "srow": struct.unpack(e + "12f", header[280:328])}
    f["endian"] = endian
    dims, bitpix, vox_offset = f["dims"], f["bitpix"], f["vox_offset"]
    ndim = dims[0]
    if not 1 <= ndim <= 7 or any(d < 1 for d in dims[1:ndim + 1]) or bitpix <= 0 \
            or not np.isfinite(vox_offset) or vox_offset < 0:
        raise InputError(f"bad NIfTI header (dim {tuple(dims)}, bitpix {bitpix})", p)
    check_declared_size(dims[1:ndim + 1], p)
    f["ndim"] = ndim
    f["nbytes"] = int(np.prod(dims[1:ndim + 1], dtype=np.float64)) * bitpix // 8
    return f


def _check_nifti_geometry(f: dict, p: Path) -> None:
    """Check the NIfTI geometry ourselves and refuse a header that lies.

    Why: ITK silently reads ``pixdim = 0`` or ``inf`` as 1 mm (an 18× wrong lesion volume),
    takes a NaN quaternion as some rotation (origin moved by 168 mm) and picks one of a
    disagreeing qform/sform without saying so. Every such header is refused with what is wrong.
    """
    pixdim = np.array(f["pixdim"], dtype=np.float64)
    spatial = pixdim[1:1 + min(3, f["ndim"])]
    for i, v in enumerate(spatial, start=1):
        if not np.isfinite(v) or v <= 0:
            raise InputError(f"bad NIfTI voxel size: pixdim[{i}] = {v:g} (must be a positive finite number of mm)", p)
    pix = np.ones(3)
    pix[: len(spatial)] = spatial
    qform_code, sform_code = f["codes"]
    quat = np.array(f["quat"], dtype=np.float64)
    srow = np.array(f["srow"], dtype=np.float64).reshape(3, 4)
    slope, inter = f["scl"]
    if not (np.isfinite(inter) and (np.isfinite(slope) or np.isnan(slope))):
        raise InputError(f"bad NIfTI intensity scaling (scl_slope {slope:g}, scl_inter {inter:g})", p)
    qmat = None
    if qform_code > 0:
        if not np.all(np.isfinite(quat)):
            raise InputError(f"bad NIfTI qform: quaternion/offset {quat.round(4).tolist()} is not finite", p)
        if float(np.sum(quat[:3] ** 2)) > 1.0 + 1e-4:
            raise InputError(f"bad NIfTI qform: quaternion (b, c, d) = {quat[:3].round(4).tolist()} has norm > 1", p)
        qmat = _quaternion_affine(*quat[:3], pix, pixdim[0])
    if sform_code > 0:
        if not np.all(np.isfinite(srow)):
            raise InputError("bad NIfTI sform: srow_x/y/z hold NaN or infinite values", p)
        norms = np.linalg.norm(srow[:, :3], axis=0)
        if np.any(norms <= 0) or not np.allclose(norms, pix, rtol=1e-2, atol=1e-4):
            raise InputError(f"inconsistent NIfTI header: sform voxel size {norms.round(4).tolist()} mm "
                             f"vs pixdim {pix.round(4).tolist()} mm", p)
        if qmat is not None:
            tol = 1e-2 * float(pix.max())
            if not np.allclose(qmat, srow[:, :3], atol=tol) or not np.allclose(quat[3:], srow[:, 3], atol=0.5):
                raise InputError("inconsistent NIfTI header: qform and sform describe different geometry "
                                 "(orientation, mirroring or origin differ); fix the file with the tool that "
                                 "wrote it", p)


class _Beside:
    """``fn(*args)`` in a thread of its own, beside a native read (zlib and ITK release the GIL);
    ``result()`` joins it and re-raises its error. A new thread per call, not a pool: a pool's
    worker does not survive a fork, and batch and training workers are forked."""

    def __init__(self, fn, *args) -> None:
        import threading

        self._error: BaseException | None = None

        def run() -> None:
            try:
                fn(*args)
            except BaseException as e:  # handed to the caller in result()
                self._error = e

        self._thread = threading.Thread(target=run, name="mediastinal-ai-io-check", daemon=True)
        self._thread.start()

    def result(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


def _check_nifti_complete(p: Path) -> None:
    """Refuse a truncated .nii/.nii.gz, a lying header, an oversized one and NaN/inf voxels."""
    _check_nifti_voxels(p, _checked_nifti_header(p))


@contextlib.contextmanager
def _nifti_errors(p: Path):
    """Read errors of a .nii/.nii.gz as InputErrors naming the file."""
    try:
        yield
    except InputError:
        raise
    except PermissionError as e:
        raise InputError("permission denied: the file cannot be read by this user", p) from e
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"corrupt or truncated gzip file ({e})", p) from e


def _open_nifti(p: Path):
    return (gzip.open if p.name.lower().endswith(".gz") else open)(p, "rb")


def _checked_nifti_header(p: Path) -> dict:
    """The header's fields once size, geometry and scaling are checked (before anything is allocated)."""
    with _nifti_errors(p), _open_nifti(p) as fh:
        h = _nifti_fields(fh.read(348), p)
        _check_nifti_geometry(h, p)
    return h


def _check_nifti_voxels(p: Path, h: dict) -> None:
    """Refuse a voxel stream shorter than the header announces, or holding NaN/inf.

    The voxel bytes are streamed (never more than 4 MB in memory) and reading stops once the
    header's size is reached, so a gzip bomb costs no more than the declared image.
    """
    offset, nbytes = int(h["vox_offset"]), h["nbytes"]
    ftype = _NIFTI_FLOAT_TYPES.get(h["datatype"])
    dt = np.dtype(h["endian"] + ftype) if ftype else None
    total, bad, carry = 0, 0, b""
    with _nifti_errors(p), _open_nifti(p) as fh:
        fh.seek(offset)
        while total < nbytes and (block := fh.read(min(1 << 22, nbytes - total))):
            total += len(block)
            if dt is not None:
                buf = carry + block
                cut = len(buf) - len(buf) % dt.itemsize
                bad += int(np.count_nonzero(~np.isfinite(np.frombuffer(buf[:cut], dtype=dt))))
                carry = buf[cut:]
    if total < nbytes:
        raise InputError(f"truncated NIfTI: {offset + total} bytes of the {offset + nbytes} the header announces", p)
    if bad:
        what = "all voxels are" if bad == nbytes // dt.itemsize else f"{bad} voxel(s) are"  # type: ignore[union-attr]
        raise InputError(f"{what} NaN or infinite", p)


MAX_EXTENT_MM = 2500.0  # no CT field of view is longer than a body (whole-body CT: about 2 m)


def check_field_of_view(vol: Volume, source: str | Path | None) -> Volume:
    """Refuse a physical size no scanner covers, which also bounds any later resampling.

    Why: a small image with a huge spacing (e.g. 49 mm) is upsampled by the models' resampling
    to a grid ×20 larger in each direction (minutes, gigabytes). A real CT is at most ~2 m long
    and its volume in mm³ stays below the voxel budget, so resampling it to 1 mm or coarser
    never allocates more than :func:`max_voxels` voxels.
    """
    extent = np.asarray(vol.shape[::-1], dtype=np.float64) * np.asarray(vol.spacing_xyz, dtype=np.float64)
    if extent.max() > MAX_EXTENT_MM:
        raise InputError(f"field of view {' x '.join(f'{e:.0f}' for e in extent)} mm is larger than any CT covers "
                         f"(more than {MAX_EXTENT_MM:.0f} mm along an axis): wrong voxel spacing in the header?", source)
    if float(np.prod(extent)) > max_voxels():
        raise InputError(f"field of view {' x '.join(f'{e:.0f}' for e in extent)} mm ({np.prod(extent) / 1e9:.2f} l) "
                         f"is larger than any CT covers; resampling it would need more than {max_voxels():,} "
                         "voxels (wrong voxel spacing in the header?)", source)
    return vol


def check_ct_values(vol: Volume, source: str | Path | None) -> Volume:
    """Refuse non-finite voxels and images whose values are not Hounsfield units.

    The rule (documented in docs/io.md), on the voxels that are not scanner padding (padding:
    the minimum value, when it is below -1100 HU and fills at least 0.1 % of the image, as
    scanners write -2048/-3024 outside the reconstruction circle):

    1. some tissue below -200 HU must exist (air, lung or fat: the 0.1st percentile < -200). An
       MR, PET, mask, probability map or a CT whose rescale was not applied has none.
    2. at most 1 % of voxels may lie outside the CT scale [-1100, 4100] HU (metal in
       extended-HU scans stays far below that share; a CT stored in tenths of HU does not).
    """
    a = vol.array
    if np.issubdtype(a.dtype, np.floating):
        bad = ~np.isfinite(a)
        if bad.any():
            raise InputError(f"{int(bad.sum())} voxel(s) are NaN or infinite", source)
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise InputError(f"voxel type {a.dtype} is not a CT's", source)
    lo, hi = float(a.min()), float(a.max())
    if lo == hi:
        raise InputError(f"constant image (all voxels {lo:g}); not a CT", source)
    flat = a.ravel()
    sample = flat[:: max(1, flat.size // 2_000_000)]  # statistics on <= ~2M voxels: fast on 512x512x300
    if lo < HU_MIN and np.mean(sample == lo) >= PADDING_MIN_FRACTION:
        sample = sample[sample != lo]
        if sample.size == 0:
            sample = flat[flat != lo]
    if sample.size == 0:
        raise InputError("the image holds only padding values; not a CT", source)
    p01 = float(np.percentile(sample, 0.1))
    if p01 >= AIR_OR_FAT_HU:
        raise InputError(f"no air, lung or fat in the image (0.1st percentile {p01:g}, range {lo:g}…{hi:g}): "
                         "values are not HU (an MR/PET, a mask, or a CT without its rescale?)", source)
    outside = float(np.mean((sample < HU_MIN) | (sample > HU_MAX)))
    if outside > MAX_OUTSIDE_FRACTION:
        raise InputError(f"{outside:.0%} of voxels lie outside the CT scale [{HU_MIN:g}, {HU_MAX:g}] HU "
                         f"(range {lo:g}…{hi:g}): values are not HU (scaled or unrescaled data?)", source)
    return vol


def write_image_file(vol: Volume, path: str | Path, compress: bool = True) -> Path:
    import SimpleITK as sitk

    p = Path(path)
    check_path_name(p)  # SimpleITK aborts the process on a path that is not UTF-8, for writing too
    if not _suffix_ok(p):
        raise InputError(f"unsupported output type; use one of {', '.join(IMAGE_SUFFIXES)}", p)
    arr = vol.array
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    elif arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    img = vol.with_array(arr).to_sitk()
    meta = {k: v for k, v in vol.metadata.items() if k not in ("dicom_files",)}
    meta["units"] = vol.units
    from .. import __version__
    from ..fileio import PROVENANCE_SCHEMA

    # which software wrote this file (the shared provenance schema, docs/provenance.md); the model
    # and parameters are in the result JSON written beside it
    meta["written_by"] = {"schema": PROVENANCE_SCHEMA, "produced_by": f"mediastinal-ai {__version__}",
                          "package_version": __version__}
    try:
        img.SetMetaData(META_KEY, json.dumps(meta, default=str))
    except (TypeError, ValueError):
        pass
    notes = f"{NOTES_PREFIX} units={vol.units or '-'}"
    if meta.get("synthetic"):
        notes = "SYNTHETIC - not patient data; " + notes
    img.SetMetaData("ITK_FileNotes", notes[:79])  # NIfTI: 'descrip'; NRRD/MHA keep the JSON too
    with atomic_path(p) as tmp:
        sitk.WriteImage(img, str(tmp), useCompression=compress)
    return p
