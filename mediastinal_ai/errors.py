"""Exceptions raised at the boundary, so every caller (CLI, batch, Slicer) can show a
clear message instead of a traceback. Each carries the offending path when there is one."""

from __future__ import annotations

from pathlib import Path


class MediastinalAIError(Exception):
    """Base class: anything the user can fix (bad input, missing model, cancelled run)."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = str(path) if path is not None else None
        self.reason = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class InputError(MediastinalAIError):
    """The input file, folder, mask or value is not usable (wrong modality, corrupt, empty...)."""


class ModelError(MediastinalAIError):
    """A model file is missing, tampered (sha256 mismatch), or does not fit the task/input."""


class Cancelled(MediastinalAIError):
    """The user (or a batch supervisor) cancelled a running job."""

    def __init__(self, message: str = "cancelled by user"):
        super().__init__(message)
