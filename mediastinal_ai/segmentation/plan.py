"""The plan: everything inference must reproduce from training, saved with the model (like
nnU-Net's plans file) — spacing, HU window, patch size, network widths."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..errors import InputError, ModelError
from ..volume import Volume

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


INTENSITY_MODES = ("window", "dataset_minmax")


@dataclass
class Plan:
    target_spacing_xyz: tuple[float, float, float] = (2.5, 2.5, 5.0)
    hu_window: tuple[float, float] = (-200.0, 300.0)
    patch_size_zyx: tuple[int, int, int] = (16, 64, 64)
    features: tuple[int, ...] = (8, 16, 32, 64)
    # voxel order every CT is put in before the network sees it (mediastinal_ai.orientation)
    orientation: str = "LPS"
    # axes ("x", "y", "z") the network was trained mirrored along; test-time mirroring uses only
    # these (a network never shown a mirrored chest gets worse, not better, from mirrored passes)
    mirror_axes: str = ""
    # inference on a crop around the mediastinum found by the anatomy step (training crops alike)
    crop_to_mediastinum: bool = False
    # "window": clip to hu_window (a chosen HU window); "dataset_minmax": the study's rescaling with
    # the training set's minimum and maximum HU, which training stores in hu_window
    intensity: str = "window"
    decoder: str = "deconv"  # network decoder block (see network.UNet3D)

    def __post_init__(self) -> None:
        self.target_spacing_xyz = tuple(float(s) for s in self.target_spacing_xyz)  # type: ignore[assignment]
        self.hu_window = tuple(float(s) for s in self.hu_window)  # type: ignore[assignment]
        self.patch_size_zyx = tuple(int(s) for s in self.patch_size_zyx)  # type: ignore[assignment]
        self.features = tuple(int(f) for f in self.features)
        if len(self.features) != 4:
            raise ModelError(f"the published U-Net has 4 resolution levels; plan gives {len(self.features)}")
        if self.orientation != "LPS":
            raise ModelError(f"plan orientation {self.orientation!r} is not supported (only 'LPS')")
        self.mirror_axes = "".join(sorted(set(str(self.mirror_axes or "")), key="xyz".index)) if set(
            str(self.mirror_axes or "")) <= set("xyz") else _bad_mirror(self.mirror_axes)
        self.crop_to_mediastinum = bool(self.crop_to_mediastinum)
        if self.intensity not in INTENSITY_MODES:
            raise ModelError(f"plan intensity must be one of {', '.join(INTENSITY_MODES)}, got {self.intensity!r}")
        from .network import DECODERS

        if self.decoder not in DECODERS:
            raise ModelError(f"plan decoder must be one of {', '.join(DECODERS)}, got {self.decoder!r}")
        if any(p % 8 for p in self.patch_size_zyx):
            raise ModelError(f"patch size {self.patch_size_zyx} must be divisible by 8 (three poolings)")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plan:
        try:
            req = {k: d[k] for k in ("target_spacing_xyz", "hu_window", "patch_size_zyx", "features")}
            opt = {k: d[k] for k in ("orientation", "mirror_axes", "crop_to_mediastinum", "intensity", "decoder") if k in d}
            return cls(**req, **opt)
        except (KeyError, TypeError) as e:
            raise ModelError(f"segmentation plan is incomplete ({e})") from e


def _bad_mirror(v: Any) -> str:
    raise ModelError(f"plan mirror_axes must be letters from 'xyz', got {v!r}")


def load_config(path_or_name: str | Path = "segmentation_demo") -> dict[str, Any]:
    """A training config YAML (shipped name or a user's file) → dict with 'plan' and 'training'."""
    p = Path(path_or_name)
    if not p.is_file():
        p = CONFIG_DIR / f"{path_or_name}.yaml"
    if not p.is_file():
        raise InputError("segmentation config not found", path_or_name)
    cfg = yaml.safe_load(p.read_text(encoding="utf-8"))
    if not isinstance(cfg, dict) or "plan" not in cfg:
        raise InputError("config needs a 'plan' section", p)
    cfg.setdefault("training", {})
    cfg["source"] = str(p)
    return cfg


def resampled_grid(vol: Volume, spacing_xyz: tuple[float, float, float]) -> tuple[list[int], np.ndarray]:
    """Size (x, y, z) and origin of the grid :func:`resample` puts ``vol`` on at ``spacing_xyz``:
    same direction, the voxel count rounded, the physical extent kept centred (the first voxel
    centre shifts by half the spacing change). Also what a caller needs to know that grid
    without resampling (the chest-anatomy step's coarse grid)."""
    size = [max(1, int(round(n * s / t))) for n, s, t in zip(vol.shape[::-1], vol.spacing_xyz, spacing_xyz)]
    d = np.asarray(vol.direction, float).reshape(3, 3)
    origin = np.asarray(vol.origin_xyz, float) + d @ ((np.asarray(spacing_xyz, float) - np.asarray(vol.spacing_xyz)) / 2)
    return size, origin


def resample(vol: Volume, spacing_xyz: tuple[float, float, float], *, label: bool = False,
             reference: Volume | None = None, default: float | None = None) -> Volume:
    """Resample onto ``spacing_xyz`` (same origin/direction, covering the same extent), or onto
    ``reference``'s grid. Linear for images, nearest for labels. Points outside ``vol`` read
    ``default`` (the image's minimum, labels 0, when not given)."""
    import SimpleITK as sitk

    img = vol.to_sitk() if vol.array.dtype != np.float64 else vol.with_array(vol.array.astype(np.float32)).to_sitk()
    if reference is not None:
        ref = reference.with_array(np.zeros(reference.shape, np.uint8)).to_sitk()
    else:
        size, origin = resampled_grid(vol, spacing_xyz)
        ref = sitk.Image(size, sitk.sitkUInt8)
        ref.SetSpacing(spacing_xyz)
        ref.SetDirection(img.GetDirection())
        ref.SetOrigin(tuple(origin))
    interp = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
    if default is None:
        default = float(vol.array.min()) if not label else 0.0
    out = sitk.Resample(img, ref, sitk.Transform(), interp, float(default))
    return Volume.from_sitk(out, units=vol.units, metadata=vol.metadata)


def normalise(hu: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """HU → [0, 1] inside ``window``: a chosen HU window, or (plan intensity ``dataset_minmax``,
    the study's rescaling) the training set's minimum and maximum."""
    lo, hi = window
    return np.clip((hu.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)


def dataset_hu_range(volumes: Any) -> tuple[float, float]:
    """The minimum and maximum HU over CTs (padding below -1024 HU, outside the scan circle, is
    not tissue and is floored), for the study's min–max intensity rescaling."""
    lo, hi = np.inf, -np.inf
    for v in volumes:
        a = np.asarray(v.array)
        lo = min(lo, float(max(a.min(), -1024)))
        hi = max(hi, float(a.max()))
    if not np.isfinite(lo) or hi <= lo:
        raise InputError("cannot compute the training set's HU range (no CT, or constant CTs)")
    return lo, hi
