"""How close is a CT — synthetic or real — to real chest CT? Per-tissue HU distributions and the
noise power spectrum (NPS), measured with the same code on both.

Why one measuring code: a tuned phantom is only as good as the comparison it was tuned against.
Real CTs have no tissue label map, so neither does this module use the generator's: the regions
come from the classical anatomy step (:func:`mediastinal_ai.anatomy.analyse_chest`, 3 mm grid) on
the canonical CT, eroded by one coarse voxel in-plane and restricted to the slices where both lungs
are in view, then narrowed by an HU window on the native grid:

================  ==========================================  ================
tissue            anatomy region                              HU window
================  ==========================================  ================
lung              lung                                        −1000 … −200
fat               body outside lungs/bone + mediastinum       −200 … −40
soft_tissue       body outside lungs, bone and mediastinum    −40 … 120
mediastinum       anterior + middle mediastinum (heart,       −40 … 600
                  great vessels, blood pool)
bone              bone (not eroded: ribs are thin)            150 … 2000
================  ==========================================  ================

A distribution is compared by the 1-Wasserstein distance (HU) between the windowed values, and by
the share of the region's voxels that fall in the window (how much of the region is that tissue).

The **NPS** is measured in-plane (one 2D spectrum per ROI) in square ROIs of :data:`NPS_ROI_MM`
(at least 16 pixels: 44 mm on the generator's default 2.7 mm grid) that lie entirely in non-lung, non-bone soft tissue or fat and are flat (after removing a
second-order polynomial trend, the Gaussian-smoothed residual varies by less than
:data:`NPS_FLAT_SD_HU` plus 0.3 × the SD that the smoothing removed, so that strong noise,
which smoothing does not remove entirely, is not taken for structure), radially averaged in cycles/mm. Figures: noise SD (the NPS integral),
peak frequency and mean frequency (the 2D-weighted centroid). Distances: ratio of the integrals,
difference of the mean and peak frequencies, and the L1 distance between the two area-normalised
spectra (0 = same shape, 2 = disjoint).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from ..volume import Volume

NPS_ROI_MM = 24.0
NPS_FLAT_SD_HU = 6.0  # smoothed residual SD above this: structure, not noise …
NPS_FLAT_NOISE_SHARE = 0.3  # … plus this share of the SD that smoothing removed
NPS_MAX_ROIS = 600
NPS_FREQ = np.round(np.arange(0.0, 0.701, 0.02), 3)  # common frequency grid (cycles/mm)
HIST_SAMPLES = 200_000
FLAT_BIT = 0x80

# tissue → (anatomy codes, HU window, erode the region)
TISSUE_DEFS: dict[str, tuple[tuple[str, ...], tuple[float, float], bool]] = {
    "lung": (("lung",), (-1000.0, -200.0), True),
    "fat": (("body", "anterior", "middle", "posterior"), (-200.0, -40.0), True),
    "soft_tissue": (("body",), (-40.0, 120.0), True),
    "mediastinum": (("anterior", "middle"), (-40.0, 600.0), True),
    "bone": (("bone",), (150.0, 2000.0), False),
}


@dataclass
class RealismFigures:
    """What :func:`measure` found on one CT."""

    name: str
    tissues: dict[str, dict[str, float]]  # per tissue: n, share, median, p05, p25, p75, p95, mean, sd
    samples: dict[str, np.ndarray]  # per tissue: up to HIST_SAMPLES windowed HU values (sorted)
    nps: dict[str, Any]  # freq, nps (radial), n_rois, sd_hu, f_peak, f_mean, pixel_mm, roi_px
    anatomy: dict[str, float]  # volume shares of the thoracic body
    geometry: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        nps = {k: v for k, v in self.nps.items() if k not in ("freq", "nps", "on_grid")}
        return {"name": self.name, "geometry": self.geometry, "anatomy": self.anatomy, "tissues": self.tissues,
                "nps": nps, "nps_curve": {"freq_per_mm": [float(f) for f in NPS_FREQ],
                                          "nps_hu2_mm2": [None if not np.isfinite(v) else round(float(v), 3)
                                                          for v in self.nps["on_grid"]]}}


def _native_labels(ct: Volume, anatomy) -> tuple[np.ndarray, dict[str, int]]:
    """The anatomy's coarse labels (per tissue region, eroded) on the CT's own grid."""
    from ..anatomy import chest as C
    from ..segmentation.plan import resample

    lab = anatomy.labels.array
    thor = anatomy.thoracic_slices
    if thor is None:
        thor = np.ones(lab.shape[0], bool)
    codes = {"outside": C.OUTSIDE, "body": C.BODY, "lung": C.LUNG, "airway": C.AIRWAY, "bone": C.BONE,
             "anterior": C.ANTERIOR, "middle": C.MIDDLE, "posterior": C.POSTERIOR}
    bits = np.zeros(lab.shape, np.uint8)
    names = {}
    for i, (t, (regs, _, erode)) in enumerate(TISSUE_DEFS.items()):
        m = np.isin(lab, [codes[r] for r in regs]) & thor[:, None, None]
        if erode:
            m = ndimage.binary_erosion(m, structure=C._INPLANE)
        bits[m] |= np.uint8(1 << i)
        names[t] = 1 << i
    # flat-tissue region for the NPS: body or mediastinum, not lung/bone/airway, eroded twice
    flat = np.isin(lab, [C.BODY, C.ANTERIOR, C.MIDDLE, C.POSTERIOR]) & thor[:, None, None]
    flat = ndimage.binary_erosion(flat, structure=C._INPLANE, iterations=2)
    bits[flat] |= np.uint8(FLAT_BIT)
    native = resample(anatomy.labels.with_array(bits), (1.0, 1.0, 1.0), label=True, reference=ct).array
    return native, names


def _radial_nps(rois: np.ndarray, px: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Radially averaged NPS (HU² mm²) of detrended ROIs (n, N, N) with pixel ``px`` mm."""
    n = rois.shape[-1]
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    yy, xx = (yy - n / 2) / n, (xx - n / 2) / n
    A = np.stack([np.ones_like(xx), xx, yy, xx * xx, yy * yy, xx * yy], -1).reshape(-1, 6)
    flat = rois.reshape(len(rois), -1).T.astype(np.float64)
    coef, *_ = np.linalg.lstsq(A, flat, rcond=None)
    resid = (flat - A @ coef).T.reshape(rois.shape)
    F = np.fft.fftshift(np.fft.fft2(resid), axes=(-2, -1))
    nps2d = (np.abs(F) ** 2).mean(0) * px * px / (n * n)
    f = np.fft.fftshift(np.fft.fftfreq(n, d=px))
    fr = np.hypot(*np.meshgrid(f, f, indexing="ij"))
    df = 1.0 / (n * px)
    k = np.rint(fr / df).astype(int)
    kmax = n // 2
    sums = np.bincount(k.ravel(), weights=nps2d.ravel(), minlength=kmax + 1)[:kmax + 1]
    cnt = np.bincount(k.ravel(), minlength=kmax + 1)[:kmax + 1]
    radial = sums / np.maximum(cnt, 1)
    var = float(nps2d.sum() * df * df)  # = mean residual variance (Parseval)
    return np.arange(kmax + 1) * df, radial, var


def noise_power_spectrum(ct: Volume, flat_region: np.ndarray, roi_mm: float = NPS_ROI_MM,
                         max_rois: int = NPS_MAX_ROIS, seed: int = 0) -> dict[str, Any]:
    """In-plane NPS in flat ROIs fully inside ``flat_region`` (bool, the CT's grid)."""
    a = ct.array.astype(np.float32)
    px = float(np.mean(ct.spacing_xyz[:2]))
    n = max(16, int(round(roi_mm / px)) // 2 * 2)  # at least 16 pixels (coarse grids: larger ROIs)
    step = n // 2
    # soft tissue / fat only (no contrast-filled vessels, no air pockets) after a small median
    sm = ndimage.median_filter(a, size=(1, 3, 3))
    ok = flat_region & (sm > -200) & (sm < 150)
    # ROIs whose every voxel is ok: an integral image per slice
    cands = []
    for z in range(a.shape[0]):
        if not ok[z].any():
            continue
        ii = np.pad(ok[z].astype(np.int32).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        for y in range(0, a.shape[1] - n + 1, step):
            s = ii[y + n, n:] - ii[y, n:] - ii[y + n, :-n] + ii[y, :-n]
            xs = np.arange(0, a.shape[2] - n + 1, step)
            cands.extend((z, y, int(x)) for x in xs[s[xs] == n * n])
    sig = max(1.0, 2.0 / px)
    rois = [a[z, y:y + n, x:x + n] for z, y, x in cands]
    out: dict[str, Any] = {"pixel_mm": round(px, 3), "roi_px": n, "n_candidates": len(cands)}
    if not rois:
        out.update(n_rois=0, sd_hu=float("nan"), f_peak=float("nan"), f_mean=float("nan"),
                   freq=np.zeros(0), nps=np.zeros(0), on_grid=np.full(len(NPS_FREQ), np.nan))
        return out
    R = np.stack(rois)
    # flatness: smoothed detrended residual SD (structure survives smoothing, noise mostly does not)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float64)
    yy, xx = (yy - n / 2) / n, (xx - n / 2) / n
    A = np.stack([np.ones_like(xx), xx, yy, xx * xx, yy * yy, xx * yy], -1).reshape(-1, 6)
    coef, *_ = np.linalg.lstsq(A, R.reshape(len(R), -1).T.astype(np.float64), rcond=None)
    resid = (R.reshape(len(R), -1).T - A @ coef).T.reshape(R.shape)
    smooth = ndimage.gaussian_filter(resid, sigma=(0, sig, sig))
    flat_sd = smooth.reshape(len(R), -1).std(1)
    fine_sd = (resid - smooth).reshape(len(R), -1).std(1)  # what smoothing removed: mostly noise
    keep = np.nonzero(flat_sd < NPS_FLAT_SD_HU + NPS_FLAT_NOISE_SHARE * fine_sd)[0]
    if len(keep) > max_rois:
        keep = np.sort(np.random.default_rng(seed).choice(keep, max_rois, replace=False))
    out["n_rois"] = int(len(keep))
    if not len(keep):
        out.update(sd_hu=float("nan"), f_peak=float("nan"), f_mean=float("nan"), freq=np.zeros(0),
                   nps=np.zeros(0), on_grid=np.full(len(NPS_FREQ), np.nan))
        return out
    f, radial, var = _radial_nps(R[keep], px)
    w = radial * f  # 2D weighting (ring area ∝ f)
    out.update(sd_hu=round(float(np.sqrt(var)), 2), f_peak=round(float(f[np.argmax(radial)]), 3),
               f_mean=round(float((w * f).sum() / max(w.sum(), 1e-12)), 3), freq=f, nps=radial,
               on_grid=np.where(NPS_FREQ <= f[-1] + 1e-9, np.interp(NPS_FREQ, f, radial), np.nan))
    return out


def measure(ct: Volume, name: str = "", anatomy=None, nps_seed: int = 0) -> RealismFigures:
    """Per-tissue HU distributions, anatomy shares and NPS of ``ct`` (any voxel order)."""
    from ..anatomy import analyse_chest
    from ..anatomy import chest as C
    from ..orientation import canonical

    c, _ = canonical(ct)
    if anatomy is None:
        anatomy = analyse_chest(c)
    native, codes = _native_labels(c, anatomy)
    a = c.array
    if a.min() < -1024:  # padding outside the scan circle is not HU
        a = np.maximum(a, np.asarray(-1024, a.dtype))
    tissues: dict[str, dict[str, float]] = {}
    samples: dict[str, np.ndarray] = {}
    rng = np.random.default_rng(0)
    for t, (_, (lo, hi), _) in TISSUE_DEFS.items():
        vals = a[(native & codes[t]) > 0].astype(np.float32)
        inwin = vals[(vals >= lo) & (vals <= hi)]
        row = {"n": int(inwin.size), "share": round(float(inwin.size / max(vals.size, 1)), 3)}
        if inwin.size:
            q = np.percentile(inwin, [5, 25, 50, 75, 95])
            row.update(p05=round(float(q[0]), 1), p25=round(float(q[1]), 1), median=round(float(q[2]), 1),
                       p75=round(float(q[3]), 1), p95=round(float(q[4]), 1), mean=round(float(inwin.mean()), 1),
                       sd=round(float(inwin.std()), 1))
            if inwin.size > HIST_SAMPLES:
                inwin = rng.choice(inwin, HIST_SAMPLES, replace=False)
        tissues[t] = row
        samples[t] = np.sort(inwin)
    nps = noise_power_spectrum(c.with_array(a), (native & FLAT_BIT) > 0, seed=nps_seed)
    lab = anatomy.labels.array
    thor = anatomy.thoracic_slices if anatomy.thoracic_slices is not None else np.ones(lab.shape[0], bool)
    lt = lab[thor]
    body = max(int((lt != C.OUTSIDE).sum()), 1)
    shares = {"lung": float((lt == C.LUNG).sum() / body), "bone": float((lt == C.BONE).sum() / body),
              "mediastinum": float(np.isin(lt, [C.ANTERIOR, C.MIDDLE, C.POSTERIOR]).sum() / body),
              "anterior_mediastinum": float((lt == C.ANTERIOR).sum() / body)}
    geometry = {"shape_zyx": list(c.shape), "spacing_xyz": [round(s, 3) for s in c.spacing_xyz],
                "thoracic_extent_mm": round(float(anatomy.chest_extent_mm), 1),
                "contrast_detected": bool(anatomy.stats.get("contrast", False))}
    return RealismFigures(name=name, tissues=tissues, samples=samples, nps=nps,
                          anatomy={k: round(v, 4) for k, v in shares.items()}, geometry=geometry)


def wasserstein(a: np.ndarray, b: np.ndarray) -> float:
    """1-Wasserstein distance (HU) between two samples (the mean absolute difference of quantiles)."""
    if not len(a) or not len(b):
        return float("nan")
    q = np.linspace(0.0005, 0.9995, 1000)
    return float(np.mean(np.abs(np.quantile(a, q) - np.quantile(b, q))))


def compare(real: RealismFigures, syn: RealismFigures) -> dict[str, Any]:
    """Distances between a synthetic CT's figures and a real CT's."""
    out: dict[str, Any] = {"real": real.name, "synthetic": syn.name, "tissues": {}}
    for t in TISSUE_DEFS:
        r, s = real.tissues[t], syn.tissues[t]
        out["tissues"][t] = {
            "wasserstein_hu": round(wasserstein(real.samples[t], syn.samples[t]), 1),
            "median_diff_hu": round(s.get("median", np.nan) - r.get("median", np.nan), 1),
            "iqr_ratio": round((s.get("p75", np.nan) - s.get("p25", np.nan))
                               / max(r.get("p75", np.nan) - r.get("p25", np.nan), 1e-6), 2),
            "share_diff": round(s["share"] - r["share"], 3),
        }
    rn, sn = real.nps, syn.nps
    both = np.isfinite(rn["on_grid"]) & np.isfinite(sn["on_grid"])
    if both.sum() >= 3 and rn["n_rois"] and sn["n_rois"]:
        w = NPS_FREQ[both]
        pr, ps = rn["on_grid"][both] * w, sn["on_grid"][both] * w
        shape = float(np.abs(pr / pr.sum() - ps / ps.sum()).sum())
    else:
        shape = float("nan")
    out["nps"] = {"sd_ratio": round(sn["sd_hu"] / rn["sd_hu"], 2) if rn["n_rois"] and sn["n_rois"] else float("nan"),
                  "integral_ratio": round((sn["sd_hu"] / rn["sd_hu"]) ** 2, 2) if rn["n_rois"] and sn["n_rois"]
                  else float("nan"),
                  "f_peak_diff": round(sn["f_peak"] - rn["f_peak"], 3), "f_mean_diff": round(sn["f_mean"] - rn["f_mean"], 3),
                  "shape_l1": round(shape, 3)}
    out["anatomy"] = {k: round(syn.anatomy[k] - real.anatomy[k], 4) for k in real.anatomy}
    return out


def resampled(ct: Volume, inplane_mm: float, thickness_mm: float | None = None) -> Volume:
    """``ct`` in canonical order, padding clamped to −1024, resampled (linear, as the segmentation
    resamples a CT) to ``inplane_mm`` pixels and ``thickness_mm`` slices (default: its own)."""
    from ..orientation import canonical
    from ..segmentation.plan import resample

    c, _ = canonical(ct)
    if c.array.min() < -1024:
        c = c.with_array(np.maximum(c.array, np.asarray(-1024, c.array.dtype)))
    return resample(c, (inplane_mm, inplane_mm, thickness_mm or c.spacing_xyz[2]))


def matched_synthetic(real: Volume, seed: int, contrast_phase: str, **kw) -> Volume:
    """A synthetic case with the real CT's in-plane pixel size and slice thickness (so noise and
    partial volume are compared at the same sampling)."""
    from .generator import FOV_MM, generate_case

    px = float(np.mean(real.spacing_xyz[:2]))
    n = int(np.clip(round(FOV_MM / px), 32, 1024))
    t = float(np.clip(real.spacing_xyz[2], 0.5, 10.0))
    return generate_case(seed, inplane_size=n, slice_thickness_mm=t, contrast_phase=contrast_phase, **kw).ct


# The generator's parameters before issue 12 (generator v2), for before/after figures: what
# lesion_appearance.yaml changed. The non-contrast phase did not exist in v2; with these
# parameters it still gets the v3 phase colours (otherwise there is nothing to compare).
V2_PARAMETERS: dict[str, Any] = {
    "noise": {"correlation_mm": 0.6, "full_min_correlation_pixel_mm": None},
    "tissue_hu": {"muscle": 50, "lung": -815, "bone_cortical": 900},
    "tissue_texture_sd": {"fat": 8, "mediastinal_fat": 8, "muscle": 8, "lung": 0},
    "lung_gradient_hu": 0,
    "lesion_hu_shift": {},
    "anatomy": {},
}


@contextmanager
def generator_parameters(overrides: dict[str, Any]):
    """Temporarily override entries of the generator's parameters (``lesion_appearance.yaml``):
    a section given as a dict is merged into the YAML's, anything else replaces it."""
    from .generator import appearance_params

    P = appearance_params()
    saved = copy.deepcopy(P)
    try:
        for k, v in overrides.items():
            if isinstance(v, dict) and isinstance(P.get(k), dict) and v:
                P[k].update(copy.deepcopy(v))
            else:
                P[k] = copy.deepcopy(v)
        yield P
    finally:
        P.clear()
        P.update(saved)
