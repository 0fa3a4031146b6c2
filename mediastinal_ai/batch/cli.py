"""``mediastinal-ai run``: the batch pipeline over a cohort."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", "-i", required=True, nargs="+",
                   help="DICOM folder, image file(s) or folder of NIfTI/NRRD/MHA files, or a manifest CSV")
    p.add_argument("--out", "-o", required=True, help="output folder (everything is written inside it)")
    p.add_argument("--steps", default="segment",
                   help="comma-separated steps: qc,segment,radiomics,cnn,fusion,dicom-sr,report (default: segment)")
    p.add_argument("--workers", type=int, default=None,
                   help="Dask worker processes on this machine (default: number of cores; 0 = plain loop, no Dask)")
    p.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler, e.g. tcp://host:8786")
    for task, flag in (("segmentation", "seg"), ("risk-radiomics", "radiomics"), ("risk-cnn", "cnn"),
                       ("fusion", "fusion")):
        p.add_argument(f"--{flag}-model", dest=f"model_{flag}", default=None,
                       help=f"{task} model name or card path (default: the built-in demo model)")
    p.add_argument("--threshold", type=float, default=0.5, help="segmentation probability threshold")
    p.add_argument("--risk-mask", choices=["auto", "manifest", "predicted"], default=None,
                   help="tumor mask of the radiomics/cnn/fusion steps: 'predicted' by the segment step, the "
                        "manifest's 'mask' column, or 'auto' (default): predicted when segment is among the "
                        "steps, else the manifest's; --dry-run shows which")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--force", action="store_true", help="recompute cases even when their outputs are up to date")
    p.add_argument("--dry-run", action="store_true", help="list cases and what would run, then stop")
    p.add_argument("--dicom-sr", action="store_true",
                   help="add the dicom-sr step: a DICOM SR (TID 1500) per DICOM case, referencing its DICOM SEG")
    p.add_argument("--mrb", action="store_true", help="with the 'scene' step: also write a one-file .mrb per case")
    # Modules that register extra steps (the headless Slicer script adds the MRML 'scene' step).
    p.add_argument("--plugin", action="append", default=[], help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    import importlib
    import os

    from .discover import discover
    from .engine import RunConfig, fingerprint, read_case_record, run_cohort
    from .steps import order_steps, resolve_models

    for plugin in args.plugin:
        importlib.import_module(plugin)
    names = [s.strip() for s in args.steps.split(",") if s.strip()]
    if getattr(args, "dicom_sr", False) and "dicom-sr" not in names:
        names.append("dicom-sr")
    steps = order_steps(names)
    models = {t: getattr(args, f"model_{f}") for t, f in (("segmentation", "seg"), ("risk-radiomics", "radiomics"),
                                                          ("risk-cnn", "cnn"), ("fusion", "fusion"))
              if getattr(args, f"model_{f}")}
    if not 0.0 < args.threshold < 1.0:  # checked before any case runs, not after inference
        from ..errors import InputError

        raise InputError(f"--threshold must be between 0 and 1 (exclusive), got {args.threshold:g}")
    params = {"models": models, "threshold": args.threshold, "device": args.device}
    from .steps import risk_mask_plan

    mask_plan = risk_mask_plan(steps, getattr(args, "risk_mask", None))  # refuses 'predicted' without segment
    if getattr(args, "risk_mask", None):
        params["risk_mask"] = args.risk_mask
    if args.plugin:
        params["plugins"] = list(args.plugin)
    if args.mrb:
        params["mrb"] = True
    workers = (os.cpu_count() or 1) if args.workers is None else args.workers
    cfg = RunConfig(steps=steps, params=params, workers=workers, scheduler=args.scheduler, force=args.force)
    cases = discover(args.input)
    if args.dry_run:
        resolved = resolve_models(steps, params)
        shas = {t: m.card.sha256 for t, m in resolved.items()}
        for t, m in resolved.items():
            print(f"model {t}: {m.label}")
        if mask_plan:
            print(f"tumor mask: {mask_plan}")
        manifest_masks = bool(mask_plan) and "manifest's" in mask_plan
        from pathlib import Path

        for c in cases:
            if c.error:
                state = f"will fail: {c.error}"
            elif manifest_masks and not c.mask:
                state = "will fail: no 'mask' in the manifest for the risk steps"
            else:
                old = read_case_record(Path(args.out), c.case_id)
                up_to_date = old and not args.force and old.get("fingerprint") == fingerprint(c, cfg, shas)
                state = "up to date (skip)" if up_to_date else "will run"
            print(f"{c.case_id:<40} {state:<20} {c.ct}")
        print(f"{len(cases)} case(s); steps: {','.join(steps)}; "
              + (f"scheduler {args.scheduler}" if args.scheduler else f"{workers} worker(s)"))
        return 0
    if mask_plan:
        log.info("tumor mask: %s", mask_plan)
    rows = run_cohort(cases, args.out, cfg)
    ok = sum(r["status"] == "ok" for r in rows)
    skipped = sum(r["status"] == "skipped" for r in rows)
    failed = [r for r in rows if r["status"] == "failed"]
    print(f"{len(rows)} case(s): {ok} ok, {skipped} skipped (up to date), {len(failed)} failed")
    for r in failed:
        print(f"  FAILED {r['case_id']}: {r['error']}")
    print(f"results: {args.out}/results.csv")
    _write_joined_predictions(args.input, args.out)
    return 1 if failed else 0


def _write_joined_predictions(inputs: list[str], out: str) -> None:
    """On a manifest: ``<out>/predictions.csv`` = the scores joined with the manifest's labels, in the
    form ``evaluate`` takes (results.csv carries no labels). Nothing when no step gave a score."""
    from pathlib import Path

    from ..errors import InputError
    from ..evaluation.join import evaluate_hint, join_predictions, write_predictions

    manifests = [i for i in inputs if str(i).lower().endswith(".csv") and Path(i).is_file()]
    if len(manifests) != 1:
        return
    try:
        rows, note = join_predictions(manifests[0], out)
    except InputError as e:
        log.debug("no joined predictions table: %s", e)
        return
    path = write_predictions(rows, Path(out) / "predictions.csv")
    print(f"predictions with the manifest's labels: {path} ({note['n_joined']} case(s))\n"
          f"  next: {evaluate_hint(note, path)}")
