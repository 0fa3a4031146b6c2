"""Progress reporting and cancellation shared by long jobs (inference, training, extraction).

A job takes ``progress`` (a callable ``(fraction 0..1, message)``) and ``cancel`` (a
:class:`CancelToken`). Both are optional so library users can ignore them; Slicer and the
batch runner pass real ones.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .errors import Cancelled

ProgressCallback = Callable[[float, str], None]
log = logging.getLogger(__name__)


class CancelToken:
    """Thread-safe flag; jobs call :meth:`check` at safe points and stop with :class:`Cancelled`."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled()


def report(progress: ProgressCallback | None, fraction: float, message: str = "") -> None:
    """Call ``progress`` if given; clamp the fraction so a UI progress bar never overflows."""
    if progress is not None:
        progress(min(1.0, max(0.0, float(fraction))), message)


def check(cancel: CancelToken | None) -> None:
    if cancel is not None:
        cancel.check()


def log_progress(fraction: float, message: str) -> None:
    """A ready-made callback for headless runs."""
    log.info("%5.1f%% %s", 100.0 * fraction, message)
