"""MediastinalAI: segment anterior mediastinal tumors, predict WHO risk (CNN + Grad-CAM) and
benign/malignant from CT + circulating tumor cells, inside 3D Slicer (5.10 or later).

Thin Slicer module (scripted-module template): the widget reads the GUI, the logic calls only
the MRML adapter (``mediastinal_ai.mrml``) and the core library. Segmentation, CNN and CTC
prediction run in a separate ``PythonSlicer`` process so the GUI never freezes and Cancel works.
"""

import json
import logging
import os
import shutil
import tempfile
import traceback
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from MediastinalAILib import dicomSrExport
from MediastinalAILib.dependencies import ensureDependencies
from MediastinalAILib.processRunner import CANCELLED, PythonProcessRunner
from MediastinalAILib.segmentSelector import SegmentSelectorBinding
from slicer import (
    vtkMRMLMarkupsROINode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLTableNode,
)
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

# Light, pure-Python parts of the core (no numpy/torch at import): safe at module load.
from mediastinal_ai import DEMO_DISCLAIMER, taxonomy
from mediastinal_ai.mrml import dependencies, display, process

try:  # Slicer's translation functions (as the peer extensions use them)
    from slicer.i18n import tr as _
    from slicer.i18n import translate
except ImportError:  # an older Slicer, or slicer-core without the application

    def _(text):
        return text

    def translate(context, text):
        return text


NOT_GIVEN = "not given"
DEVICE_CHOICES = list(process.DEVICES)  # auto / CPU / GPU


def _slicerVersionProblem():
    """'' on a supported Slicer, else why not (shown instead of the GUI)."""
    app = getattr(slicer, "app", None)
    if app is None or not hasattr(app, "majorVersion"):
        return ""
    return dependencies.slicer_version_problem(app.majorVersion, app.minorVersion)


# ----------------------------------------------------------------------------- module
class MediastinalAI(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MediastinalAI")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["MediastinalAI developers"]
        self.parent.helpText = _(
            "Segment anterior mediastinal tumors on chest CT with a 3D U-Net (result: an editable "
            "segment), predict WHO risk with a 2D CNN and Grad-CAM, and benign/malignant + lesion "
            "class from CT + circulating tumor cells (CTC). Needs 3D Slicer 5.10 or later. Demo models "
            "are trained on synthetic data: {disclaimer}. See docs/slicer.md in the extension's repository."
        ).format(disclaimer=DEMO_DISCLAIMER)
        problem = _slicerVersionProblem()
        if problem:
            self.parent.helpText = problem + "\n\n" + self.parent.helpText
        self.parent.acknowledgementText = _(
            "Implements methods of published studies on 3D U-Net segmentation, radiomics/CNN WHO-risk "
            "prediction and CT + CTC fusion for mediastinal lesions; it does not claim their results."
        )
        slicer.app.connect("startupCompleted()", _registerSampleData)


SAMPLE_NAME = "MediastinalAISyntheticChestCT"


def _registerSampleData():
    """The built-in *synthetic* chest CT in the Sample Data module (generated on demand, no
    download; labelled synthetic). Skipped silently when SampleData is not there (tests).

    ``uris``, ``fileNames`` and ``nodeNames`` are empty lists, not None: Slicer's
    ``SampleDataSource`` (SampleData.py, 5.10 and later) takes ``len()`` of all three, so None
    raised TypeError at start-up and the sample never appeared. Its button calls
    ``customDownloader(source)``."""
    try:
        import SampleData
    except ImportError:
        return
    iconsPath = os.path.join(os.path.dirname(__file__), "Resources", "Icons")
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="MediastinalAI",
        sampleName=SAMPLE_NAME,
        uris=[],
        fileNames=[],
        nodeNames=[],
        thumbnailFileName=os.path.join(iconsPath, "MediastinalAI.png"),
        customDownloader=_loadSyntheticSample,
    )


def _loadSyntheticSample(source=None):
    """SampleData custom loader: a synthetic CT with an anterior mediastinal lesion (seed 1),
    shown in the slice views. The generator needs PyYAML, which Slicer does not ship: asked
    for (and installed) like any other dependency."""
    if not ensureDependencies(["synthetic"], "MediastinalAI"):
        return []
    with slicer.util.WaitCursor():
        node, _segmentation = MediastinalAILogic().loadSyntheticSample(withReferenceMask=False)
    slicer.util.setSliceViewerLayers(background=node, fit=True)
    return [node]


# ----------------------------------------------------------------------------- parameters
@parameterNodeWrapper
class MediastinalAIParameterNode:
    """GUI state, kept in the scene (survives save/load)."""

    # Inputs
    inputVolume: vtkMRMLScalarVolumeNode
    # Segmentation
    segmentationModel: str = ""
    device: Annotated[str, Choice(DEVICE_CHOICES)] = "auto"
    threshold: Annotated[float, WithinRange(0.01, 0.99)] = 0.5
    roi: vtkMRMLMarkupsROINode
    segmentation: vtkMRMLSegmentationNode
    segmentId: str = ""
    probabilityVolume: vtkMRMLScalarVolumeNode
    lesionTable: vtkMRMLTableNode
    # Risk (CNN)
    cnnModel: str = ""
    showGradCam: bool = True
    gradCamVolume: vtkMRMLScalarVolumeNode
    cnnTable: vtkMRMLTableNode
    cnnResult: str = ""  # JSON of the last result
    # CTC fusion
    ctcLevel: Annotated[float, WithinRange(0.0, 100000.0)] = 0.0
    age: Annotated[float, WithinRange(-1.0, 120.0)] = -1.0  # -1 = not given
    sex: Annotated[str, Choice([NOT_GIVEN, *taxonomy.SEXES])] = NOT_GIVEN
    lesionSite: Annotated[str, Choice([NOT_GIVEN, *taxonomy.LESION_SITES])] = NOT_GIVEN
    fusionModel: str = ""
    fusionTable: vtkMRMLTableNode
    fusionResult: str = ""  # JSON of the last result


# ----------------------------------------------------------------------------- widget
class MediastinalAIWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._runner = None
        self._job = None  # {"kind", "runDir", "context"} of the background job, if any
        self._segmentBinding = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        problem = _slicerVersionProblem()
        if problem:  # refuse clearly instead of failing on the first click
            label = qt.QLabel(problem)
            label.wordWrap = True
            self.layout.addWidget(label)
            self.layout.addStretch(1)
            return
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MediastinalAI.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MediastinalAILogic()

        self.ui.ctcUnitLabel.text = taxonomy.CTC_UNIT
        self._fillModelCombo(self.ui.segmentationModelComboBox, "segmentation")
        self._fillModelCombo(self.ui.cnnModelComboBox, "risk-cnn")
        self._fillModelCombo(self.ui.fusionModelComboBox, "fusion")
        self._runner = PythonProcessRunner(self.onJobProgress, self.onJobFinished, self.onJobLog)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.loadVolumeButton.connect("clicked(bool)", self.onLoadVolume)
        self.ui.loadDicomFolderButton.connect("clicked(bool)", self.onLoadDicomFolder)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        # tracking is off in the .ui: valueChanged comes once, on release, not on every drag tick.
        # Typing in the spin box and the parameter node's GUI updates also emit it: a short
        # single-shot timer applies only the last value, and a value equal to the threshold the
        # segment already has does nothing (see MediastinalAILogic.thresholdAction).
        self._thresholdTimer = qt.QTimer()
        self._thresholdTimer.setSingleShot(True)
        self._thresholdTimer.setInterval(400)
        self._thresholdTimer.connect("timeout()", self.applyPendingThreshold)
        self._pendingThreshold = None
        self.ui.thresholdSliderWidget.connect("valueChanged(double)", self.onThresholdChanged)
        self._segmentBinding = SegmentSelectorBinding(
            self.ui.tumorSegmentSelector, lambda: self._parameterNode
        )
        self.ui.exportDicomSegButton.connect("clicked(bool)", self.onExportDicomSeg)
        self.ui.exportDicomSrButton.connect("clicked(bool)", self.onExportDicomSr)
        self.ui.exportNrrdButton.connect("clicked(bool)", self.onExportNrrd)
        self.ui.show3DButton.connect("toggled(bool)", self.onShow3D)
        self.ui.predictCnnButton.connect("clicked(bool)", self.onPredictCnn)
        self.ui.gradCamCheckBox.connect("toggled(bool)", self.onShowGradCamToggled)
        self.ui.predictCtcButton.connect("clicked(bool)", self.onPredictCtc)
        for widget in (self.ui.ctcLevelSpinBox, self.ui.ageSpinBox):
            widget.connect("valueChanged(double)", self.onCtcInputsChanged)
        for widget in (self.ui.sexComboBox, self.ui.lesionSiteComboBox):
            widget.connect("currentIndexChanged(int)", self.onCtcInputsChanged)
        self.ui.saveReportButton.connect("clicked(bool)", self.onSaveReport)
        for combo, field in (
            (self.ui.segmentationModelComboBox, "segmentationModel"),
            (self.ui.cnnModelComboBox, "cnnModel"),
            (self.ui.fusionModelComboBox, "fusionModel"),
        ):
            combo.connect("currentTextChanged(QString)", lambda text, f=field: self._setModel(f, text))

        self.initializeParameterNode()

    # ------------------------------------------------------------------ lifecycle
    def cleanup(self):
        self._dropPendingThreshold()
        if self._runner is not None:
            self._runner.cancel()
        self.removeObservers()

    def _dropPendingThreshold(self):
        """A slider value not applied yet belongs to the scene/widget going away."""
        self._pendingThreshold = None
        timer = getattr(self, "_thresholdTimer", None)
        if timer is not None:
            timer.stop()

    def enter(self):
        if self.logic is not None:
            self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)

    def onSceneStartClose(self, caller, event):
        # A job's nodes belong to the scene being closed: stop it, and import nothing afterwards.
        self._dropPendingThreshold()
        if self._job is not None and self._runner.isRunning():
            self._job["sceneClosed"] = True
            self._runner.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        p = self._parameterNode
        if not p.inputVolume:
            p.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        if not p.segmentation:
            segmentation, segmentId = self.logic.defaultTumorSegment()
            if segmentation is not None:
                p.segmentation, p.segmentId = segmentation, segmentId or ""
        for combo, field in (
            (self.ui.segmentationModelComboBox, "segmentationModel"),
            (self.ui.cnnModelComboBox, "cnnModel"),
            (self.ui.fusionModelComboBox, "fusionModel"),
        ):
            if getattr(p, field):
                combo.setCurrentText(getattr(p, field))
            else:
                setattr(p, field, combo.currentText)

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
        running = self._runner is not None and self._runner.isRunning()
        hasCt = p.inputVolume is not None
        hasSegment = p.segmentation is not None and bool(p.segmentId)
        self.ui.segmentButton.enabled = hasCt and not running
        self.ui.cancelButton.enabled = running
        self.ui.exportDicomSegButton.enabled = hasCt and hasSegment and not running
        self.ui.exportDicomSrButton.enabled = hasCt and hasSegment and not running
        self.ui.exportNrrdButton.enabled = hasCt and hasSegment and not running
        self.ui.show3DButton.enabled = hasSegment
        self.ui.predictCnnButton.enabled = hasCt and hasSegment and not running
        self.ui.predictCtcButton.enabled = hasCt and hasSegment and not running
        self.ui.saveReportButton.enabled = hasCt and not running
        self.ui.gradCamCheckBox.enabled = p.gradCamVolume is not None
        self._segmentBinding.updateSelector()
        self.logic.watchEdits(p.segmentation)
        self._showCnnResult(display.load_json(p.cnnResult))
        self._showFusionResult(display.load_json(p.fusionResult))

    # ------------------------------------------------------------------ helpers
    def _fillModelCombo(self, combo, task):
        combo.clear()
        for name in display.model_names(task):
            combo.addItem(name)

    def _setModel(self, field, text):
        if self._parameterNode is not None and text:
            setattr(self._parameterNode, field, text)

    def _status(self, text):
        self.ui.statusLabel.text = text
        logging.info("MediastinalAI: %s", text)

    def _error(self, message, exception):
        """Show a failure (the exception's message is the user's feedback; details in the log)."""
        logging.error("MediastinalAI: %s %s\n%s", message, exception, traceback.format_exc())
        slicer.util.errorDisplay(f"{message}\n\n{exception}", detailedText=traceback.format_exc())
        self._status(f"{message} {exception}")

    def _ensureDependencies(self, *features):
        return ensureDependencies(features, "MediastinalAI", self._status)

    def _requireSegment(self):
        p = self._parameterNode
        if p.inputVolume is None or p.segmentation is None or not p.segmentId:
            raise ValueError(
                _("Select a CT volume and a tumor segment first (run 'Segment tumor' or pick one).")
            )
        return p.inputVolume, p.segmentation, p.segmentId

    # ------------------------------------------------------------------ background jobs
    def _startJob(self, kind, prepare, context):
        """Make a temporary folder, let ``prepare(runDir)`` write the inputs and return the child
        arguments, start the child. The folder is removed if anything fails before the start."""
        if self._runner.isRunning():
            self._status(_("A background job is already running: wait for it or cancel it."))
            return
        runDir = tempfile.mkdtemp(prefix="MediastinalAI-")
        started = False
        try:
            with slicer.util.WaitCursor():
                args = prepare(runDir)
            self._job = {"kind": kind, "runDir": runDir, "context": context}
            self.ui.progressBar.value = 0
            self.ui.progressStatusLabel.text = _("Starting...")
            self.ui.logTextEdit.appendPlainText(f"--- {kind} ---")
            self._runner.start(args)
            started = True
        except Exception as e:
            self._error(_("Could not start the job."), e)
        finally:
            if not started:  # a refused ROI, an unwritable CT, ...: nothing is left behind
                self._job = None
                shutil.rmtree(runDir, ignore_errors=True)
            self._updateGui()

    def onCancel(self):
        self._runner.cancel()

    def onJobProgress(self, fraction, message):
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.progressStatusLabel.text = message

    def onJobLog(self, line):
        logging.info("MediastinalAI job: %s", line)
        self.ui.logTextEdit.appendPlainText(line)

    def onJobFinished(self, ok, message):
        job, self._job = self._job, None
        if job is None:
            return
        try:
            if job.get("sceneClosed"):
                self.ui.progressStatusLabel.text = _("Cancelled: the scene was closed.")
                return
            if not ok:
                self.ui.progressStatusLabel.text = _("Cancelled.") if message == CANCELLED else _("Failed.")
                if message != CANCELLED:
                    slicer.util.errorDisplay(_("The background job failed:") + "\n\n" + message)
                return
            try:
                with slicer.util.WaitCursor():
                    summary = self._importJobResult(job)
                self.ui.progressBar.value = 100
                self.ui.progressStatusLabel.text = summary
            except Exception as e:
                self.ui.progressStatusLabel.text = _("Failed.")
                self._error(_("Could not import the result."), e)
        finally:
            shutil.rmtree(job["runDir"], ignore_errors=True)
            self._updateGui()

    def _importJobResult(self, job):
        p = self._parameterNode
        context = job["context"]
        volume = context["volume"]
        if p is None or not slicer.mrmlScene.IsNodePresent(volume):
            raise ValueError(_("The CT is no longer in the scene."))
        if job["kind"] == "segment":
            result = self.logic.importSegmentationResult(volume, job["runDir"], context["threshold"])
            p.segmentation = result.get("segmentation_node")
            p.segmentId = result.get("segment_id") or ""
            p.probabilityVolume = result.get("probability_node")
            p.lesionTable = result.get("table_node")
            self.logic.watchEdits(p.segmentation)
            return _segmentationSummary(result)
        if job["kind"] == "risk-cnn":
            table, gradCam, result = self.logic.publishJob(job["runDir"], volume, show=p.showGradCam)
            p.cnnTable, p.gradCamVolume = table, gradCam
            p.cnnResult = json.dumps(result, default=str)
            ras = display.find_ras(result)
            if ras is not None:
                self.logic.jumpTo(ras)
            return _("Done: P(high risk) {p}.").format(
                p=display.format_probability(result.get("probability_high_risk"))
            )
        # fusion
        table, result = self.logic.publishJob(job["runDir"], volume, segmentId=context["segmentId"])
        p.fusionTable = table
        p.fusionResult = json.dumps(result, default=str)
        self.ui.ctcWarningsLabel.text = "<br>".join(f"&#9888; {w}" for w in result.get("warnings") or [])
        ras = display.find_ras(result)
        if ras is not None:
            self.logic.jumpTo(ras)
        return _("Done.")

    # ------------------------------------------------------------------ inputs
    def onLoadVolume(self):
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(),
            _("Load CT"),
            "",
            _("CT images") + " (*.nrrd *.nhdr *.nii *.nii.gz *.mha *.mhd);;" + _("All files") + " (*)",
        )
        if path:
            self._loadCt(path)

    def onLoadDicomFolder(self):
        path = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), _("Load CT from a DICOM folder"))
        if path:
            self._loadCt(path)

    def _loadCt(self, path):
        if not self._ensureDependencies("load-ct"):
            return
        try:
            with slicer.util.WaitCursor():
                node = self.logic.loadCt(path)
        except Exception as e:
            self._error(_("Could not load the CT."), e)
            return
        self._parameterNode.inputVolume = node
        slicer.util.setSliceViewerLayers(background=node, fit=True)
        self._status(_("Loaded {name}").format(name=node.GetName()))

    # ------------------------------------------------------------------ segmentation
    def onSegment(self):
        p = self._parameterNode
        if not self._ensureDependencies("segmentation"):
            return
        volume, model, device, threshold, roi = p.inputVolume, p.segmentationModel, p.device, p.threshold, p.roi
        self._startJob(
            "segment",
            lambda runDir: self.logic.segmentationArguments(volume, runDir, model, device, threshold, roi),
            {"volume": volume, "threshold": threshold},
        )

    def onThresholdChanged(self, value):
        self._pendingThreshold = value
        self._thresholdTimer.start()  # restarts: only the last of a burst of values is applied

    def applyPendingThreshold(self):
        """Re-threshold the stored probability map with the slider's last value, asking first when
        the segment was edited (a refusal puts the slider back on the applied threshold)."""
        p, value = self._parameterNode, self._pendingThreshold
        self._pendingThreshold = None
        if p is None or value is None or self._runner.isRunning():
            return
        action = self.logic.thresholdAction(p.probabilityVolume, p.segmentation, p.segmentId, value)
        if action == "none":
            return
        if action == "confirm" and not slicer.util.confirmOkCancelDisplay(
            _(
                "The tumor segment was edited. A new threshold replaces it with the thresholded "
                "probability map and your edits are lost. Apply the threshold {t:.2f}?"
            ).format(t=value),
            windowTitle=_("MediastinalAI: replace the edited segment?"),
        ):
            applied = self.logic.appliedThreshold(p.probabilityVolume)
            if applied is not None:
                p.threshold = applied  # the slider shows what the segment was made with
            self._status(_("Threshold not applied: your edits are kept."))
            return
        try:
            with slicer.util.WaitCursor():
                self.logic.rethreshold(p.probabilityVolume, p.segmentation, p.segmentId, value, p.lesionTable)
        except Exception as e:
            self._error(_("Re-thresholding failed."), e)

    def onShow3D(self, checked):
        p = self._parameterNode
        if p is not None and p.segmentation is not None:
            self.logic.show3D(p.segmentation, checked)

    def onExportDicomSeg(self):
        if not self._ensureDependencies("dicom-seg"):
            return
        path = qt.QFileDialog.getSaveFileName(
            slicer.util.mainWindow(), _("Export DICOM SEG"), "tumor_seg.dcm", "DICOM (*.dcm)"
        )
        if not path:
            return
        try:
            volume, segmentation, segmentId = self._requireSegment()
            with slicer.util.WaitCursor():
                self.logic.exportDicomSeg(segmentation, segmentId, volume, path)
        except Exception as e:
            self._error(_("DICOM SEG export failed."), e)
            return
        self._status(_("Saved DICOM SEG {path}").format(path=path))

    def onExportDicomSr(self):
        def export(folder):
            volume, segmentation, segmentId = self._requireSegment()
            return self.logic.exportDicomSr(
                volume, segmentation, segmentId, folder, probabilityNode=self._parameterNode.probabilityVolume
            )

        dicomSrExport.onExportDicomSr(self, export, self._status)

    def onExportNrrd(self):
        path = qt.QFileDialog.getSaveFileName(
            slicer.util.mainWindow(),
            _("Export tumor mask"),
            "tumor_mask.nrrd",
            "NRRD (*.nrrd);;NIfTI (*.nii.gz *.nii)",
        )
        if not path:
            return
        try:
            volume, segmentation, segmentId = self._requireSegment()
            with slicer.util.WaitCursor():
                self.logic.exportMask(segmentation, segmentId, volume, path)
        except Exception as e:
            self._error(_("Mask export failed."), e)
            return
        self._status(_("Saved {path}").format(path=path))

    # ------------------------------------------------------------------ risk (CNN)
    def onPredictCnn(self):
        p = self._parameterNode
        if not self._ensureDependencies("risk-cnn"):
            return
        try:
            volume, segmentation, segmentId = self._requireSegment()
        except ValueError as e:
            self._status(str(e))
            return
        model = p.cnnModel or None
        self._startJob(
            "risk-cnn",
            lambda runDir: self.logic.prepareJob(runDir, "risk-cnn", volume, segmentation, segmentId, model=model),
            {"volume": volume},
        )

    def onShowGradCamToggled(self, checked):
        p = self._parameterNode
        if p is not None and p.gradCamVolume is not None:
            self.logic.showGradCam(p.inputVolume, p.gradCamVolume, checked)

    def _showCnnResult(self, result):
        summary = display.risk_summary(result)
        self.ui.cnnProbabilityLabel.text = summary["probability"]
        self.ui.cnnGroupLabel.text = summary["group"]
        self.ui.cnnModelUsedLabel.text = summary["model"]

    # ------------------------------------------------------------------ CTC fusion
    def _ctcInputs(self):
        p = self._parameterNode
        age = None if p.age < 0 else p.age
        sex = None if p.sex == NOT_GIVEN else p.sex
        site = None if p.lesionSite == NOT_GIVEN else p.lesionSite
        return p.ctcLevel, age, sex, site

    def onCtcInputsChanged(self, *args):
        if self._parameterNode is None:
            return
        self.ui.ctcWarningsLabel.text = self.logic.checkCtcInputs(*self._ctcInputs())

    def onPredictCtc(self):
        p = self._parameterNode
        if not self._ensureDependencies("fusion"):
            return
        self.ui.ctcWarningsLabel.text = ""
        try:
            volume, segmentation, segmentId = self._requireSegment()
            ctc, age, sex, site = self._ctcInputs()
            refused = self.logic.checkCtcInputs(ctc, age, sex, site, refusedOnly=True)
            if refused:
                raise ValueError(refused)
        except ValueError as e:  # the message (e.g. "CTC level cannot be negative") is the feedback
            self.ui.ctcWarningsLabel.text = f"<span style='color:#c00'>{e}</span>"
            return
        model = p.fusionModel or None
        self._startJob(
            "fusion",
            lambda runDir: self.logic.prepareJob(
                runDir, "fusion", volume, segmentation, segmentId, model=model,
                ctc=ctc, age=age, sex=sex, lesion_site=site,
            ),
            {"volume": volume, "segmentId": segmentId},
        )

    def _showFusionResult(self, result):
        result = result or {}
        columns = {
            "fusion": (
                self.ui.fusionBenignLabel,
                self.ui.fusionMalignantLabel,
                self.ui.fusionCallLabel,
                self.ui.fusionTopClassesLabel,
            ),
            "ct_only": (
                self.ui.ctOnlyBenignLabel,
                self.ui.ctOnlyMalignantLabel,
                self.ui.ctOnlyCallLabel,
                self.ui.ctOnlyTopClassesLabel,
            ),
        }
        for kind, (benign, malignant, call, topClasses) in columns.items():
            r = result.get(kind) or {}
            benign.text = display.format_probability(r.get("p_benign"))
            malignant.text = display.format_probability(r.get("p_malignant"))
            call.text = str(r.get("call") or (_("not available") if result else "-"))
            top = r.get("top3") or []
            topClasses.text = (
                "<br>".join(
                    f"{t.get('display') or t.get('class')}: {display.format_probability(t.get('probability'))}"
                    for t in top
                )
                or "-"
            )

    # ------------------------------------------------------------------ report
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
                written = self.logic.saveReport(
                    p.inputVolume, path, p.segmentation, p.segmentId or None, p.gradCamVolume
                )
        except Exception as e:
            self._error(_("Saving the report failed."), e)
            return
        self._status(_("Report saved: {files}").format(files=", ".join(str(f) for f in written)))


# ----------------------------------------------------------------------------- logic
class MediastinalAILogic(ScriptedLoadableModuleLogic):
    """Calls only the MRML adapter (mediastinal_ai.mrml) and the core; no widgets here, so the
    self-test and headless scripts can use it too. Heavy imports happen inside the methods."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return MediastinalAIParameterNode(super().getParameterNode())

    @property
    def scene(self):
        return slicer.mrmlScene

    @staticmethod
    def missingDependencies(features):
        return dependencies.missing(features)

    def defaultTumorSegment(self):
        from mediastinal_ai.mrml import nodes

        return nodes.find_tumor_segment(self.scene)

    # inputs ------------------------------------------------------------------
    def loadCt(self, path):
        from mediastinal_ai.io import read_ct
        from mediastinal_ai.mrml import nodes

        volume = read_ct(path)
        name = os.path.basename(os.path.normpath(str(path))).split(".")[0] or "CT"
        return nodes.volume_to_node(self.scene, volume, name=name, role="ct")

    def loadSyntheticSample(self, seed=1, withReferenceMask=True):
        """A synthetic chest CT with an anterior mediastinal lesion (labelled synthetic), and its
        reference mask as a segment when asked: the tutorial's sample and the self-test's case."""
        from mediastinal_ai.mrml import nodes
        from mediastinal_ai.synthetic import generate_case

        case = generate_case(seed=seed)
        ct = nodes.volume_to_node(self.scene, case.ct, name=f"Synthetic chest CT {seed} (SYNTHETIC)", role="ct")
        segmentation = None
        if withReferenceMask:
            segmentation = nodes.mask_to_segment(self.scene, case.mask, ct)
        return ct, segmentation

    # segmentation ----------------------------------------------------------------
    @staticmethod
    def roiBox(roiNode):
        """LPS box of a Markups ROI, or a clear error for one that has no position yet (a node
        just created in the combo box has no control point and inverted bounds)."""
        if roiNode is None:
            return None
        if roiNode.GetNumberOfControlPoints() == 0:
            raise ValueError(
                _("The ROI '{name}' has no position yet: place it in a slice view first, or choose "
                  "'(none)' to segment the whole CT.").format(name=roiNode.GetName())
            )
        bounds = [0.0] * 6
        roiNode.GetRASBounds(bounds)
        return process.ras_bounds_to_lps_box(bounds)

    def segmentationArguments(self, volumeNode, runDir, model, device, threshold, roiNode=None):
        """Write the CT to ``runDir/ct.nrrd`` and return the CLI arguments for the child process."""
        from mediastinal_ai.io import write_image
        from mediastinal_ai.mrml import nodes

        if volumeNode is None:
            raise ValueError(_("Select a CT volume first."))
        roi = self.roiBox(roiNode)  # before writing anything: a refused ROI leaves nothing behind
        ctPath = os.path.join(runDir, "ct.nrrd")
        write_image(nodes.node_to_volume(volumeNode), ctPath, compress=False)
        return process.segment_command(
            ctPath, os.path.join(runDir, "result"), model or None, device, threshold, roi
        )

    def importSegmentationResult(self, volumeNode, resultDir, threshold):
        from mediastinal_ai.mrml import segmentation

        resultDir = (
            os.path.join(resultDir, "result")
            if os.path.isdir(os.path.join(resultDir, "result"))
            else resultDir
        )
        return segmentation.import_result(self.scene, volumeNode, resultDir, threshold)

    def segmentInProcess(self, volumeNode, model=None, threshold=0.5, device="auto", progress=None):
        """Same result without a child process (scripts, self-test)."""
        from mediastinal_ai.mrml import segmentation

        return segmentation.segment_tumor(
            self.scene,
            volumeNode,
            model=model,
            threshold=threshold,
            device=process.DEVICES.get(device, device),
            progress=progress,
        )

    def rethreshold(self, probabilityNode, segmentationNode, segmentId, threshold, tableNode=None):
        from mediastinal_ai.mrml import segmentation

        return segmentation.rethreshold(
            self.scene, probabilityNode, segmentationNode, segmentId, threshold, table_node=tableNode
        )

    @staticmethod
    def appliedThreshold(probabilityNode):
        """The threshold the segment was last made with (kept on the probability node), or None."""
        from mediastinal_ai.mrml import segmentation

        text = probabilityNode.GetAttribute(segmentation.ATTR_THRESHOLD) if probabilityNode is not None else None
        try:
            return float(text) if text else None
        except ValueError:
            return None

    def thresholdAction(self, probabilityNode, segmentationNode, segmentId, value):
        """What a new slider value should do: "none" (no probability map or segment, or the value
        the segment already has: a GUI update, not a user change), "confirm" (the segment was
        edited: ask before replacing it) or "apply"."""
        if probabilityNode is None or segmentationNode is None or not segmentId:
            return "none"
        if segmentationNode.GetSegmentation().GetSegment(segmentId) is None:
            return "none"
        applied = self.appliedThreshold(probabilityNode)
        if applied is not None and abs(float(value) - applied) < 0.5e-2:  # the slider has 2 decimals
            return "none"
        return "confirm" if self.isEdited(segmentationNode) else "apply"

    @staticmethod
    def watchEdits(segmentationNode):
        """Mark the node edited when the user changes it (Segment Editor): see isEdited."""
        if segmentationNode is None:
            return
        from mediastinal_ai.mrml import segmentation

        segmentation.watch_edits(segmentationNode)

    @staticmethod
    def isEdited(segmentationNode):
        from mediastinal_ai.mrml import segmentation

        return segmentation.is_edited(segmentationNode)

    @staticmethod
    def show3D(segmentationNode, show=True):
        from mediastinal_ai.mrml import segmentation

        segmentation.show_3d(segmentationNode, show)

    def dicomSourceFiles(self, volumeNode):
        """Source files of a CT loaded through Slicer's DICOM browser (None otherwise)."""
        from mediastinal_ai.mrml import segmentation

        return segmentation.dicom_files_for_node(volumeNode, getattr(slicer, "dicomDatabase", None))

    def exportDicomSeg(self, segmentationNode, segmentId, volumeNode, path):
        from mediastinal_ai.mrml import segmentation

        return segmentation.export_dicom_seg(
            self.scene, segmentationNode, segmentId, volumeNode, path, dicom_files=self.dicomSourceFiles(volumeNode)
        )

    def exportDicomSr(self, volumeNode, segmentationNode, segmentId, folder, probabilityNode=None):
        """SEG, fractional SEG, TID 1500 SR (lesions and the scene's predictions) and
        dicom_export.json into ``folder``; name → path."""
        from mediastinal_ai.mrml import pacs

        return pacs.export_dicom_sr(
            self.scene,
            volumeNode,
            segmentationNode,
            segmentId,
            folder,
            dicom_files=self.dicomSourceFiles(volumeNode),
            probability_node=probabilityNode,
        )

    def exportMask(self, segmentationNode, segmentId, volumeNode, path):
        from mediastinal_ai.io import write_image
        from mediastinal_ai.mrml import nodes

        mask = nodes.segment_to_mask(segmentationNode, segmentId, nodes.node_to_volume(volumeNode))
        return write_image(mask, path)

    # background jobs (CNN, CTC fusion) --------------------------------------------------
    def prepareJob(self, runDir, task, volumeNode, segmentationNode, segmentId, **params):
        """Write the CT, the segment as a mask on the CT grid and ``job.json`` into ``runDir``;
        the arguments of the child process (``mediastinal_ai.mrml.worker``)."""
        from mediastinal_ai.mrml import nodes, worker

        ct = nodes.node_to_volume(volumeNode, units="HU")
        mask = nodes.segment_to_mask(segmentationNode, segmentId, ct)
        params["source"] = f"segment {segmentId!r} of {segmentationNode.GetName()!r}"
        job = worker.write_job(runDir, task, ct, mask, **params)
        return process.task_command(job)

    def publishJob(self, runDir, volumeNode, segmentId=None, show=True, segmentationNode=None):
        """Put a finished job's result into the scene (the adapters' publish functions)."""
        from mediastinal_ai.mrml import worker

        job = json.loads((Path(runDir) / worker.JOB_FILE).read_text(encoding="utf-8"))
        result, cam = worker.read_result(runDir)
        if job["task"] == "risk-cnn":
            from mediastinal_ai.mrml import cnn

            return cnn.publish_risk_cnn(self.scene, volumeNode, result, cam, show=show)
        if job["task"] == "fusion":
            from mediastinal_ai.mrml import fusion

            return fusion.publish_fusion(self.scene, volumeNode, segmentId, result)
        raise ValueError(f"unknown job {job['task']!r}")

    # risk (CNN) --------------------------------------------------------------------
    def predictRiskCnn(self, volumeNode, segmentationNode, segmentId, model=None):
        """In-process (scripts, self-test); the GUI runs the same in a child process."""
        from mediastinal_ai.mrml import cnn

        return cnn.predict_risk_cnn(self.scene, volumeNode, segmentationNode, segmentId, model=model)

    def showGradCam(self, volumeNode, gradCamNode, show=True):
        from mediastinal_ai.mrml import nodes

        if gradCamNode is None:
            return
        if show:
            nodes.show_in_slice_views(
                self.scene, background=volumeNode, foreground=gradCamNode, foreground_opacity=0.4
            )
        else:
            nodes.hide_from_slice_views(self.scene, gradCamNode)

    def jumpTo(self, ras):
        from mediastinal_ai.mrml import nodes

        return nodes.jump_slices_to(self.scene, ras)

    # CTC fusion --------------------------------------------------------------------
    @staticmethod
    def checkCtcInputs(ctc, age=None, sex=None, lesionSite=None, refusedOnly=False):
        """'' when the inputs are acceptable, else the reason (shown under the CTC fields).
        ``refusedOnly``: only the reason a value is refused, as plain text (no warnings)."""
        from mediastinal_ai.errors import InputError
        from mediastinal_ai.fusion import validate_inputs

        try:
            validated = validate_inputs(ctc, age, sex, lesionSite)
        except InputError as e:
            return str(e) if refusedOnly else f"<span style='color:#c00'>{e}</span>"
        if refusedOnly:
            return ""
        return "<br>".join(f"&#9888; {w}" for w in validated.warnings)

    def predictWithCtc(
        self, volumeNode, segmentationNode, segmentId, ctc, age=None, sex=None, lesionSite=None, model=None
    ):
        """In-process (scripts, self-test); the GUI runs the same in a child process."""
        from mediastinal_ai.mrml import fusion

        return fusion.predict_with_ctc(
            self.scene,
            volumeNode,
            segmentationNode,
            segmentId,
            ctc,
            age=age,
            sex=sex,
            lesion_site=lesionSite,
            model=model,
        )

    # report --------------------------------------------------------------------------
    def saveReport(self, volumeNode, path, segmentationNode=None, segmentId=None, gradCamNode=None):
        """Write the report to the file the user chose (and the PDF beside it); the paths."""
        from mediastinal_ai.mrml import report

        return report.save_report_file(
            self.scene,
            volumeNode,
            path,
            segmentation_node=segmentationNode,
            segment_id=segmentId,
            gradcam_node=gradCamNode,
        )


# ----------------------------------------------------------------------------- small helpers
def _segmentationSummary(result):
    lesions = result.get("lesions")
    n = len(lesions) if isinstance(lesions, (list, tuple)) else result.get("n_lesions")
    return _("Done.") if n is None else _("Done: {n} lesion(s) found.").format(n=n)


# ----------------------------------------------------------------------------- self-test
class MediastinalAITest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (Developer mode → Reload and Test, or --python-code with runTest).

    Uses only what Slicer bundles unless a test first checks ``missingDependencies`` and skips
    with a message (Testing/test_slicer_self_tests.py runs it with every other package made unimportable): "Reload and Test"
    passes on a clean Slicer.
    """

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_progress_protocol()
        self.setUp()
        self.test_synthetic_case_through_adapter()
        self.setUp()
        self.test_parameter_node_defaults()
        self.setUp()
        self.test_logic_on_synthetic_case()

    def _skipIfMissing(self, *features):
        """True (and a message saying why) when the test cannot run in this Slicer."""
        missing = dependencies.missing(features)
        if missing:
            self.delayDisplay(f"Skipped: needs {', '.join(missing)} (not bundled with Slicer)")
        return bool(missing)

    def test_progress_protocol(self):
        self.delayDisplay("Progress-line protocol")
        line = process.format_progress_line(0.25, "sliding window 3/12")
        self.assertEqual(process.parse_progress_line(line), (0.25, "sliding window 3/12"))
        self.assertIsNone(process.parse_progress_line("INFO something else"))
        args = process.segment_command("ct.nrrd", "out", None, "CPU", 0.5, (-10, -20, 5, 10, 20, 45))
        self.assertIn("--roi=-10,-20,5,10,20,45", args)

    def test_synthetic_case_through_adapter(self):
        if self._skipIfMissing("synthetic"):
            return
        self.delayDisplay("Synthetic case → scene → segment → mask")
        import numpy as np

        from mediastinal_ai.mrml import nodes, terminology
        from mediastinal_ai.synthetic import generate_case

        case = generate_case(seed=1)
        ct = nodes.volume_to_node(slicer.mrmlScene, case.ct, name="Synthetic CT", role="ct")
        segmentation, segmentId = nodes.mask_to_segment(slicer.mrmlScene, case.mask, ct)
        back = nodes.segment_to_mask(segmentation, segmentId, ct)
        self.assertTrue(np.array_equal(back.array, (np.asarray(case.mask.array) != 0).astype(np.uint8)))
        self.assertEqual(
            segmentation.GetSegmentation().GetSegment(segmentId).GetTerminology(),
            terminology.TUMOR_TERMINOLOGY,
        )
        self.assertEqual(nodes.find_tumor_segment(slicer.mrmlScene), (segmentation, segmentId))

    def test_parameter_node_defaults(self):
        self.delayDisplay("Parameter node")
        p = MediastinalAILogic().getParameterNode()
        self.assertEqual(p.device, "auto")
        self.assertAlmostEqual(p.threshold, 0.5)
        self.assertEqual(p.sex, NOT_GIVEN)

    def test_logic_on_synthetic_case(self):
        """The whole chain where the models and dependencies are installed. Segmentation and the CNN
        run as the buttons run them, in a PythonSlicer child process (so this also checks that the
        child finds this extension's code and packages); CTC fusion in-process."""
        if self._skipIfMissing("synthetic", "segmentation", "risk-cnn", "fusion"):
            return
        import subprocess

        from mediastinal_ai.mrml import nodes
        from mediastinal_ai.synthetic import generate_case

        logic = MediastinalAILogic()
        case = generate_case(seed=1)
        ct = nodes.volume_to_node(slicer.mrmlScene, case.ct, name="Synthetic CT (SYNTHETIC)", role="ct")
        python = PythonProcessRunner.pythonExecutable()
        with tempfile.TemporaryDirectory(prefix="MediastinalAI-selftest-") as runDir:
            self.delayDisplay("Segment tumor (child process) on a synthetic case")
            args = logic.segmentationArguments(ct, runDir, None, "CPU", 0.5)
            done = subprocess.run([python, *args], env=process.child_environment(), capture_output=True,
                                  text=True, timeout=1800, check=False)
            self.assertEqual(done.returncode, 0, done.stdout[-2000:] + done.stderr[-2000:])
            self.assertIn(process.format_progress_line(1.0, "done"), done.stdout)
            result = logic.importSegmentationResult(ct, runDir, 0.5)
        segmentation, segmentId = result["segmentation_node"], result["segment_id"]
        self.assertIsNotNone(segmentation.GetSegmentation().GetSegment(segmentId))
        self.assertEqual(logic.thresholdAction(result["probability_node"], segmentation, segmentId, 0.5), "none")
        logic.rethreshold(result["probability_node"], segmentation, segmentId, 0.7, result.get("table_node"))
        self.assertEqual(logic.appliedThreshold(result["probability_node"]), 0.7)
        with tempfile.TemporaryDirectory(prefix="MediastinalAI-selftest-") as runDir:
            self.delayDisplay("Predict risk (CNN, child process)")
            args = logic.prepareJob(runDir, "risk-cnn", ct, segmentation, segmentId, model=None)
            done = subprocess.run([python, *args], env=process.child_environment(), capture_output=True,
                                  text=True, timeout=1800, check=False)
            self.assertEqual(done.returncode, 0, done.stdout[-2000:] + done.stderr[-2000:])
            table, gradCam, cnnResult = logic.publishJob(runDir, ct, show=False)
        self.assertGreater(table.GetNumberOfRows(), 0)
        self.assertTrue(0.0 <= cnnResult["probability_high_risk"] <= 1.0)
        self.delayDisplay("Predict with CTC (in-process)")
        table, fusionResult = logic.predictWithCtc(ct, segmentation, segmentId, ctc=float(case.ctc))
        self.assertIn("fusion", fusionResult)
        self.delayDisplay("Test passed")
