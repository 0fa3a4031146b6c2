"""Running segmentation in a separate Python process, as Slicer's AI extensions do.

Pure Python (no Qt, no slicer): the Slicer module's ``QProcess`` runner uses these pieces, and
they are tested without the application.

Protocol: ``mediastinal-ai segment ... --progress-lines`` prints lines
``MEDIASTINALAI_PROGRESS <fraction 0..1> <message>`` (flushed) to stdout; anything else on
stdout/stderr is log text.
"""

from __future__ import annotations

import logging
import math
import os
import signal
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

PROGRESS_TAG = "MEDIASTINALAI_PROGRESS"

#: GUI device choice → CLI ``--device`` value.
DEVICES = {"auto": "auto", "CPU": "cpu", "GPU": "cuda"}


def format_progress_line(fraction: float, message: str = "") -> str:
    """The line a CLI prints for ``--progress-lines`` (one line, message newlines flattened)."""
    text = " ".join(str(message).split())
    return f"{PROGRESS_TAG} {min(1.0, max(0.0, float(fraction))):.4f} {text}".rstrip()


def parse_progress_line(line: str) -> tuple[float, str] | None:
    """``(fraction clamped to 0..1, message)`` for a progress line, ``None`` for any other line."""
    parts = line.strip().split(maxsplit=2)
    if len(parts) < 2 or parts[0] != PROGRESS_TAG:
        return None
    try:
        fraction = float(parts[1])
    except ValueError:
        return None
    if fraction != fraction:  # NaN
        return None
    return min(1.0, max(0.0, fraction)), (parts[2] if len(parts) > 2 else "")


class LineBuffer:
    """Splits a stream arriving in arbitrary chunks into complete lines."""

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, chunk: str) -> list[str]:
        self._pending += chunk.replace("\r\n", "\n").replace("\r", "\n")
        *lines, self._pending = self._pending.split("\n")
        return lines

    def flush(self) -> list[str]:
        rest, self._pending = self._pending, ""
        return [rest] if rest else []


def segment_command(
    input_path: str | Path,
    out_dir: str | Path,
    model: str | None = None,
    device: str = "auto",
    threshold: float = 0.5,
    roi_lps: Sequence[float] | None = None,
) -> list[str]:
    """Arguments after the Python executable: ``-m mediastinal_ai.cli segment ...``.

    A list for ``QProcess.start(program, args)`` (no shell, so paths with spaces are safe).
    ``device`` is a GUI choice (auto/CPU/GPU) or a CLI value (auto/cpu/cuda). ``roi_lps`` is a
    box ``(x0, y0, z0, x1, y1, z1)`` in LPS millimetres.
    """
    cli_device = DEVICES.get(device, device)
    if cli_device not in DEVICES.values():
        raise ValueError(f"unknown device {device!r}; expected one of {sorted(DEVICES)}")
    if not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
    args = ["-m", "mediastinal_ai.cli", "segment", "--input", str(input_path), "--out", str(out_dir)]
    if model:
        args += ["--model", str(model)]
    args += ["--device", cli_device, "--threshold", f"{float(threshold):g}", "--progress-lines"]
    if roi_lps is not None:
        box = [float(v) for v in roi_lps]
        if len(box) != 6:
            raise ValueError(f"ROI box needs 6 numbers (x0,y0,z0,x1,y1,z1), got {len(box)}")
        if not all(math.isfinite(v) for v in box):
            raise ValueError(f"ROI box has a non-finite number: {box}")
        # One argument "--roi=..." (not "--roi", "..."): a box crossing the midline starts with a
        # minus sign, and argparse would take "-10,..." for an option and stop with "expected
        # one argument".
        args.append("--roi=" + ",".join(f"{v:g}" for v in box))
    return args


def ras_bounds_to_lps_box(bounds_ras: Sequence[float]) -> tuple[float, ...]:
    """Slicer bounds ``(xmin, xmax, ymin, ymax, zmin, zmax)`` in RAS → LPS box ``(x0,y0,z0,x1,y1,z1)``.

    Raises ``ValueError`` for inverted bounds: that is what Slicer returns for an ROI node with
    no control point yet (one just created in a node combo box), and passing it on would make an
    inverted (empty) box that fails later with a less clear message.
    """
    xmin, xmax, ymin, ymax, zmin, zmax = (float(v) for v in bounds_ras)
    if not all(math.isfinite(v) for v in (xmin, xmax, ymin, ymax, zmin, zmax)) or (
        xmin > xmax or ymin > ymax or zmin > zmax
    ):
        raise ValueError(
            "the ROI has no position or size yet: place it in a slice view (or pick another ROI, "
            "or 'None' to segment the whole CT)"
        )
    return (-xmax, -ymax, zmin, -xmin, -ymin, zmax)


def kill_process_tree(pid: int, timeout: float = 5.0) -> list[int]:
    """Kill process ``pid`` and every process below it; the pids that were killed.

    Why a tree: ``PythonSlicer`` is a launcher that sets up the environment and starts the real
    Python as its child, so killing the launcher alone (``QProcess.kill``) leaves the computation
    running after the GUI says "Cancelled" (MONAIAuto3DSeg kills the tree the same way). The
    children are listed *before* the parent is killed: once the parent is gone they are
    re-parented and can no longer be found. Without psutil only ``pid`` itself is killed.
    """
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a dependency; keep Cancel working anyway
        log.warning("psutil is not installed: only process %s is killed, not its children", pid)
        try:
            os.kill(pid, signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)
        except OSError:
            return []
        return [pid]
    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return []
    try:
        procs = parent.children(recursive=True)
    except psutil.NoSuchProcess:
        procs = []
    procs = [*procs, parent]
    killed = []
    for proc in procs:
        try:
            proc.kill()
            killed.append(proc.pid)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=timeout)
    return killed


def task_command(job_path: str | Path) -> list[str]:
    """Arguments after the Python executable for a CNN / CTC-fusion / radiomics job run by
    :mod:`mediastinal_ai.mrml.worker` in a child process (the GUI thread stays free)."""
    return ["-m", "mediastinal_ai.mrml.worker", "--job", str(job_path)]


def child_environment(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the child process: ``base`` (default: ours) with the folder that holds
    this ``mediastinal_ai`` package first on ``PYTHONPATH``, so the child imports the same code
    (in Slicer the package sits beside the scripted modules, which are not on PYTHONPATH)."""
    env = dict(os.environ if base is None else base)
    package_parent = str(Path(__file__).resolve().parents[2])
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != package_parent]
    env["PYTHONPATH"] = os.pathsep.join([package_parent, *parts])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
