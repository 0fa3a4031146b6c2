"""Segmentation on real CT (issue 12): voxel storage order, chest anatomy, lesion insertion,
mirroring TTA + uncertainty, the mediastinal restriction, and the same through CLI and MRML.

Real CT comes from ../shared/data/real-ct (read in place; skipped with a reason when absent). The
demo model is whatever is installed: assertions are about invariances and anatomy, never about
the demo model's exact figures.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from mediastinal_ai.volume import Volume

torch = pytest.importorskip("torch", reason="torch is not installed")

from mediastinal_ai.anatomy import ANTERIOR, MIDDLE, POSTERIOR, analyse_chest  # noqa: E402
from mediastinal_ai.anatomy.chest import LUNG  # noqa: E402
from mediastinal_ai.io import read_ct, read_image, write_image  # noqa: E402
from mediastinal_ai.orientation import canonical  # noqa: E402

MEDIASTINUM = (ANTERIOR, MIDDLE, POSTERIOR)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else 2.0 * float((a & b).sum()) / float(s)


# ------------------------------------------------------------------ storage orders of one CT
def flipped_xy(v: Volume) -> Volume:
    """The same voxels stored right-to-left and anterior-to-posterior (what an RAS writer does)."""
    nx, ny = v.shape[2], v.shape[1]
    d = np.array(v.direction, float).reshape(3, 3).copy()
    d[:, 0] *= -1
    d[:, 1] *= -1
    origin = v.index_to_lps(np.array([[nx - 1, ny - 1, 0]], float))[0]
    return Volume(np.ascontiguousarray(v.array[:, ::-1, ::-1]), spacing_xyz=v.spacing_xyz,
                  origin_xyz=tuple(origin), direction=d, units=v.units, metadata=dict(v.metadata))


def swapped_xy(v: Volume) -> Volume:
    """x and y index axes exchanged (a converter that writes columns first)."""
    d = np.array(v.direction, float).reshape(3, 3)[:, [1, 0, 2]]
    sp = (v.spacing_xyz[1], v.spacing_xyz[0], v.spacing_xyz[2])
    return Volume(np.ascontiguousarray(v.array.transpose(0, 2, 1)), spacing_xyz=sp, origin_xyz=v.origin_xyz,
                  direction=d, units=v.units, metadata=dict(v.metadata))


def flipped_z(v: Volume) -> Volume:
    """Slices stored head-first instead of feet-first."""
    nz = v.shape[0]
    d = np.array(v.direction, float).reshape(3, 3).copy()
    d[:, 2] *= -1
    origin = v.index_to_lps(np.array([[0, 0, nz - 1]], float))[0]
    return Volume(np.ascontiguousarray(v.array[::-1]), spacing_xyz=v.spacing_xyz, origin_xyz=tuple(origin),
                  direction=d, units=v.units, metadata=dict(v.metadata))


def storage_orders(v: Volume, tmp: Path) -> dict[str, Volume]:
    """Five files holding the same physical CT: NRRD as stored, NIfTI, RAS-flipped NIfTI, an axis
    permutation (NRRD) and a z flip combined with the permutation (NIfTI); each read back from disk."""
    out = {}
    for name, vol, suffix in (("nrrd", v, ".nrrd"), ("nifti", v, ".nii.gz"), ("ras_flip", flipped_xy(v), ".nii.gz"),
                              ("permuted", swapped_xy(v), ".nrrd"), ("permuted_zflip", flipped_z(swapped_xy(v)),
                                                                      ".nii.gz")):
        p = tmp / f"{name}{suffix}"
        write_image(vol, p)
        out[name] = read_ct(p)
    return out


def canonical_mask(mask: Volume) -> np.ndarray:
    return canonical(mask)[0].array


@pytest.fixture(scope="module")
def demo_model():
    from mediastinal_ai.models import resolve
    from mediastinal_ai.segmentation import load_model

    return load_model(resolve(None, task="segmentation"), device="cpu")


@pytest.fixture(scope="module")
def real_with_lesion(real_ct_dir):
    """The real mediastinum crop with one synthetic lesion inserted (so there is something to find)."""
    from mediastinal_ai.synthetic.insertion import insert_lesion

    bg = read_ct(real_ct_dir / "mediastinum_crop_ct.nii.gz")
    return insert_lesion(bg, seed=3, lesion_class="thymoma_B2", diameter_mm=40.0)


def _assert_same_answer_in_every_storage_order(ct: Volume, model, tmp_path: Path) -> list[float]:
    from mediastinal_ai.segmentation import segment_volume

    results = {}
    for name, vol in storage_orders(ct, tmp_path).items():
        res = segment_volume(vol, model, tta="none")
        assert res.mask.shape == vol.shape and res.mask.same_geometry(vol), name  # back on the input grid
        results[name] = canonical_mask(res.mask)
    ref = results.pop("nrrd")
    assert ref.sum() > 0, "nothing segmented: the invariance check would be empty"
    scores = [dice(ref, m) for m in results.values()]
    for name, m in results.items():
        assert dice(ref, m) >= 0.99, f"{name}: Dice {dice(ref, m):.4f} against the stored order"
    return scores


def test_real_ct_same_mask_in_every_storage_order(real_with_lesion, demo_model, tmp_path):
    scores = _assert_same_answer_in_every_storage_order(real_with_lesion.ct, demo_model, tmp_path)
    print("real CT, Dice vs stored order:", [round(s, 4) for s in scores])


def test_synthetic_ct_same_mask_in_every_storage_order(demo_model, tmp_path):
    from mediastinal_ai.synthetic import generate_case

    c = generate_case(4242, "thymoma_AB")
    _assert_same_answer_in_every_storage_order(c.ct, demo_model, tmp_path)


def test_canonical_round_trip_is_exact_for_every_order(real_ct_dir, tmp_path):
    from mediastinal_ai.orientation import restore_volume

    ct = read_ct(real_ct_dir / "mediastinum_crop_ct.nii.gz")
    ref = canonical(ct)[0]
    for name, vol in storage_orders(ct, tmp_path).items():
        c, orient = canonical(vol)
        assert c.shape == ref.shape and np.array_equal(c.array, ref.array), name
        assert np.allclose(c.origin_xyz, ref.origin_xyz, atol=1e-3), name
        back = restore_volume(c, vol, orient)
        assert np.array_equal(back.array, vol.array) and back.same_geometry(vol), name


# ------------------------------------------------------------------ chest anatomy on real CT
def _lung_pet_series(real_ct_dir):
    root = real_ct_dir / "lung-pet-ct-dx"
    series = sorted(p for p in root.glob("Lung_Dx-*") if p.is_dir())
    if not series:
        pytest.skip(f"no Lung-PET-CT-Dx series under {root}")
    return series


def test_anatomy_of_real_full_chest_cts(real_ct_dir):
    for s in _lung_pet_series(real_ct_dir):
        ct = read_ct(s)
        a = analyse_chest(canonical(ct)[0])
        st = a.summary()
        assert a.covers_mediastinum and not a.warnings, (s.name, a.warnings)
        assert 2000 < st["lung_ml"] < 9000, (s.name, st["lung_ml"])  # adult lungs in a 5–8 mm chest CT
        assert 500 < st["mediastinum_ml"] < 4000 and 200 < st["anterior_mediastinum_ml"] < st["mediastinum_ml"]
        assert not st["contrast"], f"{s.name} is a non-contrast series"
        # left-right: the lung voxels lie on both sides of the mediastinum's centre
        lab = a.labels
        lung = np.argwhere(lab.array == LUNG)[:, ::-1].astype(float)
        med = np.argwhere(np.isin(lab.array, MEDIASTINUM))[:, ::-1].astype(float)
        lx, mx = lab.index_to_lps(lung)[:, 0], lab.index_to_lps(med)[:, 0].mean()
        assert 0.3 < float((lx > mx).mean()) < 0.7, s.name
        # the anterior compartment lies in front of (smaller P than) the posterior one
        ant = lab.index_to_lps(np.argwhere(lab.array == ANTERIOR)[:, ::-1].astype(float))[:, 1].mean()
        post = lab.index_to_lps(np.argwhere(lab.array == POSTERIOR)[:, ::-1].astype(float))[:, 1].mean()
        assert ant < post - 40, (s.name, ant, post)
        # the mediastinal envelope (the inference crop) stays between the lungs: it spanned the whole body
        # width on A0002 (air under the back read as lung) and 0.68 of it on A0001 (liver dome and stomach
        # between the lung-base crescents); now 0.50-0.65
        env = np.argwhere(a.envelope.array > 0)[:, 2]
        body_x = np.argwhere((lab.array != 0).any((0, 1)))[:, 0]
        share = float(np.ptp(env) + 1) / float(np.ptp(body_x) + 1)
        assert share < 0.7, (s.name, share)


def test_real_heart_mask_falls_in_the_middle_mediastinum(real_ct_dir):
    """Ground truth from outside: the heart mask shipped with the real crop (on a larger grid)."""
    ct = read_ct(real_ct_dir / "mediastinum_crop_ct.nii.gz")
    heart = read_image(real_ct_dir / "mediastinum_crop_heart_mask.nii.gz")
    a = analyse_chest(canonical(ct)[0])
    pts = heart.index_to_lps(np.argwhere(heart.array > 0)[:, ::-1].astype(float))
    inside_ct = np.all((ct.lps_to_index(pts) >= -0.5) & (ct.lps_to_index(pts) < np.array(ct.shape[::-1]) - 0.5), 1)
    codes = a.codes_at(pts[inside_ct])
    in_med = float(np.isin(codes, MEDIASTINUM).mean())
    middle = float((codes == MIDDLE).mean())
    print(f"heart voxels: {in_med:.3f} in the mediastinum, {middle:.3f} in its middle compartment")
    # measured 0.66 / 0.50 on this cropped contrast CT (spine partly out of view, contrast-dense
    # blood beside it): a floor against regressions, not a claim of accuracy
    assert in_med >= 0.65 and middle >= 0.4
    assert middle > float((codes == ANTERIOR).mean()) and middle > float((codes == POSTERIOR).mean())
    assert a.stats["contrast"], "the crop is a contrast CT"


def test_real_aorta_lies_inside_the_mediastinal_envelope(real_ct_dir):
    d = real_ct_dir / "aorta-cta-crop"
    if not (d / "aorta_mask.nii.gz").is_file():
        pytest.skip(f"{d} not found")
    ct = read_ct(d / "ct.nii.gz")
    aorta = read_image(d / "aorta_mask.nii.gz")
    a = analyse_chest(canonical(ct)[0])
    pts = aorta.index_to_lps(np.argwhere(aorta.array > 0)[:, ::-1].astype(float))
    in_env = float(a.in_envelope(pts).mean())
    lung = float((a.codes_at(pts) == LUNG).mean())
    print(f"aorta voxels: {in_env:.3f} inside the envelope, {lung:.3f} labelled lung")
    assert in_env >= 0.85 and lung <= 0.05


def test_non_chest_and_partial_cts_are_flagged(real_ct_dir):
    ab = analyse_chest(canonical(read_ct(real_ct_dir / "abdomen_ct_dicom_series"))[0])
    assert not ab.covers_mediastinum and any("no lungs" in w for w in ab.warnings)
    slabs = sorted((real_ct_dir / "lidc-contrast-slabs").glob("LIDC-IDRI-*"))
    if not slabs:
        pytest.skip("no LIDC slabs")
    for s in slabs:
        a = analyse_chest(canonical(read_ct(s))[0])
        assert a.warnings and any("mm" in w for w in a.warnings), s.name  # a slab, too little of the chest
        assert a.stats["contrast"], f"{s.name} is an IV-contrast slab"


def test_abdomen_ct_segmentation_warns_and_finds_nothing_outside(real_ct_dir, demo_model, tmp_path):
    from mediastinal_ai import cli

    assert cli.main(["segment", "--input", str(real_ct_dir / "abdomen_ct_dicom_series"), "--out",
                     str(tmp_path / "r"), "--no-tta"]) == 0
    r = json.loads((tmp_path / "r" / "segmentation_result.json").read_text())
    assert any("no lungs" in w for w in r["warnings"])
    assert r["anatomy"]["covers_mediastinum"] is False


def test_synthetic_anatomy_matches_the_generator_tissues():
    from mediastinal_ai.anatomy import lesion_compartment
    from mediastinal_ai.synthetic import TISSUES, generate_case

    c = generate_case(777, "thymoma_B1", return_tissues=True)
    a = analyse_chest(canonical(c.ct)[0])
    tissues = c.tissues.array if hasattr(c.tissues, "array") else c.tissues
    lung_true = np.isin(tissues, [TISSUES[n] for n in TISSUES if "lung" in n])
    pts = c.ct.index_to_lps(np.argwhere(lung_true)[:, ::-1].astype(float))
    sample = pts[:: max(1, len(pts) // 20000)]
    assert float((a.codes_at(sample) == LUNG).mean()) > 0.85
    lesion = c.ct.index_to_lps(np.argwhere(c.mask.array > 0)[:, ::-1].astype(float))
    comp, inside = lesion_compartment(a, lesion)
    assert comp == "anterior" and inside > 0.8, (comp, inside)


def test_all_components_at_once_equal_one_by_one_lookup():
    """label_compartments (issue 17: every component in one pass, before the lesion table) gives
    each label the compartment and share inside that lesion_compartment gives it alone, on a
    synthetic case with known anatomy: the generator's lesion, lung blobs, and a blob straddling
    the envelope; inside a box and in slabs that cut components."""
    from mediastinal_ai.anatomy import lesion_compartment
    from mediastinal_ai.anatomy.chest import label_compartments
    from mediastinal_ai.synthetic import TISSUES, generate_case

    c = generate_case(778, "thymoma_AB", return_tissues=True)
    a = analyse_chest(canonical(c.ct)[0])
    tissues = c.tissues.array if hasattr(c.tissues, "array") else c.tissues
    labels = (c.mask.array > 0).astype(np.int32)
    lung = np.isin(tissues, [TISSUES[n] for n in TISSUES if "lung" in n])
    lung = np.argwhere(ndimage.binary_erosion(lung, iterations=6) & (labels == 0))  # deep in the lung
    rng = np.random.default_rng(3)
    for lab in (2, 3, 4):
        z, y, x = lung[rng.integers(len(lung))]
        labels[max(z - 2, 0):z + 2, max(y - 3, 0):y + 3, max(x - 3, 0):x + 3] = lab
    z, y, x = np.argwhere(labels == 1).mean(0).astype(int)  # a slab through the lesion's centre, far to one side
    labels[z, y, x:] = np.where(labels[z, y, x:] == 0, 5, labels[z, y, x:])
    n = 5
    nz = np.nonzero(labels)
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in nz)
    got = label_compartments(a, c.ct, labels, n, box, slab=3)
    for lab in range(1, n + 1):
        idx = np.argwhere(labels == lab)
        lps = c.ct.index_to_lps(idx[:, ::-1].astype(float))
        comp, inside = lesion_compartment(a, lps)
        assert got["voxels"][lab] == len(idx)
        assert got["compartment"][lab] == comp, lab
        assert got["inside"][lab] == pytest.approx(inside)
        assert np.allclose(got["centroid_lps"][lab], lps.mean(0))
    assert got["compartment"][1] == "anterior"
    assert {got["compartment"][lab] for lab in (2, 3, 4)} == {"lung"}
    assert 0 < got["inside"][5] < 1


# ------------------------------------------------------------------ lesion insertion
def test_insertion_into_a_real_ct(real_ct_dir):
    from mediastinal_ai.synthetic.insertion import SYNTHETIC_ON_REAL, insert_lesion

    s = _lung_pet_series(real_ct_dir)[0]
    bg = read_ct(s)
    case = insert_lesion(bg, seed=11, lesion_class="thymoma_AB", diameter_mm=35.0)
    m = case.mask.array > 0
    assert case.ct.same_geometry(bg) and case.mask.same_geometry(bg)
    assert case.metadata["synthetic"] and SYNTHETIC_ON_REAL in json.dumps(case.metadata)
    vol_ml = m.sum() * bg.voxel_volume_mm3 / 1000
    assert 5 < vol_ml < 60, vol_ml
    # only the lesion and its partial-volume edge changed
    from scipy import ndimage

    changed = case.ct.array != bg.array
    near = ndimage.binary_dilation(m, structure=np.ones((3, 3, 3), bool), iterations=3)  # partial volume reaches diagonally too
    assert changed[~near].sum() == 0 and changed[m].mean() > 0.9
    # a soft edge: voxels just outside the mask lie between background and lesion HU
    hu_in = float(np.median(case.ct.array[m]))
    assert -50 < hu_in < 120, hu_in  # soft tissue of a non-contrast CT
    # where it went: prevascular (anterior mediastinum) of the real anatomy, not lung or bone
    a = analyse_chest(canonical(bg)[0])
    pts = bg.index_to_lps(np.argwhere(m)[:, ::-1].astype(float))
    from mediastinal_ai.anatomy import lesion_compartment

    comp, inside = lesion_compartment(a, pts)
    assert comp == "anterior" and inside > 0.9, (comp, inside)
    # a mass may indent the lung it abuts, so the background's lung map overlaps it a little; in the
    # anatomy of the CT with the lesion (what segmentation sees) it is mediastinum, not lung
    a_ins = analyse_chest(canonical(case.ct)[0])
    assert lesion_compartment(a_ins, pts)[0] == "anterior"
    assert float((a_ins.codes_at(pts) == LUNG).mean()) < 0.1
    # it only took the room fat (or lung) held: never the heart, vessels or chest wall it would overlap
    smooth = ndimage.gaussian_filter(bg.array.astype(np.float32), sigma=(0, 1, 1))
    assert float((smooth[m] > -30).mean()) < 0.02
    assert case.metadata["room_fraction"] >= 0.6


def test_insertion_refuses_a_ct_without_a_mediastinum(real_ct_dir):
    from mediastinal_ai.errors import InputError
    from mediastinal_ai.synthetic.insertion import insert_lesion

    with pytest.raises(InputError, match="mediastin"):
        insert_lesion(read_ct(real_ct_dir / "abdomen_ct_dicom_series"), seed=1)


def test_insert_cohort_skips_a_background_that_cannot_take_a_lesion(real_ct_dir, tmp_path):
    """A 27 mm slab among the backgrounds is skipped with its reason; the other background's cases are
    all there, nothing of the skipped one is left on disk, and the tags of the rest do not move."""
    from mediastinal_ai.cohort import read_manifest
    from mediastinal_ai.errors import InputError
    from mediastinal_ai.synthetic.insertion import insert_cohort

    slab = real_ct_dir / "lidc-contrast-slabs" / "LIDC-IDRI-0003"
    if not slab.is_dir():
        pytest.skip(f"{slab} not found (see the real-ct README)")
    out = tmp_path / "c"
    m = insert_cohort([slab, real_ct_dir / "mediastinum_crop_ct.nii.gz"], 1, out, seed=4)
    ids = [c.case_id for c in read_manifest(m)]
    assert ids == ["bg01_negative", "bg01_ins000"]
    assert not list((out / "images").glob("bg00_*"))
    assert "Skipped background" in (out / "README.txt").read_text() and "27 mm" in (out / "README.txt").read_text()
    with pytest.raises(InputError, match="no background could take a lesion"):
        insert_cohort([slab], 1, tmp_path / "d", seed=4)


def test_synth_cli_with_background_writes_cases_negatives_and_manifest(real_ct_dir, tmp_path):
    from mediastinal_ai import cli
    from mediastinal_ai.cohort import read_manifest

    out = tmp_path / "onreal"
    assert cli.main(["synth", "--background", str(real_ct_dir / "mediastinum_crop_ct.nii.gz"), "--cases", "2",
                     "--out", str(out), "--seed", "5"]) == 0
    cases = read_manifest(out / "manifest.csv")
    kinds = sorted(c.extra.get("synthetic_kind") for c in cases)
    assert kinds == ["real-negative", "synthetic-on-real", "synthetic-on-real"]
    assert "SYNTHETIC-ON-REAL" in (out / "README.txt").read_text()
    for c in cases:
        ct = read_ct(c.ct)
        from mediastinal_ai.io import read_mask

        m = read_mask(c.mask, ct, allow_empty=True).array
        assert (m.sum() == 0) == (c.extra.get("synthetic_kind") == "real-negative")


# ------------------------------------------------------------------ TTA, uncertainty, restriction
def test_tta_choices_follow_the_plan_and_are_validated(demo_model):
    from mediastinal_ai.errors import InputError
    from mediastinal_ai.segmentation.inference import tta_flips

    plan = demo_model.plan
    assert tta_flips("none", plan, "cpu") == [()]
    assert len(tta_flips("xyz", plan, "cpu")) == 8
    axis_of = {"x": 2, "y": 1, "z": 0}  # numpy axes of the canonical (z, y, x) array
    trained = {axis_of[c] for c in plan.mirror_axes}
    for flips in tta_flips("auto", plan, "cpu"):
        assert set(flips) <= trained, "auto mirrors an axis the model never saw mirrored in training"
    with pytest.raises(InputError, match="tta"):
        tta_flips("sideways", plan, "cpu")


def test_uncertainty_map_and_per_lesion_confidence(real_with_lesion, demo_model, tmp_path):
    from mediastinal_ai.segmentation import segment_volume, write_result

    res = segment_volume(real_with_lesion.ct, demo_model, tta="x")
    u = res.uncertainty
    assert u is not None and u.shape == res.probability.shape and u.same_geometry(real_with_lesion.ct)
    assert float(u.array.min()) >= 0.0 and float(u.array.max()) <= 0.5 + 1e-6  # SD of values in [0, 1]
    assert float(u.array.max()) > 0.0, "two mirrored passes never disagree: the mirror was not applied"
    for r in res.lesions:
        assert 0.0 <= r["confidence"] <= 1.0 and r["mean_uncertainty"] >= 0.0
        assert isinstance(r["review"], bool) and r["compartment"] in ("anterior", "middle", "posterior", "lung",
                                                                       "other")
    paths = write_result(res, tmp_path / "r", real_with_lesion.ct)
    assert read_image(paths["uncertainty"]).shape == real_with_lesion.ct.shape
    no_tta = segment_volume(real_with_lesion.ct, demo_model, tta="none")
    assert float(no_tta.uncertainty.array.max()) == 0.0  # one pass: no spread


def test_small_lesions_and_published_failure_modes_are_flagged_for_review():
    from mediastinal_ai.segmentation.inference import _review

    big = {"volume_ml": 30.0, "max_diameter_mm": 45.0, "confidence": 0.95, "mean_hu": 45.0, "compartment": "anterior"}
    assert not _review(big, None, 0.0)
    assert any("small" in r for r in _review({**big, "volume_ml": 0.4, "max_diameter_mm": 8.0}, None))
    assert any("confidence" in r for r in _review({**big, "confidence": 0.55}, None))
    assert any("vessels" in r for r in _review(big, 0.5))  # contrast CT: touches enhanced blood
    assert any("pericardium" in r for r in _review(big, None, 0.4))  # non-contrast: abuts the middle mediastinum
    assert any("effusion" in r for r in _review({**big, "mean_hu": 8.0}, None))
    assert any("outside the anterior" in r for r in _review({**big, "compartment": "lung"}, None))


def _probability_with_blob_in_lung(ct: Volume, anatomy) -> tuple[Volume, np.ndarray]:
    """A fake probability map: 1 in a 12-mm ball centred in lung parenchyma far from the mediastinum."""
    lung = np.argwhere(anatomy.labels.array == LUNG)
    env = anatomy.envelope.array > 0
    from scipy import ndimage

    sp = anatomy.labels.spacing_xyz[::-1]
    from_env = ndimage.distance_transform_edt(~env, sampling=sp)[tuple(lung.T)]
    depth = ndimage.distance_transform_edt(anatomy.labels.array == LUNG, sampling=sp)[tuple(lung.T)]
    score = np.where(from_env > 25.0, depth, -1.0)  # deep in the lung, well away from the mediastinum
    assert score.max() > 12.0, "no lung region deep enough for the test ball"
    centre_lps = anatomy.labels.index_to_lps(lung[np.argmax(score)][::-1][None].astype(float))[0]
    zz, yy, xx = np.indices(ct.shape)
    pts = ct.index_to_lps(np.stack([xx.ravel(), yy.ravel(), zz.ravel()], 1).astype(float))
    ball = (np.linalg.norm(pts - centre_lps, axis=1) < 12.0).reshape(ct.shape)
    return ct.with_array(ball.astype(np.float32) * 0.9, units="probability"), ball


def test_regions_outside_the_mediastinum_are_dropped_unless_asked(real_ct_dir):
    from mediastinal_ai.segmentation.inference import postprocess_full

    ct = read_ct(real_ct_dir / "mediastinum_crop_ct.nii.gz")
    a = analyse_chest(canonical(ct)[0])
    prob, ball = _probability_with_blob_in_lung(ct, a)
    mask, _, lesions, dropped = postprocess_full(ct, prob, 0.5, anatomy=a)
    assert not mask.array.any() and not lesions and len(dropped) == 1 and dropped[0]["compartment"] == "lung"
    mask, _, lesions, dropped = postprocess_full(ct, prob, 0.5, anatomy=a, restrict_to_mediastinum=False)
    assert mask.array.sum() == ball.sum() and lesions[0]["compartment"] == "lung" and not dropped


def test_cli_flags_reach_the_result_and_mrml_keeps_the_restriction(real_with_lesion, tmp_path):
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    from mediastinal_ai import cli
    from mediastinal_ai.mrml import nodes
    from mediastinal_ai.mrml.segmentation import import_result, rethreshold

    src = tmp_path / "ct.nii.gz"
    write_image(real_with_lesion.ct, src)
    out = tmp_path / "r"
    assert cli.main(["segment", "-i", str(src), "-o", str(out), "--tta", "x", "--no-crop",
                     "--keep-outside-mediastinum"]) == 0
    r = json.loads((out / "segmentation_result.json").read_text())
    assert r["params"]["tta"] == "x" and r["params"]["crop_to_mediastinum"] is False
    assert r["params"]["restrict_to_mediastinum"] is False
    assert (out / "uncertainty.nrrd").is_file() and (out / "anatomy_labels.nrrd").is_file()
    out2 = tmp_path / "r2"
    assert cli.main(["segment", "-i", str(src), "-o", str(out2), "--no-tta"]) == 0
    r2 = json.loads((out2 / "segmentation_result.json").read_text())
    assert r2["params"]["tta"] == "none" and r2["params"]["restrict_to_mediastinum"] is True
    # MRML: the segment equals mask.nrrd (dropped components stay dropped), also after re-thresholding
    scene = nodes.new_scene()
    ct_node = nodes.volume_to_node(scene, read_ct(src), "CT")
    got = import_result(scene, ct_node, out2)
    seg_mask = nodes.segment_to_mask(got["segmentation_node"], got["segment_id"], ct_node).array
    file_mask = read_image(out2 / "mask.nrrd").array
    assert np.array_equal(seg_mask > 0, file_mask > 0)
    prob_node = got["probability_node"]
    assert prob_node.GetNodeReferenceID("MediastinalAIUncertainty")
    for n in (got["segmentation_node"], prob_node, got["table_node"]):  # provenance on every result node
        rec = json.loads(n.GetAttribute("MediastinalAI.provenance"))
        assert rec["source"]["kind"] == "file" and rec["source"]["path"] == str(src) and rec["produced_by"]
        assert rec["model"]["label"] == r2["model"] and rec["params"]["threshold"] == 0.5
    # plant a lung blob in the stored probability and re-threshold: it is dropped again
    a = analyse_chest(canonical(read_ct(src))[0])
    blob, ball = _probability_with_blob_in_lung(read_ct(src), a)
    p = nodes.node_to_volume(prob_node, units="probability")
    nodes.probability_to_node(scene, p.with_array(np.maximum(p.array, blob.array)), reference=ct_node, node=prob_node)
    again = rethreshold(scene, prob_node, got["segmentation_node"], got["segment_id"], 0.5, got["table_node"])
    m2 = nodes.segment_to_mask(got["segmentation_node"], got["segment_id"], ct_node).array > 0
    assert not (m2 & ball).any(), "a region in the lung came back on re-threshold"
    assert [r["compartment"] for r in again["lesions"]] == [r["compartment"] for r in got["lesions"]]


# ------------------------------------------------------------------ fusion's lesion site from the anatomy
def test_fusion_lesion_site_comes_from_the_anatomy_when_not_given(real_ct_dir):
    from mediastinal_ai.fusion.predict import predict_fusion
    from mediastinal_ai.synthetic.insertion import insert_lesion

    case = insert_lesion(read_ct(real_ct_dir / "mediastinum_crop_ct.nii.gz"), seed=8, lesion_class="thymoma_A",
                         diameter_mm=35.0)
    r = predict_fusion(case.ct, case.mask, ctc=9.5)
    assert r["inputs"]["lesion_site"] == "anterior" and r["lesion_site_source"] == "anatomy"
    assert any("chest-anatomy" in n for n in r["notes"])
    given = predict_fusion(case.ct, case.mask, ctc=9.5, lesion_site="posterior")
    assert given["inputs"]["lesion_site"] == "posterior" and given["lesion_site_source"] == "user"
    off = predict_fusion(case.ct, case.mask, ctc=9.5, site_from_anatomy=False)
    assert off["inputs"]["lesion_site"] is None and off["lesion_site_source"] == "none"


def test_lesion_matching_is_optimal_not_greedy():
    from mediastinal_ai.segmentation.metrics import match_lesions

    # prediction 0 overlaps both lesions; greedy takes (0, 0) first and loses lesion 1
    iou = np.array([[0.60, 0.55], [0.50, 0.00]])
    assert sorted(match_lesions(iou, 0.5)) == [(0, 1), (1, 0)]
    assert match_lesions(iou, 0.61) == []
    assert match_lesions(np.array([[0.5]]), 0.5) == [(0, 0)]  # IoU equal to t matches, as documented


def test_result_json_records_its_source_and_model(real_with_lesion, demo_model, tmp_path):
    from mediastinal_ai.segmentation import segment_volume, write_result

    src = tmp_path / "ct.nii.gz"
    write_image(real_with_lesion.ct, src)
    ct = read_ct(src)
    paths = write_result(segment_volume(ct, demo_model, tta="none"), tmp_path / "r", ct)
    r = json.loads(paths["result"].read_text())
    assert r["source"]["kind"] == "file" and r["source"]["path"] == str(src) and len(r["source"]["sha256"]) == 64
    assert r["model"] == demo_model.label and r["model_sha256"] == demo_model.card.sha256
