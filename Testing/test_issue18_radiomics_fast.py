"""Issue 18 item 10: faster radiomics mechanics give the features of a plain pyradiomics call, bit for bit.

Speed itself is measured in benchmarks/radiomics_extraction.py (never asserted here)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("radiomics")
pd = pytest.importorskip("pandas")

from mediastinal_ai.radiomics import fast  # noqa: E402
from mediastinal_ai.radiomics import params as rparams  # noqa: E402
from mediastinal_ai.radiomics.extract import extract_cohort, extract_features  # noqa: E402
from mediastinal_ai.radiomics.fast import fast_bin_edges, merge_parts, split_params  # noqa: E402


def _bits(d: dict) -> dict:
    return {k: np.float64(v).tobytes() for k, v in d.items()}


def _plain(ct, mask, p) -> dict:
    """What a user writes: pyradiomics' own execute on the windowed image, no helper of ours."""
    import SimpleITK as sitk
    from radiomics import featureextractor

    img = rparams.apply_window(ct, p).to_sitk()
    lab = sitk.Cast(mask.with_array((np.asarray(mask.array) > 0).astype(np.uint8), units="label").to_sitk(),
                    sitk.sitkUInt8)
    raw = featureextractor.RadiomicsFeatureExtractor(rparams.pyradiomics_params(p)).execute(img, lab, label=1)
    return {k: float(np.asarray(v).item()) for k, v in raw.items() if not k.startswith("diagnostics")}


def _params() -> dict:
    """Published settings at 2 mm with one of each image-type family (fast, still all mechanics)."""
    p = rparams.load_params(rparams.PAPER_PARAMS)
    p["setting"]["resampledPixelSpacing"] = [2, 2, 2]
    p["imageType"] = {"Original": {}, "LoG": {"sigma": [1.0, 3.0]}, "Wavelet": {}, "Square": {}, "Exponential": {}}
    return p


@pytest.fixture(scope="module")
def real_case(real_ct_dir):
    """A real contrast CT crop (mediastinum) with a 12 mm-radius ball in it."""
    from mediastinal_ai.io import read_ct

    ct = read_ct(real_ct_dir / "mediastinum_crop_ct.nii.gz")
    zz, yy, xx = np.mgrid[: ct.shape[0], : ct.shape[1], : ct.shape[2]]
    c = np.array(ct.shape) / 2
    r = 12.0 / np.asarray(ct.spacing_xyz)[::-1]
    ball = ((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2 <= 1
    return ct, ct.with_array(ball.astype(np.uint8), units="label")


def test_numpy_bin_edges_equal_pyradiomics_own():
    from radiomics import imageoperations

    rng = np.random.default_rng(3)
    cases = [rng.normal(0, 90, 5000), rng.normal(-2, 1, 300).astype(np.float32), np.array([-0.0, 0.0, 64.0]),
             np.full(7, 32.0), rng.integers(-160, 240, 999).astype(np.float64)]
    for values in cases:
        for kw in ({"binWidth": 32}, {"binWidth": 0.5}, {"binCount": 16}):
            want = imageoperations.getBinEdges(values, **kw)
            with fast_bin_edges():
                assert imageoperations.getBinEdges is not want  # installed
                got = imageoperations.getBinEdges(values, **kw)
            assert np.asarray(want).tobytes() == np.asarray(got).tobytes(), (values[:3], kw)
    with_nan = np.array([1.0, np.nan, 70.0])
    with fast_bin_edges():
        got = imageoperations.getBinEdges(with_nan, binWidth=32)
    assert np.asarray(got).tobytes() == np.asarray(imageoperations.getBinEdges(with_nan, binWidth=32)).tobytes()
    assert imageoperations.getBinEdges.__name__ == "getBinEdges"  # restored after the block


def test_split_covers_every_image_type_once_and_balances():
    p = rparams.pyradiomics_params(rparams.load_params("paper"))
    parts = split_params(p, 2)
    assert len(parts) == 2
    sigmas = sorted(s for q in parts for s in (q["imageType"].get("LoG") or {}).get("sigma", []))
    assert sigmas == [1.0, 2.0, 3.0, 4.0, 5.0]
    types = [t for q in parts for t in q["imageType"] if t != "LoG"]
    assert sorted(types) == sorted(t for t in p["imageType"] if t != "LoG")
    assert sum("shape" in q["featureClass"] for q in parts) == 1
    assert split_params(p, 1) == [p]


def test_parts_merged_equal_plain_pyradiomics_bit_for_bit_on_real_ct(real_case):
    ct, mask = real_case
    p = _params()
    ref = _plain(ct, mask, p)
    for n in (2, 3):
        parts = split_params(rparams.pyradiomics_params(p), n)
        got = merge_parts([extract_features(ct, mask, p, extractor=rparams.make_extractor(
            {**q, "preprocessing": p["preprocessing"]})) for q in parts], p)
        assert list(got) == list(ref)  # same names, same order as one execute
        assert _bits(got) == _bits(ref)
    assert _bits(extract_features(ct, mask, p)) == _bits(ref)  # the one-case path (numpy bin edges)


def test_cohort_with_two_workers_equals_plain_loop_bit_for_bit(tmp_path, real_case):
    from mediastinal_ai.cohort import write_manifest
    from mediastinal_ai.io import write_image

    ct, mask = real_case
    small = np.zeros_like(mask.array)
    small[40:52, 45:55, 50:62] = 1  # a second, box-shaped tumour
    write_image(ct, tmp_path / "ct.nii.gz")
    write_image(mask, tmp_path / "m1.nii.gz")
    write_image(mask.with_array(small), tmp_path / "m2.nii.gz")
    man = write_manifest(tmp_path / "manifest.csv", [
        {"case_id": "a", "ct": "ct.nii.gz", "mask": "m1.nii.gz"}, {"case_id": "b", "ct": "ct.nii.gz", "mask": "m2.nii.gz"}])
    p = _params()
    p["imageType"] = {"Original": {}, "LoG": {"sigma": [2.0, 4.0]}, "Square": {}}
    t = extract_cohort(man, tmp_path / "out", p, readers=("1",), workers=2)["table"]
    from mediastinal_ai.io import read_ct, read_mask

    back = read_ct(tmp_path / "ct.nii.gz")
    for cid, f in (("a", "m1.nii.gz"), ("b", "m2.nii.gz")):
        ref = _plain(back, read_mask(tmp_path / f, back), p)
        row = t[t.case_id == cid].iloc[0]
        assert [c for c in t.columns if c not in ("case_id", "reader")] == list(ref)
        assert _bits({k: row[k] for k in ref}) == _bits(ref)


# ----------------------------------------------------------------------------- prepared parts, shared binning
def test_shared_binning_bins_each_image_once_and_changes_no_bit(real_case, monkeypatch):
    from radiomics import featureextractor, imageoperations

    ct, mask = real_case
    p = _params()
    p["imageType"] = {"Original": {}, "LoG": {"sigma": [2.0]}}
    ref = _plain(ct, mask, p)
    calls = []
    plain_bin = imageoperations.binImage
    monkeypatch.setattr(imageoperations, "binImage", lambda *a, **k: calls.append(1) or plain_bin(*a, **k))
    from mediastinal_ai.radiomics.extract import sitk_inputs

    img, lab = sitk_inputs(ct, mask, p)
    with fast.shared_binning():
        raw = featureextractor.RadiomicsFeatureExtractor(rparams.pyradiomics_params(p)).execute(img, lab, label=1)
    got = {k: float(np.asarray(v).item()) for k, v in raw.items() if not k.startswith("diagnostics")}
    assert list(got) == list(ref) and _bits(got) == _bits(ref)
    assert len(calls) == 2  # one discretisation per image (Original, LoG 2 mm), not one per feature class (6)
    from radiomics import base

    assert not getattr(base.RadiomicsFeaturesBase._applyBinning, "_mediastinal_fast", False)  # restored


def test_prepared_pair_round_trips_exactly_and_counts_surface_faces(tmp_path):
    import SimpleITK as sitk

    arr = np.zeros((6, 7, 8), np.uint32)
    arr[1:4, 2:6, 3:8] = 1  # a 3 x 4 x 5 box touching the x border
    mask = sitk.GetImageFromArray(arr)
    img = sitk.GetImageFromArray(np.random.default_rng(0).normal(0, 50, arr.shape).astype(np.float32))
    for im in (mask, img):
        im.SetSpacing((1.0, 1.0 / 3.0, 0.7))
        im.SetOrigin((-12.345678901234567, 0.1, 1e-7))
        im.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    info = fast.save_prepared(tmp_path / "case.x__reader1", img, mask)
    assert info == {"voxels": 60, "faces": 2 * (3 * 4 + 4 * 5 + 3 * 5)}
    a, b = fast.load_prepared(tmp_path / "case.x__reader1")
    for want, got in ((img, a), (mask, b)):
        assert sitk.Hash(want) == sitk.Hash(got) and want.GetPixelID() == got.GetPixelID()
        assert (want.GetSpacing(), want.GetOrigin(), want.GetDirection()) == (got.GetSpacing(), got.GetOrigin(),
                                                                              got.GetDirection())


def test_pieces_one_per_image_type_and_cost_follows_surface():
    p = rparams.pyradiomics_params(rparams.load_params("paper"))
    ps = fast.pieces(p)
    assert len(ps) == 1 + 1 + 5 + 1 + 4  # shape, Original, 5 LoG sigmas, Wavelet, 4 simple filters
    assert sum(q["shape"] for q in ps) == 1 and sum(q["images"] for q in ps) == 1 + 5 + 8 + 4
    shape = next(q for q in ps if q["shape"])
    assert shape["images"] == 0 and list(shape["params"]["featureClass"]) == ["shape"]
    wav = next(q for q in ps if "Wavelet" in q["params"]["imageType"])
    assert "shape" not in wav["params"]["featureClass"] and wav["images"] == 8
    # a lobulated tumour (twice the surface) costs more shape time than a round one of the same volume
    assert fast.part_cost(shape, 500_000, 140_000) > 3 * fast.part_cost(shape, 500_000, 70_000)
    assert fast.part_cost(wav, 500_000, 70_000) > fast.part_cost(ps[-1], 500_000, 70_000)


def test_prepared_parts_merged_equal_plain_pyradiomics_bit_for_bit(real_case, monkeypatch):
    from radiomics import imageoperations

    from mediastinal_ai.radiomics.extract import sitk_inputs

    ct, mask = real_case
    p = _params()
    ref = _plain(ct, mask, p)
    pp = rparams.pyradiomics_params(p)
    pair = fast.PreparedPair(*fast.prepare(*sitk_inputs(ct, mask, p), pp))
    checks = []
    plain_check = imageoperations.checkMask
    monkeypatch.setattr(imageoperations, "checkMask", lambda *a, **k: checks.append(1) or plain_check(*a, **k))
    parts = []
    for q in fast.pieces(pp):
        with fast.fast_extraction(), pair.checked_once():
            raw = fast.prepared_extractor(q["params"]).execute(pair.image, pair.mask, label=1)
        parts.append({k: float(np.asarray(v).item()) for k, v in raw.items() if not k.startswith("diagnostics")})
    assert len(parts) == 7 and len(checks) == 1  # pyradiomics' mask check ran once for the seven parts
    got = merge_parts(parts, p)
    assert list(got) == list(ref) and _bits(got) == _bits(ref)


def test_cohort_pool_two_readers_one_ct_read_failure_isolated_no_temp_left(tmp_path, real_case, monkeypatch):
    """Both readers of a case share one CT read; a pair whose part fails is reported, the others are
    the plain loop's features bit for bit; the prepared pairs' temporary folder is gone afterwards."""
    import tempfile

    from mediastinal_ai.cohort import write_manifest
    from mediastinal_ai.io import read_ct, read_mask, write_image
    from mediastinal_ai.radiomics import extract

    ct, mask = real_case
    other = np.zeros_like(mask.array)
    other[40:52, 45:55, 50:62] = 1
    line = np.zeros_like(mask.array)
    line[45, 50, 40:60] = 1  # one voxel thick: pyradiomics refuses it (minimumROIDimensions 2 > 1)
    write_image(ct, tmp_path / "ct.nii.gz")
    for name, a in (("m1", mask.array), ("m2", other), ("line", line)):
        write_image(mask.with_array(a), tmp_path / f"{name}.nii.gz")
    man = write_manifest(tmp_path / "manifest.csv", [
        {"case_id": "a", "ct": "ct.nii.gz", "mask": "m1.nii.gz", "mask_reader2": "m2.nii.gz"},
        {"case_id": "b", "ct": "ct.nii.gz", "mask": "line.nii.gz"}])
    p = _params()
    p["imageType"] = {"Original": {}, "LoG": {"sigma": [2.0]}}
    reads = []
    import mediastinal_ai.io as mio

    real_read = mio.read_ct
    monkeypatch.setattr(mio, "read_ct", lambda *a, **k: reads.append(str(a[0])) or real_read(*a, **k))
    prep = extract._prepare_job(str(tmp_path / "ct.nii.gz"), [("1", str(tmp_path / "m1.nii.gz")),
                                                               ("2", str(tmp_path / "m2.nii.gz"))],
                                p, "a", str(tmp_path))
    assert len(reads) == 1 and [(x["reader"], x["ok"]) for x in prep] == [("1", True), ("2", True)]
    assert prep[0]["voxels"] > prep[1]["voxels"] > 0 and prep[0]["faces"] > 0
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    res = extract.extract_cohort(man, tmp_path / "out", p, readers=("1", "2"), workers=2)
    t = res["table"]
    assert sorted(zip(t.case_id, t.reader)) == [("a", "1"), ("a", "2")]
    assert len(res["errors"]) == 1 and res["errors"][0]["case_id"] == "b"
    assert "pyradiomics could not use" in res["errors"][0]["error"] and "line.nii.gz" in res["errors"][0]["error"]
    back = read_ct(tmp_path / "ct.nii.gz")
    for r, f in (("1", "m1.nii.gz"), ("2", "m2.nii.gz")):
        ref = _plain(back, read_mask(tmp_path / f, back), p)
        row = t[(t.case_id == "a") & (t.reader == r)].iloc[0]
        assert _bits({k: row[k] for k in ref}) == _bits(ref)
    assert list((tmp_path / "tmp").iterdir()) == []  # prepared pairs removed
