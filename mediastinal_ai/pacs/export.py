"""All DICOM outputs of one case: BINARY SEG, FRACTIONAL SEG, TID 1500 SR and a provenance JSON.

Every object is built in memory first and written only when all were built, each atomically, so
a failure leaves none of them (never a SEG without its SR, never a truncated file).

Files (in ``out_dir``):

=========================  ======================================================================
``segmentation.dcm``       BINARY SEG, one segment per lesion
``probability_seg.dcm``    FRACTIONAL SEG: probability map (+ uncertainty map as segment 2)
``measurements_sr.dcm``    Comprehensive 3D SR, TID 1500 measurement report
``dicom_export.json``      what was written, the UIDs, warnings, and provenance (shared schema)
=========================  ======================================================================
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..volume import Volume
from .sources import ModelRef, prepare_sources

log = logging.getLogger(__name__)

SEG_FILE = "segmentation.dcm"
FRACTIONAL_FILE = "probability_seg.dcm"
SR_FILE = "measurements_sr.dcm"
EXPORT_JSON = "dicom_export.json"
KINDS = ("seg", "fractional", "sr")


def lesion_sd_hu(lesions: list[dict[str, Any]], labels: np.ndarray | None, ct: Volume) -> list[dict[str, Any]]:
    """The lesion rows with ``sd_hu`` (SD of the CT values inside each lesion) added where missing."""
    out = []
    for r in lesions:
        r = dict(r)
        if r.get("sd_hu") is None and labels is not None:
            vals = np.asarray(ct.array)[np.asarray(labels) == int(r["lesion_id"])]
            r["sd_hu"] = round(float(vals.std()), 1) if vals.size else None
        out.append(r)
    return out


def labels_from_mask(mask: Volume, lesions: list[dict[str, Any]]) -> np.ndarray | None:
    """Lesion ids on the grid from a saved binary mask: its 26-connected components numbered
    largest first (the segmentation's own numbering); None when their sizes do not match the
    lesion table (e.g. an edited mask), then the SEG gets one segment for the whole mask."""
    from ..segmentation.postprocess import components

    labels, n = components(np.asarray(mask.array) > 0, min_voxels=1)
    sizes = [int(np.count_nonzero(labels == i)) for i in range(1, n + 1)]
    want = [int(r.get("voxels", -1)) for r in lesions]
    return labels if sizes == want and n > 0 else None


def export_case(ct: Volume, out_dir: str | Path, *, mask: Volume | None, lesions: list[dict[str, Any]],
                seg_model: ModelRef, labels: np.ndarray | None = None, probability: Volume | None = None,
                uncertainty: Volume | None = None, predictions: dict[str, Any] | None = None,
                threshold: float | None = None, edited: bool = False, on_missing_uids: str = "generate",
                radiomics_features: bool = False, kinds: tuple[str, ...] = KINDS,
                params: dict[str, Any] | None = None, existing_seg: str | Path | None = None,
                plan: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write the case's DICOM objects (see the module doc); returns name → path.

    ``existing_seg``: a BINARY SEG already written for these lesions (by an earlier step) that the
    SR references instead of a new one; without it an SR comes with its own new SEG."""
    import highdicom as hd

    from ..fileio import atomic_path, atomic_write_json, provenance
    from ..segmentation.dicom_seg import make_dicom_seg
    from .seg import make_fractional_seg
    from .sr import make_measurement_report

    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"unknown DICOM output kind(s) {bad}; choose from {KINDS}")
    out = Path(out_dir)
    src = prepare_sources(ct, on_missing_uids)
    seg_params = {"threshold": threshold} if threshold is not None else {}
    lesions = lesion_sd_hu(lesions, labels, ct)
    objects: dict[str, Any] = {}
    seg = None
    has_lesion = mask is not None and bool(np.asarray(mask.array).any())
    if existing_seg is not None and "seg" not in kinds and Path(existing_seg).is_file():
        import pydicom

        seg = pydicom.dcmread(existing_seg)
        if str(seg.get("Modality", "")) != "SEG" or str(seg.get("StudyInstanceUID")) != src.study_instance_uid:
            raise InputError("the existing DICOM SEG is not a SEG of this CT's study", existing_seg)
    elif ("seg" in kinds or "sr" in kinds) and has_lesion:
        seg = make_dicom_seg(mask, ct, model=seg_model, labels=labels, lesions=lesions, params=seg_params,
                             edited=edited, sources=src)
        objects[SEG_FILE] = seg  # an SR never references a SEG that is not written
    if "fractional" in kinds and probability is not None:
        objects[FRACTIONAL_FILE] = make_fractional_seg(probability, ct, uncertainty=uncertainty, model=seg_model,
                                                       params=seg_params, sources=src)
    if "sr" in kinds:
        objects[SR_FILE] = make_measurement_report(src, lesions, seg_model, seg=seg, predictions=predictions,
                                                   radiomics_features=radiomics_features, threshold=threshold)
    paths: dict[str, Path] = {}
    for name, ds in objects.items():
        with atomic_path(out / name) as tmp:
            ds.save_as(tmp)
        paths[name] = out / name
    from .sr import prediction_groups

    _, pred_models = prediction_groups(predictions or {})
    files = {}
    if (out / EXPORT_JSON).is_file():  # an earlier step's objects that are still there
        try:
            files = {k: v for k, v in json.loads((out / EXPORT_JSON).read_text(encoding="utf-8")).get("files", {}).items()
                     if (out / k).is_file() and k not in objects}
        except (OSError, ValueError, AttributeError):
            files = {}
    record = {
        "task": "dicom-export",
        "files": files | {name: {"sop_class_uid": str(ds.SOPClassUID), "sop_instance_uid": str(ds.SOPInstanceUID),
                         "series_instance_uid": str(ds.SeriesInstanceUID), "modality": str(ds.Modality)}
                  for name, ds in objects.items()},
        "study_instance_uid": src.study_instance_uid,
        "not_written": ({SEG_FILE: "no lesion (an empty SEG is not written; the SR says 0 lesions)"}
                        if "seg" in kinds and not has_lesion else {}),
        "sr_references_seg": None if seg is None or "sr" not in kinds else str(seg.SOPInstanceUID),
        "warnings": list(src.warnings),
        **provenance(source=src.provenance(), models=[seg_model.to_dict()] + [m.to_dict() for m in pred_models],
                     plan=plan,
                     params={"threshold": threshold, "edited": edited, "on_missing_uids": on_missing_uids,
                             "radiomics_features": radiomics_features, **(params or {})},
                     highdicom=getattr(hd, "__version__", "")),
    }
    paths[EXPORT_JSON] = atomic_write_json(out / EXPORT_JSON, record)
    return paths


def export_result_folder(ct: Volume, result_dir: str | Path, out_dir: str | Path | None = None, *,
                         predictions: dict[str, Any] | None = None, **kw: Any) -> dict[str, Path]:
    """DICOM outputs from a ``mediastinal-ai segment`` folder (mask.nrrd, probability.nrrd,
    segmentation_result.json or an older result.json; uncertainty.nrrd when present) on its DICOM CT."""
    from ..case_files import require_result
    from ..io import read_mask
    from ..io.probability import read_probability as read_image  # uint16 fixed point or old float32

    d = Path(result_dir)
    if not (d / "mask.nrrd").is_file():
        raise InputError("segmentation result is incomplete: mask.nrrd missing", d)
    info = json.loads(require_result(d, "segmentation").read_text(encoding="utf-8"))
    mask = read_mask(d / "mask.nrrd", reference=ct)
    lesions = list(info.get("lesions") or [])

    def grid(name: str) -> Volume | None:
        if not (d / name).is_file():
            return None
        v = read_image(d / name)
        if v.shape != ct.shape:
            raise InputError(f"{name} shape {v.shape} does not match the CT {ct.shape}", d)
        return ct.with_array(np.asarray(v.array, np.float32), units="probability")

    model = ModelRef.from_label(str(info.get("model", "")), str(info.get("model_sha256", "")),
                                demo=bool(info.get("demo", False)), task="segmentation")
    labels = labels_from_mask(mask, lesions)
    prob = grid("probability.nrrd")
    if labels is None and np.asarray(mask.array).any():
        # The mask is not the one the lesion table describes (edited by hand): measure what it holds.
        from ..segmentation.postprocess import components, lesion_table

        log.warning("%s: mask.nrrd does not match the lesion table (edited?): lesions re-measured on the mask", d)
        labels, _ = components(np.asarray(mask.array) > 0, min_voxels=1)
        lesions = lesion_table(labels, ct, None if prob is None else prob.array)
        kw.setdefault("edited", True)
    return export_case(ct, out_dir or d, mask=mask, lesions=lesions, seg_model=model, labels=labels,
                       probability=prob, uncertainty=grid("uncertainty.nrrd"),
                       predictions=predictions, threshold=info.get("threshold"),
                       params={"result_dir": str(d)}, plan=(info.get("params") or {}).get("plan"), **kw)
