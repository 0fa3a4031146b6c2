"""In-application GUI test of the MediastinalAIRadiomics module (runs inside Slicer).

Checks that the .ui loads, the parameter node connects, the tumor segment made by MediastinalAI
is selected by default, and the module's own ScriptedLoadableModuleTest passes."""

import unittest

import slicer


class MediastinalAIRadiomicsSelfTest(unittest.TestCase):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def test_default_segment_selected_on_enter(self):
        import numpy as np

        from mediastinal_ai.mrml import nodes
        from mediastinal_ai.volume import Volume

        ct = nodes.volume_to_node(slicer.mrmlScene, Volume(np.zeros((8, 16, 16), np.int16) - 1000), name="CT")
        mask = np.zeros((8, 16, 16), np.uint8)
        mask[2:5, 4:9, 4:9] = 1
        segmentation, segmentId = nodes.mask_to_segment(slicer.mrmlScene, mask, ct)
        widget = slicer.util.getModuleWidget("MediastinalAIRadiomics")
        widget.enter()
        p = widget._parameterNode
        self.assertEqual(p.segmentation, segmentation)
        self.assertEqual(p.segmentId, segmentId)
        self.assertEqual(p.inputVolume, ct)
        self.assertTrue(widget.ui.predictRiskButton.enabled)

    def test_module_self_test(self):
        from MediastinalAIRadiomics import MediastinalAIRadiomicsTest

        MediastinalAIRadiomicsTest().runTest()


if __name__ == "__main__":
    unittest.main()
