"""Issue 14: is the demo plan's HU window better than the study's dataset min-max rescaling?

Trains the demo configuration twice from scratch — identical seed, data, patches and schedule —
once with ``intensity: window`` (clip to [-200, 300] HU) and once with ``intensity:
dataset_minmax`` (the training set's minimum and maximum HU, stored in the plan), and evaluates
both on the held-out synthetic test split (and, with ``--real-test``, on held-out real
backgrounds). The demo keeps the window only if this says it is better.

    .venv/bin/python benchmarks/segmentation_intensity_scaling.py --work /tmp/segscale --epochs 30 \\
        --json benchmarks/results/segmentation_intensity_scaling.json [--real-test /tmp/segdemo/on_real_test/manifest.csv]

Synthetic data (SYNTHETIC cohort ``generate_cohort(48, seed=1000)``); demo-size network on CPU.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/segscale")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--real-test", default=None, help="manifest of held-out real backgrounds (make_demo_segmentation)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    import make_demo_segmentation as tool

    from mediastinal_ai.segmentation.plan import load_config
    from mediastinal_ai.segmentation.train import train
    from mediastinal_ai.synthetic import generate_cohort

    work = Path(a.work)
    manifest = work / "cohort" / "manifest.csv"
    if not manifest.is_file():
        manifest = generate_cohort(48, work / "cohort", seed=1000)
    base = load_config("segmentation_demo")
    base["training"].pop("intensity_augmentation", None)  # compare the scalings alone
    out = {"what": __doc__.split("\n\n")[0], "data": "SYNTHETIC cohort generate_cohort(48, seed=1000)",
           "epochs": a.epochs, "seed": 0, "arms": {}}
    for arm in ("window", "dataset_minmax"):
        cfg = copy.deepcopy(base)
        cfg["plan"]["intensity"] = arm
        t0 = time.perf_counter()
        summary = train(manifest, work / arm, cfg, epochs=a.epochs, device="cpu", name=f"scale-{arm}", demo=True, seed=0)
        res = {"train_seconds": round(time.perf_counter() - t0, 1), "best_val_dice": round(summary["best_val_dice"], 4),
               "hu_range": json.loads((work / arm / f"scale-{arm}.model.json").read_text())["preprocessing"]["plan"]["hu_window"],
               "synthetic_test": tool.evaluate(manifest, work / arm, device="cpu")}
        if a.real_test:
            res["real_held_out"] = tool.evaluate_real(Path(a.real_test), work / arm, device="cpu")
        out["arms"][arm] = res
        print(arm, json.dumps({k: res[k] for k in ("best_val_dice", "hu_range")}),
              "test Dice", res["synthetic_test"]["dice_mean"], flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
