"""Batch throughput: a plain sequential loop over the pipeline steps vs the Dask runner with 1
and 2 workers, same synthetic cohort, same machine, one run.

    .venv/bin/python benchmarks/batch_throughput.py --cases 8 --steps segment [--out /tmp/bench_batch]

Contenders: the engine in process (``--workers 0``: fingerprints, atomic publication, status
table, no Dask), and on a Dask LocalCluster with 1 and 2 single-threaded worker processes (each
worker imports the stack and loads every model once). The "plain loop" peer calls the same step functions per case in this process, with no fingerprints,
no atomic publication and no Dask: it is the floor the engine's overhead is measured against.
Prints a table and writes benchmarks/results/batch_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path


def plain_loop(cases, steps, work: Path) -> float:
    from mediastinal_ai.batch.steps import STEPS, CaseContext

    t0 = time.perf_counter()
    for c in cases:
        d = work / c.case_id
        d.mkdir(parents=True, exist_ok=True)
        ctx = CaseContext(spec=c, workdir=d, params={})
        for s in steps:
            STEPS[s].run(ctx)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--steps", default="segment")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core per worker, the same for every contender

    from mediastinal_ai.batch import RunConfig, discover, order_steps, run_cohort
    from mediastinal_ai.synthetic import generate_cohort

    root = Path(args.out or tempfile.mkdtemp(prefix="bench_batch_"))
    manifest = generate_cohort(args.cases, root / "cohort", seed=5000)
    cases = discover(manifest)
    steps = order_steps(args.steps.split(","))
    results = {}
    # warm-up (imports, first model load) so no contender pays it alone
    plain_loop(cases[:1], steps, root / "warm")
    results["plain loop (sequential, in process)"] = plain_loop(cases, steps, root / "plain")
    for workers in (0, 1, 2):  # 0: the engine's in-process loop (fingerprints, atomic outputs, no Dask)
        out = root / f"dask{workers}"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        rows = run_cohort(cases, out, RunConfig(steps=steps, workers=workers))
        label = "engine, in process (--workers 0)" if workers == 0 else f"engine, Dask {workers} worker(s)"
        results[label] = time.perf_counter() - t0
        assert all(r["status"] == "ok" for r in rows), rows
    base = results["plain loop (sequential, in process)"]
    print(f"{args.cases} synthetic cases, steps {','.join(steps)}, {os.cpu_count()} cores")
    print(f"{'contender':<40} {'seconds':>8} {'cases/min':>10} {'speed-up vs loop':>17}")
    table = []
    for k, v in results.items():
        row = {"contender": k, "seconds": round(v, 2), "cases_per_min": round(60 * args.cases / v, 2),
               "speedup_vs_plain_loop": round(base / v, 3)}
        table.append(row)
        print(f"{k:<40} {v:8.1f} {row['cases_per_min']:10.2f} {row['speedup_vs_plain_loop']:17.2f}")
    eff = results["engine, Dask 1 worker(s)"] / (2 * results["engine, Dask 2 worker(s)"])
    print(f"scaling efficiency 1→2 workers: {eff:.2f}")
    res_dir = Path(__file__).with_name("results")
    res_dir.mkdir(exist_ok=True)
    (res_dir / "batch_throughput.json").write_text(json.dumps(
        {"cases": args.cases, "steps": steps, "cpu_count": os.cpu_count(), "platform": platform.platform(),
         "table": table, "scaling_efficiency_1_to_2": round(eff, 3)}, indent=2))


if __name__ == "__main__":
    main()
