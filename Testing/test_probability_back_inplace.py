"""The crop's maps are written straight into the whole-CT maps (issue 17: no second crop-sized
copy): the values must be those of the separate arrays, and nothing outside the crop is written."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("SimpleITK", reason="SimpleITK is not installed")

from mediastinal_ai.segmentation.inference import PROBABILITY_FLOOR, _back_to_ct_grid, _sub_grid  # noqa: E402
from mediastinal_ai.volume import Volume  # noqa: E402


def test_writing_into_views_of_the_whole_map_equals_new_arrays():
    rng = np.random.default_rng(7)
    work = Volume(np.zeros((10, 24, 30), np.float32), spacing_xyz=(2.5, 2.5, 5.0), origin_xyz=(-30.3, 2.1, -90.0))
    sub = Volume(np.zeros((38, 70, 90), np.int16), spacing_xyz=(0.8, 0.8, 1.25), origin_xyz=(-31.0, 1.2, -92.1))
    zz, yy, xx = np.indices(work.shape)
    mean = np.exp(-((zz - 5) ** 2 / 2.0 + (yy - 12) ** 2 / 9.0 + (xx - 9) ** 2 / 9.0)).astype(np.float32)
    mean += rng.random(work.shape).astype(np.float32) * PROBABILITY_FLOOR * 0.5
    sd = mean * (1 - mean) * 0.4
    want = _back_to_ct_grid([mean, sd], work, sub)
    whole = [np.full((50, 80, 100), -1.0, np.float32) for _ in range(2)]
    box = (slice(5, 43), slice(3, 73), slice(10, 100))
    for w in whole:
        w[box] = 0.0  # the caller's crop starts zero-filled
    got = _back_to_ct_grid([mean, sd], work, sub, out=[w[box] for w in whole])
    for g, w, ref in zip(got, whole, want):
        assert ref.max() > 0.05  # the blob (and its SD) reached the CT grid
        np.testing.assert_array_equal(w[box], ref)
        np.testing.assert_array_equal(g, ref)
        outside = np.ones(w.shape, bool)
        outside[box] = False
        assert (w[outside] == -1.0).all()


def test_sub_grid_has_the_geometry_of_the_box_and_no_voxels():
    vol = Volume(np.zeros((20, 30, 40), np.int16), spacing_xyz=(0.7, 0.8, 2.0), origin_xyz=(1.0, 2.0, 3.0))
    box = (slice(2, 9), slice(5, 30), slice(1, 4))
    g = _sub_grid(vol, box)
    assert g.shape == (7, 25, 3)
    assert g.array.nbytes <= 1 or g.array.strides == (0, 0, 0)
    np.testing.assert_allclose(g.origin_xyz, vol.index_to_lps(np.array([1.0, 5.0, 2.0])))
    assert g.spacing_xyz == vol.spacing_xyz
