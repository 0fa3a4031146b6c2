"""Segmentation training loop (files, best checkpoint, resume) and inference memory bounds,
on tiny hand-made volumes and a tiny randomly initialised network (fast on 2 CPU cores)."""

from __future__ import annotations

import csv
import json
import tracemalloc

import numpy as np
import pytest

from mediastinal_ai.errors import InputError
from mediastinal_ai.volume import Volume

torch = pytest.importorskip("torch")
torch.set_num_threads(2)

TINY = {"plan": {"target_spacing_xyz": [2.5, 2.5, 5.0], "hu_window": [-200, 300], "patch_size_zyx": [8, 32, 32],
                 "features": [4, 8, 16, 32]},
        "training": {"epochs": 2, "iterations_per_epoch": 3, "batch_size": 2, "learning_rate": 0.001,
                     "foreground_fraction": 0.5, "rotation_deg": 10, "scale_range": [0.8, 1.2],
                     "validation_every": 1}}


def _cases(n: int):
    from mediastinal_ai.segmentation.train import PreparedCase

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        img = rng.normal(0.3, 0.05, (12, 40, 40)).astype(np.float32)
        m = np.zeros(img.shape, np.uint8)
        m[3:9, 10 + i:22 + i, 12:24] = 1
        img[m > 0] += 0.4
        out.append(PreparedCase(f"c{i}", np.clip(img, 0, 1), m))
    return {"train": out[:-1], "val": out[-1:], "test": []}


def test_training_writes_card_log_curves_and_resumes(tmp_path):
    from mediastinal_ai.models import resolve
    from mediastinal_ai.segmentation import load_model
    from mediastinal_ai.segmentation.train import train

    data = _cases(3)
    s = train("hand-made", tmp_path, TINY, device="cpu", name="tiny-seg", demo=True, prepared=data)
    for f in ("tiny-seg.safetensors", "tiny-seg.model.json", "checkpoint.pt", "training_log.csv",
              "training_curves.png", "training_summary.json"):
        assert (tmp_path / f).is_file(), f
    assert 0.0 <= s["best_val_dice"] <= 1.0
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)  # tensors only: safe loader works
    assert int(ck["epoch"]) == 1 and "state" in ck["optimizer"]
    s2 = train("hand-made", tmp_path, TINY, epochs=3, device="cpu", name="tiny-seg", demo=True, resume=True,
               prepared=data)
    rows = list(csv.DictReader(open(tmp_path / "training_log.csv", encoding="utf-8")))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]  # resumed at epoch 2, history kept
    assert s2["best_val_dice"] >= s["best_val_dice"]
    card = json.loads((tmp_path / "tiny-seg.model.json").read_text())
    assert card["demo"] and card["task"] == "segmentation" and card["preprocessing"]["plan"]["features"] == [4, 8, 16, 32]
    m = load_model(resolve(tmp_path / "tiny-seg.model.json"), device="cpu")
    assert m.plan.patch_size_zyx == (8, 32, 32)


def test_random_patches_hold_tumor_and_background():
    from mediastinal_ai.segmentation.train import random_patch

    case = _cases(2)["train"][0]
    rng = np.random.default_rng(1)
    fg = [random_patch(case, (8, 32, 32), rng, 1.0)[1].sum() for _ in range(6)]
    assert all(f > 0 for f in fg)  # tumor-centred crops contain tumor after rotation/scaling
    bg = [random_patch(case, (8, 32, 32), rng, 0.0) for _ in range(6)]
    assert all(x.shape == (8, 32, 32) and y.shape == (8, 32, 32) for x, y in bg)
    assert any((y == 0).all() or y.mean() < 0.5 for _, y in bg)


def _tiny_model():
    from mediastinal_ai.models import ModelCard
    from mediastinal_ai.segmentation.model_io import SegmentationModel
    from mediastinal_ai.segmentation.network import UNet3D
    from mediastinal_ai.segmentation.plan import Plan

    torch.manual_seed(0)
    plan = Plan(**{**TINY["plan"], "patch_size_zyx": [16, 64, 64]})
    return SegmentationModel(UNet3D(plan.features).eval(), plan, ModelCard("tiny", "segmentation", ""), "tiny")


def test_inference_memory_is_bounded_on_a_larger_ct():
    """A 100x256x256 CT (13 MB as int16): peak Python/numpy allocation during the whole pipeline
    stays under 16 CT-sized int16 copies — i.e. a few float32 maps (probability, labels), never
    float64 copies of the CT at its own grid stacked up (each of those alone is 4 copies)."""
    from mediastinal_ai.segmentation import segment_volume

    rng = np.random.default_rng(0)
    a = rng.normal(40, 20, (100, 256, 256)).astype(np.int16)
    ct = Volume(a, spacing_xyz=(1.0, 1.0, 2.5))
    model = _tiny_model()
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    res = segment_volume(ct, model, threshold=0.5)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    assert res.probability.array.dtype == np.float32 and res.probability.shape == ct.shape
    assert peak < 16 * a.nbytes, f"peak {peak / 1e6:.0f} MB for a {a.nbytes / 1e6:.0f} MB CT"


def test_roi_box_restricts_lesions():
    from mediastinal_ai.segmentation import postprocess

    ct = Volume(np.zeros((10, 40, 40), np.int16), spacing_xyz=(1.0, 1.0, 2.0))
    p = np.zeros(ct.shape, np.float32)
    p[2:6, 2:10, 2:10] = 0.9
    p[2:6, 25:35, 25:35] = 0.8
    _, _, all_lesions = postprocess(ct, ct.with_array(p, units="probability"), 0.5)
    assert len(all_lesions) == 2
    _, _, inside = postprocess(ct, ct.with_array(p, units="probability"), 0.5, roi_lps=(20, 20, 0, 39, 39, 18))
    assert len(inside) == 1 and inside[0]["max_probability"] == pytest.approx(0.8)
    with pytest.raises(InputError, match="threshold"):
        postprocess(ct, ct.with_array(p, units="probability"), 1.5)


def test_cli_dicom_seg_refused_for_nifti(tmp_path, capsys):
    from mediastinal_ai import cli
    from mediastinal_ai.io import write_image

    ct = write_image(Volume(np.zeros((10, 32, 32), np.int16), spacing_xyz=(3.0, 3.0, 5.0)), tmp_path / "ct.nii.gz")
    rc = cli.main(["segment", "--input", str(ct), "--out", str(tmp_path / "o"), "--dicom-seg"])
    assert rc != 0
    assert "--dicom-seg needs a DICOM series" in capsys.readouterr().err
