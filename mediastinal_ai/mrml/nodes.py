"""Core data ⇄ MRML nodes: the only place that knows how Slicer stores images, segments, tables.

Runs on ``slicer-core`` (MRML from PyPI, no Slicer application, no Qt) and inside Slicer alike;
it imports ``slicer`` and ``vtk`` only, never ``qt`` or ``slicer.util``.

Geometry
    :class:`~mediastinal_ai.volume.Volume` is in the file convention (LPS); MRML is RAS.
    ``IJKToRAS = diag(-1, -1, 1, 1) · IJKToLPS``. Arrays are ``[z, y, x]`` on both sides (a
    vtkImageData with dimensions (x, y, z) and x fastest is the same memory layout), so a voxel
    ``array[k, j, i]`` keeps its value and its physical point: the LPS point of index (i, j, k)
    is the node's RAS point with x and y negated.

API (what the task adapters build on)
    - :func:`new_scene` – an MRML scene with Slicer's default colour tables.
    - :func:`volume_to_node` / :func:`node_to_volume` – ``Volume`` ⇄ ``vtkMRMLScalarVolumeNode``
      (units and metadata in node attributes).
    - :func:`probability_to_node` – a probability map as a scalar volume (units
      ``"probability"``, window 0..1), hidden from slice views unless asked;
      :func:`show_in_slice_views` puts any volume in the slice views (background / coloured
      foreground overlay) when the scene has slice views (the Slicer app).
    - :func:`mask_to_segment` / :func:`segment_to_mask` – mask ⇄ segment stored as a binary
      labelmap (Segment Editor edits it at once), with name, colour, standard terminology and
      the CT as reference geometry; :func:`find_segment` finds a segment by name,
      :func:`find_tumor_segment` the newest MediastinalAI tumour segment in a scene.
    - :func:`jump_slices_to` – centre the slice views on a RAS point (no-op without views).
    - :func:`records_to_table` / :func:`table_to_records` – ``list[dict]`` ⇄
      ``vtkMRMLTableNode`` with typed columns (numbers stay numbers).
    - :func:`save_scene` / :func:`load_scene` – ``.mrml`` with each node's file beside it, or
      a single ``.mrb`` bundle.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from ..errors import InputError
from ..fileio import _json_default as _fileio_json_default
from ..volume import Volume
from . import terminology

log = logging.getLogger(__name__)

#: LPS ⇄ RAS (its own inverse).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

ATTR_UNITS = "MediastinalAI.units"
ATTR_METADATA = "MediastinalAI.metadata"
ATTR_ROLE = "MediastinalAI.role"  # "ct", "probability", "gradcam", "lesions", ...

BINARY_LABELMAP = "Binary labelmap"  # vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()


# ---------------------------------------------------------------------------- scene
def new_scene() -> slicer.vtkMRMLScene:
    """An empty MRML scene with Slicer's default colour tables (as the application has)."""
    scene = slicer.vtkMRMLScene()
    _ensure_default_colors(scene)
    return scene


def _ensure_default_colors(scene: slicer.vtkMRMLScene) -> None:
    if scene.GetNodeByID("vtkMRMLColorTableNodeGrey") is None:
        logic = slicer.vtkMRMLColorLogic()
        logic.SetMRMLScene(scene)
        logic.SetMRMLScene(None)  # the default colour nodes stay; the logic need not


# ---------------------------------------------------------------------------- matrices
def _vtk_matrix(m: np.ndarray) -> vtk.vtkMatrix4x4:
    vm = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            vm.SetElement(r, c, float(m[r, c]))
    return vm


def _np_matrix(vm: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[vm.GetElement(r, c) for c in range(4)] for r in range(4)])


def ijk_to_ras_matrix(volume: Volume) -> np.ndarray:
    """4×4 IJK→RAS of a :class:`Volume` (LPS geometry)."""
    return LPS_TO_RAS @ volume.ijk_to_lps_matrix()


def _geometry_from_ijk_to_ras(m: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], np.ndarray]:
    lps = LPS_TO_RAS @ m
    lin = lps[:3, :3]
    spacing = np.linalg.norm(lin, axis=0)
    if np.any(spacing <= 0):
        raise InputError("volume node has a degenerate IJK-to-RAS matrix (zero spacing)")
    direction = lin / spacing
    return tuple(float(s) for s in spacing), tuple(float(o) for o in lps[:3, 3]), direction


def node_ijk_to_ras(node: slicer.vtkMRMLVolumeNode) -> np.ndarray:
    vm = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(vm)
    return _np_matrix(vm)


# ---------------------------------------------------------------------------- image data
def _image_data(array: np.ndarray) -> vtk.vtkImageData:
    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    arr = np.ascontiguousarray(arr)
    img = vtk.vtkImageData()
    img.SetDimensions(int(arr.shape[2]), int(arr.shape[1]), int(arr.shape[0]))
    scalars = numpy_support.numpy_to_vtk(arr.ravel(), deep=True)
    scalars.SetName("ImageScalars")
    img.GetPointData().SetScalars(scalars)
    return img


def _array_from_image(img: vtk.vtkImageData, what: str) -> np.ndarray:
    if img is None or img.GetPointData() is None or img.GetPointData().GetScalars() is None:
        raise InputError(f"{what} has no image data")
    scalars = img.GetPointData().GetScalars()
    if scalars.GetNumberOfComponents() != 1:
        raise InputError(f"{what} has {scalars.GetNumberOfComponents()} components; a scalar image is needed")
    x0, x1, y0, y1, z0, z1 = img.GetExtent()
    shape = (z1 - z0 + 1, y1 - y0 + 1, x1 - x0 + 1)
    return numpy_support.vtk_to_numpy(scalars).reshape(shape).copy()


# ---------------------------------------------------------------------------- volumes
def volume_to_node(
    scene: slicer.vtkMRMLScene,
    volume: Volume,
    name: str = "CT",
    node: slicer.vtkMRMLScalarVolumeNode | None = None,
    role: str | None = None,
    display: bool = True,
) -> slicer.vtkMRMLScalarVolumeNode:
    """Put a :class:`Volume` into ``scene`` as a scalar volume node (new, or ``node`` updated).

    Geometry: IJKToRAS = diag(-1,-1,1,1)·IJKToLPS. ``volume.units`` and ``volume.metadata``
    (JSON) go to node attributes so :func:`node_to_volume` gives them back. ``display`` creates
    the default display node (grey colour map, auto window/level).
    """
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    elif name:
        node.SetName(name)
    node.SetAndObserveImageData(_image_data(volume.array))
    node.SetIJKToRASMatrix(_vtk_matrix(ijk_to_ras_matrix(volume)))
    node.SetAttribute(ATTR_UNITS, volume.units or "")
    node.SetAttribute(ATTR_METADATA, json.dumps(volume.metadata, default=_json_default, sort_keys=True))
    if role:
        node.SetAttribute(ATTR_ROLE, role)
    if volume.units == "HU":  # what Slicer's DICOM import sets for CT: the Data Probe shows "HU"
        node.SetVoxelValueQuantity(_coded("112031", "DCM", "Attenuation Coefficient"))
        node.SetVoxelValueUnits(_coded("[hnsf'U]", "UCUM", "Hounsfield unit"))
    else:
        node.SetVoxelValueQuantity(None)
        node.SetVoxelValueUnits(None)
    if display and node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def _coded(value: str, scheme: str, meaning: str) -> slicer.vtkCodedEntry:
    entry = slicer.vtkCodedEntry()
    entry.SetValueSchemeMeaning(value, scheme, meaning)
    return entry


def node_to_volume(node: slicer.vtkMRMLVolumeNode, units: str | None = None) -> Volume:
    """A scalar volume node → :class:`Volume` (LPS, array [z, y, x], a copy).

    Units come from the node attribute set by :func:`volume_to_node`, else ``units``, else
    ``"HU"`` for scalar volumes and ``"label"`` for labelmap volumes.
    """
    if node is None:
        raise InputError("no volume node given")
    what = f"volume node {node.GetName()!r}"
    if node.GetParentTransformNode() is not None:
        log.warning("%s is under a transform; the transform is ignored (harden it first)", what)
    array = _array_from_image(node.GetImageData(), what)
    spacing, origin, direction = _geometry_from_ijk_to_ras(node_ijk_to_ras(node))
    default_units = "label" if node.IsA("vtkMRMLLabelMapVolumeNode") else "HU"
    node_units = node.GetAttribute(ATTR_UNITS)
    metadata_text = node.GetAttribute(ATTR_METADATA)
    try:
        metadata = json.loads(metadata_text) if metadata_text else {}
    except json.JSONDecodeError:
        metadata = {}
    return Volume(
        array=array,
        spacing_xyz=spacing,
        origin_xyz=origin,
        direction=direction,
        units=node_units or units or default_units,
        metadata=metadata,
    )


def probability_to_node(
    scene: slicer.vtkMRMLScene,
    probability: Volume | np.ndarray,
    reference: Volume | slicer.vtkMRMLVolumeNode | None = None,
    name: str = "Tumor probability",
    node: slicer.vtkMRMLScalarVolumeNode | None = None,
    visible: bool = False,
    role: str = "probability",
) -> slicer.vtkMRMLScalarVolumeNode:
    """A probability map (0..1, float32) as a scalar volume node, window/level fixed to 0..1.

    ``probability`` is a :class:`Volume`, or an array on the grid of ``reference`` (a Volume or
    a volume node). The node is hidden from slice views unless ``visible`` (then shown as a
    coloured foreground overlay via :func:`show_in_slice_views`).
    """
    vol = _as_volume_on(probability, reference, "probability map")
    vol = vol.with_array(np.asarray(vol.array, dtype=np.float32), units="probability")
    node = volume_to_node(scene, vol, name=name, node=node, role=role)
    disp = node.GetDisplayNode()
    if disp is not None:
        disp.SetAutoWindowLevel(False)
        disp.SetWindowLevelMinMax(0.0, 1.0)
        if scene.GetNodeByID("vtkMRMLColorTableNodeRainbow") is not None:
            disp.SetAndObserveColorNodeID("vtkMRMLColorTableNodeRainbow")
    if visible:
        show_in_slice_views(scene, foreground=node, foreground_opacity=0.4)
    return node


def show_in_slice_views(
    scene: slicer.vtkMRMLScene,
    background: slicer.vtkMRMLVolumeNode | None = None,
    foreground: slicer.vtkMRMLVolumeNode | None = None,
    foreground_opacity: float | None = None,
    color_node_id: str | None = None,
) -> int:
    """Show volumes in every slice view of ``scene`` (background CT, coloured foreground overlay).

    Works on the slice composite nodes, so it does nothing on a bare slicer-core scene (no
    views) and returns the number of views changed. ``color_node_id`` (e.g.
    ``"vtkMRMLColorTableNodeRainbow"``) is applied to the foreground's display node.
    """
    if foreground is not None and color_node_id and foreground.GetDisplayNode() is not None:
        foreground.GetDisplayNode().SetAndObserveColorNodeID(color_node_id)
    n = 0
    for comp in _nodes_by_class(scene, "vtkMRMLSliceCompositeNode"):
        if background is not None:
            comp.SetBackgroundVolumeID(background.GetID())
        if foreground is not None:
            comp.SetForegroundVolumeID(foreground.GetID())
        if foreground_opacity is not None:
            comp.SetForegroundOpacity(float(foreground_opacity))
        n += 1
    return n


def jump_slices_to(scene: slicer.vtkMRMLScene, ras: Sequence[float], centered: bool = True) -> int:
    """Move every slice view so it shows the RAS point (e.g. a tumour's ROI slice), centred on
    it or only offset; returns the number of slice views (0 on a bare slicer-core scene)."""
    r, a, s = (float(v) for v in ras)
    views = _nodes_by_class(scene, "vtkMRMLSliceNode")
    for view in views:
        if centered:
            view.JumpSliceByCentering(r, a, s)
        else:
            view.JumpSliceByOffsetting(r, a, s)
    return len(views)


def hide_from_slice_views(scene: slicer.vtkMRMLScene, node: slicer.vtkMRMLVolumeNode) -> int:
    """Remove ``node`` from any slice view layer it is shown in; returns views changed."""
    n = 0
    for comp in _nodes_by_class(scene, "vtkMRMLSliceCompositeNode"):
        for get, set_ in (
            (comp.GetBackgroundVolumeID, comp.SetBackgroundVolumeID),
            (comp.GetForegroundVolumeID, comp.SetForegroundVolumeID),
            (comp.GetLabelVolumeID, comp.SetLabelVolumeID),
        ):
            if get() == node.GetID():
                set_(None)
                n += 1
    return n


# ---------------------------------------------------------------------------- segments
def _reference_geometry(
    reference: Volume | slicer.vtkMRMLVolumeNode,
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """(IJK→RAS 4×4, shape z,y,x) of a Volume or a volume node."""
    if isinstance(reference, Volume):
        return ijk_to_ras_matrix(reference), reference.shape
    img = reference.GetImageData()
    if img is None:
        raise InputError(f"reference volume node {reference.GetName()!r} has no image data")
    x, y, z = img.GetDimensions()
    return node_ijk_to_ras(reference), (z, y, x)


def _as_volume_on(
    data: Volume | np.ndarray, reference: Volume | slicer.vtkMRMLVolumeNode | None, what: str
) -> Volume:
    if isinstance(data, Volume):
        return data
    if reference is None:
        raise InputError(f"{what} is a plain array: give the reference volume (node) whose grid it is on")
    arr = np.asarray(data)
    m, shape = _reference_geometry(reference)
    if arr.shape != tuple(shape):
        raise InputError(f"{what} has shape {arr.shape}, the reference grid is {tuple(shape)} (z, y, x)")
    spacing, origin, direction = _geometry_from_ijk_to_ras(m)
    return Volume(arr, spacing, origin, direction, units="label")


def _oriented_image(array: np.ndarray, ijk_to_ras: np.ndarray) -> slicer.vtkOrientedImageData:
    oi = slicer.vtkOrientedImageData()
    oi.ShallowCopy(_image_data(array))
    oi.SetImageToWorldMatrix(_vtk_matrix(ijk_to_ras))
    return oi


def mask_to_segment(
    scene: slicer.vtkMRMLScene,
    mask: Volume | np.ndarray,
    reference_node: slicer.vtkMRMLVolumeNode,
    segmentation_node: slicer.vtkMRMLSegmentationNode | None = None,
    name: str = terminology.TUMOR_SEGMENT_NAME,
    color: Sequence[float] = terminology.TUMOR_COLOR,
    terminology_entry: str | None = terminology.TUMOR_TERMINOLOGY,
    segment_id: str | None = None,
    segmentation_name: str = "Tumor segmentation",
) -> tuple[slicer.vtkMRMLSegmentationNode, str]:
    """Put a mask (non-zero = inside) into a segmentation node as a binary-labelmap segment.

    ``mask`` is a :class:`Volume` (placed with its own geometry) or an array on the grid of
    ``reference_node`` (the CT). The segmentation is created if not given, its reference
    geometry is set from ``reference_node`` and its source representation is the binary
    labelmap, so the Segment Editor edits it at once. If ``segment_id`` names an existing
    segment its voxels are replaced (name/colour/terminology updated); otherwise a segment is
    added. Returns ``(segmentation_node, segment_id)``.
    """
    vol = _as_volume_on(mask, reference_node, "mask")
    binary = (np.asarray(vol.array) != 0).astype(np.uint8)
    if segmentation_node is None:
        segmentation_node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", segmentation_name)
    if segmentation_node.GetDisplayNode() is None:
        segmentation_node.CreateDefaultDisplayNodes()
    segmentation = segmentation_node.GetSegmentation()
    if segmentation.GetNumberOfSegments() == 0:
        segmentation.SetSourceRepresentationName(BINARY_LABELMAP)
    if segmentation.GetSourceRepresentationName() != BINARY_LABELMAP:
        raise InputError(
            f"segmentation {segmentation_node.GetName()!r} is stored as "
            f"{segmentation.GetSourceRepresentationName()!r}, not as a binary labelmap"
        )
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_node)
    labelmap = _oriented_image(binary, ijk_to_ras_matrix(vol))

    segment = segmentation.GetSegment(segment_id) if segment_id else None
    if segment is None:
        segment = slicer.vtkSegment()
        segment.SetName(name)
        segment.AddRepresentation(BINARY_LABELMAP, labelmap)
        if segment_id:
            segmentation.AddSegment(segment, segment_id)
        else:
            segment_id = segmentation.GenerateUniqueSegmentID(_segment_id_from_name(name))
            segmentation.AddSegment(segment, segment_id)
        segment = segmentation.GetSegment(segment_id)
    else:
        ok = slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
            labelmap,
            segmentation_node,
            segment_id,
            slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE,
        )
        if not ok:
            raise InputError(f"could not update segment {segment_id!r} of {segmentation_node.GetName()!r}")
        segment.SetName(name)
    segment.SetNameAutoGenerated(False)
    segment.SetColor(*[float(c) for c in color])
    segment.SetColorAutoGenerated(False)
    if terminology_entry:
        segment.SetTerminology(terminology_entry)
    return segmentation_node, segment_id


def _segment_id_from_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") or "Segment"


def find_segment(segmentation_node: slicer.vtkMRMLSegmentationNode, name: str) -> str | None:
    """ID of the first segment named ``name`` (case-insensitive), or None."""
    segmentation = segmentation_node.GetSegmentation()
    for i in range(segmentation.GetNumberOfSegments()):
        sid = segmentation.GetNthSegmentID(i)
        if segmentation.GetSegment(sid).GetName().lower() == name.lower():
            return sid
    return None


def find_tumor_segment(scene: slicer.vtkMRMLScene) -> tuple[Any, str | None]:
    """The newest segmentation holding a MediastinalAI tumour segment (by terminology, else by
    name) and that segment's ID; ``(None, None)`` when there is none. This is how the modules
    default to "the segmentation MediastinalAI made", also after a scene is reloaded."""
    for seg_node in reversed(_nodes_by_class(scene, "vtkMRMLSegmentationNode")):
        segmentation = seg_node.GetSegmentation()
        by_name = None
        for sid in segment_ids(seg_node):
            segment = segmentation.GetSegment(sid)
            if segment.GetTerminology() == terminology.TUMOR_TERMINOLOGY:
                return seg_node, sid
            if by_name is None and segment.GetName() == terminology.TUMOR_SEGMENT_NAME:
                by_name = sid
        if by_name is not None:
            return seg_node, by_name
    return None, None


def segment_ids(segmentation_node: slicer.vtkMRMLSegmentationNode) -> list[str]:
    segmentation = segmentation_node.GetSegmentation()
    return [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]


def segment_to_mask(
    segmentation_node: slicer.vtkMRMLSegmentationNode,
    segment_id: str,
    reference: Volume | slicer.vtkMRMLVolumeNode,
) -> Volume:
    """A segment → uint8 mask (1 inside) on the grid of ``reference`` (the CT), as a Volume.

    Uses the segment's binary labelmap (creating it from another representation if needed),
    resampled nearest-neighbour onto the reference grid; handles labelmaps shared between
    segments (only this segment's label value counts) and cropped extents.
    """
    segmentation = segmentation_node.GetSegmentation()
    segment = segmentation.GetSegment(segment_id)
    if segment is None:
        raise InputError(
            f"segmentation {segmentation_node.GetName()!r} has no segment {segment_id!r}; "
            f"it has {segment_ids(segmentation_node)}"
        )
    if not segmentation.ContainsRepresentation(BINARY_LABELMAP):
        if not segmentation.CreateRepresentation(BINARY_LABELMAP):
            raise InputError(f"segment {segment_id!r} cannot be converted to a binary labelmap")
    labelmap = segment.GetRepresentation(BINARY_LABELMAP)
    ref_matrix, ref_shape = _reference_geometry(reference)
    if isinstance(reference, Volume):
        ref_volume = reference
    else:
        spacing, origin, direction = _geometry_from_ijk_to_ras(ref_matrix)
        ref_volume = Volume(np.zeros(ref_shape, np.uint8), spacing, origin, direction, units="label")
    if labelmap is None or _is_empty(labelmap):
        return ref_volume.with_array(np.zeros(ref_shape, np.uint8), units="label")
    ref_image = _oriented_image(np.zeros(ref_shape, np.uint8), ref_matrix)
    resampled = slicer.vtkOrientedImageData()
    transform = _segmentation_to_world_transform(segmentation_node)
    ok = slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
        labelmap, ref_image, resampled, False, False, transform, 0
    )
    if not ok:
        raise InputError(f"could not resample segment {segment_id!r} onto the reference grid")
    values = _array_from_image(resampled, f"segment {segment_id!r}")
    label_value = segment.GetLabelValue() or 1
    return ref_volume.with_array((values == label_value).astype(np.uint8), units="label")


def _is_empty(img: vtk.vtkImageData) -> bool:
    x0, x1, y0, y1, z0, z1 = img.GetExtent()
    return x1 < x0 or y1 < y0 or z1 < z0 or img.GetPointData().GetScalars() is None


def _segmentation_to_world_transform(segmentation_node: slicer.vtkMRMLSegmentationNode):
    """Parent transform of the segmentation relative to the world (None when untransformed).

    The reference grid is in world coordinates; a transformed segmentation is resampled
    through its transform so the mask lands where the user sees it.
    """
    if segmentation_node.GetParentTransformNode() is None:
        return None
    transform = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(
        segmentation_node.GetParentTransformNode(), None, transform
    )
    return transform


def segment_info(segmentation_node: slicer.vtkMRMLSegmentationNode, segment_id: str) -> dict[str, Any]:
    """Name, colour, terminology string and label value of a segment (for tests and reports)."""
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    if segment is None:
        raise InputError(f"no segment {segment_id!r} in {segmentation_node.GetName()!r}")
    return {
        "id": segment_id,
        "name": segment.GetName(),
        "color": tuple(segment.GetColor()),
        "terminology": segment.GetTerminology(),
        "label_value": segment.GetLabelValue(),
        "source_representation": segmentation_node.GetSegmentation().GetSourceRepresentationName(),
    }


# ---------------------------------------------------------------------------- tables
def records_to_table(
    scene: slicer.vtkMRMLScene,
    records: Iterable[Mapping[str, Any]] | Mapping[str, Any],
    name: str = "Results",
    node: slicer.vtkMRMLTableNode | None = None,
    columns: Sequence[str] | None = None,
    attributes: Mapping[str, str] | None = None,
    role: str | None = None,
) -> slicer.vtkMRMLTableNode:
    """Rows of dicts (or one dict = one row) → a table node with typed columns.

    Column types: all-bool → bit, all-int → 64-bit integer (wrapped as vtkLongLongArray),
    numbers → double (``None``/NaN → NaN), anything else → string. Column order follows
    ``columns`` or first appearance. An existing ``node`` is emptied and refilled.
    ``attributes`` (e.g. model name + sha256) are stored as node attributes.
    """
    rows = [dict(records)] if isinstance(records, Mapping) else [dict(r) for r in records]
    if columns is None:
        columns = []
        for r in rows:
            for k in r:
                if k not in columns:
                    columns.append(k)
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    elif name:
        node.SetName(name)
    table = vtk.vtkTable()
    for col in columns:
        table.AddColumn(_column_array(str(col), [r.get(col) for r in rows]))
    node.SetAndObserveTable(table)
    node.SetLocked(False)
    for key, value in (attributes or {}).items():
        node.SetAttribute(str(key), str(value))
    if role:
        node.SetAttribute(ATTR_ROLE, role)
    return node


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _column_array(name: str, values: list[Any]) -> vtk.vtkAbstractArray:
    present = [v for v in values if not _is_missing(v)]
    if present and all(isinstance(v, (bool, np.bool_)) for v in present) and len(present) == len(values):
        arr = vtk.vtkBitArray()
        for v in values:
            arr.InsertNextValue(int(bool(v)))
    elif (
        present
        and len(present) == len(values)
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in present)
    ):
        arr = vtk.vtkLongLongArray()
        for v in values:
            arr.InsertNextValue(int(v))
    elif present and all(isinstance(v, (int, float, np.integer, np.floating)) for v in present):
        arr = vtk.vtkDoubleArray()
        for v in values:
            arr.InsertNextValue(float("nan") if _is_missing(v) else float(v))
    else:
        arr = vtk.vtkStringArray()
        for v in values:
            arr.InsertNextValue("" if v is None else _to_text(v))
    arr.SetName(name)
    return arr


def _to_text(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, default=_json_default)
    return str(v)


def table_to_records(node: slicer.vtkMRMLTableNode) -> list[dict[str, Any]]:
    """A table node → list of row dicts; numeric columns give Python ints/floats/bools."""
    table = node.GetTable()
    if table is None:
        return []
    cols = []
    for c in range(table.GetNumberOfColumns()):
        arr = table.GetColumn(c)
        cols.append((arr.GetName(), arr))
    rows = []
    for r in range(table.GetNumberOfRows()):
        row: dict[str, Any] = {}
        for col_name, arr in cols:
            row[col_name] = _cell(arr, r)
        rows.append(row)
    return rows


def _cell(arr: vtk.vtkAbstractArray, r: int) -> Any:
    if isinstance(arr, vtk.vtkBitArray):
        return bool(arr.GetValue(r))
    if isinstance(arr, vtk.vtkDataArray):
        v = arr.GetComponent(r, 0) if arr.GetNumberOfComponents() > 1 else arr.GetValue(r)
        if arr.GetDataType() in (vtk.VTK_FLOAT, vtk.VTK_DOUBLE):
            return float(v)
        return int(v)
    return arr.GetValue(r)


# ---------------------------------------------------------------------------- save / load
def save_scene(scene: slicer.vtkMRMLScene, path: str | Path) -> Path:
    """Save ``scene`` to ``path``: ``.mrml`` (each node's data file written beside it, in the
    same folder) or ``.mrb`` (one zip bundle). Returns the path. Raises on any write failure."""
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".mrb":
        messages = slicer.vtkMRMLMessageCollection()
        if not scene.WriteToMRB(str(path), None, messages):
            raise InputError(f"could not write scene bundle: {_messages(messages)}", path)
        return path
    if path.suffix.lower() != ".mrml":
        raise InputError("scene file must end in .mrml or .mrb", path)
    folder = path.parent
    used: set[str] = set()
    for node in _nodes_by_class(scene, "vtkMRMLStorableNode"):
        if not node.GetSaveWithScene() or (node.GetHideFromEditors() and node.IsA("vtkMRMLColorTableNode")):
            continue
        storage = node.GetStorageNode()
        if storage is None:
            if not node.AddDefaultStorageNode():
                continue
            storage = node.GetStorageNode()
            if storage is None:
                continue
        ext = storage.GetDefaultWriteFileExtension() or "dat"
        stem = _safe_stem(node.GetName() or node.GetID())
        filename = f"{stem}.{ext}"
        i = 1
        while filename in used:
            filename = f"{stem}_{i}.{ext}"
            i += 1
        used.add(filename)
        storage.SetFileName(str(folder / filename))
        if not storage.WriteData(node):
            raise InputError(f"could not write node {node.GetName()!r}", folder / filename)
    scene.SetRootDirectory(str(folder))
    scene.SetURL(str(path))
    if not scene.Commit():
        raise InputError("could not write scene file", path)
    return path


def load_scene(path: str | Path, scene: slicer.vtkMRMLScene | None = None) -> slicer.vtkMRMLScene:
    """Load a ``.mrml`` (with its data files) or ``.mrb`` into ``scene`` (a new one if None)."""
    path = Path(path).resolve()
    if not path.is_file():
        raise InputError("scene file not found", path)
    scene = scene if scene is not None else new_scene()
    if path.suffix.lower() == ".mrb":
        import shutil
        import tempfile

        # Reading a bundle unpacks it into the cache manager's folder; the Slicer app has one,
        # a bare slicer-core scene does not: lend it a temporary one (data ends up in memory).
        own_cache = scene.GetCacheManager() is None or not scene.GetCacheManager().GetRemoteCacheDirectory()
        cache_dir = tempfile.mkdtemp(prefix="mediastinal_ai_mrb_") if own_cache else None
        if cache_dir:
            cache = slicer.vtkCacheManager()
            cache.SetRemoteCacheDirectory(cache_dir)
            io_manager = slicer.vtkDataIOManager()
            io_manager.SetCacheManager(cache)
            scene.SetCacheManager(cache)
            scene.SetDataIOManager(io_manager)
        try:
            messages = slicer.vtkMRMLMessageCollection()
            if not scene.ReadFromMRB(str(path), False, messages):
                raise InputError(f"could not read scene bundle: {_messages(messages)}", path)
        finally:
            if cache_dir:
                shutil.rmtree(cache_dir, ignore_errors=True)
                scene.SetDataIOManager(None)
                scene.SetCacheManager(None)
        return scene
    scene.SetURL(str(path))
    if not scene.Import():
        raise InputError("could not read scene file", path)
    return scene


def _messages(messages: Any) -> str:
    try:
        return messages.GetAllMessagesAsString() or "no details"
    except AttributeError:  # pragma: no cover - older MRML
        return "no details"


def _safe_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "node"


def _nodes_by_class(scene: slicer.vtkMRMLScene, class_name: str) -> list[Any]:
    return [scene.GetNthNodeByClass(i, class_name) for i in range(scene.GetNumberOfNodesByClass(class_name))]


def nodes_by_attribute(
    scene: slicer.vtkMRMLScene, attribute: str, value: str, class_name: str = "vtkMRMLNode"
) -> list[Any]:
    """Nodes whose ``attribute`` equals ``value`` (e.g. role == "probability")."""
    return [n for n in _nodes_by_class(scene, class_name) if n.GetAttribute(attribute) == value]


def _json_default(o: Any) -> Any:
    """numpy values/arrays and paths as JSON (fileio's rules), anything else as its text."""
    try:
        return _fileio_json_default(o)
    except TypeError:
        return str(o)


ATTR_PROVENANCE = "MediastinalAI.provenance"  # JSON in the shared schema of docs/provenance.md


def stamp_provenance(result_nodes: Sequence[Any], volume_node: Any, model: dict[str, Any] | None = None,
                     **params: Any) -> dict[str, Any]:
    """Record on every result node what produced it: the source CT (DICOM series or file sha256,
    from the CT node's metadata), the model (name/version/sha256), parameters and the package
    version — the same record the command-line outputs carry. Saved with the scene."""
    import types

    from ..fileio import provenance, source_provenance

    meta = {}
    with contextlib.suppress(ValueError, TypeError):
        meta = json.loads(volume_node.GetAttribute(ATTR_METADATA) or "{}") if volume_node is not None else {}
    record = provenance(source=source_provenance(types.SimpleNamespace(metadata=meta)), model=model or {},
                        params=params)
    text = json.dumps(record, default=_json_default, sort_keys=True)
    for n in result_nodes:
        if n is not None:
            n.SetAttribute(ATTR_PROVENANCE, text)
    return record
