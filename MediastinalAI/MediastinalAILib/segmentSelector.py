"""Keeps a qMRMLSegmentSelectorWidget and a parameter node's (segmentation, segmentId) pair in
step. The parameter-node wrapper has no connector for this widget, so both modules use this."""


class SegmentSelectorBinding:
    def __init__(self, selector, getParameterNode, nodeField="segmentation", idField="segmentId"):
        self.selector = selector
        self.getParameterNode = getParameterNode
        self.nodeField, self.idField = nodeField, idField
        self._updating = False
        selector.connect("currentNodeChanged(vtkMRMLNode*)", self._onSelectorChanged)
        selector.connect("currentSegmentChanged(QString)", self._onSelectorChanged)

    def updateSelector(self):
        """Parameter node → widget (call from the widget's GUI update)."""
        p = self.getParameterNode()
        if p is None:
            return
        node, segmentId = getattr(p, self.nodeField), getattr(p, self.idField)
        self._updating = True
        try:
            if self.selector.currentNode() != node:
                self.selector.setCurrentNode(node)
            if segmentId and self.selector.currentSegmentID() != segmentId:
                self.selector.setCurrentSegmentID(segmentId)
        finally:
            self._updating = False

    def _onSelectorChanged(self, *args):
        p = self.getParameterNode()
        if self._updating or p is None:
            return
        setattr(p, self.nodeField, self.selector.currentNode())
        setattr(p, self.idField, self.selector.currentSegmentID() or "")
