"""The CT series a DICOM SEG/SR references, made fit to be referenced, and model identity.

Anonymisers often blank StudyInstanceUID, SeriesInstanceUID and SOPInstanceUID (the real
``abdomen_ct_dicom_series`` sample has all three empty). A SEG or SR copying those gives empty
type 1 attributes that ``dciodvfy`` rejects and that no PACS can file. :func:`prepare_sources`
then either refuses (``on_missing_uids="refuse"``) or generates the missing UIDs with a warning
(default). Generated UIDs are *deterministic*: derived from the sha256 of the series' files, so the
SEG, the fractional SEG and the SR of one series, written in separate runs, still name the same
study, series and instances (they land together in PACS, in a study of their own: the original
study cannot be found without its UID).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..volume import Volume

log = logging.getLogger(__name__)

MANUFACTURER = "MediastinalAI"
# Patient/study attributes the SEG/SR copy from the source images: DICOM type 2 (present, may be
# empty), yet anonymised series often lack them altogether.
TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                "ReferringPhysicianName", "AccessionNumber", "StudyID")
UID_POLICIES = ("generate", "refuse")


@dataclass(frozen=True)
class ModelRef:
    """What identifies a model in every output: name, version, weights sha256, demo flag."""

    name: str
    version: str = ""
    sha256: str = ""
    demo: bool = False
    task: str = ""

    @classmethod
    def from_card(cls, card: Any) -> ModelRef:
        return cls(str(card.name), str(card.version), str(card.sha256), bool(card.demo), str(getattr(card, "task", "")))

    @classmethod
    def from_label(cls, label: str, sha256: str = "", demo: bool | None = None, task: str = "") -> ModelRef:
        """From a model label ``name vX.Y sha256:abc… (demo — not for clinical use)``."""
        m = re.match(r"^(\S+) v(\S+)", label or "")
        name, version = (m.group(1), m.group(2)) if m else ((label or "unknown").split(" ")[0], "")
        is_demo = ("demo" in (label or "")) if demo is None else bool(demo)
        return cls(name, version, sha256, is_demo, task)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256, "demo": self.demo,
                "task": self.task}

    def parameters(self) -> dict[str, str]:
        """Name/value pairs for DICOM AlgorithmParameters / SR algorithm parameters."""
        from .. import DEMO_DISCLAIMER, __version__

        out = {"model_sha256": self.sha256 or "unknown", "software": f"mediastinal-ai {__version__}"}
        if self.demo:
            out["note"] = DEMO_DISCLAIMER
        return out


@dataclass
class SourceSeries:
    """The referenced CT slices (pydicom datasets, in the reader's slice order), fixed up."""

    datasets: list[Any]
    files: list[Path]
    study_instance_uid: str
    series_instance_uid: str
    fingerprint: str  # sha256 over the files' sha256s
    generated_uids: list[str] = field(default_factory=list)  # attribute names that were generated
    warnings: list[str] = field(default_factory=list)

    def provenance(self) -> dict[str, Any]:
        return {"kind": "dicom-series", "series_instance_uid": self.series_instance_uid,
                "study_instance_uid": self.study_instance_uid, "n_files": len(self.files),
                "files_sha256": self.fingerprint, "generated_uids": list(self.generated_uids)}


def _uid(fingerprint: str, role: str) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=[fingerprint, role]))


def quiet_highdicom() -> None:
    """highdicom logs one INFO line per module it copies (dozens per object), which floods the
    CLI's INFO output; keep its warnings."""
    hd_log = logging.getLogger("highdicom")
    if hd_log.level < logging.WARNING:
        hd_log.setLevel(logging.WARNING)


def prepare_sources(ct: Volume, on_missing_uids: str = "generate") -> SourceSeries:
    """Read the CT's DICOM headers (no pixel data: highdicom needs only the headers) and fix what
    anonymisers break: SOP class/instance from the file meta, blank study/series/instance UIDs
    (generated or refused, see the module doc), missing type 2 patient/study attributes."""
    import pydicom

    quiet_highdicom()
    if on_missing_uids not in UID_POLICIES:
        raise ValueError(f"on_missing_uids must be one of {UID_POLICIES}, got {on_missing_uids!r}")
    files = [Path(f) for f in ct.metadata.get("dicom_files") or []]
    if not files:
        raise InputError("DICOM SEG needs a CT read from a DICOM series, and so does a DICOM SR (this CT came from "
                         f"{ct.metadata.get('format', 'a non-DICOM file')}); export NRRD or NIfTI instead",
                         ct.metadata.get("source"))
    if ct.metadata.get("resampled_from_irregular") or len(files) != ct.shape[0]:
        raise InputError(f"the CT ({ct.shape[0]} slices) is not on its {len(files)} DICOM slices (resampled from an "
                         "irregular series?): a DICOM SEG/SR must be drawn on the source slices; export NRRD/NIfTI",
                         ct.metadata.get("source"))
    from ..fileio import sha256_file

    shas = [sha256_file(f) for f in files]
    fingerprint = hashlib.sha256("".join(shas).encode()).hexdigest()
    datasets = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]  # highdicom needs headers only
    generated: set[str] = set()
    for k, ds in enumerate(datasets):
        meta = getattr(ds, "file_meta", None)
        if not ds.get("SOPClassUID") and meta is not None and meta.get("MediaStorageSOPClassUID"):
            ds.SOPClassUID = meta.MediaStorageSOPClassUID
        if not ds.get("SOPInstanceUID") and meta is not None and meta.get("MediaStorageSOPInstanceUID"):
            ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        for key in TYPE2_COPIED:
            if key not in ds:
                setattr(ds, key, "")
        for key, role in (("StudyInstanceUID", "study"), ("SeriesInstanceUID", "series"),
                          ("SOPInstanceUID", f"instance-{shas[k]}"), ("FrameOfReferenceUID", "frame-of-reference")):
            if not str(ds.get(key, "") or "").strip():
                generated.add(key)
                setattr(ds, key, _uid(fingerprint, role))
        if not ds.get("SOPClassUID"):
            raise InputError("source slice without SOPClassUID (neither in the header nor in the file meta)", files[k])
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        values = {str(ds.get(key)) for ds in datasets}
        if len(values) > 1:
            raise InputError(f"the series' slices disagree on {key} ({len(values)} values); a SEG/SR cannot "
                             "reference them as one series", files[0])
    warnings = []
    if generated:
        names = ", ".join(sorted(generated))
        if on_missing_uids == "refuse":
            raise InputError(f"the source series has blank {names} (anonymised?): a SEG/SR referencing it would "
                             "not be valid DICOM; restore the UIDs, or allow generated UIDs "
                             "(leave out --refuse-blank-uids; on_missing_uids='generate')", files[0])
        warnings.append(f"the source series has blank {names} (anonymised?): generated deterministic UIDs "
                        "from the files' sha256; PACS files the SEG/SR in a study of their own, not with the "
                        "original study")
        for w in warnings:
            log.warning("%s: %s", ct.metadata.get("source", files[0]), w)
    ds0 = datasets[0]
    return SourceSeries(datasets, files, str(ds0.StudyInstanceUID), str(ds0.SeriesInstanceUID), fingerprint,
                        sorted(generated), warnings)


def check_uids(ct: Volume, on_missing_uids: str = "refuse") -> list[str]:
    """The UID attributes the CT's DICOM headers leave blank (headers only: fast, for an early
    refusal before inference); raises like :func:`prepare_sources` when refusing."""
    import pydicom

    blank: set[str] = set()
    for f in ct.metadata.get("dicom_files") or []:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        meta = getattr(ds, "file_meta", None)
        for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID"):
            if not str(ds.get(key, "") or "").strip():
                if key == "SOPInstanceUID" and meta is not None and meta.get("MediaStorageSOPInstanceUID"):
                    continue
                blank.add(key)
    if blank and on_missing_uids == "refuse":
        raise InputError(f"the source series has blank {', '.join(sorted(blank))} (anonymised?): a SEG/SR "
                         "referencing it would not be valid DICOM; restore the UIDs, or allow generated UIDs "
                         "(leave out --refuse-blank-uids)", ct.metadata.get("source"))
    return sorted(blank)


def series_number_after(sources: SourceSeries, offset: int) -> int:
    """A series number for a derived object: the source's plus an offset (900+ when unknown)."""
    try:
        n = int(sources.datasets[0].get("SeriesNumber") or 0)
    except (TypeError, ValueError):
        n = 0
    return max(1, min(n + offset if n else 900 + offset, 2**31 - 1))
