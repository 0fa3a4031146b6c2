"""Atomic output and provenance: every file a user keeps is either complete or absent,
and records what produced it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import secrets
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the destination folder; rename onto ``path`` only on success.

    The temporary keeps the destination's suffixes so writers that pick a format by extension
    (SimpleITK, matplotlib) still work. A crash or kill leaves at most a ``.tmp-*`` file that
    nothing trusts, never a truncated ``path``. The temporary is created with mode 0666 minus the
    umask, i.e. the permissions a plain ``open`` gives (mkstemp's 0600 would hide a shared
    cohort's outputs from colleagues).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    tmp_path = _create_unique(path.parent, f".tmp-{path.stem.split('.')[0]}-", suffix)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _create_unique(folder: Path, prefix: str, suffix: str) -> Path:
    """An empty new file, created exclusively (like mkstemp) but with the kernel applying the
    umask to 0666 (unlike mkstemp's fixed 0600)."""
    for _ in range(100):
        candidate = folder / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free temporary name in {folder}")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


PROVENANCE_SCHEMA = "mediastinal-ai-provenance/1"  # fields: docs/provenance.md


def provenance(**extra: Any) -> dict[str, Any]:
    """What produced an output: package version, time, platform, plus caller's details
    (source, model name/version/sha256, plan, parameters; see docs/provenance.md)."""
    from . import __version__

    return {
        "schema": PROVENANCE_SCHEMA,
        "produced_by": f"mediastinal-ai {__version__}",
        "package_version": __version__,
        "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        **extra,
    }


def source_provenance(volume: Any = None, path: str | Path | None = None) -> dict[str, Any]:
    """Where an output's input came from, in the shared schema (docs/provenance.md): a DICOM
    series by its SeriesInstanceUID (and study, file count), an image file by path and sha256."""
    meta = getattr(volume, "metadata", None) or {}
    if meta.get("dicom_files"):
        return {"kind": "dicom-series", "series_instance_uid": meta.get("series_instance_uid", ""),
                "study_instance_uid": meta.get("study_instance_uid", ""), "n_files": len(meta["dicom_files"]),
                "path": str(meta.get("source", path or ""))}
    p = Path(path or meta.get("source") or "")
    if str(p) and p.is_file():
        return {"kind": "file", "path": str(p), "sha256": sha256_file(p)}
    return {"kind": "unknown", "path": str(p) if str(p) not in ("", ".") else ""}
