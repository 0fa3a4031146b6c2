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
