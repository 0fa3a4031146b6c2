"""PACS-ready DICOM outputs: SEG (binary per lesion, fractional probability/uncertainty), a TID 1500
measurement report SR (lesion measurements and the AI predictions), and their validation with
``dciodvfy``.

* :mod:`.sources` prepares the referenced CT series (anonymised series with blank UIDs get
  deterministic generated UIDs and a warning, or are refused) and carries the model identity
  (:class:`ModelRef`) every DICOM object records.
* :mod:`.seg` writes the fractional SEG of the probability (and uncertainty) map; the binary SEG
  is :func:`mediastinal_ai.segmentation.dicom_seg.write_dicom_seg`.
* :mod:`.sr` writes the TID 1500 Comprehensive 3D SR.
* :mod:`.export` writes all of them for one case (CLI ``segment --dicom-sr``, ``export-dicom``,
  batch step ``dicom``).
* :mod:`.validate` runs ``dciodvfy`` (Debian package dicom3tools) on a file.

highdicom and pydicom are imported inside the functions (``mediastinal-ai[dicom]``).
"""

from __future__ import annotations

from .sources import ModelRef, SourceSeries, prepare_sources

__all__ = ["ModelRef", "SourceSeries", "prepare_sources"]
