"""The one boundary type that carries images through the library.

Conventions (the source of most medical-imaging bugs, so spelled out in field names):

* ``array`` is indexed ``[z, y, x]`` (slice, row, column) — numpy/SimpleITK order.
* ``spacing_xyz``, ``origin_xyz`` and ``direction`` are in the physical LPS frame used by
  DICOM, NIfTI-through-ITK, NRRD and MHA files: ``spacing_xyz[0]`` is the column spacing.
* ``direction`` is a 3×3 matrix whose **columns** are the unit vectors of the i (x), j (y)
  and k (z) index axes in LPS, exactly as ITK's direction matrix.
* ``units`` says what the values mean: ``"HU"``, ``"label"``, ``"probability"``, ...

Conversion to SimpleITK or MRML happens only at the edges (:mod:`mediastinal_ai.io`,
:mod:`mediastinal_ai.mrml`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import SimpleITK as sitk


@dataclass(frozen=True, eq=False)
class Volume:
    array: np.ndarray
    spacing_xyz: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin_xyz: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    units: str = "HU"
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim != 3:
            raise ValueError(f"Volume needs a 3D array (z, y, x); got shape {arr.shape}")
        object.__setattr__(self, "array", arr)
        sp = tuple(float(s) for s in self.spacing_xyz)
        if len(sp) != 3 or not all(np.isfinite(s) and s > 0 for s in sp):
            raise ValueError(f"spacing must be three positive finite numbers, got {self.spacing_xyz}")
        object.__setattr__(self, "spacing_xyz", sp)
        org = tuple(float(o) for o in self.origin_xyz)
        if len(org) != 3 or not all(np.isfinite(org)):
            raise ValueError(f"origin must be three finite numbers, got {self.origin_xyz}")
        object.__setattr__(self, "origin_xyz", org)
        d = np.asarray(self.direction, dtype=float).reshape(3, 3)
        object.__setattr__(self, "direction", d)
        object.__setattr__(self, "metadata", dict(self.metadata))

    # ------------------------------------------------------------------ geometry
    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing_xyz))

    def index_to_lps(self, ijk: np.ndarray) -> np.ndarray:
        """Continuous index (i=x, j=y, k=z; shape (..., 3)) → LPS millimetres."""
        ijk = np.asarray(ijk, dtype=float)
        return np.asarray(self.origin_xyz) + (ijk * np.asarray(self.spacing_xyz)) @ self.direction.T

    def lps_to_index(self, lps: np.ndarray) -> np.ndarray:
        lps = np.asarray(lps, dtype=float)
        return ((lps - np.asarray(self.origin_xyz)) @ np.linalg.inv(self.direction).T) / np.asarray(self.spacing_xyz)

    def ijk_to_lps_matrix(self) -> np.ndarray:
        """4×4 homogeneous matrix mapping (i, j, k, 1) to LPS."""
        m = np.eye(4)
        m[:3, :3] = self.direction @ np.diag(self.spacing_xyz)
        m[:3, 3] = self.origin_xyz
        return m

    def same_geometry(self, other: Volume, tol: float = 1e-4) -> bool:
        return (
            self.shape == other.shape
            and np.allclose(self.spacing_xyz, other.spacing_xyz, atol=tol)
            and np.allclose(self.origin_xyz, other.origin_xyz, atol=tol * 100)
            and np.allclose(self.direction, other.direction, atol=tol)
        )

    # ------------------------------------------------------------------ copies
    def with_array(self, array: np.ndarray, units: str | None = None, **metadata: Any) -> Volume:
        """Same geometry, new voxels (e.g. a mask or probability map on this CT's grid)."""
        arr = np.asarray(array)
        if arr.shape != self.array.shape:
            raise ValueError(f"array shape {arr.shape} does not match volume shape {self.array.shape}")
        return replace(self, array=arr, units=units or self.units, metadata={**self.metadata, **metadata})

    # ------------------------------------------------------------------ SimpleITK edge
    def to_sitk(self) -> sitk.Image:
        import SimpleITK as sitk

        img = sitk.GetImageFromArray(np.ascontiguousarray(self.array))
        img.SetSpacing(self.spacing_xyz)
        img.SetOrigin(self.origin_xyz)
        img.SetDirection(tuple(self.direction.flatten()))
        return img

    @classmethod
    def from_sitk(cls, img: sitk.Image, units: str = "HU", metadata: dict[str, Any] | None = None) -> Volume:
        import SimpleITK as sitk

        if img.GetDimension() != 3:
            raise ValueError(f"expected a 3D image, got {img.GetDimension()}D")
        if img.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError("expected a scalar image, got a multi-component (e.g. RGB) image")
        return cls(
            array=sitk.GetArrayFromImage(img),
            spacing_xyz=img.GetSpacing(),
            origin_xyz=img.GetOrigin(),
            direction=np.asarray(img.GetDirection()).reshape(3, 3),
            units=units,
            metadata=dict(metadata or {}),
        )
