"""Image files (NIfTI, NRRD, MHA/MHD) and the CT plausibility checks shared with DICOM."""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import zlib
from pathlib import Path

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
        raise InputError("file name is not valid UTF-8; rename the file", ascii(str(p))) from None


def read_image_file(path: str | Path, units: str | None = None) -> Volume:
    """Read a 3D scalar image with SimpleITK into a Volume; clear errors for everything else.

    ``units`` overrides the units stored in the file; ``None`` keeps the stored ones ("" when
    the file says nothing). The stored units always stay in ``metadata["units"]``.
    """
    import SimpleITK as sitk

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
    if name.endswith((".nii", ".nii.gz")):
        _check_nifti_complete(p)  # ITK reads a truncated NIfTI silently, filling the rest with zeros
    try:
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
        img = reader.Execute()
        keys = {k: reader.GetMetaData(k) for k in reader.GetMetaDataKeys()}
    except InputError:
        raise
    except RuntimeError as e:
        raise InputError(f"cannot read image: {_itk_reason(str(e))}", p) from e
    if img.GetDimension() == 4:
        img = img[:, :, :, 0]
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("multi-component (RGB or vector) image; a scalar 3D image is needed", p)
    meta: dict = {"format": _format_name(p)}
    if META_KEY in keys:
        try:
            stored = json.loads(keys[META_KEY])
            if isinstance(stored, dict):
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


def _check_nifti_geometry(header: bytes, endian: str, ndim: int, p: Path) -> None:
    """Read the NIfTI-1 geometry ourselves and refuse a header that lies.

    Why: ITK silently reads ``pixdim = 0`` or ``inf`` as 1 mm (an 18× wrong lesion volume),
    takes a NaN quaternion as some rotation (origin moved by 168 mm) and picks one of a
    disagreeing qform/sform without saying so. Every such header is refused with what is wrong.
    """
    import struct

    pixdim = np.array(struct.unpack(endian + "8f", header[76:108]), dtype=np.float64)
    spatial = pixdim[1:1 + min(3, ndim)]
    for i, v in enumerate(spatial, start=1):
        if not np.isfinite(v) or v <= 0:
            raise InputError(f"bad NIfTI voxel size: pixdim[{i}] = {v:g} (must be a positive finite number of mm)", p)
    pix = np.ones(3)
    pix[: len(spatial)] = spatial
    qform_code, sform_code = struct.unpack(endian + "2h", header[252:256])
    quat = np.array(struct.unpack(endian + "6f", header[256:280]), dtype=np.float64)
    srow = np.array(struct.unpack(endian + "12f", header[280:328]), dtype=np.float64).reshape(3, 4)
    slope, inter = struct.unpack(endian + "2f", header[112:120])
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


def _check_nifti_complete(p: Path) -> None:
    """Refuse a truncated .nii/.nii.gz, a lying header, an oversized one and NaN/inf voxels.

    The voxel bytes are streamed (never more than 4 MB in memory) and reading stops once the
    header's size is reached, so a gzip bomb costs no more than the declared image.
    """
    import struct

    def parse(header: bytes) -> tuple[str, int, int, int, int]:
        if len(header) < 348:
            raise InputError(f"truncated NIfTI header ({len(header)} bytes)", p)
        for endian in "<>":
            sizeof_hdr = struct.unpack(endian + "i", header[:4])[0]
            if sizeof_hdr in (348, 540):
                break
        else:
            raise InputError("not a NIfTI file (bad header size field)", p)
        if sizeof_hdr == 540:
            return endian, 540, 0, 0, 0
        dims = struct.unpack(endian + "8h", header[40:56])
        datatype, bitpix = struct.unpack(endian + "2h", header[70:74])
        vox_offset = struct.unpack(endian + "f", header[108:112])[0]
        ndim = dims[0]
        if not 1 <= ndim <= 7 or any(d < 1 for d in dims[1:ndim + 1]) or bitpix <= 0 \
                or not np.isfinite(vox_offset) or vox_offset < 0:
            raise InputError(f"bad NIfTI header (dim {dims}, bitpix {bitpix})", p)
        check_declared_size(dims[1:ndim + 1], p)
        _check_nifti_geometry(header, endian, ndim, p)
        nbytes = int(np.prod(dims[1:ndim + 1], dtype=np.int64)) * bitpix // 8
        return endian, 348, datatype, int(vox_offset), nbytes

    try:
        opener = gzip.open if p.name.lower().endswith(".gz") else open
        with opener(p, "rb") as f:
            header = f.read(352)
            endian, kind, datatype, offset, nbytes = parse(header)
            if kind == 540:
                return  # NIfTI-2: leave the checks to ITK
            f.seek(offset)
            ftype = _NIFTI_FLOAT_TYPES.get(datatype)
            dt = np.dtype(endian + ftype) if ftype else None
            total, bad, carry = 0, 0, b""
            while total < nbytes and (block := f.read(min(1 << 22, nbytes - total))):
                total += len(block)
                if dt is not None:
                    buf = carry + block
                    cut = len(buf) - len(buf) % dt.itemsize
                    bad += int(np.count_nonzero(~np.isfinite(np.frombuffer(buf[:cut], dtype=dt))))
                    carry = buf[cut:]
    except InputError:
        raise
    except PermissionError as e:
        raise InputError("permission denied: the file cannot be read by this user", p) from e
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"corrupt or truncated gzip file ({e})", p) from e
    if total < nbytes:
        raise InputError(f"truncated NIfTI: {offset + total} bytes of the {offset + nbytes} the header announces", p)
    if bad:
        what = "all voxels are" if bad == nbytes // dt.itemsize else f"{bad} voxel(s) are"  # type: ignore[union-attr]
        raise InputError(f"{what} NaN or infinite", p)


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
