"""The modules' logic classes and the segmentation process runner, executed on slicer-core.

The Slicer application is not available here, so the few app-only names the module files
import at load time (``qt``, ``slicer.ScriptedLoadableModule``, ``slicer.parameterNodeWrapper``)
are replaced by minimal stand-ins; everything the logic does (MRML adapter, core) is real and
runs on a slicer-core scene set as ``slicer.mrmlScene``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")

from conftest import REAL_CT_DIR  # noqa: E402 - honours MEDIASTINAL_AI_REAL_CT

from mediastinal_ai.mrml import nodes, process  # noqa: E402
from mediastinal_ai.volume import Volume  # noqa: E402

pytestmark = pytest.mark.mrml
REPO = Path(__file__).resolve().parents[1]


class _QProcess:
    NotRunning, Starting, Running = 0, 1, 2
    NormalExit, CrashExit = 0, 1
    FailedToStart, Crashed = 0, 1
    MergedChannels = 1


def _stub_modules() -> dict[str, types.ModuleType]:
    qt = types.ModuleType("qt")
    qt.QProcess = _QProcess

    slm = types.ModuleType("slicer.ScriptedLoadableModule")

    class _Base:
        def __init__(self, *args, **kwargs):
            self.parent = args[0] if args else kwargs.get("parent")

        def setup(self):
            pass

        def getParameterNode(self):  # noqa: N802 - Slicer's name
            raise NotImplementedError("parameter nodes need the Slicer application")

    for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic"):
        setattr(slm, name, type(name, (_Base,), {}))
    slm.ScriptedLoadableModuleTest = type("ScriptedLoadableModuleTest", (), {})

    pnw = types.ModuleType("slicer.parameterNodeWrapper")
    pnw.parameterNodeWrapper = lambda cls: cls
    pnw.Choice = lambda choices: ("Choice", tuple(choices))
    pnw.WithinRange = lambda lo, hi: ("WithinRange", lo, hi)
    return {"qt": qt, "slicer.ScriptedLoadableModule": slm, "slicer.parameterNodeWrapper": pnw}


@pytest.fixture
def scene(monkeypatch):
    for name, module in _stub_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
        if name.startswith("slicer."):
            monkeypatch.setattr(slicer, name.split(".", 1)[1], module, raising=False)
    s = nodes.new_scene()
    monkeypatch.setattr(slicer, "mrmlScene", s, raising=False)
    monkeypatch.syspath_prepend(str(REPO / "MediastinalAI"))
    yield s
    for name in [n for n in sys.modules if n.startswith("MediastinalAILib")]:
        del sys.modules[name]


def _load(module: str):
    spec = importlib.util.spec_from_file_location(f"_test_{module}", REPO / module / f"{module}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _case(scene):
    arr = np.full((10, 24, 20), -900, np.int16)
    arr[3:8, 6:16, 5:15] = 40
    d = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # rotated in-plane
    ct = nodes.volume_to_node(
        scene, Volume(arr, (0.8, 0.8, 2.0), (10.0, -5.0, 30.0), d), name="CT", role="ct"
    )
    mask = (arr > 0).astype(np.uint8)
    segmentation, segment_id = nodes.mask_to_segment(scene, mask, ct)
    return ct, mask, segmentation, segment_id


def _io():
    io = pytest.importorskip("mediastinal_ai.io")
    if not hasattr(io, "write_image"):
        pytest.skip("CT input (mediastinal_ai.io read_image/write_image) has not landed yet")
    return io


# ------------------------------------------------------------------------------ MediastinalAI
def test_module_loads_and_parameter_defaults(scene):
    mod = _load("MediastinalAI")
    p = mod.MediastinalAIParameterNode
    assert p.threshold == 0.5 and p.device == "auto" and p.showGradCam is True
    assert p.sex == mod.NOT_GIVEN and p.age == -1.0


def test_logic_finds_default_segment_overlays_and_jumps(scene):
    logic = _load("MediastinalAI").MediastinalAILogic()
    ct, _, segmentation, segment_id = _case(scene)
    assert logic.defaultTumorSegment() == (segmentation, segment_id)
    heat = nodes.volume_to_node(
        scene, nodes.node_to_volume(ct).with_array(np.zeros((10, 24, 20), np.float32)), "cam"
    )
    composite = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    logic.showGradCam(ct, heat, True)
    assert (
        composite.GetForegroundVolumeID() == heat.GetID() and composite.GetBackgroundVolumeID() == ct.GetID()
    )
    logic.showGradCam(ct, heat, False)
    assert composite.GetForegroundVolumeID() is None
    view = scene.AddNewNodeByClass("vtkMRMLSliceNode")
    assert logic.jumpTo([1.0, 2.0, 3.0]) == 1
    assert [view.GetSliceToRAS().GetElement(i, 3) for i in range(3)] == pytest.approx([1, 2, 3])


def test_logic_ctc_input_check_messages(scene):
    pytest.importorskip("mediastinal_ai.fusion")
    logic = _load("MediastinalAI").MediastinalAILogic()
    assert logic.checkCtcInputs(8.5, 60.0, "F", "anterior") == ""
    assert "negative" in logic.checkCtcInputs(-1.0)
    assert "plausible" in logic.checkCtcInputs(5000.0)
    assert "age" in logic.checkCtcInputs(10.0, 150.0)


def test_logic_writes_the_ct_and_builds_the_child_command(scene, tmp_path):
    io = _io()
    logic = _load("MediastinalAI").MediastinalAILogic()
    ct, _, _, _ = _case(scene)
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    roi.SetXYZ(0.0, 0.0, 40.0)
    roi.SetRadiusXYZ(10.0, 20.0, 5.0)
    args = logic.segmentationArguments(ct, str(tmp_path), "demo-seg-unet3d", "GPU", 0.4, roi)
    written = io.read_image(args[args.index("--input") + 1])
    assert np.array_equal(written.array, nodes.node_to_volume(ct).array)
    assert written.same_geometry(nodes.node_to_volume(ct))
    assert args[args.index("--device") + 1] == "cuda"
    assert "--roi=-10,-20,35,10,20,45" in args


def test_logic_exports_the_segment_as_a_mask_file(scene, tmp_path):
    io = _io()
    logic = _load("MediastinalAI").MediastinalAILogic()
    ct, mask, segmentation, segment_id = _case(scene)
    out = tmp_path / "tumor.nrrd"
    logic.exportMask(segmentation, segment_id, ct, str(out))
    back = io.read_image(out)
    assert np.array_equal(back.array, mask) and back.same_geometry(nodes.node_to_volume(ct))


# ------------------------------------------------------------------------------ MediastinalAIRadiomics
def test_radiomics_logic_defaults_to_the_tumor_segment_and_its_ct(scene):
    logic = _load("MediastinalAIRadiomics").MediastinalAIRadiomicsLogic()
    assert logic.defaultTumorSegment() == (None, None)
    ct, _, segmentation, segment_id = _case(scene)
    assert logic.defaultTumorSegment() == (segmentation, segment_id)
    assert logic.referenceVolume(segmentation) is ct
    assert logic.referenceVolume(None) is None


# ------------------------------------------------------------------------------ process runner
class _FakeProcess:
    def __init__(self, chunks):
        self.chunks = list(chunks)
        self.killed = False
        self._state = _QProcess.Running

    def readAllStandardOutput(self):  # noqa: N802 - Qt's name
        return self.chunks.pop(0) if self.chunks else b""

    def state(self):
        return self._state

    def kill(self):
        self.killed = True

    def program(self):
        return "PythonSlicer"


def _runner(mod, chunks):
    events = {"progress": [], "log": [], "finished": []}
    runner = mod.PythonProcessRunner(
        onProgress=lambda f, m: events["progress"].append((f, m)),
        onFinished=lambda ok, msg: events["finished"].append((ok, msg)),
        onLog=events["log"].append,
    )
    runner.process = _FakeProcess(chunks)
    runner._done = False  # as after start()
    return runner, events


def test_runner_parses_progress_across_chunks_and_reports_success(scene):
    mod = _load("MediastinalAI")
    chunks = [
        (process.format_progress_line(0.1, "loading") + "\nINFO hello\nMEDIASTINALAI_PRO").encode(),
        b"GRESS 0.5 window 2/4\n",
        process.format_progress_line(1.0, "done").encode(),
    ]
    runner, events = _runner(mod, chunks)
    for _ in chunks:
        runner._onReadyRead()
    runner.process._state = _QProcess.NotRunning
    runner._onFinished(0, _QProcess.NormalExit)
    runner._onFinished(0, _QProcess.NormalExit)  # reported once
    assert events["progress"] == [(0.1, "loading"), (0.5, "window 2/4"), (1.0, "done")]
    assert events["log"] == ["INFO hello"]
    assert events["finished"] == [(True, "")]


def test_runner_reports_failure_output_and_cancel(scene):
    mod = _load("MediastinalAI")
    runner, events = _runner(mod, [b"mediastinal-ai segment: error: not a CT: Modality MR\n"])
    runner._onReadyRead()
    runner._onFinished(2, _QProcess.NormalExit)
    assert events["finished"] == [(False, "mediastinal-ai segment: error: not a CT: Modality MR")]

    runner, events = _runner(mod, [])
    runner.cancel()
    assert runner.process.killed
    runner._onFinished(9, _QProcess.CrashExit)
    assert events["finished"] == [(False, "cancelled")]

    runner, events = _runner(mod, [])
    runner._onError(_QProcess.FailedToStart)
    assert events["finished"] == [(False, "could not start PythonSlicer")]


# ------------------------------------------------------------------------------ first-click defects
def _body_case(scene, direction=None):
    """A CT big enough for the segmentation model (96 x 96 x 72 mm), centred on the midline."""
    arr = np.full((24, 48, 48), -900, np.int16)
    arr[8:16, 16:32, 16:32] = 40
    d = np.eye(3) if direction is None else direction
    ct = nodes.volume_to_node(scene, Volume(arr, (2.0, 2.0, 3.0), (-48.0, -48.0, 0.0), d), name="CT", role="ct")
    segmentation, segment_id = nodes.mask_to_segment(scene, (arr > 0).astype(np.uint8), ct)
    return ct, segmentation, segment_id


def test_roi_crossing_the_midline_reaches_the_cli_as_one_argument_and_runs(scene, tmp_path):
    """Defect 1: the exact argument list the GUI builds, with a negative box, parsed by the real
    CLI parser and run (``--roi -30,...`` as two arguments stopped argparse)."""
    pytest.importorskip("torch", reason="torch is not installed")
    from mediastinal_ai import cli

    logic = _load("MediastinalAI").MediastinalAILogic()
    ct, _, _ = _body_case(scene)
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    roi.SetXYZ(5.0, 15.0, 35.0)  # RAS: crosses x = 0 and y = 0, so the LPS box starts with '-'
    roi.SetRadiusXYZ(25.0, 25.0, 25.0)
    args = logic.segmentationArguments(ct, str(tmp_path), None, "CPU", 0.5, roi)
    assert args[:2] == ["-m", "mediastinal_ai.cli"]
    roi_args = [a for a in args if a.startswith("--roi")]
    assert roi_args == ["--roi=-30,-40,10,20,10,60"], args
    assert cli.main(args[2:]) == 0
    out = json.loads((tmp_path / "result" / "segmentation_result.json").read_text())
    # the box the CLI parsed and used, as recorded by the run (not just what the GUI sent)
    assert out["params"]["roi_lps"] == pytest.approx([-30, -40, 10, 20, 10, 60])


def test_an_roi_without_points_gives_a_clear_message_and_writes_nothing(scene, tmp_path):
    logic = _load("MediastinalAI").MediastinalAILogic()
    ct, _, _ = _body_case(scene)
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")  # just created in the combo box
    roi.SetName("R")
    with pytest.raises(ValueError, match="no position yet"):
        logic.segmentationArguments(ct, str(tmp_path), None, "CPU", 0.5, roi)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="no position"):
        process.ras_bounds_to_lps_box((1.0, -1.0, 1.0, -1.0, 1.0, -1.0))  # Slicer's "empty" bounds


_TREE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print(child.pid, flush=True)
time.sleep(120)
"""


def _start_tree():
    import subprocess
    import time

    psutil = pytest.importorskip("psutil", reason="psutil is not installed")
    parent = subprocess.Popen([sys.executable, "-c", _TREE], stdout=subprocess.PIPE, text=True)
    grandchild = int(parent.stdout.readline())
    assert psutil.pid_exists(grandchild)
    time.sleep(0.1)
    return psutil, parent, grandchild


def _kill_all(psutil, *pids):
    for pid in pids:
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass


def _gone(psutil, pid):
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_kill_process_tree_stops_the_child_and_the_grandchild():
    """Defect 2: PythonSlicer is a launcher whose child is the real Python."""
    psutil, parent, grandchild = _start_tree()
    try:
        killed = process.kill_process_tree(parent.pid)
        parent.wait(timeout=10)
        assert parent.pid in killed and grandchild in killed
        assert _gone(psutil, grandchild) and parent.returncode is not None
    finally:
        _kill_all(psutil, parent.pid, grandchild)


def test_runner_cancel_kills_the_whole_tree_of_its_process(scene):
    psutil, parent, grandchild = _start_tree()
    mod = _load("MediastinalAI")
    runner, events = _runner(mod, [])
    runner.process.processId = lambda: parent.pid
    try:
        runner.cancel()
        parent.wait(timeout=10)
        assert _gone(psutil, grandchild), "the grandchild (the real Python) still runs"
        runner._onFinished(9, _QProcess.CrashExit)
        assert events["finished"] == [(False, "cancelled")]
    finally:
        _kill_all(psutil, parent.pid, grandchild)


def test_save_report_writes_the_file_the_user_chose(scene, tmp_path):
    """Defect 3: 'report.html' is a file (not a folder), the PDF is beside it, no debris."""
    pytest.importorskip("matplotlib")
    logic = _load("MediastinalAI").MediastinalAILogic()
    ct, segmentation, segment_id = _body_case(scene)
    target = tmp_path / "my reports" / "case 1.html"
    written = logic.saveReport(ct, str(target), segmentation, segment_id)
    assert written == [target, target.with_suffix(".pdf")]
    assert target.is_file() and target.with_suffix(".pdf").is_file()
    assert "<html" in target.read_text(errors="replace").lower()
    assert target.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in target.parent.iterdir()) == ["case 1.html", "case 1.pdf"]
    rad = _load("MediastinalAIRadiomics").MediastinalAIRadiomicsLogic()
    pdf = tmp_path / "r.pdf"
    assert rad.saveReport(ct, str(pdf), segmentation, segment_id) == [tmp_path / "r.html", pdf]


def test_edits_are_flagged_but_automatic_writes_are_not(scene):
    """Defect 4 (edited flag) and 8: Segment Editor edits set MediastinalAI.edited, this module's
    own writes do not; re-thresholding resets it."""
    from mediastinal_ai.mrml import segmentation as seg

    ct, segmentation, segment_id = _body_case(scene)
    seg.watch_edits(segmentation)
    seg.watch_edits(segmentation)  # idempotent
    assert not seg.is_edited(segmentation)
    prob = nodes.probability_to_node(scene, nodes.node_to_volume(ct).with_array(
        (nodes.node_to_volume(ct).array > 0).astype(np.float32) * 0.8, units="probability"), reference=ct)
    seg.rethreshold(scene, prob, segmentation, segment_id, 0.5)
    assert not seg.is_edited(segmentation), "an automatic re-threshold was taken for a user edit"
    # what a Segment Editor effect does: write the labelmap through the segmentations logic
    img = slicer.vtkOrientedImageData()
    segmentation.GetBinaryLabelmapRepresentation(segment_id, img)
    img.GetPointData().GetScalars().SetValue(0, 1)
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(img, segmentation, segment_id)
    assert seg.is_edited(segmentation)
    seg.rethreshold(scene, prob, segmentation, segment_id, 0.6)
    assert not seg.is_edited(segmentation)


def _as_slicer_app_adds_nodes(scene):
    """What the Slicer app does and slicer-core does not: qSlicerSubjectHierarchyPluginLogic
    gives every new data node (not hidden from editors) an item under the scene at once."""
    sh = scene.GetSubjectHierarchyNode()

    def on_added(caller, event, calldata):
        if calldata is not None and not calldata.GetHideFromEditors() and not sh.GetItemByDataNode(calldata):
            if not calldata.IsA("vtkMRMLSubjectHierarchyNode") and calldata.IsA("vtkMRMLDisplayableNode"):
                sh.CreateItem(sh.GetSceneItemID(), calldata)

    import vtk

    on_added.CallDataType = vtk.VTK_OBJECT
    return scene.AddObserver(slicer.vtkMRMLScene.NodeAddedEvent, on_added)


def _ct_in_a_study(scene):
    """A CT under Patient/Study, as Slicer's DICOM plugin leaves it."""
    ct, segmentation, segment_id = _body_case(scene)
    sh = scene.GetSubjectHierarchyNode()
    patient = sh.CreateSubjectItem(sh.GetSceneItemID(), "Patient")
    study = sh.CreateStudyItem(patient, "Study")
    item = sh.GetItemByDataNode(ct)
    if item:
        sh.SetItemParent(item, study)
    else:
        sh.CreateItem(study, ct)
    return ct, sh, study


@pytest.mark.parametrize("app_like", [True, False], ids=["items-made-by-the-app", "no-item-yet"])
def test_place_in_study_puts_a_new_node_under_the_cts_study(scene, app_like):
    """Defect 4: a result goes under its CT's study, whether the node already has an item under the
    scene (the app) or none yet (slicer-core, scripts: ``place_in_study`` used to do nothing)."""
    from mediastinal_ai.mrml import segmentation as seg

    if app_like:
        _as_slicer_app_adds_nodes(scene)
    ct, sh, study = _ct_in_a_study(scene)
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "result")
    assert bool(sh.GetItemByDataNode(node)) == app_like
    seg.place_in_study(scene, node, ct)
    assert sh.GetItemParent(sh.GetItemByDataNode(node)) == study
    seg.place_in_study(scene, node, ct)  # idempotent
    assert sh.GetItemParent(sh.GetItemByDataNode(node)) == study
    # a CT loaded from a file sits under the scene: the result stays where it is
    other = nodes.volume_to_node(scene, nodes.node_to_volume(ct), name="CT from file")
    if not sh.GetItemByDataNode(other):
        sh.CreateItem(sh.GetSceneItemID(), other)
    loose = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "loose")
    seg.place_in_study(scene, loose, other)
    assert sh.GetItemParent(sh.GetItemByDataNode(loose)) in (0, sh.GetSceneItemID())


def test_segmentation_result_goes_under_the_ct_study(scene, tmp_path):
    from mediastinal_ai.io import write_image
    from mediastinal_ai.mrml import segmentation as seg

    _as_slicer_app_adds_nodes(scene)
    ct, sh, study = _ct_in_a_study(scene)
    v = nodes.node_to_volume(ct)
    write_image(v.with_array((v.array > 0).astype(np.float32) * 0.9, units="probability"),
                tmp_path / "probability.nrrd")
    (tmp_path / "segmentation_result.json").write_text(json.dumps({"threshold": 0.5, "model": "demo"}))
    result = seg.import_result(scene, ct, tmp_path)
    item = sh.GetItemByDataNode(result["segmentation_node"])
    assert sh.GetItemParent(item) == study


class _FakeDicomDatabase:
    def __init__(self, files_by_uid):
        self.files_by_uid = files_by_uid

    def fileForInstance(self, uid):  # noqa: N802 - ctkDICOMDatabase's name
        return self.files_by_uid.get(uid, "")


def test_dicom_seg_export_of_a_ct_loaded_by_slicers_dicom_browser(scene, tmp_path, monkeypatch):
    """Defect 4: a CT loaded by Slicer's DICOM module has no file list of ours, only
    DICOM.instanceUIDs; the files come from Slicer's DICOM database. An edited segment is not
    exported as AUTOMATIC."""
    pydicom = pytest.importorskip("pydicom")
    pytest.importorskip("highdicom", reason="highdicom is not installed")
    from mediastinal_ai.io import read_ct

    # a real CT series with its SOP instance UIDs (Slicer's DICOM database indexes files by them;
    # abdomen_ct_dicom_series has them blanked, so Slicer would not even index it)
    series = REAL_CT_DIR / "lidc-contrast-slabs" / "LIDC-IDRI-0003"
    if not series.is_dir():
        pytest.skip(f"real CT samples not found at {series}")
    vol = read_ct(series)
    files = vol.metadata["dicom_files"]
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    assert all(uids) and len(set(uids)) == len(files)
    # the node as Slicer's DICOM plugin leaves it: voxels + geometry + DICOM.instanceUIDs only
    bare = Volume(vol.array, vol.spacing_xyz, vol.origin_xyz, vol.direction)
    ct = nodes.volume_to_node(scene, bare, name="CT from DICOM browser")
    ct.SetAttribute("DICOM.instanceUIDs", " ".join(uids))
    mask = np.zeros(vol.shape, np.uint8)
    mask[3:7, 200:260, 200:260] = 1
    segmentation, segment_id = nodes.mask_to_segment(scene, mask, ct)
    logic = _load("MediastinalAI").MediastinalAILogic()
    monkeypatch.setattr(slicer, "dicomDatabase", _FakeDicomDatabase(dict(zip(uids, files))), raising=False)
    out = tmp_path / "seg.dcm"
    logic.exportDicomSeg(segmentation, segment_id, ct, str(out))
    ds = pydicom.dcmread(out)
    assert ds.Modality == "SEG"
    ref = ds.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
    assert {str(r.ReferencedSOPInstanceUID) for r in ref.ReferencedInstanceSequence} <= set(uids)
    assert ds.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
    # the frames sit on the right slices: i-th UID = i-th slice, as Slicer's DICOM plugin keeps it
    from mediastinal_ai.segmentation.dicom_seg import read_dicom_seg

    assert np.array_equal(read_dicom_seg(out, vol).array, mask)
    # edit it as Segment Editor would: no longer exported as AUTOMATIC
    logic.watchEdits(segmentation)
    img = slicer.vtkOrientedImageData()
    segmentation.GetBinaryLabelmapRepresentation(segment_id, img)
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(img, segmentation, segment_id)
    logic.exportDicomSeg(segmentation, segment_id, ct, str(out))
    assert pydicom.dcmread(out).SegmentSequence[0].SegmentAlgorithmType in ("MANUAL", "SEMIAUTOMATIC")
    # a database that lost files: one clear message, nothing written
    monkeypatch.setattr(slicer, "dicomDatabase", _FakeDicomDatabase({}), raising=False)
    from mediastinal_ai.errors import InputError

    with pytest.raises(InputError, match="not in Slicer's DICOM database"):
        logic.exportDicomSeg(segmentation, segment_id, ct, str(tmp_path / "x.dcm"))
    assert not (tmp_path / "x.dcm").exists()


# ------------------------------------------------------------------------------ defect 7: jobs in a child
REAL_CT = REAL_CT_DIR / "mediastinum_crop_ct.nii.gz"


def _real_ct_case(scene):
    """The real contrast chest CT crop with a box segment in the mediastinum (the box is ours)."""
    if not REAL_CT.is_file():
        pytest.skip(f"real CT sample not found at {REAL_CT}")
    from mediastinal_ai.io import read_image

    ct_vol = read_image(REAL_CT)
    ct = nodes.volume_to_node(scene, ct_vol.with_array(ct_vol.array, units="HU"), name="real CT", role="ct")
    mask = np.zeros(ct_vol.shape, np.uint8)
    mask[50:62, 40:56, 50:66] = 1
    segmentation, segment_id = nodes.mask_to_segment(scene, mask, ct)
    return ct, segmentation, segment_id


def _run_child_like_the_runner(mod, args, timeout=600):
    """Start ``<python> args`` with the environment the runner gives PythonSlicer, stdout and
    stderr merged (QProcess.MergedChannels), and feed the output to a PythonProcessRunner in
    small chunks, as readyReadStandardOutput delivers it."""
    import subprocess

    done = subprocess.run([sys.executable, *args], env=process.child_environment(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=timeout, check=False)
    data = done.stdout
    chunks = [data[i:i + 37] for i in range(0, len(data), 37)]
    runner, events = _runner(mod, chunks)
    for _ in chunks:
        runner._onReadyRead()
    runner.process._state = _QProcess.NotRunning
    runner._onFinished(done.returncode, _QProcess.NormalExit)
    return events, data.decode(errors="replace")


def _check_progress(events, output):
    fractions = [f for f, _ in events["progress"]]
    assert events["finished"] == [(True, "")], output[-2000:]
    assert len(fractions) >= 3 and fractions == sorted(fractions) and fractions[-1] == 1.0, events["progress"]


def test_cnn_and_ctc_prediction_run_in_a_child_process_and_publish(scene, tmp_path):
    """Defect 7: 'Predict risk (CNN)' and 'Predict with CTC' run as ``PythonSlicer -m
    mediastinal_ai.mrml.worker`` (progress lines, result files) and the parent publishes them."""
    pytest.importorskip("torch", reason="torch is not installed")
    mod = _load("MediastinalAI")
    logic = mod.MediastinalAILogic()
    ct, segmentation, segment_id = _real_ct_case(scene)

    cnn_dir = tmp_path / "cnn run"
    args = logic.prepareJob(str(cnn_dir), "risk-cnn", ct, segmentation, segment_id, model=None)
    assert args[:2] == ["-m", "mediastinal_ai.mrml.worker"]
    events, output = _run_child_like_the_runner(mod, args)
    _check_progress(events, output)
    table, cam, result = logic.publishJob(str(cnn_dir), ct, show=False)
    assert 0.0 <= result["probability_high_risk"] <= 1.0 and table.GetNumberOfRows() >= 1
    assert nodes.node_to_volume(cam).same_geometry(nodes.node_to_volume(ct))

    ctc_dir = tmp_path / "ctc run"
    args = logic.prepareJob(str(ctc_dir), "fusion", ct, segmentation, segment_id, model=None, ctc=8.5, age=60.0,
                            sex=None, lesion_site=None)
    events, output = _run_child_like_the_runner(mod, args)
    _check_progress(events, output)
    table, result = logic.publishJob(str(ctc_dir), ct, segmentId=segment_id)
    assert 0.0 <= result["fusion"]["p_malignant"] <= 1.0 and table.GetNumberOfRows() >= 1


def test_a_failing_job_reports_the_childs_message(scene, tmp_path):
    mod = _load("MediastinalAI")
    logic = mod.MediastinalAILogic()
    ct, segmentation, segment_id = _body_case(scene)
    args = logic.prepareJob(str(tmp_path), "risk-cnn", ct, segmentation, segment_id, model="no-such-model")
    events, _ = _run_child_like_the_runner(mod, args)
    (ok, message), = events["finished"]
    assert not ok and "no-such-model" in message


def test_all_features_run_in_a_child_with_one_progress_line_per_image_type(scene, tmp_path):
    """Defect 7 (radiomics): the whole extraction in a child, progress after each image type and
    LoG sigma (not only 5% and 100%); the table records the radiomics that computed it."""
    pytest.importorskip("radiomics", reason="pyradiomics is not installed")
    rad = _load("MediastinalAIRadiomics")
    logic = rad.MediastinalAIRadiomicsLogic()
    ct, segmentation, segment_id = _real_ct_case(scene)
    params = {"setting": {"binWidth": 32, "label": 1, "correctMask": True},
              "imageType": {"Original": {}, "LoG": {"sigma": [1.0, 2.0]}, "Square": {}}}
    args = logic.prepareJob(str(tmp_path), "radiomics-features", ct, segmentation, segment_id, params=params)
    events, output = _run_child_like_the_runner(_load("MediastinalAI"), args)
    _check_progress(events, output)
    parts = [m for _, m in events["progress"] if m.startswith("radiomics features:")]
    assert parts == ["radiomics features: Original (1/4)", "radiomics features: LoG sigma 1 (2/4)",
                     "radiomics features: LoG sigma 2 (3/4)", "radiomics features: Square (4/4)"]
    table, result = logic.publishJob(str(tmp_path), ct, segmentation, segment_id)
    names = {table.GetTable().GetValueByName(r, "name").ToString() for r in range(table.GetNumberOfRows())}
    assert {n.split("_")[0] for n in names} == {"original", "log-sigma-1-0-mm-3D", "log-sigma-2-0-mm-3D", "square"}
    from mediastinal_ai import radiomics as core_radiomics  # noqa: F401 - installed radiomics is importable
    from mediastinal_ai.mrml import dependencies

    dist, version = dependencies.radiomics_version()
    assert table.GetAttribute("MediastinalAI.radiomicsVersion") == f"{dist} {version}"


def test_widget_buttons_start_child_jobs_instead_of_computing_on_the_main_thread():
    """Defect 7, statically: the button handlers hand the work to ``_startJob`` (child process)
    and never call the in-process prediction methods (kept for scripts and self-tests)."""
    import ast

    in_process = {"predictRiskCnn", "predictWithCtc", "segmentInProcess", "predictRisk", "computeAllFeatures"}
    handlers = {"MediastinalAI": ["onSegment", "onPredictCnn", "onPredictCtc"],
                "MediastinalAIRadiomics": ["onPredictRisk", "onComputeAllFeatures"]}
    for module, names in handlers.items():
        tree = ast.parse((REPO / module / f"{module}.py").read_text())
        widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == f"{module}Widget")
        methods = {f.name: f for f in widget.body if isinstance(f, ast.FunctionDef)}
        for name in names:
            called = {c.func.attr for c in ast.walk(methods[name]) if isinstance(c, ast.Call)
                      and isinstance(c.func, ast.Attribute)}
            assert "_startJob" in called, f"{module}.{name} does not start a child job"
            assert not called & in_process, f"{module}.{name} computes on the main thread: {called & in_process}"
        for f in methods.values():  # nothing else in the widget runs them either
            called = {c.func.attr for c in ast.walk(f) if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)}
            assert not called & in_process, f"{module}Widget.{f.name} calls {called & in_process}"


# ------------------------------------------------------------------------------ defect 8: threshold
def _imported_result(scene, tmp_path):
    from mediastinal_ai.io import write_image
    from mediastinal_ai.mrml import segmentation as seg

    ct, _, _ = _body_case(scene)
    v = nodes.node_to_volume(ct)
    prob = np.zeros(v.shape, np.float32)
    prob[8:16, 16:32, 16:32] = 0.55  # a core at 0.9 inside a rim at 0.55: thresholds 0.5 / 0.7 differ
    prob[10:14, 20:28, 20:28] = 0.9
    write_image(v.with_array(prob, units="probability"), tmp_path / "probability.nrrd")
    (tmp_path / "segmentation_result.json").write_text(json.dumps({"threshold": 0.5, "model": "demo"}))
    result = seg.import_result(scene, ct, tmp_path)
    seg.watch_edits(result["segmentation_node"])
    return ct, result


def _segment_voxels(result, ct):
    return int(nodes.segment_to_mask(result["segmentation_node"], result["segment_id"], ct).array.sum())


def _edit(result):
    img = slicer.vtkOrientedImageData()
    result["segmentation_node"].GetBinaryLabelmapRepresentation(result["segment_id"], img)
    slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
        img, result["segmentation_node"], result["segment_id"])


def test_threshold_action_ignores_gui_updates_and_asks_for_edited_segments(scene, tmp_path):
    logic = _load("MediastinalAI").MediastinalAILogic()
    ct, r = _imported_result(scene, tmp_path)
    prob, segmentation, sid = r["probability_node"], r["segmentation_node"], r["segment_id"]
    assert logic.appliedThreshold(prob) == 0.5
    assert logic.thresholdAction(prob, segmentation, sid, 0.5) == "none"  # the GUI showing the stored value
    assert logic.thresholdAction(prob, segmentation, sid, 0.7) == "apply"
    assert logic.thresholdAction(None, segmentation, sid, 0.7) == "none"
    assert logic.thresholdAction(prob, segmentation, "no such segment", 0.7) == "none"
    _edit(r)
    assert logic.thresholdAction(prob, segmentation, sid, 0.7) == "confirm"


class _FakeTimer:
    def __init__(self):
        self.starts = 0

    def start(self):
        self.starts += 1


def _fake_widget(mod, logic, p):
    w = types.SimpleNamespace(_parameterNode=p, _pendingThreshold=None, _thresholdTimer=_FakeTimer(), logic=logic,
                              _runner=types.SimpleNamespace(isRunning=lambda: False), statuses=[], errors=[])
    w._status = w.statuses.append
    w._error = lambda message, e: w.errors.append((message, e))
    return w


def test_threshold_slider_applies_the_last_value_once_and_keeps_refused_edits(scene, tmp_path, monkeypatch):
    """Defect 8: a burst of valueChanged (spin-box typing, GUI updates) re-thresholds once, with
    the last value; an edited segment is replaced only after the user agrees; refusing keeps the
    edits and puts the slider back on the threshold the segment was made with."""
    import contextlib

    mod = _load("MediastinalAI")
    logic = mod.MediastinalAILogic()
    ct, r = _imported_result(scene, tmp_path)
    p = types.SimpleNamespace(probabilityVolume=r["probability_node"], segmentation=r["segmentation_node"],
                              segmentId=r["segment_id"], threshold=0.5, lesionTable=r["table_node"])
    calls = {"rethreshold": 0, "asked": []}
    real = logic.rethreshold

    def counting(*a, **k):
        calls["rethreshold"] += 1
        return real(*a, **k)

    logic.rethreshold = counting
    answer = {"ok": False}
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay",
                        lambda text, **k: calls["asked"].append(text) or answer["ok"], raising=False)
    monkeypatch.setattr(slicer.util, "WaitCursor", contextlib.nullcontext, raising=False)
    widget_cls = mod.MediastinalAIWidget
    w = _fake_widget(mod, logic, p)
    at_05 = _segment_voxels(r, ct)

    for value in (0.6, 0.65, 0.7):  # three signals in a row
        widget_cls.onThresholdChanged(w, value)
    assert w._thresholdTimer.starts == 3 and calls["rethreshold"] == 0  # nothing on the main thread yet
    widget_cls.applyPendingThreshold(w)  # the timer fires once
    assert calls["rethreshold"] == 1 and calls["asked"] == []
    at_07 = _segment_voxels(r, ct)
    assert at_07 < at_05 and logic.appliedThreshold(p.probabilityVolume) == 0.7

    widget_cls.onThresholdChanged(w, 0.7)  # the parameter node re-showing the value: nothing to do
    widget_cls.applyPendingThreshold(w)
    assert calls["rethreshold"] == 1

    _edit(r)  # the user edits the segment in Segment Editor ...
    widget_cls.onThresholdChanged(w, 0.5)  # ... then moves the slider, and refuses
    widget_cls.applyPendingThreshold(w)
    assert len(calls["asked"]) == 1 and calls["rethreshold"] == 1
    assert _segment_voxels(r, ct) == at_07 and logic.isEdited(p.segmentation)
    assert p.threshold == 0.7 and w.statuses[-1].startswith("Threshold not applied")

    answer["ok"] = True  # now agrees
    widget_cls.onThresholdChanged(w, 0.5)
    widget_cls.applyPendingThreshold(w)
    assert calls["rethreshold"] == 2 and _segment_voxels(r, ct) == at_05 and not logic.isEdited(p.segmentation)
    assert w.errors == []


def test_threshold_slider_updates_on_release_only():
    """ctkSliderWidget emits valueChanged on every drag tick unless tracking is off (CTK
    ctkSliderWidget.cpp: with tracking off, stopChanging() emits it once on release)."""
    import xml.etree.ElementTree as ET

    root = ET.parse(REPO / "MediastinalAI" / "Resources" / "UI" / "MediastinalAI.ui").getroot()
    slider = next(w for w in root.iter("widget") if w.get("name") == "thresholdSliderWidget")
    assert slider.get("class") == "ctkSliderWidget"
    props = {pr.get("name"): pr for pr in slider.findall("property")}
    assert props["tracking"].findtext("bool") == "false"


# ------------------------------------------------------------------------------ defect 9: dependencies
class _FakePyTorchUtilsLogic:
    """The signature of SlicerPyTorch's PyTorchUtilsLogic.installTorch (PyTorchUtils.py, 2023-):
    a keyword the real one lacks raises TypeError here too."""

    calls: list = []

    def installTorch(self, askConfirmation=False, forceComputationBackend=None,  # noqa: N802, N803
                     torchVersionRequirement=None, torchvisionVersionRequirement=None):  # noqa: N803
        type(self).calls.append({"askConfirmation": askConfirmation, "torch": torchVersionRequirement,
                                 "torchvision": torchvisionVersionRequirement})
        return types.SimpleNamespace(__version__="fake")


def _dependency_env(monkeypatch, *, missing_before, missing_after, confirm=True, pip_error=None):
    import contextlib

    from mediastinal_ai.mrml import dependencies as deps

    state = {"installed": False, "pip": [], "errors": [], "asked": []}
    monkeypatch.setattr(deps, "missing", lambda features: list(missing_after if state["installed"] else missing_before))

    def pip_install(requirements):
        state["pip"].append(requirements)
        if pip_error is not None:
            raise pip_error
        state["installed"] = True

    monkeypatch.setattr(slicer.util, "pip_install", pip_install, raising=False)
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, **k: state["asked"].append(text) or confirm,
                        raising=False)
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, **k: state["errors"].append(text), raising=False)
    monkeypatch.setattr(slicer.util, "WaitCursor", contextlib.nullcontext, raising=False)
    return state


def test_a_failed_install_is_reported_and_the_caller_goes_on(scene, monkeypatch):
    """Defect 9: tryWithErrorDisplay re-raised, so "still missing" and the clean-up never ran."""
    _load("MediastinalAI")  # puts MediastinalAILib on the path
    from MediastinalAILib.dependencies import ensureDependencies

    state = _dependency_env(monkeypatch, missing_before=["pandas"], missing_after=["pandas"],
                            pip_error=RuntimeError("pip: network unreachable"))
    statuses = []
    assert ensureDependencies(["report"], "MediastinalAI", statuses.append) is False
    assert state["pip"] == [["pandas>=2.0"]]
    (text,) = state["errors"]
    assert "Still missing after installation: pandas" in text and "pip: network unreachable" in text
    assert statuses == [text]

    state = _dependency_env(monkeypatch, missing_before=["pandas"], missing_after=[], confirm=False)
    assert ensureDependencies(["report"], "MediastinalAI", statuses.append) is False  # the user said no
    assert state["pip"] == [] and statuses[-1].startswith("Not installed")

    state = _dependency_env(monkeypatch, missing_before=["pandas"], missing_after=[])
    assert ensureDependencies(["report"], "MediastinalAI") is True and state["errors"] == []


def test_torch_goes_through_the_pytorch_extension_with_minimum_versions(scene, monkeypatch):
    _load("MediastinalAI")
    from MediastinalAILib.dependencies import ensureDependencies

    from mediastinal_ai.mrml import dependencies as deps

    fake = types.ModuleType("PyTorchUtils")
    fake.PyTorchUtilsLogic = _FakePyTorchUtilsLogic
    _FakePyTorchUtilsLogic.calls = []
    monkeypatch.setitem(sys.modules, "PyTorchUtils", fake)
    state = _dependency_env(monkeypatch, missing_before=["monai", "torch", "torchvision"], missing_after=[])
    assert ensureDependencies(["segmentation"]) is True
    assert _FakePyTorchUtilsLogic.calls == [{"askConfirmation": False, "torch": ">=2.2", "torchvision": ">=0.17"}]
    assert state["pip"] == [["monai>=1.3"]]  # the rest with pip, minimum versions (Slicer's shared Python)
    assert "torch>=2.2" in state["asked"][0] and "==" not in state["asked"][0]
    assert all("==" not in r for r in deps.SLICER_REQUIREMENTS.values())


def test_a_job_that_cannot_start_leaves_no_temporary_folder(scene, monkeypatch, tmp_path):
    import contextlib
    import tempfile

    mod = _load("MediastinalAI")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(slicer.util, "WaitCursor", contextlib.nullcontext, raising=False)
    errors = []
    w = types.SimpleNamespace(_runner=types.SimpleNamespace(isRunning=lambda: False), _job=None,
                              _status=lambda t: None, _error=lambda m, e: errors.append(str(e)),
                              _updateGui=lambda: None)

    def prepare(run_dir):
        (Path(run_dir) / "ct.nrrd").write_bytes(b"half written")
        raise ValueError("The ROI 'R' has no position yet")

    mod.MediastinalAIWidget._startJob(w, "segment", prepare, {})
    assert errors == ["The ROI 'R' has no position yet"] and w._job is None
    assert list(tmp_path.iterdir()) == []


_LOAD_CT_CHILD = r'''
import importlib.abc, json, sys
allowed = set(json.loads(sys.argv[1]))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in allowed or top in sys.stdlib_module_names:
            return None
        raise ModuleNotFoundError(f"No module named {top!r} (not shipped with Slicer)", name=top)
sys.meta_path.insert(0, Block())
from mediastinal_ai.io import read_ct
for path in sys.argv[2:]:
    v = read_ct(path)
    print(path, v.shape)
# interpreter plumbing (site hooks, the editable-install finder, SWIG's runtime table) is not a package
print("LOADED", json.dumps(sorted({m.split(".")[0] for m in sys.modules if not m.startswith("_")
                                    and not m.startswith("swig_runtime_data")} - set(sys.stdlib_module_names))))
'''


def test_loading_a_ct_needs_only_what_slicer_ships(real_ct_dir):
    """Defect 9: 'Load CT' asked to install pandas/matplotlib/pyyaml it does not need. Read a real
    DICOM series and a NIfTI file with every package Slicer does not ship made unimportable."""
    import subprocess

    from mediastinal_ai.mrml import dependencies as deps

    assert set(deps.FEATURES["load-ct"]) <= deps.SLICER_BUNDLED
    allowed = sorted(deps.SLICER_BUNDLED | {"mediastinal_ai"})
    paths = [str(real_ct_dir / "lidc-contrast-slabs" / "LIDC-IDRI-0003"), str(real_ct_dir / "mediastinum_crop_ct.nii.gz")]
    done = subprocess.run([sys.executable, "-c", _LOAD_CT_CHILD, json.dumps(allowed), *paths], capture_output=True,
                          text=True, timeout=300, cwd=str(REPO), check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.splitlines()[-1].split(" ", 1)[1])
    assert set(loaded) <= deps.SLICER_BUNDLED | {"mediastinal_ai"}, loaded


# ------------------------------------------------------------------------------ tutorial sample
# The parameters of SampleData.SampleDataLogic.registerCustomSampleDataSource in Slicer 5.10 and
# the current preview (Modules/Scripted/SampleData/SampleData.py), and the one constraint its
# SampleDataSource puts on uris/fileNames/nodeNames: lists (or a single string) of one length.
_SAMPLE_DATA_PARAMETERS = {"category", "sampleName", "uris", "fileNames", "nodeNames", "customDownloader",
                           "thumbnailFileName", "loadFileTypes", "loadFiles", "loadFileProperties", "checksums",
                           "loadFileType"}


def test_the_synthetic_sample_registers_with_sample_data_and_loads(scene, monkeypatch):
    import contextlib

    pytest.importorskip("yaml")
    registered = []

    class _Logic:
        @staticmethod
        def registerCustomSampleDataSource(**kwargs):  # noqa: N802 - Slicer's name
            assert set(kwargs) <= _SAMPLE_DATA_PARAMETERS, set(kwargs) - _SAMPLE_DATA_PARAMETERS
            fields = [kwargs.get(k) for k in ("uris", "fileNames", "nodeNames")]
            assert all(isinstance(f, (list, tuple, str)) for f in fields), f"len() of None in SampleDataSource: {fields}"
            assert len({1 if isinstance(f, str) else len(f) for f in fields}) == 1
            assert Path(kwargs["thumbnailFileName"]).is_file()
            registered.append(kwargs)

    monkeypatch.setitem(sys.modules, "SampleData", types.SimpleNamespace(SampleDataLogic=_Logic))
    mod = _load("MediastinalAI")
    mod._registerSampleData()
    (source,) = registered
    assert source["category"] == "MediastinalAI" and source["sampleName"] == mod.SAMPLE_NAME
    shown = []
    monkeypatch.setattr(mod, "ensureDependencies", lambda features, title="", status=None: True)
    monkeypatch.setattr(slicer.util, "WaitCursor", contextlib.nullcontext, raising=False)
    monkeypatch.setattr(slicer.util, "setSliceViewerLayers", lambda **k: shown.append(k), raising=False)
    (node,) = source["customDownloader"](types.SimpleNamespace(**source))  # what the SampleData button calls
    assert node.IsA("vtkMRMLScalarVolumeNode") and "SYNTHETIC" in node.GetName()
    assert scene.GetNodeByID(node.GetID()) is node and shown == [{"background": node, "fit": True}]
    monkeypatch.setattr(mod, "ensureDependencies", lambda features, title="", status=None: False)
    assert source["customDownloader"](types.SimpleNamespace(**source)) == []  # the user declined PyYAML


# ------------------------------------------------------------------------------ smaller items
class _FakeSegmentSelector:
    """qMRMLSegmentSelectorWidget's calls the binding uses; it records every (node, ID) it showed."""

    def __init__(self):
        self.node, self.segment_id, self.shown, self.slots = None, "", [], []

    def connect(self, signal, slot):
        self.slots.append(slot)

    def currentNode(self):  # noqa: N802 - Qt's names
        return self.node

    def currentSegmentID(self):  # noqa: N802
        return self.segment_id

    def setCurrentNode(self, node):  # noqa: N802
        self.node = node
        self.shown.append((node, self.segment_id))

    def setCurrentSegmentID(self, segment_id):  # noqa: N802
        self.segment_id = segment_id
        self.shown.append((self.node, segment_id))

    def user_picks(self, node):
        """The user chooses another segmentation node: Qt emits currentNodeChanged."""
        self.node = node
        ids = list(node.GetSegmentation().GetSegmentIDs())
        self.segment_id = ids[0] if ids else ""
        for slot in self.slots:
            slot(node)


class _ParameterNodeLike:
    """A parameter node whose every write triggers the widget's GUI update, as the real one
    (ModifiedEvent → _updateGui → updateSelector) does."""

    def __init__(self, on_modified):
        object.__setattr__(self, "_on_modified", on_modified)
        object.__setattr__(self, "segmentation", None)
        object.__setattr__(self, "segmentId", "")

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)
        self._on_modified()


def test_segment_selector_never_pairs_a_new_node_with_the_old_segment_id(scene):
    _load("MediastinalAI")
    from MediastinalAILib.segmentSelector import SegmentSelectorBinding

    ct, seg_a, id_a = _body_case(scene)
    mask = (nodes.node_to_volume(ct).array > 0).astype(np.uint8)
    seg_b, id_b = nodes.mask_to_segment(scene, mask, ct, segment_id="other_segment")
    assert id_a != id_b and seg_b.GetSegmentation().GetSegment(id_a) is None
    selector = _FakeSegmentSelector()
    holder = {}
    p = _ParameterNodeLike(lambda: holder["binding"].updateSelector() if "binding" in holder else None)
    holder["binding"] = SegmentSelectorBinding(selector, lambda: p)
    p.segmentation, p.segmentId = seg_a, id_a
    selector.shown.clear()
    selector.user_picks(seg_b)
    assert (p.segmentation, p.segmentId) == (seg_b, id_b)
    stale = [(n, i) for n, i in selector.shown if n is seg_b and i == id_a]
    assert not stale, f"a segment ID the new node does not have was pushed onto it: {stale}"


@pytest.mark.parametrize("module", ["MediastinalAI", "MediastinalAIRadiomics"])
def test_closing_the_scene_during_a_job_cancels_it_and_imports_nothing(scene, tmp_path, module, monkeypatch):
    mod = _load(module)
    run_dir = tmp_path / "job"
    run_dir.mkdir()
    (run_dir / "ct.nrrd").write_bytes(b"x")
    cancelled, imported, statuses = [], [], []
    runner = types.SimpleNamespace(isRunning=lambda: True, cancel=lambda: cancelled.append(True))
    label = types.SimpleNamespace(text="")
    w = types.SimpleNamespace(
        _runner=runner, _parameterNode=object(), setParameterNode=lambda p: setattr(w, "_parameterNode", p),
        _job={"kind": "segment", "task": "radiomics-features", "what": "Compute all features", "runDir": str(run_dir),
              "context": {}},
        _importJobResult=lambda job: imported.append(job), _updateGui=lambda: None,
        _setStatus=statuses.append, _status=statuses.append,
        ui=types.SimpleNamespace(progressStatusLabel=label, statusLabel=label, progressBar=types.SimpleNamespace()),
        logic=types.SimpleNamespace(publishJob=lambda *a: imported.append(a)),
    )
    widget = getattr(mod, f"{module}Widget")
    if module == "MediastinalAI":  # a slider value still pending is dropped with the scene
        stopped = []
        w._pendingThreshold, w._thresholdTimer = 0.3, types.SimpleNamespace(stop=lambda: stopped.append(True))
        w._dropPendingThreshold = lambda: widget._dropPendingThreshold(w)
    widget.onSceneStartClose(w, None, None)
    assert cancelled == [True] and w._parameterNode is None
    if module == "MediastinalAI":
        assert stopped == [True] and w._pendingThreshold is None
    widget.onJobFinished(w, False, mod.CANCELLED)
    assert imported == [] and not run_dir.exists() and w._job is None
    assert "scene was closed" in (label.text + " ".join(statuses))


# ------------------------------------------------------------------------------ living beside other extensions
def _radiomics_copy(root: Path, version: str, distribution: str | None) -> Path:
    pkg = root / "radiomics"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(f'__version__ = "{version}"\n')
    if distribution:  # installed by pip: a dist-info that lists the package's files
        info = root / f"{distribution.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
        (info / "RECORD").write_text("radiomics/__init__.py,,\n")
    return root


def test_which_radiomics_copy_is_used_is_said_and_the_others_listed(tmp_path):
    """pyradiomics-bhklab and SlicerRadiomics' bundled copy both provide `radiomics`: the first on
    sys.path wins; the note names it and the shadowed ones."""
    from mediastinal_ai.mrml import dependencies as deps

    ours = _radiomics_copy(tmp_path / "site", "3.1.4", "pyradiomics-bhklab")
    slicer_radiomics = _radiomics_copy(tmp_path / "SlicerRadiomics", "3.0.1", None)
    copies = deps.radiomics_copies([str(slicer_radiomics), str(ours), str(slicer_radiomics)])
    assert [(c["distribution"], c["version"]) for c in copies] == [
        ("unknown (no package metadata)", "3.0.1"), ("pyradiomics-bhklab", "3.1.4")]
    assert [c["path"] for c in copies] == [str(slicer_radiomics / "radiomics"), str(ours / "radiomics")]


def test_radiomics_version_mismatch_with_the_models_card_is_flagged(monkeypatch):
    from mediastinal_ai.mrml import dependencies as deps
    from mediastinal_ai.mrml import worker

    monkeypatch.setattr(deps, "radiomics_version", lambda: ("pyradiomics-bhklab", "3.1.4"))
    assert worker.radiomics_warnings({"pyradiomics-bhklab": "3.1.4"}) == []
    (minor,) = worker.radiomics_warnings({"pyradiomics-bhklab": "3.0.0"})
    assert "same major version" in minor
    (major,) = worker.radiomics_warnings({"pyradiomics": "2.2.0"})
    assert "NOT comparable" in major and "pyradiomics 2.2.0" in major
    assert worker.radiomics_warnings(None) == []


def test_in_process_radiomics_prediction_warns_like_the_child_process(scene, monkeypatch):
    """Scripts and the self-test use the in-process path: it flags a radiomics the model was not
    trained with, as the GUI's worker does."""
    pytest.importorskip("radiomics", reason="pyradiomics is not installed")
    from mediastinal_ai.mrml import dependencies as deps
    from mediastinal_ai.mrml import radiomics as mrml_radiomics

    ct, segmentation, segment_id = _body_case(scene)
    monkeypatch.setattr(deps, "radiomics_version", lambda: ("pyradiomics", "9.0.0"))
    table, result = mrml_radiomics.predict_risk(scene, ct, segmentation, segment_id)
    assert any("NOT comparable" in w for w in result["warnings"]), result["warnings"]
    assert json.loads(table.GetAttribute("MediastinalAI.radiomicsResult"))["warnings"] == result["warnings"]
    assert table.GetAttribute("MediastinalAI.radiomicsVersion") == "pyradiomics 9.0.0"  # every table records it


# ------------------------------------------------------------------------------ defect 10: Slicer >= 5.10
class _FakeLayout:
    def __init__(self):
        self.widgets = []

    def addWidget(self, w):  # noqa: N802 - Qt's name
        self.widgets.append(w)

    def addStretch(self, n):  # noqa: N802
        pass


class _FakeQLabel:
    def __init__(self, text):
        self.text, self.wordWrap = text, False


@pytest.mark.parametrize(("version", "refused"), [((5, 8), True), ((5, 9), True), ((5, 10), False), ((5, 12), False),
                                                  ((6, 0), False)])
@pytest.mark.parametrize("module", ["MediastinalAI", "MediastinalAIRadiomics"])
def test_older_slicer_is_refused_with_a_message_instead_of_the_gui(scene, monkeypatch, module, version, refused):
    from mediastinal_ai.mrml import dependencies as deps

    mod = _load(module)
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(majorVersion=version[0], minorVersion=version[1],
                                                             connect=lambda *a: None), raising=False)
    monkeypatch.setattr(mod.qt, "QLabel", _FakeQLabel, raising=False)
    loaded = []
    monkeypatch.setattr(slicer.util, "loadUI", lambda path: loaded.append(path) or (_ for _ in ()).throw(
        RuntimeError("stop after loadUI")), raising=False)
    w = types.SimpleNamespace(layout=_FakeLayout(), resourcePath=lambda p: p)
    widget = getattr(mod, f"{module}Widget")
    if refused:
        widget.setup(w)
        (label,) = w.layout.widgets
        assert "needs 3D Slicer 5.10 or later" in label.text and f"Slicer {version[0]}.{version[1]}" in label.text
        assert loaded == []  # the GUI (and its first-click failures) never appears
    else:
        with pytest.raises(RuntimeError, match="stop after loadUI"):
            widget.setup(w)
        assert loaded and w.layout.widgets == []
    assert bool(deps.slicer_version_problem(*version)) == refused
    help_text = getattr(mod, module)(types.SimpleNamespace()).parent.helpText
    assert "Slicer 5.10 or later" in help_text
    if module == "MediastinalAI":  # the module's help starts with the refusal too
        assert help_text.startswith("MediastinalAI needs 3D Slicer 5.10") == refused


def test_show_3d_makes_a_surface_and_toggles_it(scene):
    """The 'Show 3D' button (as the peer extensions have): closed surface on, 3D visibility toggled."""
    from mediastinal_ai.mrml import segmentation as seg

    # what the app's vtkSlicerSegmentationsModuleLogic::RegisterNodes does at start-up (slicer-core has no rules)
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if not any(r.GetName() == slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule().GetName()
               for r in factory.GetConverterRules()):
        factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
    _, segmentation, segment_id = _body_case(scene)
    seg.show_3d(segmentation, True)
    closed = slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName()
    assert segmentation.GetSegmentation().ContainsRepresentation(closed)
    poly = segmentation.GetSegmentation().GetSegment(segment_id).GetRepresentation(closed)
    assert poly is not None and poly.GetNumberOfPoints() > 0
    assert segmentation.GetDisplayNode().GetVisibility3D()
    seg.show_3d(segmentation, False)
    assert not segmentation.GetDisplayNode().GetVisibility3D()
    seg.show_3d(None, True)  # no segmentation selected: nothing happens


def test_dicom_seg_refuses_a_ct_moved_after_loading_from_the_dicom_browser(scene, tmp_path, monkeypatch, real_ct_dir):
    """Defect 4 (robustness): a CT shifted (or hardened through a transform) after the DICOM
    browser loaded it keeps DICOM.instanceUIDs; its SEG would not line up, so it is refused."""
    pydicom = pytest.importorskip("pydicom")
    from mediastinal_ai.errors import InputError
    from mediastinal_ai.io import read_ct

    vol = read_ct(real_ct_dir / "lidc-contrast-slabs" / "LIDC-IDRI-0003")
    files = vol.metadata["dicom_files"]
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    ct = nodes.volume_to_node(scene, Volume(vol.array, vol.spacing_xyz, vol.origin_xyz, vol.direction), name="CT")
    ct.SetAttribute("DICOM.instanceUIDs", " ".join(uids))
    logic = _load("MediastinalAI").MediastinalAILogic()
    monkeypatch.setattr(slicer, "dicomDatabase", _FakeDicomDatabase(dict(zip(uids, files))), raising=False)
    assert logic.dicomSourceFiles(ct) == [str(f) for f in files]  # where it was loaded: accepted
    origin = list(ct.GetOrigin())
    ct.SetOrigin(origin[0], origin[1], origin[2] + 5.0)  # moved 5 mm (e.g. a hardened transform)
    with pytest.raises(InputError, match="5.0 mm away"):
        logic.dicomSourceFiles(ct)
    ct.SetOrigin(*origin)
    ct.SetAttribute("DICOM.instanceUIDs", " ".join(reversed(uids)))  # slices and UIDs out of step
    with pytest.raises(InputError, match="mm away"):
        logic.dicomSourceFiles(ct)


def test_radiomics_risk_in_a_child_reports_each_image_type_and_matches_in_process(scene, tmp_path):
    """'Predict risk' (radiomics) in the child extracts the model's features one image type at a
    time (progress after each) and gives the same probability as one in-process extraction."""
    pytest.importorskip("radiomics", reason="pyradiomics is not installed")
    from mediastinal_ai.mrml import radiomics as mrml_radiomics
    from mediastinal_ai.radiomics.model_io import load_model
    from mediastinal_ai.radiomics.params import load_params

    logic = _load("MediastinalAIRadiomics").MediastinalAIRadiomicsLogic()
    ct, segmentation, segment_id = _real_ct_case(scene)
    args = logic.prepareJob(str(tmp_path), "radiomics-risk", ct, segmentation, segment_id, model=None)
    events, output = _run_child_like_the_runner(_load("MediastinalAI"), args)
    _check_progress(events, output)
    image_types = load_params(load_model(None).params)["imageType"]
    n_parts = sum(len((o or {}).get("sigma") or [0]) if t == "LoG" else 1 for t, o in image_types.items())
    parts = [m for _, m in events["progress"] if m.startswith("radiomics features:")]
    assert len(parts) == n_parts >= 2, parts
    _, child = logic.publishJob(str(tmp_path), ct, segmentation, segment_id)
    _, here = mrml_radiomics.predict_risk(scene, ct, segmentation, segment_id)
    assert child["probability_high_risk"] == pytest.approx(here["probability_high_risk"], abs=1e-9)
    assert child["group"] == here["group"] and child["n_features_extracted"] == here["n_features_extracted"]
