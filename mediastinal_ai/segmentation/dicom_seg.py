"""DICOM SEG export (highdicom) of a tumor mask, referencing the source CT series.

A SEG must reference the DICOM images it was drawn on, so export needs a CT that was read
from DICOM (``Volume.metadata["dicom_files"]``, set by :func:`mediastinal_ai.io.read_ct`);
for NIfTI/NRRD sources it refuses with a clear message (export NRRD/NIfTI instead).

What the SEG records (checked by ``dciodvfy`` in the tests, zero errors):

* one segment per lesion when the lesion label map is given (so a DICOM SR can reference each
  lesion's own segment), else one segment for the whole mask;
* segmented property Mass in category Morphologically Abnormal Structure, anatomic region
  Mediastinum with the lesion's compartment as modifier (Anterior by default);
* algorithm identification: the model's name and version, family Artificial Intelligence, and
  parameters (weights sha256, software version, threshold, "demo — not for clinical use");
* algorithm type AUTOMATIC, or SEMIAUTOMATIC for an AI result edited by hand (``edited``/``manual``);
* source series with blank UIDs (anonymised): deterministic generated UIDs with a warning, or a
  refusal (:func:`mediastinal_ai.pacs.sources.prepare_sources`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..volume import Volume

SEGMENT_LABEL = "Anterior mediastinal tumor"
DEFAULT_ALGORITHM = "MediastinalAI 3D U-Net"
TUMOR_RGB = (230, 89, 64)  # the Slicer module's tumour colour (0.90, 0.35, 0.25)


def compartment_modifier(compartment: str | None) -> Any:
    """Anatomic region modifier for a mediastinal compartment (None: no modifier)."""
    from pydicom.sr.codedict import codes

    return {"anterior": codes.SCT.Anterior, "posterior": codes.SCT.Posterior, None: codes.SCT.Anterior}.get(
        compartment)


def _algorithm(hd: Any, model: Any, algorithm: str, params: dict[str, Any] | None) -> Any:
    from pydicom.sr.codedict import codes

    from .. import __version__

    if model is None:
        name, version, pars = algorithm, __version__, {"software": f"mediastinal-ai {__version__}"}
    else:
        name, version, pars = model.name, model.version or "unknown", model.parameters()
    for k, v in (params or {}).items():
        pars[str(k)] = str(v)
    return hd.AlgorithmIdentificationSequence(name=name, version=version, family=codes.cid7162.ArtificialIntelligence,
                                              source="MediastinalAI", parameters=pars)


def segment_descriptions(hd: Any, n_segments: int, *, model: Any = None, algorithm: str = DEFAULT_ALGORITHM,
                         edited: bool = False, lesions: list[dict[str, Any]] | None = None,
                         params: dict[str, Any] | None = None, label: str = SEGMENT_LABEL) -> list[Any]:
    from pydicom.sr.codedict import codes

    by_id = {int(r["lesion_id"]): r for r in lesions or []}
    out = []
    for i in range(1, n_segments + 1):
        row = by_id.get(i, {})
        desc = hd.seg.SegmentDescription(
            segment_number=i, segment_label=label if n_segments == 1 else f"{label} {i}",
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Mass,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC if edited else
            hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=_algorithm(hd, model, algorithm, params),
            tracking_id=f"lesion {i}", tracking_uid=hd.UID(),
            anatomic_regions=[codes.SCT.Mediastinum],
            display_color=hd.color.CIELabColor.from_rgb(*TUMOR_RGB),
        )
        modifier = compartment_modifier(row.get("compartment"))
        if modifier is not None:
            desc.AnatomicRegionSequence[0].AnatomicRegionModifierSequence = [hd.sr.CodedConcept.from_code(modifier)]
        out.append(desc)
    return out


def make_dicom_seg(mask: Volume, ct: Volume, *, algorithm: str = DEFAULT_ALGORITHM, manual: bool = False,
                   edited: bool = False, model: Any = None, labels: np.ndarray | None = None,
                   lesions: list[dict[str, Any]] | None = None, params: dict[str, Any] | None = None,
                   on_missing_uids: str = "generate", sources: Any = None) -> Any:
    """The BINARY SEG as a highdicom dataset (see :func:`write_dicom_seg`)."""
    import highdicom as hd

    from ..pacs.sources import MANUFACTURER, prepare_sources, series_number_after

    if mask.shape != ct.shape:
        raise InputError(f"mask shape {mask.shape} does not match the CT {ct.shape}")
    src = sources if sources is not None else prepare_sources(ct, on_missing_uids)
    binary = np.asarray(mask.array) > 0
    if labels is not None and np.asarray(labels).shape == ct.shape and int(np.max(labels)) > 0:
        lab = np.asarray(labels).astype(np.int64) * binary
        n = int(lab.max())
        pixels = np.stack([(lab == i) for i in range(1, n + 1)], axis=-1).astype(np.uint8)
    else:
        n = 1
        pixels = binary.astype(np.uint8)
    descs = segment_descriptions(hd, n, model=model, algorithm=algorithm, edited=edited or manual, lesions=lesions,
                                 params=params)
    demo = bool(getattr(model, "demo", False))
    try:
        seg = hd.seg.Segmentation(
            source_images=src.datasets, pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descs,
            series_instance_uid=hd.UID(), series_number=series_number_after(src, 100), sop_instance_uid=hd.UID(),
            instance_number=1, manufacturer=MANUFACTURER, manufacturer_model_name="MediastinalAI",
            software_versions=_software(), device_serial_number="0",
            series_description=_description("MediastinalAI tumor SEG", demo),
            content_description=_description("tumor segmentation", demo, edited or manual),
            content_label="TUMOR",
        )
    except (ValueError, AttributeError, TypeError, KeyError) as e:
        raise InputError(f"DICOM SEG could not be made from this series ({type(e).__name__}: {e}); "
                         "mask.nrrd holds the same result", ct.metadata.get("source")) from e
    seg.SpecificCharacterSet = "ISO_IR 192"  # the demo disclaimer's dash
    return seg


def _software() -> str:
    from .. import __version__

    return f"mediastinal-ai {__version__}"


def _description(what: str, demo: bool, edited: bool = False) -> str:
    from .. import DEMO_DISCLAIMER

    text = what + (" (AI, edited)" if edited else "")
    text = f"{text}, {DEMO_DISCLAIMER}" if demo else text
    return fit_lo(text)


def fit_lo(text: str, limit: int = 64) -> str:
    """Shorten to a DICOM LO value: 64 bytes in UTF-8 (dciodvfy counts bytes, not characters)."""
    if len(text.encode("utf-8")) <= limit:
        return text
    while len((text + "…").encode("utf-8")) > limit:
        text = text[:-1]
    return text + "…"


def write_dicom_seg(mask: Volume, ct: Volume, out_path: str | Path, *, algorithm: str = DEFAULT_ALGORITHM,
                    manual: bool = False, edited: bool = False, model: Any = None, labels: np.ndarray | None = None,
                    lesions: list[dict[str, Any]] | None = None, params: dict[str, Any] | None = None,
                    on_missing_uids: str = "generate", sources: Any = None) -> Path:
    """Write the BINARY SEG of ``mask`` (atomically). ``model`` is a
    :class:`~mediastinal_ai.pacs.ModelRef`; ``labels`` (lesion ids on the CT grid) gives one
    segment per lesion; ``lesions`` (the lesion table) gives each its compartment; ``manual`` /
    ``edited``: the AI result was edited by hand (SEMIAUTOMATIC)."""
    from ..fileio import atomic_path

    seg = make_dicom_seg(mask, ct, algorithm=algorithm, manual=manual, edited=edited, model=model, labels=labels,
                         lesions=lesions, params=params, on_missing_uids=on_missing_uids, sources=sources)
    out = Path(out_path)
    with atomic_path(out) as tmp:
        seg.save_as(tmp)
    return out


def read_dicom_seg(path: str | Path, ct: Volume) -> Volume:
    """A SEG written for ``ct`` back to a mask on the CT grid (frames placed by their position)."""
    import pydicom

    ds = pydicom.dcmread(path)
    frames = ds.pixel_array
    if frames.ndim == 2:
        frames = frames[None]
    out = np.zeros(ct.shape, np.uint8)
    normal = ct.direction[:, 2]
    z0 = np.asarray(ct.origin_xyz) @ normal
    for f, item in zip(frames, ds.PerFrameFunctionalGroupsSequence):
        pos = np.asarray([float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient])
        k = int(round((pos @ normal - z0) / ct.spacing_xyz[2]))
        if not 0 <= k < ct.shape[0]:
            raise InputError(f"SEG frame at {pos.tolist()} lies outside the CT", path)
        out[k] |= (f > 0).astype(np.uint8)
    return ct.with_array(out, units="label")
