"""Fusion's lesion site reuses the chest anatomy ``segment`` saved in the case folder (the batch
fusion step after 'segment', ``predict-fusion --out CASE``) instead of running the anatomy step
again, and only when that anatomy belongs to the CT's grid."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mediastinal_ai.orientation import canonical
from mediastinal_ai.volume import Volume


def test_coarse_grid_is_the_grid_the_anatomy_step_uses():
    """fits() compares against coarse_grid(): it must be exactly what _coarse() resamples to,
    also for an oblique, anisotropic CT with an odd extent."""
    from mediastinal_ai.anatomy.chest import _coarse, coarse_grid

    th = np.deg2rad(20)
    d = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1.0]])
    for sp, shape in (((0.7, 0.7, 2.5), (37, 61, 53)), ((3.5, 1.0, 5.0), (9, 20, 11))):
        ct = Volume(np.zeros(shape, np.int16), sp, (-12.5, 30.0, 7.0), d)
        g = _coarse(ct)
        shp, spacing, origin, direction = coarse_grid(ct)
        assert g.shape == shp
        assert np.allclose(g.spacing_xyz, spacing) and np.allclose(g.origin_xyz, origin, atol=1e-6)
        assert np.allclose(g.direction, direction)


@pytest.fixture(scope="module")
def case_with_saved_anatomy(real_ct_dir, tmp_path_factory):
    """A real CT with an inserted lesion, and a case folder holding the anatomy as segment saves it
    (the two NRRDs + the summary in segmentation_result.json)."""
    from mediastinal_ai.anatomy import analyse_chest
    from mediastinal_ai.case_files import RESULT_FILES
    from mediastinal_ai.io import read_ct
    from mediastinal_ai.orientation import canonical
    from mediastinal_ai.synthetic.insertion import insert_lesion

    case = insert_lesion(read_ct(real_ct_dir / "mediastinum_crop_ct.nii.gz"), seed=8, lesion_class="thymoma_A",
                         diameter_mm=35.0)
    anat = analyse_chest(canonical(case.ct)[0])
    folder = tmp_path_factory.mktemp("case")
    anat.save(folder)
    (folder / RESULT_FILES["segmentation"]).write_text(json.dumps({"task": "segmentation",
                                                                   "anatomy": anat.summary()}))
    return case, folder


def _no_anatomy_step(monkeypatch):
    import mediastinal_ai.anatomy as anatomy_pkg

    def refuse(*a, **k):
        raise AssertionError("the chest-anatomy step ran although a saved anatomy fits")

    monkeypatch.setattr(anatomy_pkg, "analyse_chest", refuse)


def test_site_from_the_saved_anatomy_is_the_computed_one_without_recomputing(case_with_saved_anatomy, monkeypatch):
    import mediastinal_ai.anatomy as anatomy_pkg
    from mediastinal_ai.anatomy import ChestAnatomy
    from mediastinal_ai.fusion.predict import site_of_mask

    case, folder = case_with_saved_anatomy
    computed = site_of_mask(case.ct, case.mask)
    assert computed[0] == "anterior"
    saved = ChestAnatomy.from_case_folder(folder)
    assert saved is not None and saved.fits(canonical(case.ct)[0])
    with monkeypatch.context() as m:
        _no_anatomy_step(m)
        assert site_of_mask(case.ct, case.mask, saved) == computed
    # another grid (the CT cropped by a few slices): the saved anatomy is not used, the step runs
    crop = Volume(case.ct.array[4:], case.ct.spacing_xyz,
                  tuple(case.ct.index_to_lps(np.array([[0.0, 0.0, 4.0]]))[0]), case.ct.direction, units="HU")
    crop_mask = crop.with_array(case.mask.array[4:], units="label")
    calls = []
    real = anatomy_pkg.analyse_chest

    def counting(ct):
        calls.append(ct.shape)
        return real(ct)

    monkeypatch.setattr(anatomy_pkg, "analyse_chest", counting)
    assert not saved.fits(canonical(crop)[0])
    site, _ = site_of_mask(crop, crop_mask, saved)
    assert len(calls) == 1 and site == "anterior"


def test_batch_fusion_step_reuses_the_segment_steps_anatomy(case_with_saved_anatomy, monkeypatch):
    pytest.importorskip("torch")
    from mediastinal_ai.batch.discover import CaseSpec
    from mediastinal_ai.batch.steps import CaseContext
    from mediastinal_ai.batch.task_steps import fusion
    from mediastinal_ai.case_files import RESULT_FILES
    from mediastinal_ai.fusion.predict import predict_fusion

    case, folder = case_with_saved_anatomy
    expected = predict_fusion(case.ct, case.mask, ctc=9.5)  # the anatomy computed
    assert expected["lesion_site_source"] == "anatomy"
    ctx = CaseContext(spec=CaseSpec("c1", "unused", clinical={"ctc": 9.5}), workdir=folder, params={"device": "cpu"})
    ctx._ct, ctx.mask, ctx.segmented = case.ct, case.mask, True
    with monkeypatch.context() as m:
        _no_anatomy_step(m)
        fusion(ctx)
    got = json.loads((folder / RESULT_FILES["fusion"]).read_text())
    assert got["inputs"]["lesion_site"] == expected["inputs"]["lesion_site"] == "anterior"
    assert got["lesion_site_source"] == "anatomy"
    assert got["fusion"]["p_malignant"] == pytest.approx(expected["fusion"]["p_malignant"], abs=1e-6)
    # without 'segment' in this run the folder's anatomy is not trusted: the step computes its own
    ctx2 = CaseContext(spec=CaseSpec("c1", "unused", clinical={"ctc": 9.5}), workdir=folder, params={"device": "cpu"})
    ctx2._ct, ctx2._manifest_mask = case.ct, case.mask
    ctx2.spec.mask = "manifest-mask"
    with monkeypatch.context() as m:
        _no_anatomy_step(m)
        with pytest.raises(AssertionError, match="anatomy step ran"):
            fusion(ctx2)


def test_predict_fusion_cli_reuses_the_case_folders_anatomy(case_with_saved_anatomy, monkeypatch, tmp_path):
    """``predict-fusion --out CASE`` beside segment's outputs: the CT and mask read back from
    files still fit the saved anatomy (the geometry survives the round trip)."""
    pytest.importorskip("torch")
    from mediastinal_ai import cli
    from mediastinal_ai.case_files import RESULT_FILES
    from mediastinal_ai.io import write_image

    case, folder = case_with_saved_anatomy
    ct, mask = write_image(case.ct, tmp_path / "ct.nii.gz"), write_image(case.mask, tmp_path / "mask.nii.gz")
    _no_anatomy_step(monkeypatch)
    assert cli.main(["predict-fusion", "--ct", str(ct), "--mask", str(mask), "--ctc", "9.5", "--out", str(folder)]) == 0
    got = json.loads((folder / RESULT_FILES["fusion"]).read_text())
    assert got["inputs"]["lesion_site"] == "anterior" and got["lesion_site_source"] == "anatomy"
