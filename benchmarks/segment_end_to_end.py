"""End to end: the whole ``mediastinal-ai segment`` command on a full 512×512×300 chest CT against
nnU-Net v2's own predictor on the same CT, same machine, same run; FLOPs per CT and the fraction
of the machine's measured conv3d peak that our inference reaches.

    # nnU-Net v2 in its own virtualenv, for this benchmark only (it may reuse our torch):
    python -m venv /tmp/nnunet-venv && /tmp/nnunet-venv/bin/pip install nnunetv2
    .venv/bin/python benchmarks/segment_end_to_end.py --nnunet-python /tmp/nnunet-venv/bin/python \\
        --json benchmarks/results/segment_end_to_end.json

The CT (written under ``--work``, never into the repository): the real full-chest series
``Lung_Dx-A0001_s1`` of ../shared/data/real-ct/lung-pet-ct-dx (TCIA Lung-PET-CT-Dx, CC BY 4.0;
512×512×64 at 0.84×0.84×5 mm) read in place and linearly interpolated along z to 300 slices
(1.05 mm), i.e. a real chest at the geometry of a thin-slice CT; ``--ct`` takes any other CT.

Contenders, each in its own process (peak RSS is its own):

* ``segment`` with the shipped demo model, with its weights under the current demo plan (inference
  on the mediastinal crop), and with the published network (segmentation_paper.yaml, random
  weights: speed does not depend on them), exactly as a user runs it; stage times from its
  ``--progress-lines``, the network's own seconds, windows and precision from its segmentation_result.json.
* nnU-Net v2's ``nnUNetPredictor`` with the model folder of a randomly initialised ``3d_fullres``
  network of the default plan (``ExperimentPlanner`` on a one-case dataset of this CT), default
  predictor settings (step 0.5, Gaussian, mirroring on all axes as its trainer allows). Its
  sliding window over the whole CT needs hours on 2 cores, so it is timed on ``--nnunet-calls``
  network calls inside nnU-Net's own loop and extrapolated to all tiles; its preprocessing and its
  export (resampling, argmax, writing the NIfTI) are timed in full. Labelled as an estimate.

FLOPs: multiply-adds ×2 of every convolution of one window (forward hooks) × windows × passes.
The peak: the best throughput of the network's own 3×3×3 convolutions run alone, in the same
precision, threads and batch as the inference (measured in the same run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REAL_SERIES = REPO.parent / "shared" / "data" / "real-ct" / "lung-pet-ct-dx" / "Lung_Dx-A0001_s1"


# ----------------------------------------------------------------------------------- helpers
def run_timed(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    """Run ``cmd``; per-stage seconds from MEDIASTINALAI_PROGRESS lines; the child's peak RSS."""
    import tempfile

    t0 = time.perf_counter()
    errf = tempfile.TemporaryFile("w+")  # not a pipe: a child filling it must never block
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf, text=True, env=env)
    stages: list[list] = []
    for line in p.stdout:  # type: ignore[union-attr]
        if not line.startswith("MEDIASTINALAI_PROGRESS"):
            continue
        now = time.perf_counter() - t0
        msg = line.split(" ", 2)[2].strip() if line.count(" ") >= 2 else ""
        key = "sliding window" if msg.startswith("window ") else msg
        if stages and stages[-1][0] == key:
            continue
        stages.append([key, now])
    _, status, ru = os.wait4(p.pid, 0)
    errf.seek(0)
    err = errf.read()
    total = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd[:3]} failed:\n{err[-3000:]}")
    out = {}
    for (name, start), nxt in zip(stages, stages[1:] + [["exit", total]]):
        out[name] = round(out.get(name, 0.0) + nxt[1] - start, 2)
    return {"seconds": round(total, 2), "stages": out, "peak_rss_mb": round(ru.ru_maxrss / 1024, 1)}


def make_ct(path: Path, slices: int = 300) -> Path:
    import SimpleITK as sitk

    sys.path.insert(0, str(REPO))
    from mediastinal_ai.io import read_ct, write_image
    from mediastinal_ai.volume import Volume

    ct = read_ct(REAL_SERIES)
    img = ct.to_sitk()
    size, sp = img.GetSize(), img.GetSpacing()
    ref = sitk.Image([size[0], size[1], slices], sitk.sitkInt16)
    ref.SetSpacing((sp[0], sp[1], (size[2] - 1) * sp[2] / (slices - 1)))
    ref.SetOrigin(img.GetOrigin())
    ref.SetDirection(img.GetDirection())
    out = sitk.Resample(img, ref, sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkInt16)
    vol = Volume.from_sitk(out, units="HU", metadata={
        "derived_from": f"{REAL_SERIES.name} (TCIA Lung-PET-CT-Dx, CC BY 4.0), z-interpolated to {slices} slices"})
    write_image(vol, path)
    return path


def paper_model(folder: Path) -> Path:
    """The published network (segmentation_paper.yaml) with random weights, as a model card."""
    sys.path.insert(0, str(REPO))
    import torch

    from mediastinal_ai.models import ModelCard
    from mediastinal_ai.segmentation.model_io import save_model
    from mediastinal_ai.segmentation.network import UNet3D
    from mediastinal_ai.segmentation.plan import Plan, load_config

    card_path = folder / "bench-paper-random.model.json"
    if card_path.is_file():
        return card_path
    plan = Plan(**load_config("segmentation_paper")["plan"])
    torch.manual_seed(0)
    net = UNet3D(plan.features, decoder=getattr(plan, "decoder", "deconv")).eval()
    card = ModelCard(name="bench-paper-random", task="segmentation", weights_file="", demo=True,
                     intended_use="benchmark only: random weights (demo — not for clinical use)")
    return save_model(net, plan, folder / "bench-paper-random.safetensors", card)


def demo_crop_model(folder: Path) -> Path:
    """The shipped demo weights with the plan of the current demo config (inference on the
    mediastinal crop, mirrored along x), for as long as the shipped card predates that plan."""
    sys.path.insert(0, str(REPO))
    from mediastinal_ai.models import ModelCard, resolve
    from mediastinal_ai.segmentation import load_model
    from mediastinal_ai.segmentation.model_io import save_model
    from mediastinal_ai.segmentation.plan import Plan, load_config

    card_path = folder / "bench-demo-crop.model.json"
    if card_path.is_file():
        return card_path
    m = load_model(resolve(None, task="segmentation"), device="cpu")
    cfg = load_config("segmentation_demo")["plan"]
    plan = Plan(**{**m.plan.to_dict(), "crop_to_mediastinum": cfg.get("crop_to_mediastinum", True),
                   "mirror_axes": cfg.get("mirror_axes", "")})
    card = ModelCard(name="bench-demo-crop", task="segmentation", weights_file="", demo=True,
                     intended_use="benchmark only: shipped demo weights, crop plan (demo — not for clinical use)")
    return save_model(m.net, plan, folder / "bench-demo-crop.safetensors", card)


def conv_flops(net, patch: tuple[int, ...]) -> float:
    """Multiply-adds ×2 of every convolution for one window (forward hooks)."""
    import torch

    total = [0.0]

    def hook(m, inp, out):
        k = float(torch.tensor(m.kernel_size).prod())
        if isinstance(m, torch.nn.ConvTranspose3d):
            total[0] += 2.0 * inp[0].numel() * m.out_channels * k / m.groups
        else:
            total[0] += 2.0 * out.numel() * (m.in_channels / m.groups) * k

    hs = [m.register_forward_hook(hook) for m in net.modules()
          if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))]
    with torch.inference_mode():
        net(torch.zeros(1, 1, *patch))
    for h in hs:
        h.remove()
    return total[0]


def conv_peak(features: tuple[int, ...], patch: tuple[int, ...], precision: str, batch: int,
              repeats: int = 3) -> dict:
    """GFLOP/s of 3×3×3 convolutions run alone (best of ``repeats``): the network's own layers at
    its batch, and the published network's layers at batch 1; the best of them is the peak."""
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    fmt = torch.channels_last_3d  # the layout inference runs in, fp32 too
    rows = {}
    levels = [(1, features[0])] + [(features[i], features[i]) for i in range(4)]
    shapes = [(batch, cin, *(p // 2 ** max(0, lvl - 1) for p in patch)) for lvl, (cin, cout) in enumerate(levels)]
    # the machine's peak: also the published network's layers (wide enough to fill the units)
    shapes += [(1, f, *(p // 2 ** i for p in (48, 128, 128))) for i, f in enumerate((32, 64, 128, 256))]
    for shape in dict.fromkeys(shapes):
        cin = cout = shape[1]
        if shape[1] == 1:
            cout = features[0]
        conv = torch.nn.Conv3d(cin, cout, 3, padding=1).eval().to(dtype).to(memory_format=fmt)
        x = torch.rand(shape).to(dtype).contiguous(memory_format=fmt)
        flops = 2.0 * shape[0] * cout * cin * 27 * float(torch.tensor(shape[2:]).prod())
        best = 1e9
        with torch.inference_mode():
            conv(x)
            for _ in range(repeats):
                t = time.perf_counter()
                conv(x)
                best = min(best, time.perf_counter() - t)
        rows[f"{cin}->{cout} @ {shape[0]}x{'x'.join(map(str, shape[2:]))}"] = round(flops / best / 1e9, 1)
    return {"gflops_per_s": rows, "peak_gflops_per_s": max(rows.values())}


def ours_child(args: argparse.Namespace) -> None:
    """FLOPs per CT and the conv3d peak for one finished ``segment`` run (its segmentation_result.json)."""
    sys.path.insert(0, str(REPO))
    import torch

    from mediastinal_ai.segmentation.network import UNet3D

    torch.set_num_threads(args.threads)
    info = json.loads(Path(args.result).read_text())
    inf, plan = info["params"]["inference"], info["params"]["plan"]
    feats, patch = tuple(plan["features"]), tuple(plan["patch_size_zyx"])
    per_window = conv_flops(UNet3D(feats).eval(), patch)
    windows = inf["windows_per_pass"] * inf["tta_passes"]
    total = per_window * windows
    precision, batch = inf.get("precision", "fp32"), int(inf.get("sw_batch_size", 2))
    achieved = total / max(inf.get("network_seconds") or inf["seconds"], 1e-9) / 1e9
    # On a shared machine the run above and a peak measured later see different loads: so the
    # window network and the peak convolutions are also timed here, interleaved, best of 3 each.
    from mediastinal_ai.segmentation.inference import cpu_window_module

    # the module ``segment`` runs on a CPU (folded BN, fused conv + ReLU, channels_last_3d)
    net = cpu_window_module(UNet3D(feats, decoder=plan.get("decoder", "deconv")).eval(), precision)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    fmt = torch.channels_last_3d
    x = torch.rand(batch, 1, *patch).to(dtype).contiguous(memory_format=fmt)
    best_net, peaks = 1e9, []
    from mediastinal_ai.segmentation.cpu_memory import reuse_freed_memory

    # both as segment's window loop runs them: freed memory kept for reuse (cpu_memory)
    with torch.inference_mode(), reuse_freed_memory():
        net(x)
        for _ in range(3):
            peaks.append(conv_peak(feats, patch, precision, batch, repeats=1))
            t = time.perf_counter()
            net(x)
            best_net = min(best_net, time.perf_counter() - t)
    peak = max(peaks, key=lambda r: r["peak_gflops_per_s"])
    net_rate = per_window * batch / best_net / 1e9
    print(json.dumps({"gflop_per_window": round(per_window / 1e9, 2), "windows": windows,
                      "tflop_per_ct": round(total / 1e12, 3), "precision": precision, "batch": batch,
                      "achieved_gflops_per_s_in_the_run": round(achieved, 1),
                      "window_network_gflops_per_s_interleaved": round(net_rate, 1), "conv3d_peak": peak,
                      "fraction_of_peak_interleaved": round(net_rate / peak["peak_gflops_per_s"], 3),
                      "fraction_of_peak_in_the_run": round(achieved / peak["peak_gflops_per_s"], 3)}))


# ------------------------------------------------------------------------------ nnU-Net side
def nnunet_child(args: argparse.Namespace) -> None:  # runs under nnU-Net's own interpreter
    import numpy as np
    import SimpleITK as sitk
    import torch

    root = Path(args.work) / "nnunet"
    for k, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "pre"), ("nnUNet_results", "res")):
        os.environ[k] = str(root / sub)
    torch.set_num_threads(args.threads)
    ds = root / "raw" / "Dataset999_Bench"
    md = root / "res" / "Dataset999_Bench" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    t_setup = time.perf_counter()
    if not (md / "fold_0" / "checkpoint_final.pth").is_file():
        (ds / "imagesTr").mkdir(parents=True, exist_ok=True)
        (ds / "labelsTr").mkdir(parents=True, exist_ok=True)
        link = ds / "imagesTr" / "bench_0000.nii.gz"
        if not link.exists():
            link.symlink_to(Path(args.ct).resolve())
        img = sitk.ReadImage(str(args.ct))
        lab = np.zeros(sitk.GetArrayFromImage(img).shape, np.uint8)
        z, y, x = (s // 2 for s in lab.shape)
        lab[z - 5:z + 5, y - 10:y + 10, x - 10:x + 10] = 1  # one label blob: the planner needs a label
        li = sitk.GetImageFromArray(lab)
        li.CopyInformation(img)
        sitk.WriteImage(li, str(ds / "labelsTr" / "bench.nii.gz"))
        (ds / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0, "tumor": 1},
                                                     "numTraining": 1, "file_ending": ".nii.gz"}))
        from nnunetv2.experiment_planning.plan_and_preprocess_api import (
            extract_fingerprints,
            plan_experiments,
        )
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        extract_fingerprints([999], num_processes=1, check_dataset_integrity=False, clean=True, verbose=False)
        plan_experiments([999])
        plans = json.loads((root / "pre" / "Dataset999_Bench" / "nnUNetPlans.json").read_text())
        pm = PlansManager(plans)
        net = nnUNetTrainer.build_network_architecture(pm, pm.get_configuration("3d_fullres"), 1, 2,
                                                       enable_deep_supervision=False)
        (md / "fold_0").mkdir(parents=True, exist_ok=True)
        (md / "dataset.json").write_text((ds / "dataset.json").read_text())
        (md / "plans.json").write_text(json.dumps(plans))
        torch.save({"network_weights": net.state_dict(), "trainer_name": "nnUNetTrainer",
                    "init_args": {"configuration": "3d_fullres"}, "inference_allowed_mirroring_axes": (0, 1, 2)},
                   md / "fold_0" / "checkpoint_final.pth")
    setup_s = time.perf_counter() - t_setup

    from nnunetv2.inference.export_prediction import export_prediction_from_logits
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    t0 = time.perf_counter()
    pred = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                           perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                           verbose_preprocessing=False, allow_tqdm=False)
    pred.initialize_from_trained_model_folder(str(md), use_folds=(0,))
    init_s = time.perf_counter() - t0
    pm, cm = pred.plans_manager, pred.configuration_manager
    t0 = time.perf_counter()
    preprocessor = cm.preprocessor_class(verbose=False)
    data, _, props = preprocessor.run_case([str(args.ct)], None, pm, cm, pred.dataset_json)
    pre_s = time.perf_counter() - t0

    class Stop(Exception):
        pass

    net = pred.network
    calls: list[float] = []

    class Timed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = net

        def forward(self, x):  # noqa: D401 - the network nnU-Net's loop calls
            if len(calls) >= args.nnunet_calls:
                raise Stop
            t = time.perf_counter()
            y = self.inner(x)
            calls.append(time.perf_counter() - t)
            return y

    pred.network = Timed()
    from acvl_utils.cropping_and_padding.padding import pad_nd_image

    padded, _ = pad_nd_image(torch.from_numpy(data), cm.patch_size, "constant", {"value": 0}, True, None)
    tiles = len(pred._internal_get_sliding_window_slicers(padded.shape[1:]))
    mirror = pred.allowed_mirroring_axes if pred.use_mirroring else ()
    passes = 2 ** len(mirror or ())
    try:
        pred.predict_sliding_window_return_logits(torch.from_numpy(data))
    except Stop:
        pass
    per_call = float(np.median(calls[1:] if len(calls) > 1 else calls))
    flops = [0.0]

    def hook(m, inp, out):
        k = float(np.prod(m.kernel_size))
        if isinstance(m, torch.nn.ConvTranspose3d):
            flops[0] += 2.0 * inp[0].numel() * m.out_channels * k / m.groups
        else:
            flops[0] += 2.0 * out.numel() * (m.in_channels / m.groups) * k

    hs = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.ConvTranspose3d))]
    with torch.inference_mode():
        net(torch.zeros(1, 1, *cm.patch_size))
    for h in hs:
        h.remove()
    t0 = time.perf_counter()
    logits = torch.from_numpy(np.random.default_rng(0).standard_normal((2, *data.shape[1:]), dtype=np.float32))
    export_prediction_from_logits(logits, props, cm, pm, pred.dataset_json, str(Path(args.work) / "nnunet_seg"),
                                  save_probabilities=False)
    export_s = time.perf_counter() - t0
    import resource

    sw_full = tiles * passes * per_call
    print(json.dumps({
        "plan_patch_zyx": list(cm.patch_size), "plan_spacing_zyx": list(cm.spacing), "network": net.__class__.__name__,
        "parameters": sum(p.numel() for p in net.parameters()), "tiles": tiles, "mirror_passes": passes,
        "timed_network_calls": len(calls), "seconds_per_network_call": round(per_call, 2),
        "gflop_per_window": round(flops[0] / 1e9, 1), "achieved_gflops_per_s": round(flops[0] / per_call / 1e9, 1),
        "tflop_per_ct": round(flops[0] * tiles * passes / 1e12, 2),
        "setup_seconds_not_counted": round(setup_s, 1), "init_seconds": round(init_s, 2),
        "preprocessing_seconds": round(pre_s, 2), "export_seconds": round(export_s, 2),
        "sliding_window_seconds_estimated": round(sw_full, 1),
        "sliding_window_seconds_estimated_without_mirroring": round(tiles * per_call, 1),
        "seconds_estimated": round(init_s + pre_s + sw_full + export_s, 1),
        "seconds_estimated_without_mirroring": round(init_s + pre_s + tiles * per_call + export_s, 1),
        "peak_rss_mb_partial_run": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


# ------------------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ct", help="CT to use (default: made from the real series, see above)")
    ap.add_argument("--work", default="/tmp/mediastinal-ai-bench", help="scratch folder (outside the repository)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="demo,demo-crop,paper",
                    help="ours: demo (shipped card), demo-crop (shipped weights, crop plan), paper (random weights)")
    ap.add_argument("--nnunet-python", help="python of a virtualenv with nnunetv2 (skip nnU-Net when absent)")
    ap.add_argument("--nnunet-calls", type=int, default=3, help="nnU-Net network calls timed (first is warm-up)")
    ap.add_argument("--json")
    ap.add_argument("--child", choices=("ours", "nnunet"))
    ap.add_argument("--result", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child == "nnunet":
        nnunet_child(a)
        return 0
    if a.child == "ours":
        ours_child(a)
        return 0
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    ct = Path(a.ct) if a.ct else work / "ct_real_512x512x300.nii.gz"
    if not ct.is_file():
        make_ct(ct)
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    cli = [sys.executable, "-m", "mediastinal_ai.cli"] if not (Path(sys.executable).parent / "mediastinal-ai").exists() \
        else [str(Path(sys.executable).parent / "mediastinal-ai")]
    summary: dict = {"ct": str(ct), "ct_source": "real series " + REAL_SERIES.name + " z-interpolated to 300 slices"
                     if not a.ct else a.ct, "threads": a.threads, "machine": platform.processor() or platform.machine(),
                     "cpu_count": os.cpu_count(), "load_average_at_start": os.getloadavg(), "ours": {}}
    sys.path.insert(0, str(REPO))
    from mediastinal_ai.case_files import require_result

    for which in a.models.split(","):
        model = {"demo": [], "demo-crop": ["--model", str(demo_crop_model(work))] if which == "demo-crop" else [],
                 "paper": ["--model", str(paper_model(work))] if which == "paper" else []}[which]
        out = work / f"out_{which}"
        r = run_timed([*cli, "segment", "-i", str(ct), "-o", str(out), "--progress-lines", "--device", "cpu", *model],
                      env=env)
        result_file = require_result(out, "segmentation")
        info = json.loads(result_file.read_text())
        r["inference"] = info["params"]["inference"]
        r["n_lesions"] = info["n_lesions"]
        r["probability_file_mb"] = round((out / "probability.nrrd").stat().st_size / 2**20, 2)
        fl = subprocess.run([sys.executable, __file__, "--child", "ours", "--result", str(result_file),
                             "--threads", str(a.threads)], capture_output=True, text=True, check=True, env=env)
        r["flops"] = json.loads(fl.stdout.strip().splitlines()[-1])
        summary["ours"][which] = r
        print(which, json.dumps(r, indent=1), flush=True)
    if a.nnunet_python:
        t0 = time.perf_counter()
        nn = subprocess.run([a.nnunet_python, __file__, "--child", "nnunet", "--ct", str(ct), "--work", str(work),
                             "--threads", str(a.threads), "--nnunet-calls", str(a.nnunet_calls)],
                            capture_output=True, text=True, env=env)
        if nn.returncode != 0:
            raise RuntimeError(nn.stderr[-3000:])
        summary["nnunet_v2"] = json.loads(nn.stdout.strip().splitlines()[-1])
        summary["nnunet_v2"]["wall_seconds_of_this_measurement"] = round(time.perf_counter() - t0, 1)
        for which, r in summary["ours"].items():
            summary[f"ratio_nnunet_estimated_over_ours_{which}"] = round(summary["nnunet_v2"]["seconds_estimated"]
                                                                         / r["seconds"], 1)
            summary[f"ratio_nnunet_no_mirroring_estimated_over_ours_{which}"] = round(
                summary["nnunet_v2"]["seconds_estimated_without_mirroring"] / r["seconds"], 1)
    summary["load_average_at_end"] = os.getloadavg()
    print(json.dumps(summary, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
