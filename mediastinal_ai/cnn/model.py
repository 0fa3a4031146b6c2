"""CNN WHO-risk model: ROI data, training, weights + card, prediction with Grad-CAM.

Recipe (from the radiomics/CNN study, docs/cnn.md): the axial slice of largest tumor area, the
tumor's rectangular extent on it as the ROI (margin optional, default 0), CT window W400/L40
then z-score within the ROI, resized to 224 (299 for InceptionV3); for training the slice
+1 mm away (interpolated between slices) is an extra sample. Every step is recorded in the
card's ``preprocessing.roi`` and inference repeats exactly what the card says, so models made
with the older recipe (square box, no window, next slice index) keep working unchanged.
The grey ROI is replicated to the 3 input channels (the z-scored values already have ImageNet-
like scale, so no further ImageNet mean/std is applied). Augmentation: rotation ±10°,
translation ±10 %, scaling 0.9–1.1. Loss: BCE with ``pos_weight`` = negatives/positives of the
training split (class weighting). SGD with momentum 0.9, lr 0.01 (cosine). The epoch with the
best validation AUC is kept.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, ModelError
from ..models import ModelCard, ResolvedModel, write_card_for
from ..progress import CancelToken, ProgressCallback, check, report
from ..volume import Volume
from .backbones import build, logits_of, spec, target_module

log = logging.getLogger(__name__)
CLASSES = ["low risk (A/AB/B1)", "high risk (B2/B3/thymic carcinoma)"]


PUBLISHED_WINDOW = (400.0, 40.0)  # (width, level) of the radiomics/CNN study
POOR_VAL_AUC = 0.6  # a model saved with a best validation AUC below this gets a warning


def roi_recipe(backbone: str, margin_mm: float = 0.0, size: int | None = None, *,
               window: tuple[float, float] | None = PUBLISHED_WINDOW, box: str = "rect",
               adjacent_mm: float | None = 1.0) -> dict[str, Any]:
    """The ROI recipe recorded in the card. Defaults = the published recipe: rectangular tumor
    extent (no margin), W400/L40 window before the z-score, adjacent training slice +1 mm.
    ``window=None``, ``box="square"`` and ``adjacent_mm=None`` (next slice index) are the older
    variants, kept as options and labelled in the card's ``deviations``."""
    from ..roi import ROI_BOXES

    if box not in ROI_BOXES:
        raise InputError(f"ROI box must be one of {ROI_BOXES}, got {box!r}")
    r: dict[str, Any] = {"margin_mm": float(margin_mm), "size": int(size or spec(backbone).input_size),
                         "normalize": "zscore", "window": None if window is None else [float(w) for w in window],
                         "box": box, "slice": "largest tumor area"}
    if adjacent_mm is None:
        r["train_offsets"] = [0, 1]
    else:
        r["train_offsets_mm"] = [0.0, float(adjacent_mm)]
    r["deviations"] = recipe_deviations(r)
    return r


def recipe_deviations(recipe: dict[str, Any]) -> list[str]:
    """Where a recipe departs from the published one (said in the card and the docs)."""
    out = []
    w = recipe.get("window")
    if w is None:
        out.append("no CT window before the z-score (published: W400/L40)")
    elif tuple(float(x) for x in w) != PUBLISHED_WINDOW:
        out.append(f"window W{w[0]:g}/L{w[1]:g} (published: W400/L40)")
    if recipe.get("box", "square") != "rect":
        out.append("square ROI box (published: the tumor's rectangular extent)")
    if float(recipe.get("margin_mm", 0)) > 0:
        out.append(f"{float(recipe['margin_mm']):g} mm margin around the tumor (published: none stated)")
    if "train_offsets_mm" not in recipe:
        out.append("adjacent training slice = next slice index (published: +1 mm)")
    return out


def roi_images(ct: Volume, mask: Volume, recipe: dict[str, Any], offsets=(0,), offsets_mm=None):
    from ..roi import extract_roi

    w = recipe.get("window")
    return extract_roi(ct, mask, margin_mm=float(recipe["margin_mm"]), size=int(recipe["size"]),
                       window=None if w is None else (float(w[0]), float(w[1])), normalize=recipe["normalize"],
                       offsets=tuple(offsets), offsets_mm=None if offsets_mm is None else tuple(offsets_mm),
                       box=recipe.get("box", "square"))


def training_rois(ct: Volume, mask: Volume, recipe: dict[str, Any], train: bool):
    """The ROIs of one case: for training the central and the adjacent slice (as the recipe
    says: +1 mm, or the next index for older recipes); otherwise the central slice only."""
    if not train:
        return roi_images(ct, mask, recipe, (0,))
    if "train_offsets_mm" in recipe:
        return roi_images(ct, mask, recipe, offsets_mm=recipe["train_offsets_mm"])
    return roi_images(ct, mask, recipe, recipe.get("train_offsets", [0, 1]))


@dataclass
class RoiDataset:
    images: np.ndarray  # (N, S, S) float32
    labels: np.ndarray  # (N,) 1 = high risk
    case_ids: list[str]
    splits: list[str]


def dataset_from_manifest(manifest: str | Path, recipe: dict[str, Any], progress: ProgressCallback | None = None,
                          seed: int = 0) -> RoiDataset:
    from ..cohort import read_manifest
    from ..io import read_ct, read_mask

    cases = [c for c in read_manifest(manifest) if c.who_risk and c.mask is not None]  # type: ignore[union-attr]
    if len(cases) < 6:
        raise InputError("CNN training needs at least 6 cases with who_risk and mask", manifest)
    rng = np.random.default_rng(seed)
    imgs, labels, ids, splits = [], [], [], []
    for i, c in enumerate(cases):
        split = c.split or str(rng.choice(["train", "train", "train", "val", "test"]))
        ct = read_ct(c.ct)
        mask = read_mask(c.mask, ct)
        for s in training_rois(ct, mask, recipe, split == "train"):
            imgs.append(s.image)
            labels.append(int(c.who_risk == "high"))
            ids.append(c.case_id)
            splits.append(split)
        report(progress, 0.2 * (i + 1) / len(cases), f"ROI {c.case_id}")
    return RoiDataset(np.stack(imgs).astype(np.float32), np.asarray(labels), ids, splits)


def _augment(x, gen):
    import math

    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    ang = (torch.rand(n, generator=gen) * 2 - 1) * math.radians(10)
    sc = 0.9 + 0.2 * torch.rand(n, generator=gen)
    tr = (torch.rand(n, 2, generator=gen) * 2 - 1) * 0.2  # ±10 % of the image (grid units span 2)
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.stack([torch.stack([cos, -sin, tr[:, 0]], 1), torch.stack([sin, cos, tr[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid.to(x.device), padding_mode="border", align_corners=False)


def _to_input(images: np.ndarray):
    import torch

    t = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]
    return t.repeat(1, 3, 1, 1)


def predict_proba(net: Any, images: np.ndarray, device: str = "cpu", batch: int = 32) -> np.ndarray:
    import torch

    net.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            out.append(torch.sigmoid(logits_of(net(_to_input(images[i:i + batch]).to(device)))[:, 0]).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from ..evaluation import auc_score

    if len(set(y.tolist())) < 2:
        return float("nan")
    return float(auc_score(y, p))


def train_cnn(data: RoiDataset, out_dir: str | Path, backbone: str, recipe: dict[str, Any], *, epochs: int = 20,
              lr: float = 0.01, batch_size: int = 16, pretrained: str | None = None, device: str = "auto",
              resume: bool = False, seed: int = 0, name: str = "risk-cnn", demo: bool = False,
              training_data: dict[str, Any] | None = None, progress: ProgressCallback | None = None,
              cancel: CancelToken | None = None) -> dict[str, Any]:
    import torch

    from ..fileio import atomic_path, atomic_write_json, provenance
    from ..segmentation.model_io import pick_device

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    split = np.asarray(data.splits)
    tr, va = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    if len(va) == 0 or len(set(data.labels[va].tolist())) < 2:
        va = tr  # no usable validation split: select on training AUC (said in the card)
    y = data.labels
    n_pos, n_neg = int(y[tr].sum()), int(len(tr) - y[tr].sum())
    if n_pos == 0 or n_neg == 0:
        raise InputError("the training split needs both low- and high-risk cases")
    net = build(backbone, pretrained).to(dev)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs))
    lossf = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([n_neg / n_pos], device=dev))
    ckpt, log_path = out / "checkpoint.pt", out / "training_log.csv"
    start, best, history = 0, -1.0, []
    if resume and ckpt.is_file():
        ck = torch.load(ckpt, map_location=dev, weights_only=True)
        net.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        start, best = int(ck["epoch"].item()) + 1, float(ck["best"].item())
        gen.manual_seed(seed + start)
        with open(log_path, encoding="utf-8") as f:
            history = list(csv.DictReader(f))
    weights = out / f"{name}.safetensors"
    t0 = time.perf_counter()
    for epoch in range(start, epochs):
        net.train()
        perm = tr[torch.randperm(len(tr), generator=gen).numpy()]
        losses = []
        for i in range(0, len(perm), batch_size):
            check(cancel)
            idx = perm[i:i + batch_size]
            if len(idx) < 2:
                continue  # BatchNorm needs 2+ samples
            x = _augment(_to_input(data.images[idx]), gen).to(dev)
            t = torch.from_numpy(y[idx].astype(np.float32))[:, None].to(dev)
            o = net(x)
            loss = lossf(logits_of(o), t)
            if hasattr(o, "aux_logits") and o.aux_logits is not None:
                loss = loss + 0.4 * lossf(o.aux_logits, t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.item()))
        sched.step()
        auc = _auc(y[va], predict_proba(net, data.images[va], dev))
        row = {"epoch": epoch, "loss": round(float(np.mean(losses)), 5), "val_auc": round(auc, 4)}
        history.append(row)
        if np.isfinite(auc) and auc > best:
            best = auc
            save_model(net, backbone, recipe, weights, ModelCard(
                name=name, task="risk-cnn", weights_file="", demo=demo, training_data=training_data or {},
                metrics={"best_val_auc": round(best, 4), "epoch": epoch,
                         "selected_on": "validation split" if not np.array_equal(va, tr) else "training split"},
                extra={"pretrained": str(pretrained) if pretrained else None,
                       "trained_from_scratch": not pretrained, "seed": seed, "epochs": epochs, "lr": lr,
                       "batch_size": batch_size}))
        with atomic_path(log_path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["epoch", "loss", "val_auc"])
            w.writeheader()
            w.writerows(history)
        with atomic_path(ckpt) as tmp:
            torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                        "epoch": torch.tensor(epoch), "best": torch.tensor(best)}, tmp)
        report(progress, 0.2 + 0.8 * (epoch + 1) / epochs, f"epoch {epoch + 1}/{epochs} loss {row['loss']} "
               f"val AUC {row['val_auc']}")
    from ..evaluation.plots import write_training_curves

    write_training_curves(log_path, out / "training_curves.png", title="2D CNN training")
    held_out = held_out_evaluation(data, out, weights, dev, validation_is_train=bool(np.array_equal(va, tr)))
    summary = {"best_val_auc": best, "seconds": round(time.perf_counter() - t0, 1), "device": dev,
               "weights": str(weights), "held_out": held_out, **provenance()}
    atomic_write_json(out / "training_summary.json", summary)
    return summary


def _one_per_case(data: RoiDataset, split: str) -> np.ndarray:
    """Indices of the first ROI (the largest-area slice, offset 0) of each case in ``split``."""
    seen: set[str] = set()
    idx = []
    for i, (c, s) in enumerate(zip(data.case_ids, data.splits)):
        if s == split and c not in seen:
            seen.add(c)
            idx.append(i)
    return np.asarray(idx, dtype=int)


def held_out_evaluation(data: RoiDataset, out: Path, weights: Path, device: str,
                        validation_is_train: bool = False) -> dict[str, Any]:
    """Score the kept (best-validation) model on the validation and test cases; write
    ``val_predictions.csv`` and ``test_predictions.csv`` (one row per case: ``case_id, split,
    who_risk, high_risk, p_high_risk_cnn``) and put into the card: the threshold (Youden on the
    validation cases), held-out test AUC with DeLong CI and threshold metrics with Wilson CIs,
    and the split sizes. Without test cases the card says so instead of showing test figures.
    """
    import pandas as pd
    from safetensors.torch import load_file

    from ..evaluation import roc_auc_ci, threshold_metrics, youden_threshold
    from ..fileio import atomic_path
    from ..models import ModelCard

    card_path = out / (weights.name.split(".")[0] + ".model.json")
    if not weights.is_file() or not card_path.is_file():
        return {"note": "no model was saved (validation AUC never finite)"}
    card = ModelCard.load(card_path)
    net = build(card.architecture["backbone"])
    net.load_state_dict(load_file(str(weights)), strict=True)
    net.to(device).eval()
    val_split = "train" if validation_is_train else "val"
    sizes = {s: len({c for c, t in zip(data.case_ids, data.splits) if t == s}) for s in ("train", "val", "test")}
    tables, scores = {}, {}
    for kind, split in (("val", val_split), ("test", "test")):
        idx = _one_per_case(data, split)
        p = predict_proba(net, data.images[idx], device) if len(idx) else np.zeros(0)
        y = data.labels[idx]
        scores[kind] = (y, p)
        df = pd.DataFrame({"case_id": [data.case_ids[i] for i in idx], "split": split,
                           "who_risk": ["high" if v else "low" for v in y], "high_risk": y.astype(int),
                           "p_high_risk_cnn": p.astype(float)})  # full precision: --threshold-from = card
        df["synthetic"] = bool(card.training_data.get("synthetic", False))
        tables[kind] = out / f"{kind}_predictions.csv"
        with atomic_path(tables[kind]) as tmp:
            df.to_csv(tmp, index=False)
    yv, pv = scores["val"]
    thr = youden_threshold(yv, pv) if len(set(yv.tolist())) == 2 else 0.5
    m: dict[str, Any] = {"threshold": float(thr),
                         "threshold_from": ("Youden index on the validation split" if len(set(yv.tolist())) == 2
                                            else "0.5 (the validation cases hold one class only)")
                         + (" (no validation split: training cases — optimistic)" if validation_is_train else "")}
    yt, pt = scores["test"]
    if len(set(yt.tolist())) == 2:
        auc = roc_auc_ci(yt, pt)
        tm = threshold_metrics(yt, pt, thr)
        m.update({"test_auc": round(auc.auc, 4), "test_auc_ci95_delong": [round(auc.ci_low, 4), round(auc.ci_high, 4)],
                  "test_cases": int(len(yt)), "test_high_risk": int(yt.sum()),
                  "test_threshold_metrics": _plain(tm),
                  "test_note": "held-out test split, never used for training, model selection or the threshold"})
    else:
        m["test_note"] = (f"no held-out test figures: the test split has {len(yt)} case(s)"
                          + (" of one class only" if len(yt) else "") + "; add split=test rows to the manifest")
    card.metrics.update(m)
    card.training_data["split_sizes"] = {**sizes, "unit": "cases"}
    card.training_data["n_rois"] = int(len(data.labels))
    card.training_data["prediction_tables"] = {k: v.name for k, v in tables.items()}
    write_card_for(weights, card)
    return {**m, "split_sizes": sizes, "prediction_tables": {k: str(v) for k, v in tables.items()}}


def _plain(d: Any) -> Any:
    """JSON-plain numbers (numpy scalars → float/int)."""
    import json

    return json.loads(json.dumps(d, default=lambda x: x.item() if hasattr(x, "item") else str(x)))


# ---------------------------------------------------------------------------- weights + card
def save_model(net: Any, backbone: str, recipe: dict[str, Any], weights_path: Path, card: ModelCard) -> Path:
    from safetensors.torch import save_file

    from ..fileio import atomic_path

    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    with atomic_path(weights_path) as tmp:
        save_file(state, str(tmp), metadata={"format": "mediastinal-ai-risk-cnn", "backbone": backbone})
    card.architecture = {"backbone": backbone, "head": "1 logit (sigmoid = P(high risk))",
                         "input": f"3 x {recipe['size']} x {recipe['size']} (grey ROI replicated)"}
    card.preprocessing = {"roi": recipe}
    card.classes = list(CLASSES)
    card.input_schema = {"channels": 3, "size": int(recipe["size"])}
    if recipe.get("deviations") is None:
        recipe["deviations"] = recipe_deviations(recipe)
    from ..evaluation.quality import poor_metric_warning

    warn = poor_metric_warning("auc", (card.metrics or {}).get("best_val_auc"), floor=POOR_VAL_AUC, model=card.name)
    card.extra = {k: v for k, v in (card.extra or {}).items() if k != "quality_warning"}
    if warn:
        card.extra["quality_warning"] = warn
    return write_card_for(weights_path, card)


@dataclass
class CnnModel:
    net: Any
    backbone: str
    recipe: dict[str, Any]
    card: ModelCard
    label: str
    threshold: float = 0.5
    device: str = "cpu"


def load_model(resolved: ResolvedModel, device: str = "cpu") -> CnnModel:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    card = resolved.card
    if card.task != "risk-cnn":
        raise ModelError(f"{card.name!r} is a {card.task!r} model, not a CNN risk model", resolved.card_path)
    backbone = card.architecture.get("backbone", "")
    recipe = card.preprocessing.get("roi")
    if not recipe or spec(backbone).input_size and int(recipe.get("size", 0)) < 32:
        raise ModelError("model card lacks a valid ROI recipe", resolved.card_path)
    try:
        state = load_file(str(resolved.weights_path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(f"cannot read the weights as safetensors ({e})", resolved.weights_path) from e
    net = build(backbone)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelError(f"weights do not fit a {backbone} ({str(e).splitlines()[0]})", resolved.weights_path) from e
    net.to(device).eval()
    thr = float(card.metrics.get("threshold", 0.5)) if isinstance(card.metrics, dict) else 0.5
    return CnnModel(net, backbone, recipe, card, resolved.label, thr, device)


def predict_risk(ct: Volume, mask: Volume, model: CnnModel | None = None) -> dict[str, Any]:
    """P(high WHO risk), group, ROI geometry and the Grad-CAM map on the CT grid (``gradcam``)."""
    from ..models import resolve
    from .gradcam import grad_cam

    if model is None:
        model = load_model(resolve(None, task="risk-cnn"))
    sample = roi_images(ct, mask, model.recipe, (0,))[0]
    x = _to_input(sample.image[None]).to(model.device)
    if tuple(x.shape[1:]) != (3, model.recipe["size"], model.recipe["size"]):
        raise ModelError(f"input {tuple(x.shape[1:])} does not match the model's {model.card.input_schema}")
    cam, p = grad_cam(model.net, x, target_module(model.net, model.backbone))
    slice_map = sample.roi_to_slice(cam)
    vol = np.zeros(ct.shape, np.float32)
    vol[sample.slice_index] = slice_map
    k = sample.slice_index
    y0, y1, x0, x1 = sample.box
    center = ct.index_to_lps(np.array([(x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2, k]))
    res = {
        "task": "risk-cnn", "probability_high_risk": round(p, 4),
        "group": "high" if p >= model.threshold else "low", "threshold": model.threshold,
        "model": model.label, "model_sha256": model.card.sha256, "backbone": model.backbone,
        "roi": {"slice_index": int(k), "box_yx": [int(b) for b in sample.box],
                "center_lps": [round(float(c), 2) for c in center]},
        "warnings": ["demo model trained on synthetic data — not for clinical use"] if model.card.demo else [],
        "gradcam": ct.with_array(vol, units="gradcam"),
    }
    return res
