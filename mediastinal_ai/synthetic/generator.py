"""Synthetic contrast-enhanced (venous phase) chest CT with a mediastinal lesion.

Why a phantom: no patient data can ship with the project, yet training, tests and the demo
need CTs whose ground truth is known. The phantom is anatomical enough for the tasks
(a prevascular lesion among enhanced vessels, heart, lungs, bone and fat, with correlated
noise and partial-volume edges) and every output says it is SYNTHETIC.

Frame: LPS, direction identity (+x index → patient left, +y → posterior, +z → superior), the
standard axial DICOM orientation: the sternum is at low y index, the spine at high y index.
Field of view 350 mm in-plane, 200 mm along z, centred on (0, 0, 0) mm. The anatomy is drawn
on a thin-slice grid (≤1.25 mm) and averaged into the requested slice thickness, which gives
real partial-volume effects along z; an in-plane point-spread function blurs edges before
rounding to int16.

All appearance numbers (tissue HU, per-class lesion appearance, CTC levels, hard-case rates,
noise) live in ``lesion_appearance.yaml`` beside this file, which users can read and edit.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import ndimage

from .. import SYNTHETIC_LABEL
from ..errors import InputError
from ..taxonomy import LESION_CLASSES, LESION_SITES
from ..taxonomy import lesion_class as class_info
from ..volume import Volume

FOV_MM = 350.0
Z_EXTENT_MM = 200.0
FINE_DZ_MM = 1.25  # the anatomy is drawn on slices at most this thick
GENERATOR_VERSION = "mediastinal_ai.synthetic v3"
PARAMS_FILE = Path(__file__).with_name("lesion_appearance.yaml")
CONTRAST_PHASES = ("venous", "arterial", "non_contrast")

# Tissue labels of the label map (SyntheticCase.tissues), for tests and for HU statistics.
TISSUES = {"air": 0, "fat": 1, "muscle": 2, "lung": 3, "bone_cortical": 4, "bone_cancellous": 5,
           "heart_muscle": 6, "blood": 7, "aorta": 8, "vessel": 9, "mediastinal_fat": 10,
           "pericardium": 11, "effusion": 12, "lesion": 13, "cord": 14, "skin": 15, "disc": 16,
           "airway": 17, "esophagus": 18, "liver": 19}


LESION_KINDS = ("solid", "cyst", "fat", "teratoma")


@functools.lru_cache(maxsize=1)
def appearance_params() -> dict[str, Any]:
    """The parameters in ``lesion_appearance.yaml`` (read once, checked so that an edit that breaks
    it fails with a message naming the file and the entry)."""
    try:
        P = yaml.safe_load(PARAMS_FILE.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise InputError(f"not valid YAML ({e})", PARAMS_FILE) from e
    _check_params(P)
    return P


def _check_params(P: Any) -> None:
    def bad(msg: str) -> InputError:
        return InputError(msg, PARAMS_FILE)

    if not isinstance(P, dict):
        raise bad("expected a mapping at the top level")
    for sect in ("risk_groups", "classes", "hard_cases", "noise", "tissue_hu", "contrast_phases"):
        if not isinstance(P.get(sect), dict):
            raise bad(f"missing section {sect!r}")
    for g in ("low", "high"):
        for k in ("p_unclear", "p_calcification", "p_heterogeneous"):
            v = P["risk_groups"].get(g, {}).get(k)
            if not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise bad(f"risk_groups.{g}.{k} must be a probability, got {v!r}")
    for c in LESION_CLASSES:
        cp = P["classes"].get(c.name)
        if not isinstance(cp, dict):
            raise bad(f"classes: no entry for lesion class {c.name!r}")
        for k in ("hu", "diameter_mm", "ctc"):
            v = cp.get(k)
            if not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v) and v[1] >= 0):
                raise bad(f"classes.{c.name}.{k} must be [mean, sd] with sd ≥ 0, got {v!r}")
        t2 = cp.get("table2")
        if t2 is not None and not (isinstance(t2, list) and len(t2) == 3 and all(isinstance(x, int) and x >= 0 for x in t2)):
            raise bad(f"classes.{c.name}.table2 must be [train, val, test] counts ≥ 0, got {t2!r}")
        if not isinstance(cp.get("weight"), (int, float)) or cp["weight"] < 0:
            raise bad(f"classes.{c.name}.weight must be a number ≥ 0, got {cp.get('weight')!r}")
        if cp.get("site", "anterior") not in LESION_SITES:
            raise bad(f"classes.{c.name}.site must be one of {', '.join(LESION_SITES)}, got {cp.get('site')!r}")
        if cp.get("kind", "solid") not in LESION_KINDS:
            raise bad(f"classes.{c.name}.kind must be one of {', '.join(LESION_KINDS)}, got {cp.get('kind')!r}")
        for k in ("p_unclear", "p_calcification", "p_heterogeneous"):
            if k in cp and not (isinstance(cp[k], (int, float)) and 0 <= cp[k] <= 1):
                raise bad(f"classes.{c.name}.{k} must be a probability, got {cp[k]!r}")
    cm = P["noise"].get("correlation_mm")
    if not ((isinstance(cm, (int, float)) and cm > 0) or (isinstance(cm, list) and len(cm) == 2 and all(
            isinstance(x, (int, float)) and x > 0 for x in cm) and cm[0] <= cm[1])):
        raise bad(f"noise.correlation_mm must be a number > 0 or [low, high], got {cm!r}")
    sk = P["noise"].get("sharp_kernel")
    if sk is not None and not (isinstance(sk, dict) and isinstance(sk.get("p", 0), (int, float)) and 0 <= sk.get("p", 0) <= 1
                               and all(isinstance(sk.get(k), list) and len(sk[k]) == 2 for k in ("sd_hu", "peak_per_mm"))):
        raise bad(f"noise.sharp_kernel needs p (0..1), sd_hu [low, high] and peak_per_mm [low, high], got {sk!r}")
    missing = [t for t in TISSUES if t != "lesion" and t not in P["tissue_hu"]]
    if missing:
        raise bad(f"tissue_hu: missing {', '.join(missing)}")


def tissue_hu(contrast_phase: str = "venous") -> dict[str, float]:
    """Mean HU of each normal tissue in the given contrast phase (lesion HU is drawn per case)."""
    if contrast_phase not in CONTRAST_PHASES:
        raise ValueError(f"contrast_phase must be one of {', '.join(CONTRAST_PHASES)}, got {contrast_phase!r}")
    P = appearance_params()
    return {**P["tissue_hu"], **(P["contrast_phases"].get(contrast_phase) or {})}


TISSUE_HU = tissue_hu("venous")


@dataclass
class SyntheticCase:
    case_id: str
    ct: Volume
    mask: Volume
    mask_reader2: Volume
    lesion_class: str
    malignant: int
    who_risk: str | None
    ctc: float
    age: float
    sex: str
    lesion_site: str
    metadata: dict[str, Any] = field(default_factory=dict)
    tissues: Volume | None = None  # label map (TISSUES), only when asked for (return_tissues=True)


def _span(coords: np.ndarray, lo: float, hi: float) -> slice:
    """Indices of the (sorted) voxel centres within [lo, hi] mm."""
    return slice(int(np.searchsorted(coords, lo, "left")), int(np.searchsorted(coords, hi, "right")))


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma) -> np.ndarray:
    """Unit-SD Gaussian random field (smooth blobs of ~sigma voxels)."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return f / (f.std() + 1e-6)


def _coarse_field(rng: np.random.Generator, shape: tuple[int, int, int], factor: int = 4) -> np.ndarray:
    """Low-frequency unit-SD field (tissue texture, contrast mixing), cheap: drawn coarse, zoomed."""
    cs = tuple(max(2, -(-s // factor)) for s in shape)
    f = _smooth_field(rng, cs, 1.0)
    for ax, n in enumerate(shape):  # separable linear upsampling (much cheaper than ndimage.zoom)
        pos = np.linspace(0, cs[ax] - 1, n, dtype=np.float32)
        i0 = np.minimum(pos.astype(np.int64), cs[ax] - 2)
        w = (pos - i0).astype(np.float32).reshape([-1 if a == ax else 1 for a in range(3)])
        f = np.take(f, i0, axis=ax) * (1 - w) + np.take(f, i0 + 1, axis=ax) * w
    return f


def _sharp_noise(rng: np.random.Generator, shape: tuple[int, int, int], px: float, peak: float,
                 recon_px: float) -> np.ndarray:
    """Unit-SD noise of a sharp (edge-enhancing) reconstruction kernel, NPS ∝ (f/peak)² exp(1 − (f/peak)²),
    made on a reconstruction grid of at most ``recon_px`` mm and, for a coarser output pixel ``px``,
    resampled linearly onto it as the segmentation resamples a real CT (which lowers the SD, as there).
    """
    nz, ny, nx = shape
    k = max(1.0, px / recon_px)
    fy_n, fx_n = (ny, nx) if k == 1.0 else (int(np.ceil(ny * k)), int(np.ceil(nx * k)))
    rpx = px * ny / fy_n
    fy = np.fft.fftfreq(fy_n, d=rpx)[:, None]
    fx = np.fft.rfftfreq(fx_n, d=rpx)[None, :]
    S = np.zeros((fy_n, fx.shape[1]))
    for a in (-1, 0, 1):  # the spectrum's tail beyond the grid's Nyquist frequency folds back
        for b in (-1, 0, 1):
            q = np.hypot(fy + a / rpx, fx + b / rpx) / peak
            S += q ** 2 * np.exp(1.0 - q ** 2)
    F = np.fft.rfft2(rng.standard_normal((nz, fy_n, fx_n)).astype(np.float32), axes=(1, 2))
    noise = np.fft.irfft2(F * np.sqrt(S).astype(np.float32)[None], s=(fy_n, fx_n), axes=(1, 2)).astype(np.float32)
    noise /= noise.std() + 1e-6
    if k > 1.0:  # output voxel centres on the reconstruction grid, bilinear
        out = np.empty(shape, np.float32)
        gy = ((np.arange(ny) + 0.5) * fy_n / ny - 0.5)[:, None] * np.ones((1, nx))
        gx = np.ones((ny, 1)) * ((np.arange(nx) + 0.5) * fx_n / nx - 0.5)[None, :]
        for z in range(nz):
            out[z] = ndimage.map_coordinates(noise[z], [gy, gx], order=1, mode="nearest")
        noise = out
    return noise


def _paint(lab: np.ndarray, zsel: np.ndarray, mask2d: np.ndarray, value: int) -> None:
    """Set ``value`` where the slice is selected (1D bool over z) and the in-plane mask is set."""
    zi = np.flatnonzero(zsel)
    yy, xx = np.nonzero(mask2d)
    lab[zi[:, None], yy[None], xx[None]] = value


CLASS_FREQUENCIES = ("appearance", "table2")


def class_weights(names: list[str], class_frequencies: str = "appearance") -> np.ndarray:
    """Relative frequency of each class: the YAML ``weight`` ("appearance", the default of every
    cohort made before issue 14, kept so that those cohorts stay reproducible) or the fusion
    study's Table 2 case counts summed over train/validation/test ("table2")."""
    if class_frequencies not in CLASS_FREQUENCIES:
        raise ValueError(f"class_frequencies must be one of {CLASS_FREQUENCIES}, got {class_frequencies!r}")
    p = appearance_params()["classes"]
    if class_frequencies == "table2":
        return np.array([float(sum(p[n].get("table2") or [0, 0, 0])) for n in names])
    return np.array([p[n]["weight"] for n in names], float)


def _draw_class(rng: np.random.Generator, classes: list[str] | None, class_frequencies: str = "appearance") -> str:
    names = list(classes) if classes else [c.name for c in LESION_CLASSES]
    for n in names:
        class_info(n)  # validates the name
    w = class_weights(names, class_frequencies)
    if w.sum() <= 0:
        raise ValueError(f"the classes {names} all have frequency 0 under {class_frequencies!r}")
    return str(rng.choice(names, p=w / w.sum()))


def generate_case(seed: int, lesion_class: str | None = None, *, inplane_size: int = 128,
                  slice_thickness_mm: float = 5.0, classes: list[str] | None = None,
                  contrast_phase: str = "venous", return_tissues: bool = False,
                  case_id: str | None = None, class_frequencies: str = "appearance") -> SyntheticCase:
    """One synthetic case, fully determined by ``seed`` and the size options (byte-identical).

    ``lesion_class`` forces the class; otherwise it is drawn (weights in the YAML) from
    ``classes`` or from all classes of :mod:`mediastinal_ai.taxonomy`; ``class_frequencies="table2"``
    draws with the fusion study's Table 2 class frequencies instead. The CTC level is drawn from
    the class's Table 2 mean ± SD. ``return_tissues`` adds the
    tissue label map (:data:`TISSUES`) on the output grid, for checking HU statistics.
    """
    if not 32 <= inplane_size <= 1024:
        raise ValueError(f"inplane_size must be between 32 and 1024, got {inplane_size}")
    if not 0.5 <= slice_thickness_mm <= 10:
        raise ValueError(f"slice_thickness_mm must be between 0.5 and 10, got {slice_thickness_mm}")
    nz = int(round(Z_EXTENT_MM / slice_thickness_mm))  # z extent ≈ 200 mm (exact when t divides it)
    hu_of = tissue_hu(contrast_phase)
    rng = np.random.default_rng(seed)
    P = appearance_params()
    cls = lesion_class or _draw_class(rng, classes, class_frequencies)
    info = class_info(cls)
    cp = P["classes"][cls]
    risk_key = cp.get("risk") or info.who_risk
    rates = dict(P["risk_groups"][risk_key]) if risk_key in ("low", "high") else {}
    for k in ("p_unclear", "p_calcification", "p_heterogeneous"):
        if k in cp:
            rates[k] = cp[k]
    rates = {k: rates.get(k, 0.2) for k in ("p_unclear", "p_calcification", "p_heterogeneous")}

    sub = max(1, int(np.ceil(slice_thickness_mm / FINE_DZ_MM - 1e-9)))
    dz = slice_thickness_mm / sub
    px = FOV_MM / inplane_size
    c = ((np.arange(inplane_size) + 0.5) * px - FOV_MM / 2).astype(np.float32)  # in-plane centres, mm
    zc = ((np.arange(nz * sub) + 0.5) * dz).astype(np.float32)  # fine-slice centres, mm from the bottom
    Y, X = np.meshgrid(c, c, indexing="ij")  # 2D [y, x] in mm
    shape = (nz * sub, inplane_size, inplane_size)
    T = TISSUES

    # ----------------------------------------------------------------- anatomy (label map)
    lab = np.empty(shape, np.uint8)
    body_a, body_b = rng.uniform(140, 160), rng.uniform(100, 118)
    e = (X / body_a) ** 2 + ((Y - 5) / body_b) ** 2
    sl2d = np.where(e <= 1, T["fat"], T["air"]).astype(np.uint8)
    sl2d[(e <= 1) & ((X / (body_a - 2)) ** 2 + ((Y - 5) / (body_b - 2)) ** 2 > 1)] = T["skin"]
    A = P.get("anatomy") or {}
    sub_fat = float(A.get("subcutaneous_fat_mm", 14.0))  # skin to muscle, laterally (10/12 of it in front/behind)
    wall = (X / (body_a - sub_fat)) ** 2 + ((Y - 5) / (body_b - sub_fat * 12 / 14)) ** 2
    sl2d[wall <= 1] = T["muscle"]
    rib_outer = (X / (body_a - 14)) ** 2 + ((Y - 5) / (body_b - 12)) ** 2
    cavity = (X / (body_a - 26)) ** 2 + ((Y - 5) / (body_b - 22)) ** 2 <= 1
    ps = A.get("paraspinal_muscle_mm")  # erector spinae: [half width, half depth] behind the spine
    if ps:
        para = ((X / ps[0]) ** 2 + ((Y - (body_b - 14)) / ps[1]) ** 2 <= 1) & (e <= 1) & (sl2d != T["skin"])
        sl2d[para & ((X / (body_a - 4)) ** 2 + ((Y - 5) / (body_b - 6)) ** 2 <= 1)] = T["muscle"]
    sl2d[cavity] = T["mediastinal_fat"]
    lab[:] = sl2d[None]
    # lungs: two ellipsoids, narrowing toward the apex (top of the stack)
    zfrac = (zc / Z_EXTENT_MM)[:, None, None]
    for side in (-1, 1):
        cx = side * rng.uniform(68, 78)
        lung = ((X - cx) / (52 - 12 * zfrac)) ** 2 + ((Y - 12) / (78 - 10 * zfrac)) ** 2 <= 1
        lab[lung & cavity[None]] = T["lung"]
    # ribs: oblique arcs of the chest wall (descending anteriorly), costal cartilage left anteriorly
    ring = (rib_outer <= 1) & ((X / (body_a - 22)) ** 2 + ((Y - 5) / (body_b - 18)) ** 2 > 1) & (np.abs(X) > 28)
    u = np.arctan2(np.abs(X), Y - 5) / np.pi  # 0 posterior … 1 anterior
    pitch, phase = 26.0, rng.uniform(0, 26)
    rib_z = np.mod(zc[:, None, None] + 45.0 * u[None] + phase, pitch)
    rib = ring[None] & (rib_z < 9.0)
    lab[rib] = T["bone_cortical"]
    if A.get("rib_marrow", False):  # a rib is marrow in a thin cortical shell (~2 mm), not solid cortex
        core = ((X / (body_a - 16)) ** 2 + ((Y - 5) / (body_b - 14)) ** 2 <= 1) & \
            ((X / (body_a - 20)) ** 2 + ((Y - 5) / (body_b - 16)) ** 2 > 1) & (np.abs(X) > 30)
        lab[core[None] & (rib_z > 2.0) & (rib_z < 7.0)] = T["bone_cancellous"]
    # spine: vertebral bodies (cancellous, cortical rim) with discs, canal with cord, spinous process
    sy = body_b - 35
    r = np.hypot(X, Y - sy)
    disc_z = np.mod(zc + rng.uniform(0, 28), 28.0) < 5.0
    lab[:, r <= 19] = T["bone_cortical"]
    lab[:, r <= 16] = T["bone_cancellous"]
    _paint(lab, disc_z, r <= 19, T["disc"])
    rc = np.hypot(X, Y - (sy + 26))
    lab[:, (rc <= 11) & (rc > 8)] = T["bone_cortical"]
    lab[:, rc <= 8] = T["cord"]
    lab[:, (np.abs(X) < 4) & (Y > sy + 36) & (Y < sy + 56)] = T["bone_cortical"]
    # sternum (anterior, upper two thirds): cancellous with a cortical shell
    st_y = -(body_b - 30)
    st_d = (X / 16) ** 2 + ((Y - st_y) / 6) ** 2
    zst = zc > 0.3 * Z_EXTENT_MM
    _paint(lab, zst, st_d <= 1, T["bone_cortical"])
    _paint(lab, zst, st_d <= 0.55, T["bone_cancellous"])
    sternum_back_y = st_y + 6

    # heart: ellipsoid in the lower part, myocardium shell, blood pool, pericardium (+ effusion)
    hc = np.array([rng.uniform(8, 20), rng.uniform(-25, -10), rng.uniform(35, 55)])
    hr = np.array([rng.uniform(55, 65), rng.uniform(45, 52), rng.uniform(50, 58)])
    effusion = rng.random() < P["hard_cases"]["p_pericardial_effusion"]
    eff_mm = rng.uniform(6, 14) if effusion else 0.0
    grow = (3 + eff_mm) / hr.mean()
    reach = hr * (1 + grow) + 2
    hs = (_span(zc, hc[2] - reach[2], hc[2] + reach[2]), _span(c, hc[1] - reach[1], hc[1] + reach[1]),
          _span(c, hc[0] - reach[0], hc[0] + reach[0]))
    hd = np.sqrt(((c[hs[2]][None, None] - hc[0]) / hr[0]) ** 2 + ((c[hs[1]][None, :, None] - hc[1]) / hr[1]) ** 2
                 + ((zc[hs[0]][:, None, None] - hc[2]) / hr[2]) ** 2)
    hb = lab[hs]  # view
    hb[hd <= 1 + grow] = T["pericardium"]
    if effusion:
        hb[hd <= 1 + eff_mm / hr.mean()] = T["effusion"]
    hb[hd <= 1] = T["heart_muscle"]
    hb[hd <= 1 - 10 / hr.mean()] = T["blood"]
    # interventricular septum: an oblique wall of myocardium through the blood pool
    sep = np.abs((c[hs[2]][None, None] - hc[0]) * 0.75 - (c[hs[1]][None, :, None] - hc[1]) * 0.66) < 4.5
    hb[sep & (hb == T["blood"])] = T["heart_muscle"]
    heart_top = hc[2] + hr[2] * 0.8

    # great vessels: ascending aorta, arch, descending aorta, pulmonary trunk, SVC, arch branches
    arch_z = rng.uniform(150, 170)
    asc = np.array([-18.0, hc[1] - 8.0])
    desc = np.array([22.0, sy - 28])
    r_ao = rng.uniform(13, 16)
    zz = zc

    def tube(cx: float, cy: float, rr: float) -> np.ndarray:
        return (X - cx) ** 2 + (Y - cy) ** 2 <= rr ** 2

    a_mask = np.zeros(shape, bool)
    a_mask[(zz > hc[2]) & (zz < arch_z)] = tube(asc[0], asc[1], r_ao)
    a_mask[zz < arch_z] |= tube(desc[0], desc[1], r_ao - 2)
    for ti in np.linspace(0, 1, 40):  # the arch: balls along a half-loop joining both
        bx, by = asc + (desc - asc) * ti
        bz = arch_z + 18 * np.sin(np.pi * ti)
        bs = (_span(zc, bz - r_ao, bz + r_ao), _span(c, by - r_ao, by + r_ao), _span(c, bx - r_ao, bx + r_ao))
        a_mask[bs] |= ((c[bs[2]][None, None] - bx) ** 2 + (c[bs[1]][None, :, None] - by) ** 2
                       + (zc[bs[0]][:, None, None] - bz) ** 2) <= r_ao ** 2
    lab[a_mask & (lab != T["bone_cortical"])] = T["aorta"]
    v_mask = np.zeros(shape, bool)
    v_mask[(zz > heart_top - 25) & (zz < heart_top + 20)] = tube(18, hc[1] - 12, 13)  # pulmonary trunk
    v_mask[(zz > hc[2]) & (zz < arch_z + 20)] |= tube(-42, hc[1] + 5, 10)  # SVC
    v_mask[zz > arch_z] |= tube(-8, hc[1] - 20, 7) | tube(12, hc[1] - 14, 6) | tube(26, hc[1] - 5, 6)
    lab[v_mask & (lab != T["aorta"])] = T["vessel"]

    # trachea (splitting at the carina into the main bronchi) and oesophagus in front of the spine
    carina_z = arch_z - rng.uniform(15, 30)
    air_way = np.zeros(shape, bool)
    wall_way = np.zeros(shape, bool)
    tr = np.array([-2.0, sy - 44.0])
    air_way[zz > carina_z] = tube(tr[0], tr[1], 8)
    wall_way[zz > carina_z] = tube(tr[0], tr[1], 10)
    for side in (-1, 1):  # right (−x) and left (+x) main bronchus, running down and out to the hilum
        end = np.array([side * 38.0, tr[1] + 4, carina_z - 28])
        for ti in np.linspace(0, 1, 16):
            bx, by, bz = np.array([tr[0], tr[1], carina_z]) + (end - [tr[0], tr[1], carina_z]) * ti
            bs = (_span(zc, bz - 8, bz + 8), _span(c, by - 8, by + 8), _span(c, bx - 8, bx + 8))
            d2 = ((c[bs[2]][None, None] - bx) ** 2 + (c[bs[1]][None, :, None] - by) ** 2
                  + (zc[bs[0]][:, None, None] - bz) ** 2)
            air_way[bs] |= d2 <= 5.5 ** 2
            wall_way[bs] |= d2 <= 7.5 ** 2
    keep = ~np.isin(lab, [T["aorta"], T["vessel"], T["bone_cortical"], T["bone_cancellous"], T["disc"]])
    lab[wall_way & ~air_way & keep & (lab != T["lung"])] = T["muscle"]
    lab[air_way & keep] = T["airway"]
    lab[tube(0, sy - 27, 6)[None] & keep & (lab != T["airway"])] = T["esophagus"]
    # liver dome under the right hemidiaphragm (−x is the patient's right) at the bottom of the stack
    dome = (45 - 30 * ((X + 60) / 80) ** 2 - 20 * ((Y - 10) / 90) ** 2)[None] - zc[:, None, None]
    lab[(dome > 0) & cavity[None] & (X < 15)[None] & np.isin(lab, [T["lung"], T["mediastinal_fat"]])] = T["liver"]

    # ----------------------------------------------------------------- lesion
    site = cp.get("site", "anterior")
    if site not in LESION_SITES:
        raise ValueError(f"lesion_appearance.yaml: class {cls!r} has unknown site {site!r}")
    hard = P["hard_cases"]
    small = rng.random() < hard["p_small"]
    low_contrast = cp.get("kind") == "solid" and rng.random() < hard["p_low_contrast"]
    abut = site == "anterior" and rng.random() < hard["p_abutting_aorta"]
    dmean, dsd = cp["diameter_mm"]
    diam = float(np.clip(rng.uniform(15, 30) if small else rng.normal(dmean, dsd), 15, 140))
    radii = diam / 2 * np.array([1.0, rng.uniform(0.55, 0.8), rng.uniform(0.75, 1.05)])
    if site == "anterior":  # prevascular: behind the sternum, in front of aorta / pulmonary trunk
        center = np.array([rng.uniform(-12, 12), asc[1] - r_ao - radii[1] - (1 if abut else rng.uniform(4, 12)),
                           rng.uniform(heart_top - 10, arch_z - 5)])
        if abut:  # touching the aorta, no fat plane between them (a published failure mode)
            center[1] = asc[1] - r_ao - radii[1] * 0.85
        center[1] = max(center[1], sternum_back_y + radii[1] * 0.8)  # keep behind the sternum
    elif site == "middle":
        center = np.array([rng.uniform(-10, 10), hc[1] + hr[1] * 0.9 + radii[1], rng.uniform(heart_top, arch_z)])
    else:  # posterior, paravertebral
        center = np.array([rng.choice([-1, 1]) * rng.uniform(35, 50), sy - 5, rng.uniform(80, 170)])
    unclear = rng.random() < rates["p_unclear"]
    calc = rng.random() < rates["p_calcification"]
    hetero = rng.random() < rates["p_heterogeneous"]
    reach = radii * 1.35 + 2 * px
    ls = (_span(zc, center[2] - reach[2], center[2] + reach[2]), _span(c, center[1] - reach[1], center[1] + reach[1]),
          _span(c, center[0] - reach[0], center[0] + reach[0]))
    bshape = tuple(s.stop - s.start for s in ls)
    d = np.sqrt(((c[ls[2]][None, None] - center[0]) / radii[0]) ** 2
                + ((c[ls[1]][None, :, None] - center[1]) / radii[1]) ** 2
                + ((zc[ls[0]][:, None, None] - center[2]) / radii[2]) ** 2)
    lobulation = _smooth_field(rng, bshape, sigma=(max(2.0, 12.0 / dz), max(2.0, 12.0 / px), max(2.0, 12.0 / px)))
    rough = _smooth_field(rng, bshape, sigma=(max(0.7, 1.5 / dz), max(0.7, 1.5 / px), max(0.7, 1.5 / px)))
    lesion_b = (d + 0.10 * lobulation + (0.10 if unclear else 0.02) * rough) <= 1.0
    lab_b = lab[ls]
    # a mass grows inside the thoracic cavity and pushes organs aside: it never replaces bone, heart,
    # aorta or the great vessels, and stays behind the sternum (it may indent the lungs)
    lesion_b &= ~np.isin(lab_b, [T["bone_cortical"], T["bone_cancellous"], T["air"], T["cord"], T["skin"],
                                 T["disc"], T["aorta"], T["vessel"], T["heart_muscle"], T["blood"],
                                 T["pericardium"], T["effusion"], T["airway"], T["esophagus"], T["liver"]])
    lesion_b &= (cavity & (Y >= sternum_back_y))[ls[1:]][None]
    lesion = np.zeros(shape, bool)
    lesion[ls] = lesion_b
    lab_b[lesion_b] = T["lesion"]

    # ----------------------------------------------------------------- intensities
    hu = np.zeros(shape, np.float32)
    lut = np.zeros(256, np.float32)
    for name, idx in T.items():
        lut[idx] = hu_of.get(name, 0.0)
    hu[:] = lut[lab]
    texture = _coarse_field(rng, shape)
    for name, sd in P.get("tissue_texture_sd", {}).items():
        m = lab == T[name]
        hu[m] += sd * texture[m]
    lungmask = lab == T["lung"]
    # lung vessels: where two smooth random fields both cross zero → a branching tube network
    zl, yl, xl = [np.flatnonzero(lungmask.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1))]
    if len(zl):
        lbox = (slice(zl[0], zl[-1] + 1), slice(yl[0], yl[-1] + 1), slice(xl[0], xl[-1] + 1))
        lb_shape = tuple(s.stop - s.start for s in lbox)
        vs = (max(0.8, 4.0 / dz), max(0.8, 4.0 / px), max(0.8, 4.0 / px))
        f1, f2 = _smooth_field(rng, lb_shape, vs), _smooth_field(rng, lb_shape, vs)
        vessel = np.exp(-(f1 ** 2 + f2 ** 2) / (2 * 0.12 ** 2))  # soft tubes ~0.25 SD wide
        lm = lungmask[lbox]
        hb = hu[lbox]
        hb[lm] += 900.0 * vessel[lm] + 15.0 * f1[lm]
    grad = float(P.get("lung_gradient_hu", 0.0))
    if grad:  # dependent (posterior) lung is denser in a supine patient: 0 in front … grad at the back
        frac = np.clip((Y + 66.0) / 156.0, 0.0, 1.0).astype(np.float32)
        hu[lungmask] += np.broadcast_to((grad * frac)[None], shape)[lungmask]
    kind = cp.get("kind", "solid")
    mean_hu, sd_hu = cp["hu"]
    base = rng.normal(mean_hu, sd_hu)
    if kind in ("solid", "teratoma"):  # enhancement of soft tissue: less on a non-contrast CT
        base += float((P.get("lesion_hu_shift") or {}).get(contrast_phase, 0.0))
    if low_contrast:  # fat-infiltrated, faint against the mediastinal fat, close to the lungs' partial volume
        base = rng.uniform(*P["hard_cases"]["low_contrast_hu"])
    field_in = _smooth_field(rng, bshape, sigma=(max(1.5, 6.0 / dz), max(1.5, 6.0 / px), max(1.5, 6.0 / px)))
    les = np.full(bshape, base, np.float32)
    if kind == "solid":
        les += field_in * (22 if hetero else 6)
        if hetero:
            les -= 35 * (field_in < -1.2)  # necrotic / cystic areas
    elif kind == "cyst":
        les += field_in * 3
    elif kind == "fat":
        les += field_in * 6
    elif kind == "teratoma":
        les = np.where(field_in > 0.6, -85.0, np.where(field_in < -0.8, 15.0, base)).astype(np.float32)
        calc = True
    if calc:
        n_calc = int(rng.integers(1, 5))
        pts = np.argwhere(lesion_b)
        if len(pts):
            for k in rng.choice(len(pts), size=min(n_calc, len(pts)), replace=False):
                zc0, yc0, xc0 = pts[k]
                rz, ry = max(1, int(2.5 / dz)), max(1, int(2.5 / px))
                sl = (slice(max(0, zc0 - rz), zc0 + rz + 1), slice(max(0, yc0 - ry), yc0 + ry + 1),
                      slice(max(0, xc0 - ry), xc0 + ry + 1))
                les[sl] = np.where(lesion_b[sl], rng.uniform(300, 800), les[sl])
    hb = hu[ls]
    hb[lesion_b] = les[lesion_b]
    if unclear:  # infiltrative margin: the lesion bleeds into the surrounding fat
        ring_ = ndimage.binary_dilation(lesion_b, iterations=1) & ~lesion_b & (lab_b == T["mediastinal_fat"])
        hb[ring_] = 0.5 * hb[ring_] + 0.5 * base

    # ----------------------------------------------------------------- image formation
    psf = max(0.45, 0.5 / px)  # in-plane PSF (voxels, ≥0.5 mm) → partial-volume edges
    hu = ndimage.gaussian_filter(hu, sigma=(0.0, psf, psf))
    hu = hu.reshape(nz, sub, *shape[1:]).mean(axis=1)  # slice thickness = average of thin slices
    mask = (lesion.reshape(nz, sub, *shape[1:]).mean(axis=1) >= 0.5).astype(np.uint8)
    N = P["noise"]
    sd_lo, sd_hi = N["sd_hu"]
    target_sd = rng.uniform(sd_lo, sd_hi) * np.sqrt(N["reference_thickness_mm"] / slice_thickness_mm)
    cmin = N["min_correlation_voxels"]
    if N.get("full_min_correlation_pixel_mm"):  # fine matrices: the kernel's own grain, not a voxel floor
        cmin *= min(1.0, px / N["full_min_correlation_pixel_mm"])
    white = rng.standard_normal(hu.shape).astype(np.float32)
    sharp = N.get("sharp_kernel") or {}
    krng = np.random.default_rng(np.random.SeedSequence([abs(int(seed)), 12]))  # own stream: same cases
    kernel = "sharp" if krng.random() < float(sharp.get("p", 0.0)) else "soft"
    cm = N["correlation_mm"]  # one value, or a [low, high] range drawn per case (soft kernels differ)
    cm = float(krng.uniform(*cm)) if isinstance(cm, list) else float(cm)
    corr = (cm / slice_thickness_mm, max(cmin, cm / px), max(cmin, cm / px))
    if kernel == "sharp":  # edge-enhancing kernel: band-pass NPS peaking at a high frequency
        target_sd = krng.uniform(*sharp["sd_hu"]) * np.sqrt(N["reference_thickness_mm"] / slice_thickness_mm)
        noise = target_sd * _sharp_noise(krng, hu.shape, px, krng.uniform(*sharp["peak_per_mm"]),
                                         float(sharp.get("reconstruction_pixel_mm", 0.85)))
    else:
        noise = ndimage.gaussian_filter(white, corr)
        noise *= target_sd / (noise.std() + 1e-6)
    del white
    body2d = ndimage.binary_erosion(e <= 1, iterations=1)
    hu += noise * np.where(body2d, 1.0, 0.3).astype(np.float32)[None]
    ct_arr = np.clip(np.round(hu), -1024, 3071).astype(np.int16)
    del hu, noise

    # reader 2: outline perturbed by a smooth ±~1.5 mm boundary displacement (computed in a box)
    mask2 = np.zeros_like(mask)
    nzm = [np.flatnonzero(mask.any(axis=a)) for a in ((1, 2), (0, 2), (0, 1))]
    if all(len(v) for v in nzm):
        mg = (3, max(3, int(np.ceil(6 / px))), max(3, int(np.ceil(6 / px))))
        mb = tuple(slice(max(0, v[0] - m_), v[-1] + m_ + 1) for v, m_ in zip(nzm, mg, strict=True))
        mk = mask[mb]
        samp = (slice_thickness_mm, px, px)
        sd_map = ndimage.distance_transform_edt(1 - mk, sampling=samp) - ndimage.distance_transform_edt(mk, sampling=samp)
        jitter = _smooth_field(rng, mk.shape, sigma=1.5) * 2.8 + rng.normal(0, 0.8)
        # a reader follows soft tissue: the perturbed outline does not take in lung or air
        mask2[mb] = ((sd_map < jitter) & ((ct_arr[mb] > -500) | (mk > 0))).astype(np.uint8)
    if not mask2.any():
        mask2 = mask.copy()

    origin = (-FOV_MM / 2 + px / 2, -FOV_MM / 2 + px / 2, -Z_EXTENT_MM / 2 + slice_thickness_mm / 2)
    spacing = (px, px, slice_thickness_mm)
    cid = case_id or f"synth_{seed:06d}"
    ctc_mean, ctc_sd = cp["ctc"]
    ctc = float(max(0.0, round(rng.normal(ctc_mean, ctc_sd), 2)))
    age = float(np.clip(round(rng.normal(52 if info.malignant else 47, 13)), 18, 90))
    sex = str(rng.choice(["F", "M"]))
    z0 = Z_EXTENT_MM / 2

    def r1(v: float) -> float:
        return round(float(v), 1)

    meta = {
        "synthetic": True, "synthetic_label": SYNTHETIC_LABEL, "seed": int(seed), "case_id": cid,
        "lesion_class": cls, "diameter_mm": r1(diam),
        "center_lps_mm": [r1(center[0]), r1(center[1]), r1(center[2] - z0)],
        "unclear_margin": bool(unclear), "calcification": bool(calc), "heterogeneous": bool(hetero),
        "hard_small": bool(small), "hard_low_contrast": bool(low_contrast), "hard_abutting_aorta": bool(abut),
        "pericardial_effusion": bool(effusion), "noise_sd_hu": r1(target_sd), "noise_kernel": kernel,
        "noise_grain_mm": round(cm, 2),
        "slice_thickness_mm": slice_thickness_mm, "contrast_phase": contrast_phase,
        # where the generator put the landmarks (LPS mm), for tests and for checking a segmentation
        "landmarks_lps_mm": {
            "sternum_posterior_y": r1(sternum_back_y), "sternum_bottom_z": r1(0.3 * Z_EXTENT_MM - z0),
            "ascending_aorta_xy": [r1(asc[0]), r1(asc[1])], "aorta_radius": r1(r_ao),
            "aortic_arch_z": r1(arch_z - z0), "heart_center": [r1(hc[0]), r1(hc[1]), r1(hc[2] - z0)],
            "heart_top_z": r1(heart_top - z0), "spine_center_y": r1(sy),
        },
        "generator": GENERATOR_VERSION,
    }
    vol = Volume(ct_arr, spacing_xyz=spacing, origin_xyz=origin, units="HU", metadata=meta)
    tissues = None
    if return_tissues:  # label of the central thin slice of each output slice
        tissues = vol.with_array(lab[sub // 2::sub].copy(), units="label", kind="tissue labels")
    return SyntheticCase(
        case_id=cid, ct=vol,
        mask=vol.with_array(mask, units="label", kind="tumor mask reader 1 (ground truth)"),
        mask_reader2=vol.with_array(mask2, units="label", kind="tumor mask reader 2 (perturbed)"),
        lesion_class=cls, malignant=int(info.malignant), who_risk=info.who_risk, ctc=ctc, age=age, sex=sex,
        lesion_site=site, metadata=meta, tissues=tissues,
    )
