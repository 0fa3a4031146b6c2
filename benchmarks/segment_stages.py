"""Where one ``segment`` run spends its time and memory, stage by stage, in one process.

    .venv/bin/python benchmarks/segment_stages.py CT OUT_DIR [--model CARD] [--json FILE]

For each stage (reading the CT, loading the model, then every progress message of
``segment_volume``, then writing): wall seconds, CPU seconds of this process, and the peak
resident memory *during that stage* (Linux: the kernel's high-water mark ``VmHWM``, reset at
every stage through ``/proc/self/clear_refs``) next to the resident memory at its end. Why: the
end-to-end benchmark (segment_end_to_end.py) gives one peak RSS for the whole command; finding
which stage holds the memory needs the peak per stage. CPU seconds next to wall seconds show
how much a shared machine's load stretched a stage. Windows of the sliding window are one stage.

The CT of the end-to-end benchmark is made by segment_end_to_end.py (under its ``--work``,
default /tmp/mediastinal-ai-bench/ct_real_512x512x300.nii.gz).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _memory_mb() -> dict[str, int]:
    out = {}
    try:
        for line in open("/proc/self/status", encoding="ascii"):
            if line.startswith(("VmHWM", "VmRSS")):
                out[line.split(":")[0]] = int(line.split()[1]) // 1024
    except OSError:  # not Linux: no per-stage memory
        pass
    return out


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ct")
    ap.add_argument("out")
    ap.add_argument("--model", default=None, help="model name or card (default: the installed demo model)")
    ap.add_argument("--json")
    a = ap.parse_args()
    rows: list[dict] = []
    last = {"name": "imports", "t": time.perf_counter(), "c": time.process_time()}

    def mark(name: str) -> None:
        t, c, mem = time.perf_counter(), time.process_time(), _memory_mb()
        rows.append({"stage": last["name"], "seconds": round(t - last["t"], 2), "cpu_seconds": round(c - last["c"], 2),
                     "peak_rss_mb": mem.get("VmHWM"), "rss_at_end_mb": mem.get("VmRSS")})
        _reset_peak()
        last.update(name=name, t=t, c=c)

    t0 = time.perf_counter()
    sys.path.insert(0, str(REPO))
    from mediastinal_ai.io import read_ct
    from mediastinal_ai.models import resolve
    from mediastinal_ai.segmentation import load_model, segment_volume, write_result

    mark("reading CT")
    ct = read_ct(a.ct)
    mark("loading model")
    resolved = resolve(a.model, task="segmentation")
    model = load_model(resolved, device="cpu")
    mark("segment_volume start")

    def progress(_f: float, msg: str) -> None:
        name = "sliding window" if msg.startswith("window ") else msg  # reported after each batch:
        if name != last["name"]:  # the first batch counts to the stage before, as in the end-to-end benchmark
            mark(name)

    result = segment_volume(ct, model, progress=progress)
    mark("writing")
    write_result(result, a.out, ct)
    mark("end")
    summary = {"ct": a.ct, "model": resolved.label, "weights_sha256": resolved.card.sha256,
               "seconds_in_process": round(time.perf_counter() - t0, 2),
               "peak_rss_mb": max((r["peak_rss_mb"] or 0) for r in rows), "stages": rows,
               "inference": result.params.get("inference")}
    for r in rows:
        print(f"{r['stage']:<50} {r['seconds']:6.2f} s  cpu {r['cpu_seconds']:6.2f} s  "
              f"peak {r['peak_rss_mb']} MB  at end {r['rss_at_end_mb']} MB")
    print(f"total {summary['seconds_in_process']} s (in process, without interpreter start and exit); "
          f"peak RSS {summary['peak_rss_mb']} MB")
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
