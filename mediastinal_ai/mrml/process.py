"""Running segmentation in a separate Python process, as Slicer's AI extensions do.

Pure Python (no Qt, no slicer): the Slicer module's ``QProcess`` runner uses these pieces, and
they are tested without the application.

Protocol: ``mediastinal-ai segment ... --progress-lines`` prints lines
``MEDIASTINALAI_PROGRESS <fraction 0..1> <message>`` (flushed) to stdout; anything else on
stdout/stderr is log text.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

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
        args += ["--roi", ",".join(f"{v:g}" for v in box)]
    return args


def ras_bounds_to_lps_box(bounds_ras: Sequence[float]) -> tuple[float, ...]:
    """Slicer bounds ``(xmin, xmax, ymin, ymax, zmin, zmax)`` in RAS → LPS box ``(x0,y0,z0,x1,y1,z1)``."""
    xmin, xmax, ymin, ymax, zmin, zmax = (float(v) for v in bounds_ras)
    return (-xmax, -ymax, zmin, -xmin, -ymin, zmax)


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
