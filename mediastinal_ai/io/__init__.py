"""CT input and image output.

``read_ct`` accepts a DICOM series folder, NIfTI (``.nii``/``.nii.gz``), NRRD or MHA/MHD and
returns a :class:`~mediastinal_ai.volume.Volume` in HU, or raises
:class:`~mediastinal_ai.errors.InputError` naming the file and what is wrong (missing, empty,
corrupt or truncated, 2D, RGB, not a CT, not HU, NaN/inf voxels, irregular slices, mixed series).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..progress import CancelToken, ProgressCallback, report
from ..volume import Volume
from .dicom import DicomSeriesInfo, _read_header, find_dicom_series, is_dicom_file, read_dicom_series
from .images import (
    IMAGE_SUFFIXES,
    check_ct_values,
    check_field_of_view,
    check_path_name,
    read_image_file,
    write_image_file,
)

__all__ = ["IMAGE_SUFFIXES", "DicomSeriesInfo", "check_ct_values", "find_dicom_series", "geometry_differences",
           "read_ct", "read_image", "read_mask", "write_image"]
log = logging.getLogger(__name__)


def read_ct(path: str | Path, series_uid: str | None = None, *, on_irregular: str = "error",
            check_hu: bool = True, progress: ProgressCallback | None = None,
            cancel: CancelToken | None = None) -> Volume:
    """A CT volume in HU from a DICOM folder (or one file of the series), NIfTI, NRRD or MHA/MHD.

    ``series_uid`` picks a series of a DICOM folder (default: the CT series with the most
    slices; a tie is refused). ``on_irregular="resample"`` resamples tilted, unevenly spaced
    or gappy series instead of refusing them. ``check_hu=False`` skips the HU plausibility rule
    (see :func:`check_ct_values`) for unusual crops; NaN/inf voxels are refused either way.
    ``progress``/``cancel`` report and stop a long DICOM read slice by slice (Slicer, batch).
    """
    p = Path(path)
    check_path_name(p)
    if not p.exists():
        raise InputError("CT not found", p)
    if p.is_dir():
        if not any(p.iterdir()):
            raise InputError("empty folder", p)
        vol = read_dicom_series(p, series_uid, on_irregular=on_irregular, progress=progress, cancel=cancel)
    elif not p.name.lower().endswith(IMAGE_SUFFIXES) and is_dicom_file(p):
        # one file of a series: read the series it belongs to from its folder
        header = _read_header(p)
        if header is None:
            raise InputError("damaged DICOM file: its header cannot be parsed", p)
        uid = str(header.get("SeriesInstanceUID", ""))
        log.info("%s is one DICOM file; reading its series %s from %s", p.name, uid or "(no UID)", p.parent)
        vol = read_dicom_series(p.parent, uid if series_uid is None else series_uid, on_irregular=on_irregular,
                                progress=progress, cancel=cancel)
    else:
        vol = read_image_file(p, units="HU")
        stored = vol.metadata.get("units")
        if stored not in (None, "", "HU"):
            raise InputError(f"image holds {stored!r} values, not a CT in HU", p)
    report(progress, 1.0, "CT read")
    if min(vol.shape) < 2:
        raise InputError(f"volume of shape {vol.shape} (z, y, x) is too small to be a CT", p)
    check_field_of_view(vol, p)
    if check_hu:
        return check_ct_values(vol, p)
    if np.issubdtype(vol.array.dtype, np.floating) and not np.all(np.isfinite(vol.array)):
        raise InputError("NaN or infinite voxels", p)
    return vol


def read_image(path: str | Path) -> Volume:
    """Any 3D scalar image (masks, probability maps, heat maps; any DICOM modality) without CT checks."""
    p = Path(path)
    if p.is_dir():
        return read_dicom_series(p, require_ct=False)
    return read_image_file(p)


def read_mask(path: str | Path, reference: Volume, label: int | None = None, allow_empty: bool = False) -> Volume:
    """A binary tumor mask on the reference CT's grid (uint8 0/1).

    The mask must have the CT's exact grid (a mask drawn on another series or resampled by
    another tool would silently shift the tumor); the error says which of shape, spacing,
    origin or orientation differs. A label map with several values needs ``label=``.
    """
    p = Path(path)
    m = read_image(p)
    problems = geometry_differences(m, reference)
    if problems:
        raise InputError("mask is not on the CT's grid: " + "; ".join(problems), p)
    a = m.array
    if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
        raise InputError("mask holds NaN or infinite values", p)
    values = np.unique(a)
    if label is not None:
        if label not in values:
            raise InputError(f"label {label} does not occur in the mask (values {_few(values)})", p)
        binary = a == label
    elif set(values.tolist()) <= {0, 1}:
        binary = a == 1
    else:
        raise InputError(f"mask is not binary (values {_few(values)}); say which label is the tumor "
                         "(label=...), or threshold a probability map first", p)
    if not allow_empty and not binary.any():
        raise InputError("mask is empty (no tumor voxel)", p)
    return reference.with_array(binary.astype(np.uint8), units="label", source=str(p), format=m.metadata.get("format"))


def geometry_differences(a: Volume, b: Volume) -> list[str]:
    """Human-readable differences between two voxel grids (empty when they match).

    Tolerances: spacing 0.1 %, origin 1 % of a voxel (at least 0.01 mm), direction 1e-3; these
    absorb float32 storage in NIfTI headers but not a real shift.
    """
    out = []
    if a.shape != b.shape:
        out.append(f"shape (z, y, x) {a.shape} vs the CT's {b.shape}")
    if not np.allclose(a.spacing_xyz, b.spacing_xyz, rtol=1e-3, atol=0):
        out.append(f"spacing {_mm(a.spacing_xyz)} vs {_mm(b.spacing_xyz)} mm")
    tol = max(0.01, 0.01 * min(b.spacing_xyz))
    shift = np.abs(np.asarray(a.origin_xyz) - np.asarray(b.origin_xyz))
    if np.any(shift > tol):
        out.append(f"origin {_mm(a.origin_xyz)} vs {_mm(b.origin_xyz)} mm (LPS; off by up to {shift.max():.3g} mm)")
    if not np.allclose(a.direction, b.direction, atol=1e-3):
        out.append(f"orientation (direction) {np.round(a.direction, 3).tolist()} vs {np.round(b.direction, 3).tolist()}")
    return out


def _mm(v) -> str:
    return "(" + ", ".join(f"{x:.4g}" for x in v) + ")"


def _few(values: np.ndarray) -> str:
    shown = [v.item() if hasattr(v, "item") else v for v in values[:6]]
    return str(shown)[:-1] + (", …]" if len(values) > 6 else "]")


def write_image(volume: Volume, path: str | Path, compress: bool = True) -> Path:
    """Write atomically (.nii.gz, .nii, .nrrd, .mha), keeping geometry, units and metadata
    (NRRD/MHA keep the metadata as JSON; NIfTI keeps units and the synthetic flag in 'descrip')."""
    return write_image_file(volume, path, compress=compress)
