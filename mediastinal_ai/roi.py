"""2D tumor ROI on the axial slice of largest tumor area — the input of the CNN risk model and
of the fusion model's image branch (as in the published studies).

Pure numpy/scipy: the ROI is a square box around the tumor's bounding box on that slice plus
a margin in millimetres, resampled to ``size``×``size``. :meth:`RoiSample.roi_to_slice` maps a
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


def roi_box(mask_slice: np.ndarray, spacing_yx: tuple[float, float], margin_mm: float) -> tuple[int, int, int, int]:
    """Square (in mm) box around the tumor on one slice, clipped to the image."""
    ys, xs = np.nonzero(mask_slice)
    cy, cx = (ys.min() + ys.max() + 1) / 2, (xs.min() + xs.max() + 1) / 2
    half_mm = max((ys.max() - ys.min() + 1) * spacing_yx[0], (xs.max() - xs.min() + 1) * spacing_yx[1]) / 2 + margin_mm
    hy, hx = half_mm / spacing_yx[0], half_mm / spacing_yx[1]
    ny, nx = mask_slice.shape
    y0, y1 = max(0, int(np.floor(cy - hy))), min(ny, int(np.ceil(cy + hy)))
    x0, x1 = max(0, int(np.floor(cx - hx))), min(nx, int(np.ceil(cx + hx)))
    return y0, y1, x0, x1


def extract_roi(ct: Volume, mask: Volume, *, slice_index: int | None = None, margin_mm: float = 10.0,
                size: int = 224, window: tuple[float, float] | None = None, normalize: str = "zscore",
                offsets: tuple[int, ...] = (0,)) -> list[RoiSample]:
    """ROI images of the largest-area slice (and ``offsets`` from it, e.g. (0, 1) for training).

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
    box = roi_box(m[k0], spacing_yx, margin_mm)
    y0, y1, x0, x1 = box
    out = []
    for off in offsets:
        k = int(np.clip(k0 + off, 0, ct.shape[0] - 1))
        img = ct.array[k, y0:y1, x0:x1].astype(np.float32)
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
        out.append(RoiSample(img.astype(np.float32), k, box, (ct.shape[1], ct.shape[2]), size))
    return out
