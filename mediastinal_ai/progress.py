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


def _hms(seconds: float) -> str:
    s = int(round(max(0.0, seconds)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class TerminalProgress:
    """A progress callback for command-line runs: a bar with elapsed time and ETA on a terminal,
    plain lines (through :mod:`logging`) otherwise.

    * terminal (``stream.isatty()``): one line redrawn in place, at most every ``redraw_s``;
    * not a terminal (a log file, CI, a pipe): a line when the job has moved ``min_step`` further
      or ``min_interval_s`` have passed since the last line, and at the end;
    * ``keep(message)`` true: the message is also printed as a permanent line (epoch summaries).

    The ETA extrapolates the rate since the first report with progress (so a slow preparation
    phase does not distort it) and says ``ETA ?`` until there is a rate.
    """

    def __init__(self, label: str, *, stream: object = None, tty: bool | None = None, min_step: float = 0.05,
                 min_interval_s: float = 30.0, redraw_s: float = 0.2, width: int | None = None,
                 keep: Callable[[str], bool] | None = None, clock: Callable[[], float] | None = None) -> None:
        import sys
        import time

        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)()) if tty is None else tty
        self.min_step, self.min_interval_s, self.redraw_s = min_step, min_interval_s, redraw_s
        self.keep = keep
        self._clock = clock or time.monotonic
        self._t0 = self._clock()
        self._rate_from: tuple[float, float] | None = None  # (time, fraction) of the first progress
        self._last_line: tuple[float, float] | None = None  # (time, fraction) of the last plain line
        self._last_draw = -1e9
        self._drawn = False
        self._width = width
        self.fraction = 0.0
        self.lines: list[str] = []  # every plain/kept line, for tests and summaries

    # ------------------------------------------------------------------ figures
    def elapsed(self) -> float:
        return self._clock() - self._t0

    def eta(self) -> float | None:
        """Seconds left, or None while there is no rate yet."""
        if self._rate_from is None:
            return None
        t, f = self._rate_from
        df, dt = self.fraction - f, self._clock() - t
        if df <= 1e-9 or dt <= 0:
            return None
        return dt / df * (1.0 - self.fraction)

    def status(self, message: str = "") -> str:
        eta = self.eta()
        tail = f" {message}" if message else ""
        return (f"{self.label}: {100 * self.fraction:5.1f}% ({_hms(self.elapsed())} elapsed, "
                f"ETA {'?' if eta is None else _hms(eta)}){tail}")

    # ------------------------------------------------------------------ callback
    def __call__(self, fraction: float, message: str = "") -> None:
        now = self._clock()
        f = min(1.0, max(0.0, float(fraction)))
        self.fraction = max(self.fraction, f) if f < 1.0 else 1.0
        if self._rate_from is None and f > 0:
            self._rate_from = (now, f)
        message = " ".join(str(message).split())
        kept = bool(self.keep and message and self.keep(message))
        if self.tty:
            if kept:
                self._permanent(self.status(message))
            if kept or now - self._last_draw >= self.redraw_s or f >= 1.0:
                self._draw(message)
                self._last_draw = now
            if f >= 1.0:
                self.close()
            return
        due = (self._last_line is None or f >= 1.0 or f - self._last_line[1] >= self.min_step
               or now - self._last_line[0] >= self.min_interval_s)
        if kept or due:
            line = self.status(message)
            self.lines.append(line)
            log.info("%s", line)
            self._last_line = (now, f)

    def _cols(self) -> int:
        if self._width:
            return self._width
        import shutil

        return max(40, shutil.get_terminal_size((100, 20)).columns)

    def _draw(self, message: str) -> None:
        cols = self._cols()
        eta = self.eta()
        n = 20
        filled = int(round(n * self.fraction))
        head = (f"{self.label} |{'#' * filled}{'.' * (n - filled)}| {100 * self.fraction:5.1f}% "
                f"{_hms(self.elapsed())}<{'?' if eta is None else _hms(eta)}")
        text = f"{head} {message}" if message else head
        text = text[: cols - 1]
        self.stream.write("\r" + text.ljust(cols - 1))  # type: ignore[attr-defined]
        self.stream.flush()  # type: ignore[attr-defined]
        self._drawn = True

    def _permanent(self, line: str) -> None:
        cols = self._cols()
        self.lines.append(line)
        self.stream.write(("\r" + " " * (cols - 1) + "\r" if self._drawn else "") + line + "\n")  # type: ignore[attr-defined]
        self.stream.flush()  # type: ignore[attr-defined]
        self._drawn = False

    def close(self) -> None:
        """End the bar's line (terminal); call once the job is over, also after an error."""
        if self.tty and self._drawn:
            self.stream.write("\n")  # type: ignore[attr-defined]
            self.stream.flush()  # type: ignore[attr-defined]
            self._drawn = False

    def __enter__(self) -> TerminalProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cli_progress(label: str, **kw: object) -> TerminalProgress:
    """The progress callback every long command-line step uses (stderr; bar on a terminal)."""
    return TerminalProgress(label, **kw)  # type: ignore[arg-type]
