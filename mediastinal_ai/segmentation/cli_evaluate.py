"""``mediastinal-ai evaluate-seg``: voxel and lesion-wise (FROC) evaluation of predicted masks."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--manifest", required=True, help="manifest with the true 'mask' column")
    p.add_argument("--predictions", required=True,
                   help="folder with <case_id>/mask.nrrd (as written by 'segment' or 'run'), or <case_id>.nrrd/.nii.gz")
    p.add_argument("--out", required=True, help="output folder: per_case.csv, froc.csv, froc.png, summary.json")


def _find_pred(folder, case_id):
    from pathlib import Path

    folder = Path(folder)
    for cand in (folder / case_id / "mask.nrrd", folder / "cases" / case_id / "mask.nrrd",
                 folder / f"{case_id}.nrrd", folder / f"{case_id}.nii.gz"):
        if cand.is_file():
            return cand
    return None


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from ..cohort import read_manifest
    from ..errors import InputError
    from ..fileio import atomic_path, atomic_write_json, provenance
    from ..io import read_ct, read_mask
    from .metrics import froc, lesion_counts, voxel_metrics

    out = Path(args.out)
    rows, counts, missing = [], [], []
    for c in read_manifest(args.manifest):
        if c.mask is None:
            continue
        pred_path = _find_pred(args.predictions, c.case_id)
        if pred_path is None:
            missing.append(c.case_id)
            continue
        ct = read_ct(c.ct)
        truth = read_mask(c.mask, ct, allow_empty=True).array
        pred = read_mask(pred_path, ct, allow_empty=True).array
        rows.append({"case_id": c.case_id, **voxel_metrics(pred, truth)})
        counts.append(lesion_counts(pred, truth))
    if not rows:
        raise InputError("no predicted masks found for the manifest's cases", args.predictions)
    df = pd.DataFrame(rows)
    fr = pd.DataFrame(froc(counts))
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "per_case.csv") as tmp:
        df.to_csv(tmp, index=False)
    with atomic_path(out / "froc.csv") as tmp:
        fr.to_csv(tmp, index=False)
    synthetic = bool(rows) and all(bool(c.synthetic) for c in read_manifest(args.manifest)
                                   if c.case_id in set(df["case_id"]))
    _plot_froc(fr, out / "froc.png", synthetic=synthetic)
    summary = {k: {"mean": float(np.nanmean(df[k])), "sd": float(np.nanstd(df[k], ddof=1)) if df[k].notna().sum() > 1 else float("nan")}
               for k in ("dice", "iou", "precision", "recall")}
    summary.update(cases=len(df), missing_predictions=missing,
                   lesion_wise={f"t={r.iou_threshold:.2f}": {"sensitivity": r.sensitivity, "fp_per_scan": r.fp_per_scan}
                                for r in fr.itertuples() if r.iou_threshold in (0.1, 0.15, 0.5)})
    atomic_write_json(out / "summary.json", {**summary, **provenance()})
    print(df.describe().loc[["mean", "std"]].round(3).to_string())
    print(fr[["iou_threshold", "sensitivity", "fp_per_scan"]].round(3).to_string(index=False))
    if missing:
        print(f"no prediction for {len(missing)} case(s): {', '.join(missing[:10])}")
    return 0


def _plot_froc(fr, path, synthetic: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..fileio import atomic_path

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(fr["fp_per_scan"], fr["sensitivity"], "o-")
    for r in fr.itertuples():
        if r.iou_threshold in (0.05, 0.5, 0.95):
            ax.annotate(f"IoU≥{r.iou_threshold:.2f}", (r.fp_per_scan, r.sensitivity), fontsize=7)
    ax.set_xlabel("false positives per scan")
    ax.set_ylabel("lesion sensitivity")
    ax.set_ylim(0, 1.02)
    ax.set_title("FROC (lesion-wise, one-to-one IoU matching)")
    from ..evaluation.plots import mark_text, stamp

    stamp(fig, mark_text(synthetic=synthetic))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
    plt.close(fig)
