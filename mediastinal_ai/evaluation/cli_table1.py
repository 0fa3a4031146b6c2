"""``mediastinal-ai table1``: baseline characteristics of a cohort manifest by a group column
(mean ± SD or median (IQR) chosen by Shapiro–Wilk; t-test / Mann–Whitney U; chi-square /
Fisher), written as CSV."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="cohort manifest CSV (or any per-case CSV)")
    p.add_argument("--by", required=True, help="group column, e.g. who_risk, malignant or split")
    p.add_argument("--variables", nargs="*", default=None,
                   help="columns to describe (default: every column except ids and paths)")
    p.add_argument("--out", required=True, help="output CSV (e.g. table1.csv)")


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from .table1 import write_baseline_table

    path = write_baseline_table(args.manifest, args.by, args.out, args.variables)
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(pd.read_csv(path).drop(columns=["shapiro_p"]).to_string(index=False))
    print(f"written to {path}")
    return 0
