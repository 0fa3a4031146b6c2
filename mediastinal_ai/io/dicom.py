"""DICOM CT series: discovery by SeriesInstanceUID, geometry from the headers, HU from rescale.

Slices are sorted by their position projected on the slice normal (the cross product of the
ImageOrientationPatient row and column vectors), never by file name or InstanceNumber. Gantry
tilt (positions not along the normal), uneven spacing and missing slices are refused by
default, because a silently wrong z axis corrupts every volume and diameter downstream;
``on_irregular="resample"`` resamples onto a regular grid with a logged warning instead.

Memory: headers are read once (without pixels) and kept; pixels are decoded one file at a
time straight into one int16 stack, so a 512×512×300 series needs about 150 MB plus one slice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..progress import CancelToken, ProgressCallback, check, report
from ..volume import Volume
from .images import IMAGE_SUFFIXES, check_declared_size, check_path_name, native_messages_to_log

log = logging.getLogger(__name__)
SPACING_TOLERANCE = 0.02  # relative deviation of slice gaps tolerated as "even"
TILT_TOLERANCE_PIXELS = 0.25  # in-plane drift of slice positions tolerated, in pixels
# Descriptive, patient-free header fields copied into Volume.metadata["dicom_tags"].
DESCRIPTIVE_TAGS = ("Manufacturer", "ManufacturerModelName", "SeriesDescription", "StudyDescription",
                    "ProtocolName", "SeriesNumber", "BodyPartExamined", "ContrastBolusAgent", "KVP",
                    "ConvolutionKernel", "SliceThickness", "ImageType", "PatientPosition",
                    "GantryDetectorTilt", "ReconstructionDiameter")
USED_TAGS = ("SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID", "Modality", "Rows", "Columns",
             "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "NumberOfFrames", "SamplesPerPixel",
             "PhotometricInterpretation", "ImageComments", "PatientName", *DESCRIPTIVE_TAGS)
# CT, MR and PET Image Storage: single-frame classes whose files always carry their geometry
SINGLE_FRAME_IMAGE_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.128")
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")  # a file named so but unreadable is a damaged slice, not junk
MAX_PIXELS_PER_SIDE = 8192  # CT slices are 512-2048 pixels wide; larger sizes mean a damaged header
COLOUR_PHOTOMETRIC = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "PALETTE COLOR")


@dataclass
class DicomSeriesInfo:
    """One image series found in a folder (headers only; pixels are read by ``read_ct``)."""

    series_instance_uid: str
    modality: str
    files: list[Path] = field(default_factory=list)
    description: str = ""
    study_instance_uid: str = ""
    headers: dict[Path, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_slices(self) -> int:
        return len(self.files)


def _read_header(path: Path) -> Any | None:
    """The fully parsed header of a DICOM file, or None for anything unreadable.

    pydicom converts element values lazily; converting every tag this module reads here means
    a damaged tag fails now, inside this guard, rather than later at some attribute access
    (converting all tags would cost ~7 ms per file on headers full of private tags).
    """
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in USED_TAGS:
            ds.get(keyword)
        return ds
    except Exception:  # noqa: BLE001 - pydicom raises many types on damaged bytes; all mean "unreadable"
        return None


def _looks_like_dicom(path: Path) -> bool:
    """A Part-10 DICOM file: 128-byte preamble then 'DICM'."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom_file(path: str | Path) -> bool:
    p = Path(path)
    return p.is_file() and (_looks_like_dicom(p) or _read_header(p) is not None)


def scan_dicom_folder(folder: str | Path) -> tuple[list[DicomSeriesInfo], list[Path]]:
    """(image series below ``folder`` largest first, damaged DICOM files that could not be parsed).

    Damaged: a DICM preamble or a .dcm/.dicom/.ima name but an unparseable header, or a CT/MR/PET
    image header without its geometry tags (a truncated file).

    Files that are not DICOM (README, thumbnails) and DICOM objects without pixels (DICOMDIR,
    reports, SEG/RTSTRUCT) are skipped silently.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("not a folder", folder)
    series: dict[str, DicomSeriesInfo] = {}
    damaged: list[Path] = []
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        ds = _read_header(f)
        if ds is None:
            if _looks_like_dicom(f) or f.suffix.lower() in DICOM_SUFFIXES:
                damaged.append(f)
            continue
        if _truncated_image_header(ds, part10=_looks_like_dicom(f)):
            damaged.append(f)
            continue
        if "SeriesInstanceUID" not in ds:
            continue
        if "Rows" not in ds or "ImagePositionPatient" not in ds and "PerFrameFunctionalGroupsSequence" not in ds:
            continue  # DICOMDIR, structured reports, presentation states...
        if str(getattr(ds, "Modality", "")) in ("SEG", "RTSTRUCT", "SR", "PR"):
            continue
        uid = str(ds.SeriesInstanceUID)
        info = series.get(uid)
        if info is None:
            info = series[uid] = DicomSeriesInfo(uid, str(getattr(ds, "Modality", "")),
                                                 description=str(getattr(ds, "SeriesDescription", "")),
                                                 study_instance_uid=str(getattr(ds, "StudyInstanceUID", "")))
        info.files.append(f)
        info.headers[f] = ds
    return sorted(series.values(), key=lambda s: -s.n_slices), damaged


def _truncated_image_header(ds: Any, part10: bool) -> bool:
    """A truncated file, which pydicom reads as far as it goes without complaint (skipping it
    silently would drop a slice): a Part-10 file without the SOP class its file meta must hold,
    or a single-frame CT/MR/PET image header without the geometry every such file has."""
    try:
        meta = getattr(ds, "file_meta", None)
        if part10:
            if meta is None or not meta.get("MediaStorageSOPClassUID") or not meta.get("TransferSyntaxUID"):
                return True
            if str(meta.MediaStorageSOPClassUID) != DICOMDIR_SOP_CLASS and "SOPClassUID" not in ds:
                return True  # the file ends inside its file meta or first tags
        sop = str(meta.get("MediaStorageSOPClassUID", "") if meta is not None else "") or \
            str(ds.get("SOPClassUID", ""))
    except Exception:  # noqa: BLE001 - a damaged file meta group: the file is damaged
        return True
    if sop not in SINGLE_FRAME_IMAGE_SOP_CLASSES:
        return False
    return not all(k in ds for k in ("SeriesInstanceUID", "Rows", "Columns", "ImagePositionPatient",
                                     "ImageOrientationPatient"))


def find_dicom_series(folder: str | Path) -> list[DicomSeriesInfo]:
    """All DICOM image series below ``folder`` (recursive), largest first; damaged DICOM files
    are logged as warnings and left out."""
    series, damaged = scan_dicom_folder(folder)
    for f in damaged:
        log.warning("%s: damaged or truncated DICOM file skipped", f)
    return series


def choose_series(folder: Path, all_series: list[DicomSeriesInfo], series_uid: str | None) -> DicomSeriesInfo:
    """The requested series, or the CT series with the most slices (refusing a tie)."""
    if not all_series:
        raise InputError("no DICOM image files found in the folder", folder)
    if series_uid is not None:
        chosen = [s for s in all_series if s.series_instance_uid == series_uid]
        if not chosen:
            known = ", ".join(s.series_instance_uid or "''" for s in all_series[:5])
            raise InputError(f"no series with SeriesInstanceUID {series_uid} (found: {known})", folder)
        return chosen[0]
    cts = [s for s in all_series if s.modality == "CT"] or all_series
    if len(cts) > 1 and cts[0].n_slices == cts[1].n_slices:
        uids = ", ".join(s.series_instance_uid for s in cts if s.n_slices == cts[0].n_slices)
        raise InputError(f"mixed series: several series with {cts[0].n_slices} slices ({uids}); "
                         "choose one with --series-uid / series_uid=", folder)
    if len(all_series) > 1:
        log.info("%s: %d series found; reading %s (%d slices)", folder, len(all_series),
                 cts[0].series_instance_uid, cts[0].n_slices)
    return cts[0]


def read_dicom_series(folder: str | Path, series_uid: str | None = None, *, on_irregular: str = "error",
                      require_ct: bool = True, progress: ProgressCallback | None = None,
                      cancel: CancelToken | None = None) -> Volume:
    """Read one series of a DICOM folder into a Volume (HU for CT)."""
    if on_irregular not in ("error", "resample"):
        raise ValueError(f"on_irregular must be 'error' or 'resample', got {on_irregular!r}")
    folder = Path(folder)
    all_series, damaged = scan_dicom_folder(folder)
    if damaged:  # it may be a slice of the series we are about to read: never drop slices silently
        more = f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else ""
        raise InputError(f"damaged or truncated DICOM file{more}: its header cannot be parsed or lacks the "
                         "tags every such file has; remove or replace it", damaged[0])
    if not all_series:
        images = sorted(p.name for p in folder.iterdir() if p.name.lower().endswith(IMAGE_SUFFIXES))
        if images:
            raise InputError(f"no DICOM image files found in the folder; it holds image files ({', '.join(images[:3])}"
                             f"{', …' if len(images) > 3 else ''}): pass one of them instead of the folder", folder)
    info = choose_series(folder, all_series, series_uid)
    if require_ct and info.modality != "CT":
        raise InputError(f"not a CT: Modality {info.modality or 'missing'} (series {info.series_instance_uid})",
                         info.files[0] if info.files else folder)
    vol = _load_series(info, folder, on_irregular, progress, cancel)
    if len(all_series) > 1:
        vol.metadata["other_series"] = [s.series_instance_uid for s in all_series if s is not info]
    return vol


def _floats(ds: Any, name: str, n: int, f: Path) -> np.ndarray:
    try:
        v = np.asarray([float(x) for x in getattr(ds, name)], dtype=float)
    except (AttributeError, TypeError, ValueError) as e:
        raise InputError(f"missing or bad {name} ({e})", f) from e
    if v.size != n or not np.all(np.isfinite(v)):
        raise InputError(f"bad {name} {v.tolist()}", f)
    return v


def _check_header(f: Path, ds: Any) -> None:
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        raise InputError(f"multi-frame (enhanced) DICOM with {frames} frames is not supported; "
                         "export the series as classic single-frame DICOM or NIfTI", f)
    spp = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if spp != 1 or photometric in COLOUR_PHOTOMETRIC:
        raise InputError(f"colour image ({photometric}, {spp} samples per pixel), e.g. a screenshot; "
                         "a greyscale CT is needed", f)


def _load_series(info: DicomSeriesInfo, folder: Path, on_irregular: str, progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None) -> Volume:
    headers = []
    for f in info.files:
        ds = info.headers.get(f) or _read_header(f)
        if ds is None:
            raise InputError("unreadable DICOM header", f)
        headers.append((f, ds))
    if len(headers) < 2:
        raise InputError("a single-slice series is a 2D image, not a CT volume", headers[0][0] if headers else folder)
    f0, ds0 = headers[0]
    try:
        _check_header(f0, ds0)
        iop = _floats(ds0, "ImageOrientationPatient", 6, f0).reshape(2, 3)
        rows, cols = int(ds0.Rows), int(ds0.Columns)
        spacing_rc = _floats(ds0, "PixelSpacing", 2, f0)
    except (TypeError, ValueError, AttributeError, KeyError) as e:
        raise InputError(f"bad header value ({type(e).__name__}: {e})", f0) from e
    norms = np.linalg.norm(iop, axis=1)
    if np.any(norms < 1e-6):
        raise InputError(f"bad ImageOrientationPatient {iop.ravel().tolist()}", f0)
    row, col = iop[0] / norms[0], iop[1] / norms[1]
    if abs(float(row @ col)) > 1e-3:
        raise InputError("ImageOrientationPatient row and column vectors are not perpendicular", f0)
    normal = np.cross(row, col)
    normal /= np.linalg.norm(normal)
    if not (1 <= rows <= MAX_PIXELS_PER_SIDE and 1 <= cols <= MAX_PIXELS_PER_SIDE) or np.any(spacing_rc <= 0):
        raise InputError(f"implausible image size {rows}x{cols} or PixelSpacing {spacing_rc.tolist()}", f0)
    positions = []
    for f, ds in headers:
        try:
            _check_header(f, ds)
            if not np.allclose(_floats(ds, "ImageOrientationPatient", 6, f), iop.ravel(), atol=1e-3):
                raise InputError("slices with different orientations in one series (a localizer mixed in?)", f)
            if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
                raise InputError(f"slice of {ds.Rows}x{ds.Columns} pixels in a {rows}x{cols} series "
                                 "(mixed series?)", f)
            if not np.allclose(_floats(ds, "PixelSpacing", 2, f), spacing_rc, rtol=1e-4):
                raise InputError("slices with different pixel spacings in one series (mixed series?)", f)
            positions.append(_floats(ds, "ImagePositionPatient", 3, f))
        except (TypeError, ValueError, AttributeError, KeyError) as e:
            raise InputError(f"bad header value ({type(e).__name__}: {e})", f) from e
    positions_arr = np.asarray(positions)
    dist = positions_arr @ normal
    order = np.argsort(dist, kind="stable")
    dist = dist[order]
    positions_arr = positions_arr[order]
    files = [headers[i][0] for i in order]
    gaps = np.diff(dist)
    if np.any(gaps < 1e-3):
        k = int(np.argmin(gaps))
        raise InputError(f"two slices at the same position ({files[k].name}, {files[k + 1].name}): "
                         "repeated files, or several acquisitions sharing one SeriesInstanceUID", folder)
    tilted, uneven, what = _irregularity(positions_arr, dist, gaps, normal, spacing_rc)
    if (tilted or uneven) and on_irregular != "resample":
        raise InputError(f"{what}; refusing to guess the z axis (read with on_irregular='resample' / "
                         "--resample-irregular to resample onto an even grid)", folder)

    arr = _read_pixels(files, rows, cols, progress, cancel)
    direction = np.column_stack([row, col, normal])
    z_spacing = float(np.median(gaps))
    first = headers[order[0]][1]
    meta = _metadata(info, folder, first, files)
    if tilted or uneven:
        meta["irregularity"] = what
        return _resample_irregular(arr, positions_arr, dist, spacing_rc, direction, z_spacing, meta)
    return Volume(arr, spacing_xyz=(spacing_rc[1], spacing_rc[0], z_spacing), origin_xyz=tuple(positions_arr[0]),
                  direction=direction, units="HU" if info.modality == "CT" else "", metadata=meta)


def _irregularity(positions: np.ndarray, dist: np.ndarray, gaps: np.ndarray, normal: np.ndarray,
                  spacing_rc: np.ndarray) -> tuple[bool, bool, str]:
    """(tilted, uneven, description) of a sorted series' slice positions."""
    median = float(np.median(gaps))
    offsets = positions - positions[0] - np.outer(dist - dist[0], normal)
    drift = float(np.linalg.norm(offsets, axis=1).max())
    tilted = drift > max(0.02, TILT_TOLERANCE_PIXELS * float(spacing_rc.min()))
    deviation = float(np.abs(gaps - median).max())
    uneven = deviation > max(0.01, SPACING_TOLERANCE * median)
    if tilted:
        angle = np.degrees(np.arctan2(drift, float(dist[-1] - dist[0])))
        what = f"gantry tilt of about {angle:.2g}° (slice positions drift {drift:.3g} mm off the slice normal)"
    elif uneven and gaps.max() > 1.5 * median:
        missing = int(np.round(gaps / median).sum() - len(gaps))
        what = (f"missing slice(s): gaps up to {gaps.max():.3g} mm in a {median:.3g} mm series "
                f"(about {missing} slice(s) absent)")
    elif uneven:
        what = f"uneven slice spacing (gaps {gaps.min():.3g}…{gaps.max():.3g} mm)"
    else:
        what = ""
    return tilted, uneven, what


def _read_pixels(files: list[Path], rows: int, cols: int, progress: ProgressCallback | None = None,
                 cancel: CancelToken | None = None) -> np.ndarray:
    """Decode each file once into an int16 HU stack (float32 only if HU do not fit int16)."""
    check_declared_size((cols, rows, len(files)), files[0].parent)
    try:
        arr: np.ndarray = np.empty((len(files), rows, cols), dtype=np.int16)
    except MemoryError as e:
        raise InputError(f"not enough memory for a {len(files)}x{rows}x{cols} volume", files[0].parent) from e
    for k, f in enumerate(files):
        check(cancel)
        if k % 16 == 0:
            report(progress, k / len(files), f"reading DICOM slice {k + 1}/{len(files)}")
        hu = _slice_hu(f)
        if hu.shape != (rows, cols):
            raise InputError(f"pixel data of shape {hu.shape} in a {rows}x{cols} series", f)
        if arr.dtype == np.int16 and (hu.min() < -32768 or hu.max() > 32767):
            log.info("%s: rescaled values exceed int16; keeping float32", f)
            arr = arr.astype(np.float32)
        arr[k] = np.rint(hu) if arr.dtype == np.int16 else hu
    return arr


def _slice_hu(f: Path) -> np.ndarray:
    """One slice in HU (float32): pydicom's decoders, or GDCM through SimpleITK for compressed
    transfer syntaxes pydicom has no plugin for here (JPEG Lossless is common in archives)."""
    import pydicom

    try:
        ds = pydicom.dcmread(f)
    except Exception as e:  # noqa: BLE001 - the header was readable moments ago: damaged file
        raise InputError(f"corrupt or truncated DICOM file: {type(e).__name__}: {e}", f) from e
    _check_compressed_stream(ds, f)
    try:
        px = ds.pixel_array
    except Exception as e:  # noqa: BLE001 - any decoder failure means a corrupt or undecodable file
        ts_name = ""
        try:
            ts = ds.file_meta.TransferSyntaxUID
            ts_name = ts.name if ts.is_compressed else ""
        except Exception:  # noqa: BLE001, S110 - a damaged transfer syntax UID: no name to give
            pass
        if ts_name and "missing" in str(e).lower():
            return _slice_hu_gdcm(f, ts_name)
        hint = f" (compressed transfer syntax {ts_name})" if ts_name else ""
        raise InputError(f"corrupt or truncated pixel data{hint}: {type(e).__name__}: {e}", f) from e
    try:
        slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
        intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
    except (TypeError, ValueError) as e:
        raise InputError(f"bad RescaleSlope/RescaleIntercept ({e})", f) from e
    if not (np.isfinite(slope) and np.isfinite(intercept)):
        raise InputError(f"bad RescaleSlope/RescaleIntercept ({slope}, {intercept})", f)
    if px.ndim != 2:
        raise InputError(f"pixel data of shape {px.shape}; one greyscale frame per file is needed", f)
    return px.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def _check_compressed_stream(ds: Any, f: Path) -> None:
    """Refuse a truncated JPEG / JPEG-LS / JPEG 2000 stream: every such stream ends with the
    FFD9 marker. (libjpeg and openjpeg often decode a truncated stream with only a warning,
    filling the rest of the slice with garbage.)"""
    from pydicom.encaps import generate_frames
    from pydicom.uid import JPEG2000TransferSyntaxes, JPEGLSTransferSyntaxes, JPEGTransferSyntaxes

    try:
        ts = ds.file_meta.TransferSyntaxUID
    except AttributeError:
        return
    if ts not in (*JPEGTransferSyntaxes, *JPEGLSTransferSyntaxes, *JPEG2000TransferSyntaxes):
        return
    try:
        frames = list(generate_frames(ds.PixelData, number_of_frames=1))
    except Exception as e:  # noqa: BLE001 - malformed encapsulation items
        raise InputError(f"corrupt or truncated compressed pixel data ({ts.name}): {e}", f) from e
    if len(frames) != 1 or not frames[0].rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise InputError(f"corrupt or truncated compressed pixel data ({ts.name}): the image stream has no end "
                         "marker", f)


def _slice_hu_gdcm(f: Path, ts_name: str) -> np.ndarray:
    """GDCM (inside SimpleITK) decodes JPEG Lossless/JPEG-LS and applies the rescale itself."""
    import SimpleITK as sitk

    check_path_name(f)  # SimpleITK aborts the process on a file name that is not UTF-8
    try:
        with native_messages_to_log(f):
            reader = sitk.ImageFileReader()
            reader.SetImageIO("GDCMImageIO")
            reader.SetFileName(str(f))
            img = reader.Execute()
    except RuntimeError as e:
        raise InputError(f"cannot decode compressed pixel data ({ts_name}): the file is damaged, or needs a "
                         "decoder such as pylibjpeg", f) from e
    a = sitk.GetArrayFromImage(img)
    if img.GetNumberOfComponentsPerPixel() != 1 or a.ndim != 3 or a.shape[0] != 1:
        raise InputError(f"compressed pixel data of shape {a.shape}; one greyscale frame per file is needed", f)
    return a[0].astype(np.float32)


def _metadata(info: DicomSeriesInfo, folder: Path, first: Any, files: list[Path]) -> dict[str, Any]:
    tags = {}
    for name in DESCRIPTIVE_TAGS:
        v = getattr(first, name, None)
        if v is not None and str(v) != "":
            tags[name] = [str(x) for x in v] if isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue" \
                else str(v)
    meta: dict[str, Any] = {
        "format": "dicom", "source": str(folder), "modality": info.modality,
        "series_instance_uid": info.series_instance_uid, "study_instance_uid": info.study_instance_uid,
        "frame_of_reference_uid": str(getattr(first, "FrameOfReferenceUID", "")),
        "series_description": info.description, "dicom_files": [str(f) for f in files], "dicom_tags": tags,
    }
    text = " ".join(str(getattr(first, k, "")) for k in ("SeriesDescription", "StudyDescription", "ImageComments",
                                                          "PatientName"))
    if "SYNTHETIC" in text.upper():
        meta["synthetic"] = True
    return meta


def _resample_irregular(arr: np.ndarray, positions: np.ndarray, dist: np.ndarray, spacing_rc: np.ndarray,
                        direction: np.ndarray, z_spacing: float, meta: dict[str, Any]) -> Volume:
    """Linear interpolation along the normal onto an even grid; tilted slices are first shifted
    in-plane so that pixel (i, j) of every slice lies on the first slice's (i, j) line."""
    from scipy.ndimage import shift as nd_shift

    log.warning("%s: %s; resampled to an even %.3g mm grid", meta["source"], meta.get("irregularity", ""), z_spacing)
    row, col = direction[:, 0], direction[:, 1]
    work = arr.astype(np.float32)
    for k in range(len(work)):
        d = positions[k] - positions[0]
        dx, dy = d @ row / spacing_rc[1], d @ col / spacing_rc[0]
        if abs(dx) > 1e-3 or abs(dy) > 1e-3:
            work[k] = nd_shift(work[k], (dy, dx), order=1, mode="nearest")
    n = int(np.floor((dist[-1] - dist[0]) / z_spacing + 1e-6)) + 1
    target = dist[0] + np.arange(n) * z_spacing
    idx = np.clip(np.searchsorted(dist, target, side="right") - 1, 0, len(dist) - 2)
    w = (target - dist[idx]) / (dist[idx + 1] - dist[idx])
    out = np.empty((n, *arr.shape[1:]), dtype=arr.dtype)
    for k in range(n):
        s = (1 - w[k]) * work[idx[k]] + w[k] * work[idx[k] + 1]
        out[k] = np.rint(s) if out.dtype == np.int16 else s
    meta = {**meta, "resampled_from_irregular": True}
    return Volume(out, spacing_xyz=(spacing_rc[1], spacing_rc[0], z_spacing), origin_xyz=tuple(positions[0]),
                  direction=direction, units="HU" if meta.get("modality") == "CT" else "", metadata=meta)
