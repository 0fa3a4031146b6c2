"""Probability → lesions: threshold, 3D connected components, drop components under 10 voxels
(as published), and the lesion table a clinician reads."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from ..volume import Volume

MIN_LESION_VOXELS = 10


LAZY_MIN_BYTES = 1 << 22  # below this numpy's own zeros are as good (and it madvises no huge pages)


def lazy_zeros(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A zero-filled, writable array whose memory is taken page by page (4 KB) as it is written.

    Why: a whole-CT map or label volume of which a few percent is ever non-zero (issue 17: peak
    RSS). ``np.zeros`` is lazy too, but numpy advises the kernel to back arrays of 4 MB and more
    with 2 MB huge pages, so one write per two 512×512 float32 slices made the whole map
    resident. A private anonymous memory map is zero-filled and not so advised."""
    import mmap

    dt = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    if nbytes < LAZY_MIN_BYTES or not hasattr(mmap, "MAP_PRIVATE"):  # Windows: numpy's zeros (no huge pages)
        return np.zeros(shape, dt)
    # private: reading a page never written maps the kernel's zero page (a shared map would
    # allocate it), so thresholding or quantising the whole map stays cheap
    flags = mmap.MAP_PRIVATE | getattr(mmap, "MAP_ANONYMOUS", 0)
    return np.frombuffer(mmap.mmap(-1, nbytes, flags=flags), dtype=dt).reshape(shape)


def foreground_box(binary: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """The bounding box of the true voxels of a 3D array, grown by ``margin`` (clipped); ``None``
    when there are none. Two passes over the volume: everything after it works on the box, which
    on a whole-chest CT is a small part of the grid (issue 17)."""
    yx = binary.any(axis=0)
    if not yx.any():
        return None
    z = binary.any(axis=(1, 2))
    out = []
    for proj, n in ((z, binary.shape[0]), (yx.any(axis=1), binary.shape[1]), (yx.any(axis=0), binary.shape[2])):
        idx = np.flatnonzero(proj)
        out.append(slice(max(0, int(idx[0]) - margin), min(n, int(idx[-1]) + 1 + margin)))
    return tuple(out)


def components(binary: np.ndarray, min_voxels: int = MIN_LESION_VOXELS,
               box: tuple[slice, ...] | None = None) -> tuple[np.ndarray, int]:
    """26-connected components, small ones removed; labels renumbered 1..n by size (largest first).

    Labelled inside the bounding box of the true voxels: the same labels as labelling the whole
    volume (the box holds every true voxel in the same raster order), without whole-volume
    passes of int32 labels (seconds and 300 MB each on a 512×512×300 CT)."""
    out = lazy_zeros(binary.shape, np.int32)
    # ``box``: any box holding every true voxel (a caller that has the foreground box passes it)
    if box is None:
        box = foreground_box(binary) if binary.ndim == 3 else tuple(slice(None) for _ in binary.shape)
    if box is None:
        return out, 0
    lab, n = ndimage.label(binary[box], structure=np.ones((3,) * binary.ndim, bool))
    if n == 0:
        return out, 0
    sizes = np.bincount(lab.ravel())[1:]
    keep = [i + 1 for i in np.argsort(-sizes, kind="stable") if sizes[i] >= min_voxels]
    remap = np.zeros(n + 1, np.int32)  # one pass over the box, not one per component
    remap[keep] = np.arange(1, len(keep) + 1, dtype=np.int32)
    lab = remap[lab]
    np.copyto(out[box], lab, where=lab > 0)  # only the labelled voxels: the rest of out stays untouched zero pages
    return out, len(keep)


def max_diameter_mm(coords_mm: np.ndarray) -> float:
    """Largest distance between two voxel centres of a lesion (on its convex hull)."""
    if len(coords_mm) < 2:
        return 0.0
    pts = coords_mm
    if len(pts) > 4:
        try:
            from scipy.spatial import ConvexHull

            pts = pts[ConvexHull(pts).vertices]
        except Exception:  # noqa: BLE001 - flat/degenerate lesions: fall back to all points
            pts = pts[:: max(1, len(pts) // 2000)]
    d = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1))
    return float(d.max())


def component_box(labels: np.ndarray, lesion_id: int, boxes: list, margin: int = 0) -> tuple[slice, ...]:
    """The bounding box of one component (from ``ndimage.find_objects``), grown by ``margin``."""
    return tuple(slice(max(0, b.start - margin), min(n, b.stop + margin))
                 for b, n in zip(boxes[lesion_id - 1], labels.shape))


def label_boxes(labels: np.ndarray, box: tuple[slice, ...] | None = None) -> list:
    """``ndimage.find_objects(labels)``, looking only inside ``box`` (which must hold every
    labelled voxel): the same slices, in whole-volume coordinates."""
    if box is None:
        return ndimage.find_objects(labels)
    start = [b.start for b in box]
    return [None if sl is None else tuple(slice(s.start + o, s.stop + o) for s, o in zip(sl, start))
            for sl in ndimage.find_objects(labels[box])]


def lesion_table(labels: np.ndarray, ct: Volume, probability: np.ndarray | None = None,
                 boxes: list | None = None) -> list[dict[str, Any]]:
    """One row per component; each is measured inside its own bounding box (a whole-volume scan
    per lesion took minutes on a 512×512×300 CT with many components). ``boxes``: the
    components' boxes when the caller has them (:func:`label_boxes`)."""
    rows = []
    for i, sl in enumerate(ndimage.find_objects(labels) if boxes is None else boxes, start=1):
        if sl is None:
            continue
        sub = labels[sl] == i
        idx = np.argwhere(sub) + np.array([b.start for b in sl])  # (k, j, i)
        mm = ct.index_to_lps(idx[:, ::-1].astype(float))
        rows.append({
            "lesion_id": i,
            "volume_ml": round(len(idx) * ct.voxel_volume_mm3 / 1000.0, 3),
            "max_diameter_mm": round(max_diameter_mm(mm), 1),
            "centroid_lps_mm": [round(float(v), 1) for v in mm.mean(0)],
            "mean_hu": round(float(ct.array[sl][sub].mean()), 1),
            "max_probability": round(float(probability[sl][sub].max()), 4) if probability is not None else None,
            "voxels": int(len(idx)),
        })
    return rows


def restrict_to_box(prob: np.ndarray, ct: Volume, roi_lps: tuple[float, ...] | None) -> np.ndarray:
    """Zero the probability outside an LPS box (x0, y0, z0, x1, y1, z1), to steer to one lesion."""
    if roi_lps is None:
        return prob
    lo, hi = np.minimum(roi_lps[:3], roi_lps[3:]), np.maximum(roi_lps[:3], roi_lps[3:])
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    ijk = ct.lps_to_index(corners)
    i0 = np.clip(np.floor(ijk.min(0)).astype(int), 0, np.array(ct.shape[::-1]) - 1)
    i1 = np.clip(np.ceil(ijk.max(0)).astype(int), 0, np.array(ct.shape[::-1]) - 1)
    out = np.zeros_like(prob)
    sl = (slice(i0[2], i1[2] + 1), slice(i0[1], i1[1] + 1), slice(i0[0], i1[0] + 1))
    out[sl] = prob[sl]
    return out
