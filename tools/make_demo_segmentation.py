"""Reproduce the shipped demo segmentation model (demo — not for clinical use).

    .venv/bin/python tools/make_demo_segmentation.py --work /tmp/segdemo [--device auto]

1. a synthetic cohort (``generate_cohort(48, seed=1000)``; stratified train/val/test split),
2. ``train`` with ``mediastinal_ai/configs/segmentation_demo.yaml`` on the train split
   (best validation-Dice checkpoint on the val split),
3. inference with the saved model on the held-out test split: voxel Dice/IoU and lesion-wise
   sensitivity / false positives per scan (one-to-one IoU matching),
4. those figures go into the card, and weights + card into
   ``mediastinal_ai/models/builtin/demo-seg-unet3d/`` (``--install``).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np

NAME = "demo-seg-unet3d"
COHORT = {"n_cases": 48, "seed": 1000}
REPRO = "python tools/make_demo_segmentation.py --work /tmp/segdemo --install"


def evaluate(manifest: Path, weights_dir: Path, split: str = "test", device: str = "auto") -> dict:
    from mediastinal_ai.cohort import read_manifest
    from mediastinal_ai.io import read_ct, read_mask
    from mediastinal_ai.models import resolve
    from mediastinal_ai.segmentation import load_model, segment_volume
    from mediastinal_ai.segmentation.metrics import froc, lesion_counts, voxel_metrics

    model = load_model(resolve(weights_dir, task="segmentation"), device=device)
    rows, counts = [], []
    for c in read_manifest(manifest):
        if c.split != split or c.mask is None:
            continue
        ct = read_ct(c.ct)
        truth = read_mask(c.mask, ct, allow_empty=True).array
        res = segment_volume(ct, model)
        rows.append({"case_id": c.case_id, **voxel_metrics(res.mask.array, truth)})
        counts.append(lesion_counts(res.mask.array, truth))
    d = np.array([r["dice"] for r in rows])
    fr = {f"{r['iou_threshold']:.2f}": r for r in froc(counts)}
    return {
        "evaluated_on": f"{len(rows)} held-out synthetic test cases (split '{split}'), never seen in training",
        "dice_mean": round(float(d.mean()), 4), "dice_sd": round(float(d.std()), 4),
        "dice_min": round(float(d.min()), 4),
        "iou_mean": round(float(np.mean([r["iou"] for r in rows])), 4),
        "lesion_sensitivity_iou0.10": round(fr["0.10"]["sensitivity"], 4),
        "fp_per_scan_iou0.10": round(fr["0.10"]["fp_per_scan"], 4),
        "lesion_sensitivity_iou0.50": round(fr["0.50"]["sensitivity"], 4),
        "fp_per_scan_iou0.50": round(fr["0.50"]["fp_per_scan"], 4),
        "per_case_dice": {r["case_id"]: round(r["dice"], 4) for r in rows},
    }


def export_prepared(manifest: Path, cfg: dict, path: Path) -> None:
    from mediastinal_ai.cohort import read_manifest
    from mediastinal_ai.io import read_ct, read_mask
    from mediastinal_ai.segmentation.plan import Plan, resample

    plan = Plan(**cfg["plan"])
    arrays = {}
    for c in read_manifest(manifest):
        if c.split not in ("train", "val"):
            continue  # the test split never leaves this machine's evaluation
        ct = read_ct(c.ct)
        ct_r = resample(ct, plan.target_spacing_xyz)
        m_r = resample(read_mask(c.mask, ct, allow_empty=True), plan.target_spacing_xyz, label=True, reference=ct_r)
        arrays[f"{c.split}__{c.case_id}__ct"] = np.round(ct_r.array).astype(np.int16)
        arrays[f"{c.split}__{c.case_id}__mask"] = m_r.array.astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def load_prepared(path: Path, cfg: dict) -> dict:
    from mediastinal_ai.segmentation.plan import Plan, normalise
    from mediastinal_ai.segmentation.train import PreparedCase

    plan = Plan(**cfg["plan"])
    z = np.load(path)
    data: dict = {"train": [], "val": [], "test": []}
    for key in sorted(z.files):
        split, case_id, kind = key.split("__")
        if kind == "ct":
            data[split].append(PreparedCase(case_id, normalise(z[key], plan.hu_window),
                                            z[f"{split}__{case_id}__mask"]))
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/segdemo")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--resume", action="store_true", help="continue from the checkpoint in --work (e.g. with more --epochs)")
    ap.add_argument("--install", action="store_true", help="copy weights + card into the package's builtin folder")
    ap.add_argument("--export-prepared", default=None, help="only write the prepared train/val arrays (.npz)")
    ap.add_argument("--prepared", default=None, help="train from a prepared .npz (no SimpleITK needed)")
    ap.add_argument("--trained", default=None, help="skip training: evaluate/install the model in this folder")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    torch.set_num_threads(a.threads)
    from mediastinal_ai.models import ModelCard, write_card_for
    from mediastinal_ai.progress import log_progress
    from mediastinal_ai.segmentation.plan import load_config
    from mediastinal_ai.segmentation.train import train

    work = Path(a.work)
    cfg = load_config("segmentation_demo")
    out = work / "model"
    if a.prepared:
        data = load_prepared(Path(a.prepared), cfg)
        summary = train("synthetic cohort generate_cohort(n_cases=48, seed=1000)", out, cfg, epochs=a.epochs,
                        device=a.device, name=NAME, demo=True, seed=0, progress=log_progress, prepared=data)
        return 0
    manifest = work / "cohort" / "manifest.csv"
    if not manifest.is_file():
        from mediastinal_ai.synthetic import generate_cohort

        manifest = generate_cohort(COHORT["n_cases"], work / "cohort", seed=COHORT["seed"])
    if a.export_prepared:  # for a GPU machine without SimpleITK: resampled HU + masks as .npz
        export_prepared(manifest, cfg, Path(a.export_prepared))
        return 0
    if a.trained:
        out = Path(a.trained)
        summary = json.loads((out / "training_summary.json").read_text(encoding="utf-8"))
    else:
        summary = train(manifest, out, cfg, epochs=a.epochs, device=a.device, name=NAME, demo=True, seed=0,
                        progress=log_progress, resume=a.resume)
    metrics = evaluate(manifest, out, device=a.device)
    card_path = out / f"{NAME}.model.json"
    card = ModelCard.load(card_path)
    card.metrics = {**card.metrics, "held_out_test": metrics, "data": "SYNTHETIC cohort — not patient data"}
    card.training_data = {**card.training_data, "manifest": "synthetic cohort generate_cohort(n_cases=48, seed=1000)",
                          "synthetic": True, "cohort": COHORT}
    repro = REPRO + (f" --epochs {a.epochs}" if a.epochs else "")
    card.extra = {**card.extra, "reproduce": repro, "training_seconds": summary["seconds"],
                  "training_device": summary["device"]}
    card.intended_use = "demo — not for clinical use. Trained and tested on synthetic CT only."
    write_card_for(out / f"{NAME}.safetensors", card)
    print(json.dumps(metrics, indent=1))
    if a.install:
        dest = Path(__file__).resolve().parents[1] / "mediastinal_ai" / "models" / "builtin" / NAME
        dest.mkdir(parents=True, exist_ok=True)
        for f in (f"{NAME}.safetensors", f"{NAME}.model.json"):
            shutil.copy2(out / f, dest / f)
        shutil.copy2(out / "training_curves.png", dest / "training_curves.png")
        shutil.copy2(out / "training_log.csv", dest / "training_log.csv")
        print(f"installed into {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
