"""Cohort manifests: one CSV row per case, the contract between data, training and batch.

Columns (only ``case_id`` and ``ct`` are required; the rest is used by the tasks that need it):

============== ===================================================================
case_id        unique id (file-name safe)
ct             CT path (DICOM folder, .nii/.nii.gz, .nrrd, .mha); relative to the CSV's folder
               (read as an absolute path, so a "not found" error names where it looked)
mask           tumor mask (reader 1), same grid as the CT
mask_reader2   second reader's mask (inter-observer ICC feature stability)
mask_reader1_repeat   reader 1's repeat outline, e.g. two weeks later (intra-observer ICC)
lesion_class   one of :mod:`mediastinal_ai.taxonomy` names
malignant      0/1
who_risk       low/high (thymic epithelial tumors only; empty otherwise)
ctc            circulating tumor cell level in :data:`~mediastinal_ai.taxonomy.CTC_UNIT`
age, sex, lesion_site   optional clinical inputs
split          optional train/val/test assignment honoured by training commands
synthetic      true when the case was generated (always set by ``mediastinal-ai synth``)
============== ===================================================================
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError

REQUIRED = ("case_id", "ct")
PATH_COLUMNS = ("ct", "mask", "mask_reader2", "mask_reader1_repeat")
COLUMNS = (
    "case_id", "ct", "mask", "mask_reader2", "mask_reader1_repeat", "lesion_class", "malignant", "who_risk",
    "ctc", "age", "sex", "lesion_site", "split", "synthetic",
)


@dataclass
class Case:
    case_id: str
    ct: Path
    mask: Path | None = None
    mask_reader2: Path | None = None
    mask_reader1_repeat: Path | None = None
    lesion_class: str | None = None
    malignant: int | None = None
    who_risk: str | None = None
    ctc: float | None = None
    age: float | None = None
    sex: str | None = None
    lesion_site: str | None = None
    split: str | None = None
    synthetic: bool = False
    extra: dict[str, str] = field(default_factory=dict)
    row: int = 0  # 1-based data row in the CSV, for error messages

    @property
    def high_risk(self) -> int | None:
        return None if self.who_risk is None else int(self.who_risk == "high")


def _num(v: str, col: str, row: int, path: Path) -> float | None:
    if v is None or v.strip() == "":
        return None
    try:
        x = float(v)
    except ValueError:
        raise InputError(f"row {row}: column {col!r} is not a number: {v!r}", path) from None
    if not math.isfinite(x):
        raise InputError(f"row {row}: column {col!r} is not finite: {v!r}", path)
    return x


def parse_row(d: dict[str, str], row: int, base: Path, manifest: Path) -> Case:
    """One manifest row → :class:`Case`; raises :class:`InputError` naming the row."""
    d = {k.strip(): (v or "").strip() for k, v in d.items() if k is not None}
    for col in REQUIRED:
        if not d.get(col):
            raise InputError(f"row {row}: missing required column {col!r}", manifest)
    paths: dict[str, Path | None] = {}
    for col in PATH_COLUMNS:
        v = d.get(col, "")
        paths[col] = None if not v else (Path(v) if Path(v).is_absolute() else base / v)
    malignant = _num(d.get("malignant", ""), "malignant", row, manifest)
    if malignant is not None and malignant not in (0, 1):
        raise InputError(f"row {row}: 'malignant' must be 0 or 1, got {d['malignant']!r}", manifest)
    risk = d.get("who_risk") or None
    if risk is not None and risk not in ("low", "high"):
        raise InputError(f"row {row}: 'who_risk' must be low/high or empty, got {risk!r}", manifest)
    known = set(COLUMNS)
    return Case(
        case_id=d["case_id"],
        ct=paths["ct"],  # type: ignore[arg-type]
        mask=paths["mask"],
        mask_reader2=paths["mask_reader2"], mask_reader1_repeat=paths["mask_reader1_repeat"],
        lesion_class=d.get("lesion_class") or None,
        malignant=None if malignant is None else int(malignant),
        who_risk=risk,
        ctc=_num(d.get("ctc", ""), "ctc", row, manifest),
        age=_num(d.get("age", ""), "age", row, manifest),
        sex=d.get("sex") or None,
        lesion_site=d.get("lesion_site") or None,
        split=d.get("split") or None,
        synthetic=d.get("synthetic", "").lower() in ("1", "true", "yes"),
        extra={k: v for k, v in d.items() if k not in known},
        row=row,
    )


def read_manifest(path: str | Path, strict: bool = True) -> list[Case] | tuple[list[Case], list[tuple[int, str]]]:
    """Read a manifest. ``strict``: raise on the first bad row; otherwise return
    ``(cases, [(row, error), ...])`` so a batch can record bad rows and go on."""
    path = Path(path)
    if not path.is_file():
        raise InputError("manifest not found", path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"manifest is not UTF-8 text ({e})", path) from e
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames or "case_id" not in [f.strip() for f in reader.fieldnames]:
        raise InputError("manifest has no header with a 'case_id' column", path)
    cases: list[Case] = []
    errors: list[tuple[int, str]] = []
    seen: set[str] = set()
    for i, d in enumerate(reader, start=1):
        try:
            extra = [str(v) for v in (d.pop(None, None) or []) if str(v).strip()]  # type: ignore[call-overload]
            if extra:  # "12,5" unquoted: csv reads CTC 12 and a stray field 5
                raise InputError(f"row {i} has {len(extra)} more field(s) than the header ({', '.join(map(repr, extra[:3]))}"
                                 "): an unquoted comma? Use a dot as decimal separator and quote text with commas",
                                 path)
            c = parse_row(d, i, path.absolute().parent, path)  # absolute: errors show where we looked
            if c.case_id in seen:
                raise InputError(f"row {i}: duplicate case_id {c.case_id!r}", path)
            seen.add(c.case_id)
            cases.append(c)
        except InputError as e:
            if strict:
                raise
            errors.append((i, str(e)))
    return cases if strict else (cases, errors)


def write_manifest(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write rows (dicts) atomically with the standard columns first, extras after."""
    from .fileio import atomic_path

    path = Path(path)
    extra = sorted({k for r in rows for k in r} - set(COLUMNS))
    cols = [c for c in COLUMNS if any(c in r for r in rows)] + extra
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in cols})
    return path
