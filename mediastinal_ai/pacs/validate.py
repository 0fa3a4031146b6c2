"""``dciodvfy`` (David Clunie's DICOM IOD verifier, Debian package dicom3tools) on a file."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

DCIODVFY = "dciodvfy"


@dataclass
class Verification:
    path: Path
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    output: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors


def have_dciodvfy() -> bool:
    return shutil.which(DCIODVFY) is not None


def dciodvfy(path: str | Path, timeout: float = 120.0) -> Verification:
    """Run dciodvfy on one file; its ``Error`` lines are errors, ``Warning`` lines warnings.

    Raises FileNotFoundError when dciodvfy is not installed (apt-get install dicom3tools)."""
    exe = shutil.which(DCIODVFY)
    if exe is None:
        raise FileNotFoundError("dciodvfy not found: install the dicom3tools package (apt-get install dicom3tools)")
    r = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=timeout, check=False)
    text = (r.stdout or "") + (r.stderr or "")
    lines = text.splitlines()
    return Verification(Path(path), [ln for ln in lines if ln.startswith("Error")],
                        [ln for ln in lines if ln.startswith("Warning")], text)
