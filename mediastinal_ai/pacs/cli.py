"""``mediastinal-ai export-dicom``: PACS-ready DICOM objects of one case.

From a ``segment`` output folder and the prediction JSONs (``predict-radiomics``, ``predict-cnn``,
``predict-fusion``), on the DICOM CT series they were computed from: BINARY SEG (one segment per
lesion), FRACTIONAL SEG (probability, uncertainty), TID 1500 SR (lesion measurements and all AI
predictions with their models), and dicom_export.json (UIDs, warnings, provenance).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ct", required=True, help="the CT as a DICOM series folder (the SEG/SR reference its images)")
    p.add_argument("--series-uid", default=None, help="SeriesInstanceUID when the folder holds several")
    p.add_argument("--seg-result", required=True, help="output folder of 'mediastinal-ai segment' for this CT")
    p.add_argument("--radiomics", default=None, help="result JSON of predict-radiomics (optional)")
    p.add_argument("--cnn", default=None, help="cnn_result.json of predict-cnn (optional)")
    p.add_argument("--fusion", default=None, help="result JSON of predict-fusion (optional)")
    p.add_argument("--radiomics-features", action="store_true",
                   help="also put the radiomics model's input features (pyradiomics names) in the SR")
    p.add_argument("--out", default=None, help="output folder (default: the --seg-result folder)")
    p.add_argument("--no-sr", action="store_true", help="SEG files only")
    p.add_argument("--refuse-blank-uids", action="store_true",
                   help="refuse a series with blank Study/Series/SOP Instance UIDs instead of generating UIDs")
    p.add_argument("--validate", action="store_true",
                   help="run dciodvfy (dicom3tools) on every file written; fail on any error")


def _load(path: str | None, what: str) -> dict | None:
    from ..errors import InputError

    if not path:
        return None
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read the {what} result ({e})", path) from e


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..io import read_ct
    from .export import EXPORT_JSON, export_result_folder

    ct = read_ct(args.ct, args.series_uid)
    if not ct.metadata.get("dicom_files"):
        raise InputError("export-dicom needs the CT as a DICOM series (a SEG/SR must reference its images)", args.ct)
    preds = {k: v for k, v in (("radiomics", _load(args.radiomics, "radiomics")), ("cnn", _load(args.cnn, "CNN")),
                                ("fusion", _load(args.fusion, "fusion"))) if v}
    kinds = ("seg", "fractional") if args.no_sr else ("seg", "fractional", "sr")
    paths = export_result_folder(ct, args.seg_result, args.out, predictions=preds, kinds=kinds,
                                 radiomics_features=args.radiomics_features,
                                 on_missing_uids="refuse" if args.refuse_blank_uids else "generate")
    record = json.loads(paths[EXPORT_JSON].read_text(encoding="utf-8"))
    for w in record.get("warnings", []):
        print(f"warning: {w}")
    for name, why in record.get("not_written", {}).items():
        print(f"not written: {name}: {why}")
    failed = 0
    for name, p in paths.items():
        line = f"wrote {p}"
        if args.validate and name.endswith(".dcm"):
            from .validate import dciodvfy

            v = dciodvfy(p)
            line += f" (dciodvfy: {len(v.errors)} errors, {len(v.warnings)} warnings)"
            failed += len(v.errors)
            for e in v.errors:
                print(f"  {e}")
        print(line)
    return 1 if failed else 0
