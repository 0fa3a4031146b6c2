"""MediastinalAI: segment anterior mediastinal tumors, predict WHO risk (CNN + Grad-CAM) and
benign/malignant from CT + circulating tumor cells, inside 3D Slicer.

Thin Slicer module (scripted-module template): the widget reads the GUI, the logic calls only
the MRML adapter (``mediastinal_ai.mrml``) and the core library. Segmentation runs in a separate
``PythonSlicer`` process so the GUI never freezes.
"""

import json
import logging
import os
import shutil
import sys
import tempfile
from typing import Annotated

import qt
import slicer
import vtk
from MediastinalAILib.dependencies import ensureDependencies
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

NOT_GIVEN = "not given"
DEVICE_CHOICES = list(process.DEVICES)  # auto / CPU / GPU


# ----------------------------------------------------------------------------- module
class MediastinalAI(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MediastinalAI"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["MediastinalAI developers"]
        self.parent.helpText = (
            "Segment anterior mediastinal tumors on chest CT with a 3D U-Net (result: an editable "
            "segment), predict WHO risk with a 2D CNN and Grad-CAM, and benign/malignant + lesion "
            "class from CT + circulating tumor cells (CTC). Demo models are trained on synthetic data: "
            f"{DEMO_DISCLAIMER}. See docs/slicer.md in the extension's repository."
        )
        self.parent.acknowledgementText = (
            "Implements methods of published studies on 3D U-Net segmentation, radiomics/CNN WHO-risk "
            "prediction and CT + CTC fusion for mediastinal lesions; it does not claim their results."
        )


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


# ----------------------------------------------------------------------------- process runner
class PythonProcessRunner:
    """Runs ``PythonSlicer <args>`` in a ``qt.QProcess`` (list arguments, no shell).

    Lines ``MEDIASTINALAI_PROGRESS <fraction> <message>`` on stdout go to ``onProgress(fraction,
    message)``; other lines to ``onLog(line)``. ``onFinished(ok, message)`` is called once: ok is
    True for exit code 0; a cancelled run reports ``(False, "cancelled")``. Reusable for any
    MediastinalAI CLI command that prints progress lines.
    """

    def __init__(self, onProgress=None, onFinished=None, onLog=None):
        self.onProgress = onProgress
        self.onFinished = onFinished
        self.onLog = onLog
        self.process = None
        self._buffer = process.LineBuffer()
        self._cancelled = False
        self._lastLines = []
        self._done = False

    @staticmethod
    def pythonExecutable():
        """PythonSlicer (Slicer's Python with its environment), else this interpreter."""
        found = shutil.which("PythonSlicer")
        if found:
            return found
        candidate = os.path.join(
            slicer.app.applicationDirPath(), "PythonSlicer" + (".exe" if os.name == "nt" else "")
        )
        return candidate if os.path.exists(candidate) else sys.executable

    def isRunning(self):
        return self.process is not None and self.process.state() != qt.QProcess.NotRunning

    def start(self, args, program=None):
        if self.isRunning():
            raise RuntimeError("a process is already running")
        self._buffer = process.LineBuffer()
        self._cancelled = False
        self._done = False
        self._lastLines = []
        self.process = qt.QProcess()
        self.process.setProcessChannelMode(qt.QProcess.MergedChannels)
        environment = qt.QProcessEnvironment()
        for key, value in process.child_environment().items():
            environment.insert(key, value)
        self.process.setProcessEnvironment(environment)
        self.process.connect("readyReadStandardOutput()", self._onReadyRead)
        self.process.connect("finished(int,QProcess::ExitStatus)", self._onFinished)
        self.process.connect("errorOccurred(QProcess::ProcessError)", self._onError)
        program = program or self.pythonExecutable()
        logging.info("MediastinalAI: starting %s %s", program, " ".join(args))
        self.process.start(program, list(args))

    def cancel(self):
        if self.isRunning():
            self._cancelled = True
            self.process.kill()

    def _onReadyRead(self):
        raw = self.process.readAllStandardOutput()
        data = raw.data() if hasattr(raw, "data") else bytes(raw)
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        for line in self._buffer.feed(text):
            self._handleLine(line)

    def _handleLine(self, line):
        parsed = process.parse_progress_line(line)
        if parsed is not None:
            if self.onProgress:
                self.onProgress(*parsed)
            return
        if line.strip():
            self._lastLines = (self._lastLines + [line])[-20:]
            if self.onLog:
                self.onLog(line)

    def _finish(self, ok, message):
        if self._done:
            return
        self._done = True
        if self.onFinished:
            self.onFinished(ok, message)

    def _onFinished(self, exitCode, exitStatus):
        for line in self._buffer.flush():
            self._handleLine(line)
        if self._cancelled:
            self._finish(False, "cancelled")
        elif exitStatus == qt.QProcess.NormalExit and exitCode == 0:
            self._finish(True, "")
        else:
            detail = "\n".join(self._lastLines[-5:]) or f"exit code {exitCode}"
            self._finish(False, detail)

    def _onError(self, error):
        if error == qt.QProcess.FailedToStart:
            self._finish(False, f"could not start {self.process.program()}")


# ----------------------------------------------------------------------------- widget
class MediastinalAIWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._runner = None
        self._runDir = None
        self._segmentBinding = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MediastinalAI.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MediastinalAILogic()

        self.ui.ctcUnitLabel.text = taxonomy.CTC_UNIT
        self._fillModelCombo(self.ui.segmentationModelComboBox, "segmentation")
        self._fillModelCombo(self.ui.cnnModelComboBox, "risk-cnn")
        self._fillModelCombo(self.ui.fusionModelComboBox, "fusion")
        self._runner = PythonProcessRunner(
            self.onSegmentationProgress, self.onSegmentationFinished, self.onSegmentationLog
        )

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.loadVolumeButton.connect("clicked(bool)", self.onLoadVolume)
        self.ui.loadDicomFolderButton.connect("clicked(bool)", self.onLoadDicomFolder)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegment)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.thresholdSliderWidget.connect("valueChanged(double)", self.onThresholdChanged)
        self._segmentBinding = SegmentSelectorBinding(
            self.ui.tumorSegmentSelector, lambda: self._parameterNode
        )
        self.ui.exportDicomSegButton.connect("clicked(bool)", self.onExportDicomSeg)
        self.ui.exportNrrdButton.connect("clicked(bool)", self.onExportNrrd)
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
        if self._runner is not None:
            self._runner.cancel()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)

    def onSceneStartClose(self, caller, event):
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
        self.ui.exportNrrdButton.enabled = hasCt and hasSegment and not running
        self.ui.predictCnnButton.enabled = hasCt and hasSegment and not running
        self.ui.predictCtcButton.enabled = hasCt and hasSegment and not running
        self.ui.saveReportButton.enabled = hasCt and not running
        self.ui.gradCamCheckBox.enabled = p.gradCamVolume is not None
        self._segmentBinding.updateSelector()
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

    def _ensureDependencies(self, *features):
        return ensureDependencies(features, "MediastinalAI", self._status)

    def _requireSegment(self):
        p = self._parameterNode
        if p.inputVolume is None or p.segmentation is None or not p.segmentId:
            raise ValueError(
                "Select a CT volume and a tumor segment first (run 'Segment tumor' or pick one)."
            )
        return p.inputVolume, p.segmentation, p.segmentId

    # ------------------------------------------------------------------ inputs
    def onLoadVolume(self):
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(),
            "Load CT",
            "",
            "CT images (*.nrrd *.nhdr *.nii *.nii.gz *.mha *.mhd);;All files (*)",
        )
        if path:
            self._loadCt(path)

    def onLoadDicomFolder(self):
        path = qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), "Load CT from a DICOM folder")
        if path:
            self._loadCt(path)

    def _loadCt(self, path):
        if not self._ensureDependencies("core"):
            return
        with slicer.util.tryWithErrorDisplay("Could not load the CT.", waitCursor=True):
            node = self.logic.loadCt(path)
            self._parameterNode.inputVolume = node
            slicer.util.setSliceViewerLayers(background=node, fit=True)
            self._status(f"Loaded {node.GetName()}")

    # ------------------------------------------------------------------ segmentation
    def onSegment(self):
        p = self._parameterNode
        if not self._ensureDependencies("segmentation"):
            return
        with slicer.util.tryWithErrorDisplay("Could not start the segmentation.", waitCursor=True):
            self._runDir = tempfile.mkdtemp(prefix="MediastinalAI-")
            args = self.logic.segmentationArguments(
                p.inputVolume, self._runDir, p.segmentationModel, p.device, p.threshold, p.roi
            )
            self.ui.segmentationProgressBar.value = 0
            self.ui.segmentationStatusLabel.text = "Starting..."
            self._runner.start(args)
        if self._runDir and not self._runner.isRunning():  # failed before the process started
            shutil.rmtree(self._runDir, ignore_errors=True)
            self._runDir = None
        self._updateGui()

    def onCancel(self):
        self._runner.cancel()

    def onSegmentationProgress(self, fraction, message):
        self.ui.segmentationProgressBar.value = int(round(100 * fraction))
        self.ui.segmentationStatusLabel.text = message

    def onSegmentationLog(self, line):
        logging.info("segment: %s", line)

    def onSegmentationFinished(self, ok, message):
        p = self._parameterNode
        runDir, self._runDir = self._runDir, None
        try:
            if not ok:
                self.ui.segmentationStatusLabel.text = "Cancelled." if message == "cancelled" else "Failed."
                if message != "cancelled":
                    slicer.util.errorDisplay("Segmentation failed:\n\n" + message)
                return
            with slicer.util.tryWithErrorDisplay(
                "Could not import the segmentation result.", waitCursor=True
            ):
                result = self.logic.importSegmentationResult(p.inputVolume, runDir, p.threshold)
                p.segmentation = result.get("segmentation_node")
                p.segmentId = result.get("segment_id") or ""
                p.probabilityVolume = result.get("probability_node")
                p.lesionTable = result.get("table_node")
                self.ui.segmentationProgressBar.value = 100
                self.ui.segmentationStatusLabel.text = _segmentationSummary(result)
        finally:
            if runDir:
                shutil.rmtree(runDir, ignore_errors=True)
            self._updateGui()

    def onThresholdChanged(self, value):
        p = self._parameterNode
        if p is None or p.probabilityVolume is None or p.segmentation is None or not p.segmentId:
            return
        if self._runner.isRunning():
            return
        with slicer.util.tryWithErrorDisplay("Re-thresholding failed."):
            self.logic.rethreshold(p.probabilityVolume, p.segmentation, p.segmentId, value, p.lesionTable)

    def onExportDicomSeg(self):
        if not self._ensureDependencies("dicom-seg"):
            return
        path = qt.QFileDialog.getSaveFileName(
            slicer.util.mainWindow(), "Export DICOM SEG", "tumor_seg.dcm", "DICOM (*.dcm)"
        )
        if not path:
            return
        with slicer.util.tryWithErrorDisplay("DICOM SEG export failed.", waitCursor=True):
            volume, segmentation, segmentId = self._requireSegment()
            self.logic.exportDicomSeg(segmentation, segmentId, volume, path)
            self._status(f"Saved DICOM SEG {path}")

    def onExportNrrd(self):
        path = qt.QFileDialog.getSaveFileName(
            slicer.util.mainWindow(),
            "Export tumor mask",
            "tumor_mask.nrrd",
            "NRRD (*.nrrd);;NIfTI (*.nii.gz *.nii)",
        )
        if not path:
            return
        with slicer.util.tryWithErrorDisplay("Mask export failed.", waitCursor=True):
            volume, segmentation, segmentId = self._requireSegment()
            self.logic.exportMask(segmentation, segmentId, volume, path)
            self._status(f"Saved {path}")

    # ------------------------------------------------------------------ risk (CNN)
    def onPredictCnn(self):
        p = self._parameterNode
        if not self._ensureDependencies("risk-cnn"):
            return
        with slicer.util.tryWithErrorDisplay("CNN risk prediction failed.", waitCursor=True):
            volume, segmentation, segmentId = self._requireSegment()
            table, gradCam, result = self.logic.predictRiskCnn(
                volume, segmentation, segmentId, p.cnnModel or None
            )
            p.cnnTable, p.gradCamVolume = table, gradCam
            p.cnnResult = json.dumps(result, default=str)
            self.logic.showGradCam(volume, gradCam, p.showGradCam)
            ras = display.find_ras(result)
            if ras is not None:
                self.logic.jumpTo(ras)

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
            with slicer.util.WaitCursor():
                table, result = self.logic.predictWithCtc(
                    volume, segmentation, segmentId, ctc, age, sex, site, p.fusionModel or None
                )
        except Exception as e:  # the message (e.g. "CTC level cannot be negative") is the feedback
            self.ui.ctcWarningsLabel.text = f"<span style='color:#c00'>{e}</span>"
            logging.exception("Predict with CTC failed")
            return
        p.fusionTable = table
        p.fusionResult = json.dumps(result, default=str)
        self.ui.ctcWarningsLabel.text = "<br>".join(f"&#9888; {w}" for w in result.get("warnings") or [])
        ras = display.find_ras(result)
        if ras is not None:
            self.logic.jumpTo(ras)

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
            call.text = str(r.get("call") or ("not available" if result else "-"))
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
            slicer.util.mainWindow(), "Save report", "report.html", "HTML (*.html);;PDF (*.pdf)"
        )
        if not path:
            return
        with slicer.util.tryWithErrorDisplay("Saving the report failed.", waitCursor=True):
            out = self.logic.saveReport(
                p.inputVolume, path, p.segmentation, p.segmentId or None, p.gradCamVolume
            )
            self._status(f"Report saved: {out}")


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

    # segmentation ----------------------------------------------------------------
    def segmentationArguments(self, volumeNode, runDir, model, device, threshold, roiNode=None):
        """Write the CT to ``runDir/ct.nrrd`` and return the CLI arguments for the child process."""
        from mediastinal_ai.io import write_image
        from mediastinal_ai.mrml import nodes

        if volumeNode is None:
            raise ValueError("Select a CT volume first.")
        ctPath = os.path.join(runDir, "ct.nrrd")
        write_image(nodes.node_to_volume(volumeNode), ctPath, compress=False)
        roi = None
        if roiNode is not None:
            bounds = [0.0] * 6
            roiNode.GetRASBounds(bounds)
            roi = process.ras_bounds_to_lps_box(bounds)
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

    def exportDicomSeg(self, segmentationNode, segmentId, volumeNode, path):
        from mediastinal_ai.mrml import segmentation

        return segmentation.export_dicom_seg(self.scene, segmentationNode, segmentId, volumeNode, path)

    def exportMask(self, segmentationNode, segmentId, volumeNode, path):
        from mediastinal_ai.io import write_image
        from mediastinal_ai.mrml import nodes

        mask = nodes.segment_to_mask(segmentationNode, segmentId, nodes.node_to_volume(volumeNode))
        return write_image(mask, path)

    # risk (CNN) --------------------------------------------------------------------
    def predictRiskCnn(self, volumeNode, segmentationNode, segmentId, model=None):
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
    def checkCtcInputs(ctc, age=None, sex=None, lesionSite=None):
        """'' when the inputs are acceptable, else the reason (shown under the CTC fields)."""
        from mediastinal_ai.errors import InputError
        from mediastinal_ai.fusion import validate_inputs

        try:
            validated = validate_inputs(ctc, age, sex, lesionSite)
        except InputError as e:
            return f"<span style='color:#c00'>{e}</span>"
        return "<br>".join(f"&#9888; {w}" for w in validated.warnings)

    def predictWithCtc(
        self, volumeNode, segmentationNode, segmentId, ctc, age=None, sex=None, lesionSite=None, model=None
    ):
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
        from mediastinal_ai.mrml import report

        return report.save_case_report(
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
    return "Done." if n is None else f"Done: {n} lesion(s) found."


# ----------------------------------------------------------------------------- self-test
class MediastinalAITest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (Developer mode → Reload and Test, or --python-code with runTest)."""

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

    def _syntheticCase(self):
        from mediastinal_ai.mrml import nodes
        from mediastinal_ai.synthetic import generate_case

        case = generate_case(seed=1)
        ct = nodes.volume_to_node(slicer.mrmlScene, case.ct, name="Synthetic CT", role="ct")
        return case, ct

    def test_progress_protocol(self):
        self.delayDisplay("Progress-line protocol")
        line = process.format_progress_line(0.25, "sliding window 3/12")
        self.assertEqual(process.parse_progress_line(line), (0.25, "sliding window 3/12"))
        self.assertIsNone(process.parse_progress_line("INFO something else"))

    def test_synthetic_case_through_adapter(self):
        self.delayDisplay("Synthetic case → scene → segment → mask")
        import numpy as np

        from mediastinal_ai.mrml import nodes, terminology

        case, ct = self._syntheticCase()
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
        """The whole chain in-process where the models and dependencies are installed."""
        logic = MediastinalAILogic()
        missing = logic.missingDependencies(["segmentation", "risk-cnn", "fusion"])
        if missing:
            self.delayDisplay(f"Skipping model test: missing {missing}")
            return
        self.delayDisplay("Segment tumor (in-process) on a synthetic case")
        case, ct = self._syntheticCase()
        result = logic.segmentInProcess(ct, device="CPU")
        segmentation, segmentId = result["segmentation_node"], result["segment_id"]
        self.assertIsNotNone(segmentation.GetSegmentation().GetSegment(segmentId))
        logic.rethreshold(result["probability_node"], segmentation, segmentId, 0.7, result.get("table_node"))
        self.delayDisplay("Predict risk (CNN) and with CTC")
        table, gradCam, cnnResult = logic.predictRiskCnn(ct, segmentation, segmentId)
        self.assertGreater(table.GetNumberOfRows(), 0)
        table, fusionResult = logic.predictWithCtc(ct, segmentation, segmentId, ctc=float(case.ctc))
        self.assertIn("fusion", fusionResult)
        self.delayDisplay("Test passed")
