"""``mediastinal-ai train-radiomics``: extract, select, train SVM + comparators, evaluate, save."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="cohort manifest CSV with who_risk (low/high) and masks")
    p.add_argument("--out", required=True, help="folder for <name>.skops, <name>.model.json, <name>.metrics.md")
    p.add_argument("--name", default="risk-radiomics-svm", help="model name (default risk-radiomics-svm)")
    p.add_argument("--params", default=None,
                   help="parameter YAML, 'paper' or 'demo' (default: paper; with --features: the table's own, "
                        "recorded in its .json sidecar — a different --params is refused)")
    p.add_argument("--features", default=None,
                   help="feature table from extract-radiomics (CSV/Parquet); default: extract now")
    p.add_argument("--work", default=None, help="extraction folder (cache, resumable; default <out>/features)")
    p.add_argument("--workers", type=int, default=None, help="parallel extraction processes (default: all cores)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-features", type=int, default=None, help="cap on LASSO-selected features")
    p.add_argument("--demo", action="store_true", help="mark the model as a demo (not for clinical use)")
    p.add_argument("--description", default="", help="training cohort description for the model card")
    p.add_argument("--icc", choices=["2,1", "3,1", "1,1"], default="2,1",
                   help="ICC form of the stability filter (default 2,1: two-way random, absolute agreement; "
                        "the study does not state its form)")
    p.add_argument("--classifiers", default=",".join(("svm", "logistic", "knn", "extratrees", "mlp")),
                   help="comma-separated: svm (saved; must be first) and comparators logistic, knn, extratrees, mlp "
                        "(default: all)")


def run(args: argparse.Namespace) -> int:
    import json

    from ..errors import InputError
    from ..progress import cli_progress
    from .pipeline import CLASSIFIERS
    from .train import metrics_table, train_radiomics

    classifiers = tuple(c.strip() for c in args.classifiers.split(",") if c.strip())
    unknown = [c for c in classifiers if c not in CLASSIFIERS]
    if unknown or not classifiers or classifiers[0] != "svm":
        raise InputError(f"--classifiers: 'svm' first, then any of {', '.join(CLASSIFIERS[1:])}; got {args.classifiers!r}")
    card = train_radiomics(args.manifest, args.out, name=args.name, params=args.params, features=args.features,
                           work_dir=args.work, workers=args.workers, seed=args.seed, max_features=args.max_features,
                           demo=args.demo, description=args.description, progress=cli_progress("train-radiomics"),
                           classifiers=classifiers, icc_kind=args.icc)
    d = json.loads(card.read_text(encoding="utf-8"))
    m = d["metrics"]
    print(f"train {m['n_train']} cases ({m['n_train_high']} high risk), held-out test {m['n_test']} "
          f"({m['n_test_high']} high risk); {len(d['input_schema']['selected_features'])} features selected")
    print(metrics_table(m))
    ic = m.get("icc_cases", {})
    print(f"ICC({ic.get('form', args.icc)}) > 0.85 on the training cases: inter-observer "
          f"{ic.get('inter_observer_cases', 0)} cases, intra-observer {ic.get('intra_observer_cases', 0)} cases"
          + ("" if ic.get("intra_observer_cases") else " (no mask_reader1_repeat column: intra-observer not checked)"))
    w = d.get("extra", {}).get("quality_warning")
    if w:
        print(f"WARNING: {w}")
    print(f"wrote {card}; prediction tables {card.parent / 'val_predictions.csv'} (5-fold out-of-fold, for "
          f"--threshold-from) and {card.parent / 'test_predictions.csv'} (held-out test)")
    return 0
