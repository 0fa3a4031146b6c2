"""TID 1500 measurement report (Comprehensive 3D SR, highdicom) of one case.

Content (what a PACS viewer shows, top to bottom):

* **Imaging measurements**, one TID 1411 volumetric group per lesion, each referencing its own
  segment of the BINARY SEG and the source CT series: volume (mL), maximum 3D diameter (mm), mean
  and SD attenuation (HU), maximum probability, confidence (mean probability inside the lesion,
  "Certainty of Finding"), finding site Mediastinum with the compartment as topographical
  modifier, "needs review" (yes/no), and the segmentation model as algorithm identification.
* One TID 1501 group for the segmentation summary (lesion count, total volume) and one per AI
  prediction: WHO risk (radiomics, CNN: probability of a high-risk WHO type and the risk group as
  "Lesion Risk" high/low), CT+CTC fusion and its CT-only baseline (probability of malignancy, the
  benign/malignant call, the top-3 lesion classes with probabilities, and the CTC level that was
  input), radiomics features optionally (pyradiomics names as codes). Every group names its
  model in its algorithm identification: name, version, parameters ``model_sha256=…``,
  ``software=mediastinal-ai X.Y``, ``threshold=…``, and ``note=demo — not for clinical use`` for
  demo models.

Concepts without a DICOM/SNOMED code use the private coding scheme ``99MEDAI`` (declared in the
object's Coding Scheme Identification Sequence).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..errors import InputError

PRIVATE_SCHEME = "99MEDAI"
PRIVATE_SCHEME_NAME = "MediastinalAI local codes"


def _private(value: str, meaning: str) -> Any:
    from highdicom.sr import CodedConcept

    from ..segmentation.dicom_seg import fit_lo

    return CodedConcept(value, PRIVATE_SCHEME, fit_lo(meaning))  # > 16 characters: LongCodeValue


def _unit(value: str, meaning: str) -> Any:
    from highdicom.sr import CodedConcept

    return CodedConcept(value, "UCUM", meaning)


def finite_float(x: Any) -> float | None:
    """``x`` as a finite float, or None (missing, unparsable, NaN or infinite): an SR holds no NaN."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _algorithm_id(model: Any, extra: dict[str, Any] | None = None) -> Any:
    import highdicom as hd

    params = model.parameters()
    params.update({str(k): str(v) for k, v in (extra or {}).items() if v is not None})
    return hd.sr.AlgorithmIdentification(name=model.name, version=model.version or "unknown",
                                         parameters=[f"{k}={v}" for k, v in params.items()])


def _measurement(name: Any, value: Any, unit: Any, model: Any = None, derivation: Any = None) -> Any | None:
    import highdicom as hd

    v = finite_float(value)
    if v is None:
        return None
    return hd.sr.Measurement(name=name, value=v, unit=unit, derivation=derivation,
                             algorithm_id=None if model is None else _algorithm_id(model))


MEDIASTINAL = ("anterior", "middle", "posterior", None)


def _finding_site(compartment: str | None) -> Any:
    """Mediastinum (with Anterior/Posterior as topographical modifier) for a mediastinal
    compartment; None for a lesion the anatomy step placed elsewhere ("lung", "other")."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from ..segmentation.dicom_seg import compartment_modifier

    if compartment not in MEDIASTINAL:
        return None
    return hd.sr.FindingSite(anatomic_location=codes.SCT.Mediastinum,
                             topographical_modifier=compartment_modifier(compartment))


def _referenced_segment(seg: Any, segment_number: int) -> Any:
    """The segment, with the source series it was drawn on (built by hand: highdicom's
    ``from_segmentation`` reads per-frame segment identification, which a one-segment SEG keeps in
    the shared functional groups)."""
    import highdicom as hd

    if seg is None:
        return None
    return hd.sr.ReferencedSegment(
        sop_class_uid=str(seg.SOPClassUID), sop_instance_uid=str(seg.SOPInstanceUID), segment_number=segment_number,
        source_series=hd.sr.SourceSeriesForSegmentation(str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)))


def _lesion_group(row: dict[str, Any], seg: Any, segment_number: int, model: Any) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    ident = f"lesion {row.get('lesion_id', segment_number)}"
    uid = None
    if seg is not None:
        for item in seg.SegmentSequence:
            if int(item.SegmentNumber) == segment_number and "TrackingUID" in item:
                uid = str(item.TrackingUID)
    measurements = [m for m in (
        _measurement(codes.SCT.Volume, row.get("volume_ml"), _unit("mL", "milliliter")),
        _measurement(codes.SCT.Diameter, row.get("max_diameter_mm"), codes.UCUM.Millimeter,
                     derivation=codes.SCT.Maximum),
        _measurement(codes.DCM.AttenuationCoefficient, row.get("mean_hu"), codes.UCUM.HounsfieldUnit,
                     derivation=codes.SCT.Mean),
        _measurement(codes.DCM.AttenuationCoefficient, row.get("sd_hu"), codes.UCUM.HounsfieldUnit,
                     derivation=codes.SCT.StandardDeviation),
        _measurement(codes.DCM.Probability, row.get("max_probability"), codes.UCUM.NoUnits,
                     derivation=codes.SCT.Maximum),
        _measurement(codes.DCM.CertaintyOfFinding, row.get("confidence"), codes.UCUM.NoUnits),
    ) if m is not None]
    evaluations = []
    if row.get("review") is not None and row.get("review") != "":
        review = row["review"] in (True, "True", "true", "1", 1)
        evaluations.append(hd.sr.QualitativeEvaluation(_private("REVIEW", "Needs review by a reader"),
                                                       codes.SCT.Yes if review else codes.SCT.No))
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=uid or hd.UID(), identifier=ident),
        referenced_segment=_referenced_segment(seg, segment_number),
        finding_type=codes.SCT.Mass, algorithm_id=_algorithm_id(model),
        finding_sites=[site] if (site := _finding_site(row.get("compartment"))) is not None else None,
        measurements=measurements or None, qualitative_evaluations=evaluations or None,
    )


def _group(identifier: str, model: Any, measurements: list[Any], evaluations: list[Any],
           extra: dict[str, Any] | None = None) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=identifier),
        finding_type=codes.SCT.Mass, algorithm_id=_algorithm_id(model, extra),
        finding_sites=[_finding_site("anterior")],
        measurements=[m for m in measurements if m is not None] or None,
        qualitative_evaluations=[e for e in evaluations if e is not None] or None,
    )


def _risk_group(kind: str, res: dict[str, Any], model: Any, features: bool) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from ..segmentation.dicom_seg import fit_lo

    p = res.get("probability_high_risk")
    measurements = [_measurement(_private("PHIGHRISK", "Probability of high-risk WHO type"), p, codes.UCUM.NoUnits)]
    if features:
        for f in res.get("features") or []:
            name = str(f.get("feature", ""))
            if name:
                measurements.append(_measurement(hd.sr.CodedConcept(name, "99PYRADIOMICS", fit_lo(name)), f.get("value"),
                                                 codes.UCUM.NoUnits))
    group = str(res.get("group", ""))
    ev = None
    if group in ("high", "low"):
        ev = hd.sr.QualitativeEvaluation(codes.DCM.LesionRisk, codes.SCT.HighRisk if group == "high" else
                                         codes.SCT.LowRisk)
    return _group(f"WHO risk ({kind})", model, measurements, [ev], {"threshold": res.get("threshold")})


def _fusion_group(kind: str, summary: dict[str, Any], model: Any, ctc: Any, ctc_unit: str) -> Any:
    import highdicom as hd
    from pydicom.sr.codedict import codes

    measurements = [_measurement(_private("PMALIGNANT", "Probability of malignancy"), summary.get("p_malignant"),
                                 codes.UCUM.NoUnits)]
    evaluations = []
    call = str(summary.get("call", ""))
    if call in ("benign", "malignant"):
        evaluations.append(hd.sr.QualitativeEvaluation(_private("MALIGNANCY", "Benign or malignant"),
                                                       codes.SCT.Malignant if call == "malignant" else codes.SCT.Benign))
    for k, t in enumerate(summary.get("top3") or [], start=1):
        cls = str(t.get("class", ""))
        display = str(t.get("display") or cls)
        evaluations.append(hd.sr.QualitativeEvaluation(_private(f"CLASS{k}", f"Lesion class, rank {k}"),
                                                       _private(cls.upper().replace(" ", "") or "UNKNOWN", display)))
        measurements.append(_measurement(_private(f"PCLASS{k}", f"Probability of lesion class, rank {k}"),
                                         t.get("probability"), codes.UCUM.NoUnits))
    if ctc is not None:
        measurements.append(_measurement(_private("CTC", "Circulating tumor cells (input)"), ctc,
                                         _unit("{" + ctc_unit + "}", ctc_unit)))
    return _group(kind, model, measurements, evaluations, {"threshold": summary.get("threshold")})


def prediction_groups(predictions: dict[str, Any], *, radiomics_features: bool = False) -> tuple[list[Any], list[str]]:
    """TID 1501 groups for the AI predictions (``radiomics``, ``cnn``, ``fusion`` result dicts as
    the predict commands and the batch steps write them) and the models they name."""
    from .sources import ModelRef

    groups, models = [], []
    rad = predictions.get("radiomics")
    if rad:
        m = rad.get("model") or {}
        ref = ModelRef(str(m.get("name", "unknown")), str(m.get("version", "")), str(m.get("sha256", "")),
                       bool(m.get("demo", False)), "risk-radiomics")
        groups.append(_risk_group("radiomics", rad, ref, radiomics_features))
        models.append(ref)
    cnn = predictions.get("cnn")
    if cnn:
        ref = ModelRef.from_label(str(cnn.get("model", "")), str(cnn.get("model_sha256", "")), task="risk-cnn")
        groups.append(_risk_group("CNN", cnn, ref, False))
        models.append(ref)
    fus = predictions.get("fusion")
    if fus:
        ctc = (fus.get("inputs") or {}).get("ctc")
        unit = str(fus.get("ctc_unit") or "FU/3mL")
        for key, kind in (("fusion", "CT+CTC fusion"), ("ct_only", "CT-only baseline")):
            s = fus.get(key)
            if not s:
                continue
            ref = ModelRef(str(s.get("model_name") or ModelRef.from_label(str(s.get("model", ""))).name),
                           ModelRef.from_label(str(s.get("model", ""))).version, str(s.get("model_sha256", "")),
                           bool(s.get("demo", False)), "fusion" if key == "fusion" else "fusion-ct-only")
            groups.append(_fusion_group(kind, s, ref, ctc if key == "fusion" else None, unit))
            models.append(ref)
    return groups, models


def make_measurement_report(sources: Any, lesions: list[dict[str, Any]], seg_model: Any, *, seg: Any = None,
                            segment_numbers: dict[int, int] | None = None, predictions: dict[str, Any] | None = None,
                            radiomics_features: bool = False, threshold: float | None = None) -> Any:
    """The Comprehensive 3D SR (highdicom dataset).

    ``sources``: :class:`~.sources.SourceSeries`; ``seg``: the BINARY SEG dataset the lesions'
    segments are in (``segment_numbers`` maps lesion id → segment number, default the lesion id);
    ``seg_model``: :class:`~.sources.ModelRef` of the segmentation model."""
    import highdicom as hd
    from pydicom.dataset import Dataset
    from pydicom.sr.codedict import codes

    from .. import DEMO_DISCLAIMER, __version__
    from ..segmentation.dicom_seg import fit_lo
    from .sources import MANUFACTURER, series_number_after

    numbers = segment_numbers or {}
    imaging = []
    n_segments = len(seg.SegmentSequence) if seg is not None else 0
    for row in lesions:
        lid = int(row.get("lesion_id", 0))
        num = numbers.get(lid, lid if lid <= n_segments else 1)
        imaging.append(_lesion_group(row, seg, num, seg_model))
    total = sum(finite_float(r.get("volume_ml")) or 0.0 for r in lesions)
    imaging.append(_group("segmentation summary", seg_model, [
        _measurement(_private("NLESIONS", "Number of lesions found"), len(lesions), _unit("{lesions}", "lesions")),
        _measurement(_private("TOTALVOL", "Total tumor volume"), round(total, 3), _unit("mL", "milliliter")),
    ], [], {"threshold": threshold}))
    pred_groups, pred_models = prediction_groups(predictions or {}, radiomics_features=radiomics_features)
    imaging += pred_groups
    device = hd.sr.ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="MediastinalAI", manufacturer_name=MANUFACTURER, model_name=f"mediastinal-ai {__version__}"))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion, imaging_measurements=imaging,
        title=codes.cid7021.ImagingMeasurementReport)
    demo = bool(seg_model.demo) or any(m.demo for m in pred_models)
    evidence = list(sources.datasets) + ([seg] if seg is not None else [])
    try:
        sr = hd.sr.Comprehensive3DSR(
            evidence=evidence, content=report, series_instance_uid=hd.UID(),
            series_number=series_number_after(sources, 102), sop_instance_uid=hd.UID(), instance_number=1,
            manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False)
    except (ValueError, AttributeError, TypeError, KeyError) as e:
        raise InputError(f"DICOM SR could not be made from this series ({type(e).__name__}: {e}); "
                         "segmentation_result.json and lesions.csv hold the same figures") from e
    sr.SpecificCharacterSet = "ISO_IR 192"
    sr.SeriesDescription = fit_lo("MediastinalAI measurements" + (f", {DEMO_DISCLAIMER}" if demo else ""))
    sr.SoftwareVersions = f"mediastinal-ai {__version__}"
    sr.ManufacturerModelName = "MediastinalAI"
    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = PRIVATE_SCHEME_NAME
    item.CodingSchemeResponsibleOrganization = "MediastinalAI developers"
    items = [item]
    if radiomics_features:
        rad = Dataset()
        rad.CodingSchemeDesignator = "99PYRADIOMICS"
        rad.CodingSchemeName = "pyradiomics feature names"
        rad.CodingSchemeResponsibleOrganization = "MediastinalAI developers"
        items.append(rad)
    sr.CodingSchemeIdentificationSequence = items
    return sr


def write_measurement_report(out_path: str | Path, *args: Any, **kw: Any) -> Path:
    """Write the SR atomically (arguments as :func:`make_measurement_report`)."""
    from ..fileio import atomic_path

    sr = make_measurement_report(*args, **kw)
    out = Path(out_path)
    with atomic_path(out) as tmp:
        sr.save_as(tmp)
    return out
