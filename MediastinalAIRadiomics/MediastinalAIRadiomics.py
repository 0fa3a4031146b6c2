"""MediastinalAIRadiomics: WHO risk of thymic epithelial tumors from radiomics (pyradiomics
features → selected features → SVM), and the full feature table, inside 3D Slicer.

Thin Slicer module (scripted-module template); the logic calls only the MRML adapter
(``mediastinal_ai.mrml``) and the core library. Extraction and prediction run in a separate
``PythonSlicer`` process (``mediastinal_ai.mrml.worker``): the full LoG + wavelet extraction takes
minutes and would freeze Slicer on the main thread.
"""

import json
import shutil
import tempfile
import traceback
from pathlib import Path

import qt
import slicer
import vtk
from MediastinalAILib import dicomSrExport
from MediastinalAILib.dependencies import ensureDependencies
from MediastinalAILib.processRunner import CANCELLED, PythonProcessRunner
from MediastinalAILib.segmentSelector import SegmentSelectorBinding
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from mediastinal_ai import DEMO_DISCLAIMER
from mediastinal_ai.mrml import dependencies, display, process

try:  # Slicer's translation functions (as the peer extensions use them)
    from slicer.i18n import tr as _
    from slicer.i18n import translate
except ImportError:  # an older Slicer, or slicer-core without the application

    def _(text):
        return text

    def translate(context, text):
        return text


# ----------------------------------------------------------------------------- module
class MediastinalAIRadiomics(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MediastinalAI Radiomics")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        self.parent.dependencies = ["MediastinalAI"]  # loads first: puts MediastinalAILib on sys.path
        self.parent.contributors = ["MediastinalAI developers"]
        self.parent.helpText = _(
            "Predict the WHO risk group (low: A/AB/B1, high: B2/B3/thymic carcinoma) of a thymic "
            "epithelial tumor from radiomics features of its segment, and compute the full pyradiomics "
            "feature table (original, LoG, wavelet). The tumor segment defaults to the one the "
            "MediastinalAI module made. Needs 3D Slicer 5.10 or later. Demo models: {disclaimer}."
        ).format(disclaimer=DEMO_DISCLAIMER)
        self.parent.acknowledgementText = _(
            "Uses pyradiomics. Implements the published radiomics + SVM method; it does not claim its results."
        )


# ----------------------------------------------------------------------------- parameters
@parameterNodeWrapper
class MediastinalAIRadiomicsParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    segmentation: vtkMRMLSegmentationNode
    segmentId: str = ""
    radiomicsModel: str = ""
    riskTable: vtkMRMLTableNode
    featuresTable: vtkMRMLTableNode
    riskResult: str = ""  # JSON of the last prediction


# ----------------------------------------------------------------------------- widget
class MediastinalAIRadiomicsWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._runner = None
        self._job = None
        self._segmentBinding = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        app = getattr(slicer, "app", None)
        problem = dependencies.slicer_version_problem(app.majorVersion, app.minorVersion) if app else ""
        if problem:  # refuse clearly instead of failing on the first click
            label = qt.QLabel(problem)
            label.wordWrap = True
            self.layout.addWidget(label)
            self.layout.addStretch(1)
            return
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MediastinalAIRadiomics.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MediastinalAIRadiomicsLogic()

        for name in display.model_names("risk-radiomics"):
            self.ui.radiomicsModelComboBox.addItem(name)
        self._runner = PythonProcessRunner(self.onJobProgress, self.onJobFinished, self.onJobLog)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self._segmentBinding = SegmentSelectorBinding(self.ui.segmentSelector, lambda: self._parameterNode)
        self.ui.radiomicsModelComboBox.connect("currentTextChanged(QString)", self.onModelChanged)
        self.ui.predictRiskButton.connect("clicked(bool)", self.onPredictRisk)
        self.ui.computeAllFeaturesButton.connect("clicked(bool)", self.onComputeAllFeatures)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.resultsTableSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onResultsTableChanged)
        self.ui.saveReportButton.connect("clicked(bool)", self.onSaveReport)
        self.ui.exportDicomSrButton.connect("clicked(bool)", self.onExportDicomSr)

        self.initializeParameterNode()

    # ------------------------------------------------------------------ lifecycle
    def cleanup(self):
        if self._runner is not None:
            self._runner.cancel()
        self.removeObservers()

    def enter(self):
        if self.logic is not None:
            self.initializeParameterNode()
            self.ui.radiomicsVersionLabel.text = dependencies.radiomics_note()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)

    def onSceneStartClose(self, caller, event):
        if self._job is not None and self._runner.isRunning():
            self._job["sceneClosed"] = True  # its nodes are going away: import nothing
            self._runner.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        p = self._parameterNode
        if not p.segmentation:
            # default: the tumor segment the MediastinalAI module made
            segmentation, segmentId = self.logic.defaultTumorSegment()
            if segmentation is not None:
                p.segmentation, p.segmentId = segmentation, segmentId or ""
        if not p.inputVolume:
            p.inputVolume = self.logic.referenceVolume(
                p.segmentation
            ) or slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        if p.radiomicsModel:
            self.ui.radiomicsModelComboBox.setCurrentText(p.radiomicsModel)
        else:
            p.radiomicsModel = self.ui.radiomicsModelComboBox.currentText

    def setParameterNode(self, parameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
            self._updateGui()

    def _updateGui(self, caller=None, event=None):
        p = self._parameterNode
        if p is None:
            return
        busy = self._runner is not None and self._runner.isRunning()
        ready = p.inputVolume is not None and p.segmentation is not None and bool(p.segmentId) and not busy
        self.ui.predictRiskButton.enabled = ready
        self.ui.computeAllFeaturesButton.enabled = ready
        self.ui.cancelButton.enabled = busy
        self.ui.saveReportButton.enabled = p.inputVolume is not None and not busy
        self.ui.exportDicomSrButton.enabled = ready
        self._segmentBinding.updateSelector()
        summary = display.risk_summary(display.load_json(p.riskResult))
        self.ui.riskProbabilityLabel.text = summary["probability"]
        self.ui.riskGroupLabel.text = summary["group"]
        self.ui.riskModelLabel.text = summary["model"]

    # ------------------------------------------------------------------ actions
    def onModelChanged(self, text):
        if self._parameterNode is not None and text:
            self._parameterNode.radiomicsModel = text

    def onResultsTableChanged(self, node):
        self.ui.resultsTableView.setMRMLTableNode(node)

    def _ensureDependencies(self, *features):
        return ensureDependencies(features, "MediastinalAI Radiomics", self._setStatus)

    def _setStatus(self, text):
        self.ui.statusLabel.text = text

    def _error(self, message, exception):
        slicer.util.errorDisplay(f"{message}\n\n{exception}", detailedText=traceback.format_exc())
        self._setStatus(f"{message} {exception}")

    # ------------------------------------------------------------------ background jobs
    def _startJob(self, task, what):
        p = self._parameterNode
        if self._runner.isRunning():
            return
        volume, segmentation, segmentId = p.inputVolume, p.segmentation, p.segmentId
        runDir = tempfile.mkdtemp(prefix="MediastinalAIRadiomics-")
        started = False
        try:
            with slicer.util.WaitCursor():
                args = self.logic.prepareJob(runDir, task, volume, segmentation, segmentId, model=p.radiomicsModel or None)
            self._job = {"task": task, "what": what, "runDir": runDir, "volume": volume,
                         "segmentation": segmentation, "segmentId": segmentId}
            self.ui.progressBar.value = 0
            self._setStatus(_("{what}: starting...").format(what=what))
            self.ui.logTextEdit.appendPlainText(f"--- {what} ---")
            self._runner.start(args)
            started = True
        except Exception as e:
            self._error(_("{what} failed.").format(what=what), e)
        finally:
            if not started:
                self._job = None
                shutil.rmtree(runDir, ignore_errors=True)
            self._updateGui()

    def onCancel(self):
        self._runner.cancel()

    def onJobProgress(self, fraction, message):
        self.ui.progressBar.value = int(round(100 * float(fraction)))
        self.ui.statusLabel.text = message

    def onJobLog(self, line):
        self.ui.logTextEdit.appendPlainText(line)

    def onJobFinished(self, ok, message):
        job, self._job = self._job, None
        if job is None:
            return
        what = job["what"]
        try:
            if job.get("sceneClosed"):
                self._setStatus(_("{what}: cancelled, the scene was closed.").format(what=what))
                return
            if not ok:
                if message == CANCELLED:
                    self._setStatus(_("{what}: cancelled.").format(what=what))
                else:
                    self._setStatus(_("{what} failed.").format(what=what))
                    slicer.util.errorDisplay(_("{what} failed:").format(what=what) + "\n\n" + message)
                return
            p = self._parameterNode
            try:
                if p is None or not slicer.mrmlScene.IsNodePresent(job["volume"]):
                    raise ValueError(_("The CT is no longer in the scene."))
                with slicer.util.WaitCursor():
                    table, result = self.logic.publishJob(
                        job["runDir"], job["volume"], job["segmentation"], job["segmentId"]
                    )
            except Exception as e:
                self._error(_("{what}: could not import the result.").format(what=what), e)
                return
            if job["task"] == "radiomics-risk":
                p.riskTable = table
                p.riskResult = json.dumps(result, default=str)
            else:
                p.featuresTable = table
            self.ui.resultsTableSelector.setCurrentNode(table)
            self.ui.progressBar.value = 100
            warnings = (result or {}).get("warnings") or []
            self._setStatus(_("{what}: done.").format(what=what) + "".join(f"\n\u26a0 {w}" for w in warnings))
        finally:
            shutil.rmtree(job["runDir"], ignore_errors=True)
            self._updateGui()

    def onPredictRisk(self):
        if not self._ensureDependencies("radiomics"):
            return
        self._startJob("radiomics-risk", _("Predict risk"))

    def onComputeAllFeatures(self):
        if not self._ensureDependencies("radiomics"):
            return
        self._startJob("radiomics-features", _("Compute all features"))

    def onSaveReport(self):
        p = self._parameterNode
        if not self._ensureDependencies("report"):
            return
        path = qt.QFileDialog.getSaveFileName(
            slicer.util.mainWindow(), _("Save report"), "report.html", "HTML (*.html);;PDF (*.pdf)"
        )
        if not path:
            return
        try:
            with slicer.util.WaitCursor():
                out = self.logic.saveReport(p.inputVolume, path, p.segmentation, p.segmentId or None)
        except Exception as e:
            self._error(_("Saving the report failed."), e)
            return
        self._setStatus(_("Report saved: {files}").format(files=", ".join(str(f) for f in out)))


    def onExportDicomSr(self):
        p = self._parameterNode
        dicomSrExport.onExportDicomSr(
            self, lambda folder: self.logic.exportDicomSr(p.inputVolume, p.segmentation, p.segmentId or None, folder),
            self._setStatus,
        )


# ----------------------------------------------------------------------------- logic
class MediastinalAIRadiomicsLogic(ScriptedLoadableModuleLogic):
    """Calls only the MRML adapter and the core (imports inside methods: pyradiomics is heavy)."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return MediastinalAIRadiomicsParameterNode(super().getParameterNode())

    @property
    def scene(self):
        return slicer.mrmlScene

    @staticmethod
    def missingDependencies(features):
        return dependencies.missing(features)

    def defaultTumorSegment(self):
        from mediastinal_ai.mrml import nodes

        return nodes.find_tumor_segment(self.scene)

    @staticmethod
    def referenceVolume(segmentationNode):
        """The volume the segmentation was made on (its reference geometry node), if any."""
        if segmentationNode is None:
            return None
        node = segmentationNode.GetNodeReference(segmentationNode.GetReferenceImageGeometryReferenceRole())
        return node if node is not None and node.IsA("vtkMRMLScalarVolumeNode") else None

    def predictRisk(self, volumeNode, segmentationNode, segmentId, model=None, progress=None):
        from mediastinal_ai.mrml import radiomics

        return radiomics.predict_risk(
            self.scene, volumeNode, segmentationNode, segmentId, model=model, progress=progress
        )

    def computeAllFeatures(self, volumeNode, segmentationNode, segmentId, params=None, progress=None):
        from mediastinal_ai.mrml import radiomics

        return radiomics.compute_all_features(
            self.scene, volumeNode, segmentationNode, segmentId, params=params, progress=progress
        )

    def prepareJob(self, runDir, task, volumeNode, segmentationNode, segmentId, **params):
        """Inputs + job.json for the child process; its arguments (``mediastinal_ai.mrml.worker``)."""
        from mediastinal_ai.mrml import nodes, worker

        ct = nodes.node_to_volume(volumeNode, units="HU")
        mask = nodes.segment_to_mask(segmentationNode, segmentId, ct)
        params["source"] = f"segment {segmentId!r} of {segmentationNode.GetName()!r}"
        return process.task_command(worker.write_job(runDir, task, ct, mask, **params))

    def publishJob(self, runDir, volumeNode, segmentationNode, segmentId):
        """``(table, result)`` of a finished job, put into the scene by the radiomics adapter."""
        from mediastinal_ai.mrml import radiomics, worker

        job = json.loads((Path(runDir) / worker.JOB_FILE).read_text(encoding="utf-8"))
        result, _cam = worker.read_result(runDir)
        if job["task"] == "radiomics-risk":
            return radiomics.publish_risk(self.scene, volumeNode, segmentationNode, segmentId, result)
        table = radiomics.publish_features(
            self.scene, volumeNode, segmentationNode, segmentId, result["features"], result["params"],
            packages=result.get("packages"),
        )
        return table, result

    def exportDicomSr(self, volumeNode, segmentationNode, segmentId, folder, radiomicsFeatures=True):
        """DICOM SEG and TID 1500 SR (lesions, the scene's predictions, the radiomics model's input
        features) and dicom_export.json into ``folder``; name → path."""
        from mediastinal_ai.mrml import pacs, segmentation

        return pacs.export_dicom_sr(
            self.scene,
            volumeNode,
            segmentationNode,
            segmentId,
            folder,
            dicom_files=segmentation.dicom_files_for_node(volumeNode, getattr(slicer, "dicomDatabase", None)),
            radiomics_features=radiomicsFeatures,
        )

    def saveReport(self, volumeNode, path, segmentationNode=None, segmentId=None):
        """The report file the user chose (and the PDF beside it); the paths."""
        from mediastinal_ai.mrml import report

        return report.save_report_file(
            self.scene, volumeNode, path, segmentation_node=segmentationNode, segment_id=segmentId
        )


# ----------------------------------------------------------------------------- self-test
class MediastinalAIRadiomicsTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (Developer mode → Reload and Test).

    Uses only what Slicer bundles unless a test first checks ``missingDependencies`` and skips
    with a message (Testing/test_slicer_self_tests.py runs this with every other package made
    unimportable): "Reload and Test" passes on a clean Slicer.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_default_segment_is_found()
        self.setUp()
        self.test_radiomics_on_synthetic_case()

    def _skipIfMissing(self, *features):
        """True (and a message saying why) when the test cannot run in this Slicer."""
        missing = MediastinalAIRadiomicsLogic.missingDependencies(features)
        if missing:
            self.delayDisplay(f"Skipped: needs {', '.join(missing)} (not bundled with Slicer)")
        return bool(missing)

    def test_default_segment_is_found(self):
        """A tumor segment made on a CT is found with its CT (numpy only: runs on a clean Slicer)."""
        self.delayDisplay("Default tumor segment and its CT")
        import numpy as np

        from mediastinal_ai.mrml import nodes
        from mediastinal_ai.volume import Volume

        arr = np.full((12, 40, 40), -900, np.int16)
        arr[4:9, 12:28, 12:28] = 40
        ct = nodes.volume_to_node(slicer.mrmlScene, Volume(arr, (1.0, 1.0, 2.5)), name="Test CT", role="ct")
        segmentation, segmentId = nodes.mask_to_segment(slicer.mrmlScene, (arr > 0).astype(np.uint8), ct)
        logic = MediastinalAIRadiomicsLogic()
        self.assertEqual(logic.defaultTumorSegment(), (segmentation, segmentId))
        self.assertEqual(logic.referenceVolume(segmentation), ct)
        self.assertTrue(dependencies.radiomics_note().startswith(("radiomics:", "pyradiomics is not installed")))

    def test_radiomics_on_synthetic_case(self):
        if self._skipIfMissing("radiomics", "synthetic"):
            return
        self.delayDisplay("Predict risk (radiomics) on a synthetic case")
        from mediastinal_ai.mrml import nodes
        from mediastinal_ai.synthetic import generate_case

        case = generate_case(seed=2)
        ct = nodes.volume_to_node(slicer.mrmlScene, case.ct, name="Synthetic CT (SYNTHETIC)", role="ct")
        segmentation, segmentId = nodes.mask_to_segment(slicer.mrmlScene, case.mask, ct)
        logic = MediastinalAIRadiomicsLogic()
        table, result = logic.predictRisk(ct, segmentation, segmentId)
        self.assertGreater(table.GetNumberOfRows(), 0)
        self.assertTrue(0.0 <= result["probability_high_risk"] <= 1.0)
        self.assertTrue(table.GetAttribute("MediastinalAI.radiomicsVersion"))
        self.delayDisplay("Test passed")
