"""Realism of the synthetic cohort: tissue HU, anatomy, noise texture, slice thickness, class-dependent
appearance rates, reader-2 agreement, SYNTHETIC labelling, and a comparison with a real contrast CT.

Each check measures the generated arrays (with the generator's own tissue label map) and could fail;
figures are printed (run with ``-s``). Budget: ~25 s alone on one core.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from mediastinal_ai.cohort import COLUMNS, read_manifest
from mediastinal_ai.synthetic import TISSUES, generate_case, generate_cohort
from mediastinal_ai.synthetic.generator import Z_EXTENT_MM, appearance_params
from mediastinal_ai.taxonomy import WHO_HIGH, WHO_LOW

TET = list(WHO_LOW + WHO_HIGH)
INPLANE = np.ones((1, 3, 3), bool)  # erode in-plane only: 5 mm slices are thin structures along z


def _eroded(labels: np.ndarray, *names: str) -> np.ndarray:
    return ndimage.binary_erosion(np.isin(labels, [TISSUES[n] for n in names]), INPLANE)


def noise_sd_and_correlation(a: np.ndarray, region: np.ndarray, w: int = 5) -> tuple[float, float]:
    """Noise SD (median local SD in w³ windows inside ``region``) and neighbour correlation
    ρ = 1 − var(Δ)/(2σ²) from in-plane first differences (robust: MAD). The same estimator is applied
    to real and synthetic images; white noise gives ρ ≈ 0."""
    a = a.astype(np.float32)
    mu, mu2 = ndimage.uniform_filter(a, w), ndimage.uniform_filter(a * a, w)
    sd = np.sqrt(np.maximum(mu2 - mu * mu, 0) * w ** 3 / (w ** 3 - 1))
    inner = ndimage.binary_erosion(region, np.ones((w, w, w), bool))
    sigma = float(np.median(sd[inner]))
    dvar = []
    for ax in (1, 2):
        d = np.diff(a, axis=ax)[np.take(inner, range(a.shape[ax] - 1), axis=ax)]
        dvar.append((1.4826 * np.median(np.abs(d - np.median(d)))) ** 2)
    return sigma, float(1 - np.mean(dvar) / (2 * sigma ** 2))


def test_tissue_hu_in_expected_ranges():
    ranges = {"fat": (-130, -70), "mediastinal_fat": (-130, -60), "muscle": (20, 80), "lung": (-880, -740),
              "bone_cortical": (350, 1200), "bone_cancellous": (150, 350), "heart_muscle": (80, 140),
              "blood": (140, 260), "aorta": (140, 260), "air": (-1010, -990), "effusion": (0, 25),
              "liver": (80, 130), "airway": (-1010, -800), "esophagus": (10, 70)}
    seen = set()
    for seed in range(20):  # until a case with pericardial effusion has been checked too
        c = generate_case(seed, inplane_size=128, slice_thickness_mm=5.0, return_tissues=True)
        t, a = c.tissues.array, c.ct.array
        for name, (lo, hi) in ranges.items():
            m = _eroded(t, name)
            if m.sum() < 20:
                continue
            med = float(np.median(a[m]))
            assert lo <= med <= hi, f"seed {seed}: {name} median {med:.0f} HU outside {lo}..{hi}"
            seen.add(name)
        if "effusion" in seen:
            break
    assert seen == set(ranges), f"tissues never checked: {set(ranges) - seen}"
    # sternum anterior (low y index), spine posterior (high y index): standard LPS axial orientation
    bone = np.argwhere(np.isin(t, [TISSUES["bone_cancellous"]]))
    assert bone[:, 1].min() < a.shape[1] * 0.3 and bone[:, 1].max() > a.shape[1] * 0.6
    assert np.allclose(c.ct.direction, np.eye(3))


def test_lesion_in_prevascular_space():
    for seed in range(500, 508):
        c = generate_case(seed, inplane_size=96, classes=TET)
        lm = c.metadata["landmarks_lps_mm"]
        lps = c.mask.index_to_lps(np.argwhere(c.mask.array > 0)[:, ::-1])
        cy = lps[:, 1].mean()
        assert c.lesion_site == "anterior"
        assert lm["sternum_posterior_y"] < cy < lm["ascending_aorta_xy"][1], (seed, cy, lm)
        assert (lps[:, 1] >= lm["sternum_posterior_y"] - c.ct.spacing_xyz[1]).mean() > 0.98  # behind the sternum
        assert abs(lps[:, 0].mean()) < 40  # near the midline
    # a schwannoma is drawn posterior (paravertebral), behind the heart
    s = generate_case(9, "schwannoma", inplane_size=96)
    ys = s.mask.index_to_lps(np.argwhere(s.mask.array > 0)[:, ::-1])[:, 1].mean()
    assert s.lesion_site == "posterior" and ys > s.metadata["landmarks_lps_mm"]["heart_center"][1] + 30


def test_thick_slices_are_averaged_thin_slices():
    thin = generate_case(21, "thymoma_B1", slice_thickness_mm=1.0, return_tissues=True)
    thick = generate_case(21, "thymoma_B1", slice_thickness_mm=5.0, return_tissues=True)
    assert thin.ct.shape == (200, 128, 128) and thick.ct.shape == (40, 128, 128)
    for c, t in ((thin, 1.0), (thick, 5.0)):
        assert c.ct.spacing_xyz[2] == t and c.ct.shape[0] * t == Z_EXTENT_MM
        assert c.ct.index_to_lps([0, 0, 0])[2] == pytest.approx(-Z_EXTENT_MM / 2 + t / 2)
        assert c.mask.same_geometry(c.ct) and c.mask_reader2.same_geometry(c.ct)
    assert thin.ct.spacing_xyz[:2] == thick.ct.spacing_xyz[:2]
    vol = [c.mask.array.sum() * c.ct.voxel_volume_mm3 for c in (thin, thick)]
    assert vol[1] == pytest.approx(vol[0], rel=0.15)
    cen = [c.mask.index_to_lps(np.argwhere(c.mask.array > 0)[:, ::-1]).mean(0) for c in (thin, thick)]
    assert np.linalg.norm(cen[0] - cen[1]) < 4.0
    sd = [noise_sd_and_correlation(c.ct.array, _eroded(c.tissues.array, "mediastinal_fat"))[0] for c in (thin, thick)]
    print(f"noise SD in fat: 1 mm {sd[0]:.1f} HU, 5 mm {sd[1]:.1f} HU")
    assert sd[0] > 1.4 * sd[1]  # averaging thin slices lowers the noise


def test_noise_is_spatially_correlated_not_white():
    c = generate_case(5, "cyst", return_tissues=True)
    sd, rho = noise_sd_and_correlation(c.ct.array, _eroded(c.tissues.array, "mediastinal_fat", "fat"))
    rng = np.random.default_rng(0)
    white = np.full(c.ct.shape, -100.0) + rng.normal(0, sd, c.ct.shape)
    _, rho_white = noise_sd_and_correlation(white, np.ones(c.ct.shape, bool))
    print(f"noise SD {sd:.1f} HU, neighbour correlation {rho:.2f} (white noise {rho_white:.2f})")
    assert 8 < sd < 25 and rho > 0.25 and abs(rho_white) < 0.05


def test_reader2_agreement_in_range():
    dice = []
    for seed in range(300, 308):
        c = generate_case(seed)
        m1, m2 = c.mask.array > 0, c.mask_reader2.array > 0
        dice.append(2 * (m1 & m2).sum() / (m1.sum() + m2.sum()))
        assert (c.ct.array[m2 & ~m1] > -500).all()  # reader 2 does not outline lung or air
    print("reader-2 Dice", np.round(dice, 3))
    assert 0.85 <= np.mean(dice) <= 0.96 and min(dice) > 0.7 and max(dice) < 0.995


def test_feature_rates_follow_published_direction():
    """Over a cohort of TETs: unclear margin, calcification and heterogeneous enhancement are more
    frequent in the high-risk group (published direction), close to the YAML rates, and visible."""
    P = appearance_params()["risk_groups"]
    meta = [generate_case(2000 + s, inplane_size=32, classes=TET).metadata for s in range(120)]
    for feat, key in (("unclear_margin", "p_unclear"), ("calcification", "p_calcification"),
                      ("heterogeneous", "p_heterogeneous")):
        rate = {}
        for g, names in (("low", WHO_LOW), ("high", WHO_HIGH)):
            x = [m[feat] for m in meta if m["lesion_class"] in names]
            rate[g] = float(np.mean(x))
            se = np.sqrt(P[g][key] * (1 - P[g][key]) / len(x))
            assert abs(rate[g] - P[g][key]) < 3 * se + 0.02, (feat, g, rate[g], P[g][key])
        print(f"{feat}: low {rate['low']:.2f} high {rate['high']:.2f}")
        assert rate["high"] > rate["low"], feat
    # hard cases occur at about their configured rates (all TETs are anterior and solid)
    H = appearance_params()["hard_cases"]
    for flag, key in (("hard_small", "p_small"), ("hard_low_contrast", "p_low_contrast"),
                      ("hard_abutting_aorta", "p_abutting_aorta"), ("pericardial_effusion", "p_pericardial_effusion")):
        r = float(np.mean([m[flag] for m in meta]))
        assert 0 < r and abs(r - H[key]) < 3 * np.sqrt(H[key] * (1 - H[key]) / len(meta)) + 0.02, (flag, r)
    # the flags show in the image: heterogeneous lesions vary more inside, calcified ones are brighter
    sd_h, sd_n, mx_c, mx_n = [], [], [], []
    for s in range(30):
        c = generate_case(3000 + s, inplane_size=64, classes=TET)
        inner = ndimage.binary_erosion(c.mask.array > 0, INPLANE)
        if inner.sum() < 10:
            continue
        v = c.ct.array[c.mask.array > 0].astype(float)
        (sd_h if c.metadata["heterogeneous"] else sd_n).append(c.ct.array[inner].std())
        (mx_c if c.metadata["calcification"] else mx_n).append(np.percentile(v, 99.5))
    assert min(len(sd_h), len(sd_n), len(mx_c), len(mx_n)) >= 3
    assert np.median(sd_h) > np.median(sd_n) + 3
    assert np.median(mx_c) > np.median(mx_n) + 40


def test_cohort_is_labelled_synthetic_everywhere(tmp_path):
    import SimpleITK as sitk

    from mediastinal_ai.cli import main

    m = generate_cohort(6, tmp_path / "c", seed=40, inplane_size=48, classes=["cyst", "thymoma_B2", "lipoma"])
    header = m.read_text().splitlines()[0].split(",")
    # every standard column except reader 1's repeat outline, which the generator does not simulate
    # (intra-observer ICC is then skipped, logged by radiomics.selection)
    assert all(col in header for col in COLUMNS if col != "mask_reader1_repeat")
    cases = read_manifest(m)
    assert {c.lesion_class for c in cases} <= {"cyst", "thymoma_B2", "lipoma"}
    for c in cases:
        assert c.synthetic and c.split in ("train", "val", "test") and c.ctc >= 0 and c.age and c.sex
        assert (c.who_risk == "high") == (c.lesion_class == "thymoma_B2")
        img = sitk.ReadImage(str(c.ct))
        assert "SYNTHETIC" in img.GetMetaData("descrip")
        assert img.GetPixelID() == sitk.sitkInt16
    assert json.loads((tmp_path / "c" / "cohort.json").read_text())["synthetic"] is True
    assert {"test", "val"} <= {c.split for c in cases}
    assert main(["synth", "--cases", "1", "--out", str(tmp_path / "bad"), "--classes", "no_such_class"]) == 2


def test_matches_real_contrast_ct(real_ct_dir):
    """Blood pool, myocardium, fat and lung medians and the noise of an arterial-phase phantom at the
    real sample's resolution (1.5 mm) against the real contrast CT crop (a CT angiography-like phase)."""
    import SimpleITK as sitk

    ct = sitk.ReadImage(str(real_ct_dir / "mediastinum_crop_ct.nii.gz"))
    heart = sitk.Resample(sitk.ReadImage(str(real_ct_dir / "mediastinum_crop_heart_mask.nii.gz")), ct,
                          sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    a, h = sitk.GetArrayFromImage(ct), sitk.GetArrayFromImage(heart) > 0
    sm = ndimage.median_filter(a, 3)  # regions by smoothed HU (the sample has only a heart mask)
    real_regions = {"blood": h & (sm > 350), "myocardium": h & (sm > 60) & (sm < 180),
                    "fat": (sm > -150) & (sm < -50), "lung": (sm > -1000) & (sm < -600)}
    real = {k: float(np.median(a[ndimage.binary_erosion(v)])) for k, v in real_regions.items()}
    real_sd, real_rho = noise_sd_and_correlation(a, real_regions["fat"])

    c = generate_case(3, "thymoma_AB", inplane_size=232, slice_thickness_mm=1.5, contrast_phase="arterial",
                      return_tissues=True)
    t, b = c.tissues.array, c.ct.array
    syn_regions = {"blood": t == TISSUES["blood"], "myocardium": t == TISSUES["heart_muscle"],
                   "fat": np.isin(t, [TISSUES["fat"], TISSUES["mediastinal_fat"]]), "lung": t == TISSUES["lung"]}
    syn = {k: float(np.median(b[ndimage.binary_erosion(v)])) for k, v in syn_regions.items()}
    syn_sd, syn_rho = noise_sd_and_correlation(b, syn_regions["fat"])
    tol = {"blood": 80, "myocardium": 40, "fat": 30, "lung": 50}
    for k in tol:
        print(f"{k}: real {real[k]:.0f} HU, synthetic {syn[k]:.0f} HU (tolerance ±{tol[k]})")
    print(f"noise SD in fat: real {real_sd:.1f}, synthetic {syn_sd:.1f} HU; "
          f"neighbour correlation real {real_rho:.2f}, synthetic {syn_rho:.2f}")
    for k in tol:
        assert abs(syn[k] - real[k]) <= tol[k], (k, syn[k], real[k])
    assert 0.6 <= syn_sd / real_sd <= 1.6
    assert abs(syn_rho - real_rho) < 0.25


def test_edited_yaml_errors_name_the_file_and_entry():
    import copy

    from mediastinal_ai.errors import InputError
    from mediastinal_ai.synthetic.generator import PARAMS_FILE, _check_params

    for edit, expected in ((lambda P: P["classes"].pop("cyst"), "cyst"),
                           (lambda P: P["classes"]["lipoma"].update(site="left"), "lipoma.site"),
                           (lambda P: P["risk_groups"]["high"].update(p_unclear=1.7), "p_unclear"),
                           (lambda P: P["classes"]["thymoma_A"].update(ctc=[9.0]), "thymoma_A.ctc"),
                           (lambda P: P["noise"].update(correlation_mm=[0.6, 0.4]), "correlation_mm"),
                           (lambda P: P["noise"]["sharp_kernel"].update(p=2.0), "sharp_kernel")):
        P = copy.deepcopy(appearance_params())
        edit(P)
        with pytest.raises(InputError, match=expected) as e:
            _check_params(P)
        assert str(PARAMS_FILE) in str(e.value)


# ---------------------------------------------------------------------------------------------
# Real vs synthetic, measured with the same code (mediastinal_ai.synthetic.realism): per-tissue HU
# distributions (1-Wasserstein distance) and the noise power spectrum, non-contrast against the
# real Lung-PET-CT-Dx series and venous phase against the real LIDC contrast slabs. Both sides on
# the generator's default grid (128² over 350 mm, 2.73 mm pixels), the real CT resampled as the
# segmentation resamples it. Thresholds sit between the v3 generator's figures and the v2
# generator's (docs/synthetic.md, benchmarks/README.md): a return to the old gaps fails.

COARSE_PX = 350.0 / 128


def _real_series(real_ct_dir, rel):
    p = real_ct_dir / rel
    if not p.exists():
        pytest.skip(f"real CT series {rel} not found under {real_ct_dir} (see its README)")
    from mediastinal_ai.io import read_ct

    return read_ct(p)


@pytest.fixture(scope="module")
def realism():
    from mediastinal_ai.synthetic import realism as R

    return R


def _synthetic_figures(R, seed, thickness, phase, overrides=None):
    with R.generator_parameters(overrides or {}):
        c = generate_case(seed, "thymoma_B2", inplane_size=128, slice_thickness_mm=thickness, contrast_phase=phase)
    return R.measure(c.ct, f"synthetic {phase} seed {seed}")


def _report(d, real, syn):
    w = {t: d["tissues"][t]["wasserstein_hu"] for t in d["tissues"]}
    print(f"{real.name}: W1 {w}; NPS SD real {real.nps['sd_hu']} syn {syn.nps['sd_hu']}, "
          f"shape L1 {d['nps']['shape_l1']}, medians real/syn "
          + ", ".join(f"{t} {real.tissues[t].get('median')}/{syn.tissues[t].get('median')}" for t in d["tissues"]))
    return w


NONCONTRAST_MAX_W1 = {"lung": 65.0, "fat": 20.0, "soft_tissue": 25.0, "mediastinum": 40.0, "bone": 110.0}


@pytest.mark.parametrize("rel", ["lung-pet-ct-dx/Lung_Dx-A0001_s2", "lung-pet-ct-dx/Lung_Dx-A0002_s4"])
def test_non_contrast_phantom_matches_real_chest_ct(real_ct_dir, realism, rel):
    """Soft-kernel real series (A0001 was used to choose the parameters, A0002 is held out)."""
    real_ct = _real_series(real_ct_dir, rel)
    real = realism.measure(realism.resampled(real_ct, COARSE_PX), rel)
    syn = _synthetic_figures(realism, 3, real_ct.spacing_xyz[2], "non_contrast")
    d = realism.compare(real, syn)
    w = _report(d, real, syn)
    for t, lim in NONCONTRAST_MAX_W1.items():
        assert w[t] <= lim, (rel, t, w[t], lim)
    assert abs(d["tissues"]["lung"]["median_diff_hu"]) <= 40
    assert abs(d["tissues"]["mediastinum"]["median_diff_hu"]) <= 25  # unenhanced blood ≈ 40 HU
    assert real.nps["n_rois"] >= 20 and syn.nps["n_rois"] >= 20
    assert d["nps"]["shape_l1"] <= 0.45 and 0.5 <= d["nps"]["sd_ratio"] <= 2.0, d["nps"]
    assert syn.geometry["contrast_detected"] is False  # the anatomy step reads the phantom as unenhanced


def test_sharp_kernel_option_matches_real_sharp_kernel_noise(real_ct_dir, realism):
    """A0001_s1 (Philips 'L', an edge-enhancing kernel: ~55 HU noise, NPS peak ~0.42 /mm at its own
    sampling): the default soft-kernel noise is far from it; the opt-in sharp kernel is close."""
    rel = "lung-pet-ct-dx/Lung_Dx-A0001_s1"
    real_ct = _real_series(real_ct_dir, rel)
    real = realism.measure(realism.resampled(real_ct, COARSE_PX), rel)
    soft = realism.compare(real, _synthetic_figures(realism, 3, 5.0, "non_contrast"))["nps"]
    sharp_p = dict(appearance_params()["noise"]["sharp_kernel"], p=1.0)
    sharp_fig = _synthetic_figures(realism, 3, 5.0, "non_contrast", {"noise": {"sharp_kernel": sharp_p}})
    sharp = realism.compare(real, sharp_fig)
    _report(sharp, real, sharp_fig)
    print(f"soft default: {soft}; sharp option: {sharp['nps']}")
    assert sharp["nps"]["shape_l1"] <= 0.2 and 0.6 <= sharp["nps"]["sd_ratio"] <= 1.6, sharp["nps"]
    assert soft["shape_l1"] > sharp["nps"]["shape_l1"] + 0.15 and soft["sd_ratio"] < 0.7
    assert sharp["tissues"]["fat"]["wasserstein_hu"] <= 10


@pytest.mark.parametrize("rel", ["lidc-contrast-slabs/LIDC-IDRI-0001", "lidc-contrast-slabs/LIDC-IDRI-0003"])
def test_venous_phantom_against_real_contrast_slabs(real_ct_dir, realism, rel):
    """Venous-phase phantom vs the real IV-contrast slabs (LIDC-IDRI-0001 was used for tuning). The
    slabs' blood pool (~250-320 HU) is brighter than a portal-venous phase (~170 HU): the mediastinum
    is checked to be enhanced but not brighter than the slab, the other tissues by distance."""
    real_ct = _real_series(real_ct_dir, rel)
    real = realism.measure(realism.resampled(real_ct, COARSE_PX), rel)
    syn = _synthetic_figures(realism, 3, real_ct.spacing_xyz[2], "venous")
    d = realism.compare(real, syn)
    w = _report(d, real, syn)
    for t, lim in {"lung": 50.0, "fat": 15.0, "soft_tissue": 20.0, "bone": 130.0}.items():
        assert w[t] <= lim, (rel, t, w[t], lim)
    # the slabs (27-40 mm of chest) rarely hold a flat 44 mm soft-tissue square on the 2.7 mm grid:
    # their noise is compared where they do (the NPS checks proper run on the full chest CTs above)
    if real.nps["n_rois"] >= 20:
        assert d["nps"]["shape_l1"] <= 0.45 and 0.5 <= d["nps"]["sd_ratio"] <= 2.0, d["nps"]
    med_syn, med_real = syn.tissues["mediastinum"]["median"], real.tissues["mediastinum"]["median"]
    assert 100 <= med_syn <= med_real + 30, (med_syn, med_real)
    assert real.geometry["contrast_detected"] and syn.geometry["contrast_detected"]


def test_realism_measure_tells_phases_and_kernels_apart(realism):
    """The measure itself (no real CT needed): a non-contrast and a venous phantom of the same seed
    differ in the mediastinum, not in lung or fat."""
    nc = _synthetic_figures(realism, 7, 5.0, "non_contrast")
    ve = _synthetic_figures(realism, 7, 5.0, "venous")
    d = realism.compare(nc, ve)
    assert d["tissues"]["mediastinum"]["wasserstein_hu"] > 60
    assert d["tissues"]["lung"]["wasserstein_hu"] < 5 and d["tissues"]["fat"]["wasserstein_hu"] < 5
    assert nc.nps["n_rois"] >= 20 and all(nc.tissues[t]["n"] > 1000 for t in realism.TISSUE_DEFS)
