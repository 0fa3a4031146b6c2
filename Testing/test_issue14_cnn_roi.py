"""Issue 14: the CNN's published ROI recipe — W400/L40 before the z-score, the tumor's rectangular
extent, the adjacent training slice 1 mm away (interpolated) — and the older recipe still
reproduced exactly for models whose card asks for it."""

from __future__ import annotations

import numpy as np
import pytest

from mediastinal_ai.roi import _resize, extract_roi
from mediastinal_ai.volume import Volume


def _case(dz=5.0):
    rng = np.random.default_rng(0)
    a = rng.normal(0, 300, (6, 40, 50)).astype(np.float32)  # HU far outside W400/L40
    ct = Volume(a, spacing_xyz=(0.5, 1.0, dz))
    m = np.zeros(ct.shape, np.uint8)
    m[2, 10:20, 20:26] = 1
    m[3, 12:16, 21:30] = 1
    return ct, ct.with_array(m, units="label")


def test_rect_box_is_the_tumor_extent_plus_optional_margin():
    ct, mask = _case()
    s = extract_roi(ct, mask, margin_mm=0.0, size=32, box="rect")[0]
    assert s.box == (10, 20, 20, 26)  # rows 10..19, cols 20..25: exactly the tumor's bounding box
    s2 = extract_roi(ct, mask, margin_mm=2.0, size=32, box="rect")[0]
    assert s2.box == (8, 22, 16, 30)  # 2 mm = 2 rows (1 mm) and 4 cols (0.5 mm) each side
    sq = extract_roi(ct, mask, margin_mm=0.0, size=32, box="square")[0]
    assert (sq.box[1] - sq.box[0]) * 1.0 == pytest.approx((sq.box[3] - sq.box[2]) * 0.5)


def test_window_is_applied_before_the_zscore():
    ct, mask = _case()
    s = extract_roi(ct, mask, margin_mm=0.0, size=32, box="rect", window=(400.0, 40.0))[0]
    # independent computation: clip the box to [-160, 240], resize, z-score
    raw = np.clip(ct.array[2, 10:20, 20:26], -160, 240)
    ref = _resize(raw, (32, 32))
    ref = (ref - ref.mean()) / (ref.std() + 1e-6)
    assert np.allclose(s.image, ref, atol=1e-5)
    nowin = extract_roi(ct, mask, margin_mm=0.0, size=32, box="rect")[0]
    assert not np.allclose(nowin.image, s.image, atol=1e-2)


@pytest.mark.parametrize("dz", [5.0, 0.8])
def test_adjacent_slice_is_one_mm_away_interpolated(dz):
    ct, mask = _case(dz)
    c, adj = extract_roi(ct, mask, margin_mm=0.0, size=16, box="rect", offsets_mm=(0.0, 1.0))
    f = 1.0 / dz
    k = 2 + int(np.floor(f))
    f -= np.floor(f)
    plane = (1 - f) * ct.array[k, 10:20, 20:26] + f * ct.array[k + 1, 10:20, 20:26]
    ref = _resize(plane.astype(np.float32), (16, 16))
    ref = (ref - ref.mean()) / (ref.std() + 1e-6)
    assert np.allclose(adj.image, ref, atol=1e-4)
    assert c.slice_index == 2 and adj.slice_index == int(round(2 + 1.0 / dz))
    # the old behaviour: the next slice index, 5 mm away on 5 mm CT
    old = extract_roi(ct, mask, margin_mm=0.0, size=16, box="rect", offsets=(0, 1))[1]
    assert old.slice_index == 3


def test_cnn_recipe_defaults_are_published_and_deviations_labelled():
    from mediastinal_ai.cnn.model import recipe_deviations, roi_recipe, training_rois

    r = roi_recipe("mobilenet_v2")
    assert r["window"] == [400.0, 40.0] and r["box"] == "rect" and r["margin_mm"] == 0.0
    assert r["train_offsets_mm"] == [0.0, 1.0] and r["deviations"] == []
    legacy = roi_recipe("mobilenet_v2", 2.0, window=None, box="square", adjacent_mm=None)
    assert len(legacy["deviations"]) == 4
    ct, mask = _case()
    rois = training_rois(ct, mask, {**r, "size": 16}, train=True)
    assert len(rois) == 2 and rois[1].slice_index == 2  # +1 mm on 5 mm CT rounds to the same slice
    # a card written before issue 14 (demo-risk-cnn 0.1.0) has no box/window/adjacent keys: it is read as it
    # was written — square box, no window, next slice index — so its old model repeats its own recipe
    old = {"margin_mm": 2.0, "size": 224, "normalize": "zscore", "window": None, "slice": "largest tumor area",
           "train_offsets": [0, 1]}
    assert len(recipe_deviations(old)) >= 3
    a = training_rois(ct, mask, {**old, "size": 16}, train=True)
    b = extract_roi(ct, mask, margin_mm=float(old["margin_mm"]), size=16, offsets=(0, 1))
    assert [x.slice_index for x in a] == [2, 3] and all(np.array_equal(x.image, y.image) for x, y in zip(a, b))


def test_shipped_demo_cnn_uses_the_published_recipe_and_says_what_still_differs():
    import json
    from pathlib import Path

    import mediastinal_ai
    from mediastinal_ai.cnn.model import recipe_deviations

    card = json.loads((Path(mediastinal_ai.__file__).parent / "models/builtin/demo-risk-cnn/demo-risk-cnn.model.json")
                      .read_text())
    roi = card["preprocessing"]["roi"]
    assert recipe_deviations(roi) == [] and roi["window"] == [400.0, 40.0] and roi["box"] == "rect"
    assert card["version"] == "0.2.0" and set(card["changelog"]) == {"0.1.0", "0.2.0"}
    devs = card["extra"]["deviations_from_published"]
    assert any("synthetic" in d for d in devs) and any("backbone" in d for d in devs)
    assert card["demo"] and 0.5 < card["metrics"]["test_auc"] <= 1.0


def test_poor_validation_auc_is_flagged():
    from mediastinal_ai.evaluation.quality import poor_metric_warning

    assert "poor validation AUC of 0.250" in poor_metric_warning("auc", 0.25)
    assert "poor validation Dice of 0.025" in poor_metric_warning("dice", 0.025)
    assert poor_metric_warning("auc", 0.81) is None and poor_metric_warning("dice", 0.7) is None
    assert "unknown" in poor_metric_warning("auc", float("nan"))
