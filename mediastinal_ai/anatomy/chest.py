"""Chest anatomy from HU thresholds, connected components and morphology — no learned weights.

Why a classical step: a tumor model trained on one kind of data will fire on whatever it has
not seen (heart, vessels, liver, muscle). Knowing where the mediastinum is lets inference look
only there (speed), drop detections far outside it, say in which compartment a lesion lies, and
warn when a CT does not show the mediastinum at all. HU physics is the same on every scanner,
so these rules hold on real CT without training.

Everything runs on a coarse copy of the canonical CT (:data:`GRID_MM`), seconds on a
512×512×300 scan. The steps, per axial slice:

* **body**: > -400 HU, opened, largest 3D component, holes filled slice by slice;
* **lungs**: < -400 HU inside the body, 2D components of ≥ 3 cm²; small air near the midline is
  **airway** (trachea, main bronchi) or oesophageal gas, not lung;
* **bone**: > 200 HU (ribs, spine, sternum); the **vertebral body** is the bone near the midline in
  the posterior half of the body;
* **mediastinum**: row by row, the tissue between the medial edges of the right and left lung,
  minus lung, airway and bone, on the slices where both lungs are in view (the thoracic inlet
  above the apices is added as a margin, where thymic tumors reach);
* **compartments** (approximate, geometric, after the ITMIG three-compartment model):
  *posterior* (paravertebral) behind a line 1 cm posterior to the vertebral bodies' anterior
  margin; *anterior* (prevascular) in the front :data:`ANTERIOR_FRACTION` of the distance from
  the mediastinum's front (behind the sternum) to the vertebral body; *middle* (visceral:
  heart, great vessels, trachea) between them. The true anterior/middle border is the pericardium
  and the great vessels' anterior wall, which HU alone cannot find on a non-contrast CT: the
  compartment column of the lesion table is a guide, not a diagnosis.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..volume import Volume

log = logging.getLogger(__name__)

GRID_MM = 3.0  # coarse grid of the anatomy step (z: max(GRID_MM, slice thickness))
ANTERIOR_FRACTION = 0.35
MIN_LUNG_AREA_CM2 = 3.0  # a 2D low-density component smaller than this is not lung
MIN_CHEST_EXTENT_MM = 30.0
SLAB_EXTENT_MM = 100.0  # less than this: a slab, tumors above/below are out of view  # both lungs over at least this much z: the CT covers the mediastinum
INLET_MARGIN_MM = 30.0  # mediastinum extended above the lung apices (thoracic inlet)
STERNUM_DEPTH_MM = 30.0  # bone this close behind the front skin (midline) is sternum or costal cartilage
HULL_REACH_MM = 30.0  # the lungs' hull adds tissue at most this far from the row-filled mediastinum
CANAL_MAX_MM = 25.0  # spinal canal: arch and vertebral body at most this far apart (AP)
CONTRAST_MEDIAN_HU = 110.0  # middle-mediastinum soft-tissue median above this: a contrast CT
CORTICAL_HU = 700.0  # on a contrast CT a vertebra must hold cortical bone this dense
BEHIND_SPINE_MM = 30.0  # mediastinum ends this far behind the vertebral bodies' front (descending aorta beside them)
ENVELOPE_MARGIN_MM = 12.0
SPANNING_AIR_HU = -900.0  # an edge-to-edge air region this dark is outside too (lungs read ≈ -850)
OUTSIDE_AIR_HU = -960.0  # median HU below which an edge-touching air region is outside the body  # detections within this distance of the mediastinum count as inside

# codes of the coarse label map
OUTSIDE, BODY, LUNG, AIRWAY, BONE, ANTERIOR, MIDDLE, POSTERIOR = range(8)
LABEL_NAMES = {OUTSIDE: "outside body", BODY: "other", LUNG: "lung", AIRWAY: "airway", BONE: "bone",
               ANTERIOR: "anterior mediastinum", MIDDLE: "middle mediastinum", POSTERIOR: "posterior mediastinum"}
COMPARTMENT_SITE = {ANTERIOR: "anterior", MIDDLE: "middle", POSTERIOR: "posterior"}
# an in-plane-only 3×3×3 structure: morphology and labels act slice by slice
_INPLANE = np.zeros((3, 3, 3), bool)
_INPLANE[1] = ndimage.generate_binary_structure(2, 1)


@dataclass
class ChestAnatomy:
    """The anatomy of one CT on a coarse canonical grid (``labels``: codes above)."""

    labels: Volume
    envelope: Volume  # mediastinum dilated by ENVELOPE_MARGIN_MM (uint8)
    covers_mediastinum: bool
    chest_extent_mm: float
    warnings: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    thoracic_slices: np.ndarray | None = None  # coarse slices with both lungs in view
    coarse_hu: np.ndarray | None = None  # the CT on the coarse grid (for placing things)

    def codes_at(self, lps: np.ndarray) -> np.ndarray:
        """Label code at LPS points (nearest coarse voxel; OUTSIDE beyond the grid)."""
        return _lookup(self.labels, lps, OUTSIDE)

    def in_envelope(self, lps: np.ndarray) -> np.ndarray:
        return _lookup(self.envelope, lps, 0).astype(bool)

    def mediastinum_box_lps(self, margin_mm: float = 15.0) -> tuple[np.ndarray, np.ndarray] | None:
        """LPS bounding box of the mediastinal envelope (+ margin), or None when there is none."""
        idx = np.argwhere(self.envelope.array > 0)
        if len(idx) == 0:
            return None
        lo_ijk, hi_ijk = idx.min(0)[::-1].astype(float), idx.max(0)[::-1].astype(float)
        corners = np.array([[a, b, c] for a in (lo_ijk[0], hi_ijk[0]) for b in (lo_ijk[1], hi_ijk[1])
                            for c in (lo_ijk[2], hi_ijk[2])])
        mm = self.labels.index_to_lps(corners)
        return mm.min(0) - margin_mm, mm.max(0) + margin_mm

    def summary(self) -> dict[str, Any]:
        return {"covers_mediastinum": self.covers_mediastinum, "chest_extent_mm": round(self.chest_extent_mm, 1),
                "warnings": list(self.warnings), **self.stats}

    # What a result folder keeps so that re-thresholding later (CLI, Slicer) drops the same
    # components and names the same compartments as the first run, without the CT's anatomy step.
    FILES = {"labels": "anatomy_labels.nrrd", "envelope": "mediastinal_envelope.nrrd"}

    def save(self, folder: str | Path) -> dict[str, Path]:
        from ..io import write_image

        out = {k: Path(folder) / name for k, name in self.FILES.items()}
        write_image(self.labels, out["labels"])
        write_image(self.envelope, out["envelope"])
        return out

    @classmethod
    def from_volumes(cls, labels: Volume, envelope: Volume, summary: dict[str, Any] | None = None) -> ChestAnatomy:
        s = dict(summary or {})
        covers = bool(s.pop("covers_mediastinum", True))
        extent = float(s.pop("chest_extent_mm", 0.0))
        warnings = list(s.pop("warnings", []))
        lab = labels.with_array(np.asarray(labels.array, np.uint8), units="label")
        env = envelope.with_array((np.asarray(envelope.array) > 0).astype(np.uint8), units="label")
        if lab.shape != env.shape:
            raise ValueError(f"anatomy labels {lab.shape} and envelope {env.shape} differ in shape")
        return cls(labels=lab, envelope=env, covers_mediastinum=covers, chest_extent_mm=extent, warnings=warnings,
                   stats=s)

    def fits(self, ct: Volume, tol_mm: float = 1e-3) -> bool:
        """Whether this anatomy was computed on ``ct``'s grid (a canonical-order CT, as
        :func:`analyse_chest` takes): its coarse grid is exactly the one ``ct`` gives. A saved
        anatomy is reused instead of recomputed only then; one of another CT (or another crop,
        spacing or orientation of it) would put lesions in the wrong compartment."""
        shape, spacing, origin, direction = coarse_grid(ct)
        lab = self.labels
        return (lab.shape == shape and self.envelope.shape == shape
                and np.allclose(lab.spacing_xyz, spacing, rtol=0, atol=tol_mm)
                and np.allclose(lab.origin_xyz, origin, rtol=0, atol=tol_mm)
                and np.allclose(np.asarray(lab.direction, float), direction, rtol=0, atol=1e-5))

    @classmethod
    def load(cls, folder: str | Path, summary: dict[str, Any] | None = None) -> ChestAnatomy | None:
        """The anatomy a result folder holds, or None when it has none (older results, or a run
        without the anatomy step)."""
        from ..io import read_image

        paths = {k: Path(folder) / name for k, name in cls.FILES.items()}
        if not all(p.is_file() for p in paths.values()):
            return None
        return cls.from_volumes(read_image(paths["labels"]), read_image(paths["envelope"]), summary)

    @classmethod
    def from_case_folder(cls, folder: str | Path) -> ChestAnatomy | None:
        """The anatomy ``segment`` saved in a case folder, with the summary (coverage, warnings,
        contrast) from its segmentation result; None when there is none or it cannot be read
        (the caller then computes it). Whether it belongs to a given CT is :meth:`fits`."""
        import json

        from ..case_files import find_result
        from ..errors import MediastinalAIError

        p = find_result(folder, "segmentation")
        if p is None:
            return None
        try:
            summary = json.loads(p.read_text(encoding="utf-8")).get("anatomy")
            return cls.load(folder, summary if isinstance(summary, dict) else None)
        except (OSError, ValueError, AttributeError, MediastinalAIError) as e:
            log.warning("%s: saved chest anatomy not usable (%s)", folder, e)
            return None


def _lookup(vol: Volume, lps: np.ndarray, default: int) -> np.ndarray:
    ijk = np.rint(vol.lps_to_index(np.asarray(lps, float).reshape(-1, 3))).astype(np.int64)
    n = np.asarray(vol.shape[::-1])
    ok = np.all((ijk >= 0) & (ijk < n), axis=1)
    out = np.full(len(ijk), default, dtype=vol.array.dtype)
    out[ok] = vol.array[ijk[ok, 2], ijk[ok, 1], ijk[ok, 0]]
    return out


def _coarse_spacing(ct: Volume) -> tuple[float, float, float]:
    return (max(GRID_MM, ct.spacing_xyz[0]), max(GRID_MM, ct.spacing_xyz[1]), max(GRID_MM, ct.spacing_xyz[2]))


def coarse_grid(ct: Volume) -> tuple[tuple[int, int, int], tuple[float, float, float], np.ndarray, np.ndarray]:
    """(shape zyx, spacing, origin, direction) of the coarse grid :func:`analyse_chest` puts
    ``ct`` on, without resampling (:func:`~mediastinal_ai.segmentation.plan.resampled_grid`)."""
    from ..segmentation.plan import resampled_grid

    sp = _coarse_spacing(ct)
    size, origin = resampled_grid(ct, sp)
    d = np.asarray(ct.direction, float).reshape(3, 3)
    return (size[2], size[1], size[0]), tuple(float(x) for x in sp), origin, d  # type: ignore[return-value]


def _coarse(ct: Volume) -> Volume:
    from ..segmentation.plan import resample

    sp = _coarse_spacing(ct)
    arr = ct.array
    # padding outside the scan circle (-2048, -3024 …) is air, not a value to interpolate with
    if arr.min() < -1024:
        arr = np.maximum(arr, np.asarray(-1024, arr.dtype))
    return resample(ct.with_array(arr), sp)


def _lungs_side_by_side(lung: np.ndarray) -> np.ndarray:
    """Keep the 3-D lung components that share the largest one's slices: air trapped under the neck
    or the shoulders (between skin folds and the table) looks like lung slice by slice, but lies
    above or below the lungs."""
    lab, n = ndimage.label(lung)
    if n <= 1:
        return lung
    sizes = np.bincount(lab.ravel())[1:]
    objs = ndimage.find_objects(lab)
    big = objs[int(np.argmax(sizes))][0]
    keep = np.zeros(n + 1, bool)
    for i, sl in enumerate(objs, start=1):
        z0, z1 = sl[0].start, sl[0].stop
        overlap = max(0, min(z1, big.stop) - max(z0, big.start))
        keep[i] = overlap >= 0.5 * (z1 - z0)
    return keep[lab]


def _convex_fill(mask2d: np.ndarray) -> np.ndarray:
    """The pixels inside the convex hull of a 2-D mask's pixels (empty when it has < 3 points)."""
    from scipy.spatial import ConvexHull, QhullError

    pts = np.argwhere(mask2d).astype(float)
    out = np.zeros(mask2d.shape, bool)
    if len(pts) < 3:
        return out
    try:
        hull = ConvexHull(pts)
    except QhullError:  # all points on a line
        return out
    lo, hi = pts.min(0).astype(int), pts.max(0).astype(int) + 1
    yy, xx = np.mgrid[lo[0]:hi[0], lo[1]:hi[1]]
    q = np.stack([yy.ravel(), xx.ravel()], 1).astype(float)
    inside = np.all(q @ hull.equations[:, :2].T + hull.equations[:, 2] <= 1e-9, axis=1)
    out[lo[0]:hi[0], lo[1]:hi[1]] = inside.reshape(yy.shape)
    return out


def _spanning_labels(labels: np.ndarray) -> set[int]:
    """Labels of the (z, y, x) label map that reach two opposite in-plane edges of the field of view.
    An air region that does and reads darker than lung is the air around the patient (under the back and
    the table; on a small field of view partial volume with blankets and the table lifts it above pure
    air's HU); a crop cuts one lung on one side only, though both lungs joined at the anterior junction
    line can span it (they read as lung, ≈ -850 HU)."""
    def on(edge: np.ndarray) -> set[int]:
        return set(np.unique(edge[edge > 0]).tolist())

    return ((on(labels[:, :, 0]) & on(labels[:, :, -1])) | (on(labels[:, 0, :]) & on(labels[:, -1, :])))


def _grown_down_from(mask: np.ndarray, z0: int, step: int) -> np.ndarray:
    """``mask`` below slice ``z0`` (z grows cranially), each slice kept only within ``step`` pixels of
    the kept part of the slice above it."""
    out = mask.copy()
    for z in range(min(z0, mask.shape[0] - 1) - 1, -1, -1):
        out[z] &= ndimage.binary_dilation(out[z + 1], structure=_INPLANE[1], iterations=step) if out[z + 1].any() \
            else False
    return out


def _largest(mask: np.ndarray, structure: np.ndarray | None = None) -> np.ndarray:
    lab, n = ndimage.label(mask, structure=structure)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())[1:]
    return lab == (int(np.argmax(sizes)) + 1)


def analyse_chest(ct: Volume) -> ChestAnatomy:
    """Body, lungs, airway, bone and mediastinal compartments of a canonical-order CT
    (:func:`mediastinal_ai.orientation.canonical`)."""
    g = _coarse(ct)
    a = g.array.astype(np.float32)
    sx, sy, sz = g.spacing_xyz
    px_area_cm2 = sx * sy / 100.0
    nz, ny, nx = a.shape
    warnings: list[str] = []

    # outside = air regions (per slice) that reach the edge of the field of view and read as air
    # (≈ -1000 HU); a lung cut by a small field of view (a crop) reaches the edge too but reads ≈ -850
    rest, n_rest = ndimage.label(a <= -400, structure=_INPLANE)
    outside = np.zeros(a.shape, bool)
    if n_rest:
        border = np.zeros_like(outside)
        border[:, 0, :] = border[:, -1, :] = border[:, :, 0] = border[:, :, -1] = True
        touching = np.unique(rest[border & (rest > 0)])
        med_hu = ndimage.median(a, rest, touching) if len(touching) else []
        spans = _spanning_labels(rest)
        for i, m in zip(touching, np.atleast_1d(med_hu)):
            if m < OUTSIDE_AIR_HU or (i in spans and m < SPANNING_AIR_HU):
                outside |= rest == i
    body = ndimage.binary_opening(~outside, structure=_INPLANE, iterations=4)  # table, cables, blankets
    body = _largest(body, ndimage.generate_binary_structure(3, 1))
    body = ndimage.binary_fill_holes(body, structure=_INPLANE)
    cropped = bool(body[:, [0, -1], :].mean() > 0.5 or body[:, :, [0, -1]].mean() > 0.5)
    low = (a < -400) & body

    lab2d, n2d = ndimage.label(low, structure=_INPLANE)
    lung = np.zeros_like(low)
    airway = np.zeros_like(low)
    mid_x = np.full(nz, nx / 2.0)
    for z in range(nz):
        bx = np.nonzero(body[z].any(0))[0]
        if len(bx):
            mid_x[z] = (bx[0] + bx[-1]) / 2.0
    if n2d:
        objs = ndimage.find_objects(lab2d)
        areas = np.bincount(lab2d.ravel())[1:] * px_area_cm2
        medians = np.atleast_1d(ndimage.median(a, lab2d, np.arange(1, n2d + 1)))
        for i, sl in enumerate(objs):
            if sl is None:
                continue
            comp = lab2d[sl] == i + 1
            z = sl[0].start
            xs = np.nonzero(comp.any((0, 1)))[0] + sl[2].start
            centre_x = xs.mean()
            near_mid = abs(centre_x - mid_x[z]) * sx < 25.0
            if near_mid and areas[i] < 8.0:
                airway[sl] |= comp
            elif areas[i] >= MIN_LUNG_AREA_CM2 and medians[i] >= OUTSIDE_AIR_HU:
                lung[sl] |= comp  # (pure air, ≈ -1000 HU, is bowel gas or a gap under the back, not lung)
    lung = _lungs_side_by_side(lung)
    bone = (a > 200) & body & ~lung

    right = lung & (np.arange(nx)[None, None, :] < mid_x[:, None, None])  # patient's right: low x (LPS)
    left = lung & ~right
    ra = right.sum((1, 2)) * px_area_cm2
    la = left.sum((1, 2)) * px_area_cm2
    thoracic = (ra >= 5.0) & (la >= 5.0)
    chest_extent = float(thoracic.sum() * sz)
    covers = chest_extent >= MIN_CHEST_EXTENT_MM

    med = np.zeros_like(lung)
    yv = np.full(nz, np.nan)
    yfront = np.full(nz, np.nan)
    for z in np.nonzero(thoracic)[0]:
        r, lf = right[z], left[z]
        rows = np.nonzero(r.any(1) & lf.any(1))[0]
        for y in rows:
            xr = np.nonzero(r[y])[0].max()
            xl = np.nonzero(lf[y])[0].min()
            if xl - xr > 1:
                med[z, y, xr + 1:xl] = True
    # the heart bulges in front of the left lung's medial edge (rows with only one lung): the lungs'
    # convex hull holds it, the chest wall outside the hull is left out
    # (only near the row-filled part: at the apices and the lung bases the hull also spans the neck
    # muscles and the liver dome)
    near = ndimage.binary_dilation(med, structure=_INPLANE, iterations=max(1, int(round(HULL_REACH_MM / sx))))
    # only what touches the row-filled part: the top of the liver dome is an island inside the right
    # lung's hull, walled off from the mediastinum by lung
    for z in np.nonzero(thoracic & med.any((1, 2)))[0]:
        add = _convex_fill(lung[z]) & near[z] & body[z] & ~lung[z] & ~airway[z]
        parts, _ = ndimage.label(add | med[z])
        med[z] |= np.isin(parts, np.unique(parts[med[z]])) & (parts > 0)
    med &= body & ~lung & ~airway
    med = ndimage.binary_closing(med, structure=np.ones((3, 3, 3), bool)) & body & ~lung
    # at the lung bases the lungs are crescents around the liver dome, spleen and stomach, and the row
    # fill spans them; below the largest lung section the mediastinum (the heart narrowing to the
    # diaphragm) may widen by at most ~45 degrees from the slice above it, so what the crescents
    # newly enclose is left out
    med = _grown_down_from(med, int(np.argmax(ra + la)), max(1, int(round(sz / sx))))
    med = ndimage.binary_opening(med, structure=_INPLANE)
    # the vertebral body: the most posterior bone component crossing the midline band in the back
    # half of the slice (enhanced blood — left atrium, aorta — is bright too, but lies in front of
    # it and is separated from it by fat or the oesophagus); its front is where the spine starts
    early = a[med & (a > -50) & (a < 700)]
    enhanced = bool(early.size and np.median(early) > CONTRAST_MEDIAN_HU)  # a contrast CT: blood is bright
    body_front = np.full(nz, np.nan)
    band = np.zeros((nz, nx), bool)
    for z in range(nz):
        band[z] = np.abs(np.arange(nx) - mid_x[z]) * sx < 12.0
        fy = np.nonzero(body[z][:, band[z]].any(1))[0]
        if len(fy):
            body_front[z] = fy.min()
    # on a contrast CT, bright means bone only where a component holds cortical density
    hard = bone
    if enhanced:
        blab3, nb3 = ndimage.label(bone, structure=_INPLANE)
        dense = np.zeros(nb3 + 1, bool)
        dense[1:] = np.atleast_1d(ndimage.maximum(a, blab3, np.arange(1, nb3 + 1))) >= CORTICAL_HU
        hard = dense[blab3]
    for z in np.nonzero(med.any((1, 2)))[0]:
        ys = np.nonzero(med[z].any(1))[0]
        yfront[z] = ys.min()
        blab, nb = ndimage.label(hard[z])
        if not nb:
            continue
        half = (ys.min() + ys.max()) / 2.0
        # in-band (y_min, y_max) of each bone component that reaches the back half
        spans = {}
        for i, sl in enumerate(ndimage.find_objects(blab), start=1):
            comp = blab[sl] == i
            rows = np.nonzero((comp & band[z][sl[1]][None, :]).any(1))[0] + sl[0].start
            if len(rows) and rows.max() > half:
                spans[i] = (rows.min(), rows.max())
        if not spans:
            continue
        # the most posterior one is the arch (or the whole vertebra); the vertebral body is the
        # component just in front of it across the spinal canal, if the canal separates them
        arch = max(spans, key=lambda i: spans[i][1])
        front = spans[arch][0]
        gap = CANAL_MAX_MM / sy
        body_c = [i for i, (lo, hi) in spans.items() if i != arch and hi < front and hi >= front - gap]
        if body_c:
            front = spans[max(body_c, key=lambda i: spans[i][1])][0]
        yv[z] = max(front, half)
    # slices without a detected spine borrow the nearest slice's
    good = np.nonzero(np.isfinite(yv))[0]
    if len(good):
        for z in np.nonzero(np.isnan(yv) & np.isfinite(yfront))[0]:
            near_z = good[np.argmin(np.abs(good - z))]
            if abs(near_z - z) * sz <= 30.0:  # a neighbour's spine, not one from far away (crops)
                yv[z] = yv[near_z]
    # remove the spine (at and behind the vertebral bodies' front) and the sternum (bone just under
    # the front skin); bright voxels elsewhere are enhanced blood on a contrast CT and stay
    yy = np.arange(ny)[None, :, None].astype(float)
    with np.errstate(invalid="ignore"):
        spine_or_sternum = hard & ((yy >= yv[:, None, None]) | (yy <= body_front[:, None, None] + STERNUM_DEPTH_MM / sy))
    med &= ~ndimage.binary_dilation(spine_or_sternum, structure=_INPLANE)
    with np.errstate(invalid="ignore"):
        med &= ~(yy > yv[:, None, None] + BEHIND_SPINE_MM / sy)  # vertebral body, canal, back muscles
    for z in np.nonzero(med.any((1, 2)))[0]:
        yfront[z] = np.nonzero(med[z].any(1))[0].min()

    # the thoracic inlet above the apices: the top mediastinal slice's outline, carried upward
    zs = np.nonzero(med.any((1, 2)))[0]
    if len(zs):
        top = zs.max()
        for k in range(1, int(round(INLET_MARGIN_MM / sz)) + 1):
            if top + k >= nz:
                break
            med[top + k] = med[top] & body[top + k] & (a[top + k] > -400) & (a[top + k] < 200)
            yfront[top + k], yv[top + k] = yfront[top], yv[top]

    labels = np.full(a.shape, OUTSIDE, np.uint8)
    labels[body] = BODY
    labels[bone] = BONE
    labels[lung] = LUNG
    labels[airway] = AIRWAY
    front = yfront[:, None, None]
    back = yv[:, None, None]
    with np.errstate(invalid="ignore"):
        post = med & (yy > back + 10.0 / sy)
        ant = med & ~post & (yy < front + ANTERIOR_FRACTION * (back - front))
    labels[med] = MIDDLE
    labels[ant] = ANTERIOR
    labels[post] = POSTERIOR

    rad = max(1, int(round(ENVELOPE_MARGIN_MM / sx)))
    env = ndimage.binary_dilation(med, structure=_INPLANE, iterations=rad)
    env = ndimage.binary_dilation(env, structure=np.ones((3, 1, 1), bool))  # one coarse slice up and down
    env &= body

    vox_ml = g.voxel_volume_mm3 / 1000.0
    lung_ml = float(lung.sum() * vox_ml)
    if lung_ml < 50:
        warnings.append("no lungs found: this does not look like a chest CT (abdomen, head and neck, or an "
                        "extremity?); a model trained on chest CT may give meaningless results")
    elif not covers:
        warnings.append(f"both lungs are in view over only {chest_extent:.0f} mm (< {MIN_CHEST_EXTENT_MM:.0f} mm): "
                        "too little of the chest to locate the mediastinum (a thin slab, or abdomen or neck only)")
    elif chest_extent < SLAB_EXTENT_MM:
        warnings.append(f"the CT shows only {chest_extent:.0f} mm of the chest (a slab): a tumor above or below "
                        "it is not in view")
    if cropped:
        warnings.append("the field of view is cut inside the body (a crop): body outline and compartments "
                        "are approximate")
    # contrast-enhanced blood (150–700 HU) fills a good part of a contrast CT's middle mediastinum
    mid_hu = a[med & ~post & ~ant]
    contrast_share = float(((mid_hu > 150) & (mid_hu < 700)).mean()) if mid_hu.size else 0.0
    # blood is ≈ 40 HU without contrast and ≥ 150 HU with it; the median of the middle mediastinum's
    # non-fat voxels tells the two apart (bone remnants and calcifications barely move a median)
    soft = mid_hu[(mid_hu > -50) & (mid_hu < 700)] if mid_hu.size else mid_hu
    soft_median = float(np.median(soft)) if soft.size else 0.0
    stats = {"contrast": soft_median > CONTRAST_MEDIAN_HU, "middle_soft_median_hu": round(soft_median, 1),
             "enhanced_share_middle": round(contrast_share, 3),
             "grid_mm": [round(s, 2) for s in g.spacing_xyz], "field_of_view_cropped": cropped,
             "body_ml": round(float(body.sum() * vox_ml), 1), "lung_ml": round(lung_ml, 1),
             "airway_ml": round(float(airway.sum() * vox_ml), 1), "bone_ml": round(float(bone.sum() * vox_ml), 1),
             "mediastinum_ml": round(float(med.sum() * vox_ml), 1),
             "anterior_mediastinum_ml": round(float(ant.sum() * vox_ml), 1)}
    return ChestAnatomy(labels=g.with_array(labels, units="label"), envelope=g.with_array(env.astype(np.uint8),
                        units="label"), covers_mediastinum=covers, chest_extent_mm=chest_extent,
                        warnings=warnings, stats=stats, thoracic_slices=thoracic, coarse_hu=a)


def lesion_compartment(anatomy: ChestAnatomy, lps: np.ndarray) -> tuple[str, float]:
    """The compartment most of a lesion's voxels (LPS points) fall in, and the share of its voxels
    inside the mediastinal envelope."""
    codes = anatomy.codes_at(lps)
    if not len(codes):
        return "other", 0.0
    inside = float(anatomy.in_envelope(lps).mean())
    return _compartment_of_counts(np.bincount(codes, minlength=8)), inside


def _compartment_of_counts(counts: np.ndarray) -> str:
    """The compartment rule on a lesion's voxel count per anatomy code."""
    n = counts.sum()
    med = counts[[ANTERIOR, MIDDLE, POSTERIOR]]
    if med.sum() >= 0.25 * n:
        return COMPARTMENT_SITE[[ANTERIOR, MIDDLE, POSTERIOR][int(np.argmax(med))]]
    if counts[LUNG] >= 0.5 * n:
        return "lung"
    return "other"


def label_compartments(anatomy: ChestAnatomy, ct: Volume, labels: np.ndarray, n: int,
                       box: tuple[slice, ...] | None = None, slab: int = 16) -> dict[str, np.ndarray]:
    """:func:`lesion_compartment` of every component of ``labels`` (ids 1..n, on ``ct``'s grid) at
    once, plus each one's voxel count and LPS centroid (index 0 unused).

    Why: a noisy probability map has thousands of small components, most outside the mediastinum
    (a randomly initialised published network: 7,829 on a real chest CT); looking each one up on
    its own took seconds, before the outside ones were dropped anyway. Here every labelled voxel is
    looked up once, slab by slab (``slab`` z-planes of ``box`` at a time, so the point arrays stay
    small), and counted per label."""
    box = box or tuple(slice(0, s) for s in labels.shape)
    voxels = np.zeros(n + 1)
    inside = np.zeros(n + 1)
    centre = np.zeros((n + 1, 3))
    codes = np.zeros((n + 1, 8))
    for z0 in range(box[0].start, box[0].stop, slab):
        sl = (slice(z0, min(z0 + slab, box[0].stop)), box[1], box[2])
        part = labels[sl]
        nz = np.nonzero(part)
        if not len(nz[0]):
            continue
        lab = part[nz]
        idx = np.stack(nz, 1) + np.array([b.start for b in sl])
        lps = ct.index_to_lps(idx[:, ::-1].astype(float))
        voxels += np.bincount(lab, minlength=n + 1)
        inside += np.bincount(lab, weights=anatomy.in_envelope(lps).astype(float), minlength=n + 1)
        for k in range(3):
            centre[:, k] += np.bincount(lab, weights=lps[:, k], minlength=n + 1)
        codes += np.bincount(lab * 8 + anatomy.codes_at(lps).astype(np.int64), minlength=8 * (n + 1)).reshape(-1, 8)
    some = np.maximum(voxels, 1)
    comp = np.array(["other"] + [_compartment_of_counts(codes[i]) if voxels[i] else "other" for i in range(1, n + 1)],
                    dtype=object)
    return {"voxels": voxels, "inside": inside / some, "centroid_lps": centre / some[:, None], "compartment": comp}
