"""DICOM SEG export (highdicom) of a tumor mask, referencing the source CT series.

A SEG must reference the DICOM images it was drawn on, so export needs a CT that was read
from DICOM (``Volume.metadata["dicom_files"]``, set by :func:`mediastinal_ai.io.read_ct`);
for NIfTI/NRRD sources it refuses with a clear message (export NRRD/NIfTI instead).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..volume import Volume

SEGMENT_LABEL = "Anterior mediastinal tumor"
# Patient/study attributes the SEG copies from its source images; DICOM type 2 (present, may be
# empty), yet anonymised series often lack them altogether.
_TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                 "ReferringPhysicianName", "AccessionNumber", "StudyID")


def write_dicom_seg(mask: Volume, ct: Volume, out_path: str | Path, *, algorithm: str = "MediastinalAI 3D U-Net",
                    manual: bool = False) -> Path:
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    from .. import __version__
    from ..fileio import atomic_path

    files = ct.metadata.get("dicom_files")
    if not files:
        raise InputError("DICOM SEG needs a CT read from a DICOM series (this CT came from "
                         f"{ct.metadata.get('format', 'a non-DICOM file')}); export NRRD or NIfTI instead",
                         ct.metadata.get("source"))
    if mask.shape != ct.shape:
        raise InputError(f"mask shape {mask.shape} does not match the CT {ct.shape}")
    sources = [pydicom.dcmread(f) for f in files]  # sorted along the slice normal by the reader
    for ds in sources:  # anonymisers sometimes blank these; the file meta still holds them
        if not ds.get("SOPClassUID") and "MediaStorageSOPClassUID" in ds.file_meta:
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        if not ds.get("SOPInstanceUID") and "MediaStorageSOPInstanceUID" in ds.file_meta:
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        for key in _TYPE2_COPIED:  # type 2: must be present, may be empty; anonymisers drop them
            if key not in ds:
                setattr(ds, key, "")
    desc = hd.seg.SegmentDescription(
        segment_number=1, segment_label=SEGMENT_LABEL,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Mass,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL if manual else
        hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=None if manual else hd.AlgorithmIdentificationSequence(
            name=algorithm, version=__version__, family=codes.cid7162.ArtificialIntelligence),
    )
    try:
        seg = _segmentation(hd, sources, mask, desc)
    except (ValueError, AttributeError, TypeError, KeyError) as e:
        raise InputError(f"DICOM SEG could not be made from this series ({type(e).__name__}: {e}); "
                         "mask.nrrd holds the same result", ct.metadata.get("source")) from e
    out = Path(out_path)
    with atomic_path(out) as tmp:
        seg.save_as(tmp)
    return out


def _segmentation(hd: Any, sources: list, mask: Volume, desc: Any) -> Any:
    from .. import __version__

    return hd.seg.Segmentation(
        source_images=sources, pixel_array=(np.asarray(mask.array) > 0).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=[desc],
        series_instance_uid=hd.UID(), series_number=900, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="MediastinalAI", manufacturer_model_name="MediastinalAI", software_versions=__version__,
        device_serial_number="0", series_description="MediastinalAI tumor segmentation",
    )


def read_dicom_seg(path: str | Path, ct: Volume) -> Volume:
    """A SEG written for ``ct`` back to a mask on the CT grid (frames placed by their position)."""
    import pydicom

    ds = pydicom.dcmread(path)
    frames = ds.pixel_array
    if frames.ndim == 2:
        frames = frames[None]
    out = np.zeros(ct.shape, np.uint8)
    normal = ct.direction[:, 2]
    z0 = np.asarray(ct.origin_xyz) @ normal
    for f, item in zip(frames, ds.PerFrameFunctionalGroupsSequence):
        pos = np.asarray([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient])
        k = int(round((pos @ normal - z0) / ct.spacing_xyz[2]))
        if not 0 <= k < ct.shape[0]:
            raise InputError(f"SEG frame at {pos.tolist()} lies outside the CT", path)
        out[k] |= (f > 0).astype(np.uint8)
    return ct.with_array(out, units="label")
