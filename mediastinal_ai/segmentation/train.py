"""Training of the 3D U-Net on a cohort manifest, as published: Dice loss, Adam 1e-3, axial
rotation ±10°, scaling 0.8–1.2, random crops holding tumor and background, best-validation-Dice
checkpoint. Optional intensity augmentation (``training.intensity_augmentation``, a labelled
deviation; see :mod:`.augment`). Resumable: ``checkpoint.pt`` (tensors only, read with ``weights_only=True``) holds
the model, optimizer and epoch; the log is a CSV and a loss/Dice plot."""

from __future__ import annotations

import csv
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..progress import CancelToken, ProgressCallback, check, report
from .augment import IntensityAugmentation
from .plan import Plan, normalise, resample

log = logging.getLogger(__name__)


@dataclass
class PreparedCase:
    case_id: str
    image: np.ndarray  # float32 [0, 1] at plan spacing
    mask: np.ndarray  # uint8
    kind: str = "real"  # "phantom" | "synthetic-on-real" | "real-negative" | "real" (see case_kind)


def case_kind(case: Any) -> str:
    """What a validation case tells about real CT: a synthetic phantom, a lesion inserted into a
    real CT, a real CT without a lesion, or a real (user's) case."""
    kind = (case.extra or {}).get("synthetic_kind", "")
    if kind in ("synthetic-on-real", "real-negative"):
        return kind
    return "phantom" if case.synthetic else "real"


def prepare_cases(manifest: str | Path, plan: Plan, progress: ProgressCallback | None = None) -> dict[str, list[PreparedCase]]:
    """Read, resample and normalise every case with a mask; group by the manifest's split
    (cases without a split go to train, except every 5th to val)."""
    from ..cohort import read_manifest
    from ..io import read_ct, read_mask

    cases = [c for c in read_manifest(manifest) if c.mask is not None]  # type: ignore[union-attr]
    if len(cases) < 2:
        raise InputError("training needs at least 2 cases with a 'mask' column", manifest)
    out: dict[str, list[PreparedCase]] = {"train": [], "val": [], "test": []}
    if plan.intensity == "dataset_minmax":  # the study's rescaling: the training cases' HU range, kept in the plan
        from .plan import dataset_hu_range

        train_cases = [c for i, c in enumerate(cases) if (c.split or ("val" if i % 5 == 4 else "train")) == "train"]
        plan.hu_window = dataset_hu_range(read_ct(c.ct) for c in train_cases)
        log.info("intensity rescaled with the training set's HU range %s", plan.hu_window)
    for i, c in enumerate(cases):
        ct = read_ct(c.ct)
        m = read_mask(c.mask, ct, allow_empty=True)
        image, mask = prepare_volume(ct, m, plan)
        split = c.split or ("val" if i % 5 == 4 else "train")
        out[split].append(PreparedCase(c.case_id, image, mask, case_kind(c)))
        report(progress, 0.1 * (i + 1) / len(cases), f"prepared {c.case_id}")
    if not out["train"]:
        raise InputError("no training cases (split column?)", manifest)
    if not out["val"]:
        out["val"] = out["train"][-1:]
    return out


def prepare_volume(ct: Any, mask: Any, plan: Plan) -> tuple[np.ndarray, np.ndarray]:
    """CT + mask as the network sees them at inference: canonical voxel order, cropped to the
    mediastinum when the plan says so, resampled to the plan's spacing, intensities scaled."""
    from ..anatomy import analyse_chest
    from ..orientation import canonical
    from .inference import CROP_MARGIN_MM, _crop_box, _sub_volume

    canon, orient = canonical(ct)
    m_c = canon.with_array(orient.apply_array(mask.array).copy(), units="label")
    if plan.crop_to_mediastinum:
        box = _crop_box(canon, analyse_chest(canon), CROP_MARGIN_MM)
        if box is not None:
            canon, m_c = _sub_volume(canon, box), _sub_volume(m_c, box)
    ct_r = resample(canon, plan.target_spacing_xyz)
    m_r = resample(m_c, plan.target_spacing_xyz, label=True, reference=ct_r)
    return normalise(ct_r.array, plan.hu_window), m_r.array.astype(np.uint8)


def _augment(img: np.ndarray, msk: np.ndarray, rng: np.random.Generator, rot_deg: float,
             scale_range: tuple[float, float], scale_per_axis: bool = False) -> tuple[np.ndarray, np.ndarray]:
    angle = rng.uniform(-rot_deg, rot_deg)
    if abs(angle) > 0.5:
        img = ndimage.rotate(img, angle, axes=(1, 2), reshape=False, order=1, mode="nearest")
        msk = ndimage.rotate(msk, angle, axes=(1, 2), reshape=False, order=0, mode="constant")
    sy = rng.uniform(*scale_range)
    sx = rng.uniform(*scale_range) if scale_per_axis else sy  # the study scales each axial axis on its own
    if abs(sy - 1) > 0.02 or abs(sx - 1) > 0.02:
        img = ndimage.zoom(img, (1, sy, sx), order=1, mode="nearest")
        msk = ndimage.zoom(msk, (1, sy, sx), order=0, mode="constant")
    return img, msk


def batch_foreground(batch_size: int, fg_fraction: float, balanced: bool) -> list[float]:
    """Per batch item, the chance its crop is centred on tumor. ``balanced`` (the study's
    sampling): every batch holds both — round(fg · n) tumor crops (at least one) and the rest
    (at least one, when n > 1) anywhere; otherwise each crop draws independently."""
    if not balanced:
        return [fg_fraction] * batch_size
    n_fg = min(batch_size, max(1, round(fg_fraction * batch_size)))
    if batch_size > 1:
        n_fg = min(n_fg, batch_size - 1)
    return [1.0] * n_fg + [0.0] * (batch_size - n_fg)


def random_patch(case: PreparedCase, patch: tuple[int, int, int], rng: np.random.Generator, fg_fraction: float,
                 rot_deg: float = 10.0, scale_range: tuple[float, float] = (0.8, 1.2),
                 mirror_axes: str = "", scale_per_axis: bool = False,
                 intensity: Callable[..., np.ndarray] | None = None,
                 plan: Plan | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A crop holding tumor (with probability ``fg_fraction``) or anywhere, then augmented
    (geometry, then ``intensity`` — an :class:`~.augment.IntensityAugmentation` — when given)."""
    # crop a margin-enlarged region first so rotation/scaling have context, then the final patch
    big = tuple(int(p * 1.5) if i else p for i, p in enumerate(patch))
    img, msk = case.image, case.mask
    pad = [(0, max(0, b - s)) for b, s in zip(big, img.shape)]
    if any(p[1] for p in pad):
        img, msk = np.pad(img, pad, mode="edge"), np.pad(msk, pad)
    fg = np.argwhere(msk > 0)
    if len(fg) and rng.random() < fg_fraction:
        center = fg[rng.integers(len(fg))]
    else:
        center = np.array([rng.integers(s) for s in img.shape])
    start = [int(np.clip(c - b // 2, 0, s - b)) for c, b, s in zip(center, big, img.shape)]
    sl = tuple(slice(a, a + b) for a, b in zip(start, big))
    pi, pm = _augment(img[sl], msk[sl], rng, rot_deg, scale_range, scale_per_axis)
    # centre crop to the patch size (pad if scaling made it smaller)
    pad = [(0, max(0, p - s)) for p, s in zip(patch, pi.shape)]
    if any(p[1] for p in pad):
        pi, pm = np.pad(pi, pad, mode="edge"), np.pad(pm, pad)
    o = [(s - p) // 2 for s, p in zip(pi.shape, patch)]
    sl = tuple(slice(a, a + p) for a, p in zip(o, patch))
    pi, pm = pi[sl], pm[sl]
    for ax in mirror_axes:  # mirrored chests, so that mirrored test-time passes are meaningful
        if rng.random() < 0.5:
            k = {"x": 2, "y": 1, "z": 0}[ax]
            pi, pm = np.flip(pi, k), np.flip(pm, k)
    if intensity is not None:
        if plan is None:
            raise ValueError("intensity augmentation needs the plan (HU range, spacing)")
        sx, sy, sz = plan.target_spacing_xyz
        pi = intensity(pi, rng, hu_range=plan.hu_window, spacing_zyx=(sz, sy, sx))
    return np.ascontiguousarray(pi, dtype=np.float32), (np.ascontiguousarray(pm) > 0).astype(np.float32)


DICE_MODES = ("per_patch", "batch")


def dice_loss(logits: Any, target: Any, eps: float = 1.0, mode: str = "per_patch") -> Any:
    """Soft Dice loss. ``per_patch``: each patch's Dice, averaged — a patch without tumour scores
    1 - eps / (sum p + eps), so every background patch pulls the whole output towards zero;
    ``batch`` (nnU-Net's batch Dice): one Dice over every voxel of the batch, in which background
    patches count only through the false positives they add."""
    import torch

    if mode not in DICE_MODES:
        raise ValueError(f"unknown Dice mode {mode!r}; expected one of {DICE_MODES}")
    p = torch.sigmoid(logits)
    dims = tuple(range(0 if mode == "batch" else 1, p.ndim))
    inter = (p * target).sum(dims)
    return (1 - (2 * inter + eps) / (p.sum(dims) + target.sum(dims) + eps)).mean()


LOSSES = ("dice", "dice_ce")


def segmentation_loss(logits: Any, target: Any, loss: str = "dice", dice_mode: str = "per_patch") -> Any:
    """``dice``: the study's Dice loss alone. ``dice_ce``: Dice plus binary cross-entropy with equal
    weight (nnU-Net's DC_and_BCE): Dice is flat for a voxel far from any tumour once a patch is
    empty, so on real CT — mostly tumour-free patches — nothing but cross-entropy keeps teaching the
    network what a tumour-free mediastinum looks like, voxel by voxel."""
    import torch

    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; expected one of {LOSSES}")
    d = dice_loss(logits, target, mode=dice_mode)
    if loss == "dice":
        return d
    return d + torch.nn.functional.binary_cross_entropy_with_logits(logits, target)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * np.logical_and(a, b).sum() / s)


SELECT_ON = ("dice", "real")
LOG_VAL = ("val_dice", "val_dice_real", "val_fp_regions_negatives", "val_real")


def _validate(net: Any, plan: Plan, cases: list[PreparedCase], device: str) -> dict[str, float | None]:
    """Validation figures: mean Dice over every case (``dice``); over the cases on real CT
    (``dice_real``: insertions into real CT and real cases; None without any); false regions on the
    real CTs without a lesion (``fp_regions_negatives``: components of the thresholded output,
    summed; None without any); and ``real``, the selection score on real CT: the mean over the real
    cases of their Dice, a lesion-free one scoring 1 / (1 + its false regions). Why: on a mixed
    validation set the overall Dice hardly moved (0.54 -> 0.54) between a model that found none of
    the lesions in a real patient and one that found 7 of 8 (benchmarks/README.md, issue 12)."""
    import torch
    from monai.inferers import sliding_window_inference
    from scipy import ndimage

    net.eval()
    scores, dice_real, real, fp = [], [], [], []
    with torch.no_grad():
        for c in cases:
            x = c.image
            pad = [(0, max(0, p - s)) for p, s in zip(plan.patch_size_zyx, x.shape)]
            x = np.pad(x, pad, mode="edge")
            t = torch.from_numpy(x)[None, None].to(device)
            logits = sliding_window_inference(t, plan.patch_size_zyx, 4, net, overlap=0.25, mode="gaussian")
            pred = (torch.sigmoid(logits)[0, 0].cpu().numpy() >= 0.5)[: c.mask.shape[0], : c.mask.shape[1],
                                                                      : c.mask.shape[2]]
            d = dice(pred, c.mask)
            scores.append(d)
            if c.kind == "phantom":
                continue
            if c.mask.any():
                dice_real.append(d)
                real.append(d)
            else:  # a real CT without a lesion: what counts is how many false regions it gets
                n = int(ndimage.label(pred, structure=np.ones((3, 3, 3)))[1])
                fp.append(n)
                real.append(1.0 / (1.0 + n))
    net.train()
    return {"dice": float(np.mean(scores)),
            "dice_real": float(np.mean(dice_real)) if dice_real else None,
            "fp_regions_negatives": float(np.sum(fp)) if fp else None,
            "real": float(np.mean(real)) if real else None}


def train(manifest: str | Path, out_dir: str | Path, config: dict[str, Any], *, epochs: int | None = None,
          batch_size: int | None = None, device: str = "auto", resume: bool = False, seed: int = 0,
          name: str = "seg-unet3d", demo: bool = False, progress: ProgressCallback | None = None,
          cancel: CancelToken | None = None, prepared: dict[str, list[PreparedCase]] | None = None,
          init_weights: str | Path | None = None, training_data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train; writes ``<name>.safetensors`` + card (best validation Dice), checkpoint, log, plot."""
    import torch

    from ..fileio import atomic_path, atomic_write_json, provenance
    from ..models import ModelCard
    from .model_io import pick_device, save_model
    from .network import UNet3D

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan = Plan(**config["plan"])
    tcfg = config.get("training", {})
    dice_mode = str(tcfg.get("dice", "per_patch"))
    if dice_mode not in DICE_MODES:
        raise InputError(f"training.dice is {dice_mode!r}; expected one of {', '.join(DICE_MODES)}")
    loss_name = str(tcfg.get("loss", "dice"))
    if loss_name not in LOSSES:
        raise InputError(f"training.loss is {loss_name!r}; expected one of {', '.join(LOSSES)}")
    select_on = str(tcfg.get("select_on", "dice"))
    if select_on not in SELECT_ON:
        raise InputError(f"training.select_on is {select_on!r}; expected one of {', '.join(SELECT_ON)}")
    epochs = int(epochs or tcfg.get("epochs", 30))
    bs = int(batch_size or tcfg.get("batch_size", 3))
    iters = int(tcfg.get("iterations_per_epoch", 50))
    val_every = int(tcfg.get("validation_every", 1))
    dev = pick_device(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    data = prepared or prepare_cases(manifest, plan, progress)
    if select_on == "real" and not any(c.kind != "phantom" for c in data["val"]):
        raise InputError("training.select_on is 'real' but the validation split has no case on real CT "
                         "(insertions into real CT, real negatives or real cases)", manifest)
    net = UNet3D(plan.features, decoder=plan.decoder).to(dev)
    if init_weights:  # fine-tuning: start from an earlier model of the same plan (safetensors only)
        from safetensors.torch import load_file

        net.load_state_dict(load_file(str(init_weights)), strict=True)
        log.info("initialised from %s", init_weights)
    opt = torch.optim.Adam(net.parameters(), lr=float(tcfg.get("learning_rate", 1e-3)))
    scaler = torch.amp.GradScaler("cuda", enabled=dev.startswith("cuda"))
    ckpt_path, log_path = out / "checkpoint.pt", out / "training_log.csv"
    start_epoch, best, best_dice, history = 0, -1.0, -1.0, []
    if resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location=dev, weights_only=True)
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        start_epoch, best = int(ck["epoch"].item()) + 1, float(ck["best"].item())
        best_dice = float(ck["best_dice"].item()) if "best_dice" in ck else best  # older checkpoints: Dice selection
        rng = np.random.default_rng(seed + start_epoch)
        if log_path.is_file():
            with open(log_path, encoding="utf-8") as f:
                history = [dict(r) for r in csv.DictReader(f)]
        log.info("resumed at epoch %d (best val Dice %.3f)", start_epoch, best)
    weights = out / f"{name}.safetensors"
    intensity_aug = IntensityAugmentation.from_config(tcfg.get("intensity_augmentation"))
    fg_share = batch_foreground(bs, float(tcfg.get("foreground_fraction", 0.67)),
                                bool(tcfg.get("balanced_batches", False)))
    t0 = time.perf_counter()
    net.train()
    for epoch in range(start_epoch, epochs):
        losses = []
        for it in range(iters):
            check(cancel)
            batch = [random_patch(data["train"][rng.integers(len(data["train"]))], plan.patch_size_zyx, rng,
                                  fg_share[j], float(tcfg.get("rotation_deg", 10)),
                                  tuple(tcfg.get("scale_range", (0.8, 1.2))), plan.mirror_axes,
                                  bool(tcfg.get("scale_per_axis", False)), intensity_aug, plan)
                     for j in range(bs)]
            x = torch.from_numpy(np.stack([b[0] for b in batch])[:, None]).to(dev)
            y = torch.from_numpy(np.stack([b[1] for b in batch])[:, None]).to(dev)
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", enabled=dev.startswith("cuda")):
                loss = segmentation_loss(net(x).float(), y, loss_name, dice_mode)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            losses.append(float(loss.item()))
            report(progress, 0.1 + 0.9 * (epoch + (it + 1) / (iters + 1)) / epochs,
                   f"epoch {epoch + 1}/{epochs} batch {it + 1}/{iters}")
        row: dict[str, Any] = {"epoch": epoch, "loss": round(float(np.mean(losses)), 5), **dict.fromkeys(LOG_VAL, "")}
        if (epoch + 1) % val_every == 0 or epoch == epochs - 1:
            report(progress, 0.1 + 0.9 * (epoch + iters / (iters + 1)) / epochs,
                   f"epoch {epoch + 1}/{epochs} validating on {len(data['val'])} case(s)")
            val = _validate(net, plan, data["val"], dev)
            row.update({f"val_{k}": "" if v is None else round(v, 4) for k, v in val.items()})
            vd = val[select_on]
            if vd > best:
                best, best_dice = vd, val["dice"]
                card = ModelCard(name=name, task="segmentation", weights_file="", demo=demo,
                                 training_data={"manifest": str(manifest), "n_train": len(data["train"]),
                                                "n_val": len(data["val"]), **(training_data or {})},
                                 metrics={"best_val_dice": round(best_dice, 4), "epoch": epoch,
                                          "selected_on": select_on,
                                          **({"best_val_real": round(best, 4)} if select_on == "real" else {})},
                                 extra={"config": config, "seed": seed,
                                        "init_weights": str(init_weights) if init_weights else None})
                save_model(net, plan, weights, card)
        history.append(row)
        with atomic_path(log_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["epoch", "loss", *LOG_VAL], extrasaction="ignore", restval="")
            w.writeheader()
            w.writerows(history)
        with atomic_path(ckpt_path) as tmp:
            torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": torch.tensor(epoch),
                        "best": torch.tensor(best), "best_dice": torch.tensor(best_dice)}, tmp)
        report(progress, 0.1 + 0.9 * (epoch + 1) / epochs, f"epoch {epoch + 1}/{epochs} loss {row['loss']} "
               f"val Dice {row['val_dice']}")
    from ..evaluation.plots import write_training_curves

    write_training_curves(log_path, out / "training_curves.png", title="3D U-Net training")
    from ..evaluation.quality import poor_metric_warning

    warning = poor_metric_warning("dice", best_dice if best_dice >= 0 else None, "validation", model=name)
    if warning and weights.is_file():  # saved anyway (a user may want to inspect it), but the card says so
        from ..models.card import ModelCard, write_card_for

        card_path = weights.with_name(f"{name}.model.json")
        if card_path.is_file():
            card = ModelCard.load(card_path)
            card.metrics = {**card.metrics, "quality_warning": warning}
            write_card_for(weights, card)
    summary = {"best_val_dice": best_dice, "selected_on": select_on, "best_val_selection_score": best,
               "epochs": epochs, "seconds": round(time.perf_counter() - t0, 1), "device": dev,
               "weights": str(weights), "quality_warning": warning, **provenance(config=config)}
    atomic_write_json(out / "training_summary.json", summary)
    return summary


def write_config(path: Path, config: dict[str, Any]) -> None:
    from ..fileio import atomic_write_text

    atomic_write_text(path, json.dumps(config, indent=2))
