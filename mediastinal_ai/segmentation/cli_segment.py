"""``mediastinal-ai segment``: one CT → mask.nrrd, probability.nrrd, lesions.csv, result.json.

With ``--progress-lines`` it prints ``MEDIASTINALAI_PROGRESS <fraction> <message>`` lines
(flushed) on stdout: the Slicer module runs this command as a child process and reads them.
"""

from __future__ import annotations

import argparse


def _roi(text: str) -> tuple[float, ...]:
    try:
        v = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("ROI must be six numbers x0,y0,z0,x1,y1,z1 (LPS mm)") from None
    if len(v) != 6:
        raise argparse.ArgumentTypeError("ROI must be six numbers x0,y0,z0,x1,y1,z1 (LPS mm)")
    return v


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", "-i", required=True, help="CT: DICOM folder, .nii/.nii.gz, .nrrd, .mha")
    p.add_argument("--out", "-o", required=True, help="output folder")
    p.add_argument("--model", default=None, help="model name or card path (default: built-in demo model)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threshold", type=float, default=0.5, help="probability threshold (default 0.5)")
    p.add_argument("--roi", type=_roi, default=None, help="restrict to a box x0,y0,z0,x1,y1,z1 in LPS mm")
    p.add_argument("--series-uid", default=None, help="SeriesInstanceUID when the DICOM folder holds several")
    p.add_argument("--dicom-seg", action="store_true",
                   help="also write DIR/segmentation.dcm (DICOM SEG); the input must be a DICOM series")
    p.add_argument("--progress-lines", action="store_true", help="machine-readable progress on stdout")


def run(args: argparse.Namespace) -> int:
    import sys

    from ..io import read_ct
    from ..models import resolve
    from . import load_model, segment_volume, write_result

    def progress(f: float, msg: str) -> None:
        if args.progress_lines:
            text = " ".join(str(msg).split())
            print(f"MEDIASTINALAI_PROGRESS {min(1.0, max(0.0, f)):.4f} {text}".rstrip(), flush=True)

    from ..errors import InputError
    from ..io.images import IMAGE_SUFFIXES

    dicom_seg_refused = InputError("--dicom-seg needs a DICOM series as input (a SEG must reference the source "
                                   "images); mask.nrrd is written without it", args.input)
    if args.dicom_seg and str(args.input).lower().endswith(IMAGE_SUFFIXES):
        raise dicom_seg_refused  # an image file is never DICOM: say so before minutes of inference
    progress(0.0, "reading CT")
    ct = read_ct(args.input, args.series_uid)
    if args.dicom_seg and not ct.metadata.get("dicom_files"):
        raise dicom_seg_refused
    progress(0.01, "loading model")
    model = load_model(resolve(args.model, task="segmentation"), device=args.device)
    result = segment_volume(ct, model, threshold=args.threshold, roi_lps=args.roi, progress=progress)
    paths = write_result(result, args.out, ct)
    if args.dicom_seg:
        from .dicom_seg import write_dicom_seg

        progress(0.99, "writing DICOM SEG")
        paths["dicom_seg"] = write_dicom_seg(result.mask, ct, paths["mask"].parent / "segmentation.dcm")
    progress(1.0, "done")
    print(f"{len(result.lesions)} lesion(s); model {model.label}; outputs in {args.out}",
          file=sys.stderr if args.progress_lines else sys.stdout)
    for r in result.lesions:
        print(f"  lesion {r['lesion_id']}: {r['volume_ml']} ml, max diameter {r['max_diameter_mm']} mm, "
              f"mean {r['mean_hu']} HU, max p {r['max_probability']}", file=sys.stderr if args.progress_lines else sys.stdout)
    _ = paths
    return 0
