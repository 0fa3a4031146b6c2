"""``mediastinal-ai segment``: one CT → mask.nrrd, probability.nrrd, lesions.csv,
segmentation_result.json (the case folder's names, :mod:`mediastinal_ai.case_files`).

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
                   help="also write DIR/segmentation.dcm (BINARY DICOM SEG, one segment per lesion) and "
                   "DIR/probability_seg.dcm (FRACTIONAL SEG of the probability/uncertainty maps); the input "
                   "must be a DICOM series")
    p.add_argument("--dicom-sr", action="store_true",
                   help="also write DIR/measurements_sr.dcm (DICOM SR, TID 1500: lesion measurements referencing "
                   "the SEG and the CT series); implies --dicom-seg")
    p.add_argument("--refuse-blank-uids", action="store_true",
                   help="refuse DICOM output for a series with blank Study/Series/SOP Instance UIDs (anonymised) "
                   "instead of generating deterministic UIDs with a warning")
    p.add_argument("--tta", default="auto", metavar="AXES",
                   help="mirroring test-time augmentation: auto (the mirrors the model was trained with, as many "
                        "as fit the device), none, or axes to mirror, e.g. x or xyz (default auto)")
    p.add_argument("--no-tta", dest="tta", action="store_const", const="none", help="one plain pass (= --tta none)")
    p.add_argument("--no-crop", dest="crop", action="store_false", default="auto",
                   help="run the network over the whole field of view instead of the mediastinal crop")
    p.add_argument("--keep-outside-mediastinum", dest="restrict", action="store_false", default=True,
                   help="keep predicted regions mostly outside the mediastinum (dropped by default; listed in "
                        "segmentation_result.json either way)")
    p.add_argument("--progress-lines", action="store_true", help="machine-readable progress on stdout")


def run(args: argparse.Namespace) -> int:
    import sys

    from ..io import read_ct
    from ..models import resolve
    from ..progress import cli_progress
    from . import load_model, segment_volume, write_result

    bar = None if args.progress_lines else cli_progress("segment")

    def progress(f: float, msg: str) -> None:
        if args.progress_lines:
            text = " ".join(str(msg).split())
            print(f"MEDIASTINALAI_PROGRESS {min(1.0, max(0.0, f)):.4f} {text}".rstrip(), flush=True)
        elif bar is not None:
            bar(f, msg)

    from ..errors import InputError
    from ..io.images import IMAGE_SUFFIXES

    args.dicom_seg = bool(args.dicom_seg or getattr(args, "dicom_sr", False))
    flag = "--dicom-sr" if getattr(args, "dicom_sr", False) else "--dicom-seg"
    dicom_seg_refused = InputError(f"{flag} needs a DICOM series as input (a SEG must reference the source "
                                   "images); mask.nrrd is written without it", args.input)
    if args.dicom_seg and str(args.input).lower().endswith(IMAGE_SUFFIXES):
        raise dicom_seg_refused  # an image file is never DICOM: say so before minutes of inference
    progress(0.0, "reading CT")
    ct = read_ct(args.input, args.series_uid)
    if args.dicom_seg and not ct.metadata.get("dicom_files"):
        raise dicom_seg_refused
    if args.dicom_seg and args.refuse_blank_uids:
        from ..pacs.sources import check_uids

        check_uids(ct, "refuse")  # before minutes of inference
    progress(0.01, "loading model")
    model = load_model(resolve(args.model, task="segmentation"), device=args.device)
    from .compute import inference_note

    note = inference_note(model.plan, ct, model.device)
    if note:
        print(note, file=sys.stderr, flush=True)
    try:
        result = segment_volume(ct, model, threshold=args.threshold, roi_lps=args.roi, progress=progress,
                                tta=args.tta, crop=args.crop, restrict_to_mediastinum=args.restrict)
    finally:
        if bar is not None:
            bar.close()
    paths = write_result(result, args.out, ct)
    if args.dicom_seg:
        from ..pacs import ModelRef
        from ..pacs.export import export_case

        progress(0.99, "writing DICOM SEG" + (" and SR" if args.dicom_sr else ""))
        kinds = ("seg", "fractional", "sr") if args.dicom_sr else ("seg", "fractional")
        written = export_case(ct, paths["mask"].parent, mask=result.mask, lesions=result.lesions,
                              seg_model=ModelRef.from_card(model.card), labels=result.labels,
                              probability=result.probability, uncertainty=result.uncertainty,
                              threshold=result.threshold, plan=result.params.get("plan"), kinds=kinds,
                              on_missing_uids="refuse" if args.refuse_blank_uids else "generate",
                              params={"command": "segment"})
        paths.update({f"dicom:{k}": v for k, v in written.items()})
    progress(1.0, "done")
    out = sys.stderr if args.progress_lines else sys.stdout
    for w in result.warnings:
        print(f"WARNING: {w}", file=out)
    print(f"{len(result.lesions)} lesion(s); model {model.label}; outputs in {args.out}", file=out)
    for r in result.lesions:
        where = f", {r['compartment']}" if r.get("compartment") else ""
        review = f"; REVIEW: {r['review_reasons']}" if r.get("review") else ""
        print(f"  lesion {r['lesion_id']}: {r['volume_ml']} ml, max diameter {r['max_diameter_mm']} mm, "
              f"mean {r['mean_hu']} HU, max p {r['max_probability']}{where}{review}", file=out)
    if result.dropped:
        print(f"  {len(result.dropped)} region(s) outside the mediastinum dropped "
              f"({sum(d['volume_ml'] for d in result.dropped):.1f} ml; --keep-outside-mediastinum keeps them)", file=out)
    _ = paths
    return 0
