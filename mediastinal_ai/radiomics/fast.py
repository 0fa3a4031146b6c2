"""Faster extraction mechanics with features identical to a plain pyradiomics call.

Measured on the published parameters (``benchmarks/radiomics_extraction.py``, issue 18 item 10)
one large tumour spent its time in: the shape descriptors (one C call, ``_cshape``, whose
diameter search compares every pair of mesh vertices: half of a 13 cm tumour's 42 CPU s), the
texture matrices of 18 images (C code we do not touch), and pyradiomics' Python side around
them. Nothing here alters a single bit of any feature:

* :func:`fast_bin_edges` gives ``getBinEdges`` the same minimum and maximum from numpy (a
  two-element array holding exactly those values, so pyradiomics' own code computes the edges
  from the same numbers; arrays holding NaN, and ``binCount``, go through unchanged). Why:
  pyradiomics takes them with Python's built-in ``min``/``max``, one comparison per voxel.
* :func:`shared_binning` lets the six feature classes of one filtered image share one
  discretisation: each class calls pyradiomics' ``_applyBinning`` on the same image and mask,
  and the first call's result (computed by pyradiomics) is handed, as a copy, to the next ones
  whose image and mask are the same objects with equal contents. Why: binning and
  ``numpy.unique`` were repeated six times per image (≈ 6 % of a case).
* :func:`prepare` runs pyradiomics' own ``loadImage`` (mask cast, B-spline resampling onto the
  pre-cropped box) once per (case, reader); :class:`PreparedExtractor` — a subclass of
  pyradiomics' extractor whose ``loadImage`` returns that prepared pair — then extracts any
  part of the case from it, so a case cut into many parts is read, windowed and resampled
  once, not once per part (:func:`save_prepared` / :func:`load_prepared` carry the pair
  between processes as raw arrays and exact geometry, no pickle).
* :func:`pieces` / :func:`split_params` cut one case's work into parts by image type (shape,
  Original, each LoG sigma, the Wavelet bands, each simple filter). Each part is a normal
  ``execute`` with a subset of the image types; image types are computed independently in
  pyradiomics (each filter starts from the same resampled image), so the union of the parts
  equals the full call, key for key and bit for bit. :func:`merge_parts` restores pyradiomics'
  own key order; :func:`part_cost` estimates a part's CPU time so that a pool can start the
  longest parts first (the cohort's shape descriptors of a large tumour would otherwise come
  last and keep one worker busy alone).

What does not help and is left alone: filtering a smaller crop (pyradiomics already filters
the crop padded by ``padDistance``; a different margin changes LoG/wavelet values at the
border) and B-spline resampling (already done on the pre-cropped box, < 2 % of a case).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import re
from collections.abc import Iterator
from pathlib import Path
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


@contextlib.contextmanager
def shared_binning() -> Iterator[None]:
    """Within the block, feature classes of the same image and mask share one discretisation."""
    from radiomics import base

    original = base.RadiomicsFeaturesBase._applyBinning
    if getattr(original, "_mediastinal_fast", False):  # already installed (nested use)
        yield
        return
    last: dict[str, Any] = {}

    def apply_binning(self: Any, matrix: Any) -> Any:
        settings = self.settings
        key = (self.label, settings.get("binWidth", 25), settings.get("binCount"))
        if (not self.voxelBased and last and last["image"] is self.inputImage and last["mask"] is self.inputMask
                and last["key"] == key and last["matrix"].dtype == matrix.dtype
                and np.array_equal(last["matrix"], matrix) and np.array_equal(last["roi"], self.maskArray)):
            self.coefficients["grayLevels"] = last["gray"].copy()
            self.coefficients["Ng"] = last["ng"]
            return last["binned"].copy()
        given = np.array(matrix, copy=True)  # the caller may change its matrix after the call
        binned = original(self, matrix)
        last.clear()
        if not self.voxelBased:
            last.update(image=self.inputImage, mask=self.inputMask, key=key, matrix=given,
                        roi=np.array(self.maskArray, copy=True), binned=binned.copy(),
                        gray=self.coefficients["grayLevels"].copy(), ng=self.coefficients["Ng"])
        return binned

    apply_binning._mediastinal_fast = True  # type: ignore[attr-defined]
    base.RadiomicsFeaturesBase._applyBinning = apply_binning
    try:
        yield
    finally:
        base.RadiomicsFeaturesBase._applyBinning = original
        last.clear()


@contextlib.contextmanager
def fast_extraction() -> Iterator[None]:
    """Both pure-performance helpers (:func:`fast_bin_edges`, :func:`shared_binning`)."""
    with fast_bin_edges(), shared_binning():
        yield


# ----------------------------------------------------------------------------- prepared case
@functools.lru_cache(maxsize=1)
def _extractor_class() -> type:
    from radiomics import featureextractor

    class PreparedExtractor(featureextractor.RadiomicsFeatureExtractor):
        """pyradiomics' extractor for an image and mask that its own ``loadImage`` already
        produced (:func:`prepare`): every later step of ``execute`` is pyradiomics' own."""

        def loadImage(self, ImageFilePath: Any, MaskFilePath: Any, generalInfo: Any = None,  # noqa: N802,N803
                      **kwargs: Any) -> Any:
            return ImageFilePath, MaskFilePath

    return PreparedExtractor


def prepared_extractor(params: dict[str, Any]) -> Any:
    """A :class:`PreparedExtractor` for ``params`` (pyradiomics part only); the same object for the
    same parameters (building one validates the parameters, ~10 ms, once per part otherwise)."""
    import json

    return _prepared_extractor(json.dumps(params))  # not sorted: pyradiomics keeps the file's order


@functools.lru_cache(maxsize=64)
def _prepared_extractor(params_json: str) -> Any:
    import json
    import logging

    p = json.loads(params_json)
    logging.getLogger("radiomics").setLevel(logging.ERROR)
    # diagnostics (hashes, label statistics of the prepared pair) are dropped by every caller
    p.setdefault("setting", {})["additionalInfo"] = False
    return _extractor_class()(p)


def prepare(image: Any, label: Any, params: dict[str, Any]) -> tuple[Any, Any]:
    """pyradiomics' own ``loadImage`` (mask cast, resampling onto the pre-cropped box) with the
    settings ``execute`` would pass it; the pair every part of the case starts from."""
    from radiomics import featureextractor

    ex = featureextractor.RadiomicsFeatureExtractor(copy.deepcopy(params))
    settings = ex.settings.copy()
    settings["label"] = settings.get("label", 1)
    return featureextractor.RadiomicsFeatureExtractor.loadImage(image, label, None, **settings)


class PreparedPair:
    """A prepared (image, mask) held by a worker for several parts of its case.

    ``execute`` checks the mask (``imageoperations.checkMask``: label statistics over the whole
    crop) at the start of every part; within :meth:`checked_once` pyradiomics' own check runs
    once per pair and setting, and later parts get a copy of its bounding box. Only a check that
    corrected nothing is remembered; one that raises is rerun (and raises) every time."""

    def __init__(self, image: Any, mask: Any) -> None:
        self.image, self.mask = image, mask
        self._boxes: dict[str, Any] = {}

    @contextlib.contextmanager
    def checked_once(self) -> Iterator[None]:
        from radiomics import imageoperations

        original = imageoperations.checkMask

        def check_mask(imageNode: Any, maskNode: Any, **kwargs: Any) -> Any:  # noqa: N803
            if imageNode is not self.image or maskNode is not self.mask:
                return original(imageNode, maskNode, **kwargs)
            key = repr(sorted(kwargs.items(), key=lambda kv: kv[0]))
            if key in self._boxes:
                return self._boxes[key].copy(), None
            box, corrected = original(imageNode, maskNode, **kwargs)
            if corrected is None and box is not None:
                self._boxes[key] = np.array(box, copy=True)
            return box, corrected

        imageoperations.checkMask = check_mask
        try:
            yield
        finally:
            imageoperations.checkMask = original


def _sitk_meta(img: Any) -> dict[str, Any]:
    return {"spacing": list(img.GetSpacing()), "origin": list(img.GetOrigin()),
            "direction": list(img.GetDirection()), "components": img.GetNumberOfComponentsPerPixel()}


def save_prepared(stem: str | Path, image: Any, mask: Any, label: int = 1) -> dict[str, Any]:
    """Write a prepared pair as ``<stem>.image.npy``, ``<stem>.mask.npy`` and ``<stem>.json``
    (geometry as JSON floats, which round-trip exactly). Returns the ROI's size for
    :func:`part_cost`: ``{"voxels": ROI voxels, "faces": voxel faces on its surface}``."""
    import json

    import SimpleITK as sitk

    meta = {"image": _sitk_meta(image), "mask": _sitk_meta(mask)}
    if meta["image"]["components"] != 1 or meta["mask"]["components"] != 1:
        raise ValueError("prepared images must be scalar")
    marr = sitk.GetArrayFromImage(mask)
    np.save(Path(f"{stem}.image.npy"), sitk.GetArrayFromImage(image), allow_pickle=False)
    np.save(Path(f"{stem}.mask.npy"), marr, allow_pickle=False)
    Path(f"{stem}.json").write_text(json.dumps(meta), encoding="utf-8")
    roi = np.pad(marr == int(label), 1)
    faces = sum(int(np.count_nonzero(np.diff(roi, axis=a))) for a in range(roi.ndim))
    return {"voxels": int(np.count_nonzero(roi)), "faces": faces}


def load_prepared(stem: str | Path) -> tuple[Any, Any]:
    """The pair :func:`save_prepared` wrote, pixel for pixel and with the same geometry."""
    import json

    import SimpleITK as sitk

    meta = json.loads(Path(f"{stem}.json").read_text(encoding="utf-8"))
    out = []
    for which in ("image", "mask"):
        img = sitk.GetImageFromArray(np.load(Path(f"{stem}.{which}.npy"), allow_pickle=False))
        m = meta[which]
        img.SetSpacing(m["spacing"])
        img.SetOrigin(m["origin"])
        img.SetDirection(m["direction"])
        out.append(img)
    return out[0], out[1]


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


def pieces(params: dict[str, Any]) -> list[dict[str, Any]]:
    """``params`` (pyradiomics part only) cut into its smallest independent parts: the shape
    descriptors alone, then one part per image type (each LoG sigma its own). Each entry:
    ``{"params": part parameters, "shape": bool, "images": filtered images it computes}``.
    Together they give exactly the features of ``params`` (:func:`merge_parts` restores the order)."""
    slots = _slots(params)
    n = len(slots) + (1 if _has_shape(params) else 0)
    if n <= 1 or not slots:
        return [{"params": copy.deepcopy(params), "shape": _has_shape(params),
                 "images": sum(_images(name, custom) for name, custom, _ in slots)}]
    out = []
    for p in split_params(params, n):
        types = p["imageType"]
        shape = any(str(k).startswith("shape") for k in p["featureClass"])
        texture = any(not str(k).startswith("shape") for k in p["featureClass"])
        images = sum(_images(name, custom) for name, custom in types.items()) if texture else 0
        out.append({"params": p, "shape": shape, "images": images})
    return out


def _images(name: str, custom: dict[str, Any] | None) -> int:
    """How many filtered images one image type yields (the Wavelet: 8 bands per level in 3D)."""
    custom = custom or {}
    if name == "LoG":
        sig = custom.get("sigma")
        return len(sig) if isinstance(sig, list) else 1
    if name == "Wavelet":
        return 8 * max(1, int(custom.get("level", 1) or 1))
    return 1


# Per-part CPU seconds, fitted on the paper parameters (benchmarks/radiomics_extraction.py's cohort,
# 6 tumours of 0.1-0.6 M voxels at 1 mm): one filtered image's features ~1.7 µs per ROI voxel; the
# shape descriptors ~1.0 ns per (surface face)², their diameter search comparing every pair of mesh
# vertices (a lobulated tumour's shape took 4x a rounder one of about the same volume).
_IMAGE_S_PER_VOXEL = 1.7e-6
_SHAPE_S_PER_FACE2 = 1.0e-9


def part_cost(piece: dict[str, Any], voxels: int, faces: int) -> float:
    """Estimated CPU seconds of one part of :func:`pieces` for a ROI of ``voxels`` voxels with
    ``faces`` surface faces; a pool uses it to start the longest parts first."""
    shape = _SHAPE_S_PER_FACE2 * float(faces) ** 2 + 1e-7 * voxels if piece["shape"] else 0.0
    return piece["images"] * _IMAGE_S_PER_VOXEL * max(0, int(voxels)) + shape + 0.01


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
