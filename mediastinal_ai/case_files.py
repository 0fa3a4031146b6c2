"""One naming scheme for a case result folder, shared by the CLI, the batch runner and the report.

A *case folder* holds what the per-case commands wrote for one CT::

    segmentation_result.json  segmentation (``segment``; task "segmentation"), with mask.nrrd,
                            probability.nrrd, lesions.csv (+ uncertainty.nrrd, anatomy_labels.nrrd,
                            mediastinal_envelope.nrrd)
    radiomics_result.json   WHO risk from radiomics (``predict-radiomics``; task "risk-radiomics")
    cnn_result.json         WHO risk from the 2D CNN (``predict-cnn``; task "risk-cnn"), with
                            gradcam.nrrd (+ gradcam.png from the CLI)
    fusion_result.json      benign/malignant + lesion class from CT + CTC (``predict-fusion``; task "fusion")

So ``segment --out CASE``, ``predict-radiomics --out CASE``, ``predict-cnn --out CASE``,
``predict-fusion --out CASE`` and ``report --case CASE`` work on one folder, and ``run`` writes the
same names under ``cases/<case_id>/``. Every writer and reader takes the names from here.

Reading is backward compatible, because result folders outlive the version that wrote them: the
plain ``result.json`` of older versions (:data:`LEGACY_RESULT`) is found as the segmentation when
its JSON says task "segmentation" (or names no task, as the first versions did), and as the CNN,
radiomics or fusion result when it says so (an older ``predict-cnn --out DIR`` wrote it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: the single name older versions gave every per-case result (read, never written)
LEGACY_RESULT = "result.json"
RESULT_FILES: dict[str, str] = {
    "segmentation": "segmentation_result.json",
    "risk-radiomics": "radiomics_result.json",
    "risk-cnn": "cnn_result.json",
    "fusion": "fusion_result.json",
}
OLD_NAMES: dict[str, tuple[str, ...]] = {task: (LEGACY_RESULT,) for task in RESULT_FILES}


def result_name(task: str) -> str:
    return RESULT_FILES[task]


def result_path(out: str | Path, task: str) -> Path:
    """Where a per-case command writes its result: ``--out`` itself when it names a ``.json``
    file (the older form), else the task's file inside the ``--out`` case folder."""
    out = Path(out)
    return out if out.suffix.lower() == ".json" else out / RESULT_FILES[task]


def _task_of(d: dict[str, Any]) -> str | None:
    task = d.get("task")
    if task:
        return str(task)
    if "fusion" in d and "ct_only" in d:  # fusion results written before they carried "task"
        return "fusion"
    if "probability_high_risk" in d and "features" in d:  # radiomics results before "task"
        return "risk-radiomics"
    return None


def find_result(folder: str | Path, task: str) -> Path | None:
    """The task's result file in a case folder: the scheme's name, else an older name whose JSON
    says it is that task's result (an old ``result.json`` is segmentation unless its ``task`` says
    otherwise)."""
    folder = Path(folder)
    p = folder / RESULT_FILES[task]
    if p.is_file() and (task != "segmentation" or _json_task(p) in (None, "segmentation")):
        return p
    for name in OLD_NAMES.get(task, ()):
        q = folder / name
        if q.is_file() and q != p:
            t = _json_task(q)
            if t == task or (t is None and task == "segmentation"):
                return q
    return None


def require_result(folder: str | Path, task: str) -> Path:
    """:func:`find_result`, or a clear error naming the file the folder lacks."""
    from .errors import InputError

    p = find_result(folder, task)
    if p is None:
        raise InputError(f"{task} result missing: no {RESULT_FILES[task]} (nor an older {LEGACY_RESULT} "
                         f"of that task) in the folder", folder)
    return p


def _json_task(path: Path) -> str | None:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return _task_of(d) if isinstance(d, dict) else None
