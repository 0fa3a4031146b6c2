"""``mediastinal-ai train-seg``: train the 3D U-Net on a cohort manifest."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="cohort manifest CSV with ct and mask columns")
    p.add_argument("--out", required=True, help="output folder (weights, card, checkpoint, log, curves)")
    p.add_argument("--config", default="segmentation_paper",
                   help="YAML config: shipped 'segmentation_paper' (default) or 'segmentation_demo', or a path")
    p.add_argument("--epochs", type=int, default=None,
                   help="default: the config's (segmentation_paper 300, segmentation_demo 80)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="default: the config's (segmentation_paper 3, segmentation_demo 4)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--name", default="seg-unet3d", help="model name in the card")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--demo", action="store_true", help="mark the model as a demo model (not for clinical use)")


def run(args: argparse.Namespace) -> int:
    import sys

    from ..progress import cli_progress
    from .compute import training_note
    from .model_io import pick_device
    from .plan import load_config
    from .train import train

    cfg = load_config(args.config)
    note = training_note(cfg, pick_device(args.device), name=f"config {args.config!r}", epochs=args.epochs,
                         batch_size=args.batch_size)
    if note:
        print(note, file=sys.stderr, flush=True)
    # a bar per batch on a terminal; every epoch's loss/Dice as a line of its own
    with cli_progress("train-seg", keep=lambda m: m.startswith("epoch") and "loss" in m) as bar:
        s = train(args.manifest, args.out, cfg, epochs=args.epochs, batch_size=args.batch_size, device=args.device,
                  resume=args.resume, seed=args.seed, name=args.name, demo=args.demo, progress=bar)
    print(f"best validation Dice {s['best_val_dice']:.3f}; weights {s['weights']}")
    if s.get("quality_warning"):
        print(f"WARNING: {s['quality_warning']}", file=sys.stderr)
    return 0
