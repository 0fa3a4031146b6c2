"""Optional CT preprocessing of the fusion study: fourth-order PDE denoising and reconstruction
to cubic (isotropic) voxels, applied before the window and the ROI.

Denoising — You & Kaveh (2000), "Fourth-order partial differential equations for noise
removal", IEEE TIP 9(10): the image evolves by

    ∂u/∂t = −∇²[ c(|∇²u|) ∇²u ],   c(s) = 1 / (1 + (s/k)²)

which smooths noise while keeping piecewise-planar regions (it does not create the staircase
of second-order Perona–Malik diffusion). Explicit scheme on the unit pixel grid with the
5-point Laplacian and replicated (Neumann) borders, step ``dt`` ≤ 1/32 for stability (the
biharmonic's largest eigenvalue is 64). Both Laplacians are in divergence form, so the mean
grey value is conserved. ``k`` is in HU: edges with a Laplacian much larger than ``k`` are
kept. The study gives no parameters; ours are stated in the model card.

Isotropic reconstruction: the slab of slices that holds the tumor (±1 slice) is resampled
along z (and y when the in-plane spacings differ) to cubic voxels of the in-plane x spacing,
linear for the CT and nearest-label for the mask. Only that slab is resampled, so the cost
stays small on thin in-plane grids; :func:`map_back` returns a ROI's slice and box on the
original grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import InputError

DEFAULT_DENOISE = {"method": "fourth_order_pde", "iterations": 20, "dt": 0.03, "k_hu": 20.0}


def _laplacian(u: np.ndarray) -> np.ndarray:
    p = np.pad(u, 1, mode="edge")
    return p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4.0 * u


def fourth_order_pde(img: np.ndarray, iterations: int = 20, dt: float = 0.03, k: float = 20.0) -> np.ndarray:
    """You–Kaveh fourth-order PDE denoising of a 2D image (float32 out)."""
    u = np.asarray(img, dtype=np.float64)
    if u.ndim != 2:
        raise InputError(f"fourth-order PDE denoising works on 2D slices, got shape {u.shape}")
    if not 0 < dt <= 1 / 32 + 1e-12:
        raise InputError(f"denoising step dt must be in (0, 1/32] for a stable explicit scheme, got {dt}")
    if iterations < 0 or k <= 0:
        raise InputError(f"denoising needs iterations ≥ 0 and k > 0, got {iterations}, {k}")
    if not np.all(np.isfinite(u)):
        raise InputError("the CT holds NaN or infinite values")
    for _ in range(int(iterations)):
        lap = _laplacian(u)
        g = lap / (1.0 + (lap / k) ** 2)
        u = u - dt * _laplacian(g)
    return u.astype(np.float32)


def check_denoise(spec: Any) -> dict[str, Any] | None:
    if spec in (None, False):
        return None
    d = {**DEFAULT_DENOISE, **(spec if isinstance(spec, dict) else {})}
    if d.get("method") != "fourth_order_pde":
        raise InputError(f"unknown denoising method {d.get('method')!r} (known: fourth_order_pde)")
    return {"method": "fourth_order_pde", "iterations": int(d["iterations"]), "dt": float(d["dt"]),
            "k_hu": float(d["k_hu"])}


def denoise_slices(ct: Any, slices: list[int], spec: dict[str, Any]) -> Any:
    """A copy of the CT Volume with the given axial slices denoised (the others untouched)."""
    arr = np.asarray(ct.array, dtype=np.float32).copy()
    for k in sorted(set(int(np.clip(s, 0, arr.shape[0] - 1)) for s in slices)):
        arr[k] = fourth_order_pde(arr[k], spec["iterations"], spec["dt"], spec["k_hu"])
    return ct.with_array(arr)


@dataclass
class IsoMap:
    z0: int  # first original slice of the slab
    fz: float  # new slices per original slice
    fy: float  # new rows per original row

    def slice_to_original(self, k_new: int) -> int:
        return int(round(self.z0 + k_new / self.fz))

    def box_to_original(self, box: tuple[int, int, int, int], ny: int) -> tuple[int, int, int, int]:
        y0, y1, x0, x1 = box
        return (int(np.floor(y0 / self.fy)), min(ny, int(np.ceil(y1 / self.fy))), x0, x1)


def isotropic_slab(ct: Any, mask: Any) -> tuple[Any, Any, IsoMap]:
    """The tumor's slab (±1 slice) resampled to cubic voxels of the in-plane x spacing."""
    m = np.asarray(mask.array) > 0
    zs = np.flatnonzero(m.reshape(m.shape[0], -1).any(1))
    if zs.size == 0:
        raise InputError("the tumor mask is empty")
    z0, z1 = max(0, int(zs[0]) - 1), min(m.shape[0], int(zs[-1]) + 2)
    sx, sy, sz = (float(v) for v in ct.spacing_xyz)
    fz, fy = sz / sx, sy / sx
    ct_slab = np.asarray(ct.array[z0:z1], dtype=np.float32)
    m_slab = m[z0:z1].astype(np.float32)
    nz = max(1, int(round(ct_slab.shape[0] * fz)))
    ny = max(1, int(round(ct_slab.shape[1] * fy)))
    zoom = (nz / ct_slab.shape[0], ny / ct_slab.shape[1], 1.0)
    ct_iso = ndimage.zoom(ct_slab, zoom, order=1, mode="nearest", grid_mode=True)
    m_iso = (ndimage.zoom(m_slab, zoom, order=1, mode="nearest", grid_mode=True) >= 0.5).astype(np.uint8)
    if not m_iso.any():
        m_iso = (ndimage.zoom(m_slab, zoom, order=0, mode="nearest", grid_mode=True) > 0).astype(np.uint8)
    from ..volume import Volume

    origin = ct.index_to_lps(np.array([0.0, 0.0, float(z0)]))
    iso = Volume(ct_iso, spacing_xyz=(sx, sx, sx), origin_xyz=tuple(float(v) for v in origin),
                 direction=ct.direction, units=ct.units, metadata=dict(ct.metadata))
    return iso, iso.with_array(m_iso, units="label"), IsoMap(z0, nz / ct_slab.shape[0], ny / ct_slab.shape[1])
