"""In-application GUI test of the MediastinalAI module (runs inside Slicer via ctest or
``Slicer --python-code "import slicer.testing; slicer.testing.runUnitTest(...)"``).

Checks what the static tests cannot: the .ui loads into real widgets, the parameter-node
bindings connect, a widget change reaches the parameter node and back, and the module's own
ScriptedLoadableModuleTest passes."""

import unittest

import slicer


class MediastinalAISelfTest(unittest.TestCase):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def test_widget_and_parameter_node(self):
        widget = slicer.util.getModuleWidget("MediastinalAI")
        widget.enter()
        p = widget._parameterNode
        self.assertIsNotNone(p)
        widget.ui.thresholdSliderWidget.value = 0.7
        self.assertAlmostEqual(p.threshold, 0.7, places=2)
        p.device = "CPU"
        self.assertEqual(widget.ui.deviceComboBox.currentText, "CPU")
        p.age = 55.0
        self.assertAlmostEqual(widget.ui.ageSpinBox.value, 55.0)
        widget.ui.gradCamCheckBox.checked = False
        self.assertFalse(p.showGradCam)
        self.assertTrue(widget.ui.ctcUnitLabel.text)
        self.assertFalse(widget.ui.segmentButton.enabled)  # no CT yet
        # re-threshold on release only (valueChanged once, when the slider is let go)
        self.assertFalse(widget.ui.thresholdSliderWidget.tracking)
        self.assertFalse(widget.ui.show3DButton.enabled)  # no segment yet
        widget.onJobLog("a line from the child process")
        self.assertIn("a line from the child process", widget.ui.logTextEdit.toPlainText())

    def test_module_self_test(self):
        from MediastinalAI import MediastinalAITest

        test = MediastinalAITest()
        test.runTest()


if __name__ == "__main__":
    unittest.main()
