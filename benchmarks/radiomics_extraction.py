"""Benchmark: cohort radiomics extraction, our parallel extractor vs a plain sequential loop.

Both arms use the same parameter file, the same cases (a SYNTHETIC cohort generated here)
and the same machine, one run each:

* sequential: for each case, read CT and mask with SimpleITK, clip to the window with
  ``sitk.Clamp``, call ``RadiomicsFeatureExtractor(params).execute`` — what a user would write;
* ours: :func:`mediastinal_ai.radiomics.extract_cohort` with a process pool (fresh cache).

Reports wall time, cases/min (a "case" = one CT + one mask) and peak resident memory
(this process, and the largest child process). Usage::

    .venv/bin/python benchmarks/radiomics_extraction.py --cases 16 --params demo --workers 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=16)
    ap.add_argument("--params", default="demo", help="'demo', 'paper' or a YAML path")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=9000)
    ap.add_argument("--cohort", default=None, help="reuse an existing manifest instead of generating")
    ap.add_argument("--json", default=None, help="write the figures here too")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import SimpleITK as sitk
    import yaml
    from radiomics import featureextractor

    from mediastinal_ai import taxonomy
    from mediastinal_ai.cohort import read_manifest
    from mediastinal_ai.radiomics.extract import extract_cohort
    from mediastinal_ai.radiomics.params import load_params, pyradiomics_params, window_range
    from mediastinal_ai.synthetic import generate_cohort

    tmp = Path(tempfile.mkdtemp(prefix="radbench-"))
    try:
        manifest = Path(args.cohort) if args.cohort else generate_cohort(
            args.cases, tmp / "cohort", seed=args.seed, classes=list(taxonomy.WHO_LOW + taxonomy.WHO_HIGH))
        cases = read_manifest(manifest)[: args.cases]
        p = load_params(args.params)
        yml = tmp / "params.yaml"
        yml.write_text(yaml.safe_dump(pyradiomics_params(p)))
        lo, hi = window_range(p)
        logging.getLogger("radiomics").setLevel(logging.ERROR)

        t0 = time.perf_counter()
        n_feat = 0
        for c in cases:
            ex = featureextractor.RadiomicsFeatureExtractor(str(yml))
            img = sitk.Clamp(sitk.ReadImage(str(c.ct), sitk.sitkFloat32), sitk.sitkFloat32, lo, hi)
            res = ex.execute(img, sitk.ReadImage(str(c.mask)), label=1)
            n_feat = sum(not k.startswith("diagnostics") for k in res)
        t_seq = time.perf_counter() - t0
        rss_seq_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        t0 = time.perf_counter()
        out = extract_cohort(manifest, tmp / "ours", p, readers=("1",), workers=args.workers,
                             case_ids=[c.case_id for c in cases])
        t_par = time.perf_counter() - t0
        rss_child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        assert len(out["table"]) == len(cases) and not out["errors"]

        n = len(cases)
        fig = {"cases": n, "params": str(args.params), "features_per_case": n_feat, "workers": args.workers,
               "cpu_count": os.cpu_count(), "sequential_s": round(t_seq, 1),
               "sequential_cases_per_min": round(60 * n / t_seq, 1), "parallel_s": round(t_par, 1),
               "parallel_cases_per_min": round(60 * n / t_par, 1), "speedup": round(t_seq / t_par, 2),
               "peak_rss_main_mb": round(rss_seq_mb), "peak_rss_worker_mb": round(rss_child_mb),
               "data": "SYNTHETIC thymic epithelial tumour cohort (mediastinal_ai.synthetic, 128² × 5 mm)"}
        print(json.dumps(fig, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(fig, indent=2) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
