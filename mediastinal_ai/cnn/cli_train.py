"""``mediastinal-ai train-cnn``: train the 2D CNN WHO-risk model on a manifest."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)
BACKBONE_NAMES = ("densenet121", "resnet101", "inception_v3", "vgg11", "mobilenet_v2", "shufflenet_v2_x1_0")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="cohort manifest CSV (cases with who_risk low/high and a mask)")
    p.add_argument("--out", required=True, help="output folder (weights, card, log, curves, checkpoint)")
    p.add_argument("--backbone", default="mobilenet_v2", choices=BACKBONE_NAMES)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=0.01, help="SGD learning rate (published: 0.01)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--input-size", type=int, default=None,
                   help="ROI size in pixels (default: 224; 299 for inception_v3; smaller trains faster on CPU)")
    p.add_argument("--margin-mm", type=float, default=0.0,
                   help="ROI margin around the tumor in mm (default 0: the tumor's extent, as published)")
    p.add_argument("--window", type=float, nargs=2, default=[400.0, 40.0], metavar=("WIDTH", "LEVEL"),
                   help="CT window applied before the z-score (default 400 40, as published)")
    p.add_argument("--no-window", action="store_true", help="z-score raw HU (older recipe; labelled in the card)")
    p.add_argument("--box", choices=["rect", "square"], default="rect",
                   help="ROI shape: the tumor's rectangular extent (default, published) or a square in mm")
    p.add_argument("--adjacent-mm", type=float, default=1.0,
                   help="distance of the extra training slice in mm (default 1, published; interpolated)")
    p.add_argument("--adjacent-index", action="store_true",
                   help="take the next slice index instead (older recipe; labelled in the card)")
    p.add_argument("--pretrained", default=None,
                   help="local torchvision ImageNet state dict (.pth, loaded weights_only) — never downloaded")
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="risk-cnn", help="model name (file stem and card name)")
    p.add_argument("--demo", action="store_true", help="mark the model as a demo (not for clinical use)")
    p.add_argument("--resume", action="store_true", help="continue from checkpoint.pt in --out")


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from .model import dataset_from_manifest, roi_recipe, train_cnn

    if args.epochs < 1 or args.batch_size < 2 or args.lr <= 0:
        raise InputError("--epochs ≥ 1, --batch-size ≥ 2 and --lr > 0 are required")
    if args.input_size is not None and args.input_size < 32:
        raise InputError(f"--input-size {args.input_size} is too small (≥ 32; ≥ 75 for inception_v3)")

    from ..progress import cli_progress

    prog = cli_progress("train-cnn", keep=lambda m: m.startswith("epoch") and "loss" in m)

    if args.margin_mm < 0 or args.adjacent_mm < 0 or args.window[0] <= 0:
        raise InputError("--margin-mm and --adjacent-mm must be ≥ 0 and the window width > 0")
    recipe = roi_recipe(args.backbone, args.margin_mm, args.input_size,
                        window=None if args.no_window else tuple(args.window), box=args.box,
                        adjacent_mm=None if args.adjacent_index else args.adjacent_mm)
    for d in recipe["deviations"]:
        print(f"note: departs from the published recipe: {d}")
    data = dataset_from_manifest(args.manifest, recipe, progress=prog, seed=args.seed)
    from ..cohort import read_manifest

    cases = read_manifest(args.manifest)
    training_data = {"manifest": str(args.manifest), "n_rois": int(len(data.labels)),
                     "synthetic": bool(cases) and all(bool(c.synthetic) for c in cases)}
    if not args.pretrained:
        print("no --pretrained given: training from scratch (no ImageNet weights)")
    summary = train_cnn(data, args.out, args.backbone, recipe, epochs=args.epochs, lr=args.lr,
                        batch_size=args.batch_size, pretrained=args.pretrained, device=args.device,
                        resume=args.resume, seed=args.seed, name=args.name, demo=args.demo,
                        training_data=training_data, progress=prog)
    prog.close()
    print(f"best validation AUC {summary['best_val_auc']:.3f}; wrote {summary['weights']}")
    from ..evaluation.quality import poor_metric_warning
    from .model import POOR_VAL_AUC

    warn = poor_metric_warning("auc", summary["best_val_auc"], floor=POOR_VAL_AUC)
    if warn:
        print(f"WARNING: {warn}")
    h = summary.get("held_out") or {}
    if "test_auc" in h:
        lo, hi = h["test_auc_ci95_delong"]
        print(f"held-out test: AUC {h['test_auc']:.3f} (95% CI {lo:.3f}-{hi:.3f}, DeLong) on {h['test_cases']} cases; "
              f"threshold {h['threshold']:.3g} ({h['threshold_from']})")
    elif h.get("test_note"):
        print(f"note: {h['test_note']}")
    for k, v in (h.get("prediction_tables") or {}).items():
        print(f"{k} predictions: {v}")
    return 0
