"""Post-processing works inside the box of the voxels over the threshold (issue 17: no whole-volume
int32 passes on a 512×512×300 CT). Its answers must be those of labelling and measuring the whole
volume: same labels, same lesion rows, same mask."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mediastinal_ai.segmentation.inference import postprocess_full
from mediastinal_ai.segmentation.postprocess import (
    MIN_LESION_VOXELS,
    components,
    foreground_box,
    label_boxes,
    lesion_table,
)
from mediastinal_ai.volume import Volume


def _whole_volume_components(binary: np.ndarray, min_voxels: int = MIN_LESION_VOXELS) -> np.ndarray:
    """The reference: label the whole volume, drop small components, renumber by size (stable)."""
    lab, n = ndimage.label(binary, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    keep = [i + 1 for i in np.argsort(-sizes, kind="stable") if sizes[i] >= min_voxels]
    remap = np.zeros(n + 1, np.int32)
    remap[keep] = np.arange(1, len(keep) + 1)
    return remap[lab]


def _blobs(rng: np.random.Generator, shape, n: int, edge: bool = False) -> np.ndarray:
    """Probability-like map: ``n`` blobs of random size (some equal-sized, some under 10 voxels)."""
    p = np.zeros(shape, np.float32)
    zz, yy, xx = np.indices(shape)
    for k in range(n):
        c = [rng.integers(0, s) for s in shape]
        if edge and k == 0:
            c = [0, shape[1] - 1, 0]  # touching three faces of the volume
        r = rng.uniform(0.8, 4.0)
        d = ((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) / r ** 2
        p = np.maximum(p, np.exp(-d).astype(np.float32))
    p[shape[0] // 2, 3:6, 3:6] = 0.9  # two identical 9-voxel plates: dropped (< 10 voxels)
    p[shape[0] // 2, 10:13, 3:6] = 0.9
    return p


@pytest.mark.parametrize("seed", range(6))
def test_components_in_the_box_equal_whole_volume_labelling(seed):
    rng = np.random.default_rng(seed)
    shape = (23, 40, 37)
    binary = _blobs(rng, shape, 3 + seed * 3, edge=seed % 2 == 1) >= 0.5
    labels, n = components(binary)
    ref = _whole_volume_components(binary)
    assert labels.dtype == np.int32
    assert np.array_equal(labels, ref)
    assert n == ref.max()
    assert n >= 1


def test_empty_and_full_volumes():
    labels, n = components(np.zeros((5, 6, 7), bool))
    assert n == 0 and labels.shape == (5, 6, 7) and not labels.any()
    assert foreground_box(np.zeros((5, 6, 7), bool)) is None
    full = np.ones((5, 6, 7), bool)
    labels, n = components(full)
    assert n == 1 and (labels == 1).all()
    assert foreground_box(full, margin=2) == (slice(0, 5), slice(0, 6), slice(0, 7))


def test_foreground_box_and_label_boxes():
    b = np.zeros((10, 12, 14), bool)
    b[2, 3, 4] = b[6, 9, 5] = True
    assert foreground_box(b) == (slice(2, 7), slice(3, 10), slice(4, 6))
    assert foreground_box(b, margin=3) == (slice(0, 10), slice(0, 12), slice(1, 9))
    labels, _ = components(b, min_voxels=1)
    assert label_boxes(labels, foreground_box(b, margin=1)) == ndimage.find_objects(labels)


@pytest.mark.parametrize("seed", range(4))
def test_postprocess_equals_whole_volume_measurement(seed):
    rng = np.random.default_rng(100 + seed)
    shape = (21, 33, 30)
    prob = _blobs(rng, shape, 6, edge=seed % 2 == 0)
    hu = rng.normal(30, 40, shape).astype(np.float32)
    ct = Volume(hu, spacing_xyz=(0.7, 0.8, 2.5), origin_xyz=(-40.2, 10.5, -300.0))
    sd = (prob * (1 - prob) * 0.3).astype(np.float32)
    mask, labels, rows, dropped = postprocess_full(ct, ct.with_array(prob, units="probability"), 0.5,
                                                   uncertainty=ct.with_array(sd, units="uncertainty"))
    ref = _whole_volume_components(prob >= 0.5)
    ref_rows = lesion_table(ref, ct, prob)  # whole-volume find_objects
    assert np.array_equal(labels, ref)
    assert np.array_equal(mask.array, (ref > 0).astype(np.uint8))
    assert mask.array.dtype == np.uint8
    assert len(rows) == len(ref_rows) >= 1 and dropped == []
    for got, want in zip(rows, ref_rows):
        assert {k: got[k] for k in want} == want
        sel = ref == want["lesion_id"]
        assert got["confidence"] == round(float(prob[sel].mean()), 3)
        assert got["mean_uncertainty"] == round(float(sd[sel].mean()), 4)


def test_postprocess_with_nothing_over_the_threshold():
    ct = Volume(np.zeros((8, 9, 10), np.float32))
    mask, labels, rows, dropped = postprocess_full(ct, ct.with_array(np.full((8, 9, 10), 0.2, np.float32)), 0.5,
                                                   uncertainty=ct.with_array(np.zeros((8, 9, 10), np.float32)))
    assert rows == [] and dropped == [] and not mask.array.any() and not labels.any()


@pytest.mark.parametrize(("shape", "dtype"), [((3, 4, 5), np.float32), ((64, 128, 130), np.float32),
                                               ((40, 128, 128), np.int32), ((70, 128, 128), np.uint8)])
def test_lazy_zeros_is_a_zero_filled_writable_array(shape, dtype):
    from mediastinal_ai.segmentation.postprocess import lazy_zeros

    a = lazy_zeros(shape, dtype)
    assert a.shape == shape and a.dtype == np.dtype(dtype) and a.flags.writeable and a.flags.c_contiguous
    assert not a.any()
    a[1, 2, 3] = 7
    a[-1, -1, -1] = 1
    assert int(a.sum()) == 8 and a[1, 2, 3] == 7
    b = lazy_zeros(shape, dtype)  # its own memory
    assert not b.any()
