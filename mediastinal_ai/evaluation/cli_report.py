"""``mediastinal-ai report``: per-case report from a case result folder, or cohort report from an
``evaluate`` output folder, as self-contained HTML and PDF."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--case", metavar="DIR", help="case result folder (segmentation_result.json, lesions.csv, mask.nrrd, "
                                                 "*_result.json; see docs/evaluation.md)")
    g.add_argument("--cohort", metavar="DIR", help="folder written by 'mediastinal-ai evaluate'")
    p.add_argument("--out", required=True, help="output folder for report.html/.pdf (cohort_report.* for --cohort)")
    p.add_argument("--ct", help="CT image when the case folder holds none (for the key image)")
    p.add_argument("--case-id", help="case name shown in the report (default: folder name)")
    p.add_argument("--synthetic", action="store_true", help="label the report SYNTHETIC")


def run(args: argparse.Namespace) -> int:
    from .report import write_case_report, write_cohort_report

    if args.cohort:
        paths = write_cohort_report(args.cohort, args.out)
    else:
        ct = None
        if args.ct:
            from ..io import read_ct

            ct = read_ct(args.ct)
        paths = write_case_report(args.case, args.out, ct=ct, case_id=args.case_id,
                                  synthetic=True if args.synthetic else None)
    for p in paths:
        print(p)
    return 0
