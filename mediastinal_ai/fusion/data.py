"""Fusion training data: manifest cases → 2D ROI arrays + tabular inputs + labels.

The ROI comes from the shared :func:`mediastinal_ai.roi.extract_roi` (the CNN risk model uses
the same code): slice of largest tumor area and, for training, the adjacent slice (+1);
square box around the tumor plus a 10 mm margin; CT window W350/L50 scaled to [0, 1];
resized to ``image_size``. Optional, as in the study: fourth-order PDE denoising and
reconstruction to cubic voxels before the window (:mod:`.preprocess`; off by default, see
docs/fusion.md for why, and recorded in the card's ``preprocessing.roi``). The arrays can be cached as ``.npz`` so that training can run
where SimpleITK is not installed (e.g. a GPU machine): :meth:`FusionData.save` /
:meth:`FusionData.load`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..progress import CancelToken, ProgressCallback, check, report
from . import schema as sch

log = logging.getLogger(__name__)
WINDOW = (350.0, 50.0)  # CT window (width, level) of the fusion study
MARGIN_MM = 10.0
TRAIN_OFFSETS = (0, 1)


def roi_recipe(image_size: int, *, denoise: Any = None, isotropic: bool = False) -> dict[str, Any]:
    """The ROI preprocessing recorded in the model card (inference repeats it exactly).
    ``denoise``: True or a dict (:data:`.preprocess.DEFAULT_DENOISE` keys) for fourth-order PDE
    denoising; ``isotropic``: reconstruct the tumor's slab to cubic voxels first."""
    from .preprocess import check_denoise

    return {"slice": "largest_area", "offsets_train": list(TRAIN_OFFSETS), "offset_predict": 0,
            "margin_mm": MARGIN_MM, "size": int(image_size), "window": list(WINDOW), "normalize": "window01",
            "denoise": check_denoise(denoise), "isotropic": bool(isotropic)}


def extract_images(ct: Any, mask: Any, recipe: dict[str, Any], offsets: tuple[int, ...] = (0,)) -> tuple[np.ndarray, Any]:
    """(len(offsets), S, S) float32 ROI stack + the first RoiSample (slice index and box on the
    CT's own grid, also when the recipe reconstructs cubic voxels)."""
    import dataclasses

    from ..roi import extract_roi, largest_area_slice
    from .preprocess import check_denoise, denoise_slices, isotropic_slab

    den = check_denoise(recipe.get("denoise"))
    iso_map = None
    shape0 = ct.shape
    if den is not None:
        m = np.asarray(mask.array) > 0
        if recipe.get("isotropic"):
            zs = np.flatnonzero(m.reshape(m.shape[0], -1).any(1))
            slices = list(range(max(0, int(zs.min()) - 1), int(zs.max()) + 2)) if zs.size else []
        else:
            k0 = largest_area_slice(mask)
            slices = [k0 + int(o) for o in offsets]
        ct = denoise_slices(ct, slices, den)
    if recipe.get("isotropic"):
        ct, mask, iso_map = isotropic_slab(ct, mask)
    samples = extract_roi(ct, mask, margin_mm=float(recipe["margin_mm"]), size=int(recipe["size"]),
                          window=tuple(recipe["window"]), normalize=recipe["normalize"], offsets=tuple(offsets))
    first = samples[0]
    if iso_map is not None:
        first = dataclasses.replace(first, slice_index=iso_map.slice_to_original(first.slice_index),
                                    box=iso_map.box_to_original(first.box, shape0[1]),
                                    slice_shape=(shape0[1], shape0[2]))
    return np.stack([np.asarray(s.image, dtype=np.float32) for s in samples]), first


@dataclass
class FusionData:
    case_id: np.ndarray  # (N,) str
    images: np.ndarray  # (N, len(TRAIN_OFFSETS), S, S) float32 in [0, 1]
    ctc: np.ndarray  # (N,) float
    age: np.ndarray  # (N,) float, NaN = missing
    sex: np.ndarray  # (N,) str, "" = missing
    site: np.ndarray  # (N,) str, "" = missing
    lesion_class: np.ndarray  # (N,) str
    malignant: np.ndarray  # (N,) int 0/1
    split: np.ndarray  # (N,) str, "" = none given
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.case_id)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[-1])

    def validated(self, i: int) -> sch.ValidatedInputs:
        return sch.ValidatedInputs(
            ctc=float(self.ctc[i]), age=None if math.isnan(self.age[i]) else float(self.age[i]),
            sex=self.sex[i] or None, lesion_site=self.site[i] or None)

    def save(self, path: str | Path) -> Path:
        import json

        from ..fileio import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(
                f, case_id=self.case_id.astype(str), images=self.images.astype(np.float16), ctc=self.ctc,
                age=self.age, sex=self.sex.astype(str), site=self.site.astype(str),
                lesion_class=self.lesion_class.astype(str), malignant=self.malignant, split=self.split.astype(str),
                meta=np.array(json.dumps(self.meta)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> FusionData:
        import json

        path = Path(path)
        if not path.is_file():
            raise InputError("ROI cache not found", path)
        try:
            with np.load(path, allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read the ROI cache ({e})", path) from e
        meta = json.loads(str(d.pop("meta")))
        d["images"] = d["images"].astype(np.float32)
        return cls(**d, meta=meta)


def from_records(records: Any, image_size: int, *, meta: dict[str, Any] | None = None,
                 progress: ProgressCallback | None = None, cancel: CancelToken | None = None,
                 total: int | None = None, recipe: dict[str, Any] | None = None) -> FusionData:
    """In-memory cases → :class:`FusionData`.

    ``records`` yields dicts with ``case_id``, ``ct`` and ``mask`` (:class:`~mediastinal_ai.volume.Volume`
    or a zero-argument callable returning one, so that files are read lazily), ``lesion_class``,
    ``ctc`` and optionally ``malignant`` (default: from the taxonomy), ``age``, ``sex``,
    ``lesion_site``, ``split``. The tabular inputs go through the same validation as at
    inference, so training never sees a value the GUI would refuse.
    """
    from ..taxonomy import BY_NAME

    recipe = recipe or roi_recipe(image_size)
    cols: dict[str, list[Any]] = {k: [] for k in
                                  ("case_id", "images", "ctc", "age", "sex", "site", "lesion_class", "malignant", "split")}
    for n, r in enumerate(records):
        check(cancel)
        report(progress, n / max(1, total or n + 1), f"ROI {r['case_id']}")
        if r["lesion_class"] not in BY_NAME:
            raise InputError(f"case {r['case_id']}: unknown lesion class {r['lesion_class']!r}")
        try:
            v = sch.validate_inputs(r["ctc"], r.get("age"), r.get("sex"), r.get("lesion_site"))
        except InputError as e:
            raise InputError(f"case {r['case_id']}: {e}") from e
        ct = r["ct"]() if callable(r["ct"]) else r["ct"]
        mask = r["mask"](ct) if callable(r["mask"]) else r["mask"]
        imgs, _ = extract_images(ct, mask, recipe, TRAIN_OFFSETS)
        malignant = r.get("malignant")
        cols["case_id"].append(str(r["case_id"]))
        cols["images"].append(imgs)
        cols["ctc"].append(v.ctc)
        cols["age"].append(np.nan if v.age is None else v.age)
        cols["sex"].append(v.sex or "")
        cols["site"].append(v.lesion_site or "")
        cols["lesion_class"].append(r["lesion_class"])
        cols["malignant"].append(int(BY_NAME[r["lesion_class"]].malignant if malignant is None else malignant))
        cols["split"].append(r.get("split") or "")
    if not cols["case_id"]:
        raise InputError("no usable case (each needs ct, mask, lesion_class and ctc)")
    report(progress, 1.0, f"{len(cols['case_id'])} cases")
    return FusionData(
        case_id=np.asarray(cols["case_id"]), images=np.stack(cols["images"]).astype(np.float32),
        ctc=np.asarray(cols["ctc"], float), age=np.asarray(cols["age"], float), sex=np.asarray(cols["sex"]),
        site=np.asarray(cols["site"]), lesion_class=np.asarray(cols["lesion_class"]),
        malignant=np.asarray(cols["malignant"], int), split=np.asarray(cols["split"]),
        meta={"roi": recipe, **(meta or {})})


def from_manifest(manifest: str | Path, image_size: int, *, progress: ProgressCallback | None = None,
                  cancel: CancelToken | None = None, recipe: dict[str, Any] | None = None) -> FusionData:
    """Every usable case of a manifest (ct, mask, lesion_class, ctc) → :class:`FusionData`."""
    from ..cohort import read_manifest
    from ..fileio import sha256_file
    from ..io import read_ct, read_mask
    from ..taxonomy import BY_NAME

    manifest = Path(manifest)
    cases = read_manifest(manifest)
    usable, skipped = [], []
    for c in cases:
        why = ("no mask" if c.mask is None else
               f"lesion_class {c.lesion_class!r} missing or unknown" if c.lesion_class not in BY_NAME else
               "no CTC value" if c.ctc is None else None)
        if why:
            skipped.append(f"{c.case_id}: {why}")
        else:
            usable.append(c)
    if skipped:
        log.warning("skipped %d case(s): %s", len(skipped), "; ".join(skipped[:10]))
    records = ({"case_id": c.case_id, "ct": (lambda c=c: read_ct(c.ct)),
                "mask": (lambda ct, c=c: read_mask(c.mask, reference=ct)), "lesion_class": c.lesion_class,
                "malignant": c.malignant, "ctc": c.ctc, "age": c.age, "sex": c.sex, "lesion_site": c.lesion_site,
                "split": c.split} for c in usable)
    try:
        return from_records(records, image_size, progress=progress, cancel=cancel, total=len(usable), recipe=recipe,
                            meta={
            "manifest": str(manifest), "manifest_sha256": sha256_file(manifest),
            "synthetic": bool(cases) and all(c.synthetic for c in cases), "skipped": skipped})
    except InputError as e:
        if e.path is None:
            raise InputError(e.reason, manifest) from e
        raise
