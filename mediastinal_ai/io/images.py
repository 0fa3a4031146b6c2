"""Image files (NIfTI, NRRD, MHA/MHD) and the CT plausibility checks shared with DICOM."""

from __future__ import annotations

import gzip
import json
import logging
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


def read_image_file(path: str | Path, units: str | None = None) -> Volume:
    """Read a 3D scalar image with SimpleITK into a Volume; clear errors for everything else.

    ``units`` overrides the units stored in the file; ``None`` keeps the stored ones ("" when
    the file says nothing). The stored units always stay in ``metadata["units"]``.
    """
    import SimpleITK as sitk

    p = Path(path)
    if not p.exists():
        raise InputError("file not found", p)
    if not p.is_file():
        raise InputError("not a file", p)
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


def _check_nifti_complete(p: Path) -> None:
    """Refuse a truncated .nii/.nii.gz (corrupt gzip stream, or fewer voxel bytes than the header says)."""
    import struct

    try:
        if p.name.lower().endswith(".gz"):
            with gzip.open(p, "rb") as f:
                header = f.read(352)
                total = len(header)
                while block := f.read(1 << 22):
                    total += len(block)
        else:
            with open(p, "rb") as f:
                header = f.read(352)
            total = p.stat().st_size
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"corrupt or truncated gzip file ({e})", p) from e
    if len(header) < 348:
        raise InputError(f"truncated NIfTI header ({len(header)} bytes)", p)
    for endian in "<>":
        sizeof_hdr = struct.unpack(endian + "i", header[:4])[0]
        if sizeof_hdr in (348, 540):
            break
    else:
        raise InputError("not a NIfTI file (bad header size field)", p)
    if sizeof_hdr == 540:
        return  # NIfTI-2: leave the checks to ITK
    dims = struct.unpack(endian + "8h", header[40:56])
    bitpix = struct.unpack(endian + "h", header[72:74])[0]
    vox_offset = struct.unpack(endian + "f", header[108:112])[0]
    ndim = dims[0]
    if not 1 <= ndim <= 7 or any(d < 1 for d in dims[1:ndim + 1]) or bitpix <= 0:
        raise InputError(f"bad NIfTI header (dim {dims}, bitpix {bitpix})", p)
    expected = int(vox_offset) + int(np.prod(dims[1:ndim + 1], dtype=np.int64)) * bitpix // 8
    if total < expected:
        raise InputError(f"truncated NIfTI: {total} bytes of the {expected} the header announces", p)


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
