"""The pipeline definition: named steps that each read and enrich a :class:`CaseContext`.

The same steps serve the CLI batch, Dask workers and the headless Slicer script. Models are
loaded once per worker process (:func:`load_model_cached`), not once per case.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, MediastinalAIError
from ..volume import Volume
from .discover import CaseSpec

log = logging.getLogger(__name__)


@dataclass
class CaseContext:
    spec: CaseSpec
    workdir: Path
    params: dict[str, Any]
    results: dict[str, Any] = field(default_factory=dict)  # flat values for the cohort table
    outputs: set[str] = field(default_factory=set)
    mask: Volume | None = None  # the tumor mask: from 'segment', else the manifest's mask
    _ct: Volume | None = None
    segmented: bool = False  # 'segment' ran in this case: ``mask`` is its prediction (None: no lesion)
    _manifest_mask: Volume | None = None

    @property
    def ct(self) -> Volume:
        if self._ct is None:
            from ..io import read_ct

            self._ct = read_ct(self.spec.ct, series_uid=self.spec.series_uid)
        return self._ct

    def manifest_mask(self) -> Volume | None:
        """The manifest's ``mask`` on the CT grid (read once), or None when the case has none."""
        if self._manifest_mask is None and self.spec.mask:
            from ..io import read_mask

            self._manifest_mask = read_mask(self.spec.mask, reference=self.ct)
        return self._manifest_mask

    def tumor_mask(self) -> Volume:
        """The mask the risk steps (radiomics, cnn, fusion) use, as ``params["risk_mask"]`` says
        (:data:`RISK_MASK_CHOICES`): ``predicted`` = the 'segment' step's mask, ``manifest`` = the
        manifest's ``mask`` column, ``auto`` (default) = predicted when 'segment' ran, else manifest.
        The source goes into the cohort table as ``risk_mask``."""
        mode = self.params.get("risk_mask") or "auto"
        if mode == "manifest" or (mode == "auto" and not self.segmented):
            m = self.manifest_mask()
            if m is None:
                raise InputError("no tumor mask: add the 'segment' step or give a 'mask' column in the manifest"
                                 if mode == "auto" else "--risk-mask manifest: this case has no 'mask' in the manifest")
            if not self.segmented:
                self.mask = m  # what the report and the scene show
            source, kind = self.spec.mask, "manifest"
        else:
            if not self.segmented:
                raise InputError("--risk-mask predicted needs the 'segment' step before the risk steps")
            m = self.mask
            if m is None:
                raise InputError("the segmentation found no tumor: no mask for the risk steps")
            source, kind = "the segmentation", "predicted"
        if not m.array.any():
            raise InputError("the tumor mask is empty (no lesion found or empty mask file)", source)
        self.results["risk_mask"] = kind
        return m

    def model(self, task: str) -> Any:
        from ..models import resolve

        return load_model_cached(task, resolve(self.params.get("models", {}).get(task), task=task))

    def path(self, name: str) -> Path:
        self.outputs.add(name)
        return self.workdir / name

    def write_json(self, name: str, obj: Any) -> None:
        from ..fileio import atomic_write_json

        atomic_write_json(self.path(name), obj)

    def write_image(self, name: str, vol: Volume) -> None:
        from ..io import write_image

        write_image(vol, self.path(name))


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[CaseContext], None]
    task: str | None = None  # model task from the registry, if the step uses a model
    needs: tuple[str, ...] = ()  # steps that must come first when both are requested
    help: str = ""


# ---------------------------------------------------------------------------- model cache
_MODEL_LOADERS: dict[str, str] = {
    # task -> "module:function(resolved_model) -> loaded model"
    "segmentation": "mediastinal_ai.segmentation:load_model",
    "risk-radiomics": "mediastinal_ai.radiomics:load_model",
    "risk-cnn": "mediastinal_ai.cnn:load_model",
    "fusion": "mediastinal_ai.fusion:load_model",
}
_MODEL_CACHE: dict[tuple[str, str], Any] = {}


def load_model_cached(task: str, resolved: Any) -> Any:
    key = (task, resolved.card.sha256)
    if key not in _MODEL_CACHE:
        mod, fn = _MODEL_LOADERS[task].split(":")
        try:
            loader = getattr(importlib.import_module(mod), fn)
        except (ImportError, AttributeError) as e:
            raise MediastinalAIError(f"the {task} model cannot be loaded in this build ({e})") from e
        log.info("loading %s model %s (once per worker)", task, resolved.label)
        _MODEL_CACHE[key] = loader(resolved)
    return _MODEL_CACHE[key]


def resolve_models(steps: list[str], params: dict[str, Any]) -> dict[str, Any]:
    """Resolve and verify every model the steps need, before any case runs."""
    from ..models import resolve

    out = {}
    for s in steps:
        task = STEPS[s].task
        if task and task not in out:
            out[task] = resolve(params.get("models", {}).get(task), task=task)
    return out


# ---------------------------------------------------------------------------- steps
def _qc(ctx: CaseContext) -> None:
    """Input quality check: the CT reads as a CT; a given mask fits it and is plausible; given
    CTC/clinical values are valid. Geometry and HU range go to the cohort table."""
    import numpy as np

    ct = ctx.ct
    a = ct.array
    ctx.results.update(
        shape_zyx="x".join(map(str, ct.shape)),
        spacing_xyz="x".join(f"{s:.3g}" for s in ct.spacing_xyz),
        hu_p1=float(np.percentile(a, 1)), hu_p99=float(np.percentile(a, 99)),
    )
    if ctx.spec.mask:
        m = ctx.manifest_mask()
        if m is None or not m.array.any():
            raise InputError("the tumor mask is empty (empty mask file)", ctx.spec.mask)
        frac = float(np.count_nonzero(m.array)) / m.array.size
        if frac > 0.5:
            raise InputError(f"the tumor mask covers {frac:.0%} of the image: not a tumor outline", ctx.spec.mask)
        ctx.results["mask_volume_ml"] = round(np.count_nonzero(m.array) * ct.voxel_volume_mm3 / 1000, 2)
    clinical = ctx.spec.clinical
    if clinical:
        from ..fusion.schema import validate_inputs  # pure Python: no torch

        if clinical.get("ctc") is not None:
            validate_inputs(clinical.get("ctc"), clinical.get("age"), clinical.get("sex"), clinical.get("lesion_site"))


STEPS: dict[str, Step] = {}


def register(step: Step) -> None:
    STEPS[step.name] = step


register(Step("qc", _qc, help="read the CT, check it, record geometry and HU range"))


def _lazy(module: str, fn: str) -> Callable[[CaseContext], None]:
    def run(ctx: CaseContext) -> None:
        try:
            f = getattr(importlib.import_module(module), fn)
        except (ImportError, AttributeError) as e:
            raise MediastinalAIError(f"step not available in this build ({e})") from e
        f(ctx)

    return run


# Task steps live beside the tasks (mediastinal_ai/batch/task_steps.py) and are imported lazily.
register(Step("segment", _lazy("mediastinal_ai.batch.task_steps", "segment"), task="segmentation",
              help="3D U-Net tumor segmentation: mask, probability map, lesion table, DICOM SEG"))
register(Step("radiomics", _lazy("mediastinal_ai.batch.task_steps", "radiomics"), task="risk-radiomics",
              needs=("segment",), help="WHO risk from radiomics + SVM"))
register(Step("cnn", _lazy("mediastinal_ai.batch.task_steps", "cnn"), task="risk-cnn", needs=("segment",),
              help="WHO risk from the 2D CNN, with Grad-CAM"))
register(Step("fusion", _lazy("mediastinal_ai.batch.task_steps", "fusion"), task="fusion", needs=("segment",),
              help="benign/malignant and lesion class from CT + CTC"))
register(Step("dicom-sr", _lazy("mediastinal_ai.batch.task_steps", "dicom_sr"),
              needs=("segment", "radiomics", "cnn", "fusion"),
              help="DICOM SR (TID 1500): lesion measurements and the predictions, referencing the DICOM SEG"))
register(Step("report", _lazy("mediastinal_ai.batch.task_steps", "report"),
              needs=("qc", "segment", "radiomics", "cnn", "fusion"), help="per-case HTML/PDF report"))


RISK_STEPS = ("radiomics", "cnn", "fusion")
RISK_MASK_CHOICES = ("auto", "manifest", "predicted")


def risk_mask_plan(steps: list[str], risk_mask: str | None = None) -> str | None:
    """Which mask the risk steps of this run use, in words (None when no risk step runs);
    refuses ``predicted`` without the 'segment' step before any case runs."""
    mode = risk_mask or "auto"
    if mode not in RISK_MASK_CHOICES:
        raise InputError(f"--risk-mask must be one of {', '.join(RISK_MASK_CHOICES)}, got {mode!r}")
    risk = [s for s in steps if s in RISK_STEPS]
    if not risk:
        return None
    if mode == "predicted" and "segment" not in steps:
        raise InputError("--risk-mask predicted needs the 'segment' step (add it to --steps)")
    predicted = mode == "predicted" or (mode == "auto" and "segment" in steps)
    where = ("the mask predicted by the 'segment' step of this run" if predicted
             else "the manifest's 'mask' column (reader 1)")
    note = " (--risk-mask manifest to use the manifest's masks instead)" if predicted and mode == "auto" else ""
    if mode == "manifest" and "segment" in steps:
        note = " ('segment' still runs; its mask is written but not used by these steps)"
    return f"{', '.join(risk)} use {where}{note}"


def order_steps(names: list[str]) -> list[str]:
    """Validate names and put requested steps in dependency order (qc always first)."""
    unknown = [n for n in names if n not in STEPS]
    if unknown:
        raise InputError(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    requested = set(names) | {"qc"}
    ordered: list[str] = []

    def visit(n: str) -> None:
        if n in ordered:
            return
        for d in STEPS[n].needs:
            if d in requested:
                visit(d)
        ordered.append(n)

    for n in ["qc", *names]:
        visit(n)
    return ordered
