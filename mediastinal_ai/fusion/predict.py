"""One-case prediction from CT + mask + CTC (+ optional clinical inputs), with the CT-only
baseline side by side. Used by the CLI, the MRML adapter and the batch step."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelError
from ..taxonomy import BY_NAME, CTC_UNIT
from . import schema as sch
from .data import extract_images
from .model_io import FusionModel, load_model

log = logging.getLogger(__name__)
_CACHE: dict[tuple[str, str, str], FusionModel] = {}


def get_model(model: str | Path | FusionModel | None = None, *, task: str = "fusion", device: str = "cpu",
              expected_classes: list[str] | None = None) -> FusionModel:
    """Name / path / ``None`` (the task's default) → loaded model, cached per (task, sha256, device)."""
    if isinstance(model, FusionModel):
        if model.task != task:
            raise ModelError(f"model {model.card.name!r} is a {model.task!r} model, not {task!r}")
        if expected_classes is not None and model.classes != list(expected_classes):
            raise ModelError(f"model classes {model.classes} do not match the expected classes {list(expected_classes)}")
        return model
    from ..models import resolve

    resolved = resolve(model, task=task)
    key = (task, resolved.card.sha256, device)
    if key not in _CACHE:
        _CACHE[key] = load_model(resolved, device=device, expected_task=task)
    fm = _CACHE[key]
    if expected_classes is not None and fm.classes != list(expected_classes):
        raise ModelError(f"model classes {fm.classes} do not match the expected classes {list(expected_classes)}",
                         resolved.card_path)
    return fm


def validate_for_model(ctc: Any, age: Any = None, sex: Any = None, lesion_site: Any = None,
                       model: str | Path | FusionModel | None = None) -> sch.ValidatedInputs:
    """:func:`~mediastinal_ai.fusion.schema.validate_inputs` against a model's training ranges.

    Cheap (reads the card and checks the weights' sha256; no torch), so a GUI can call it on
    every edit to show refusals and out-of-range warnings before "Predict with CTC".
    """
    if isinstance(model, FusionModel):
        schema = model.schema
    else:
        from ..models import resolve

        resolved = resolve(model, task="fusion")
        schema = resolved.card.input_schema
        sch.check_schema(schema, resolved.card_path)
    return sch.validate_inputs(ctc, age, sex, lesion_site, schema=schema)


def companion_ct_only(fm: FusionModel, device: str = "cpu") -> tuple[FusionModel | None, list[str]]:
    """The CT-only baseline trained alongside a fusion model (named in its card), if available."""
    info = fm.card.extra.get("ct_only_model") or {}
    warnings: list[str] = []
    if not info:
        return None, ["this fusion model names no CT-only baseline; CT-only prediction not shown"]
    candidates: list[Any] = []
    if fm.resolved is not None and info.get("card"):
        p = (fm.resolved.card_path.parent / info["card"]).resolve()
        if p.is_file():
            candidates.append(p)
    candidates.append(info.get("name"))
    last_err = None
    for c in candidates:
        try:
            ct = get_model(c, task="fusion-ct-only", device=device, expected_classes=fm.classes)
        except ModelError as e:
            last_err = e
            continue
        if info.get("sha256") and ct.card.sha256 != info["sha256"]:
            warnings.append(f"CT-only model {ct.card.name!r} is not the one trained with this fusion model "
                            "(sha256 differs); the comparison is not like for like")
        return ct, warnings
    return None, [f"CT-only baseline {info.get('name')!r} unavailable ({last_err}); CT-only prediction not shown"]


def _summary(fm: FusionModel, p_malignant: float, p_class: np.ndarray) -> dict[str, Any]:
    order = np.argsort(-p_class)
    thr = fm.threshold
    return {
        "model": fm.label,
        "model_name": fm.card.name,
        "model_sha256": fm.card.sha256,
        "demo": bool(fm.card.demo),
        "p_malignant": float(p_malignant),
        "p_benign": float(1.0 - p_malignant),
        "threshold": thr,
        "call": "malignant" if p_malignant >= thr else "benign",
        "top3": [{"class": fm.classes[j], "display": BY_NAME[fm.classes[j]].display,
                  "probability": float(p_class[j]), "malignant": BY_NAME[fm.classes[j]].malignant}
                 for j in order[:3]],
        "class_probabilities": {fm.classes[j]: float(p_class[j]) for j in range(len(fm.classes))},
    }


def site_of_mask(ct: Any, mask: Any, anatomy: Any = None) -> tuple[str | None, str]:
    """The mediastinal compartment (anterior / middle / posterior) most of the mask lies in, from
    the classical chest-anatomy step, or None (with the reason) when it is not in one.

    ``anatomy``: a :class:`~mediastinal_ai.anatomy.ChestAnatomy` an earlier step computed on this
    CT (``segment`` saves it in the case folder): reused when it fits the CT's grid, so the
    anatomy step (seconds on a full CT) does not run twice; recomputed otherwise."""
    from ..anatomy import analyse_chest, lesion_compartment
    from ..orientation import canonical

    canon = canonical(ct.with_array(ct.array, units="HU"))[0]
    if anatomy is not None and not anatomy.fits(canon):
        log.warning("the saved chest anatomy belongs to another CT grid: computed again for the lesion site")
        anatomy = None
    anat = anatomy if anatomy is not None else analyse_chest(canon)
    if not anat.covers_mediastinum:
        return None, "lesion site not set: the CT does not cover the mediastinum (" + "; ".join(anat.warnings) + ")"
    pts = ct.index_to_lps(np.argwhere(np.asarray(mask.array) > 0)[:, ::-1].astype(float))
    comp, _ = lesion_compartment(anat, pts)
    if comp not in sch.LESION_SITES:
        return None, f"lesion site not set: the mask lies in the {comp}, not in a mediastinal compartment"
    return comp, f"lesion site '{comp}' taken from the chest-anatomy step (none was given)"


def predict_fusion(ct: Any, mask: Any, ctc: Any, age: Any = None, sex: Any = None, lesion_site: Any = None, *,
                   model: str | Path | FusionModel | None = None, ct_only_model: str | Path | FusionModel | None = None,
                   with_ct_only: bool = True, expected_classes: list[str] | None = None,
                   device: str = "cpu", site_from_anatomy: bool = True, anatomy: Any = None) -> dict[str, Any]:
    """Predict benign/malignant and the lesion class for one tumor.

    ``ct``/``mask`` are :class:`~mediastinal_ai.volume.Volume` on the same grid. Inputs are
    validated first (:class:`~mediastinal_ai.errors.InputError` for refused values); the result
    holds the fused prediction, the CT-only baseline's (``None`` with a warning when it is not
    available), the validated inputs, the ROI slice and all warnings. Without a ``lesion_site``
    (and with ``site_from_anatomy``) the site is the mediastinal compartment the chest-anatomy
    step places the mask in, said in a note; ``lesion_site_source`` records which it was.
    ``anatomy``: that step's result when an earlier step already has it (see :func:`site_of_mask`).
    """
    fm = get_model(model, task="fusion", device=device, expected_classes=expected_classes)
    site_source = "user" if not sch._is_missing(lesion_site) else "none"
    site_note = None
    if site_source == "none" and site_from_anatomy and "lesion_site" in (fm.schema or {}).get("inputs", sch.ALL_INPUTS):
        lesion_site, site_note = site_of_mask(ct, mask, anatomy)
        site_source = "anatomy" if lesion_site else "none"
    v = sch.validate_inputs(ctc, age, sex, lesion_site, schema=fm.schema)
    warnings = list(v.warnings)
    if not mask.array.any():
        from ..errors import InputError

        raise InputError("the tumor mask is empty")
    imgs, sample = extract_images(ct, mask, fm.roi, (0,))
    x = sch.encode(v, fm.schema)[None, :]
    pm, pc = fm.predict_arrays(imgs, x)
    fused = _summary(fm, pm[0], pc[0])

    ct_res = None
    if with_ct_only:
        if ct_only_model is not None:
            cto, w = get_model(ct_only_model, task="fusion-ct-only", device=device, expected_classes=fm.classes), []
        else:
            cto, w = companion_ct_only(fm, device)
        warnings += w
        if cto is not None:
            if cto.roi != fm.roi:
                cimgs, _ = extract_images(ct, mask, cto.roi, (0,))
            else:
                cimgs = imgs
            cpm, cpc = cto.predict_arrays(cimgs)
            ct_res = _summary(cto, cpm[0], cpc[0])
    if fm.card.demo:
        warnings.append("demo model trained on synthetic data — not for clinical use")
    k = int(sample.slice_index)
    center_ijk = np.array([(sample.box[2] + sample.box[3] - 1) / 2, (sample.box[0] + sample.box[1] - 1) / 2, k])
    return {
        "task": "fusion",
        "inputs": v.as_dict(),
        "ctc_unit": v.ctc_unit,
        "fusion": fused,
        "ct_only": ct_res,
        "warnings": warnings,
        "notes": list(v.notes) + ([site_note] if site_note else []),
        "lesion_site_source": site_source,
        "roi": {"slice_index": k, "box_yx": [int(b) for b in sample.box],
                "center_lps": [float(c) for c in ct.index_to_lps(center_ijk)]},
    }


def result_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The result as table rows, one per model (fused, then CT-only), numbers kept as numbers."""
    inp = result["inputs"]
    rows = []
    for label, r in (("fusion (CT + CTC)", result["fusion"]), ("CT only", result.get("ct_only"))):
        row: dict[str, Any] = {"model_kind": label}
        if r is None:
            row.update({"p_malignant": float("nan"), "call": "not available"})
        else:
            row.update({"p_malignant": r["p_malignant"], "call": r["call"], "threshold": r["threshold"]})
            for k in range(3):
                t = r["top3"][k] if k < len(r["top3"]) else None
                row[f"class_{k + 1}"] = "" if t is None else t["class"]
                row[f"p_class_{k + 1}"] = float("nan") if t is None else t["probability"]
            row.update({"model": r["model"], "model_sha256": r["model_sha256"]})
        row.update({"ctc": inp["ctc"] if label.startswith("fusion") else float("nan"), "ctc_unit": inp.get("ctc_unit", CTC_UNIT),
                    "age": inp["age"] if inp["age"] is not None and label.startswith("fusion") else float("nan"),
                    "sex": (inp["sex"] or "") if label.startswith("fusion") else "",
                    "lesion_site": (inp["lesion_site"] or "") if label.startswith("fusion") else "",
                    "warnings": " | ".join(result["warnings"]) if label.startswith("fusion") else ""})
        rows.append(row)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    blank = {k: (float("nan") if any(isinstance(r.get(k), float) for r in rows) else "") for k in keys}
    return [{k: r.get(k, blank[k]) for k in keys} for r in rows]
