"""``mediastinal-ai synth``: generate a synthetic cohort (NIfTI + manifest.csv), labelled SYNTHETIC."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cases", type=int, required=True,
                   help="number of cases (with --background: lesions inserted into each background CT)")
    p.add_argument("--background", nargs="+", default=None, metavar="CT",
                   help="real CT(s) (file or DICOM folder) to insert synthetic lesions into, in the prevascular "
                        "space; each background is also written unchanged as a hard negative (SYNTHETIC-ON-REAL)")
    p.add_argument("--no-negatives", action="store_true", help="with --background: do not write the unchanged CTs")
    p.add_argument("--out", required=True, help="output folder (images/ + manifest.csv + README.txt + cohort.json)")
    p.add_argument("--seed", type=int, default=0, help="first seed; case i uses seed+i (default 0)")
    p.add_argument("--inplane-size", type=int, default=128, help="in-plane matrix over 350 mm (default 128; 512 works)")
    p.add_argument("--slice-thickness", type=float, default=5.0, help="slice thickness in mm (default 5; e.g. 1)")
    p.add_argument("--classes", nargs="*", default=None, help="restrict to these lesion classes (taxonomy names)")
    p.add_argument("--tet-only", action="store_true",
                   help="only thymic epithelial tumors with a WHO risk group (A, AB, B1, B2, B3, thymic carcinoma)")
    p.add_argument("--contrast-phase", choices=("venous", "arterial", "non_contrast"), default="venous",
                   help="contrast phase of the vessels and heart (default venous)")


def run(args: argparse.Namespace) -> int:
    from ..errors import MediastinalAIError
    from ..progress import log_progress
    from ..taxonomy import BY_NAME, WHO_HIGH, WHO_LOW
    from . import generate_cohort

    if args.cases < 1:
        raise MediastinalAIError(f"--cases must be at least 1, got {args.cases}")
    if not 32 <= args.inplane_size <= 1024:
        raise MediastinalAIError(f"--inplane-size must be between 32 and 1024, got {args.inplane_size}")
    if not 0.5 <= args.slice_thickness <= 10:
        raise MediastinalAIError(f"--slice-thickness must be between 0.5 and 10 mm, got {args.slice_thickness}")
    unknown = [c for c in args.classes or [] if c not in BY_NAME]
    if unknown:
        raise MediastinalAIError(f"unknown lesion class(es) {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    classes = list(WHO_LOW + WHO_HIGH) if args.tet_only else args.classes
    if args.background:
        from .insertion import insert_cohort

        m = insert_cohort(args.background, args.cases, args.out, seed=args.seed, classes=classes,
                          negatives=not args.no_negatives, progress=log_progress)
        print(f"wrote {args.cases} SYNTHETIC-ON-REAL case(s) per background ({len(args.background)} background(s)); "
              f"manifest: {m}")
        return 0
    m = generate_cohort(args.cases, args.out, seed=args.seed, classes=classes, inplane_size=args.inplane_size,
                        slice_thickness_mm=args.slice_thickness, contrast_phase=args.contrast_phase,
                        progress=log_progress)
    print(f"wrote {args.cases} SYNTHETIC case(s); manifest: {m}")
    return 0
