"""MRML adapter on slicer-core (no Slicer application): geometry, segments, tables, scenes."""

from __future__ import annotations

import math

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install -e '.[slicer]')")

from mediastinal_ai.errors import InputError  # noqa: E402
from mediastinal_ai.mrml import nodes, terminology  # noqa: E402
from mediastinal_ai.volume import Volume  # noqa: E402

pytestmark = pytest.mark.mrml


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = (
        math.cos(ax),
        math.sin(ax),
        math.cos(ay),
        math.sin(ay),
        math.cos(az),
        math.sin(az),
    )
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


GEOMETRIES = {
    "identity": dict(spacing_xyz=(0.75, 0.75, 5.0), origin_xyz=(-180.0, -175.5, -300.0), direction=np.eye(3)),
    "oblique": dict(
        spacing_xyz=(0.7, 0.9, 2.5), origin_xyz=(12.5, -40.0, 88.0), direction=_rotation(0.3, -0.2, 0.5)
    ),
    "flipped": dict(
        spacing_xyz=(1.0, 1.2, 3.0), origin_xyz=(5.0, 6.0, 7.0), direction=np.diag([-1.0, 1.0, -1.0])
    ),
}


def _ct(geometry: str, shape=(6, 9, 11), dtype=np.int16, seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    arr = rng.integers(-1024, 1500, size=shape).astype(dtype)
    return Volume(arr, units="HU", metadata={"synthetic": True, "case_id": "c1"}, **GEOMETRIES[geometry])


@pytest.fixture
def scene():
    return nodes.new_scene()


# ------------------------------------------------------------------------------- volumes
@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint8])
def test_volume_round_trip_keeps_array_and_geometry_exactly(scene, geometry, dtype):
    ct = _ct(geometry, dtype=dtype)
    node = nodes.volume_to_node(scene, ct, name="CT")
    back = nodes.node_to_volume(node)
    assert back.array.dtype == ct.array.dtype
    assert np.array_equal(back.array, ct.array)
    assert back.shape == ct.shape
    np.testing.assert_allclose(back.spacing_xyz, ct.spacing_xyz, rtol=0, atol=1e-9)
    np.testing.assert_allclose(back.origin_xyz, ct.origin_xyz, rtol=0, atol=1e-9)
    np.testing.assert_allclose(back.direction, ct.direction, rtol=0, atol=1e-9)
    assert back.units == "HU"
    assert back.metadata == {"synthetic": True, "case_id": "c1"}
    assert node.GetVoxelValueUnits().GetCodeValue() == "[hnsf'U]"
    assert node.GetVoxelValueQuantity().GetCodeValue() == "112031"


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
def test_voxel_lps_point_is_node_ras_point_with_x_y_negated(scene, geometry):
    ct = _ct(geometry)
    node = nodes.volume_to_node(scene, ct)
    ijk_to_ras = nodes.node_ijk_to_ras(node)
    for ijk in [(0, 0, 0), (10, 8, 5), (3, 7, 2), (2.5, 1.25, 4.75)]:
        lps = ct.index_to_lps(np.array(ijk, float))
        ras = (ijk_to_ras @ np.r_[ijk, 1.0])[:3]
        np.testing.assert_allclose(ras, [-lps[0], -lps[1], lps[2]], rtol=0, atol=1e-9)
    # and the matrix is exactly diag(-1,-1,1,1) · IJKToLPS
    np.testing.assert_allclose(ijk_to_ras, np.diag([-1, -1, 1, 1]) @ ct.ijk_to_lps_matrix(), atol=1e-12)
    # the node's own per-voxel API agrees on the value at a voxel
    k, j, i = 4, 7, 3
    assert node.GetImageData().GetScalarComponentAsDouble(i, j, k, 0) == ct.array[k, j, i]


@pytest.mark.parametrize("geometry", ["oblique", "flipped"])
def test_geometry_agrees_with_mrml_own_file_reader_and_writer(scene, tmp_path, geometry):
    """Independent check of the LPS/RAS convention: a NRRD written by SimpleITK (LPS) and read
    by MRML's storage node must give the same node as volume_to_node, and vice versa."""
    import SimpleITK as sitk

    ct = _ct(geometry)
    path = tmp_path / "ct.nrrd"
    sitk.WriteImage(ct.to_sitk(), str(path))
    read_node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "read")
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(read_node)
    ours = nodes.volume_to_node(scene, ct, name="ours")
    np.testing.assert_allclose(nodes.node_ijk_to_ras(read_node), nodes.node_ijk_to_ras(ours), atol=1e-6)
    assert np.array_equal(nodes.node_to_volume(read_node).array, ct.array)

    out = tmp_path / "from_mrml.nrrd"
    writer = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    writer.SetFileName(str(out))
    assert writer.WriteData(ours)
    again = Volume.from_sitk(sitk.ReadImage(str(out)))
    assert again.same_geometry(ct, tol=1e-6)
    assert np.array_equal(again.array, ct.array)


def test_node_to_volume_refuses_empty_node(scene):
    with pytest.raises(InputError, match="no image data"):
        nodes.node_to_volume(scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty"))


def test_probability_node_units_window_and_hidden(scene):
    ct = _ct("oblique")
    ct_node = nodes.volume_to_node(scene, ct)
    prob = np.random.default_rng(1).random(ct.shape)
    node = nodes.probability_to_node(scene, prob, ct_node)
    vol = nodes.node_to_volume(node)
    assert vol.units == "probability" and vol.array.dtype == np.float32
    np.testing.assert_allclose(vol.array, prob.astype(np.float32))
    assert vol.same_geometry(ct)
    disp = node.GetDisplayNode()
    assert not disp.GetAutoWindowLevel()
    assert (disp.GetWindowLevelMin(), disp.GetWindowLevelMax()) == (0.0, 1.0)
    # no slice views on a bare scene: nothing to show in, nothing changed
    assert nodes.show_in_slice_views(scene, foreground=node) == 0
    comp = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    assert nodes.show_in_slice_views(scene, background=ct_node, foreground=node, foreground_opacity=0.4) == 1
    assert comp.GetForegroundVolumeID() == node.GetID() and comp.GetBackgroundVolumeID() == ct_node.GetID()
    assert comp.GetForegroundOpacity() == pytest.approx(0.4)
    assert nodes.hide_from_slice_views(scene, node) == 1 and comp.GetForegroundVolumeID() is None
    with pytest.raises(InputError, match="shape"):
        nodes.probability_to_node(scene, prob[:-1], ct_node)


# ------------------------------------------------------------------------------- segments
def _blob(shape) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[1:4, 2:7, 3:9] = 1
    m[2, 4, 5] = 0
    return m


@pytest.mark.parametrize("geometry", sorted(GEOMETRIES))
def test_mask_segment_round_trip_is_an_editable_binary_labelmap(scene, geometry):
    ct = _ct(geometry)
    ct_node = nodes.volume_to_node(scene, ct)
    mask = _blob(ct.shape)
    seg_node, sid = nodes.mask_to_segment(scene, mask, ct_node)
    segmentation = seg_node.GetSegmentation()
    assert segmentation.GetSourceRepresentationName() == "Binary labelmap"
    segment = segmentation.GetSegment(sid)
    assert segment.GetRepresentation("Binary labelmap") is not None
    assert segment.GetName() == "Anterior mediastinal tumor"
    assert segment.GetColor() == pytest.approx(terminology.TUMOR_COLOR)
    assert seg_node.GetNodeReferenceID(seg_node.GetReferenceImageGeometryReferenceRole()) == ct_node.GetID()
    assert seg_node.GetDisplayNode() is not None

    back = nodes.segment_to_mask(seg_node, sid, ct_node)
    assert back.array.dtype == np.uint8 and back.units == "label"
    assert np.array_equal(back.array, mask)
    assert back.same_geometry(ct)
    # the same from a Volume reference
    assert np.array_equal(nodes.segment_to_mask(seg_node, sid, ct).array, mask)


def test_segment_carries_standard_terminology(scene):
    ct_node = nodes.volume_to_node(scene, _ct("identity"))
    seg_node, sid = nodes.mask_to_segment(scene, _blob((6, 9, 11)), ct_node)
    text = seg_node.GetSegmentation().GetSegment(sid).GetTerminology()
    assert text == terminology.TUMOR_TERMINOLOGY
    entry = terminology.TerminologyEntry.parse(text)
    assert (entry.category.scheme, entry.category.value) == ("SCT", "49755003")
    assert (entry.type.value, entry.type.meaning) == ("4147007", "Mass")
    assert (entry.region.value, entry.region.meaning) == ("72410000", "Mediastinum")
    assert (entry.region_modifier.value, entry.region_modifier.meaning) == ("255549009", "Anterior")
    assert entry.to_string() == text
    assert text.split("~")[0] == "Segmentation category and type - 3D Slicer General Anatomy list"
    with pytest.raises(ValueError):
        terminology.TerminologyEntry.parse("Mass")


def test_mask_volume_on_its_own_grid_lands_in_the_right_place(scene):
    """A mask given as a cropped Volume (own origin) is placed physically, then read back on the CT grid."""
    ct = _ct("oblique", shape=(8, 12, 14))
    ct_node = nodes.volume_to_node(scene, ct)
    full = np.zeros(ct.shape, np.uint8)
    full[2:6, 3:9, 4:11] = 1
    k0, j0, i0 = 1, 2, 3
    crop = full[k0:7, j0:10, i0:12]
    crop_vol = Volume(
        crop,
        ct.spacing_xyz,
        tuple(ct.index_to_lps(np.array([i0, j0, k0], float))),
        ct.direction,
        units="label",
    )
    seg_node, sid = nodes.mask_to_segment(scene, crop_vol, ct_node)
    assert np.array_equal(nodes.segment_to_mask(seg_node, sid, ct_node).array, full)


def test_second_segment_and_replacing_voxels_keep_segments_apart(scene):
    ct = _ct("flipped")
    ct_node = nodes.volume_to_node(scene, ct)
    a = _blob(ct.shape)
    b = np.zeros_like(a)
    b[4:6, 0:3, 0:4] = 1
    seg_node, sa = nodes.mask_to_segment(scene, a, ct_node)
    seg_node2, sb = nodes.mask_to_segment(
        scene, b, ct_node, segmentation_node=seg_node, name="Second reader", color=(0, 1, 0)
    )
    assert seg_node2 is seg_node and sa != sb
    assert np.array_equal(nodes.segment_to_mask(seg_node, sa, ct_node).array, a)
    assert np.array_equal(nodes.segment_to_mask(seg_node, sb, ct_node).array, b)
    assert nodes.find_segment(seg_node, "second reader") == sb
    assert nodes.find_segment(seg_node, "nope") is None
    # replace a's voxels (what re-thresholding does): same id, b untouched
    a2 = np.zeros_like(a)
    a2[0:2, 0:2, 5:7] = 1
    _, same = nodes.mask_to_segment(scene, a2, ct_node, segmentation_node=seg_node, segment_id=sa)
    assert same == sa and len(nodes.segment_ids(seg_node)) == 2
    assert np.array_equal(nodes.segment_to_mask(seg_node, sa, ct_node).array, a2)
    assert np.array_equal(nodes.segment_to_mask(seg_node, sb, ct_node).array, b)
    info = nodes.segment_info(seg_node, sa)
    assert (
        info["terminology"] == terminology.TUMOR_TERMINOLOGY and info["name"] == "Anterior mediastinal tumor"
    )


def test_empty_mask_and_bad_inputs(scene):
    ct = _ct("identity")
    ct_node = nodes.volume_to_node(scene, ct)
    seg_node, sid = nodes.mask_to_segment(scene, np.zeros(ct.shape, np.uint8), ct_node)
    assert nodes.segment_to_mask(seg_node, sid, ct_node).array.sum() == 0
    with pytest.raises(InputError, match="shape"):
        nodes.mask_to_segment(scene, np.zeros((2, 2, 2)), ct_node)
    with pytest.raises(InputError, match="no segment"):
        nodes.segment_to_mask(seg_node, "missing", ct_node)


# ------------------------------------------------------------------------------- tables
RECORDS = [
    {"lesion_id": 1, "volume_ml": 12.25, "label": "thymoma_B2", "malignant": True, "p": None},
    {"lesion_id": 2, "volume_ml": float("nan"), "label": "cyst", "malignant": False, "p": 0.125},
    {"lesion_id": 3, "volume_ml": 0.5, "label": "", "malignant": False, "p": 1},
]


def _check_records(rows):
    assert [list(r) for r in rows] == [list(RECORDS[0])] * 3
    assert [r["lesion_id"] for r in rows] == [1, 2, 3] and all(type(r["lesion_id"]) is int for r in rows)
    assert rows[0]["volume_ml"] == 12.25 and math.isnan(rows[1]["volume_ml"]) and rows[2]["volume_ml"] == 0.5
    assert [r["label"] for r in rows] == ["thymoma_B2", "cyst", ""]
    assert [r["malignant"] for r in rows] == [True, False, False]
    assert math.isnan(rows[0]["p"]) and rows[1]["p"] == 0.125 and rows[2]["p"] == 1.0
    assert all(isinstance(r["p"], float) for r in rows)


def test_table_round_trip_keeps_types(scene):
    node = nodes.records_to_table(scene, RECORDS, "Lesions", attributes={"model": "demo-seg"}, role="lesions")
    assert node.GetNumberOfRows() == 3
    assert node.GetAttribute("model") == "demo-seg" and node.GetAttribute(nodes.ATTR_ROLE) == "lesions"
    _check_records(nodes.table_to_records(node))
    # a single dict is one row; refilling an existing node replaces its content
    same = nodes.records_to_table(scene, {"probability": 0.7, "group": "high"}, node=node)
    assert same is node and nodes.table_to_records(node) == [{"probability": 0.7, "group": "high"}]
    assert nodes.nodes_by_attribute(scene, nodes.ATTR_ROLE, "lesions") == [node]


# ------------------------------------------------------------------------------- scenes
@pytest.mark.parametrize("ext", ["mrml", "mrb"])
def test_scene_saves_and_reloads_intact(scene, tmp_path, ext):
    ct = _ct("oblique")
    ct_node = nodes.volume_to_node(scene, ct, name="CT", role="ct")
    mask = _blob(ct.shape)
    seg_node, sid = nodes.mask_to_segment(scene, mask, ct_node)
    prob = np.linspace(0, 1, ct.array.size, dtype=np.float32).reshape(ct.shape)
    nodes.probability_to_node(scene, prob, ct_node)
    nodes.records_to_table(scene, RECORDS, "Lesions")

    path = nodes.save_scene(scene, tmp_path / "case" / f"scene.{ext}")
    assert path.is_file()
    if ext == "mrml":  # data files sit next to the scene file
        names = {p.name for p in path.parent.iterdir()}
        assert {"CT.nrrd", "Tumor_segmentation.seg.nrrd", "Tumor_probability.nrrd", "Lesions.tsv"} <= names

    loaded = nodes.load_scene(path)
    ct2 = loaded.GetFirstNodeByName("CT")
    vol = nodes.node_to_volume(ct2)
    assert np.array_equal(vol.array, ct.array) and vol.same_geometry(ct, tol=1e-6)
    assert vol.units == "HU" and vol.metadata["synthetic"] is True
    assert ct2.GetAttribute(nodes.ATTR_ROLE) == "ct"

    seg2 = loaded.GetFirstNodeByClass("vtkMRMLSegmentationNode")
    assert seg2.GetSegmentation().GetSourceRepresentationName() == "Binary labelmap"
    info = nodes.segment_info(seg2, sid)
    assert info["name"] == "Anterior mediastinal tumor"
    assert info["terminology"] == terminology.TUMOR_TERMINOLOGY
    assert info["color"] == pytest.approx(terminology.TUMOR_COLOR, abs=1e-6)
    assert np.array_equal(nodes.segment_to_mask(seg2, sid, ct2).array, mask)

    p2 = nodes.node_to_volume(loaded.GetFirstNodeByName("Tumor probability"))
    assert p2.units == "probability" and np.array_equal(p2.array, prob)
    _check_records(nodes.table_to_records(loaded.GetFirstNodeByName("Lesions")))


def test_scene_paths_are_checked(scene, tmp_path):
    with pytest.raises(InputError, match=r"\.mrml or \.mrb"):
        nodes.save_scene(scene, tmp_path / "scene.txt")
    with pytest.raises(InputError, match="not found"):
        nodes.load_scene(tmp_path / "missing.mrml")


# ------------------------------------------------------------------------------ GUI helpers
def test_find_tumor_segment_prefers_newest_terminology_coded_segment(scene):
    ct_node = nodes.volume_to_node(scene, _ct("identity"))
    assert nodes.find_tumor_segment(scene) == (None, None)
    plain, _ = nodes.mask_to_segment(scene, _blob((6, 9, 11)), ct_node, name="Heart", terminology_entry=None)
    assert nodes.find_tumor_segment(scene) == (None, None)
    first, first_id = nodes.mask_to_segment(scene, _blob((6, 9, 11)), ct_node)
    newest, newest_id = nodes.mask_to_segment(scene, _blob((6, 9, 11)), ct_node, segmentation_name="later")
    assert nodes.find_tumor_segment(scene) == (newest, newest_id)
    # a segment with the tumour name but no terminology (e.g. renamed by hand) still counts
    scene.RemoveNode(newest)
    scene.RemoveNode(first)
    _, by_name = nodes.mask_to_segment(
        scene, _blob((6, 9, 11)), ct_node, segmentation_node=plain, terminology_entry=None
    )
    assert nodes.find_tumor_segment(scene) == (plain, by_name)


def test_jump_slices_to_centres_every_slice_view(scene):
    assert nodes.jump_slices_to(scene, (1, 2, 3)) == 0
    views = [scene.AddNewNodeByClass("vtkMRMLSliceNode") for _ in range(2)]
    assert nodes.jump_slices_to(scene, (10.0, -20.0, 30.5)) == 2
    for view in views:
        m = view.GetSliceToRAS()
        assert [m.GetElement(i, 3) for i in range(3)] == pytest.approx([10.0, -20.0, 30.5])
