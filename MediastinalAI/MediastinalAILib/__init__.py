"""Slicer-side helpers shared by the MediastinalAI and MediastinalAIRadiomics modules.

Installed beside the scripted modules (Slicer puts that folder on ``sys.path``). Only code that
needs the Slicer application lives here; pure-Python helpers are in ``mediastinal_ai.mrml``.
"""
