"""Window network on a CPU: memory layout (default NCDHW vs channels_last_3d) and precision.

Why: the layout oneDNN's convolutions want differs by CPU, and bfloat16 is only fast where the CPU
computes it natively (AMX / AVX512-BF16); emulated, it is tens of times slower than fp32. This
measures, interleaved in one process, single 3x3x3 convolutions of the demo and published widths
and the two whole networks (batch norm folded, as at inference) in both layouts, fp32 — and bf16
when the CPU has it natively — and checks that the layouts give the same logits. Each network is
also timed as ``segment`` runs it on a CPU (``cpu_window_module``: channels_last_3d with every
convolution + ReLU one oneDNN call), against channels_last_3d with separate ReLUs, and as
``segment`` runs its window loop: that module with freed memory kept for reuse (``cpu_memory``).

    .venv/bin/python benchmarks/window_layout.py --threads 2 --json benchmarks/results/window_layout_<date>.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time


def best_of(fn, repeats: int) -> float:
    fn()  # oneDNN builds its primitive on the first call
    best = 1e9
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    import torch

    from mediastinal_ai.segmentation.cpu_memory import reuse_freed_memory
    from mediastinal_ai.segmentation.inference import _fold_batchnorm, cpu_has_native_bf16, cpu_window_module
    from mediastinal_ai.segmentation.network import UNet3D

    torch.set_num_threads(a.threads)
    cl = torch.channels_last_3d
    precisions = [torch.float32] + ([torch.bfloat16] if cpu_has_native_bf16() else [])
    layouts = {"ncdhw": torch.contiguous_format, "channels_last_3d": cl}
    out = {"cpu": platform.processor() or platform.machine(), "threads": a.threads,
           "native_bf16": cpu_has_native_bf16(), "load_average_at_start": os.getloadavg()[0], "convs": [], "networks": []}
    for cin, cout, shape in [(1, 8, (8, 1, 16, 64, 64)), (8, 8, (8, 8, 16, 64, 64)), (16, 16, (8, 16, 8, 32, 32)),
                             (32, 32, (2, 32, 48, 128, 128))]:
        conv = torch.nn.Conv3d(cin, cout, 3, padding=1).eval()
        x = torch.randn(*shape)
        gflop = 2.0 * cout * cin * 27 * x[:, :1].numel() / 1e9
        for dt in precisions:
            row = {"conv": f"{cin}->{cout} @ {'x'.join(map(str, shape[:1] + shape[2:]))}", "dtype": str(dt)[6:]}
            for name, fmt in layouts.items():
                c, xx = conv.to(dt).to(memory_format=fmt), x.to(dt).contiguous(memory_format=fmt)
                with torch.inference_mode():
                    s = best_of(lambda c=c, xx=xx: c(xx), a.repeats)
                row[name] = {"seconds": round(s, 4), "gflops_per_s": round(gflop / s, 1)}
            row["speedup_channels_last"] = round(row["ncdhw"]["seconds"] / row["channels_last_3d"]["seconds"], 2)
            out["convs"].append(row)
            print(json.dumps(row), flush=True)
    for label, feats, dec, shape in [("demo", (8, 16, 32, 64), "deconv", (8, 1, 16, 64, 64)),
                                     ("published", (32, 64, 128, 256), "deconv_bn_relu", (1, 1, 48, 128, 128))]:
        torch.manual_seed(0)
        net = _fold_batchnorm(UNet3D(feats, decoder=dec).eval())
        x = torch.randn(*shape)
        for dt in precisions:
            row, ys = {"network": label, "batch_zyx": list(shape[:1]) + list(shape[2:]), "dtype": str(dt)[6:]}, {}
            for name, fmt in layouts.items():
                n, xx = net.to(dt).to(memory_format=fmt), x.to(dt).contiguous(memory_format=fmt)
                with torch.inference_mode():
                    row[name] = {"seconds": round(best_of(lambda n=n, xx=xx: n(xx), a.repeats), 4)}
                    ys[name] = n(xx).float().contiguous()
            fused, xx = cpu_window_module(net, "bf16" if dt == torch.bfloat16 else "fp32", fuse_relu=True), x.to(dt).contiguous(memory_format=cl)
            with torch.inference_mode():
                row["channels_last_3d_fused_relu"] = {"seconds": round(best_of(lambda n=fused, xx=xx: n(xx), a.repeats), 4)}
                ys["fused"] = fused(xx).float().contiguous()
                # what segment runs: its module (fused for bf16 only) with freed memory kept
                seg = cpu_window_module(net, "bf16" if dt == torch.bfloat16 else "fp32")
                with reuse_freed_memory() as kept:
                    row["segment_module_reused_memory"] = {
                        "seconds": round(best_of(lambda n=seg, xx=xx: n(xx), a.repeats), 4), "in_force": kept}
                    ys["segment"] = seg(xx).float().contiguous()
            row["speedup_channels_last"] = round(row["ncdhw"]["seconds"] / row["channels_last_3d"]["seconds"], 2)
            row["speedup_fused_relu_over_channels_last"] = round(
                row["channels_last_3d"]["seconds"] / row["channels_last_3d_fused_relu"]["seconds"], 2)
            before = row["channels_last_3d_fused_relu" if dt == torch.bfloat16 else "channels_last_3d"]["seconds"]
            row["speedup_reused_memory"] = round(before / row["segment_module_reused_memory"]["seconds"], 2)
            row["reused_memory_same_logits"] = bool(torch.equal(
                ys["segment"], ys["fused" if dt == torch.bfloat16 else "channels_last_3d"]))
            ref = ys["ncdhw"]
            row["max_relative_logit_difference"] = float((ys["channels_last_3d"] - ref).abs().max() / ref.abs().max())
            row["max_relative_logit_difference_fused_vs_channels_last"] = float(
                (ys["fused"] - ys["channels_last_3d"]).abs().max() / ys["channels_last_3d"].abs().max())
            out["networks"].append(row)
            print(json.dumps(row), flush=True)
    out["load_average_at_end"] = os.getloadavg()[0]
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
