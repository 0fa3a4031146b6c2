"""Probability maps on disk (issue 17): uint16 fixed point that re-thresholds exactly, old float
maps still read, a header that lies refused, and the MRML import reads both formats."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mediastinal_ai.errors import InputError
from mediastinal_ai.io import read_image, write_image
from mediastinal_ai.io.probability import (
    PROBABILITY_SCALE,
    SCALE_KEY,
    quantise,
    read_probability,
    write_probability,
)
from mediastinal_ai.volume import Volume


def _prob(shape=(20, 40, 40), seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    p = rng.random(shape, dtype=np.float32)
    p[:, :10] = 0.0  # outside the crop: exact zeros, as predict_maps leaves them
    p[0, 0, 0] = 1.0
    p[1, 20, 20:30] = np.float32([0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.1234, 0.30000001, 0.29999998])
    return Volume(p, (0.8, 0.8, 2.5), (-10.0, 5.0, 100.0), units="probability", metadata={"source": "test"})


def test_fixed_point_rethresholds_like_the_float_map(tmp_path):
    vol = _prob()
    path = write_probability(vol, tmp_path / "probability.nrrd")
    raw = read_image(path)
    assert raw.array.dtype == np.uint16 and int(raw.array.max()) == PROBABILITY_SCALE
    assert raw.metadata[SCALE_KEY] == PROBABILITY_SCALE
    back = read_probability(path)
    assert back.array.dtype == np.float32 and back.same_geometry(vol) and back.units == "probability"
    assert SCALE_KEY not in back.metadata
    p, q = vol.array, back.array
    assert np.all(q <= p + 1e-7) and np.all(p - q < 1.0 / PROBABILITY_SCALE + 1e-7)
    thresholds = [k / 100 for k in range(1, 100)] + [0.1234, 0.0001, 0.9999]
    for t in thresholds:
        differ = (q >= t) != (p >= t)
        # only voxels at float32 resolution of the threshold itself may differ
        assert np.all(np.abs(p[differ] - t) < 1e-6), (t, p[differ][:5])
    assert np.array_equal(q[1, 20, 20:27] >= np.float32([0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99]), [True] * 7)
    assert (q[p == 0] == 0).all()


def test_old_float_maps_still_read(tmp_path):
    vol = _prob(seed=1)
    write_image(vol, tmp_path / "old.nrrd")
    back = read_probability(tmp_path / "old.nrrd")
    assert back.array.dtype == np.float32 and np.array_equal(back.array, vol.array)


def test_a_scale_header_that_lies_is_refused(tmp_path):
    import SimpleITK as sitk

    vol = _prob(seed=2)
    for scale, arr in (("zero", quantise(vol.array)), (0, quantise(vol.array)), (10000, vol.array)):
        img = vol.with_array(arr).to_sitk()
        img.SetMetaData("MediastinalAI_metadata", json.dumps({"units": "probability", SCALE_KEY: scale}))
        sitk.WriteImage(img, str(tmp_path / "bad.nrrd"))
        with pytest.raises(InputError, match=SCALE_KEY):
            read_probability(tmp_path / "bad.nrrd")


def test_quantise_clips_and_refuses_nan(tmp_path):
    q = quantise(np.array([-0.5, 0.0, 0.49999, 0.5, 1.0, 1.5], np.float32))
    assert q.tolist() == [0, 0, 4999, 5000, 10000, 10000]
    bad = _prob(seed=3)
    bad.array[2, 2, 2] = np.nan
    with pytest.raises(InputError, match="NaN"):
        write_probability(bad, tmp_path / "p.nrrd")
    assert not list(tmp_path.iterdir())  # nothing half-written


@pytest.mark.mrml
def test_mrml_import_reads_the_fixed_point_map(tmp_path):
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    from mediastinal_ai.mrml import nodes
    from mediastinal_ai.mrml.segmentation import import_result

    arr = np.full((24, 48, 48), -900, np.int16)
    arr[8:16, 16:32, 16:32] = 40
    ct = Volume(arr, (2.0, 2.0, 3.0), (-48.0, -48.0, 0.0))
    p = np.zeros(arr.shape, np.float32)
    p[8:16, 16:32, 16:32] = 0.8
    p[10:14, 20:28, 20:28] = 0.95
    for name, writer in (("new", write_probability), ("old", write_image)):
        d = tmp_path / name
        d.mkdir()
        writer(ct.with_array(p, units="probability"), d / "probability.nrrd")
        (d / "segmentation_result.json").write_text(json.dumps({"threshold": 0.9, "model": "demo"}))
        scene = nodes.new_scene()
        node = nodes.volume_to_node(scene, ct, name="CT", role="ct")
        got = import_result(scene, node, d)
        seg = nodes.segment_to_mask(got["segmentation_node"], got["segment_id"], node).array > 0
        assert seg.sum() == 4 * 8 * 8, name
        stored = nodes.node_to_volume(got["probability_node"], units="probability").array
        assert abs(float(stored.max()) - 0.95) < 1e-4, name
