"""Benchmark: cohort radiomics extraction, our parallel extractor vs a plain sequential loop.

All arms use the same parameter file, the same cases (a SYNTHETIC cohort generated here)
and the same machine, in one run:

* sequential: for each case, read CT and mask with SimpleITK, clip to the window with
  ``sitk.Clamp``, call ``RadiomicsFeatureExtractor(params).execute`` — what a user would write;
* ours, 1 worker: :func:`mediastinal_ai.radiomics.extract_cohort` in process (numpy bin edges);
* ours, one case per worker: a process pool, each (case, reader) whole on one worker;
* ours (default): a process pool; each case prepared once (read, window, resample), then cut
  into its image-type parts, the longest (by estimated cost) started first across the cohort.

Every arm's features are compared with the sequential loop's, bit for bit (float64 bytes), and
the key order too; the script exits 1 on any difference. Reports wall time, cases/min (a "case"
= one CT + one mask) and peak resident memory. Usage::

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


def project_two_cores(cases, p, workers: int, cpu_seq: float) -> dict:
    """What the pool would take on an IDLE machine with ``workers`` cores, from CPU seconds.

    On a shared machine the wall clock of a parallel arm says more about the other users than
    about the scheme; CPU seconds do not. Each case is prepared and each of its image-type parts
    extracted here, in process, with the pool's own mechanics, and each step's CPU time measured;
    the pool's schedule is then replayed with those durations: once with whole cases (one task
    per case, in order) and once as the pool runs the parts (preparations first, then the part
    of longest estimated cost to the first free worker). A PROJECTION, labelled as such."""
    import heapq

    from mediastinal_ai.io import read_ct, read_mask
    from mediastinal_ai.radiomics.extract import sitk_inputs
    from mediastinal_ai.radiomics.fast import (
        PreparedPair,
        fast_extraction,
        part_cost,
        pieces,
        prepare,
        prepared_extractor,
        save_prepared,
    )
    from mediastinal_ai.radiomics.params import pyradiomics_params

    pp = pyradiomics_params(p)
    parts = pieces(pp)
    prep_s: list[float] = []
    per_case: list[list[float]] = []
    est: list[list[float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for c in cases:
            t = time.process_time()
            ct = read_ct(c.ct)
            pair = prepare(*sitk_inputs(ct, read_mask(c.mask, ct), p), pp)
            size = save_prepared(Path(tmp) / c.case_id, *pair)
            prep_s.append(time.process_time() - t)
            held = PreparedPair(*pair)
            row = []
            for q in parts:
                t = time.process_time()
                with fast_extraction(), held.checked_once():
                    prepared_extractor(q["params"]).execute(held.image, held.mask, label=1)
                row.append(time.process_time() - t)
            per_case.append(row)
            est.append([part_cost(q, size["voxels"], size["faces"]) for q in parts])

    def makespan(tasks: list[float]) -> float:
        free = [0.0] * workers
        for d in tasks:
            heapq.heappush(free, heapq.heappop(free) + d)
        return max(free)

    whole = makespan([pr + sum(r) for pr, r in zip(prep_s, per_case)])
    order = sorted(((e, d) for er, dr in zip(est, per_case) for e, d in zip(er, dr)), key=lambda t: -t[0])
    split = makespan(prep_s + [d for _, d in order])
    return {"note": "PROJECTION for an idle machine from measured CPU seconds, not a wall-clock measurement",
            "prepare_cpu_s": [round(d, 2) for d in prep_s],
            "part_cpu_s": [[round(d, 2) for d in r] for r in per_case],
            "part_names": ["+".join(q["params"]["imageType"]) + (" shape" if q["shape"] else "") for q in parts],
            "case_per_worker_s": round(whole, 1), "split_s": round(split, 1),
            "speedup_case_per_worker": round(cpu_seq / whole, 2), "speedup_split": round(cpu_seq / split, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=16)
    ap.add_argument("--params", default="demo", help="'demo', 'paper' or a YAML path")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=9000)
    ap.add_argument("--cohort", default=None, help="reuse an existing manifest instead of generating")
    ap.add_argument("--json", default=None, help="write the figures here too")
    ap.add_argument("--project", action="store_true",
                    help="also time each image-type part in process and replay the pool's schedule on an idle "
                         "machine (a projection; use on a shared, loaded machine)")
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
    load0 = round(os.getloadavg()[0], 2)
    try:
        manifest = Path(args.cohort) if args.cohort else generate_cohort(
            args.cases, tmp / "cohort", seed=args.seed, classes=list(taxonomy.WHO_LOW + taxonomy.WHO_HIGH))
        cases = read_manifest(manifest)[: args.cases]
        p = load_params(args.params)
        yml = tmp / "params.yaml"
        yml.write_text(yaml.safe_dump(pyradiomics_params(p), sort_keys=False))  # keep the image-type order
        lo, hi = window_range(p)
        logging.getLogger("radiomics").setLevel(logging.ERROR)

        import numpy as np

        def cpu_s() -> float:
            """CPU seconds of this process and its finished children (independent of other load)."""
            a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

        t0, c0 = time.perf_counter(), cpu_s()
        n_feat = 0
        peer: dict[str, dict[str, float]] = {}
        for c in cases:
            ex = featureextractor.RadiomicsFeatureExtractor(str(yml))
            img = sitk.Clamp(sitk.ReadImage(str(c.ct), sitk.sitkFloat32), sitk.sitkFloat32, lo, hi)
            res = ex.execute(img, sitk.ReadImage(str(c.mask)), label=1)
            peer[c.case_id] = {k: float(np.asarray(v).item()) for k, v in res.items()
                               if not k.startswith("diagnostics")}
            n_feat = len(peer[c.case_id])
        t_seq, cpu_seq = time.perf_counter() - t0, cpu_s() - c0
        rss_seq_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        def compare(table) -> dict[str, int]:
            """Features that differ from the peer's in any bit (NaN equals NaN of the same bits)."""
            cols = [k for k in table.columns if k not in ("case_id", "reader")]
            n_diff = n_missing = 0
            order_ok = True
            for _, row in table.iterrows():
                ref = peer[row["case_id"]]
                order_ok &= cols == list(ref)
                n_missing += len(set(ref) ^ set(cols))
                n_diff += sum(np.float64(ref[k]).tobytes() != np.float64(row[k]).tobytes() for k in ref if k in cols)
            return {"differing_values": int(n_diff), "missing_or_extra": int(n_missing), "same_order": bool(order_ok)}

        arms = {}
        for arm, workers, split in (("ours_1_worker", 1, True), ("ours_case_per_worker", args.workers, False),
                                    ("ours", args.workers, True)):
            load_arm = round(os.getloadavg()[0], 2)
            t0, c0 = time.perf_counter(), cpu_s()
            out = extract_cohort(manifest, tmp / arm, p, readers=("1",), workers=workers,
                                 case_ids=[c.case_id for c in cases], split_cases=split)
            dt, cpu = time.perf_counter() - t0, cpu_s() - c0
            assert len(out["table"]) == len(cases) and not out["errors"], out["errors"]
            arms[arm] = {"workers": workers, "seconds": round(dt, 1), "cases_per_min": round(60 * len(cases) / dt, 1),
                         "speedup_vs_sequential": round(t_seq / dt, 2), "cpu_s": round(cpu, 1),
                         "cpu_ratio_sequential_over_this": round(cpu_seq / cpu, 2),
                         "load_average_1min_before": load_arm, **compare(out["table"])}
        rss_child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        projection = project_two_cores(cases, p, args.workers, cpu_seq) if args.project else None

        n = len(cases)
        fig = {"cases": n, "params": str(args.params), "features_per_case": n_feat, "workers": args.workers,
               "cpu_count": os.cpu_count(), "load_average_1min_at_end": round(os.getloadavg()[0], 2),
               "load_average_1min_at_start": load0,
               "sequential_s": round(t_seq, 1), "sequential_cpu_s": round(cpu_seq, 1),
               "sequential_cases_per_min": round(60 * n / t_seq, 1),
               "arms": arms, "idle_machine_projection": projection, "parallel_s": arms["ours"]["seconds"], "speedup": arms["ours"]["speedup_vs_sequential"],
               "peak_rss_main_mb": round(rss_seq_mb), "peak_rss_worker_mb": round(rss_child_mb),
               "data": "SYNTHETIC thymic epithelial tumour cohort (mediastinal_ai.synthetic, 128² × 5 mm)"}
        print(json.dumps(fig, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(fig, indent=2) + "\n")
        identical = all(a["differing_values"] == 0 and a["missing_or_extra"] == 0 and a["same_order"]
                        for a in arms.values())
        if not identical:
            raise SystemExit("features differ from the sequential pyradiomics loop")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
