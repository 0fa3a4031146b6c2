"""MRML adapter: the only part of MediastinalAI that knows Slicer nodes.

Imports ``slicer`` (MRML) and ``vtk``, never Qt, so it runs on ``slicer-core`` without the
Slicer application. :mod:`.nodes` converts core data (``Volume``, masks, records) to and
from nodes; the task modules (``segmentation``, ``radiomics``, ``cnn``, ``fusion``,
``report``) build on it. Nothing is imported here so that ``import mediastinal_ai.mrml`` stays
cheap and does not require slicer-core.
"""
