"""Find the cases in what the user points a batch at.

Accepted inputs: a cohort manifest CSV (see :mod:`mediastinal_ai.cohort`), a single image
file, a folder of image files (``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha``, ``.mhd``), or a
folder of DICOM files (every CT series, by SeriesInstanceUID, is a case). A bad manifest row
does not stop discovery: it becomes a case that fails with that row's error, so it shows
in the status table.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
MASK_HINTS = ("_mask", "_seg", "_label", "-mask", "-seg", "-label")


@dataclass
class CaseSpec:
    """Everything a worker needs to run one case; plain data so it ships to Dask workers."""

    case_id: str
    ct: str
    series_uid: str | None = None
    mask: str | None = None
    clinical: dict[str, Any] = field(default_factory=dict)  # ctc, age, sex, lesion_site
    labels: dict[str, Any] = field(default_factory=dict)  # lesion_class, malignant, who_risk (for reports)
    synthetic: bool = False
    error: str | None = None  # set when discovery already knows the case is unusable

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def safe_case_id(text: str) -> str:
    """A case id usable as a folder name on every OS (keeps unicode letters, drops path tricks)."""
    s = re.sub(r"[^\w.\-]+", "_", text, flags=re.UNICODE).strip("._")
    return s[:120] or "case"


def _image_stem(p: Path) -> str:
    name = p.name
    for suf in IMAGE_SUFFIXES:
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return p.stem


def is_image_file(p: Path) -> bool:
    return p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)


def _from_manifest(path: Path) -> list[CaseSpec]:
    from ..cohort import read_manifest

    cases, errors = read_manifest(path, strict=False)  # type: ignore[misc]
    out = []
    for c in cases:
        out.append(CaseSpec(
            case_id=safe_case_id(c.case_id),
            ct=str(c.ct),
            mask=str(c.mask) if c.mask else None,
            clinical={k: v for k, v in {"ctc": c.ctc, "age": c.age, "sex": c.sex, "lesion_site": c.lesion_site}.items()
                      if v is not None},
            labels={k: v for k, v in {"lesion_class": c.lesion_class, "malignant": c.malignant,
                                      "who_risk": c.who_risk}.items() if v is not None},
            synthetic=c.synthetic,
        ))
    for row, err in errors:
        out.append(CaseSpec(case_id=f"manifest_row_{row}", ct="", error=err))
    return out


def _from_dicom_folder(folder: Path) -> list[CaseSpec]:
    from ..io import find_dicom_series

    series = find_dicom_series(folder)
    out = []
    for s in series:
        uid = s.series_instance_uid
        modality = getattr(s, "modality", None)
        err = None if modality in (None, "", "CT") else f"not a CT: Modality {modality}"
        out.append(CaseSpec(case_id=safe_case_id(f"series_{uid[-24:]}"), ct=str(folder), series_uid=uid, error=err))
    return out


def discover(inputs: str | Path | list[str | Path]) -> list[CaseSpec]:
    """Inputs → case list (sorted, unique ids). Raises InputError only when nothing is usable
    at all (missing path, empty folder); per-case problems are carried in ``CaseSpec.error``."""
    items = inputs if isinstance(inputs, list) else [inputs]
    cases: list[CaseSpec] = []
    for item in items:
        p = Path(item)
        if not p.exists():
            raise InputError("input not found", p)
        if not _utf8(p):
            raise InputError("input path is not valid UTF-8; rename it", ascii(str(p)))
        if not p.is_file() and not p.is_dir():
            raise InputError("not a file or folder (a FIFO, socket or device?)", p)
        if p.is_file() and p.suffix.lower() == ".csv":
            cases += _from_manifest(p)
        elif p.is_file():
            cases.append(_image_case(p))
        else:
            images = sorted(f for f in p.iterdir() if is_image_file(f))
            cts = [f for f in images if not any(h in _image_stem(f).lower() for h in MASK_HINTS)]
            if cts:
                cases += [_image_case(f) for f in cts]
            else:
                cases += _from_dicom_folder(p)
    if not cases:
        raise InputError("no cases found (no manifest rows, image files or DICOM series)", items[0])
    return unique_ids(cases)


def unique_ids(cases: list[CaseSpec]) -> list[CaseSpec]:
    """Make case ids unique, stably, and also case-insensitively (macOS/Windows folders).

    Why: ``a/b`` and ``a_b`` both sanitise to ``a_b``; numbering the second ``a_b_2`` collided
    with a real ``a_b_2`` and two cases shared one output folder. A suffix is only taken when
    no earlier case holds it.
    """
    used: set[str] = set()
    for c in cases:
        base, cand, k = c.case_id, c.case_id, 2
        while cand.casefold() in used:
            cand = f"{base}_{k}"
            k += 1
        used.add(cand.casefold())
        c.case_id = cand
    return cases


def _utf8(p: Path) -> bool:
    try:
        str(p).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _image_case(f: Path) -> CaseSpec:
    """A case for one image file; a non-UTF-8 name fails here, before it reaches SimpleITK
    (which aborts the whole process on it)."""
    if not _utf8(f):
        shown = ascii(str(f))
        return CaseSpec(case_id=safe_case_id(ascii(_image_stem(f)).strip("'")), ct=shown,
                        error="file name is not valid UTF-8; rename the file")
    return CaseSpec(case_id=safe_case_id(_image_stem(f)), ct=str(f))
