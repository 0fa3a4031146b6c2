"""One canonical voxel order for every CT, and the exact way back.

Why: a convolutional network sees voxels, not millimetres. The same chest stored as LPS by a
DICOM converter, as RAS by a NIfTI tool, or with rows and columns swapped gives the network a
mirrored or transposed picture, and a different answer. Every model of this project therefore
works in one canonical order — index axes along +L, +P, +S (:data:`CANONICAL`, direction ≈
identity in LPS, the usual axial DICOM order: sternum at low row index, patient's left at high
column index, head at high slice index) — and every result is mapped back onto the user's grid.

The reorientation is a permutation and flips of the voxel array (no interpolation), so it is
exact and reversible: ``orient.restore(orient.apply_array(a))`` is ``a`` bit for bit. An oblique
direction (gantry tilt) keeps its small residual rotation in the canonical direction matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .volume import Volume

CANONICAL = "LPS"  # index axes i, j, k along +L, +P, +S (ITK's direction ≈ identity)


@dataclass(frozen=True)
class Reorientation:
    """How a volume's array maps to canonical order.

    ``axes[p]`` is the input's numpy axis that becomes canonical numpy axis ``p``; ``flip[p]``
    says whether that axis is reversed afterwards (both in numpy ``z, y, x`` order).
    """

    axes: tuple[int, int, int]
    flip: tuple[bool, bool, bool]
    input_shape: tuple[int, int, int]

    @property
    def is_identity(self) -> bool:
        return self.axes == (0, 1, 2) and not any(self.flip)

    def apply_array(self, array: np.ndarray) -> np.ndarray:
        """Input storage order → canonical order (a view where possible)."""
        if tuple(array.shape) != self.input_shape:
            raise ValueError(f"array shape {array.shape} is not the reoriented volume's {self.input_shape}")
        out = np.transpose(array, self.axes)
        for ax, f in enumerate(self.flip):
            if f:
                out = np.flip(out, axis=ax)
        return out

    def restore(self, array: np.ndarray) -> np.ndarray:
        """Canonical order → the input's storage order (exact inverse of :meth:`apply_array`)."""
        out = array
        for ax, f in enumerate(self.flip):
            if f:
                out = np.flip(out, axis=ax)
        inverse = tuple(int(i) for i in np.argsort(self.axes))
        return np.ascontiguousarray(np.transpose(out, inverse))

    def describe(self) -> str:
        return "identity" if self.is_identity else f"axes {self.axes}, flips {self.flip}"


def _axis_assignment(direction: np.ndarray) -> tuple[list[int], list[float]]:
    """For each index axis a (i, j, k), the physical axis (x=L, y=P, z=S) it runs along and the sign.

    Chosen as the assignment that maximises the total |cosine| (3! candidates), so a 45° ambiguity
    still yields a valid permutation."""
    from itertools import permutations

    a = np.abs(direction)
    best = max(permutations(range(3)), key=lambda perm: sum(a[perm[i], i] for i in range(3)))
    phys = list(best)
    signs = [float(np.sign(direction[phys[i], i]) or 1.0) for i in range(3)]
    return phys, signs


def canonical(vol: Volume) -> tuple[Volume, Reorientation]:
    """``vol`` in canonical order (same physical image) and the mapping back."""
    d = np.asarray(vol.direction, float)
    phys, signs = _axis_assignment(d)  # index axis a (0=i/x, 1=j/y, 2=k/z) → physical axis phys[a]
    # numpy axis of index axis a is 2 - a; canonical numpy axis of physical axis p is 2 - p
    axes = [0, 0, 0]
    flip = [False, False, False]
    for a in range(3):
        p = phys[a]
        axes[2 - p] = 2 - a
        flip[2 - p] = signs[a] < 0
    orient = Reorientation(tuple(axes), tuple(flip), vol.shape)  # type: ignore[arg-type]
    if orient.is_identity:
        return vol, orient
    n_ijk = np.asarray(vol.shape[::-1])
    first = np.array([0.0 if signs[a] > 0 else n_ijk[a] - 1.0 for a in range(3)])
    origin = vol.index_to_lps(first)
    new_dir = np.zeros((3, 3))
    new_sp = [0.0, 0.0, 0.0]
    for a in range(3):
        p = phys[a]
        new_dir[:, p] = d[:, a] * signs[a]
        new_sp[p] = vol.spacing_xyz[a]
    arr = np.ascontiguousarray(orient.apply_array(vol.array))
    out = Volume(arr, spacing_xyz=tuple(new_sp), origin_xyz=tuple(origin), direction=new_dir, units=vol.units,
                 metadata={**vol.metadata, "reoriented_from": orient.describe()})
    return out, orient


def restore_volume(canon_result: Volume, original: Volume, orient: Reorientation, units: str | None = None) -> Volume:
    """A result computed on the canonical grid, back on ``original``'s grid (exact)."""
    if orient.is_identity:
        return original.with_array(canon_result.array, units=units or canon_result.units)
    return original.with_array(orient.restore(canon_result.array), units=units or canon_result.units)
