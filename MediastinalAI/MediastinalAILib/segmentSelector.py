"""Keeps a qMRMLSegmentSelectorWidget and a parameter node's (segmentation, segmentId) pair in
step. The parameter-node wrapper has no connector for this widget, so both modules use this."""


def _hasSegment(node, segmentId):
    return bool(node is not None and segmentId and node.GetSegmentation().GetSegment(segmentId) is not None)


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
        if p is None or self._updating:
            return
        node, segmentId = getattr(p, self.nodeField), getattr(p, self.idField)
        self._updating = True
        try:
            if self.selector.currentNode() != node:
                self.selector.setCurrentNode(node)
            # only an ID the node has: a stale ID from the previous node is never pushed onto it
            if _hasSegment(node, segmentId) and self.selector.currentSegmentID() != segmentId:
                self.selector.setCurrentSegmentID(segmentId)
        finally:
            self._updating = False

    def _onSelectorChanged(self, *args):
        """Widget → parameter node. Both fields are written while GUI updates are held off, and
        the ID is checked against the *new* node: writing the node first used to trigger a GUI
        update that pushed the old node's segment ID onto the new node."""
        p = self.getParameterNode()
        if self._updating or p is None:
            return
        node = self.selector.currentNode()
        segmentId = self.selector.currentSegmentID() or ""
        if not _hasSegment(node, segmentId):
            ids = list(node.GetSegmentation().GetSegmentIDs()) if node is not None else []
            segmentId = ids[0] if ids else ""
        self._updating = True
        try:
            setattr(p, self.idField, "")  # never (new node, old ID), not even for one update
            setattr(p, self.nodeField, node)
            setattr(p, self.idField, segmentId)
        finally:
            self._updating = False
        self.updateSelector()
