"""Faster extraction mechanics with features identical to a plain pyradiomics call.

Measured on the published parameters (``benchmarks/radiomics_extraction.py``, issue 18 item 10)
one large tumour spent its time in three places: the texture matrices of 18 images (C code we
do not touch), the shape descriptors (one call, up to a fifth of the case), and — surprisingly —
``radiomics.imageoperations.getBinEdges``, which takes the ROI's minimum and maximum with
Python's built-in ``min``/``max`` (one Python comparison per voxel, 108 times per case). Two
changes, neither alters a single bit of any feature:

* :func:`fast_bin_edges` gives ``getBinEdges`` the same minimum and maximum from numpy (a
  two-element array holding exactly those values, so pyradiomics' own code computes the edges
  from the same numbers; arrays holding NaN, and ``binCount``, go through unchanged);
* :func:`split_params` cuts one case's work into parts by image type (shape, Original, each LoG
  sigma, the Wavelet bands, each simple filter), balanced by their typical cost, so that two
  worker processes share one long case instead of one of them doing it alone. Each part is a
  normal ``RadiomicsFeatureExtractor.execute`` with a subset of the image types; image types are
  computed independently in pyradiomics (each filter starts from the same resampled image), so
  the union of the parts equals the full call, key for key and bit for bit.
  :func:`merge_parts` restores pyradiomics' own key order.

What does not help and is left alone: filtering a smaller crop (pyradiomics already filters
the crop padded by ``padDistance``; a different margin changes LoG/wavelet values at the
border) and B-spline resampling (already done on the pre-cropped box, < 1 % of a case).
"""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Iterator
from typing import Any

import numpy as np

# Typical cost of one part relative to one filtered image's texture features (measured on the
# paper parameters, a 14 ml synthetic tumour at 1 mm: shape ≈ 6 images, wavelet = 8 images).
_COST = {"shape": 6.0, "Wavelet": 8.0}


@contextlib.contextmanager
def fast_bin_edges() -> Iterator[None]:
    """Within the block, pyradiomics' fixed-bin-width edges are computed from numpy's min/max."""
    from radiomics import imageoperations

    original = imageoperations.getBinEdges
    if getattr(original, "_mediastinal_fast", False):  # already installed (nested use)
        yield
        return

    def get_bin_edges(parameter_values: Any, **kwargs: Any) -> Any:
        values = np.asarray(parameter_values)
        if kwargs.get("binCount") is None and values.ndim == 1 and values.size:
            lo, hi = values.min(), values.max()
            if not (np.isnan(lo) or np.isnan(hi)):
                # built-in min/max return the FIRST of equal values: -0.0 or 0.0, whichever comes first
                if lo == 0:
                    lo = values[np.flatnonzero(values == 0)[0]]
                if hi == 0:
                    hi = values[np.flatnonzero(values == 0)[0]]
                # built-in min/max of [lo, hi] are lo and hi: the same numbers pyradiomics would find
                return original(np.array([lo, hi], dtype=values.dtype), **kwargs)
        return original(parameter_values, **kwargs)

    get_bin_edges._mediastinal_fast = True  # type: ignore[attr-defined]
    imageoperations.getBinEdges = get_bin_edges
    try:
        yield
    finally:
        imageoperations.getBinEdges = original


def _slots(params: dict[str, Any]) -> list[tuple[str, dict[str, Any], float]]:
    """The independent pieces of one extraction: (image type, its settings, relative cost)."""
    out: list[tuple[str, dict[str, Any], float]] = []
    for name, custom in (params.get("imageType") or {}).items():
        custom = dict(custom or {})
        if name == "LoG" and isinstance(custom.get("sigma"), list) and len(custom["sigma"]) > 1:
            for s in custom["sigma"]:
                out.append((name, {**custom, "sigma": [s]}, 1.0))
        else:
            out.append((name, custom, _COST.get(name, 1.0)))
    return out


def _has_shape(params: dict[str, Any]) -> bool:
    fc = params.get("featureClass")
    return fc is None or any(str(k).startswith("shape") for k in fc)


def split_params(params: dict[str, Any], n_parts: int) -> list[dict[str, Any]]:
    """``params`` (pyradiomics part only) cut into at most ``n_parts`` parameter sets whose
    extractions together give exactly the features of ``params``. Greedy, largest piece first."""
    slots = _slots(params)
    shape = _has_shape(params)
    pieces: list[tuple[float, int, str | None]] = [(c, i, None) for i, (_, _, c) in enumerate(slots)]
    if shape:
        pieces.append((_COST["shape"], -1, "shape"))
    n = max(1, min(int(n_parts), len(pieces)))
    if n == 1 or not slots:
        return [copy.deepcopy(params)]
    bins: list[list[int]] = [[] for _ in range(n)]
    load = [0.0] * n
    for cost, idx, _ in sorted(pieces, key=lambda t: -t[0]):
        k = int(np.argmin(load))
        bins[k].append(idx)
        load[k] += cost
    parts = []
    for b in bins:
        if not b:
            continue
        p = copy.deepcopy(params)
        types: dict[str, dict[str, Any]] = {}
        for idx in sorted(i for i in b if i >= 0):
            name, custom, _ = slots[idx]
            if name in types and name == "LoG":
                types[name]["sigma"] = types[name]["sigma"] + custom["sigma"]
            else:
                types[name] = copy.deepcopy(custom)
        fc = p.get("featureClass")
        if fc is None:  # pyradiomics' default: every class
            from radiomics import getFeatureClasses

            fc = {k: None for k in getFeatureClasses()}
        if -1 not in b:
            fc = {k: v for k, v in fc.items() if not str(k).startswith("shape")}
        if not types:  # shape only: pyradiomics needs one image type; no non-shape class runs
            types = {"Original": {}}
            fc = {k: v for k, v in fc.items() if str(k).startswith("shape")}
        p["imageType"] = types
        p["featureClass"] = fc
        if not fc:
            continue
        parts.append(p)
    return parts


def _type_rank(key: str, order: list[str]) -> tuple[int, float]:
    """Where pyradiomics puts a feature: shape first, then the image types in parameter order."""
    prefix = key.split("_", 1)[0]
    if key.startswith("original_shape"):
        return (-1, 0.0)
    low = prefix.lower()
    for i, name in enumerate(order):
        n = name.lower()
        if name == "LoG" and low.startswith("log-sigma-"):
            m = re.match(r"log-sigma-([0-9]+)-([0-9]+)-mm", prefix)
            return (i, float(f"{m.group(1)}.{m.group(2)}") if m else 0.0)
        if low == n or low.startswith(n + "-") or (n.startswith("lbp") and low.startswith(n[:3])):
            return (i, 0.0)
    return (len(order), 0.0)


def merge_parts(parts: list[dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """The parts' features in the order one full ``execute`` returns them."""
    order = list((params.get("imageType") or {}).keys())
    sigma_order = {float(s): j for j, s in enumerate(((params.get("imageType") or {}).get("LoG") or {})
                                                     .get("sigma") or [])}
    items = []
    seq = 0
    for part in parts:
        for k, v in part.items():
            r0, r1 = _type_rank(k, order)
            sub = sigma_order.get(r1, r1) if r0 >= 0 and order[r0:r0 + 1] == ["LoG"] else 0
            items.append(((r0, sub, seq), k, v))
            seq += 1
    items.sort(key=lambda t: t[0])
    return {k: v for _, k, v in items}
