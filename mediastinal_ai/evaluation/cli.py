"""``mediastinal-ai evaluate``: AUC with DeLong CIs, paired DeLong tests, threshold metrics with
Wilson CIs, calibration, decision curve, plots and the cohort report from a predictions table."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--predictions", required=True, help="CSV (or .parquet) with one row per case")
    p.add_argument("--label-col", required=True, help="truth column, 0/1 (1 = positive: high risk / malignant)")
    p.add_argument("--score-col", required=True, help="model score column (higher = more positive)")
    p.add_argument("--compare-col", nargs="*", default=[],
                   help="other score columns (models or readers) compared with paired DeLong tests")
    p.add_argument("--out", required=True, help="output folder: summary.json, metrics.csv, plots, cohort_report.html/.pdf")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--threshold", type=float, help="fixed threshold (score ≥ threshold → positive)")
    g.add_argument("--threshold-from", metavar="CSV",
                   help="training/validation predictions (same columns): Youden threshold chosen there, applied here")
    p.add_argument("--ci", choices=["delong", "bootstrap"], default="delong", help="AUC CI method (default delong)")
    p.add_argument("--readers", nargs="*", default=[], help="reader score or 0/1 call columns (unaided) for a reader "
                   "study against --score-col")
    p.add_argument("--aided", nargs="*", default=[], metavar="READER=COLUMN",
                   help="the same readers' aided (with AI) columns, e.g. R1=R1_aided")
    p.add_argument("--reader-group", nargs="*", default=[], metavar="GROUP=R1,R2,...",
                   help="reader groups for the Table-3 layout, e.g. junior=R1,R2,R3 senior=R4,R5,R6")
    p.add_argument("--table1-by", metavar="COLUMN", help="also write table1.csv (baseline characteristics) of the "
                   "table's other columns by this group column")
    p.add_argument("--reader-threshold", type=float, help="cut-off for reader scales (score ≥ cut-off = positive)")
    p.add_argument("--froc", metavar="CSV", help="froc.csv from 'evaluate-seg' to plot in the report")
    p.add_argument("--training-log", nargs="*", default=[], metavar="CSV", help="training_log.csv files to plot")
    p.add_argument("--title", default=None, help="report title (default: the predictions file name)")
    p.add_argument("--synthetic", action="store_true", help="label the report SYNTHETIC (also set by a 'synthetic' column)")
    p.add_argument("--demo", action="store_true", help="label the report 'demo — not for clinical use'")
    p.add_argument("--no-report", action="store_true", help="skip the HTML/PDF cohort report")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .evaluate import auc_table, evaluate_predictions, read_predictions

    cols = [args.score_col, *[c for c in args.compare_col if c != args.score_col]]
    df = read_predictions(args.predictions, args.label_col, cols)
    thr_df = read_predictions(args.threshold_from, args.label_col, cols) if args.threshold_from else None
    synthetic = bool(args.synthetic or ("synthetic" in df.columns and df["synthetic"].astype(str).str.lower()
                                        .isin(["1", "true", "yes"]).any()))
    from ..errors import InputError

    aided = {}
    for item in args.aided:
        if "=" not in item:
            raise InputError(f"--aided expects READER=COLUMN, got {item!r}")
        r, c = item.split("=", 1)
        aided[r] = c
    groups = {}
    for item in args.reader_group:
        if "=" not in item:
            raise InputError(f"--reader-group expects GROUP=R1,R2,..., got {item!r}")
        g, members = item.split("=", 1)
        groups[g] = [m for m in members.split(",") if m]
    summary = evaluate_predictions(df, args.label_col, cols, args.out, threshold=args.threshold, threshold_df=thr_df,
                                   ci_method=args.ci, title=args.title or Path(args.predictions).name,
                                   synthetic=synthetic, demo=args.demo, predictions_name=str(args.predictions),
                                   report=not args.no_report, readers=args.readers, aided=aided,
                                   reader_threshold=args.reader_threshold, froc_table=args.froc,
                                   training_logs=args.training_log, reader_groups=groups,
                                   table1_group=args.table1_by)
    print(auc_table(summary))
    print(summary["threshold_note"])
    print(f"written to {args.out}")
    return 0
