"""MediastinalAIRadiomics: WHO risk of thymic epithelial tumors from radiomics (pyradiomics
features → selected features → SVM), and the full feature table, inside 3D Slicer.

Thin Slicer module (scripted-module template); the logic calls only the MRML adapter
(``mediastinal_ai.mrml``) and the core library.
"""

import json

import qt
import slicer
import vtk
from MediastinalAILib.dependencies import ensureDependencies
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
from mediastinal_ai.mrml import dependencies, display


# ----------------------------------------------------------------------------- module
class MediastinalAIRadiomics(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MediastinalAI Radiomics"
        self.parent.categories = ["Quantification"]
        self.parent.dependencies = ["MediastinalAI"]  # loads first: puts MediastinalAILib on sys.path
        self.parent.contributors = ["MediastinalAI developers"]
        self.parent.helpText = (
            "Predict the WHO risk group (low: A/AB/B1, high: B2/B3/thymic carcinoma) of a thymic "
            "epithelial tumor from radiomics features of its segment, and compute the full pyradiomics "
            "feature table (original, LoG, wavelet). The tumor segment defaults to the one the "
            f"MediastinalAI module made. Demo models: {DEMO_DISCLAIMER}."
        )
        self.parent.acknowledgementText = "Uses pyradiomics. Implements the published radiomics + SVM method; it does not claim its results."


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
        self._busy = False
        self._segmentBinding = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MediastinalAIRadiomics.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MediastinalAIRadiomicsLogic()

        for name in display.model_names("risk-radiomics"):
            self.ui.radiomicsModelComboBox.addItem(name)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self._segmentBinding = SegmentSelectorBinding(self.ui.segmentSelector, lambda: self._parameterNode)
        self.ui.radiomicsModelComboBox.connect("currentTextChanged(QString)", self.onModelChanged)
        self.ui.predictRiskButton.connect("clicked(bool)", self.onPredictRisk)
        self.ui.computeAllFeaturesButton.connect("clicked(bool)", self.onComputeAllFeatures)
        self.ui.resultsTableSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onResultsTableChanged)
        self.ui.saveReportButton.connect("clicked(bool)", self.onSaveReport)

        self.initializeParameterNode()

    # ------------------------------------------------------------------ lifecycle
    def cleanup(self):
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
        ready = (
            p.inputVolume is not None and p.segmentation is not None and bool(p.segmentId) and not self._busy
        )
        self.ui.predictRiskButton.enabled = ready
        self.ui.computeAllFeaturesButton.enabled = ready
        self.ui.saveReportButton.enabled = p.inputVolume is not None and not self._busy
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

    def _progress(self, fraction, message=""):
        self.ui.progressBar.value = int(round(100 * float(fraction)))
        self.ui.statusLabel.text = message
        slicer.app.processEvents()

    def _ensureDependencies(self, *features):
        return ensureDependencies(features, "MediastinalAI Radiomics", self._setStatus)

    def _setStatus(self, text):
        self.ui.statusLabel.text = text

    def _run(self, what, function):
        self._busy = True
        self._updateGui()
        try:
            with slicer.util.tryWithErrorDisplay(f"{what} failed.", waitCursor=True):
                function()
                self._progress(1.0, f"{what}: done.")
        finally:
            self._busy = False
            self._updateGui()

    def onPredictRisk(self):
        p = self._parameterNode
        if not self._ensureDependencies("radiomics"):
            return

        def run():
            table, result = self.logic.predictRisk(
                p.inputVolume, p.segmentation, p.segmentId, p.radiomicsModel or None, progress=self._progress
            )
            p.riskTable = table
            p.riskResult = json.dumps(result, default=str)
            self.ui.resultsTableSelector.setCurrentNode(table)

        self._run("Predict risk", run)

    def onComputeAllFeatures(self):
        p = self._parameterNode
        if not self._ensureDependencies("radiomics"):
            return

        def run():
            table = self.logic.computeAllFeatures(
                p.inputVolume, p.segmentation, p.segmentId, progress=self._progress
            )
            p.featuresTable = table
            self.ui.resultsTableSelector.setCurrentNode(table)

        self._run("Compute all features", run)

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
            out = self.logic.saveReport(p.inputVolume, path, p.segmentation, p.segmentId or None)
            self.ui.statusLabel.text = f"Report saved: {out}"


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

    def saveReport(self, volumeNode, path, segmentationNode=None, segmentId=None):
        from mediastinal_ai.mrml import report

        return report.save_case_report(
            self.scene, volumeNode, path, segmentation_node=segmentationNode, segment_id=segmentId
        )


# ----------------------------------------------------------------------------- self-test
class MediastinalAIRadiomicsTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer (Developer mode → Reload and Test)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_default_segment_is_found()
        self.setUp()
        self.test_radiomics_on_synthetic_case()

    def _syntheticCase(self):
        from mediastinal_ai.mrml import nodes
        from mediastinal_ai.synthetic import generate_case

        case = generate_case(seed=2)
        ct = nodes.volume_to_node(slicer.mrmlScene, case.ct, name="Synthetic CT", role="ct")
        segmentation, segmentId = nodes.mask_to_segment(slicer.mrmlScene, case.mask, ct)
        return case, ct, segmentation, segmentId

    def test_default_segment_is_found(self):
        self.delayDisplay("Default tumor segment and its CT")
        _, ct, segmentation, segmentId = self._syntheticCase()
        logic = MediastinalAIRadiomicsLogic()
        self.assertEqual(logic.defaultTumorSegment(), (segmentation, segmentId))
        self.assertEqual(logic.referenceVolume(segmentation), ct)

    def test_radiomics_on_synthetic_case(self):
        logic = MediastinalAIRadiomicsLogic()
        missing = logic.missingDependencies(["radiomics"])
        if missing:
            self.delayDisplay(f"Skipping radiomics test: missing {missing}")
            return
        self.delayDisplay("Predict risk (radiomics) on a synthetic case")
        _, ct, segmentation, segmentId = self._syntheticCase()
        table, result = logic.predictRisk(ct, segmentation, segmentId)
        self.assertGreater(table.GetNumberOfRows(), 0)
        self.assertIsInstance(result, dict)
        self.delayDisplay("Test passed")
