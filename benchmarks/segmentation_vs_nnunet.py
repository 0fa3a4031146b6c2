"""Inference time and peak memory: our 3D U-Net (paper config) vs nnU-Net's default 3d_fullres
network, on the same volume, the same machine, in one run.

    .venv/bin/pip install dynamic-network-architectures   # nnU-Net's network classes (benchmark only)
    .venv/bin/python benchmarks/segmentation_vs_nnunet.py [--shape 80 192 192] [--threads 2] [--device cpu]

Both networks get random weights (speed does not depend on them) and run through the same
MONAI ``sliding_window_inference`` (overlap 0.5, Gaussian blending, batch 2) on the same
synthetic CT (SYNTHETIC, resampled to the paper's 1×1×2.5 mm and cropped/padded to ``--shape``),
with the same patch, so the ratio is network against network. nnU-Net's network is
``dynamic_network_architectures``' ``PlainConvUNet`` with what nnU-Net v2's default planner
gives a CT at this spacing: 6 stages, features min(32·2^i, 320), two 3×3×3 conv +
InstanceNorm + LeakyReLU per stage, first stride 1, in-plane-only stride where z is thin.
Each network runs in its own child process so that the peak resident memory (ru_maxrss) is its own.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def nnunet_default_3d_fullres(n_stages: int = 6):
    import torch
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    strides = [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]][:n_stages]
    return PlainConvUNet(
        input_channels=1, n_stages=n_stages, features_per_stage=[min(32 * 2**i, 320) for i in range(n_stages)],
        conv_op=torch.nn.Conv3d, kernel_sizes=[[3, 3, 3]] * n_stages, strides=strides,
        n_conv_per_stage=[2] * n_stages, num_classes=2, n_conv_per_stage_decoder=[2] * (n_stages - 1),
        conv_bias=True, norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
        nonlin=torch.nn.LeakyReLU, nonlin_kwargs={"inplace": True}, deep_supervision=False)


def volume(shape: tuple[int, int, int]):
    import numpy as np

    from mediastinal_ai.segmentation.plan import load_config, normalise, resample
    from mediastinal_ai.synthetic import generate_case

    plan = load_config("segmentation_paper")["plan"]
    ct = resample(generate_case(7, inplane_size=384, slice_thickness_mm=2.5).ct, plan["target_spacing_xyz"])
    x = normalise(ct.array, plan["hu_window"])
    out = np.zeros(shape, np.float32)
    sl = tuple(slice(0, min(a, b)) for a, b in zip(shape, x.shape))
    out[sl] = x[sl]
    return out


def child(which: str, shape: tuple[int, int, int], threads: int, device: str, repeats: int) -> dict:
    import torch
    from monai.inferers import sliding_window_inference

    from mediastinal_ai.segmentation.network import UNet3D
    from mediastinal_ai.segmentation.plan import load_config

    torch.set_num_threads(threads)
    plan = load_config("segmentation_paper")["plan"]
    patch = tuple(plan["patch_size_zyx"])
    net = UNet3D(tuple(plan["features"])) if which == "ours" else nnunet_default_3d_fullres()
    net = net.to(device).eval()
    t = torch.from_numpy(volume(shape))[None, None].to(device)
    times = []
    for _ in range(repeats + 1):  # the first run warms up (allocator, cuDNN autotune) and is not counted
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.inference_mode(), torch.autocast("cuda", enabled=device.startswith("cuda")):
            y = sliding_window_inference(t, patch, sw_batch_size=2, predictor=net, overlap=0.5, mode="gaussian")
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    res = {"network": which, "parameters": sum(p.numel() for p in net.parameters()), "patch_zyx": list(patch),
           "seconds": min(times[1:]), "seconds_all": [round(s, 3) for s in times[1:]],
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "output_shape": list(y.shape)}
    if device.startswith("cuda"):
        res["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=[80, 192, 192], help="volume z y x at 1x1x2.5 mm")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--child", choices=("ours", "nnunet"))
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    shape = tuple(a.shape)
    if a.child:
        print(json.dumps(child(a.child, shape, a.threads, a.device, a.repeats)))
        return 0
    rows = []
    for which in ("ours", "nnunet"):
        cmd = [sys.executable, __file__, "--child", which, "--shape", *map(str, shape), "--threads", str(a.threads),
               "--device", a.device, "--repeats", str(a.repeats)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    ours, nn = rows
    summary = {"volume_zyx": list(shape), "device": a.device, "threads": a.threads, "machine": platform.processor()
               or platform.machine(), "ours": ours, "nnunet_3d_fullres": nn,
               "time_ratio_nnunet_over_ours": round(nn["seconds"] / ours["seconds"], 2),
               "memory_ratio_nnunet_over_ours": round(nn["peak_rss_mb"] / ours["peak_rss_mb"], 2)}
    print(json.dumps(summary, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
