"""Child-process side of the Slicer buttons that would otherwise freeze the GUI.

"Predict risk (CNN)", "Predict with CTC" (MediastinalAI) and "Predict risk" / "Compute all
features" (MediastinalAIRadiomics) take seconds to minutes (torch inference, the full LoG +
wavelet pyradiomics extraction). Run on Slicer's main thread they freeze the application and
cannot be cancelled, so the modules run them like the segmentation: the parent writes the CT
and the tumour mask (on the CT grid) and a ``job.json`` into a temporary folder, starts
``PythonSlicer -m mediastinal_ai.mrml.worker --job job.json`` and reads progress lines
(:mod:`.process` protocol); the child writes ``job_result.json`` (plus ``gradcam.nrrd`` for the CNN)
and the parent puts the result into the scene with the adapters' ``publish_*`` functions.
Cancel kills the child's whole process tree (:func:`.process.kill_process_tree`).

Pure core code: no slicer, vtk or qt import, so the child needs no MRML and this file is
tested with plain Python.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

from ..errors import InputError, MediastinalAIError
from ..progress import ProgressCallback, report
from . import process

log = logging.getLogger(__name__)

TASKS = ("risk-cnn", "fusion", "radiomics-risk", "radiomics-features")
JOB_FILE = "job.json"
RESULT_FILE = "job_result.json"  # a job folder's, not a case folder's (case_files)
GRADCAM_FILE = "gradcam.nrrd"


def _json_default(o: Any) -> Any:
    """numpy scalars/arrays and paths in core results → JSON (NaN/inf become null)."""
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _finite(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def write_job(run_dir: str | Path, task: str, ct: Any, mask: Any, **params: Any) -> Path:
    """Write ``ct.nrrd``, ``mask.nrrd`` and ``job.json`` for ``task`` into ``run_dir``.

    ``ct`` and ``mask`` are :class:`~mediastinal_ai.volume.Volume` objects on the same grid (the
    parent gets them from the nodes); ``params`` are the task's options (model name, CTC inputs,
    radiomics parameter file, ...), which must be JSON-serialisable.
    """
    from ..io import write_image

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    d = Path(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    write_image(ct, d / "ct.nrrd", compress=False)
    write_image(mask, d / "mask.nrrd", compress=False)
    job = {"task": task, "ct": "ct.nrrd", "mask": "mask.nrrd", "params": params}
    path = d / JOB_FILE
    path.write_text(json.dumps(job, default=_json_default, indent=1), encoding="utf-8")
    return path


def read_result(run_dir: str | Path) -> tuple[dict[str, Any], Any]:
    """``(result, gradcam Volume or None)`` a finished job left in ``run_dir``."""
    from ..io import read_image

    d = Path(run_dir)
    if not (d / RESULT_FILE).is_file():
        raise InputError(f"the background job finished without a result ({RESULT_FILE} missing)", d)
    result = json.loads((d / RESULT_FILE).read_text(encoding="utf-8"))
    cam = read_image(d / GRADCAM_FILE) if (d / GRADCAM_FILE).is_file() else None
    return result, cam


# ----------------------------------------------------------------------------- child side
def extract_all_features(ct: Any, mask: Any, params: Any = None, progress: ProgressCallback | None = None,
                         source: str | None = None) -> dict[str, float]:
    """Every pyradiomics feature of the parameter file, one image type (and LoG sigma) at a time.

    pyradiomics reports nothing while it runs, and the LoG + wavelet extraction of a large
    tumour takes minutes; running the image types one after the other gives a progress line
    after each. The features are the same as one call with all image types: pyradiomics
    computes each image type's features independently (shape features come from the mask
    and are identical in every call).
    """
    import copy

    from ..radiomics.extract import extract_features
    from ..radiomics.params import load_params

    p = load_params(params)
    parts: list[tuple[str, dict[str, Any]]] = []
    for image_type, options in (p.get("imageType") or {"Original": {}}).items():
        options = options or {}
        sigmas = options.get("sigma") if image_type == "LoG" else None
        if sigmas:
            parts += [(f"LoG sigma {s:g}", {"LoG": {**options, "sigma": [s]}}) for s in sigmas]
        else:
            parts.append((image_type, {image_type: options}))
    features: dict[str, float] = {}
    for i, (label, image_types) in enumerate(parts):
        report(progress, 0.02 + 0.96 * i / len(parts), f"radiomics features: {label} ({i + 1}/{len(parts)})")
        sub = copy.deepcopy(p)
        sub["imageType"] = image_types
        features.update(extract_features(ct, mask, sub, source=source))
    report(progress, 0.99, f"{len(features)} features")
    return features


def radiomics_warnings(card_packages: dict[str, str] | None) -> list[str]:
    """Warnings when the installed radiomics differs from the one a model was trained with.

    Features (and so the model's inputs) change between pyradiomics major versions; a minor
    difference is noted, a major one is flagged as not comparable.
    """
    from .dependencies import radiomics_version

    installed = radiomics_version()
    trained = None
    for name in ("pyradiomics-bhklab", "pyradiomics"):
        if card_packages and card_packages.get(name):
            trained = (name, card_packages[name])
            break
    if trained is None or installed is None:
        return []
    dist, version = installed
    if dist == trained[0] and version == trained[1]:
        return []
    major = version.split(".")[0], trained[1].split(".")[0]
    what = f"radiomics is {dist} {version}; the model was trained with {trained[0]} {trained[1]}"
    if major[0] != major[1]:
        return [f"{what}: a different major version computes different features, so this prediction "
                "is NOT comparable to the model's validation"]
    return [f"{what} (same major version)"]


def run_job(job: dict[str, Any], run_dir: Path, progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Run one job in this process and write its outputs; the result (also in job_result.json)."""
    from ..io import read_image, write_image

    task = job.get("task")
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; expected one of {TASKS}", run_dir / JOB_FILE)
    params = job.get("params") or {}
    report(progress, 0.0, "reading CT and mask")
    ct = read_image(run_dir / job["ct"])
    ct = ct.with_array(ct.array, units="HU")
    mask = read_image(run_dir / job["mask"])
    source = params.get("source")
    model = params.get("model") or None
    if task == "risk-cnn":
        from ..cnn import load_model, predict_risk
        from ..models import resolve

        report(progress, 0.05, "loading the CNN")
        m = load_model(resolve(model, task="risk-cnn"))
        report(progress, 0.2, "predicting (CNN + Grad-CAM)")
        result = predict_risk(ct, mask, m)
        cam = result.pop("gradcam")
        write_image(cam, run_dir / GRADCAM_FILE, compress=False)
    elif task == "fusion":
        from ..fusion import predict_fusion

        report(progress, 0.1, "predicting (CT + CTC fusion and CT-only)")
        result = predict_fusion(ct, mask, params.get("ctc"), params.get("age"), params.get("sex"),
                                params.get("lesion_site"), model=model, device=params.get("device", "cpu"))
    elif task == "radiomics-risk":
        from ..radiomics.model_io import load_model
        from ..radiomics.predict import check_card_params, predict_risk

        m = load_model(model)
        check_card_params(m)  # before minutes of extraction

        def extraction(fraction: float, message: str = "") -> None:  # 0..1 of the extraction → 2..90 %
            report(progress, 0.02 + 0.88 * fraction, message)

        feats = extract_all_features(ct, mask, m.params, progress=extraction, source=source)
        report(progress, 0.92, "predicting")
        result = predict_risk(ct, mask, model=m, source=source, features=feats)
        warnings = radiomics_warnings((m.card.extra or {}).get("packages"))
        if warnings:
            result["warnings"] = [*result.get("warnings", []), *warnings]
    else:  # radiomics-features
        from ..radiomics.extract import package_versions
        from ..radiomics.params import load_params, params_hash

        p = load_params(params.get("params"))
        feats = extract_all_features(ct, mask, p, progress=progress, source=source)
        result = {"features": feats, "params": p, "params_hash": params_hash(p), "packages": package_versions()}
    result = _finite(json.loads(json.dumps(result, default=_json_default)))
    (run_dir / RESULT_FILE).write_text(json.dumps(result, indent=1), encoding="utf-8")
    report(progress, 1.0, "done")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mediastinal_ai.mrml.worker",
                                     description="run one MediastinalAI Slicer job in a child process")
    parser.add_argument("--job", required=True, help="job.json written by write_job()")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    job_path = Path(args.job)

    def progress(fraction: float, message: str = "") -> None:
        print(process.format_progress_line(fraction, message), flush=True)

    try:
        job = json.loads(job_path.read_text(encoding="utf-8"))
        run_job(job, job_path.parent, progress)
    except MediastinalAIError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except (OSError, ValueError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover - run as a child process
    sys.exit(main())
