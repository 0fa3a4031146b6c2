"""``mediastinal-ai train-fusion``: train the DMFN fusion model and its CT-only baseline."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", help="cohort manifest CSV (ct, mask, lesion_class, malignant, ctc; age/sex/lesion_site optional)")
    p.add_argument("--out", required=True, help="output folder (two model folders, metrics.json, logs)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--image-size", type=int, default=224, help="ROI size in pixels (default 224)")
    p.add_argument("--device", default="auto", help="auto (GPU when present), cpu, cuda")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--loss", choices=("neutral", "ce"), default="neutral",
                   help="the study's 'neutral cross-entropy' (default; implemented as CE − β·H(p)) or plain cross-entropy")
    p.add_argument("--repeats", type=int, default=3,
                   help="train with this many seeds on the same splits and report mean ± SD (default 3, as published); "
                        "the first seed's models are kept")
    p.add_argument("--ctc-unit", default=None,
                   help="unit of your CTC assay, written into the model card and shown at prediction "
                        "(default: the study's printed label, pg/ml)")
    p.add_argument("--denoise", action="store_true",
                   help="fourth-order PDE (You-Kaveh) denoising of the ROI slices before the window, as in the study")
    p.add_argument("--isotropic", action="store_true",
                   help="reconstruct the tumor's slab to cubic voxels before the ROI, as in the study")
    p.add_argument("--beta", type=float, default=0.1, help="entropy weight β of the 'neutral' loss")
    p.add_argument("--regnet", default="regnet_y_400mf",
                   help="image branch: a torchvision RegNet preset (regnet_y_400mf, ...) or 'tiny' (6-block RegNetY, demo)")
    p.add_argument("--ctc-only", action="store_true", help="tabular branch on CTC alone (no age/sex/site)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--name", default="fusion-dmfn", help="model name (the CT-only baseline is <name>-ct-only)")
    p.add_argument("--demo", action="store_true", help="mark the models as demo models (not for clinical use)")
    p.add_argument("--roi-cache", help="ROI arrays .npz: read if it exists (then --manifest may be omitted), "
                   "else written after extraction")


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..progress import cli_progress
    from ..taxonomy import CTC_UNIT
    from .data import FusionData, from_manifest, roi_recipe
    from .net import TINY_REGNET
    from .train import TrainConfig, train_repeated

    if args.repeats < 1:
        raise InputError("--repeats must be ≥ 1")
    recipe = roi_recipe(args.image_size, denoise=True if args.denoise else None, isotropic=args.isotropic)

    cache = Path(args.roi_cache) if args.roi_cache else None
    if cache is not None and cache.is_file():
        data = FusionData.load(cache)
        if data.image_size != args.image_size:
            raise InputError(f"ROI cache holds {data.image_size}-pixel ROIs, --image-size is {args.image_size}", cache)
        if args.manifest:
            from ..fileio import sha256_file

            if data.meta.get("manifest_sha256") != sha256_file(args.manifest):
                raise InputError("ROI cache was made from another manifest (sha256 differs); delete it", cache)
        cached = {k: v for k, v in (data.meta.get("roi") or {}).items() if k in ("denoise", "isotropic")}
        wanted = {"denoise": recipe["denoise"], "isotropic": recipe["isotropic"]}
        if {k: cached.get(k, None if k == "denoise" else False) for k in wanted} != wanted:
            raise InputError(f"ROI cache was made with other preprocessing ({cached}) than asked ({wanted}); "
                             "delete it or drop --denoise/--isotropic", cache)
        log.info("read %d cases from ROI cache %s", len(data), cache)
    else:
        if not args.manifest:
            raise InputError("--manifest is required (no ROI cache to read)")
        with cli_progress("ROIs") as bar:
            data = from_manifest(args.manifest, args.image_size, progress=bar, recipe=recipe)
        if cache is not None:
            data.save(cache)
    regnet = dict(TINY_REGNET) if args.regnet == "tiny" else {"preset": args.regnet}
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, loss=args.loss, beta=args.beta,
                      regnet=regnet, seed=args.seed, device=args.device, name=args.name, demo=args.demo,
                      inputs=("ctc",) if args.ctc_only else ("ctc", "age", "sex", "lesion_site"),
                      ctc_unit=args.ctc_unit or CTC_UNIT)
    with cli_progress("train-fusion") as bar:
        m = train_repeated(data, args.out, cfg, args.repeats, progress=bar)

    def line(tag: str, r: dict) -> str:
        a = r["binary_auc"]
        auc = f"AUC {a['auc']:.3f} (95% CI {a['ci_low']:.3f}–{a['ci_high']:.3f})" if "auc" in a else a.get("error", "")
        return f"{tag:<18} benign/malignant {auc}; multi-class macro AUC {r['multiclass'].get('macro_auc', float('nan')):.3f}"

    print(f"held-out test cases: {m['fusion']['n']} ({m['fusion']['n_malignant']} malignant)")
    print(line("fusion (CT + CTC)", m["fusion"]))
    print(line("CT only", m["ct_only"]))
    d = m["delong_fusion_vs_ct_only"]
    print("paired DeLong fusion vs CT-only: " + (f"z = {d['z']:.2f}, p = {d['p']:.3g}" if "p" in d else d["error"]))
    rep = m.get("repeats", {})
    if rep.get("n_runs", 1) > 1:
        f = rep["figures"]
        print(f"repeated {rep['n_runs']} times (seeds {rep['seeds']}), mean ± SD: "
              f"fusion AUC {f['fusion_binary_auc']['mean']:.3f} ± {f['fusion_binary_auc']['sd']:.3f}, "
              f"CT-only AUC {f['ct_only_binary_auc']['mean']:.3f} ± {f['ct_only_binary_auc']['sd']:.3f}; "
              f"kept: {rep['kept']}")
    from ..models.card import ModelCard

    for name in (cfg.name, cfg.ct_only_name):
        w = ModelCard.load(Path(args.out) / name / f"{name}.model.json").extra.get("quality_warning")
        if w:
            print(f"WARNING: {w}")
    print(f"models and metrics in {args.out}")
    log.debug(json.dumps(m, default=str)[:2000])
    return 0
