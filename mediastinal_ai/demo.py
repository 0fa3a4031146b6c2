"""``mediastinal-ai demo``: the whole product on built-in synthetic data, in a few minutes on CPU.

It generates held-out synthetic chest CTs (seeds far from those the demo models were trained
on), runs the batch pipeline over them — segmentation, radiomics and CNN WHO risk, CT+CTC
fusion, report — and, when the MRML adapter (slicer-core) is installed, builds a Slicer scene
per case with the CT, the editable tumor segment, the probability map and result tables.
Finally it prints predictions beside the synthetic ground truth. Demo models are not for
clinical use; the data is synthetic.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)
DEMO_SEED = 90_000  # far from the training seeds of the demo models (see their model cards)
ALL_STEPS = ["segment", "radiomics", "cnn", "fusion", "report"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    p.add_argument("--cases", type=int, default=2, help="number of synthetic cases (default 2)")
    p.add_argument("--seed", type=int, default=DEMO_SEED)
    p.add_argument("--steps", default=",".join(ALL_STEPS), help="pipeline steps (default: all)")
    p.add_argument("--no-scene", action="store_true", help="skip the Slicer scene even if slicer-core is installed")


def _available(steps: list[str]) -> list[str]:
    """Keep the steps whose model is installed; say which are skipped and why."""
    import importlib.util

    from .batch.steps import STEPS
    from .errors import MediastinalAIError
    from .models import resolve

    keep = []
    for s in steps:
        if s == "report" and importlib.util.find_spec("mediastinal_ai.evaluation.report") is None:
            print("step 'report' skipped: the report module is not in this build")
            continue
        task = STEPS[s].task if s in STEPS else None
        try:
            if task:
                resolve(None, task=task)
            keep.append(s)
        except MediastinalAIError as e:
            print(f"step {s!r} skipped: {e}")
    return keep


def _mrml_available() -> bool:
    try:
        import mediastinal_ai.mrml.batch  # noqa: F401
    except ImportError as e:
        log.warning("MRML adapter not available (%s): no Slicer scene will be written", e)
        return False
    return True


def run(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from . import SYNTHETIC_LABEL
    from .batch import RunConfig, discover, run_cohort
    from .synthetic import generate_cohort

    out = Path(args.out)
    print(f"MediastinalAI demo — {SYNTHETIC_LABEL}; demo models are not for clinical use")
    manifest = generate_cohort(args.cases, out / "data", seed=args.seed)
    print(f"synthetic cases: {manifest}")
    steps = [s for s in args.steps.split(",") if s]
    steps = _available(steps)
    params: dict = {"threshold": 0.5, "device": "auto"}
    if not args.no_scene and _mrml_available():
        steps.append("scene")
        params["plugins"] = ["mediastinal_ai.mrml.batch"]
    rows = run_cohort(discover(manifest), out / "results", RunConfig(steps=steps, params=params, workers=0))

    from .cohort import read_manifest
    from .io import read_image

    truth = {c.case_id: c for c in read_manifest(manifest)}
    failed = 0
    for r in rows:
        cid = r["case_id"]
        print(f"\n== {cid}: {r['status']}" + (f" — {r['error']}" if r.get("error") else ""))
        if r["status"] not in ("ok", "skipped"):
            failed += 1
            continue
        t = truth.get(cid)
        case_dir = out / "results" / "cases" / cid
        if t is not None and t.mask is not None and (case_dir / "mask.nrrd").is_file():
            pred = read_image(case_dir / "mask.nrrd").array > 0
            gt = read_image(t.mask).array > 0
            dice = 2 * np.logical_and(pred, gt).sum() / max(1, pred.sum() + gt.sum())
            print(f"   segmentation: Dice vs synthetic ground truth {dice:.3f}")
        shown = {k: v for k, v in r.items() if k not in ("case_id", "status", "error", "error_type", "fingerprint",
                                                         "steps", "synthetic")}
        print("   " + json.dumps(shown, default=str))
        if t is not None:
            print(f"   truth (synthetic): class={t.lesion_class} malignant={t.malignant} who_risk={t.who_risk} "
                  f"ctc={t.ctc}")
        for f in sorted(case_dir.rglob("*")):
            if f.suffix in (".mrml", ".mrb", ".html", ".pdf"):
                print(f"   {f.suffix[1:]}: {f}")
    print(f"\ncohort table: {out / 'results' / 'results.csv'}")
    return 1 if failed else 0
