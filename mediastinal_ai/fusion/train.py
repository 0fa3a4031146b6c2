"""Training of the DMFN fusion model and its CT-only baseline with the same code and splits.

Both models are :class:`~mediastinal_ai.fusion.net.DMFN` (the baseline has no tabular branch),
trained with the same splits, batch order, augmentation draws, optimiser, schedule, epochs and
loss; the only difference is the CTC/clinical input. Recipe:

* splits: the manifest's ``split`` column when it gives train and test cases (val optional),
  else a stratified 60/20/20 split by lesion class (seeded);
* classes: the lesion classes present in the training split, in taxonomy order (stored in the
  card). Held-out cases of a class the model never saw count for the binary task only;
* augmentation (train only): random choice of the largest-area slice or its neighbour (+1),
  random rotation ±10°, scaling 0.9–1.1, translation ±5%; *missing-input dropout*: each optional
  clinical input (age, sex, site) is set to "missing" with probability 0.2, so the indicators
  carry meaning at inference;
* loss: sum over the two heads (benign/malignant and multi-class) of the study's "neutral
  cross-entropy" (default; our reading: the entropy-regularised ``CE − β·H(p)``, see
  :func:`~mediastinal_ai.fusion.net.head_loss` — the study does not define it) or plain
  cross-entropy (``loss="ce"``);
* "repeated 3 times": :func:`train_repeated` trains with three seeds on the same splits and
  reports mean ± SD (sample SD) of the held-out figures; the first seed's models are kept;
* AdamW (lr 1e-3, weight decay 1e-4), cosine schedule, batch 32; the epoch with the lowest
  validation loss is kept (the last epoch when there is no validation split);
* the benign/malignant threshold is Youden's on the validation cases (0.5 without them) and is
  applied unchanged to the test cases.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..progress import CancelToken, ProgressCallback, check, report
from . import schema as sch
from .data import FusionData, roi_recipe

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    loss: str = "neutral"  # "neutral" (the study's) | "ce"
    beta: float = 0.1  # weight of the entropy term of the "neutral" loss
    regnet: dict[str, Any] = field(default_factory=lambda: {"preset": "regnet_y_400mf"})
    tab_hidden: int = 32
    fusion_hidden: int = 64
    dropout: float = 0.2
    missing_dropout: float = 0.2
    image_dropout: float = 0.0  # modality dropout of the image features (fusion model only)
    augment: bool = True
    seed: int = 0
    device: str = "auto"
    inputs: tuple[str, ...] = sch.ALL_INPUTS
    name: str = "fusion-dmfn"
    ct_only_name: str = ""  # default: <name>-ct-only
    demo: bool = False
    ctc_unit: str = sch.CTC_UNIT  # the site's CTC assay unit, recorded in the card
    split_seed: int | None = None  # seed of the random split when the manifest gives none (default: seed)

    def __post_init__(self) -> None:
        if self.loss not in ("ce", "neutral"):
            raise InputError(f"loss must be 'ce' or 'neutral', got {self.loss!r}")
        if self.epochs < 1 or self.batch_size < 2:
            raise InputError("epochs must be ≥ 1 and batch size ≥ 2")
        self.inputs = tuple(self.inputs)
        if "ctc" not in self.inputs:
            raise InputError("the fusion model needs the 'ctc' input")
        self.ct_only_name = self.ct_only_name or f"{self.name}-ct-only"


def make_splits(data: FusionData, seed: int = 0) -> dict[str, np.ndarray]:
    """Indices of train/val/test cases."""
    given = set(data.split.tolist())
    if {"train", "test"} <= given and given <= {"train", "val", "test", ""}:
        return {s: np.flatnonzero(data.split == s) for s in ("train", "val", "test")}
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for c in sorted(set(data.lesion_class.tolist())):
        idx = rng.permutation(np.flatnonzero(data.lesion_class == c)).tolist()
        n = len(idx)
        n_test = int(round(0.2 * n)) if n >= 3 else 0
        n_val = int(round(0.2 * n)) if n >= 4 else 0
        parts["test"] += idx[:n_test]
        parts["val"] += idx[n_test:n_test + n_val]
        parts["train"] += idx[n_test + n_val:]
    return {k: np.asarray(sorted(v), dtype=int) for k, v in parts.items()}


def _tabular(data: FusionData, schema: dict[str, Any]) -> np.ndarray:
    return np.stack([sch.encode(data.validated(i), schema) for i in range(len(data))]).astype(np.float32)


def _missing_groups(schema: dict[str, Any]) -> list[tuple[list[int], int]]:
    """(value feature indices, missing-indicator index) of each optional input."""
    names = schema["features"]
    out = []
    for prefix in ("age", "sex", "site"):
        miss = f"{prefix}_missing"
        if miss in names:
            vals = [i for i, n in enumerate(names) if n.startswith(prefix + "_") and n != miss]
            out.append((vals, names.index(miss)))
    return out


def _augment(x, gen, torch):
    """Random rotation ±10°, scale 0.9–1.1, translation ±5% (one affine per image)."""
    b = x.shape[0]
    ang = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(10)
    sc = 0.9 + 0.2 * torch.rand(b, generator=gen)
    tr = (torch.rand(b, 2, generator=gen) * 2 - 1) * 0.1  # normalised coords: 0.1 = 5% of the width
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    theta = torch.stack([torch.stack([cos, -sin, tr[:, 0]], 1), torch.stack([sin, cos, tr[:, 1]], 1)], 1)
    grid = torch.nn.functional.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _fit(data: FusionData, tab: np.ndarray | None, y_cls: np.ndarray, splits: dict[str, np.ndarray],
         classes: list[str], schema: dict[str, Any] | None, cfg: TrainConfig, device: str, tag: str,
         progress: ProgressCallback | None, cancel: CancelToken | None, p0: float, p1: float):
    import torch

    from ..nn_common import seed_everything
    from .net import DMFN, head_loss

    seed_everything(cfg.seed)
    net = DMFN(len(classes), 0 if tab is None else tab.shape[1], cfg.regnet, cfg.tab_hidden,
               cfg.fusion_hidden, cfg.dropout).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    tr, va = splits["train"], splits["val"]
    steps_per_epoch = max(1, math.ceil(len(tr) / cfg.batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(cfg.seed + 1)  # same draws for fusion and CT-only
    images = torch.from_numpy(data.images)  # (N, O, S, S)
    ybin = torch.from_numpy(data.malignant.astype(np.int64))
    ycls = torch.from_numpy(y_cls.astype(np.int64))
    tabt = None if tab is None else torch.from_numpy(tab)
    groups = _missing_groups(schema) if schema is not None else []
    n_groups = len([n for n in cfg.inputs if n in sch.OPTIONAL_INPUTS])

    def losses(idx: np.ndarray, train: bool) -> torch.Tensor:
        ii = torch.from_numpy(idx)
        if train:
            off = torch.randint(0, images.shape[1], (len(idx),), generator=gen)
        else:
            off = torch.zeros(len(idx), dtype=torch.long)
        x = images[ii, off].unsqueeze(1).to(device)
        # The dropout draws are made for both models (and used only by the fusion model), so the
        # fusion and CT-only runs see identical batch orders, slices and augmentations.
        drops = [torch.rand(len(idx), generator=gen) < cfg.missing_dropout for _ in range(n_groups)] if train else []
        t = None
        if tabt is not None:
            t = tabt[ii].clone()
            for (vals, miss), drop in zip(groups, drops) if train else ():  # noqa: B905 - equal lengths
                rows = drop.nonzero().flatten()
                t[rows[:, None], torch.tensor(vals)] = 0.0
                t[rows, miss] = 1.0
            t = t.to(device)
        keep_draw = torch.rand(len(idx), generator=gen) >= cfg.image_dropout if train else None
        keep = keep_draw.to(device) if keep_draw is not None and tabt is not None and cfg.image_dropout > 0 else None
        if train and cfg.augment:
            x = _augment(x, gen, torch)
        lb, lc = net(x, t, keep)
        return (head_loss(lb, ybin[ii].to(device), cfg.loss, cfg.beta)
                + head_loss(lc, ycls[ii].to(device), cfg.loss, cfg.beta))

    history: list[dict[str, Any]] = []
    best_state, best_val, best_epoch = None, math.inf, cfg.epochs
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        perm = tr[torch.randperm(len(tr), generator=gen).numpy()]
        tot, n = 0.0, 0
        for b in range(0, len(perm), cfg.batch_size):
            check(cancel)
            idx = perm[b:b + cfg.batch_size]
            if len(idx) < 2:  # BatchNorm needs ≥ 2 samples
                continue
            loss = losses(idx, True)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(idx)
            n += len(idx)
        row: dict[str, Any] = {"model": tag, "epoch": epoch, "train_loss": tot / max(n, 1)}
        if len(va):
            net.eval()
            with torch.no_grad():
                row["val_loss"] = float(losses(va, False))
            if row["val_loss"] < best_val:
                best_val, best_epoch = row["val_loss"], epoch
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        history.append(row)
        log.info("%s epoch %d/%d train loss %.4f%s", tag, epoch, cfg.epochs, row["train_loss"],
                 f" val loss {row['val_loss']:.4f}" if "val_loss" in row else "")
        report(progress, p0 + (p1 - p0) * epoch / cfg.epochs, f"{tag} epoch {epoch}/{cfg.epochs}")
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    return net, history, best_epoch


def _predict(net, data: FusionData, idx: np.ndarray, tab: np.ndarray | None, device: str):
    import torch

    net.eval()
    pm, pc = [], []
    with torch.no_grad():
        for b in range(0, len(idx), 128):
            ii = idx[b:b + 128]
            x = torch.from_numpy(data.images[ii, 0]).unsqueeze(1).to(device)
            t = None if tab is None else torch.from_numpy(tab[ii]).to(device)
            lb, lc = net(x, t)
            pm.append(torch.softmax(lb, 1)[:, 1].cpu().numpy())
            pc.append(torch.softmax(lc, 1).cpu().numpy())
    if not pm:
        return np.zeros(0), np.zeros((0, net.head_class.out_features))
    return np.concatenate(pm).astype(float), np.concatenate(pc).astype(float)


def _evaluate(y: np.ndarray, labels: np.ndarray, p: np.ndarray, pc: np.ndarray, classes: list[str],
              threshold: float) -> dict[str, Any]:
    from ..evaluation import multiclass_auc, roc_auc_ci, threshold_metrics

    out: dict[str, Any] = {"n": int(len(y)), "n_malignant": int(y.sum())}
    try:
        out["binary_auc"] = roc_auc_ci(y, p).as_dict()
        out["binary_at_threshold"] = threshold_metrics(y, p, threshold)
    except InputError as e:  # e.g. a test split with one class only
        out["binary_auc"] = {"error": str(e)}
    known = np.isin(labels, classes)
    out["multiclass"] = {"n_unseen_class_cases": int((~known).sum())}
    if known.any():
        try:
            out["multiclass"].update(multiclass_auc(labels[known], pc[known], classes).as_dict())
        except InputError as e:
            out["multiclass"]["error"] = str(e)
        order = np.argsort(-pc[known], 1)
        truth = np.asarray([classes.index(c) for c in labels[known]])
        out["multiclass"]["accuracy_top1"] = float((order[:, 0] == truth).mean())
        from ..evaluation.multiclass import confusion_matrix

        out["multiclass"]["confusion"] = confusion_matrix(labels[known], [classes[j] for j in order[:, 0]], classes)
        out["multiclass"]["accuracy_top3"] = float((order[:, :3] == truth[:, None]).any(1).mean())
    return out


def train_fusion(data: FusionData, out_dir: str | Path, cfg: TrainConfig | None = None, *,
                 progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> dict[str, Any]:
    """Train the fusion model and its CT-only baseline; write both models + metrics to ``out_dir``.

    Layout: ``out_dir/<name>/`` and ``out_dir/<name>-ct-only/`` (safetensors + card each),
    ``metrics.json``, ``test_predictions.csv``, ``training_log.csv``, ``train_config.json``.
    Returns the metrics dict.
    """
    from .. import taxonomy
    from ..evaluation import delong_test, youden_threshold
    from ..fileio import atomic_path, atomic_write_json, provenance
    from ..models.card import ModelCard
    from .model_io import save_model

    cfg = cfg or TrainConfig()
    out_dir = Path(out_dir)
    from ..nn_common import pick_device

    device = pick_device(cfg.device)
    splits = make_splits(data, cfg.seed if cfg.split_seed is None else cfg.split_seed)
    if len(splits["train"]) < 4 or len(splits["test"]) < 2:
        raise InputError(f"too few cases to train and test (train {len(splits['train'])}, test {len(splits['test'])})")
    present = set(data.lesion_class[splits["train"]].tolist())
    classes = [c.name for c in taxonomy.LESION_CLASSES if c.name in present]
    if len(classes) < 2:
        raise InputError(f"the training split holds fewer than two lesion classes ({classes})")
    y_cls = np.asarray([classes.index(c) if c in classes else -1 for c in data.lesion_class])
    tr = splits["train"]
    schema = sch.fit_schema(data.ctc[tr].tolist(),
                            [None if math.isnan(a) else float(a) for a in data.age[tr]],
                            [s or None for s in data.sex[tr]], [s or None for s in data.site[tr]], cfg.inputs,
                            ctc_unit=cfg.ctc_unit)
    tab = _tabular(data, schema)
    log.info("training on %s: %d train / %d val / %d test cases, %d classes", device,
             len(tr), len(splits["val"]), len(splits["test"]), len(classes))

    fused, hist_f, ep_f = _fit(data, tab, y_cls, splits, classes, schema, cfg, device, "fusion",
                               progress, cancel, 0.0, 0.5)
    ct_only, hist_c, ep_c = _fit(data, None, y_cls, splits, classes, None, cfg, device, "ct-only",
                                 progress, cancel, 0.5, 1.0)

    # Threshold from validation, applied unchanged to test.
    va, te = splits["val"], splits["test"]
    thr = {}
    from ..evaluation import auc_score
    from ..evaluation.quality import poor_metric_warning

    val_auc, quality = {}, {}
    for tag, net, t in (("fusion", fused, tab), ("ct-only", ct_only, None)):
        thr[tag] = 0.5
        if len(va) and 0 < data.malignant[va].sum() < len(va):
            pv = _predict(net, data, va, t, device)[0]
            thr[tag] = youden_threshold(data.malignant[va], pv)
            val_auc[tag] = auc_score(data.malignant[va], pv)
        name = cfg.name if tag == "fusion" else cfg.ct_only_name
        quality[tag] = poor_metric_warning("auc", val_auc.get(tag), "validation benign/malignant", model=name)
    pf, pcf = _predict(fused, data, te, tab, device)
    pc, pcc = _predict(ct_only, data, te, None, device)
    y, labels = data.malignant[te], data.lesion_class[te]
    metrics: dict[str, Any] = {
        "split": "test (held out)",
        "fusion": _evaluate(y, labels, pf, pcf, classes, thr["fusion"]),
        "ct_only": _evaluate(y, labels, pc, pcc, classes, thr["ct-only"]),
    }
    try:
        metrics["delong_fusion_vs_ct_only"] = delong_test(y, pf, pc).as_dict()
    except InputError as e:
        metrics["delong_fusion_vs_ct_only"] = {"error": str(e)}
    from ..evaluation.multiclass import compare_multiclass_auc
    from ..evaluation.paired import mcnemar_paired

    try:  # the study's McNemar: paired sensitivity/specificity at each model's own threshold
        metrics["mcnemar_fusion_vs_ct_only"] = mcnemar_paired(y, (pf >= thr["fusion"]).astype(int),
                                                              (pc >= thr["ct-only"]).astype(int))
    except InputError as e:
        metrics["mcnemar_fusion_vs_ct_only"] = {"error": str(e)}
    known = np.isin(labels, classes)
    try:
        metrics["multiclass_auc_fusion_vs_ct_only"] = compare_multiclass_auc(labels[known], pcf[known], pcc[known],
                                                                             classes, n_boot=500, seed=cfg.seed)
    except InputError as e:
        metrics["multiclass_auc_fusion_vs_ct_only"] = {"error": str(e)}
    metrics["best_epoch"] = {"fusion": ep_f, "ct_only": ep_c}

    # ---------------------------------------------------------------- models + cards
    recipe = data.meta.get("roi") or roi_recipe(data.image_size)
    arch_common = {"image_branch": "torchvision RegNet (random init); the study cites a self-regulated RegNet, "
                                   "which this is not", "regnet": cfg.regnet,
                   "tab_hidden": cfg.tab_hidden, "fusion_hidden": cfg.fusion_hidden, "dropout": cfg.dropout,
                   "heads": {"binary": ["benign", "malignant"], "multiclass": "classes"}, "output": "softmax"}
    training = {"manifest": data.meta.get("manifest"), "manifest_sha256": data.meta.get("manifest_sha256"),
                "synthetic": bool(data.meta.get("synthetic", False)),
                "n_cases": {k: int(len(v)) for k, v in splits.items()},
                "class_counts_train": {c: int((data.lesion_class[tr] == c).sum()) for c in classes},
                "config": {**asdict(cfg), "device": device}}
    ct_dir, fu_dir = out_dir / cfg.ct_only_name, out_dir / cfg.name
    ct_card = ModelCard(
        name=cfg.ct_only_name, task="fusion-ct-only", weights_file="", demo=cfg.demo,
        architecture={**arch_common, "tabular_branch": None},
        preprocessing={"roi": recipe}, classes=classes, input_schema={"inputs": [], "features": []},
        training_data=training,
        metrics={"test": metrics["ct_only"], "best_epoch": ep_c, "threshold_from": "Youden on validation"},
        extra={"threshold": thr["ct-only"], "baseline_of": cfg.name, "val_auc": val_auc.get("ct-only"),
               **({"quality_warning": quality["ct-only"]} if quality["ct-only"] else {}),
               "loss": {"kind": cfg.loss, "beta": cfg.beta if cfg.loss == "neutral" else None}})
    ct_card_path = save_model(ct_only, ct_dir / f"{cfg.ct_only_name}.safetensors", ct_card)
    fu_card = ModelCard(
        name=cfg.name, task="fusion", weights_file="", demo=cfg.demo,
        architecture={**arch_common, "tabular_branch": f"FC {len(schema['features'])}→{cfg.tab_hidden}→{cfg.tab_hidden}"},
        preprocessing={"roi": recipe}, classes=classes, input_schema=schema, training_data=training,
        metrics={"test": metrics["fusion"], "ct_only_test": metrics["ct_only"],
                 "delong_fusion_vs_ct_only": metrics["delong_fusion_vs_ct_only"],
                 "mcnemar_fusion_vs_ct_only": metrics["mcnemar_fusion_vs_ct_only"],
                 "multiclass_auc_fusion_vs_ct_only": metrics["multiclass_auc_fusion_vs_ct_only"], "best_epoch": ep_f,
                 "threshold_from": "Youden on validation"},
        extra={"threshold": thr["fusion"], "val_auc": val_auc.get("fusion"),
               **({"quality_warning": quality["fusion"]} if quality["fusion"] else {}),
               "ct_only_model": {"name": cfg.ct_only_name, "sha256": ModelCard.load(ct_card_path).sha256,
                                 "card": f"../{cfg.ct_only_name}/{ct_card_path.name}"},
               "loss": {"kind": cfg.loss, "beta": cfg.beta if cfg.loss == "neutral" else None}})
    save_model(fused, fu_dir / f"{cfg.name}.safetensors", fu_card)

    # ---------------------------------------------------------------- logs
    metrics["classes"] = classes
    metrics["provenance"] = provenance(device=device)
    atomic_write_json(out_dir / "metrics.json", metrics)
    atomic_write_json(out_dir / "train_config.json", {**asdict(cfg), "device": device})
    with atomic_path(out_dir / "training_log.csv") as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["model", "epoch", "train_loss", "val_loss"])
        w.writeheader()
        w.writerows(hist_f + hist_c)
    # test_predictions.csv (held-out) and val_predictions.csv (the validation split the thresholds
    # came from; same columns, so evaluate --threshold-from val_predictions.csv runs as written)
    vf, vcf = _predict(fused, data, va, tab, device) if len(va) else (np.zeros(0), np.zeros((0, len(classes))))
    vc, vcc = _predict(ct_only, data, va, None, device) if len(va) else (np.zeros(0), np.zeros((0, len(classes))))
    for fname, idx, (p1, c1, p2, c2) in (("test_predictions.csv", te, (pf, pcf, pc, pcc)),
                                         ("val_predictions.csv", va, (vf, vcf, vc, vcc))):
        with atomic_path(out_dir / fname) as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["case_id", "lesion_class", "malignant", "p_malignant_fusion", "p_malignant_ct_only",
                        "top_class_fusion", "top_class_ct_only", "top3_fusion", "top3_ct_only"])
            for k, i in enumerate(idx):
                t3f = "|".join(classes[j] for j in np.argsort(-c1[k])[:3])
                t3c = "|".join(classes[j] for j in np.argsort(-c2[k])[:3])
                w.writerow([data.case_id[i], data.lesion_class[i], int(data.malignant[i]), f"{p1[k]:.6f}",
                            f"{p2[k]:.6f}", classes[int(c1[k].argmax())], classes[int(c2[k].argmax())], t3f, t3c])
    report(progress, 1.0, "done")
    return metrics


REPEAT_FIGURES = {
    "fusion_binary_auc": ("fusion", "binary_auc", "auc"), "ct_only_binary_auc": ("ct_only", "binary_auc", "auc"),
    "fusion_macro_auc": ("fusion", "multiclass", "macro_auc"), "ct_only_macro_auc": ("ct_only", "multiclass", "macro_auc"),
    "fusion_top1_accuracy": ("fusion", "multiclass", "accuracy_top1"),
    "fusion_top3_accuracy": ("fusion", "multiclass", "accuracy_top3"),
    "fusion_sensitivity": ("fusion", "binary_at_threshold", "sensitivity", "value"),
    "fusion_specificity": ("fusion", "binary_at_threshold", "specificity", "value"),
    "ct_only_sensitivity": ("ct_only", "binary_at_threshold", "sensitivity", "value"),
    "ct_only_specificity": ("ct_only", "binary_at_threshold", "specificity", "value"),
}


def _dig(d: Any, path: tuple[str, ...]) -> float:
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return float("nan")
        d = d[k]
    return float(d) if isinstance(d, (int, float)) else float("nan")


def summarise_repeats(runs: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """Mean ± sample SD (ddof = 1) over repeated runs of the held-out figures."""
    out: dict[str, Any] = {"seeds": list(seeds), "n_runs": len(runs), "sd": "sample (ddof=1)", "figures": {}}
    for name, path in REPEAT_FIGURES.items():
        vals = np.array([_dig(r, path) for r in runs], float)
        ok = vals[np.isfinite(vals)]
        out["figures"][name] = {"values": vals.tolist(), "mean": float(ok.mean()) if ok.size else float("nan"),
                                "sd": float(ok.std(ddof=1)) if ok.size > 1 else float("nan")}
    return out


def train_repeated(data: FusionData, out_dir: str | Path, cfg: TrainConfig | None = None, repeats: int = 3, *,
                   progress: ProgressCallback | None = None, cancel: CancelToken | None = None) -> dict[str, Any]:
    """The study's "repeated 3 times": train with seeds ``cfg.seed, cfg.seed+1, …`` on the same
    splits; the first run's models are the ones kept in ``out_dir`` (the others under
    ``out_dir/repeats/seed_<s>/``); ``repeats.json`` and both cards get mean ± SD of the
    held-out figures. Returns the first run's metrics with ``"repeats"`` added."""
    from dataclasses import replace

    from ..fileio import atomic_write_json
    from ..models.card import ModelCard

    cfg = cfg or TrainConfig()
    if repeats < 1:
        raise InputError(f"repeats must be ≥ 1, got {repeats}")
    out_dir = Path(out_dir)
    seeds = [cfg.seed + i for i in range(repeats)]
    split_seed = cfg.seed if cfg.split_seed is None else cfg.split_seed
    runs = []
    for i, s in enumerate(seeds):
        rcfg = replace(cfg, seed=s, split_seed=split_seed)
        where = out_dir if i == 0 else out_dir / "repeats" / f"seed_{s}"
        p0, p1 = i / repeats, (i + 1) / repeats

        def prog(f: float, msg: str, p0: float = p0, p1: float = p1, s: int = s) -> None:
            report(progress, p0 + (p1 - p0) * f, f"seed {s}: {msg}")

        runs.append(train_fusion(data, where, rcfg, progress=prog, cancel=cancel))
    summary = summarise_repeats(runs, seeds)
    summary["kept"] = f"seed {seeds[0]} (models in {out_dir})"
    atomic_write_json(out_dir / "repeats.json", summary)
    for name in (cfg.name, cfg.ct_only_name):
        p = out_dir / name / f"{name}.model.json"
        card = ModelCard.load(p)
        card.metrics = {**card.metrics, "repeats": summary}
        card.save(p)
    first = runs[0]
    first["repeats"] = summary
    return first
