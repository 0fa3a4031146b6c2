"""Intensity augmentation for segmentation training (nnU-Net's set: noise, blur, brightness,
contrast, gamma — plus sharpening).

Why: real chest CT comes from many reconstruction kernels (soft to B70f-sharp: noise SD 15–60 HU
on the shared samples) and scanners; a network trained on one noise texture learns that texture.
The published recipe augments geometry only (axial rotation, scaling), so this is a labelled
deviation: a config turns it on with ``training.intensity_augmentation`` (the demo config does,
``segmentation_paper.yaml`` does not), and the card records the settings.

Amounts are in HU where that is what a user thinks in (noise), and converted to the network's
[0, 1] units with the plan's intensity range; the result is clipped back to [0, 1] because that
is the range the network sees at inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import InputError


@dataclass(frozen=True)
class IntensityAugmentation:
    """Each transform fires with its own probability; ranges are drawn uniformly."""

    p_noise: float = 0.0
    noise_sd_hu: tuple[float, float] = (0.0, 40.0)
    p_blur: float = 0.0
    blur_sigma_mm: tuple[float, float] = (0.5, 1.5)
    p_sharpen: float = 0.0
    sharpen_amount: tuple[float, float] = (0.5, 1.5)
    p_brightness: float = 0.0
    brightness_hu: tuple[float, float] = (-20.0, 20.0)
    p_contrast: float = 0.0
    contrast_range: tuple[float, float] = (0.8, 1.25)
    p_gamma: float = 0.0
    gamma_range: tuple[float, float] = (0.75, 1.35)

    @classmethod
    def from_config(cls, d: dict[str, Any] | None) -> IntensityAugmentation | None:
        if not d:
            return None
        if not isinstance(d, dict):
            raise InputError(f"training.intensity_augmentation must be a mapping, got {d!r}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown intensity_augmentation key(s): {', '.join(unknown)} "
                             f"(known: {', '.join(sorted(known))})")
        kw: dict[str, Any] = {}
        for k, v in d.items():
            if k.startswith("p_"):
                if not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
                    raise InputError(f"intensity_augmentation.{k} must be a probability in [0, 1], got {v!r}")
                kw[k] = float(v)
            else:
                if (not isinstance(v, (list, tuple)) or len(v) != 2
                        or not all(isinstance(x, (int, float)) for x in v) or float(v[0]) > float(v[1])):
                    raise InputError(f"intensity_augmentation.{k} must be a [low, high] pair, got {v!r}")
                kw[k] = (float(v[0]), float(v[1]))
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}

    def __call__(self, img: np.ndarray, rng: np.random.Generator, *, hu_range: tuple[float, float],
                 spacing_zyx: tuple[float, float, float]) -> np.ndarray:
        """``img`` in [0, 1] units of ``hu_range``; in-plane filters use the voxel spacing so a
        sigma in mm means the same on every plan."""
        per_hu = 1.0 / (hu_range[1] - hu_range[0])
        out = img.astype(np.float32, copy=True)
        inplane = np.array([0.0, 1.0 / spacing_zyx[1], 1.0 / spacing_zyx[2]])
        if rng.random() < self.p_blur:
            out = ndimage.gaussian_filter(out, inplane * rng.uniform(*self.blur_sigma_mm), mode="nearest")
        if rng.random() < self.p_sharpen:
            smooth = ndimage.gaussian_filter(out, inplane * 0.75, mode="nearest")
            out = out + rng.uniform(*self.sharpen_amount) * (out - smooth)
        if rng.random() < self.p_noise:
            out = out + rng.normal(0.0, rng.uniform(*self.noise_sd_hu) * per_hu, out.shape).astype(np.float32)
        if rng.random() < self.p_brightness:
            out = out + rng.uniform(*self.brightness_hu) * per_hu
        if rng.random() < self.p_contrast:
            m = float(out.mean())
            out = (out - m) * rng.uniform(*self.contrast_range) + m
        np.clip(out, 0.0, 1.0, out=out)
        if rng.random() < self.p_gamma:
            out = out ** rng.uniform(*self.gamma_range)
        return out.astype(np.float32, copy=False)
