"""Reproduce the shipped demo fusion models (demo — not for clinical use).

    python tools/make_demo_fusion.py --out /tmp/fusiondemo [--cases 600] [--epochs 30] [--install]

Two steps that can run on different machines (a GPU box needs only torch + numpy + scipy):

1. ``--prepare CACHE.npz``: synthetic cases (all lesion classes of the taxonomy drawn with the
   fusion study's Table 2 frequencies, CTC levels from Table 2's means/SDs; seeds
   300000…, generated in memory), seed % 5 == 0 → test, == 1 → val, else train; the fusion
   study's ROI recipe (largest-area slice and its neighbour, window 350/50, ``--image-size`` px)
   → a ``FusionData`` cache;
2. ``--roi-cache CACHE.npz``: :func:`~mediastinal_ai.fusion.train.train_fusion` trains the DMFN
   fusion model (CT + CTC + age/sex/site) and its CT-only baseline with identical splits, batch
   order and schedule (neutral cross-entropy), repeated ``--repeats`` times (3, as published; the first
   seed's models are kept, mean ± SD in the cards); the held-out test metrics (AUC with DeLong CI, paired DeLong fusion vs
   CT-only, multi-class macro AUC) are written into each card. ``--install`` copies both models to
   ``mediastinal_ai/models/builtin/``.

Without ``--roi-cache`` step 1 runs in memory first. The figures describe synthetic data only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
SEED0 = 300_000
NAME, CT_ONLY = "demo-fusion-dmfn", "demo-fusion-ct-only"
# what still differs from the fusion study after issue 14 (docs/methods.md, docs/fusion.md)
DEVIATIONS = [
    "trained and tested on a SYNTHETIC cohort (Table 2 class frequencies and CTC means/SDs), not on patients",
    "no fourth-order PDE denoising and no cubic-voxel reconstruction (options --denoise / --isotropic of "
    "train-fusion; off here: the synthetic CT has no scanner noise texture to remove and cubic voxels already)",
    "image branch: torchvision RegNetY design point (TINY_REGNET, random init), not the self-regulated RegNet "
    "the study cites; demo-size ROI (96 px)",
]


def _split(seed: int) -> str:
    return "test" if seed % 5 == 0 else "val" if seed % 5 == 1 else "train"


def _records(n: int):
    from mediastinal_ai.synthetic import generate_case

    for i in range(n):
        c = generate_case(SEED0 + i, class_frequencies="table2")
        if not c.mask.array.any():
            continue
        yield {"case_id": c.case_id, "ct": c.ct, "mask": c.mask, "lesion_class": c.lesion_class,
               "malignant": c.malignant, "ctc": c.ctc, "age": c.age, "sex": c.sex, "lesion_site": c.lesion_site,
               "split": _split(SEED0 + i)}


def prepare(n: int, image_size: int):
    from mediastinal_ai.fusion.data import from_records
    from mediastinal_ai.progress import log_progress

    return from_records(_records(n), image_size, total=n, progress=log_progress, meta={
        "manifest": f"synthetic (SYNTHETIC) cohort, {n} cases, seeds {SEED0}..{SEED0 + n - 1}", "synthetic": True})


def _stamp(out: Path, repro: str) -> None:
    """Write the reproducing command and the synthetic-data note into both cards (the cards'
    sha256 covers the weights, so this leaves verification intact)."""
    from mediastinal_ai.models import ModelCard

    for name in (NAME, CT_ONLY):
        p = out / name / f"{name}.model.json"
        card = ModelCard.load(p)
        card.extra = {k: v for k, v in card.extra.items() if k != "deviations_note"}
        card.extra.update(reproduce=repro, deviations_from_published=DEVIATIONS)
        card.training_data = {**card.training_data, "synthetic": True,
                              "note": "SYNTHETIC cohort; the figures say nothing about patients"}
        card.intended_use = "demo — not for clinical use. Trained and tested on synthetic CT only."
        card.save(p)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/fusiondemo")
    ap.add_argument("--cases", type=int, default=600)
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=3, help="training runs with seeds 0, 1, … (default 3)")
    ap.add_argument("--prepare", help="only write the ROI cache (.npz) and stop")
    ap.add_argument("--roi-cache", help="train from this ROI cache")
    ap.add_argument("--trained", action="store_true", help="skip training; install what is in --out")
    ap.add_argument("--install", action="store_true")
    a = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from mediastinal_ai.fusion.data import FusionData
    from mediastinal_ai.fusion.net import TINY_REGNET
    from mediastinal_ai.fusion.train import TrainConfig, train_repeated

    if a.prepare:
        prepare(a.cases, a.image_size).save(a.prepare)
        return 0
    out = Path(a.out)
    if not a.trained:
        data = FusionData.load(a.roi_cache) if a.roi_cache else prepare(a.cases, a.image_size)
        cfg = TrainConfig(epochs=a.epochs, regnet=dict(TINY_REGNET), seed=0, device=a.device, name=NAME,
                          ct_only_name=CT_ONLY, demo=True)
        m = train_repeated(data, out, cfg, a.repeats)
        print(json.dumps({k: m[k] for k in ("delong_fusion_vs_ct_only", "best_epoch")}, default=float))
        for tag in ("fusion", "ct_only"):
            print(tag, json.dumps(m[tag]["binary_auc"], default=float), m[tag]["multiclass"].get("macro_auc"))
    repro = (f"python tools/make_demo_fusion.py --out OUT --cases {a.cases} --image-size {a.image_size} "
             f"--epochs {a.epochs} --repeats {a.repeats} --install")
    _stamp(out, repro)
    if a.install:
        root = Path(__file__).resolve().parents[1] / "mediastinal_ai" / "models" / "builtin"
        for name in (NAME, CT_ONLY):
            dest = root / name
            if dest.exists():
                shutil.rmtree(dest)
            shutil.copytree(out / name, dest)
        print(f"installed {NAME} and {CT_ONLY} into {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
