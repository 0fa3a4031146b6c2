"""The modules' logic classes and the segmentation process runner, executed on slicer-core.

The Slicer application is not available here, so the few app-only names the module files
import at load time (``qt``, ``slicer.ScriptedLoadableModule``, ``slicer.parameterNodeWrapper``)
are replaced by minimal stand-ins; everything the logic does (MRML adapter, core) is real and
runs on a slicer-core scene set as ``slicer.mrmlScene``.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")

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
