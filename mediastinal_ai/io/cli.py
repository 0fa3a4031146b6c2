"""``mediastinal-ai info``: what a CT file or DICOM folder holds, or why it cannot be used.

Exit code 0 when the CT is usable; a user error (missing, corrupt, not a CT, ...) is raised as
InputError, which the main CLI prints without a traceback and turns into exit code 2.
"""

from __future__ import annotations

import argparse
import logging


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="DICOM folder (or one file of the series), .nii/.nii.gz, .nrrd/.nhdr or .mha/.mhd")
    p.add_argument("--series-uid", default=None, help="SeriesInstanceUID to read from a DICOM folder "
                                                      "(default: the CT series with the most slices)")
    p.add_argument("--resample-irregular", action="store_true",
                   help="resample tilted/unevenly spaced/gappy DICOM series instead of refusing them")
    p.add_argument("--no-hu-check", action="store_true",
                   help="skip the HU plausibility rule (for unusual crops; see docs/io.md)")


class _Collect(logging.Handler):
    """Keeps the warnings the readers log, to print them after the summary (INFO lines go to
    stderr through the main CLI's logging setup)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname.lower()}: {record.getMessage()}")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np

    from . import find_dicom_series, read_ct

    p = Path(args.path)
    logger = logging.getLogger("mediastinal_ai.io")
    handler = _Collect()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        if p.is_dir() and any(p.iterdir()):
            for s in find_dicom_series(p):
                print(f"series {s.series_instance_uid or '(no UID)'}  {s.modality or '?':<3} {s.n_slices:4d} files"
                      f"  {s.description}")
        v = read_ct(p, args.series_uid, on_irregular="resample" if args.resample_irregular else "error",
                    check_hu=not args.no_hu_check)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    a = v.array
    m = v.metadata
    print(f"file: {p}")
    print(f"format: {m.get('format', '?')}   modality: {m.get('modality', 'CT (assumed: no modality in file)')}"
          f"   units: {v.units}")
    print(f"shape (z,y,x): {v.shape}   voxel type: {a.dtype}")
    print(f"spacing (x,y,z) mm: {tuple(round(s, 4) for s in v.spacing_xyz)}")
    print(f"origin (LPS) mm: {tuple(round(o, 3) for o in v.origin_xyz)}")
    print(f"direction (columns i,j,k in LPS): {np.round(v.direction, 4).tolist()}")
    extent = np.asarray(v.shape[::-1]) * np.asarray(v.spacing_xyz)
    print(f"extent (x,y,z) mm: {tuple(round(float(e), 1) for e in extent)}")
    p1, p99 = np.percentile(a.ravel()[:: max(1, a.size // 2_000_000)], [1, 99])
    print(f"HU range: {a.min()} … {a.max()} (1st/99th percentile {p1:.0f}/{p99:.0f})")
    if m.get("series_instance_uid") is not None:
        print(f"series chosen: {m['series_instance_uid'] or '(no UID)'} ({len(m.get('dicom_files', []))} files)")
    for k in ("series_description", "synthetic", "irregularity", "resampled_from_irregular", "other_series"):
        if m.get(k):
            print(f"{k}: {m[k]}")
    for msg in handler.messages:
        print(msg)
    if m.get("synthetic"):
        print("note: SYNTHETIC image - not patient data")
    return 0
