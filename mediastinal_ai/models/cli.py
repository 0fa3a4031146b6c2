"""``mediastinal-ai models``: list, verify and install models."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    sp = p.add_subparsers(dest="action", required=True)
    ls = sp.add_parser("list", help="list installed and built-in models")
    ls.add_argument("--task", default=None)
    v = sp.add_parser("verify", help="check a model's sha256 and card")
    v.add_argument("model", help="model name, card file or folder")
    i = sp.add_parser("install", help="copy a model (card + weights) into the user models folder")
    i.add_argument("source", help="card file, folder with a card, or file:// URL")
    i.add_argument("--sha256", default=None, help="expected sha256 of the weights file")


def run(args: argparse.Namespace) -> int:
    from . import install, list_models, resolve, user_models_dir

    if args.action == "list":
        rows = list_models(args.task)
        print(f"user models folder: {user_models_dir()}")
        for card, path in rows:
            tag = "  [demo — not for clinical use]" if card.demo else ""
            print(f"{card.name:<28} {card.task:<16} v{card.version:<8} {card.sha256[:12]}  {path}{tag}")
        if not rows:
            print("no models found")
        return 0
    if args.action == "verify":
        m = resolve(args.model)
        print(f"OK {m.label}  {m.weights_path}")
        return 0
    m = install(args.source, sha256=args.sha256)
    print(f"installed {m.label} -> {m.card_path.parent}")
    twin = (m.card.extra.get("ct_only_model") or {}).get("name") if m.card.task == "fusion" else None
    if twin:
        card = user_models_dir() / twin / f"{twin}.model.json"
        if card.is_file():
            print(f"installed its CT-only twin {resolve(card).label} -> {card.parent}")
        else:
            print(f"warning: its CT-only twin {twin!r} was not found beside the fusion card and is not installed; "
                  "predict-fusion will show no CT-only comparison")
    return 0
