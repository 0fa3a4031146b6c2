"""Issue 14, fusion study: Table 2 grouping and CTC levels in the synthetic cohort, the CTC unit
of the model card, fourth-order PDE denoising and cubic-voxel reconstruction, neutral
cross-entropy by default, top-3 outputs and the "repeated 3 times" protocol."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from mediastinal_ai.errors import InputError
from mediastinal_ai.volume import Volume


def test_table2_grouping_others_and_thymomas_malignant():
    from mediastinal_ai.taxonomy import BY_NAME, GROUPING_NOTE, LESION_CLASSES

    assert BY_NAME["other"].malignant and all(c.malignant for c in LESION_CLASSES if c.name.startswith("thymoma"))
    assert "benign thymoma" in GROUPING_NOTE
    from mediastinal_ai.synthetic.generator import appearance_params

    P = appearance_params()["classes"]
    # every class carries Table 2 counts; benign = exactly the seven Table 2 benign classes
    assert all(len(P[c.name]["table2"]) == 3 for c in LESION_CLASSES)
    benign = {c.name for c in LESION_CLASSES if not c.malignant}
    assert benign == {"cyst", "granuloma", "mature_teratoma", "schwannoma", "fibroma", "hemangioma", "lipoma"}


def test_ctc_levels_separate_classes_no_more_than_table2_does():
    """A simulation with the generator's CTC parameters and Table 2 frequencies gives the
    CTC-only benign/malignant AUC the issue computed from the published means and SDs (~0.66),
    not the ~0.86 of the earlier invented levels."""
    from sklearn.metrics import roc_auc_score

    from mediastinal_ai.synthetic.generator import appearance_params, class_weights
    from mediastinal_ai.taxonomy import BY_NAME, LESION_CLASSES

    P = appearance_params()["classes"]
    names = [c.name for c in LESION_CLASSES]
    w = class_weights(names, "table2")
    assert w[names.index("cyst")] == sum(P["cyst"]["table2"]) and w.sum() == sum(sum(P[n]["table2"]) for n in names)
    rng = np.random.default_rng(0)
    cls = rng.choice(names, 40000, p=w / w.sum())
    mean = np.array([P[c]["ctc"][0] for c in cls])
    sd = np.array([P[c]["ctc"][1] for c in cls])
    ctc = np.maximum(0, rng.normal(mean, sd))
    y = np.array([BY_NAME[c].malignant for c in cls], int)
    auc = roc_auc_score(y, ctc)
    assert 0.62 < auc < 0.71, auc


def test_generated_case_draws_ctc_from_the_class_parameters():
    from mediastinal_ai.synthetic.generator import appearance_params, generate_case

    P = appearance_params()["classes"]
    c = generate_case(123, "malt_lymphoma", inplane_size=32, slice_thickness_mm=10)
    m, s = P["malt_lymphoma"]["ctc"]
    assert abs(c.ctc - m) < 5 * s and c.malignant == 1
    with pytest.raises(ValueError, match="class_frequencies"):
        generate_case(1, inplane_size=32, class_frequencies="paper")


def test_ctc_unit_is_the_study_label_by_default_and_the_sites_own_when_set():
    from mediastinal_ai.fusion import schema as sch
    from mediastinal_ai.taxonomy import CTC_UNIT

    assert CTC_UNIT == "pg/ml"
    s = sch.fit_schema([5.0, 9.0, 12.0], [50.0, 60.0, 40.0], ["F", "M", "F"], ["anterior"] * 3)
    assert s["units"]["ctc"] == "pg/ml"
    own = sch.fit_schema([5.0, 9.0, 12.0], [50.0, 60.0, 40.0], ["F", "M", "F"], ["anterior"] * 3,
                         ctc_unit="cells/7.5 mL")
    sch.check_schema(own)
    v = sch.validate_inputs(30.0, 50, "F", "anterior", schema=own)
    assert v.ctc_unit == "cells/7.5 mL" and "30 cells/7.5 mL is outside" in v.warnings[0]
    with pytest.raises(InputError, match="cells/7.5 mL"):
        sch.validate_inputs(5000, schema=own)
    with pytest.raises(InputError, match="unit"):
        sch.fit_schema([5.0], [None], [None], [None], ctc_unit=" ")


def test_fourth_order_pde_matches_its_equation_and_removes_noise():
    from mediastinal_ai.fusion.preprocess import fourth_order_pde

    rng = np.random.default_rng(1)
    clean = np.zeros((64, 64))
    clean[:, 32:] = 100.0
    noisy = clean + rng.normal(0, 10, clean.shape)
    # one step against an independent discretisation (scipy's Laplacian, replicated borders)
    k, dt = 20.0, 0.03
    lap = ndimage.laplace(noisy, mode="nearest")
    ref = noisy - dt * ndimage.laplace(lap / (1 + (lap / k) ** 2), mode="nearest")
    assert np.allclose(fourth_order_pde(noisy, 1, dt, k), ref, atol=1e-3)
    out = fourth_order_pde(noisy, 40, dt, k)
    assert abs(out.mean() - noisy.mean()) < 1e-3  # divergence form: the mean is conserved
    assert out[:, 4:24].std() < 0.7 * noisy[:, 4:24].std()  # noise down in the flat region
    assert out[:, 40:60].mean() - out[:, 4:24].mean() > 90  # the edge kept
    with pytest.raises(InputError, match="dt"):
        fourth_order_pde(noisy, 1, 0.1)


def test_isotropic_reconstruction_and_roi_geometry_on_the_original_grid():
    from mediastinal_ai.fusion.data import extract_images, roi_recipe

    rng = np.random.default_rng(2)
    a = rng.normal(40, 5, (12, 48, 48)).astype(np.float32)
    ct = Volume(a, spacing_xyz=(1.0, 1.0, 5.0))
    m = np.zeros(ct.shape, np.uint8)
    m[4:8, 15:30, 18:34] = 1
    m[6, 12:33, 15:37] = 1  # the largest slice
    mask = ct.with_array(m, units="label")
    plain, s0 = extract_images(ct, mask, roi_recipe(32), (0, 1))
    iso, s1 = extract_images(ct, mask, roi_recipe(32, isotropic=True, denoise=True), (0, 1))
    assert plain.shape == iso.shape == (2, 32, 32)
    assert s0.slice_index == 6 and abs(s1.slice_index - 6) <= 1
    assert s1.slice_shape == (48, 48) and abs(s1.box[0] - s0.box[0]) <= 1 and s1.box[2:] == s0.box[2:]
    # the +1 training slice is 1 voxel = 1 mm away after reconstruction, not the next 5 mm slice
    assert not np.allclose(iso[0], iso[1])
    r = roi_recipe(32, denoise=True)
    assert r["denoise"]["method"] == "fourth_order_pde" and roi_recipe(32)["denoise"] is None


def test_neutral_loss_is_default_and_repeats_are_summarised():
    pytest.importorskip("torch")
    from mediastinal_ai.fusion.data import FusionData, roi_recipe
    from mediastinal_ai.fusion.net import TINY_REGNET
    from mediastinal_ai.fusion.train import TrainConfig, summarise_repeats, train_repeated

    assert TrainConfig().loss == "neutral"
    rng = np.random.default_rng(3)
    n = 30
    cls = np.array(["cyst", "lymphoma", "thymoma_B1"] * 10)
    data = FusionData(case_id=np.array([f"c{i}" for i in range(n)]), images=rng.random((n, 2, 16, 16)).astype(np.float32),
                      ctc=rng.uniform(5, 20, n), age=rng.uniform(30, 70, n), sex=rng.choice(["F", "M"], n),
                      site=np.array(["anterior"] * n), lesion_class=cls, malignant=(cls != "cyst").astype(int),
                      split=np.array((["train"] * 6 + ["val", "val", "test", "test"]) * 3), meta={"roi": roi_recipe(16)})
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        cfg = TrainConfig(epochs=1, batch_size=8, regnet=dict(TINY_REGNET), device="cpu", name="t", ctc_unit="u/mL")
        m = train_repeated(data, d, cfg, repeats=2)
        rep = json.loads((Path(d) / "repeats.json").read_text())
        card = json.loads((Path(d) / "t" / "t.model.json").read_text())
        assert rep["seeds"] == [0, 1] and card["metrics"]["repeats"]["seeds"] == [0, 1]
        assert card["input_schema"]["units"]["ctc"] == "u/mL" and card["extra"]["loss"]["kind"] == "neutral"
        mc = card["metrics"]["mcnemar_fusion_vs_ct_only"]
        assert set(mc) == {"accuracy", "sensitivity", "specificity"} or "error" in mc
        cm = card["metrics"]["test"]["multiclass"]["confusion"]
        assert np.array(cm["matrix"]).sum() == card["metrics"]["test"]["n"] - card["metrics"]["test"]["multiclass"][
            "n_unseen_class_cases"]
        assert "macro_auc_a" in card["metrics"]["multiclass_auc_fusion_vs_ct_only"]
        # random images and one epoch: a near-chance validation AUC must be flagged, a good one not
        va = card["extra"]["val_auc"]
        assert ("quality_warning" in card["extra"]) == (va is None or va < 0.6)
        second = json.loads((Path(d) / "repeats" / "seed_1" / "metrics.json").read_text())
        vals = [m["fusion"]["binary_auc"]["auc"], second["fusion"]["binary_auc"]["auc"]]
        f = rep["figures"]["fusion_binary_auc"]
        assert f["mean"] == pytest.approx(np.mean(vals)) and f["sd"] == pytest.approx(np.std(vals, ddof=1))
        import csv

        rows = list(csv.DictReader(open(Path(d) / "test_predictions.csv")))
        assert all(len(r["top3_fusion"].split("|")) == 3 for r in rows)
    s = summarise_repeats([{"fusion": {"binary_auc": {"auc": v}}} for v in (0.7, 0.8, 0.9)], [0, 1, 2])
    assert s["figures"]["fusion_binary_auc"]["sd"] == pytest.approx(np.std([0.7, 0.8, 0.9], ddof=1))
