"""The published segmentation recipe as configuration (issue 14): min–max intensity rescaling with
the training set's range, each axial axis scaled on its own, batches holding tumor and background,
the study's decoder block. The demo plan keeps its own choices; both are checked."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")

from mediastinal_ai.errors import InputError, ModelError  # noqa: E402
from mediastinal_ai.segmentation.network import UNet3D  # noqa: E402
from mediastinal_ai.segmentation.plan import Plan, dataset_hu_range, load_config  # noqa: E402
from mediastinal_ai.segmentation.train import _augment, batch_foreground  # noqa: E402
from mediastinal_ai.volume import Volume  # noqa: E402


def test_paper_config_carries_the_published_choices_and_the_demo_its_own():
    paper = Plan(**load_config("segmentation_paper")["plan"])
    assert paper.intensity == "dataset_minmax" and paper.decoder == "deconv_bn_relu"
    tr = load_config("segmentation_paper")["training"]
    assert tr["scale_per_axis"] is True and tr["balanced_batches"] is True
    demo = Plan(**load_config("segmentation_demo")["plan"])
    assert demo.intensity == "window" and demo.decoder == "deconv"
    assert Plan.from_dict(paper.to_dict()) == paper  # the plan travels with the model unchanged
    with pytest.raises(ModelError, match="intensity"):
        Plan(intensity="zscore")
    with pytest.raises(ModelError, match="decoder"):
        Plan(decoder="upsample")


def test_dataset_range_floors_padding_and_refuses_constant_input():
    a = Volume(np.array([[[-3024, -1000], [40, 1500]]], np.int16), (1, 1, 1))
    b = Volume(np.array([[[-900, 0], [2000, 10]]], np.int16), (1, 1, 1))
    assert dataset_hu_range([a, b]) == (-1024.0, 2000.0)
    with pytest.raises(InputError):
        dataset_hu_range([Volume(np.zeros((1, 2, 2), np.int16), (1, 1, 1))])


def test_training_stores_the_training_sets_range_in_the_plan(tmp_path):
    from mediastinal_ai.segmentation.train import prepare_cases
    from mediastinal_ai.synthetic import generate_cohort

    m = generate_cohort(3, tmp_path / "c", seed=50, inplane_size=64)
    plan = Plan(target_spacing_xyz=(5.0, 5.0, 5.0), patch_size_zyx=(8, 32, 32), intensity="dataset_minmax")
    data = prepare_cases(m, plan)
    from mediastinal_ai.cohort import read_manifest
    from mediastinal_ai.io import read_ct

    cases = read_manifest(m)
    train_ids = {c.case_id for c in data["train"]}
    expect = dataset_hu_range(read_ct(c.ct) for c in cases if c.case_id in train_ids)
    assert plan.hu_window == expect
    assert all(0.0 <= c.image.min() and c.image.max() <= 1.0 for c in data["train"])


def test_axial_axes_are_scaled_independently_only_when_asked():
    img = np.zeros((4, 40, 40), np.float32)
    img[:, 10:30, 10:30] = 1
    shapes = set()
    for seed in range(6):
        rng = np.random.default_rng(seed)
        out, _ = _augment(img, img.astype(np.uint8), rng, 0.0, (0.7, 1.3), scale_per_axis=True)
        shapes.add(out.shape[1] != out.shape[2])
    assert True in shapes, "y and x were never scaled differently"
    for seed in range(6):
        out, _ = _augment(img, img.astype(np.uint8), np.random.default_rng(seed), 0.0, (0.7, 1.3))
        assert out.shape[1] == out.shape[2]


def test_balanced_batches_hold_tumor_and_background():
    assert batch_foreground(3, 0.67, True) == [1.0, 1.0, 0.0]
    assert batch_foreground(2, 0.9, True) == [1.0, 0.0]
    assert batch_foreground(1, 0.67, True) == [1.0]
    assert batch_foreground(3, 0.67, False) == [0.67] * 3


def test_study_decoder_block_has_bn_and_relu_after_the_deconv():
    net = UNet3D((4, 8, 8, 16), decoder="deconv_bn_relu")
    up = net.up[0]
    kinds = [type(m).__name__ for m in up]
    assert kinds == ["ConvTranspose3d", "BatchNorm3d", "ReLU"]
    assert net(torch.zeros(1, 1, 16, 16, 16)).shape == (1, 1, 16, 16, 16)
    assert isinstance(UNet3D((4, 8, 8, 16)).up[0], torch.nn.ConvTranspose3d)  # the demo model's layout


# --- intensity augmentation: a labelled deviation the demo config turns on (mediastinal_ai/segmentation/augment.py)

from mediastinal_ai.segmentation.augment import IntensityAugmentation  # noqa: E402

HU = (-200.0, 300.0)  # 500 HU across [0, 1]
SPACING_ZYX = (5.0, 2.5, 2.5)


def test_paper_recipe_has_no_intensity_augmentation_and_the_demo_has_it():
    assert IntensityAugmentation.from_config(load_config("segmentation_paper")["training"]
                                             .get("intensity_augmentation")) is None
    demo = IntensityAugmentation.from_config(load_config("segmentation_demo")["training"]["intensity_augmentation"])
    assert demo is not None and demo.p_noise > 0 and demo.p_blur > 0
    assert IntensityAugmentation.from_config(demo.to_dict()) == demo  # what the card records rebuilds it


@pytest.mark.parametrize("bad, what", [
    ({"p_nois": 0.3}, "unknown"), ({"p_noise": 1.5}, "probability"), ({"p_noise": "often"}, "probability"),
    ({"noise_sd_hu": [50, 10]}, "pair"), ({"gamma_range": 1.2}, "pair"), ({"blur_sigma_mm": [0.5, "x"]}, "pair"),
    ([0.3], "mapping")])
def test_bad_intensity_settings_are_refused_by_name(bad, what):
    with pytest.raises(InputError, match=what):
        IntensityAugmentation.from_config(bad)


def test_noise_is_drawn_in_hounsfield_units():
    img = np.full((8, 64, 64), 0.5, np.float32)
    aug = IntensityAugmentation(p_noise=1.0, noise_sd_hu=(30.0, 30.0))
    out = aug(img, np.random.default_rng(0), hu_range=HU, spacing_zyx=SPACING_ZYX)
    sd_hu = float(np.std(out - img)) * (HU[1] - HU[0])
    assert 28.5 < sd_hu < 31.5
    # the same HU amount is a different [0, 1] amount under a wider window
    out_wide = aug(img, np.random.default_rng(0), hu_range=(-1000.0, 1000.0), spacing_zyx=SPACING_ZYX)
    assert float(np.std(out_wide - img)) * 2000.0 == pytest.approx(sd_hu, rel=0.05)


def test_blur_acts_in_plane_in_millimetres():
    img = np.zeros((9, 41, 41), np.float32)
    img[4, 20, 20] = 1.0
    aug = IntensityAugmentation(p_blur=1.0, blur_sigma_mm=(5.0, 5.0))
    out = aug(img, np.random.default_rng(0), hu_range=HU, spacing_zyx=SPACING_ZYX)
    assert out[3].max() == 0 and out[5].max() == 0  # no spread across slices
    prof = out[4, 20] / out[4, 20].sum()
    x = np.arange(41) - 20
    sigma_vox = float(np.sqrt((prof * x ** 2).sum()))
    assert sigma_vox == pytest.approx(5.0 / 2.5, rel=0.05)  # 5 mm on 2.5 mm pixels


def test_output_stays_in_the_range_the_network_sees_and_off_means_unchanged():
    rng = np.random.default_rng(1)
    img = rng.random((8, 32, 32)).astype(np.float32)
    strong = IntensityAugmentation(p_noise=1, noise_sd_hu=(200, 200), p_sharpen=1, sharpen_amount=(3, 3),
                                   p_brightness=1, brightness_hu=(150, 150), p_contrast=1, contrast_range=(2, 2),
                                   p_gamma=1, gamma_range=(0.5, 0.5))
    out = strong(img, rng, hu_range=HU, spacing_zyx=SPACING_ZYX)
    assert out.dtype == np.float32 and 0.0 <= out.min() and out.max() <= 1.0 and np.isfinite(out).all()
    assert not np.allclose(out, img)
    off = IntensityAugmentation()(img, np.random.default_rng(2), hu_range=HU, spacing_zyx=SPACING_ZYX)
    assert np.array_equal(off, img)


def test_training_patches_get_the_intensity_augmentation_only_with_a_plan():
    from mediastinal_ai.segmentation.train import PreparedCase, random_patch

    img = np.full((16, 80, 80), 0.5, np.float32)
    msk = np.zeros(img.shape, np.uint8)
    msk[6:10, 30:50, 30:50] = 1
    case = PreparedCase("c", img, msk)
    plan = Plan(target_spacing_xyz=(2.5, 2.5, 5.0), patch_size_zyx=(8, 32, 32), hu_window=HU)
    aug = IntensityAugmentation(p_noise=1.0, noise_sd_hu=(40.0, 40.0))
    plain, _ = random_patch(case, (8, 32, 32), np.random.default_rng(3), 1.0, rot_deg=0.0, scale_range=(1, 1))
    noisy, m = random_patch(case, (8, 32, 32), np.random.default_rng(3), 1.0, rot_deg=0.0, scale_range=(1, 1),
                            intensity=aug, plan=plan)
    assert float(np.std(plain)) < 1e-3 and float(np.std(noisy)) * 500 > 30
    assert m.shape == (8, 32, 32)
    with pytest.raises(ValueError, match="plan"):
        random_patch(case, (8, 32, 32), np.random.default_rng(3), 1.0, intensity=aug)


def test_batch_dice_is_one_dice_over_the_batch_and_per_patch_dice_punishes_empty_patches():
    """Why the demo trains with batch Dice: on a batch of one tumour patch predicted right and one
    background patch with a few false-positive voxels, per-patch Dice calls the background patch
    almost a total failure; batch Dice counts only the false positives it adds."""
    from mediastinal_ai.segmentation.train import dice_loss

    t = torch.zeros(2, 1, 4, 8, 8)
    t[0, :, 1:3, 2:6, 2:6] = 1  # 32 tumour voxels in patch 0, none in patch 1
    logit = torch.where(t > 0, torch.tensor(20.0), torch.tensor(-20.0))
    logit[1, 0, 0, 0, :4] = 20.0  # 4 false-positive voxels in the background patch
    p = torch.sigmoid(logit)
    per = dice_loss(logit, t)
    batch = dice_loss(logit, t, mode="batch")
    inter, total = float((p * t).sum()), float(p.sum() + t.sum())
    assert float(batch) == pytest.approx(1 - (2 * inter + 1) / (total + 1), abs=1e-6)
    per_by_hand = np.mean([1 - (2 * float((p[i] * t[i]).sum()) + 1) / (float(p[i].sum() + t[i].sum()) + 1)
                           for i in range(2)])
    assert float(per) == pytest.approx(per_by_hand, abs=1e-6)
    assert float(per) > 0.35 and float(batch) < 0.07  # 4 stray voxels: ~0.4 per patch, ~0.06 over the batch
    with pytest.raises(ValueError, match="Dice mode"):
        dice_loss(logit, t, mode="mean")


def test_dice_ce_adds_binary_cross_entropy_and_keeps_teaching_on_empty_patches():
    """Why ``training.loss: dice_ce``: on a batch with no tumour at all, batch Dice is already
    at its floor for a faint false-positive haze (its gradient per voxel is tiny), while
    cross-entropy still pushes every voxel of it down; the sum is Dice + BCE exactly."""
    from mediastinal_ai.segmentation.train import dice_loss, segmentation_loss

    t = torch.zeros(2, 1, 4, 8, 8)
    t[0, :, 1:3, 2:6, 2:6] = 1
    logit = torch.full_like(t, -2.0)
    logit[t > 0] = 3.0
    both = segmentation_loss(logit, t, "dice_ce", "batch")
    bce = float(torch.nn.functional.binary_cross_entropy_with_logits(logit, t))
    p = torch.sigmoid(logit)
    bce_by_hand = float(-(t * torch.log(p) + (1 - t) * torch.log(1 - p)).mean())
    assert bce == pytest.approx(bce_by_hand, rel=1e-5)
    assert float(both) == pytest.approx(float(dice_loss(logit, t, mode="batch")) + bce, abs=1e-6)
    assert float(segmentation_loss(logit, t, "dice", "batch")) == pytest.approx(
        float(dice_loss(logit, t, mode="batch")), abs=1e-7)
    # a tumour-free batch with a faint haze: Dice's gradient per voxel is far below cross-entropy's
    empty = torch.zeros(2, 1, 4, 8, 8)
    haze = torch.full_like(empty, -2.0, requires_grad=True)
    segmentation_loss(haze, empty, "dice", "batch").backward()
    g_dice = float(haze.grad.abs().mean())
    haze.grad = None
    segmentation_loss(haze, empty, "dice_ce", "batch").backward()
    g_both = float(haze.grad.abs().mean())
    assert g_both > 5 * g_dice
    with pytest.raises(ValueError, match="unknown loss"):
        segmentation_loss(logit, t, "focal")


def test_training_refuses_an_unknown_loss_by_name(tmp_path):
    from mediastinal_ai.segmentation.train import train

    cfg = {"plan": {"target_spacing_xyz": [4.0, 4.0, 4.0], "patch_size_zyx": [8, 16, 16],
                    "features": [2, 4, 8, 16]},
           "training": {"loss": "focal"}}
    with pytest.raises(InputError, match="training.loss"):
        train("unused.csv", tmp_path, cfg, prepared={"train": [], "val": []}, device="cpu")


def test_demo_tool_never_trains_on_the_held_out_patient():
    """The demo model's real-background figures are honest only if the held-out patient's series
    are in no training background, whichever patient is held out."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "make_demo_segmentation.py"
    spec = importlib.util.spec_from_file_location("make_demo_segmentation", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert set(tool.PATIENTS) == {"A0001", "A0002"} and tool.DEFAULT_HELD_OUT == "A0001"
    for held_out, series in tool.PATIENTS.items():
        train, test = tool.backgrounds(held_out)
        assert test == series and not set(train) & set(test)
        assert not any(held_out in b for b in train)
        other = next(p for p in tool.PATIENTS if p != held_out)
        assert set(tool.PATIENTS[other]) <= set(train) and set(tool.OTHER_BACKGROUNDS) <= set(train)
    with pytest.raises(SystemExit):
        tool.backgrounds("A0003")


def _val_case(kind, blocks, mask_block=None, shape=(8, 32, 32)):
    from mediastinal_ai.segmentation.train import PreparedCase

    img = np.zeros(shape, np.float32)
    for b in blocks:
        img[b] = 1.0
    m = np.zeros(shape, np.uint8)
    if mask_block is not None:
        m[mask_block] = 1
    return PreparedCase(f"{kind}-{len(blocks)}", img, m, kind)


def test_validation_reports_real_ct_figures_and_the_real_selection_score():
    """A net that thresholds its input at 0.5 makes every figure computable by hand: a phantom
    found exactly, an insertion into real CT half found, a real negative with two false regions."""
    from mediastinal_ai.segmentation.train import _validate

    class Threshold(torch.nn.Module):
        def forward(self, x):
            return 20.0 * (x - 0.5)

    plan = Plan(target_spacing_xyz=(4.0, 4.0, 4.0), patch_size_zyx=(8, 16, 16), features=(2, 4, 8, 16))
    block = (slice(2, 6), slice(4, 12), slice(4, 12))
    half = (slice(2, 6), slice(4, 12), slice(4, 8))
    cases = [_val_case("phantom", [block], block),
             _val_case("synthetic-on-real", [half], block),
             _val_case("real-negative", [(slice(1, 3), slice(2, 5), slice(2, 5)),
                                         (slice(5, 7), slice(20, 24), slice(20, 24))])]
    val = _validate(Threshold(), plan, cases, "cpu")
    d_half = 2 * 128 / (128 + 256)
    assert val["dice"] == pytest.approx((1.0 + d_half + 0.0) / 3, abs=1e-6)
    assert val["dice_real"] == pytest.approx(d_half, abs=1e-6)
    assert val["fp_regions_negatives"] == 2
    assert val["real"] == pytest.approx((d_half + 1 / 3) / 2, abs=1e-6)
    only_phantoms = _validate(Threshold(), plan, cases[:1], "cpu")
    assert only_phantoms["real"] is None and only_phantoms["dice_real"] is None
    assert only_phantoms["fp_regions_negatives"] is None


def test_case_kind_from_the_manifest():
    from types import SimpleNamespace

    from mediastinal_ai.segmentation.train import case_kind

    assert case_kind(SimpleNamespace(extra={"synthetic_kind": "real-negative"}, synthetic=True)) == "real-negative"
    assert case_kind(SimpleNamespace(extra={"synthetic_kind": "synthetic-on-real"}, synthetic=True)) \
        == "synthetic-on-real"
    assert case_kind(SimpleNamespace(extra={}, synthetic=True)) == "phantom"
    assert case_kind(SimpleNamespace(extra={}, synthetic=False)) == "real"


def test_selection_on_real_ct_needs_real_validation_cases(tmp_path):
    from mediastinal_ai.segmentation.train import train

    cfg = {"plan": {"target_spacing_xyz": [4.0, 4.0, 4.0], "patch_size_zyx": [8, 16, 16],
                    "features": [2, 4, 8, 16]},
           "training": {"select_on": "real", "epochs": 1, "iterations_per_epoch": 1, "batch_size": 1}}
    block = (slice(2, 6), slice(4, 12), slice(4, 12))
    phantom = _val_case("phantom", [block], block)
    with pytest.raises(InputError, match="no case on real CT"):
        train("m.csv", tmp_path, cfg, prepared={"train": [phantom], "val": [phantom]}, device="cpu")
    with pytest.raises(InputError, match="training.select_on"):
        train("m.csv", tmp_path, {**cfg, "training": {"select_on": "loss"}}, prepared={"train": [], "val": []},
              device="cpu")
    real = _val_case("synthetic-on-real", [block], block)
    summary = train("m.csv", tmp_path / "ok", cfg, prepared={"train": [phantom], "val": [phantom, real]},
                    device="cpu")
    assert summary["selected_on"] == "real" and summary["best_val_selection_score"] >= 0
    import csv

    with open(tmp_path / "ok" / "training_log.csv", encoding="utf-8") as f:
        row = next(csv.DictReader(f))
    assert set(row) >= {"val_dice", "val_dice_real", "val_fp_regions_negatives", "val_real"}
    assert row["val_fp_regions_negatives"] == "" and row["val_real"] != ""
