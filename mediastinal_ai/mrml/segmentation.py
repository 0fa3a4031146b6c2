"""Segmentation results ⇄ MRML: an editable tumor segment, a hidden probability volume and a
lesion table; re-thresholding from the stored probability without re-running the network."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from . import nodes

ATTR_THRESHOLD = "MediastinalAI.threshold"
#: "1" once the user changed the segment (Segment Editor, ...); "0" after an automatic write.
#: DICOM SEG export reads it, so an edited mask is not exported as AUTOMATIC.
ATTR_EDITED = "MediastinalAI.edited"
ATTR_INSTANCE_UIDS = "DICOM.instanceUIDs"  # set by Slicer's DICOM scalar-volume plugin

_own_writes: set[str] = set()  # segmentation nodes being written by this module (not user edits)
_watched: dict[str, tuple[Any, int]] = {}  # segmentation node ID → (vtkSegmentation, observer tag)


@contextlib.contextmanager
def _automatic_write(segmentation_node: Any) -> Iterator[None]:
    """Mark writes by this code so the edit watcher does not take them for user edits."""
    key = segmentation_node.GetID() if segmentation_node is not None else None
    if key:
        _own_writes.add(key)
    try:
        yield
    finally:
        if key:
            _own_writes.discard(key)


def watch_edits(segmentation_node: Any) -> None:
    """Set :data:`ATTR_EDITED` to "1" whenever the segments' voxels change outside this module.

    Segment Editor effects end in ``vtkSegmentation::SourceRepresentationModified``; this
    module's own writes (import, re-threshold) are excluded. An observer does not survive a
    scene save/load, so the Slicer module calls this again for the node it shows (idempotent);
    the attribute itself is saved with the scene.
    """
    if segmentation_node is None:
        return
    key = segmentation_node.GetID()
    segmentation = segmentation_node.GetSegmentation()
    known = _watched.get(key)
    if known is not None and known[0] is segmentation:
        return
    import slicer

    def on_modified(caller: Any, event: Any, node: Any = segmentation_node) -> None:
        if node.GetID() not in _own_writes:
            node.SetAttribute(ATTR_EDITED, "1")

    tag = segmentation.AddObserver(slicer.vtkSegmentation.SourceRepresentationModified, on_modified)
    _watched[key] = (segmentation, tag)


def is_edited(segmentation_node: Any) -> bool:
    return segmentation_node is not None and segmentation_node.GetAttribute(ATTR_EDITED) == "1"


def place_in_study(scene: Any, node: Any, volume_node: Any) -> None:
    """Put ``node`` under the CT's study in the subject hierarchy (as DICOM-loaded data is), so
    Slicer's DICOM export and the Data module show the result with its CT. No-op when the CT is
    not under a study (a file loaded directly) or the scene has no subject hierarchy."""
    sh = scene.GetSubjectHierarchyNode() if hasattr(scene, "GetSubjectHierarchyNode") else None
    if sh is None or node is None or volume_node is None:
        return
    ct_item = sh.GetItemByDataNode(volume_node)
    parent = sh.GetItemParent(ct_item) if ct_item else 0
    if not parent or parent == sh.GetSceneItemID():
        return
    item = sh.GetItemByDataNode(node)
    if not item:
        # In the Slicer app the subject-hierarchy plugin logic gives every new data node an item
        # under the scene at once (qSlicerSubjectHierarchyPluginLogic::onNodeAdded); without it
        # (slicer-core, scripts) the node has none yet, so it is created under the study here.
        sh.CreateItem(parent, node)
    elif sh.GetItemParent(item) != parent:
        sh.SetItemParent(item, parent)


def dicom_files_for_node(volume_node: Any, database: Any) -> list[str] | None:
    """The source DICOM files of a CT loaded through Slicer's DICOM browser, in slice order.

    Slicer's DICOM plugin stores ``DICOM.instanceUIDs`` (the i-th UID is the i-th slice, after
    its right-handed reordering); the files come from Slicer's DICOM database
    (``slicer.dicomDatabase.fileForInstance``). None when the node has no UIDs (not loaded from
    DICOM); :class:`InputError` when the database has lost files or the counts do not match.
    """
    uids = (volume_node.GetAttribute(ATTR_INSTANCE_UIDS) or "").split()
    if not uids:
        return None
    if database is None:
        raise InputError("this CT was loaded from DICOM but Slicer's DICOM database is not open: open the "
                         "DICOM module (or export NRRD/NIfTI instead)")
    files = [database.fileForInstance(uid) if uid != "Unknown" else "" for uid in uids]
    lost = [u for u, f in zip(uids, files) if not f or not Path(f).is_file()]
    if lost:
        raise InputError(f"{len(lost)} of the CT's {len(uids)} DICOM files are not in Slicer's DICOM database "
                         f"(e.g. instance {lost[0]}): re-import the series, or export NRRD/NIfTI instead")
    image = volume_node.GetImageData()
    n_slices = image.GetDimensions()[2] if image is not None else len(files)
    if len(files) != n_slices:
        raise InputError(f"the CT has {n_slices} slices but {len(files)} DICOM instances (multi-frame or "
                         "resampled volume): DICOM SEG export needs one file per slice")
    _check_slice_positions(volume_node, files)
    return [str(f) for f in files]


def _check_slice_positions(volume_node: Any, files: list[str], tolerance_mm: float = 0.1) -> None:
    """Each file's ImagePositionPatient must be where the node puts its slice: a CT moved, hardened
    through a transform or resampled after loading keeps ``DICOM.instanceUIDs``, and a SEG
    referencing those files would then sit in the wrong place."""
    import pydicom
    import vtk

    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["ImagePositionPatient"])
        ipp = ds.get("ImagePositionPatient")
        if ipp is None:
            continue  # nothing to compare (the SEG writer checks what it needs)
        ras = [m.GetElement(r, 2) * k + m.GetElement(r, 3) for r in range(3)]
        expected = (-ras[0], -ras[1], ras[2])  # RAS → LPS
        off = max(abs(float(a) - b) for a, b in zip(ipp, expected))
        if off > tolerance_mm:
            raise InputError(f"slice {k} of the CT is {off:.1f} mm away from its DICOM file's position: the volume "
                             "was moved, transformed or resampled after loading, so a DICOM SEG would not line up "
                             "with the series; export NRRD/NIfTI instead (or reload the series)", f)


def show_3d(segmentation_node: Any, show: bool = True) -> None:
    """Show (or hide) the segments as a surface in the 3D view, as the peer extensions' button does."""
    if segmentation_node is None:
        return
    if show:
        segmentation_node.CreateClosedSurfaceRepresentation()
    display = segmentation_node.GetDisplayNode()
    if display is None and show:
        segmentation_node.CreateDefaultDisplayNodes()
        display = segmentation_node.GetDisplayNode()
    if display is not None:
        display.SetVisibility3D(bool(show))


#: node references from the probability node to what re-thresholding needs besides it
REF_UNCERTAINTY = "MediastinalAIUncertainty"
REF_ANATOMY_LABELS = "MediastinalAIAnatomyLabels"
REF_ENVELOPE = "MediastinalAIMediastinalEnvelope"
ATTR_ANATOMY = "MediastinalAI.anatomy"  # JSON: ChestAnatomy.summary() (coverage, contrast, warnings)
ATTR_RESTRICT = "MediastinalAI.restrictToMediastinum"
#: the first run's ``--roi`` box (LPS mm, JSON list of six numbers; absent without one): a
#: re-threshold keeps only what lies inside it, as the first run did
ATTR_ROI = "MediastinalAI.roiLPS"
LESION_COLUMNS = ["lesion_id", "volume_ml", "max_diameter_mm", "centroid_L_mm", "centroid_P_mm", "centroid_S_mm",
                  "mean_hu", "max_probability", "compartment", "confidence", "review", "review_reasons"]


def _lesion_records(lesions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def num(v: Any) -> float:
        return float(v) if v is not None else float("nan")

    recs = []
    for r in lesions:
        c = r.get("centroid_lps_mm") or [np.nan] * 3
        recs.append({"lesion_id": int(r["lesion_id"]), "volume_ml": float(r["volume_ml"]),
                     "max_diameter_mm": float(r["max_diameter_mm"]), "centroid_L_mm": float(c[0]),
                     "centroid_P_mm": float(c[1]), "centroid_S_mm": float(c[2]), "mean_hu": float(r["mean_hu"]),
                     "max_probability": num(r.get("max_probability")), "compartment": str(r.get("compartment", "")),
                     "confidence": num(r.get("confidence")), "review": "yes" if r.get("review") else "no",
                     "review_reasons": str(r.get("review_reasons", ""))})
    return recs


def _referenced(scene: Any, node: Any, role: str) -> Any:
    nid = node.GetNodeReferenceID(role) if node is not None else None
    return scene.GetNodeByID(nid) if nid else None


def _publish(scene: Any, volume_node: Any, probability, mask, lesions, threshold: float, model_label: str,
             segmentation_node: Any = None, probability_node: Any = None, table_node: Any = None, *,
             uncertainty=None, anatomy=None, restrict: bool = True,
             roi_lps: tuple[float, ...] | list[float] | None = None) -> dict[str, Any]:
    with _automatic_write(segmentation_node):
        seg_node, segment_id = nodes.mask_to_segment(scene, mask, volume_node, segmentation_node=segmentation_node)
    seg_node.SetAttribute("MediastinalAI.model", model_label)
    seg_node.SetAttribute(ATTR_EDITED, "0")
    place_in_study(scene, seg_node, volume_node)
    name = volume_node.GetName()
    prob_node = nodes.probability_to_node(scene, probability, reference=volume_node, node=probability_node,
                                          name=f"{name} tumor probability")
    prob_node.SetAttribute(ATTR_THRESHOLD, f"{threshold:g}")
    prob_node.SetAttribute(ATTR_RESTRICT, "1" if restrict else "0")
    if roi_lps:
        prob_node.SetAttribute(ATTR_ROI, json.dumps([float(v) for v in roi_lps]))
    elif prob_node.GetAttribute(ATTR_ROI):
        prob_node.RemoveAttribute(ATTR_ROI)  # a reused node must not keep an earlier run's box
    if uncertainty is not None:  # SD over the mirrored passes: where the model is unsure, for review
        unc_node = nodes.probability_to_node(scene, uncertainty, reference=volume_node, role="uncertainty",
                                             node=_referenced(scene, prob_node, REF_UNCERTAINTY),
                                             name=f"{name} tumor uncertainty")
        prob_node.SetNodeReferenceID(REF_UNCERTAINTY, unc_node.GetID())
    if anatomy is not None:  # coarse and hidden: kept so a re-threshold drops the same components
        for role, vol, what in ((REF_ANATOMY_LABELS, anatomy.labels, "chest anatomy"),
                                (REF_ENVELOPE, anatomy.envelope, "mediastinal envelope")):
            n = nodes.volume_to_node(scene, vol, name=f"{name} {what} (coarse)", role="anatomy",
                                     node=_referenced(scene, prob_node, role))
            nodes.hide_from_slice_views(scene, n)
            prob_node.SetNodeReferenceID(role, n.GetID())
        prob_node.SetAttribute(ATTR_ANATOMY, json.dumps(anatomy.summary(), default=str))
    table = nodes.records_to_table(scene, _lesion_records(lesions), name=f"{name} lesions",
                                   node=table_node, columns=LESION_COLUMNS, attributes={"MediastinalAI.model": model_label})
    nodes.stamp_provenance([seg_node, prob_node, table, _referenced(scene, prob_node, REF_UNCERTAINTY)], volume_node,
                           model={"label": model_label}, task="segmentation", threshold=threshold,
                           restrict_to_mediastinum=restrict)
    return {"segmentation_node": seg_node, "segment_id": segment_id, "probability_node": prob_node,
            "table_node": table, "lesions": lesions, "threshold": threshold, "model": model_label}


def segment_tumor(scene: Any, volume_node: Any, model: Any = None, threshold: float = 0.5,
                  roi_lps: tuple[float, ...] | None = None, device: str = "auto", progress: Any = None,
                  cancel: Any = None, **kw: Any) -> dict[str, Any]:
    """In-process segmentation of a CT volume node (the batch/headless path; the GUI runs the
    same code in a child process and calls :func:`import_result`). ``kw``: ``tta``, ``crop``,
    ``restrict_to_mediastinum`` of :func:`~mediastinal_ai.segmentation.segment_volume`."""
    from ..models import resolve
    from ..segmentation import load_model, segment_volume

    ct = nodes.node_to_volume(volume_node, units="HU")
    m = load_model(resolve(model, task="segmentation"), device=device)
    res = segment_volume(ct, m, threshold=threshold, roi_lps=roi_lps, progress=progress, cancel=cancel, **kw)
    return _publish(scene, volume_node, res.probability, res.mask, res.lesions, threshold, m.label,
                    uncertainty=res.uncertainty, anatomy=res.chest,
                    restrict=bool(res.params.get("restrict_to_mediastinum", True)), roi_lps=roi_lps)


def _on_grid(vol, ct, what: str, d: Path):
    if vol.shape != ct.shape:
        raise InputError(f"{what} shape {vol.shape} does not match the CT {ct.shape}", d)
    return ct.with_array(vol.array.astype(np.float32), units="probability")


def import_result(scene: Any, volume_node: Any, result_dir: str | Path, threshold: float | None = None) -> dict[str, Any]:
    """Load a ``mediastinal-ai segment`` output folder into the scene (re-thresholded if asked).

    The segment is rebuilt from the probability map with the run's own post-processing (the
    saved anatomy, so components outside the mediastinum are dropped as in ``mask.nrrd``)."""
    from ..anatomy import ChestAnatomy
    from ..case_files import require_result  # segmentation_result.json, or an older result.json
    from ..io.probability import read_probability  # uint16 fixed point or old float32 maps
    from ..segmentation.inference import postprocess_full

    d = Path(result_dir)
    if not (d / "probability.nrrd").is_file():
        raise InputError("segmentation result is incomplete: probability.nrrd missing", d)
    info = json.loads(require_result(d, "segmentation").read_text(encoding="utf-8"))
    ct = nodes.node_to_volume(volume_node, units="HU")
    prob = _on_grid(read_probability(d / "probability.nrrd"), ct, "probability map", d)
    unc = _on_grid(read_probability(d / "uncertainty.nrrd"), ct, "uncertainty map", d) \
        if (d / "uncertainty.nrrd").is_file() else None
    anatomy = ChestAnatomy.load(d, info.get("anatomy"))
    params = info.get("params") or {}
    restrict = bool(params.get("restrict_to_mediastinum", True))
    t = float(info.get("threshold", 0.5) if threshold is None else threshold)
    roi = params.get("roi_lps") or None
    mask, _, lesions, _ = postprocess_full(ct, prob, t, roi, anatomy=anatomy, uncertainty=unc,
                                           restrict_to_mediastinum=restrict)
    return _publish(scene, volume_node, prob, mask, lesions, t, str(info.get("model", "")), uncertainty=unc,
                    anatomy=anatomy, restrict=restrict, roi_lps=roi)


def _recorded_roi(probability_node: Any) -> list[float] | None:
    text = probability_node.GetAttribute(ATTR_ROI)
    if not text:
        return None
    try:
        box = json.loads(text)
    except ValueError as e:
        raise InputError(f"the probability map's recorded ROI box is not readable: {text!r}") from e
    if not (isinstance(box, list) and len(box) == 6 and all(isinstance(v, (int, float)) for v in box)):
        raise InputError(f"the probability map's recorded ROI box is not six numbers: {text!r}")
    return [float(v) for v in box]


def rethreshold(scene: Any, probability_node: Any, segmentation_node: Any, segment_id: str, threshold: float,
                table_node: Any = None) -> dict[str, Any]:
    """New threshold on the stored probability map: segment and lesion table are replaced in place
    (with the same ROI box, mediastinum restriction and lesion columns as the first run)."""
    from ..anatomy import ChestAnatomy
    from ..segmentation.inference import postprocess_full

    prob = nodes.node_to_volume(probability_node, units="probability")
    ct_like = prob.with_array(np.zeros(prob.shape, np.int16), units="HU")
    ref_id = segmentation_node.GetNodeReferenceID("referenceImageGeometryRef")
    ref = scene.GetNodeByID(ref_id) if ref_id else None
    if ref is not None:
        ct_like = nodes.node_to_volume(ref, units="HU")
    unc_node = _referenced(scene, probability_node, REF_UNCERTAINTY)
    unc = nodes.node_to_volume(unc_node, units="probability") if unc_node is not None else None
    lab_node = _referenced(scene, probability_node, REF_ANATOMY_LABELS)
    env_node = _referenced(scene, probability_node, REF_ENVELOPE)
    anatomy = None
    if lab_node is not None and env_node is not None:
        summary = json.loads(probability_node.GetAttribute(ATTR_ANATOMY) or "{}")
        anatomy = ChestAnatomy.from_volumes(nodes.node_to_volume(lab_node), nodes.node_to_volume(env_node), summary)
    restrict = probability_node.GetAttribute(ATTR_RESTRICT) != "0"
    roi = _recorded_roi(probability_node)
    mask, _, lesions, _ = postprocess_full(ct_like, prob, float(threshold), roi, anatomy=anatomy, uncertainty=unc,
                                           restrict_to_mediastinum=restrict)
    with _automatic_write(segmentation_node):
        nodes.mask_to_segment(scene, mask, ref if ref is not None else probability_node,
                              segmentation_node=segmentation_node, segment_id=segment_id)
    segmentation_node.SetAttribute(ATTR_EDITED, "0")
    probability_node.SetAttribute(ATTR_THRESHOLD, f"{float(threshold):g}")
    if table_node is not None:
        nodes.records_to_table(scene, _lesion_records(lesions), node=table_node, columns=LESION_COLUMNS)
    return {"segmentation_node": segmentation_node, "segment_id": segment_id, "lesions": lesions,
            "table_node": table_node, "threshold": float(threshold)}


def export_dicom_seg(scene: Any, segmentation_node: Any, segment_id: str, volume_node: Any, path: str | Path,
                     dicom_files: list[str] | None = None) -> Path:
    """The (possibly edited) segment as DICOM SEG referencing the CT's source series.

    ``dicom_files``: the CT's source files in slice order when the node does not carry them
    (a CT loaded through Slicer's DICOM browser: see :func:`dicom_files_for_node`).
    """
    from ..segmentation.dicom_seg import write_dicom_seg

    ct = nodes.node_to_volume(volume_node, units="HU")
    if dicom_files:
        ct = ct.with_array(ct.array, dicom_files=list(dicom_files))
    mask = nodes.segment_to_mask(segmentation_node, segment_id, volume_node)
    if not np.asarray(mask.array).any():
        raise InputError("the segment is empty: nothing to export")
    return write_dicom_seg(mask, ct, path, manual=is_edited(segmentation_node))


def export_mask(scene: Any, segmentation_node: Any, segment_id: str, volume_node: Any, path: str | Path) -> Path:
    """The (possibly edited) segment as NRRD or NIfTI on the CT grid."""
    from ..io import write_image

    return write_image(nodes.segment_to_mask(segmentation_node, segment_id, volume_node), path)
