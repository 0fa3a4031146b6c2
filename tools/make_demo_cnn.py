"""Reproduce the shipped demo CNN WHO-risk model (demo — not for clinical use).

    python tools/make_demo_cnn.py --out /tmp/cnndemo [--cases 800] [--epochs 40] [--device auto] [--install]

1. synthetic thymic epithelial tumors, seeds 200000…, generated in memory in parallel
   (``generate_case(seed, classes=WHO_LOW + WHO_HIGH)``); seed % 5 == 0 → test, == 1 → val, else train;
2. ROI recipe of the study (largest-area slice, rectangular tumor extent, W400/L40 then z-score,
   slice +1 mm away for training, 224 px); the shipped model was made with ``--legacy-recipe
   --margin 2`` (square box, no window, next slice index), which its card lists as deviations;
3. ``train_cnn`` (ShuffleNetV2 from scratch, SGD lr 0.01, batch 16, best validation AUC);
4. held-out test AUC with a DeLong 95 % CI and threshold metrics go into the model card;
5. ``--install`` copies weights + card to mediastinal_ai/models/builtin/demo-risk-cnn/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
BACKBONE = "shufflenet_v2_x1_0"
SEED0 = 200_000
VERSION = "0.2.0"
CHANGELOG = {
    "0.1.0": "ROI 224 px with a 2 mm margin, trained from scratch on synthetic cases; held-out synthetic test AUC 0.671 "
             "on 300 cases (older recipe: square box, no window, next slice index)",
    "0.2.0": "the study's ROI recipe (W400/L40 then z-score, the tumour's rectangular extent, no margin, adjacent "
             "slice +1 mm interpolated), 224 px, 1500 synthetic cases, 40 epochs from scratch",
}
# what the demo model still does differently from the study, beside what its ROI recipe lists
TRAINING_DEVIATIONS = [
    "trained from scratch on synthetic data (published: ImageNet-pretrained networks trained on patients)",
    "one backbone, ShuffleNetV2 1.0 (published: six backbones compared, ResNet101 etc.)",
]


def _split(seed: int) -> str:
    return "test" if seed % 5 == 0 else "val" if seed % 5 == 1 else "train"


def _make(args: tuple[int, dict]):
    seed, recipe = args
    from mediastinal_ai.cnn.model import training_rois
    from mediastinal_ai.synthetic.generator import generate_case
    from mediastinal_ai.taxonomy import WHO_HIGH, WHO_LOW

    c = generate_case(seed, classes=list(WHO_LOW + WHO_HIGH))
    if not c.mask.array.any():  # a lesion smaller than half a voxel leaves no mask: no ROI to learn from
        return []
    split = _split(seed)
    ss = training_rois(c.ct, c.mask, recipe, split == "train")  # exactly the recipe written into the card
    return [(s.image.astype(np.float16), int(c.who_risk == "high"), c.case_id, split) for s in ss]


def finish_card(card, recipe: dict, seconds: float, legacy: bool) -> None:
    """Version, changelog and the full list of deviations from the study go into the run's card
    (before it is written), so that a rerun of this tool reproduces the shipped card, not only its
    weights. Licences follow from ``demo`` + ``training_data.synthetic`` (``complete_card``)."""
    card.version = "0.1.0" if legacy else VERSION
    card.changelog = {k: v for k, v in CHANGELOG.items() if k <= card.version}
    card.extra["deviations_from_published"] = list(recipe.get("deviations") or []) + TRAINING_DEVIATIONS
    card.extra["training_note"] = (f"trained in {seconds:.0f} s on {os.cpu_count()} CPU core(s); seeds fixed, "
                                   "so the command reproduces the recipe")
    card.extra.pop("deviations_note", None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--cases", type=int, default=800)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--size", type=int, default=None, help="ROI size in px (default: the backbone's, 224)")
    ap.add_argument("--margin", type=float, default=0.0, help="ROI margin around the tumor in mm (default 0)")
    ap.add_argument("--legacy-recipe", action="store_true",
                    help="the recipe of the shipped demo model: square box, no window, next slice index "
                         "(deviates from the study; labelled in the card)")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--install", action="store_true")
    a = ap.parse_args()
    from mediastinal_ai.cnn.model import RoiDataset, predict_proba, roi_recipe, train_cnn
    from mediastinal_ai.evaluation import roc_auc_ci, threshold_metrics, youden_threshold

    if a.legacy_recipe:
        recipe = roi_recipe(BACKBONE, margin_mm=a.margin, size=a.size, window=None, box="square", adjacent_mm=None)
    else:
        recipe = roi_recipe(BACKBONE, margin_mm=a.margin, size=a.size)
    t0 = time.perf_counter()
    with Pool(a.workers) as pool:
        parts = pool.map(_make, [(SEED0 + i, recipe) for i in range(a.cases)])
    rows = [r for p in parts for r in p]
    data = RoiDataset(np.stack([r[0] for r in rows]).astype(np.float32), np.array([r[1] for r in rows]),
                      [r[2] for r in rows], [r[3] for r in rows])
    out = Path(a.out)
    cohort = f"synthetic (SYNTHETIC) thymic epithelial tumors, {a.cases} cases, seeds {SEED0}..{SEED0 + a.cases - 1}"
    repro = (f"python tools/make_demo_cnn.py --out OUT --cases {a.cases} --epochs {a.epochs}"
             + (f" --size {a.size}" if a.size else "") + f" --margin {a.margin:g}"
             + (" --legacy-recipe" if a.legacy_recipe else "") + " --install")
    s = train_cnn(data, out, BACKBONE, recipe, epochs=a.epochs, lr=0.01, batch_size=16, device=a.device, seed=0,
                  name="demo-risk-cnn", demo=True,
                  training_data={"cohort": cohort, "synthetic": True, "n_samples": len(rows), "split": "seed % 5: 0 test, 1 val, else train",
                                 "reproduce": repro})
    from mediastinal_ai.cnn import load_model
    from mediastinal_ai.models import resolve, write_card_for

    m = load_model(resolve(out / "demo-risk-cnn.model.json"), device="cuda" if "cuda" in s["device"] else "cpu")
    sp = np.asarray(data.splits)
    va, te = sp == "val", sp == "test"
    thr = youden_threshold(data.labels[va], predict_proba(m.net, data.images[va], m.device))
    p_te = predict_proba(m.net, data.images[te], m.device)
    auc = roc_auc_ci(data.labels[te], p_te)
    tm = threshold_metrics(data.labels[te], p_te, thr)
    card = m.card
    card.metrics.update({"threshold": float(thr), "threshold_from": "Youden index on the validation split",
                         "test_auc": round(auc.auc, 4), "test_auc_ci95_delong": [round(auc.ci_low, 4), round(auc.ci_high, 4)],
                         "test_cases": int(te.sum()), "test_threshold_metrics": json.loads(json.dumps(tm, default=float)),
                         "note": "held-out synthetic cases; says nothing about patients"})
    card.extra["reproduce"] = repro
    finish_card(card, recipe, time.perf_counter() - t0, a.legacy_recipe)
    write_card_for(out / "demo-risk-cnn.safetensors", card)
    print(json.dumps({"best_val_auc": s["best_val_auc"], "test_auc": auc.auc, "ci": [auc.ci_low, auc.ci_high],
                      "threshold": thr}, default=float))
    if a.install:
        dest = Path(__file__).resolve().parents[1] / "mediastinal_ai" / "models" / "builtin" / "demo-risk-cnn"
        dest.mkdir(parents=True, exist_ok=True)
        for f in ("demo-risk-cnn.safetensors", "demo-risk-cnn.model.json", "training_curves.png", "training_log.csv"):
            shutil.copyfile(out / f, dest / f)


if __name__ == "__main__":
    main()
