"""Batch steps that call the task packages' core APIs. Each writes its files into the case's
work folder and adds flat values to ``ctx.results`` for the cohort table."""

from __future__ import annotations

import csv
import importlib
from pathlib import Path
from typing import Any

from ..case_files import RESULT_FILES, find_result
from ..errors import InputError, MediastinalAIError
from .steps import CaseContext


def _need(module: str, *names: str) -> Any:
    try:
        mod = importlib.import_module(module)
        for n in names:
            getattr(mod, n)
        return mod
    except (ImportError, AttributeError) as e:
        raise MediastinalAIError(f"step not available in this build ({module}: {e})") from e


def _write_csv(ctx: CaseContext, name: str, rows: list[dict[str, Any]]) -> None:
    from ..fileio import atomic_path

    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    with atomic_path(ctx.path(name)) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols or ["empty"])
        w.writeheader()
        w.writerows(rows)


def segment(ctx: CaseContext) -> None:
    seg = _need("mediastinal_ai.segmentation", "segment_volume")
    result = seg.segment_volume(ctx.ct, model=ctx.model("segmentation"),
                                threshold=float(ctx.params.get("threshold", 0.5)), device=ctx.params.get("device", "auto"))
    written = seg.write_result(result, ctx.workdir, ctx.ct)
    ctx.segmented = True
    # every file write_result made (mask, probability, lesions, result, uncertainty, saved anatomy):
    # case.json's list of outputs then names what the case folder holds
    for path in written.values():
        ctx.outputs.add(Path(path).relative_to(ctx.workdir).as_posix())
    ctx.mask = result.mask
    lesions = result.lesions
    ctx.results.update(n_lesions=len(lesions),
                       tumor_volume_ml=round(sum(float(x["volume_ml"]) for x in lesions), 2),
                       largest_diameter_mm=max((float(x["max_diameter_mm"]) for x in lesions), default=0.0))
    if ctx.ct.metadata.get("dicom_files") and lesions:
        # A DICOM input gets a BINARY DICOM SEG (one segment per lesion) and a FRACTIONAL SEG of
        # the probability map beside the NRRDs, referencing the source series, so PACS and viewers
        # can show them. Failing to write them is recorded, not fatal: the NRRDs hold the same.
        from ..pacs import ModelRef
        from ..pacs.export import export_case

        try:
            written = export_case(ctx.ct, ctx.workdir, mask=result.mask, lesions=lesions,
                                  seg_model=ModelRef.from_card(ctx.model("segmentation").card), labels=result.labels,
                                  probability=result.probability, uncertainty=result.uncertainty,
                                  threshold=result.threshold, plan=result.params.get("plan"), kinds=("seg", "fractional"),
                                  on_missing_uids=str(ctx.params.get("on_missing_uids", "generate")),
                                  params={"command": "run", "step": "segment"})
            for name in written:
                ctx.outputs.add(name)
            ctx.results["dicom_seg"] = "segmentation.dcm"
        except (MediastinalAIError, ValueError) as e:
            ctx.results["dicom_seg"] = f"not written: {e}"
    if not lesions:
        ctx.mask = None  # downstream risk steps then fail with a clear "no tumor found"


def radiomics(ctx: CaseContext) -> None:
    rad = _need("mediastinal_ai.radiomics", "predict_risk")
    res = rad.predict_risk(ctx.ct, ctx.tumor_mask(), model=ctx.model("risk-radiomics"))
    ctx.write_json(RESULT_FILES["risk-radiomics"], res)
    ctx.results.update(p_high_risk_radiomics=res.get("probability_high_risk"),
                       risk_group_radiomics=res.get("group"))


def cnn(ctx: CaseContext) -> None:
    cn = _need("mediastinal_ai.cnn", "predict_risk")
    res = cn.predict_risk(ctx.ct, ctx.tumor_mask(), model=ctx.model("risk-cnn"))
    gradcam = res.pop("gradcam", None)
    if gradcam is not None:
        ctx.write_image("gradcam.nrrd", gradcam)
    ctx.write_json(RESULT_FILES["risk-cnn"], res)
    ctx.results.update(p_high_risk_cnn=res.get("probability_high_risk"), risk_group_cnn=res.get("group"))


def _saved_anatomy(ctx: CaseContext) -> Any:
    """The chest anatomy the 'segment' step of this case saved in the work folder, or None (no
    segment step, or an older result without it). The fusion step reuses it for the lesion site
    instead of running the anatomy step again; predict_fusion checks it fits the CT's grid."""
    if not ctx.segmented:
        return None
    from ..anatomy import ChestAnatomy

    return ChestAnatomy.from_case_folder(ctx.workdir)


def fusion(ctx: CaseContext) -> None:
    fu = _need("mediastinal_ai.fusion", "predict_fusion", "result_rows")
    clinical = ctx.spec.clinical
    if clinical.get("ctc") is None:
        raise InputError("no CTC level for this case (manifest column 'ctc'): the fusion step needs one")
    res = fu.predict_fusion(ctx.ct, ctx.tumor_mask(), clinical.get("ctc"), clinical.get("age"), clinical.get("sex"),
                            clinical.get("lesion_site"), model=ctx.model("fusion"),
                            device=_device(ctx.params.get("device", "auto")), anatomy=_saved_anatomy(ctx))
    ctx.write_json(RESULT_FILES["fusion"], res)
    _write_csv(ctx, "fusion_table.csv", fu.result_rows(res))
    f = res["fusion"]
    ctx.results.update(p_malignant_fusion=f["p_malignant"], call_fusion=f["call"],
                       top_class_fusion=f["top3"][0]["class"] if f["top3"] else "",
                       p_malignant_ct_only=(res.get("ct_only") or {}).get("p_malignant"),
                       fusion_warnings="; ".join(res.get("warnings", [])))


def dicom_sr(ctx: CaseContext) -> None:
    """TID 1500 SR of the case (lesions and whatever predictions the earlier steps wrote),
    referencing the segment step's DICOM SEG; DICOM inputs only."""
    import json

    from ..pacs.export import SR_FILE, export_result_folder

    if not ctx.ct.metadata.get("dicom_files"):  # a mixed cohort: the NIfTI cases are not failures
        ctx.results["dicom_sr"] = "not written: not a DICOM input (an SR must reference DICOM images)"
        return
    if find_result(ctx.workdir, "segmentation") is None:
        raise InputError("the dicom-sr step needs the segment step's result (add 'segment' to --steps)")
    preds = {}
    for key, task in (("radiomics", "risk-radiomics"), ("cnn", "risk-cnn"), ("fusion", "fusion")):
        p = find_result(ctx.workdir, task)
        if p is not None:
            preds[key] = json.loads(p.read_text(encoding="utf-8"))
    seg_file = ctx.workdir / "segmentation.dcm"
    written = export_result_folder(ctx.ct, ctx.workdir, predictions=preds, kinds=("sr",),
                                   existing_seg=seg_file if seg_file.is_file() else None,
                                   on_missing_uids=str(ctx.params.get("on_missing_uids", "generate")))
    for name in written:
        ctx.outputs.add(name)
    ctx.results["dicom_sr"] = SR_FILE


def report(ctx: CaseContext) -> None:
    ev = _need("mediastinal_ai.evaluation.report", "write_case_report")
    paths = ev.write_case_report(ctx.workdir, ctx.workdir / "report", ct=ctx.ct, mask=ctx.mask,
                                 case_id=ctx.spec.case_id, synthetic=ctx.spec.synthetic)
    for p in paths:
        ctx.outputs.add(str(p.relative_to(ctx.workdir)))


def _device(device: str) -> str:
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"
