"""SYNTHETIC-ON-REAL cases: a synthetic lesion put into the prevascular space of a real CT.

Why: a model trained only on the phantom has never seen real heart, vessels, liver or scanner
noise, and calls them tumor. Real chest CTs are available without tumors; what is missing is the
label. Inserting a lesion whose outline is known gives real anatomy and real noise around a known
mask, and the same CT without the lesion is a hard negative.

How the lesion is made to look like part of the scan:

* **where**: a random point of the anterior (prevascular) compartment found by
  :func:`mediastinal_ai.anatomy.analyse_chest`, in fat or soft tissue, above the heart;
* **shape**: a lobulated ellipsoid (the generator's appearance model: class, size, kind) that
  only takes the room mediastinal fat or indented lung holds: a real mass pushes the heart and
  great vessels aside, an insertion cannot, so it never overlaps them (nor bone, airway wall or
  chest wall); where most of the ellipsoid would land on existing soft tissue another place is
  tried (and, unless a size was asked for, a smaller lesion);
* **partial volume**: occupancy is integrated over sub-slices of each slice's thickness and over
  an in-plane voxel, then blurred by a point-spread function, so the edge is as soft as the
  scanner's own edges;
* **noise**: the lesion carries noise with the background's own power spectrum at that place:
  its high-frequency residual, phase-randomised per slice (the texture and noise power spectrum
  stay the scanner's, the anatomy's edges in the residual do not show through as a ghost) and
  scaled to the noise SD of homogeneous tissue;
* **contrast**: on a non-contrast background (no enhanced blood in the middle mediastinum) a
  solid lesion's enhancement is removed.

Everything written is labelled SYNTHETIC-ON-REAL: the anatomy is a patient's, the lesion is not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..volume import Volume

log = logging.getLogger(__name__)

SYNTHETIC_ON_REAL = "SYNTHETIC-ON-REAL - synthetic lesion in a real CT, not a patient's tumor"
DIAMETER_RANGE_MM = (20.0, 80.0)
MAX_PLACEMENT_TRIES = 12
MIN_ROOM_FRACTION = 0.6  # share of the ellipsoid that must land on fat or lung
LUNG_INDENT_MM = 10.0  # how far a mediastinal mass may push into the lung
FAT_MAX_HU = -30.0  # a voxel the lesion may replace: fat (or lung) in the smoothed background


@dataclass
class InsertedCase:
    ct: Volume
    mask: Volume
    lesion_class: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _noise_residual(a: np.ndarray, body_soft: np.ndarray) -> tuple[np.ndarray, float]:
    """High-pass residual of the background (its noise, plus some edges) and the noise SD, taken
    where the tissue is homogeneous (the lowest decile of the local SD in soft tissue and fat)."""
    smooth = ndimage.gaussian_filter(a, sigma=(0.0, 1.5, 1.5))
    r = a - smooth
    local_sd = np.sqrt(np.maximum(ndimage.uniform_filter(r * r, size=(1, 5, 5)), 0.0))
    vals = local_sd[body_soft]
    sd = float(np.percentile(vals, 10)) if vals.size > 100 else 10.0
    return np.clip(r, -2.5 * sd, 2.5 * sd), sd


def _phase_randomised(r: np.ndarray, sd: float, rng: np.random.Generator) -> np.ndarray:
    """Noise with each slice's in-plane power spectrum of ``r`` and random phases, at SD ``sd``:
    a real field of a random phase is the real part of the inverse transform (the spectrum's
    Hermitian symmetry is not needed for that), so its power is the residual's up to a constant."""
    out = np.empty_like(r, dtype=np.float32)
    for k in range(r.shape[0]):
        amp = np.abs(np.fft.fft2(r[k]))
        phase = np.exp(2j * np.pi * rng.random(amp.shape))
        n = np.real(np.fft.ifft2(amp * phase))
        n -= n.mean()
        s = float(n.std())
        out[k] = n * (sd / s) if s > 0 else 0.0
    return out


def insert_lesion(background: Volume, seed: int, *, lesion_class: str | None = None,
                  classes: list[str] | None = None, diameter_mm: float | None = None) -> InsertedCase:
    """A copy of ``background`` (a real chest CT in HU) with one synthetic lesion; same grid."""
    from ..anatomy import ANTERIOR, analyse_chest
    from ..orientation import canonical
    from ..taxonomy import lesion_class as class_info
    from .generator import _draw_class, _smooth_field, appearance_params

    src = background.metadata.get("source", "background CT")
    if background.units not in ("HU", ""):
        raise InputError(f"the background must be a CT in HU, got {background.units!r}", src)
    rng = np.random.default_rng(seed)
    canon, orient = canonical(background)
    anat = analyse_chest(canon)
    if not anat.covers_mediastinum:
        raise InputError("the background CT does not cover the mediastinum: " + "; ".join(anat.warnings), src)
    P = appearance_params()
    cls = lesion_class or _draw_class(rng, classes)
    info = class_info(cls)
    cp = P["classes"][cls]
    contrast = bool(anat.stats.get("contrast"))

    # ------------------------------------------------------------------ where
    lab = anat.labels
    la = lab.array
    thoracic = np.nonzero(anat.thoracic_slices)[0]
    ant = la == ANTERIOR
    if len(thoracic) == 0 or not ant.any():
        raise InputError("no anterior mediastinum found in the background CT", src)
    # the prevascular space above the heart: upper part of the chest, in fat (-150…-20 HU)
    z0 = thoracic.min() + int(0.45 * (thoracic.max() - thoracic.min()))
    z1 = thoracic.min() + int(0.90 * (thoracic.max() - thoracic.min()))
    coarse_hu = anat.coarse_hu
    cand = np.argwhere(ant & (coarse_hu > -150) & (coarse_hu < -20))
    cand = cand[(cand[:, 0] >= z0) & (cand[:, 0] <= z1)]
    if len(cand) == 0:
        cand = np.argwhere(ant)
    diam0 = float(diameter_mm) if diameter_mm else float(np.exp(rng.uniform(*np.log(DIAMETER_RANGE_MM))))
    # a real mass pushes the heart and great vessels aside; an insertion cannot, so it only takes the
    # room that fat (and the lung it indents) holds. Places where the ellipsoid would mostly land on
    # existing soft tissue are tried again elsewhere (and, unless the size was given, smaller).
    best = None
    for attempt in range(MAX_PLACEMENT_TRIES):
        diam = diam0 if diameter_mm else diam0 * 0.85 ** (attempt // 3)
        pick = cand[rng.integers(len(cand))][::-1].astype(float)
        center = lab.index_to_lps(pick)
        radii = np.array([diam / 2, diam / 2 * rng.uniform(0.65, 1.0), diam / 2 * rng.uniform(0.8, 1.25)])
        placed = _place(canon, anat, center, radii, rng)
        if placed is None:
            continue
        if best is None or placed[3] > best[3]:
            best = (*placed, center, diam)
        if placed[3] >= MIN_ROOM_FRACTION:
            break
    if best is None:
        raise InputError("the chosen lesion position lies outside the CT", src)
    box, occ, bg, room_fraction, center, diam = best
    bshape = occ.shape
    sp = np.asarray(canon.spacing_xyz)

    # ------------------------------------------------------------------ intensities
    mean_hu, sd_hu = cp["hu"]
    base = float(rng.normal(mean_hu, sd_hu))
    kind = cp.get("kind", "solid")
    if not contrast and kind == "solid":
        base = 32.0 + 0.35 * (base - 32.0)  # no enhancement on a non-contrast CT
    field_in = _smooth_field(rng, bshape, sigma=(max(1.0, 6.0 / sp[2]), max(1.5, 6.0 / sp[1]), max(1.5, 6.0 / sp[0])))
    tex = {"solid": 10.0, "cyst": 3.0, "fat": 6.0, "teratoma": 15.0}.get(kind, 8.0)
    les = base + tex * field_in
    if kind == "teratoma":
        les = np.where(field_in > 0.6, -85.0, np.where(field_in < -0.8, 15.0, les))
    body_soft = (bg > -150) & (bg < 150)
    resid, noise_sd = _noise_residual(bg, body_soft)  # bg: the box's HU as float32, unchanged
    les = les + _phase_randomised(resid, noise_sd, rng)
    out = canon.array.copy()
    blended = (1.0 - occ) * bg + occ * les
    lo_v, hi_v = np.iinfo(out.dtype).min if np.issubdtype(out.dtype, np.integer) else -1024, 3071
    out[box] = np.clip(np.round(blended), lo_v, hi_v).astype(out.dtype)
    mask = np.zeros(canon.shape, np.uint8)
    mask[box] = (occ >= 0.5).astype(np.uint8)
    if mask.sum() < 10:
        raise InputError("the inserted lesion came out empty (no room at the chosen place)", src)
    vol_ml = float(mask.sum() * canon.voxel_volume_mm3 / 1000.0)
    meta = {"synthetic": True, "synthetic_label": SYNTHETIC_ON_REAL, "synthetic_kind": "synthetic-on-real",
            "seed": int(seed), "lesion_class": cls, "diameter_mm": round(diam, 1), "volume_ml": round(vol_ml, 2),
            "center_lps_mm": [round(float(v), 1) for v in center], "background": str(src),
            "background_contrast": contrast, "background_noise_sd_hu": round(noise_sd, 1),
            "room_fraction": round(room_fraction, 3)}
    ct_out = background.with_array(orient.restore(out), units="HU", **meta)
    mask_out = background.with_array(orient.restore(mask), units="label", **meta)
    return InsertedCase(ct_out, mask_out, cls, {**meta, "malignant": int(info.malignant), "who_risk": info.who_risk})


def _place(canon: Volume, anat: Any, center: np.ndarray, radii: np.ndarray, rng: np.random.Generator
           ) -> tuple[tuple[slice, slice, slice], np.ndarray, np.ndarray, float] | None:
    """Occupancy (0..1, with partial volume) of a lobulated ellipsoid at ``center`` in the box it
    needs, limited to the room it may take, and the share of the ellipsoid that room kept."""
    from ..anatomy import ANTERIOR, MIDDLE, POSTERIOR
    from ..anatomy.chest import LUNG
    from .generator import _smooth_field

    sp = np.asarray(canon.spacing_xyz)
    c_ijk = canon.lps_to_index(center)
    reach = (radii * 1.4 + 2 * sp) / sp
    lo = np.maximum(np.floor(c_ijk - reach).astype(int), 0)
    hi = np.minimum(np.ceil(c_ijk + reach).astype(int) + 1, np.asarray(canon.shape[::-1]))
    box = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
    bshape = tuple(s.stop - s.start for s in box)
    if min(bshape) < 1:
        return None
    n_sub = max(1, int(np.ceil(sp[2] / 1.0)))
    lob = _smooth_field(rng, bshape, sigma=(max(1.0, 12.0 / sp[2]), max(2.0, 12.0 / sp[1]), max(2.0, 12.0 / sp[0])))
    ii = (np.arange(lo[0], hi[0]) - c_ijk[0]) * sp[0] / radii[0]
    jj = (np.arange(lo[1], hi[1]) - c_ijk[1]) * sp[1] / radii[1]
    width = 0.5 * sp[0] / radii[0] + 1e-3  # one in-plane voxel, in normalised radius units
    occ = np.zeros(bshape, np.float32)
    for s in range(n_sub):
        off = (s + 0.5) / n_sub - 0.5
        kk = (np.arange(lo[2], hi[2]) + off - c_ijk[2]) * sp[2] / radii[2]
        d = np.sqrt(kk[:, None, None] ** 2 + jj[None, :, None] ** 2 + ii[None, None, :] ** 2) + 0.10 * lob
        occ += np.clip((1.0 - d) / (2 * width) + 0.5, 0.0, 1.0)
    occ /= n_sub
    occ = ndimage.gaussian_filter(occ, sigma=(0.0, 0.6, 0.6))
    bg = canon.array[box].astype(np.float32)
    region = la_at(anat, canon, box)
    # room: mediastinal fat, or lung the mass indents; never heart, vessels (enhanced or not), airway
    # wall, bone, chest wall or air outside the body. Smoothed in-plane so noise does not make holes,
    # then softened by a voxel so the edge against a vessel has partial volume too.
    smooth = ndimage.gaussian_filter(bg, sigma=(0.0, 1.0, 1.0))
    # (the airway is its own label, so its air is never room; thin strands — small vessels, pleural
    # lines — are closed over, as a mass engulfs them)
    medi = np.isin(region, [ANTERIOR, MIDDLE, POSTERIOR])
    near_medi = ndimage.distance_transform_edt(~medi, sampling=sp[::-1]) <= LUNG_INDENT_MM if medi.any() else medi
    room = (smooth < FAT_MAX_HU) & (medi | ((region == LUNG) & near_medi))
    room = ndimage.binary_closing(room, structure=np.ones((1, 3, 3), bool), iterations=1, border_value=1) & (bg < 300)
    room = ndimage.binary_opening(room, structure=np.ones((1, 3, 3), bool))
    soft_room = ndimage.gaussian_filter(room.astype(np.float32), sigma=(0.0, 0.6, 0.6))
    full = float((occ >= 0.5).sum())
    occ = occ * np.where(room, np.maximum(soft_room, 0.5), soft_room)
    # the filters' far tails (under 2 % of a voxel) and specks cut off from the lesion are not its edge
    occ[(occ < 0.02) | ~ndimage.binary_dilation(occ >= 0.5, structure=np.ones((3, 3, 3), bool), iterations=2)] = 0.0
    kept = float((occ >= 0.5).sum()) / full if full else 0.0
    return box, occ, bg, kept


def la_at(anat: Any, canon: Volume, box: tuple[slice, slice, slice]) -> np.ndarray:
    """The anatomy label map sampled on ``canon``'s voxels inside ``box`` (nearest coarse voxel)."""
    z, y, x = np.meshgrid(*(np.arange(s.start, s.stop) for s in box), indexing="ij")
    ijk = np.stack([x.ravel(), y.ravel(), z.ravel()], 1).astype(float)
    return anat.codes_at(canon.index_to_lps(ijk)).reshape(z.shape)


def _insert_into_background(bpath: str | Path, tag: str, b_i: int, n: int, out: Path, *, seed: int,
                            classes: list[str] | None, negatives: bool, split: str | None) -> list[dict]:
    """The manifest rows (and files) of one background: its insertions, then the CT itself as a
    hard negative; the first insertion fails before anything is written if the CT cannot take one."""
    from ..io import read_ct, write_image

    bg = read_ct(bpath)
    rows = []
    for j in range(n):
        s = seed + 1000 * b_i + j
        case = insert_lesion(bg, s, classes=classes)
        cid = f"{tag}_ins{j:03d}"
        for key, vol in (("ct", case.ct), ("mask", case.mask)):
            write_image(vol, out / f"images/{cid}_{key}.nii.gz")
        m = case.metadata
        rows.append({"case_id": cid, "ct": f"images/{cid}_ct.nii.gz", "mask": f"images/{cid}_mask.nii.gz",
                     "lesion_class": case.lesion_class, "malignant": m["malignant"], "who_risk": m["who_risk"],
                     "lesion_site": "anterior", "synthetic": "true", "synthetic_kind": "synthetic-on-real",
                     "background": str(bpath), "seed": s, "diameter_mm": m["diameter_mm"],
                     "volume_ml": m["volume_ml"], **({"split": split} if split else {})})
    if negatives:
        ct_name = f"images/{tag}_negative_ct.nii.gz"
        write_image(bg, out / ct_name)
        empty = bg.with_array(np.zeros(bg.shape, np.uint8), units="label")
        write_image(empty, out / f"images/{tag}_negative_mask.nii.gz")
        rows.insert(0, {"case_id": f"{tag}_negative", "ct": ct_name, "mask": f"images/{tag}_negative_mask.nii.gz",
                        "synthetic": "true", "synthetic_kind": "real-negative", "background": str(bpath),
                        **({"split": split} if split else {})})
    return rows


def insert_cohort(backgrounds: list[str | Path], n_per_background: int, out_dir: str | Path, *, seed: int = 0,
                  classes: list[str] | None = None, negatives: bool = True, split: str | None = None,
                  progress: Any = None) -> Path:
    """``n_per_background`` inserted cases per real CT (+ the CT itself as a hard negative) → images
    and a manifest (``synthetic=true``, ``synthetic_kind`` = synthetic-on-real / real-negative)."""
    from ..fileio import atomic_write_text
    from ..progress import report
    from .cohort import write_manifest

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    total = max(1, len(backgrounds) * (n_per_background + int(negatives)))
    k = 0
    skipped: list[str] = []
    for b_i, bpath in enumerate(backgrounds):
        tag = f"bg{b_i:02d}"
        try:  # a background that cannot take a lesion (not a chest CT, a thin slab) is skipped, not the cohort
            made = _insert_into_background(bpath, tag, b_i, n_per_background, out, seed=seed, classes=classes,
                                           negatives=negatives, split=split)
        except InputError as e:
            for f in (out / "images").glob(f"{tag}_*"):
                f.unlink()
            skipped.append(f"{bpath}: {e}")
            log.warning("background skipped: %s", e)
            made = []
        rows += made
        k += n_per_background + int(negatives)
        report(progress, k / total, f"{tag}: {len(made)} case(s)" + ("" if made else " (skipped)"))
    if not rows:
        raise InputError("no background could take a lesion: " + "; ".join(skipped), out)
    manifest = write_manifest(out / "manifest.csv", rows)
    atomic_write_text(out / "README.txt", f"{SYNTHETIC_ON_REAL}\nEach *_ins* case is a real CT (path in the "
                      "manifest's 'background' column) with one synthetic lesion inserted by "
                      "mediastinal_ai.synthetic.insertion; *_negative cases are the real CTs unchanged (no "
                      "anterior mediastinal tumor annotated). The lesions are not patients' tumors.\n"
                      + "".join(f"Skipped background: {x}\n" for x in skipped))
    return manifest
