"""Issue 17: the whole ``mediastinal-ai segment`` command against nnU-Net v2's own predictor
(``nnUNetv2_predict``) on the same full 512×512×300 chest CT, same machine, same run, same thread count.

nnU-Net v2 goes into its own virtualenv, for this benchmark only (it is no dependency of the project).
torch 2.14.1 comes from the same local wheel index the project's own install uses (pip's configured
find-links / extra index); nnunetv2 2.8.1 from PyPI::

    python3.11 -m venv /work/nnvenv
    /work/nnvenv/bin/pip install torch==2.14.1 nnunetv2==2.8.1

Full-size run (quiet machine; ~12-15 min with the default 600 s nnU-Net limit)::

    .venv/bin/python benchmarks/segment_vs_nnunet_predictor.py --nnunet-venv /work/nnvenv \\
        --threads 2 --nnunet-timeout 600
    # -> benchmarks/results/segment_vs_nnunet_predictor_<date>.json

``--setup-only`` does steps 1-2 below ahead of time (cached under --work and reused by the timed run;
delete --work to rebuild them).
Pipeline check on a small crop of the same CT (minutes; JSON under --work, not in the repository)::

    nice -n 15 .venv/bin/python benchmarks/segment_vs_nnunet_predictor.py --nnunet-venv /work/nnvenv \\
        --test-shape 64 128 128

What it does:

1. The CT: ``segment_end_to_end.make_ct`` (imported, not copied): the real series ``Lung_Dx-A0001_s1``
   (TCIA Lung-PET-CT-Dx, CC BY 4.0; 512×512×64 at 5 mm) linearly interpolated along z to 300 slices
   (1.05 mm), written once under ``--work``. ``--test-shape Z Y X`` crops its centre.
2. nnU-Net's side, set up outside the timing (its training stands for ours): a raw dataset of that one
   CT and a dummy label (one box in the centre: the planner needs a label, the plan does not depend on
   it), ``nnUNetv2_plan_and_preprocess -c 3d_fullres`` (default ``ExperimentPlanner``: the default plan
   for this CT), then a randomly initialised 3d_fullres network saved by nnU-Net's own trainer:
   ``nnUNetTrainer`` built as ``nnUNetv2_train`` builds it (``get_trainer_from_args``, ``initialize``:
   ``build_network_architecture`` from the plans, He init), its mirroring axes set by its own method, and
   ``trainer.save_checkpoint(.../fold_0/checkpoint_final.pth)``, plans.json and dataset.json beside it as
   its ``on_train_start`` writes them. Speed does not depend on the weights.
3. Timed, each in its own child process (wall time; peak RSS = ``ru_maxrss`` of the child tree from
   ``wait4``, i.e. its largest single process, and the PSS of the whole process tree sampled every
   second, which counts nnU-Net's worker processes too):

   * ours: ``.venv/bin/mediastinal-ai segment --input CT --out DIR --device cpu`` (shipped demo model,
     all defaults), once before and once after nnU-Net (load drift); the ratio uses the slower one;
   * nnU-Net: ``nnUNetv2_predict -i IN -o OUT -d 917 -c 3d_fullres -f 0 -device cpu``, all other
     options at their defaults (step 0.5, Gaussian, mirroring TTA on the axes its trainer allows,
     3 preprocessing / 3 export workers). On CPU it sets torch's threads to ``os.cpu_count()``; where
     that differs from ``--threads`` the same predictor calls are made from Python with ``--threads``
     (``--nnunet-entry python``).

   Both get ``OMP_NUM_THREADS=MKL_NUM_THREADS=ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=--threads``.
   nnU-Net is stopped after ``--nnunet-timeout`` seconds (its whole process group): then the JSON says
   "did not finish in T s", how many sliding-window tiles its progress bar had done, and the ratio is a
   **lower bound** (T / ours). Its progress bar's own remaining-time figure is recorded, labelled as
   nnU-Net's estimate.

Output: JSON (``--json``; default benchmarks/results/segment_vs_nnunet_predictor_<UTC date>.json for the
full CT, ``--work``/result.json with ``--test-shape``) with machine, versions, load average before and
after each contender, both times, RSS, the nnU-Net plan (patch size, spacing, stages, features, the
configurations it planned) and whether each finished.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATASET_ID = 917
DATASET = f"Dataset{DATASET_ID}_MediastinalBench"
MODEL_DIR = "nnUNetTrainer__nnUNetPlans__3d_fullres"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")


# ----------------------------------------------------------------------------------- helpers
def nnunet_env(root: Path, threads: int) -> dict[str, str]:
    env = {**os.environ, **{k: str(threads) for k in THREAD_VARS}}
    for k, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"), ("nnUNet_results", "results")):
        env[k] = str(root / sub)
    return env


def tree_pss_mb(root_pid: int) -> float:
    """PSS of ``root_pid`` and all its descendants (shared pages divided among their users), MB."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            kids.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(d))
    total_kb, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        stack += kids.get(pid, [])
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total_kb += int(line.split()[1])
                    break
        except OSError:
            pass
    return total_kb / 1024


def run_child(cmd: list[str], env: dict[str, str], timeout: float, log: Path) -> dict:
    """Run ``cmd`` in its own session; stop its process group after ``timeout`` s."""
    log.parent.mkdir(parents=True, exist_ok=True)
    out, err = open(log.with_suffix(".stdout.txt"), "w"), open(log.with_suffix(".stderr.txt"), "w")
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, start_new_session=True)
    killed = threading.Event()
    done = threading.Event()
    peak_pss = [0.0]

    def stop() -> None:
        killed.set()
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 0.0)):
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                return
            if done.wait(wait):
                return

    def sample() -> None:
        while not done.wait(1.0):
            peak_pss[0] = max(peak_pss[0], tree_pss_mb(p.pid))

    timer = threading.Timer(timeout, stop)
    timer.daemon = True
    timer.start()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, ru = os.wait4(p.pid, 0)
    seconds = time.perf_counter() - t0
    done.set()
    timer.cancel()
    p.returncode = os.waitstatus_to_exitcode(status)
    if killed.is_set():  # leftovers of the group (workers that outlived their parent)
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    out.close()
    err.close()
    return {"command": cmd, "finished": not killed.is_set() and p.returncode == 0,
            "timed_out": killed.is_set(), "exit_code": p.returncode, "seconds": round(seconds, 2),
            "peak_rss_mb_largest_process": round(ru.ru_maxrss / 1024, 1),
            "peak_pss_mb_process_tree_sampled_1s": round(peak_pss[0], 1),
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "stdout": str(log.with_suffix(".stdout.txt")), "stderr": str(log.with_suffix(".stderr.txt"))}


def tail(path: str, n: int = 3000) -> str:
    return Path(path).read_text(errors="replace")[-n:]


def machine_info() -> dict:
    model = ""
    try:
        model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("model name")), "")
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": model or platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "memory_gib": round(mem_gb, 1), "platform": platform.platform(), "python": platform.python_version()}


def versions(python: str, packages: tuple[str, ...]) -> dict:
    code = f"import importlib.metadata as m, json; print(json.dumps({{p: m.version(p) for p in {packages!r}}}))"
    r = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return json.loads(r.stdout) if r.returncode == 0 else {"error": r.stderr[-500:]}


# ----------------------------------------------------------------------------------- the CT
def benchmark_ct(work: Path, test_dir: Path, test_shape: list[int] | None) -> tuple[Path, str]:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from segment_end_to_end import REAL_SERIES, make_ct

    full = work / "ct_real_512x512x300.nii.gz"
    source = f"real series {REAL_SERIES.name} (TCIA Lung-PET-CT-Dx, CC BY 4.0) z-interpolated to 300 slices"
    if not full.is_file():
        make_ct(full)
    if not test_shape:
        return full, source
    import SimpleITK as sitk

    z, y, x = test_shape
    path = test_dir / f"ct_test_{z}x{y}x{x}.nii.gz"
    if not path.is_file():
        img = sitk.ReadImage(str(full))
        size = img.GetSize()
        want = (x, y, z)
        start = [max(0, (s - w) // 2) for s, w in zip(size, want)]
        sitk.WriteImage(sitk.RegionOfInterest(img, [min(w, s) for s, w in zip(size, want)], start), str(path), True)
    return path, source + f", centre cropped to {z}x{y}x{x} voxels (z, y, x) for a pipeline check"


# ------------------------------------------------------------------------------ nnU-Net setup
def nnunet_setup(ct: Path, root: Path, venv: Path, threads: int, timeout: float) -> dict:
    """Raw dataset, nnU-Net's planner and preprocessing, a random checkpoint saved by its trainer."""
    import numpy as np
    import SimpleITK as sitk

    env = nnunet_env(root, threads)
    ds = root / "raw" / DATASET
    model = root / "results" / DATASET / MODEL_DIR
    info: dict = {"dataset": DATASET, "model_folder": str(model)}
    if (model / "fold_0" / "checkpoint_final.pth").is_file() and (model / "plans.json").is_file():
        info["reused_from_earlier_run"] = True
        return info
    for sub in ("imagesTr", "labelsTr"):
        (ds / sub).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ct, ds / "imagesTr" / "bench_0000.nii.gz")
    img = sitk.ReadImage(str(ct))
    lab = np.zeros(sitk.GetArrayViewFromImage(img).shape, np.uint8)
    c = [s // 2 for s in lab.shape]
    h = [max(1, s // 10) for s in lab.shape]
    lab[c[0] - h[0]:c[0] + h[0], c[1] - h[1]:c[1] + h[1], c[2] - h[2]:c[2] + h[2]] = 1
    li = sitk.GetImageFromArray(lab)
    li.CopyInformation(img)
    sitk.WriteImage(li, str(ds / "labelsTr" / "bench.nii.gz"), True)
    (ds / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "tumor": 1}, "numTraining": 1,
        "file_ending": ".nii.gz", "name": "MediastinalBench",
        "description": "benchmark only: one real CT with a dummy label box (plan only, no training)"}, indent=1))
    t0 = time.perf_counter()
    r = run_child([str(venv / "bin" / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "3d_fullres",
                   "-np", "1", "-npfp", "1", "--verify_dataset_integrity", "--no_pbar"], env, timeout,
                  root / "logs" / "plan_and_preprocess")
    if not r["finished"]:
        raise RuntimeError(f"nnUNetv2_plan_and_preprocess failed:\n{tail(r['stderr'])}\n{tail(r['stdout'])}")
    info["plan_and_preprocess_seconds"] = round(time.perf_counter() - t0, 1)
    r = run_child([str(venv / "bin" / "python"), __file__, "--child", "checkpoint", "--work", str(root)], env, timeout,
                  root / "logs" / "random_checkpoint")
    if not r["finished"]:
        raise RuntimeError(f"random checkpoint failed:\n{tail(r['stderr'])}")
    info["checkpoint"] = json.loads(Path(r["stdout"]).read_text().strip().splitlines()[-1])
    return info


def checkpoint_child(root: Path) -> None:
    """Runs under nnU-Net's interpreter: a random 3d_fullres network saved by nnU-Net's own trainer."""
    import numpy as np
    import torch
    from batchgenerators.utilities.file_and_folder_operations import save_json
    from nnunetv2.run.run_training import get_trainer_from_args

    torch.manual_seed(0)
    trainer = get_trainer_from_args(str(DATASET_ID), "3d_fullres", 0, device=torch.device("cpu"))
    trainer.initialize()  # build_network_architecture from the plans (He init), optimizer, loss
    trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()  # its inference mirroring axes
    # as on_train_start: plans and dataset.json beside the folds, for the predictor
    save_json(trainer.plans_manager.plans, os.path.join(trainer.output_folder_base, "plans.json"), sort_keys=False)
    save_json(trainer.dataset_json, os.path.join(trainer.output_folder_base, "dataset.json"), sort_keys=False)
    shutil.copyfile(os.path.join(trainer.preprocessed_dataset_folder_base, "dataset_fingerprint.json"),
                    os.path.join(trainer.output_folder_base, "dataset_fingerprint.json"))
    ckpt = os.path.join(trainer.output_folder, "checkpoint_final.pth")
    trainer.save_checkpoint(ckpt)
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    cm = trainer.configuration_manager
    size = [max(int(s), p) for s, p in zip(cm.median_image_size_in_voxels, cm.patch_size)]
    steps = compute_steps_for_sliding_window(size, cm.patch_size, 0.5)
    net = trainer.network
    print(json.dumps({"sliding_window_tiles_of_the_median_image": int(np.prod([len(s) for s in steps])),"network": type(net).__name__, "parameters": sum(p.numel() for p in net.parameters()),
                      "inference_allowed_mirroring_axes": list(trainer.inference_allowed_mirroring_axes),
                      "checkpoint_mb": round(os.path.getsize(ckpt) / 2**20, 1), "torch_threads": torch.get_num_threads()}))


def plan_summary(root: Path) -> dict:
    plans = json.loads((root / "results" / DATASET / MODEL_DIR / "plans.json").read_text())
    cfg = plans["configurations"]["3d_fullres"]
    arch = cfg.get("architecture", {})
    kw = arch.get("arch_kwargs", {})
    return {
        "planner": plans.get("experiment_planner_used"), "plans_name": plans.get("plans_name"),
        "configurations_planned": sorted(plans["configurations"]),
        "patch_size_zyx": cfg["patch_size"], "spacing_zyx_mm": cfg["spacing"],
        "median_image_size_in_voxels_zyx": cfg.get("median_image_size_in_voxels"), "batch_size": cfg.get("batch_size"),
        "network_class": arch.get("network_class_name"), "n_stages": kw.get("n_stages"),
        "features_per_stage": kw.get("features_per_stage"), "strides": kw.get("strides"),
        "kernel_sizes": kw.get("kernel_sizes"), "conv_norm": (kw.get("norm_op") or "").rsplit(".", 1)[-1],
        "normalization": cfg.get("normalization_schemes"),
        "transpose_forward": plans.get("transpose_forward"),
        "other_configurations": {k: {x: c.get(x) for x in ("patch_size", "spacing", "median_image_size_in_voxels",
                                                          "inherits_from", "previous_stage", "next_stage") if c.get(x)}
                                 for k, c in plans["configurations"].items() if k != "3d_fullres"},
    }


def nnunet_predict_child(args: argparse.Namespace) -> None:
    """Runs under nnU-Net's interpreter: what ``nnUNetv2_predict -device cpu`` does with its defaults,
    with ``--threads`` torch threads instead of os.cpu_count()."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    torch.set_num_threads(args.threads)
    pred = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True, perform_everything_on_device=True,
                           device=torch.device("cpu"), verbose=False, verbose_preprocessing=False, allow_tqdm=True)
    pred.initialize_from_trained_model_folder(args.model_folder, (0,), checkpoint_name="checkpoint_final.pth")
    pred.predict_from_files(args.input_folder, args.output_folder, save_probabilities=False, overwrite=True,
                            num_processes_preprocessing=3, num_processes_segmentation_export=3,
                            folder_with_segs_from_prev_stage=None, num_parts=1, part_id=0)


TQDM = re.compile(r"(\d+)/(\d+) \[([0-9:]+)<([0-9:?]+)(?:, *([0-9.]+)(s/it|it/s))?")


def nnunet_progress(stderr: str) -> dict:
    """The last state of nnU-Net's sliding-window progress bar (tiles done / all, its own time estimate)."""
    text = Path(stderr).read_text(errors="replace").replace("\r", "\n")
    hits = [m for line in text.splitlines() if "Collecting results" not in line for m in TQDM.findall(line)]
    if not hits:
        return {"tiles_done": 0}
    done, total, elapsed, left, rate, unit = hits[-1]
    def secs(s: str) -> float | None:
        if "?" in s:
            return None
        v = 0.0
        for part in s.split(":"):
            v = v * 60 + float(part)
        return v

    per_tile = None if not rate else (float(rate) if unit == "s/it" else 1.0 / float(rate))
    return {"tiles_done": int(done), "tiles_total": int(total), "progress_bar_elapsed_s": secs(elapsed),
            "seconds_per_tile_all_mirrors_nnunet_bar": per_tile,
            "progress_bar_remaining_s_nnunet_estimate": secs(left) if int(done) else None}


# ------------------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nnunet-venv", default="/work/nnvenv", help="virtualenv with nnunetv2 (benchmark only)")
    ap.add_argument("--work", default="/tmp/mediastinal-ai-bench-nnunet", help="scratch folder (outside the repository)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--nnunet-timeout", type=float, default=600.0, help="seconds before nnU-Net's predictor is stopped")
    ap.add_argument("--ours-timeout", type=float, default=600.0)
    ap.add_argument("--nnunet-entry", choices=("auto", "cli", "python"), default="auto",
                    help="cli: nnUNetv2_predict (torch threads = cpu count); python: the same predictor calls with "
                         "--threads; auto: cli where cpu count == --threads")
    ap.add_argument("--test-shape", type=int, nargs=3, metavar=("Z", "Y", "X"),
                    help="crop the CT's centre to this size: a pipeline check, not the benchmark")
    ap.add_argument("--setup-only", action="store_true",
                    help="write the CT, plan it with nnU-Net and save the random checkpoint (cached under --work), "
                         "print the plan, time nothing")
    ap.add_argument("--json")
    ap.add_argument("--child", choices=("checkpoint", "predict"), help=argparse.SUPPRESS)
    ap.add_argument("--model-folder", help=argparse.SUPPRESS)
    ap.add_argument("--input-folder", help=argparse.SUPPRESS)
    ap.add_argument("--output-folder", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child == "checkpoint":
        checkpoint_child(Path(a.work))
        return 0
    if a.child == "predict":
        nnunet_predict_child(a)
        return 0

    started = datetime.now(timezone.utc)
    work = Path(a.work)
    if a.test_shape:
        work = work / ("test_" + "x".join(map(str, a.test_shape)))
    work.mkdir(parents=True, exist_ok=True)
    venv = Path(a.nnunet_venv)
    if not (venv / "bin" / "nnUNetv2_predict").exists():
        sys.exit(f"no nnUNetv2_predict in {venv}: see this script's docstring for the virtualenv")
    ct, source = benchmark_ct(Path(a.work), work, a.test_shape)
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(ct))
    reader.ReadImageInformation()
    ct_size, ct_spacing = reader.GetSize(), reader.GetSpacing()

    summary: dict = {
        "issue": 17, "started_utc": started.isoformat(timespec="seconds"), "ct": str(ct), "ct_source": source,
        "ct_size_xyz": list(ct_size), "ct_spacing_xyz_mm": [round(s, 4) for s in ct_spacing],
        "pipeline_check_only": bool(a.test_shape), "threads": a.threads, "machine": machine_info(),
        "versions": {"ours": versions(sys.executable, ("mediastinal-ai", "torch", "numpy", "SimpleITK")),
                     "nnunet_venv": versions(str(venv / "bin" / "python"),
                                             ("nnunetv2", "torch", "numpy", "dynamic_network_architectures"))},
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    root = work / "nnunet"
    t0 = time.perf_counter()
    summary["nnunet_setup_not_timed"] = nnunet_setup(ct, root, venv, a.threads, max(a.nnunet_timeout, 1800.0))
    summary["nnunet_setup_not_timed"]["seconds"] = round(time.perf_counter() - t0, 1)
    summary["nnunet_plan"] = plan_summary(root)
    print("nnU-Net plan:", json.dumps(summary["nnunet_plan"]), flush=True)
    if a.setup_only:
        print(json.dumps(summary["nnunet_setup_not_timed"], indent=1))
        return 0

    env_ours = {**os.environ, **{k: str(a.threads) for k in THREAD_VARS}}
    cli = Path(sys.executable).parent / "mediastinal-ai"
    ours_cmd = [str(cli)] if cli.exists() else [sys.executable, "-m", "mediastinal_ai.cli"]

    def ours(tag: str) -> dict:
        out = work / f"ours_{tag}"
        shutil.rmtree(out, ignore_errors=True)
        r = run_child([*ours_cmd, "segment", "--input", str(ct), "--out", str(out), "--device", "cpu"], env_ours,
                      a.ours_timeout, work / "logs" / f"ours_{tag}")
        res = out / "segmentation_result.json"
        if r["finished"] and res.is_file():
            info = json.loads(res.read_text())
            inf = info.get("params", {}).get("inference", {})
            r["n_lesions"] = info.get("n_lesions")
            r["inference"] = {k: inf.get(k) for k in ("cropped_to_mediastinum", "windows_per_pass", "tta_passes",
                                                      "precision", "network_seconds", "seconds")}
            r["model"] = (info.get("model") or {}).get("name") if isinstance(info.get("model"), dict) else info.get("model")
        elif not r["finished"]:
            r["error_tail"] = tail(r["stderr"])
        print(f"ours ({tag}):", r["seconds"], "s", "finished" if r["finished"] else "FAILED", flush=True)
        return r

    summary["ours_before_nnunet"] = ours("before")

    entry = a.nnunet_entry
    if entry == "auto":
        entry = "cli" if os.cpu_count() == a.threads else "python"
    inp, outp = work / "nnunet_input", work / "nnunet_output"
    shutil.rmtree(inp, ignore_errors=True)
    shutil.rmtree(outp, ignore_errors=True)
    inp.mkdir(parents=True)
    (inp / "bench_0000.nii.gz").symlink_to(ct.resolve())
    model = root / "results" / DATASET / MODEL_DIR
    if entry == "cli":
        cmd = [str(venv / "bin" / "nnUNetv2_predict"), "-i", str(inp), "-o", str(outp), "-d", str(DATASET_ID),
               "-c", "3d_fullres", "-f", "0", "-device", "cpu"]
    else:
        cmd = [str(venv / "bin" / "python"), __file__, "--child", "predict", "--threads", str(a.threads),
               "--model-folder", str(model), "--input-folder", str(inp), "--output-folder", str(outp)]
    print(f"nnU-Net predictor ({entry}), limit {a.nnunet_timeout:.0f} s ...", flush=True)
    nn = run_child(cmd, nnunet_env(root, a.threads), a.nnunet_timeout, work / "logs" / "nnunet_predict")
    nn["entry"] = entry
    nn["torch_threads"] = os.cpu_count() if entry == "cli" else a.threads
    nn["settings"] = "defaults: step 0.5, Gaussian, mirroring TTA on its trainer's axes, -npp 3 -nps 3, fold 0"
    nn["progress"] = nnunet_progress(nn["stderr"])
    seg = outp / "bench.nii.gz"
    nn["finished"] = nn["finished"] and seg.is_file()
    if nn["finished"]:
        r = sitk.ImageFileReader()
        r.SetFileName(str(seg))
        r.ReadImageInformation()
        nn["output_size_xyz"] = list(r.GetSize())
        nn["output_on_the_ct_grid"] = tuple(r.GetSize()) == tuple(ct_size)
    elif not nn["timed_out"]:
        nn["error_tail"] = tail(nn["stderr"])
    else:
        nn["result"] = f"did not finish in {a.nnunet_timeout:.0f} s"
        nn["peak_memory_is"] = "of the partial run, until it was stopped"
    summary["nnunet_predictor"] = nn
    print("nnU-Net:", nn["seconds"], "s", "finished" if nn["finished"] else nn.get("result", "FAILED"),
          json.dumps(nn["progress"]), flush=True)

    summary["ours_after_nnunet"] = ours("after")
    ours_runs = [r for r in (summary["ours_before_nnunet"], summary["ours_after_nnunet"]) if r["finished"]]
    if ours_runs:
        slow = max(r["seconds"] for r in ours_runs)
        summary["ours_seconds_used_for_ratio"] = slow
        if nn["finished"]:
            summary["ratio_nnunet_over_ours"] = round(nn["seconds"] / slow, 2)
            summary["ratio_is"] = "measured: both finished"
        elif nn["timed_out"]:
            summary["ratio_nnunet_over_ours_at_least"] = round(min(nn["seconds"], a.nnunet_timeout) / slow, 2)
            summary["ratio_is"] = (f"lower bound: nnU-Net did not finish in {a.nnunet_timeout:.0f} s "
                                   f"({nn['progress'].get('tiles_done', 0)} of {nn['progress'].get('tiles_total', '?')} "
                                   "sliding-window tiles done)")
        summary["target_3x_met"] = (summary.get("ratio_nnunet_over_ours") or
                                    summary.get("ratio_nnunet_over_ours_at_least") or 0) >= 3.0
        summary["peak_memory_ratio_nnunet_over_ours_largest_process"] = round(
            nn["peak_rss_mb_largest_process"] / max(r["peak_rss_mb_largest_process"] for r in ours_runs), 2)
    summary["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    summary["finished_utc"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    dest = Path(a.json) if a.json else (work / "result.json" if a.test_shape else
                                        REPO / "benchmarks" / "results" / f"segment_vs_nnunet_predictor_{started:%Y-%m-%d}.json")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(json.dumps({k: v for k, v in summary.items() if k.startswith(("ratio", "target", "ours_seconds"))}, indent=1))
    print("written", dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
