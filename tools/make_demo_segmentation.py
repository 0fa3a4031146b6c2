"""Reproduce the shipped demo segmentation model (demo — not for clinical use).

    .venv/bin/python tools/make_demo_segmentation.py --work /tmp/segdemo --real-ct ../shared/data/real-ct \
        --init WEIGHTS --epochs 80 --install

(the shipped 0.2.0 weights came from three such steps; the exact chain is in their card's
``extra.reproduce``.)

1. a synthetic cohort (``generate_cohort(48, seed=1000)``; stratified train/val/test split),
2. with ``--real-ct``: SYNTHETIC-ON-REAL cases — synthetic lesions inserted into the prevascular
   space of real chest CTs (:mod:`mediastinal_ai.synthetic.insertion`) — and the same real CTs
   unchanged as hard negatives. One of the two full-chest Lung-PET-CT-Dx patients (``--held-out``, A0001
   by default; A0002 up to 2026-12-03) is kept out of training and validation entirely: its two
   series are the held-out real-background test,
3. ``train`` with ``mediastinal_ai/configs/segmentation_demo.yaml`` (canonical orientation,
   mediastinal crop, left-right mirroring; ``--init`` fine-tunes an earlier model of the same plan),
   best validation-Dice checkpoint,
4. held-out figures: synthetic test split (voxel Dice/IoU, lesion sensitivity / FP per scan) and
   the held-out real backgrounds (false-positive regions and ml on the unchanged CTs; Dice and
   extra regions on the inserted lesions) go into the card; weights + card into
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
# real chest CT is mostly non-contrast (every Lung-PET-CT-Dx series): a second synthetic cohort in that phase
COHORT_NON_CONTRAST = {"n_cases": 32, "seed": 3000, "contrast_phase": "non_contrast"}
REPRO = "python tools/make_demo_segmentation.py --work /tmp/segdemo --install"
# real backgrounds under --real-ct (read in place; never copied into the project)
PATIENTS = {"A0001": ["lung-pet-ct-dx/Lung_Dx-A0001_s1", "lung-pet-ct-dx/Lung_Dx-A0001_s2"],
            "A0002": ["lung-pet-ct-dx/Lung_Dx-A0002_s3", "lung-pet-ct-dx/Lung_Dx-A0002_s4"]}
# partial-chest backgrounds, always in training
# (LIDC-IDRI-0003 is not one: both lungs over only 27 mm, too little chest to place a lesion — insertion refuses it)
OTHER_BACKGROUNDS = ["lidc-contrast-slabs/LIDC-IDRI-0001", "aorta-cta-crop/ct.nii.gz", "mediastinum_crop_ct.nii.gz"]
# The only two full-chest patients: one trains, the other is the held-out test (``--held-out``). Models up to
# 2026-12-03 held out A0002; once a test set has been looked at for several models, the next candidate is judged
# on the other patient (benchmarks/README.md, issue 12).
DEFAULT_HELD_OUT = "A0001"


def backgrounds(held_out: str) -> tuple[list[str], list[str]]:
    """(training backgrounds, held-out test backgrounds) for the held-out patient."""
    if held_out not in PATIENTS:
        raise SystemExit(f"--held-out must be one of {', '.join(PATIENTS)}")
    train = [b for p, bs in PATIENTS.items() if p != held_out for b in bs] + OTHER_BACKGROUNDS
    return train, PATIENTS[held_out]


INSERTIONS_PER_BACKGROUND = {"train": 12, "test": 4}
CHANGELOG = {
    "0.1.0": "synthetic phantoms only (generate_cohort(48, seed=1000)), whole field of view, Dice per patch",
    "0.2.0": "+ non-contrast phantoms, SYNTHETIC-ON-REAL insertions into real CTs and the same CTs as hard negatives "
             "(one full-chest patient held out), mediastinal crop plan, batch Dice + binary cross-entropy, intensity "
             "augmentation, checkpoint selected on the real validation cases",
}
REAL_DATA_LICENSE = ("synthetic phantoms and synthetic lesions (mediastinal_ai.synthetic, Apache-2.0) inserted into "
                     "public real CT: Lung-PET-CT-Dx (CC BY 4.0), LIDC-IDRI (CC BY 3.0), TotalSegmentator test "
                     "samples (Apache-2.0); no patient's tumour")
DEVIATIONS = [
    "HU window [-200, 300] instead of the dataset min-max rescaling (measured better for this plan)",
    "narrower network (8-64 features) at 2.5 x 2.5 x 5 mm, patch 16 x 64 x 64, so it trains on a CPU",
    "left-right mirroring in training and test-time augmentation; intensity augmentation",
    "batch Dice + binary cross-entropy (published: Dice loss)",
    "inference on the mediastinal crop from the anatomy step (published: whole volume)",
    "trained on synthetic lesions, never on a patient's tumour",
]


def build_real_cohorts(real_root: Path, work: Path, held_out: str = DEFAULT_HELD_OUT) -> tuple[Path, Path]:
    """Training (train/val split) and held-out test manifests of SYNTHETIC-ON-REAL cases."""
    import csv

    from mediastinal_ai.cohort import write_manifest
    from mediastinal_ai.progress import log_progress
    from mediastinal_ai.synthetic.insertion import insert_cohort

    train_bg, _ = backgrounds(held_out)
    train_m = work / f"on_real_train_{held_out}_out" / "manifest.csv"
    if not train_m.is_file():
        insert_cohort([real_root / b for b in train_bg], INSERTIONS_PER_BACKGROUND["train"],
                      train_m.parent, seed=5000, progress=log_progress)
        with open(train_m, encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        for r in rows:  # the first insertion of each background validates; the rest (and negatives) train
            r["split"] = "val" if r["case_id"].endswith("_ins000") or r["case_id"] == "bg01_negative" else "train"
        write_manifest(train_m, rows)
    return train_m, build_real_test(real_root, work, held_out)


def build_real_test(real_root: Path, work: Path, held_out: str = DEFAULT_HELD_OUT) -> Path:
    """The held-out patient's manifest: its unchanged series and SYNTHETIC-ON-REAL insertions into them."""
    from mediastinal_ai.progress import log_progress
    from mediastinal_ai.synthetic.insertion import insert_cohort

    test_m = work / f"on_real_test_{held_out}" / "manifest.csv"
    if not test_m.is_file():
        insert_cohort([real_root / b for b in backgrounds(held_out)[1]], INSERTIONS_PER_BACKGROUND["test"],
                      test_m.parent, seed=9000, split="test", progress=log_progress)
    return test_m


def evaluate_real(manifest: Path, weights_dir: Path, device: str = "auto", held_out: str = DEFAULT_HELD_OUT) -> dict:
    """Held-out real backgrounds: FP regions / ml on unchanged CTs, Dice + extra regions on inserted lesions."""
    from mediastinal_ai.cohort import read_manifest
    from mediastinal_ai.io import read_ct, read_mask
    from mediastinal_ai.models import resolve
    from mediastinal_ai.segmentation import load_model, segment_volume
    from mediastinal_ai.segmentation.metrics import voxel_metrics

    model = load_model(resolve(weights_dir, task="segmentation"), device=device)
    neg, ins = [], []
    for c in read_manifest(manifest):
        ct = read_ct(c.ct)
        truth = read_mask(c.mask, ct, allow_empty=True).array
        res = segment_volume(ct, model)
        if c.extra.get("synthetic_kind") == "real-negative":
            neg.append({"case_id": c.case_id, "fp_regions": len(res.lesions),
                        "fp_ml": round(sum(r["volume_ml"] for r in res.lesions), 2)})
        else:
            from scipy import ndimage

            lab, n = ndimage.label(res.mask.array > 0, structure=np.ones((3, 3, 3)))
            hit = set(np.unique(lab[(truth > 0) & (lab > 0)])) - {0}
            ins.append({"case_id": c.case_id, "dice": round(voxel_metrics(res.mask.array, truth)["dice"], 4),
                        "other_regions": int(n - len(hit)), "lesion_ml": c.extra.get("volume_ml")})
    d = np.array([r["dice"] for r in ins]) if ins else np.array([np.nan])
    return {"evaluated_on": f"held-out real backgrounds (Lung-PET-CT-Dx patient {held_out}, 2 series; never in "
                            "training or validation): unchanged CTs and SYNTHETIC-ON-REAL insertions",
            "negatives": neg, "insertions": ins,
            "negatives_max_fp_regions": max((r["fp_regions"] for r in neg), default=None),
            "negatives_max_fp_ml": max((r["fp_ml"] for r in neg), default=None),
            "insertions_dice_mean": round(float(d.mean()), 4), "insertions_dice_min": round(float(d.min()), 4),
            "insertions_max_other_regions": max((r["other_regions"] for r in ins), default=None)}


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
    ap.add_argument("--real-ct", default=None, help="folder of the real CT samples (../shared/data/real-ct)")
    ap.add_argument("--init", default=None, help="fine-tune from these weights (same plan)")
    ap.add_argument("--held-out", default=DEFAULT_HELD_OUT, choices=sorted(PATIENTS),
                    help="full-chest patient kept out of training as the real-background test")
    ap.add_argument("--weights-from-checkpoint", nargs=2, default=None, metavar=("CHECKPOINT", "OUT_DIR"),
                    help="save the model of a training checkpoint.pt (e.g. the last epoch rather than the best "
                         "validation one) as weights + card in OUT_DIR, for --init or --evaluate-only")
    ap.add_argument("--evaluate-only", default=None, metavar="WEIGHTS_DIR",
                    help="only the held-out real-background figures of the model in this folder (JSON to stdout)")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    torch.set_num_threads(a.threads)
    from mediastinal_ai.models import ModelCard, write_card_for
    from mediastinal_ai.models.card import PROJECT_LICENSE
    from mediastinal_ai.progress import log_progress
    from mediastinal_ai.segmentation.plan import load_config
    from mediastinal_ai.segmentation.train import train

    work = Path(a.work)
    cfg = load_config("segmentation_demo")
    if a.weights_from_checkpoint:
        from mediastinal_ai.segmentation.model_io import save_model
        from mediastinal_ai.segmentation.network import UNet3D
        from mediastinal_ai.segmentation.plan import Plan

        ckpt, dest = a.weights_from_checkpoint
        ck = torch.load(ckpt, map_location="cpu", weights_only=True)
        plan = Plan(**cfg["plan"])
        net = UNet3D(plan.features, decoder=plan.decoder)
        net.load_state_dict(ck["model"])
        Path(dest).mkdir(parents=True, exist_ok=True)
        card = ModelCard(name=NAME, task="segmentation", weights_file="", demo=True,
                         metrics={"epoch": int(ck["epoch"].item()), "selection": f"the checkpoint {ckpt}"},
                         extra={"config": cfg})
        save_model(net, plan, Path(dest) / f"{NAME}.safetensors", card)
        return 0
    if a.evaluate_only:  # needs the held-out test set only, not the training cohorts
        if not a.real_ct:
            raise SystemExit("--evaluate-only needs --real-ct")
        real_test = build_real_test(Path(a.real_ct), work, a.held_out)
        print(json.dumps(evaluate_real(real_test, Path(a.evaluate_only), a.device, a.held_out), indent=1))
        return 0
    if a.real_ct:  # keep the checkpoint that does best on the real validation cases (benchmarks/README.md, run 5c)
        cfg["training"]["select_on"] = "real"
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
    manifest_nc = work / "cohort_non_contrast" / "manifest.csv"
    if not manifest_nc.is_file():
        from mediastinal_ai.synthetic import generate_cohort

        manifest_nc = generate_cohort(COHORT_NON_CONTRAST["n_cases"], work / "cohort_non_contrast",
                                      seed=COHORT_NON_CONTRAST["seed"],
                                      contrast_phase=COHORT_NON_CONTRAST["contrast_phase"])
    if a.export_prepared:  # for a GPU machine without SimpleITK: resampled HU + masks as .npz
        export_prepared(manifest, cfg, Path(a.export_prepared))
        return 0
    real_train = real_test = None
    train_bg, test_bg = backgrounds(a.held_out)
    if a.real_ct:
        real_train, real_test = build_real_cohorts(Path(a.real_ct), work, a.held_out)
    tdata = {"synthetic": True, "cohort": COHORT, "cohort_non_contrast": COHORT_NON_CONTRAST,
             "backgrounds": train_bg if a.real_ct else [],
             "held_out_backgrounds": test_bg if a.real_ct else [],
             "kinds": ["synthetic phantom"] + (["synthetic-on-real", "real-negative"] if a.real_ct else [])}
    if a.trained:
        out = Path(a.trained)
        summary = json.loads((out / "training_summary.json").read_text(encoding="utf-8"))
    else:
        from mediastinal_ai.segmentation.train import prepare_cases

        plan = __import__("mediastinal_ai.segmentation.plan", fromlist=["Plan"]).Plan(**cfg["plan"])
        data = prepare_cases(manifest, plan, log_progress)
        for extra in (manifest_nc, real_train):
            if extra is None:
                continue
            more = prepare_cases(extra, plan, log_progress)
            for k in data:
                data[k] += more[k]
        summary = train(manifest, out, cfg, epochs=a.epochs, device=a.device, name=NAME, demo=True, seed=0,
                        progress=log_progress, resume=a.resume, prepared=data, init_weights=a.init,
                        training_data=tdata)
    metrics = evaluate(manifest, out, device=a.device)
    real_metrics = evaluate_real(real_test, out, a.device, a.held_out) if real_test is not None else None
    card_path = out / f"{NAME}.model.json"
    card = ModelCard.load(card_path)
    card.metrics = {**card.metrics, "held_out_test": metrics, "data": "SYNTHETIC cohort — not patient data"}
    if real_metrics is not None:
        card.metrics["held_out_real_backgrounds"] = real_metrics
    card.training_data = {**card.training_data, **tdata,
                          "manifest": "synthetic cohorts generate_cohort(n_cases=48, seed=1000) + "
                          "generate_cohort(n_cases=32, seed=3000, contrast_phase='non_contrast')"
                          + (" + SYNTHETIC-ON-REAL insertions and real negatives (tools/make_demo_segmentation.py)"
                             if a.real_ct else "")}
    repro = REPRO + (f" --epochs {a.epochs}" if a.epochs else "") + (
        f" --real-ct ../shared/data/real-ct --held-out {a.held_out}" if a.real_ct else "") + (
        f" --init {a.init}" if a.init else "")
    card.extra = {**card.extra, "reproduce": repro, "training_seconds": summary["seconds"],
                  "training_device": summary["device"]}
    if a.real_ct:
        card.version = "0.2.0"
        card.changelog = dict(CHANGELOG)
        card.license = PROJECT_LICENSE
        card.data_license = REAL_DATA_LICENSE
        card.extra["deviations_from_published"] = DEVIATIONS
    card.intended_use = ("demo — not for clinical use. Trained on synthetic CT and synthetic lesions inserted into "
                         "real CTs; never on a patient's tumor.")
    write_card_for(out / f"{NAME}.safetensors", card)
    print(json.dumps(metrics, indent=1))
    if real_metrics is not None:
        print(json.dumps(real_metrics, indent=1))
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
