"""The probability map goes back to the CT grid only around what the network found (issue 17):
the answer must equal resampling the whole map, clipped and floored, voxel for voxel."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("SimpleITK", reason="SimpleITK is not installed")

from mediastinal_ai.segmentation.inference import PROBABILITY_FLOOR, _back_to_ct_grid  # noqa: E402
from mediastinal_ai.segmentation.plan import resample  # noqa: E402
from mediastinal_ai.volume import Volume  # noqa: E402


def _whole_map(a: np.ndarray, work: Volume, sub: Volume) -> np.ndarray:
    full = resample(work.with_array(a.astype(np.float32), units="probability"), sub.spacing_xyz, reference=sub,
                    default=0.0).array
    full = np.clip(full, 0.0, 1.0)
    full[full < PROBABILITY_FLOOR] = 0.0
    return full


def _maps(rng: np.random.Generator, shape: tuple[int, int, int], blobs: list[tuple[int, int, int]]) -> np.ndarray:
    a = rng.random(shape).astype(np.float32) * PROBABILITY_FLOOR * 0.9  # cold everywhere, never exactly 0
    zz, yy, xx = np.indices(shape)
    for cz, cy, cx in blobs:
        a += np.exp(-((zz - cz) ** 2 / 2.0 + (yy - cy) ** 2 / 8.0 + (xx - cx) ** 2 / 8.0)).astype(np.float32)
    return np.clip(a, 0, 1)


@pytest.mark.parametrize("blobs", [[(6, 20, 30)], [(2, 5, 40), (11, 30, 8)], [(0, 0, 0)], [(13, 35, 43)]])
def test_back_to_the_ct_grid_equals_resampling_the_whole_map(blobs):
    rng = np.random.default_rng(len(blobs))
    # network grid 2.5 x 2.5 x 5 mm, CT grid 0.8 x 0.8 x 1.25 mm, origins that do not line up
    work = Volume(np.zeros((14, 36, 44), np.float32), spacing_xyz=(2.5, 2.5, 5.0), origin_xyz=(-50.3, 12.1, -700.0))
    sub = Volume(np.zeros((54, 110, 135), np.float32), spacing_xyz=(0.8, 0.8, 1.25), origin_xyz=(-51.0, 11.2, -702.1))
    mean = _maps(rng, work.shape, blobs)
    sd = mean * (1 - mean) * 0.5
    got = _back_to_ct_grid([mean, sd], work, sub)
    for a, g in zip((mean, sd), got):
        want = _whole_map(a, work, sub)
        assert want.max() > 0.5 or a.max() < 0.5  # the blob reached the CT grid
        np.testing.assert_array_equal(g, want)


def test_nothing_found_gives_zeros_without_resampling(monkeypatch):
    import mediastinal_ai.segmentation.inference as inf

    def no_resample(*a, **k):
        raise AssertionError("resampled a map that holds nothing")

    monkeypatch.setattr(inf, "resample", no_resample)
    work = Volume(np.full((4, 8, 8), PROBABILITY_FLOOR / 2, np.float32), spacing_xyz=(2.0, 2.0, 2.0))
    sub = Volume(np.zeros((8, 16, 16), np.float32), spacing_xyz=(1.0, 1.0, 1.0))
    out = inf._back_to_ct_grid([work.array, work.array], work, sub)
    assert all(o.shape == sub.shape and not o.any() for o in out)
