"""Probability and uncertainty maps on disk: 16-bit fixed point, light compression.

Why: a probability map of a 512×512×300 CT written as compressed float32 took 15–45 s (the
sigmoid leaves every voxel a different, incompressible float). What re-thresholding needs is
the comparison ``p >= t`` for the thresholds a user can choose (the Slicer slider steps by
0.01), so the map is stored as ``floor(p · 10000)`` in uint16: for every threshold with up to
four decimals, ``stored / 10000 >= t`` holds exactly when ``p >= t`` did (to float32 precision
of ``p``), and the lesion table's probabilities change by less than 1e-4. Integers in [0, 10000]
compress ~40× with zlib level 1; writing costs well under a second.

The scale travels in the header (``MediastinalAI_metadata`` JSON: ``"quantised_scale": 10000``)
and :func:`read_probability` returns float32 probabilities for both this format and the old
float32 files. A viewer that opens the file directly shows 0…10000 (documented in
docs/segmentation.md).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..volume import Volume

PROBABILITY_SCALE = 10000  # stored = floor(value · 10000): exact for thresholds with ≤ 4 decimals
SCALE_KEY = "quantised_scale"
COMPRESSION_LEVEL = 1  # zlib: ~1.5× larger than level 6, ~2× faster; the map is mostly zeros anyway


def quantise(values: np.ndarray, scale: int = PROBABILITY_SCALE) -> np.ndarray:
    """``floor(values · scale)`` as uint16 for values in [0, 1] (clipped), in place-friendly chunks."""
    a = np.asarray(values)
    if scale < 1 or scale > 65535:
        raise ValueError(f"scale must be between 1 and 65535, got {scale}")
    out = np.empty(a.shape, np.uint16)
    flat_in, flat_out = a.reshape(-1), out.reshape(-1)
    step = 1 << 22
    buf = np.empty(min(step, flat_in.size), np.float32)
    for s in range(0, flat_in.size, step):
        b = buf[: min(step, flat_in.size - s)]
        np.multiply(flat_in[s:s + step], np.float32(scale), out=b, casting="unsafe")
        np.clip(b, 0, scale, out=b)
        flat_out[s:s + step] = b  # float → uint16 truncates toward zero: floor for b >= 0
    return out


def write_probability(vol: Volume, path: str | Path) -> Path:
    """A probability-like map (values in [0, 1]) as uint16 fixed point, written atomically."""
    import SimpleITK as sitk

    from ..fileio import atomic_path
    from .images import META_KEY, NOTES_PREFIX

    p = Path(path)
    if not p.name.lower().endswith((".nrrd", ".nhdr", ".mha", ".nii.gz", ".nii")):
        raise InputError("probability maps are written as .nrrd, .mha or .nii(.gz)", p)
    if np.issubdtype(vol.array.dtype, np.floating) and not np.isfinite(vol.array).all():
        raise InputError("probability map holds NaN or infinite values", p)
    img = vol.with_array(quantise(vol.array)).to_sitk()
    meta = {k: v for k, v in vol.metadata.items() if k not in ("dicom_files",)}
    meta.update(units=vol.units, **{SCALE_KEY: PROBABILITY_SCALE})
    img.SetMetaData(META_KEY, json.dumps(meta, default=str))
    notes = f"{NOTES_PREFIX} units={vol.units or '-'} value=stored/{PROBABILITY_SCALE}"
    if meta.get("synthetic"):
        notes = "SYNTHETIC - not patient data; " + notes
    img.SetMetaData("ITK_FileNotes", notes[:79])
    with atomic_path(p) as tmp:
        sitk.WriteImage(img, str(tmp), True, COMPRESSION_LEVEL)
    return p


def dequantise(vol: Volume) -> Volume:
    """A map read from disk as float32 values: uint16 fixed point is scaled back, float is kept."""
    scale = vol.metadata.get(SCALE_KEY)
    a = vol.array
    if scale is None:
        return vol if a.dtype == np.float32 else vol.with_array(a.astype(np.float32))
    try:
        s = float(scale)
    except (TypeError, ValueError):
        s = float("nan")
    if not np.isfinite(s) or s <= 0 or not np.issubdtype(a.dtype, np.integer):
        raise InputError(f"probability map header gives {SCALE_KEY}={scale!r} for {a.dtype} voxels",
                         vol.metadata.get("source"))
    out = a.astype(np.float32)
    out /= np.float32(s)
    return replace(vol, array=out, metadata={k: v for k, v in vol.metadata.items() if k != SCALE_KEY})


def read_probability(path: str | Path) -> Volume:
    """A probability (or uncertainty) map as float32, from either the uint16 fixed-point files
    :func:`write_probability` writes or the float32 files of earlier versions."""
    from . import read_image

    return dequantise(read_image(path))
