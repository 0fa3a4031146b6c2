"""2D tumor ROI on the axial slice of largest tumor area — the input of the CNN risk model and
of the fusion model's image branch (as in the published studies).

Pure numpy/scipy: the ROI is either the tumor's **rectangular** extent on that slice (``box="rect"``,
as the radiomics/CNN study describes it) or a square (in mm) box around it (``box="square"``, the
older default the shipped demo models use), plus an optional margin in millimetres, resampled to
``size``×``size``. Neighbouring training slices are taken either by index (``offsets``) or at a
physical distance (``offsets_mm``, e.g. +1 mm as published), interpolated linearly between the
two nearest slices. :meth:`RoiSample.roi_to_slice` maps a
map computed on the ROI (a Grad-CAM heat map) back onto the CT slice grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .errors import InputError
from .volume import Volume


@dataclass
class RoiSample:
    image: np.ndarray  # (size, size) float32
    slice_index: int  # axial k of the CT
    box: tuple[int, int, int, int]  # y0, y1, x0, x1 (half-open) on that slice, in voxels
    slice_shape: tuple[int, int]  # (ny, nx) of the CT slice
    size: int

    @property
    def scale(self) -> tuple[float, float]:
        """ROI pixels per CT voxel along (y, x)."""
        y0, y1, x0, x1 = self.box
        return self.size / (y1 - y0), self.size / (x1 - x0)

    def roi_to_slice(self, map2d: np.ndarray) -> np.ndarray:
        """A (size, size) map → the CT slice grid (ny, nx), zero outside the box."""
        map2d = np.asarray(map2d, dtype=np.float32)
        if map2d.shape != (self.size, self.size):
            raise ValueError(f"map shape {map2d.shape} is not the ROI's ({self.size}, {self.size})")
        y0, y1, x0, x1 = self.box
        out = np.zeros(self.slice_shape, np.float32)
        out[y0:y1, x0:x1] = _resize(map2d, (y1 - y0, x1 - x0))
        return out


def _resize(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize by coordinate mapping (pixel centres aligned)."""
    ny, nx = shape
    yy = (np.arange(ny) + 0.5) * img.shape[0] / ny - 0.5
    xx = (np.arange(nx) + 0.5) * img.shape[1] / nx - 0.5
    Y, X = np.meshgrid(yy, xx, indexing="ij")
    return ndimage.map_coordinates(img, [Y, X], order=1, mode="nearest").astype(np.float32)


def _check_pair(ct: Volume, mask: Volume) -> np.ndarray:
    if ct.shape != mask.shape:
        raise InputError(f"mask shape {mask.shape} does not match the CT {ct.shape}")
    m = np.asarray(mask.array) > 0
    if not m.any():
        raise InputError("the tumor mask is empty")
    return m


def largest_area_slice(mask: Volume) -> int:
    m = np.asarray(mask.array) > 0
    if not m.any():
        raise InputError("the tumor mask is empty")
    return int(np.argmax(m.reshape(m.shape[0], -1).sum(1)))


ROI_BOXES = ("square", "rect")


def roi_box(mask_slice: np.ndarray, spacing_yx: tuple[float, float], margin_mm: float,
            box: str = "square") -> tuple[int, int, int, int]:
    """Box around the tumor on one slice, clipped to the image: ``"square"`` (in mm, side = the
    larger extent) or ``"rect"`` (the tumor's bounding rectangle); both grown by ``margin_mm``."""
    if box not in ROI_BOXES:
        raise ValueError(f"box must be one of {ROI_BOXES}, not {box!r}")
    ys, xs = np.nonzero(mask_slice)
    cy, cx = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
    ext_y, ext_x = (ys.max() - ys.min() + 1) * spacing_yx[0], (xs.max() - xs.min() + 1) * spacing_yx[1]
    if box == "square":
        ext_y = ext_x = max(ext_y, ext_x)
    hy, hx = (ext_y / 2 + margin_mm) / spacing_yx[0], (ext_x / 2 + margin_mm) / spacing_yx[1]
    ny, nx = mask_slice.shape
    y0, y1 = max(0, int(np.floor(cy - hy))), min(ny, int(np.ceil(cy + hy)))
    x0, x1 = max(0, int(np.floor(cx - hx))), min(nx, int(np.ceil(cx + hx)))
    return y0, y1, x0, x1


def extract_roi(ct: Volume, mask: Volume, *, slice_index: int | None = None, margin_mm: float = 10.0,
                size: int = 224, window: tuple[float, float] | None = None, normalize: str = "zscore",
                offsets: tuple[int, ...] = (0,), offsets_mm: tuple[float, ...] | None = None,
                box: str = "square") -> list[RoiSample]:
    """ROI images of the largest-area slice (and ``offsets`` from it, e.g. (0, 1) for training).

    ``offsets_mm`` (replaces ``offsets``): distances along the slice axis in mm, e.g. (0, 1) for
    the published "+1 mm" slice; the image there is interpolated linearly between the two
    nearest slices (on 5 mm CT, +1 mm is 80% of the central slice + 20% of the next), clamped at
    the volume's ends. ``RoiSample.slice_index`` is then the nearest slice.

    ``window=(width, level)`` clips HU first; ``normalize`` is ``"zscore"`` (within the ROI) or
    ``"window01"`` (window mapped to [0, 1]; needs ``window``). The box is computed on the
    central slice and reused for the offset slices, so both show the same region.
    """
    if normalize not in ("zscore", "window01"):
        raise ValueError(f"normalize must be 'zscore' or 'window01', not {normalize!r}")
    if normalize == "window01" and window is None:
        raise ValueError("normalize='window01' needs a window=(width, level)")
    m = _check_pair(ct, mask)
    k0 = largest_area_slice(mask) if slice_index is None else int(slice_index)
    if not 0 <= k0 < ct.shape[0] or not m[k0].any():
        raise InputError(f"slice {k0} holds no tumor voxel")
    spacing_yx = (ct.spacing_xyz[1], ct.spacing_xyz[0])
    bx = roi_box(m[k0], spacing_yx, margin_mm, box)
    y0, y1, x0, x1 = bx
    out = []
    dz = float(ct.spacing_xyz[2])
    positions = [float(k0 + o) for o in offsets] if offsets_mm is None else [k0 + float(o) / dz for o in offsets_mm]
    for pos in positions:
        pos = float(np.clip(pos, 0, ct.shape[0] - 1))
        ka = int(np.floor(pos))
        kb = min(ka + 1, ct.shape[0] - 1)
        f = pos - ka
        img = ct.array[ka, y0:y1, x0:x1].astype(np.float32)
        if f > 1e-9:
            img = (1.0 - f) * img + f * ct.array[kb, y0:y1, x0:x1].astype(np.float32)
        k = int(round(pos))
        if not np.all(np.isfinite(img)):
            raise InputError("the CT holds NaN or infinite values inside the ROI")
        if window is not None:
            w, lvl = window
            img = np.clip(img, lvl - w / 2, lvl + w / 2)
        img = _resize(img, (size, size))
        if normalize == "zscore":
            img = (img - img.mean()) / (img.std() + 1e-6)
        else:
            w, lvl = window  # type: ignore[misc]
            img = (img - (lvl - w / 2)) / w
        out.append(RoiSample(img.astype(np.float32), k, bx, (ct.shape[1], ct.shape[2]), size))
    return out
