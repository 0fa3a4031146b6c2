"""``mediastinal-ai seg-stats``: the segmentation study's statistics on the per-case table of
``evaluate-seg`` (``per_case.csv``): mean ± SD (sample SD) with 95% CIs of Dice/IoU/precision/
recall, subgroup tables by tumor size (> 8, 5–8, < 5 cm), scanner vendor and histology, and the
top- vs bottom-10% Dice failure analysis on shape / first-order features (Mann–Whitney U)."""

from __future__ import annotations

import argparse

METRICS = ("dice", "iou", "precision", "recall")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--per-case", required=True, help="per_case.csv from 'evaluate-seg' (case_id + metric columns)")
    p.add_argument("--manifest", help="cohort manifest: adds its columns (lesion_class = histology, diameter_mm, "
                   "vendor, …) by case_id; the vendor is read from DICOM headers when the CT is a DICOM folder")
    p.add_argument("--metrics", nargs="*", default=list(METRICS), help="metric columns (default dice iou precision recall)")
    p.add_argument("--by", nargs="*", default=["size_group", "vendor", "lesion_class"],
                   help="subgroup columns (size_group is made from diameter_mm; default size_group vendor lesion_class)")
    p.add_argument("--features", metavar="CSV", help="feature table (case_id + shape/first-order features, e.g. from "
                   "extract-radiomics) for the top- vs bottom-10%% Dice failure analysis")
    p.add_argument("--feature-cols", nargs="*", default=None,
                   help="feature columns to compare (default: every shape and firstorder column of --features)")
    p.add_argument("--out", required=True, help="output folder: seg_stats.json, seg_summary.csv, seg_subgroups.csv, "
                   "seg_failure.csv")


def _vendor(ct_path) -> str:
    from pathlib import Path

    from .segstats import vendor_of

    p = Path(ct_path)
    files = sorted(p.glob("*")) if p.is_dir() else [p] if p.suffix.lower() in (".dcm", "") else []
    for f in files[:5]:
        if f.is_file():
            try:
                return vendor_of(str(f))
            except Exception:  # noqa: BLE001 - not DICOM: try the next file, else "unknown"
                continue
    return "unknown"


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import pandas as pd

    from ..errors import InputError
    from ..fileio import atomic_path, atomic_write_json, provenance
    from .segstats import failure_analysis, size_group, subgroup_table, summary_table

    try:
        df = pd.read_csv(args.per_case)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read the per-case table: {e}", args.per_case) from e
    if "case_id" not in df.columns:
        raise InputError("the per-case table has no case_id column", args.per_case)
    if args.manifest:
        from ..cohort import read_manifest

        rows = []
        for c in read_manifest(args.manifest):
            r = {"case_id": c.case_id, "lesion_class": c.lesion_class or "unknown", **c.extra}
            if "vendor" not in c.extra:
                r["vendor"] = _vendor(c.ct)
            rows.append(r)
        df = df.merge(pd.DataFrame(rows), on="case_id", how="left", suffixes=("", "_manifest"))
    if "diameter_mm" in df.columns and "size_group" not in df.columns:
        df["size_group"] = pd.to_numeric(df["diameter_mm"], errors="coerce").map(size_group)
    out: dict = {"n": int(len(df)), "summary": summary_table(df, list(args.metrics)), "subgroups": {},
                 "sd": "sample (ddof=1)"}
    for by in args.by:
        if by in df.columns:
            out["subgroups"][by] = subgroup_table(df, list(args.metrics), by)
        else:
            out["subgroups"][by] = f"column {by!r} not available (add it to the manifest)"
    if args.features:
        try:
            feats = pd.read_csv(args.features) if not args.features.endswith(".parquet") else pd.read_parquet(args.features)
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read the feature table: {e}", args.features) from e
        if "reader" in feats.columns:
            feats = feats[feats["reader"].astype(str) == "1"]
        cols = args.feature_cols or [c for c in feats.columns if "shape" in c or "firstorder" in c]
        merged = df.merge(feats[["case_id", *cols]], on="case_id", how="inner")
        out["failure_analysis"] = failure_analysis(merged, "dice", cols)
    d = Path(args.out)
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_json(d / "seg_stats.json", {**out, **provenance()})
    with atomic_path(d / "seg_summary.csv") as tmp:
        pd.DataFrame(out["summary"]).to_csv(tmp, index=False)
    sub = [r for v in out["subgroups"].values() if isinstance(v, list) for r in v]
    with atomic_path(d / "seg_subgroups.csv") as tmp:
        pd.DataFrame(sub).to_csv(tmp, index=False)
    if "failure_analysis" in out:
        with atomic_path(d / "seg_failure.csv") as tmp:
            pd.DataFrame(out["failure_analysis"]["features"]).to_csv(tmp, index=False)
    for r in out["summary"]:
        print(f"{r['metric']}: {r['mean']:.3f} ± {r['sd']:.3f} (95% CI {r['ci_low']:.3f}–{r['ci_high']:.3f}, "
              f"n = {r['n']}){'; caution: ' + r['caveat'] if r.get('caveat') else ''}")
    for by, v in out["subgroups"].items():
        if isinstance(v, str):
            print(f"subgroups by {by}: {v}")
    print(f"written to {d}")
    return 0
