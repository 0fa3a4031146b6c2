"""Reproduce the shipped demo CNN risk model (``demo-risk-cnn``) — synthetic data, demo only.

    python -m mediastinal_ai.cnn.make_demo --work /tmp/cnn-demo [--cases 160] [--epochs 40] --install

or, to train on a GPU machine without SimpleITK: ``--prepare-only --rois-npz R.npz`` here, then
``--rois-npz R.npz`` there. Steps: a synthetic cohort of thymic epithelial tumors (WHO low
A/AB/B1 vs high B2/B3/thymic carcinoma; the manifest's stratified train/val/test split), the
published ROI recipe at 224 px, ShuffleNetV2 (small: ~5 MB) from scratch (no ImageNet weights
here), best validation AUC kept, then the held-out test split scored: AUC with DeLong 95% CI and threshold metrics
(Wilson CIs) written into the model card, and weights + card copied into
``mediastinal_ai/models/builtin/demo-risk-cnn/``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
NAME = "demo-risk-cnn"


def main(argv: list[str] | None = None) -> int:
    import torch

    from .. import taxonomy
    from ..cohort import read_manifest
    from ..evaluation import roc_auc_ci, threshold_metrics
    from ..models import ModelCard, write_card_for
    from ..models.registry import BUILTIN_DIR
    from ..synthetic import generate_cohort
    from .model import RoiDataset, dataset_from_manifest, predict_proba, roi_recipe, train_cnn

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--cases", type=int, default=160)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--backbone", default="shufflenet_v2_x1_0")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--install", action="store_true", help="copy the result into the package's builtin folder")
    ap.add_argument("--rois-npz", type=Path, default=None,
                    help="ROI arrays from --prepare-only (to train where SimpleITK is missing, e.g. a GPU box)")
    ap.add_argument("--prepare-only", action="store_true", help="write the ROI arrays to --rois-npz and stop")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    recipe = roi_recipe(a.backbone, 10.0, a.size)
    if a.rois_npz is not None and not a.prepare_only:
        with np.load(a.rois_npz, allow_pickle=False) as z:
            data = RoiDataset(z["images"], z["labels"], z["case_ids"].tolist(), z["splits"].tolist())
            n_total = int(z["n_cases"])
    else:
        manifest = a.work / "cohort" / "manifest.csv"
        if not manifest.is_file():
            generate_cohort(a.cases, a.work / "cohort", seed=1000,
                            classes=list(taxonomy.WHO_LOW + taxonomy.WHO_HIGH), inplane_size=128)
        data = dataset_from_manifest(manifest, recipe, seed=0)
        n_total = len(read_manifest(manifest))
        if a.prepare_only:
            a.rois_npz.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(a.rois_npz, images=data.images, labels=data.labels, case_ids=np.asarray(data.case_ids),
                                splits=np.asarray(data.splits), n_cases=n_total)
            log.info("wrote %s (%d ROIs)", a.rois_npz, len(data.labels))
            return 0
    n_cases = {s: len({c for c, sp in zip(data.case_ids, data.splits, strict=True) if sp == s})
               for s in ("train", "val", "test")}
    training_data = {"cohort": "synthetic thymic epithelial tumors (mediastinal_ai.synthetic, seeds 1000+)",
                     "synthetic": True, "n_cases": n_total, "cases_per_split": n_cases,
                     "rois_train": int(sum(s == "train" for s in data.splits)),
                     "command": f"python -m mediastinal_ai.cnn.make_demo --work DIR --cases {a.cases} "
                                f"--epochs {a.epochs} --backbone {a.backbone} --size {a.size}"}
    out = a.work / "model"
    summary = train_cnn(data, out, a.backbone, recipe, epochs=a.epochs, lr=0.01, batch_size=16, device="auto",
                        seed=0, name=NAME, demo=True, training_data=training_data)
    weights = Path(summary["weights"])
    card_path = weights.parent / f"{NAME}.model.json"
    card = ModelCard.load(card_path)
    from ..models.card import verify
    from .model import load_model

    model = load_model(verify(card_path), device=summary["device"])
    test = np.asarray(data.splits) == "test"
    p = predict_proba(model.net, data.images[test], summary["device"])
    y = data.labels[test]
    auc = roc_auc_ci(y, p)
    card.metrics["test"] = {"auc": auc.as_dict(), **threshold_metrics(y, p, 0.5), "n_cases": int(test.sum()),
                            "data": "held-out synthetic test split (not real patients)"}
    card.metrics["threshold"] = 0.5
    card.extra["demo_note"] = (f"ROI {a.size} px; trained from scratch (no ImageNet weights available) on "
                               "synthetic data only; a demo, not a clinical model")
    write_card_for(weights, card)
    log.info("held-out synthetic test: %s", auc)
    if a.install:
        dest = BUILTIN_DIR / NAME
        dest.mkdir(parents=True, exist_ok=True)
        for f in (weights, card_path):
            shutil.copyfile(f, dest / f.name)
        log.info("installed into %s", dest)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
