"""``mediastinal-ai predictions``: join predictions with the manifest's labels into the table
``evaluate`` takes (see :mod:`.join`)."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="cohort manifest CSV with the labels (who_risk, malignant, ...)")
    p.add_argument("--from", dest="source", required=True, metavar="SRC",
                   help="a batch --out folder (or its results.csv), or a folder of case folders written by "
                        "predict-radiomics/predict-cnn/predict-fusion --out DIR")
    p.add_argument("--out", required=True, help="CSV to write (columns: case_id, split, synthetic, who_risk, "
                                                "high_risk, lesion_class, malignant, p_* scores)")


def run(args: argparse.Namespace) -> int:
    from .join import evaluate_hint, join_predictions, write_predictions

    rows, note = join_predictions(args.manifest, args.source)
    path = write_predictions(rows, args.out)
    print(f"{note['n_joined']} case(s) with predictions and manifest labels; score columns: "
          f"{', '.join(note['score_columns'])}")
    if note["no_manifest_row"]:
        print(f"  {len(note['no_manifest_row'])} predicted case(s) not in the manifest, left out: "
              f"{', '.join(note['no_manifest_row'][:5])}")
    if note["unpredicted"]:
        print(f"  {len(note['unpredicted'])} manifest case(s) without predictions (failed or not run): "
              f"{', '.join(note['unpredicted'][:5])}")
    print(f"wrote {path}\nnext: {evaluate_hint(note, path)}")
    return 0
