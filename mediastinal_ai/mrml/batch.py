"""Headless batch through the MRML adapter: the same pipeline as ``mediastinal-ai run``, plus a
Slicer scene per case, so a batch result opens in Slicer as the interactive result would.

Inside Slicer (no window)::

    Slicer --no-main-window --python-script \\
        <extension>/lib/Slicer-X.Y/qt-scripted-modules/mediastinal_ai/mrml/batch.py -- \\
        --input cohort.csv --out results --steps segment,radiomics,cnn,fusion [--mrb]

With plain Python and ``slicer-core`` (how it is tested here)::

    python -m mediastinal_ai.mrml.batch --input cohort.csv --out results --steps segment

Arguments are those of ``mediastinal-ai run``; ``--mrb`` also writes a one-file ``.mrb`` bundle.
The scene is built inside the case's work folder by the ``scene`` step, so it is published
atomically with the other outputs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

if __name__ == "__main__" and not __package__:
    # Run by file path: Slicer's --python-script execs this file as ``__main__`` (CTK's
    # executeFile) with this folder inserted first on sys.path, and so does ``python batch.py``.
    # Then the relative imports below fail and this folder's radiomics.py hides pyradiomics
    # (its cnn.py, fusion.py, ... hide nothing today, but would). So: take this folder off
    # sys.path, put the folder holding the mediastinal_ai package first, and run the module
    # properly; the SystemExit of its ``__main__`` block ends this file too.
    import runpy

    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parents[1]))
    runpy.run_module("mediastinal_ai.mrml.batch", run_name="__main__", alter_sys=True)
    raise SystemExit(0)  # not reached: the module's __main__ block exits

from mediastinal_ai.batch.steps import STEPS, CaseContext, Step, register  # noqa: E402

PLUGIN = "mediastinal_ai.mrml.batch"


def build_scene(ctx: CaseContext) -> None:
    """CT, tumor segment, probability map and every result table of the case, saved as a scene."""
    import numpy as np

    from . import nodes

    scene = nodes.new_scene()
    ct_node = nodes.volume_to_node(scene, ctx.ct, name=ctx.spec.case_id, role="ct")
    seg_dir = ctx.workdir
    if (seg_dir / "probability.nrrd").is_file():
        try:
            from .segmentation import import_result

            import_result(scene, ct_node, seg_dir, threshold=ctx.params.get("threshold"))
        except ImportError:  # segmentation adapter not in this build: fall back to the plain mask
            if ctx.mask is not None:
                nodes.mask_to_segment(scene, ctx.mask, ct_node)
    elif ctx.mask is not None and np.asarray(ctx.mask.array).any():
        nodes.mask_to_segment(scene, ctx.mask, ct_node)
    elif ctx.spec.mask:  # no segmentation step: show the manifest's (reference) mask as the segment
        nodes.mask_to_segment(scene, ctx.tumor_mask(), ct_node,
                              name="Anterior mediastinal tumor (reference mask)")
    for result in sorted(ctx.workdir.glob("*result*.json")):
        try:
            data = json.loads(result.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        flat = {k: v for k, v in _flatten(data).items() if not isinstance(v, (list, dict))}
        nodes.records_to_table(scene, [flat], name=f"{ctx.spec.case_id} {result.stem}")
    if ctx.results:
        nodes.records_to_table(scene, [ctx.results], name=f"{ctx.spec.case_id} summary")
    scene_dir = ctx.workdir / "scene"
    scene_dir.mkdir(exist_ok=True)
    nodes.save_scene(scene, scene_dir / f"{ctx.spec.case_id}.mrml")
    ctx.outputs.add(f"scene/{ctx.spec.case_id}.mrml")
    if ctx.params.get("mrb"):
        nodes.save_scene(scene, ctx.path(f"{ctx.spec.case_id}.mrb"))


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k not in ("provenance", "produced_by"):
            out.update(_flatten(v, key + "."))
        elif not isinstance(v, dict):
            out[key] = v
    return out


if "scene" not in STEPS:
    register(Step("scene", build_scene, needs=("qc", "segment", "radiomics", "cnn", "fusion", "report"),
                  help="Slicer scene per case (CT, editable segment, probability, tables)"))


def main(argv: list[str] | None = None) -> int:
    from mediastinal_ai import cli

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    mrb = "--mrb" in argv
    argv = [a for a in argv if a != "--mrb"]
    # add the scene step; --workers defaults to 0 here: Slicer's Python is one process
    for i, a in enumerate(argv):
        if a == "--steps" and i + 1 < len(argv):
            argv[i + 1] = argv[i + 1] + ",scene"
    if "--steps" not in argv:
        argv += ["--steps", "segment,scene"]
    if "--workers" not in argv and "--scheduler" not in argv:
        argv += ["--workers", "0"]
    return cli.main(["run", *argv, "--plugin", PLUGIN, *(["--mrb"] if mrb else [])])


if __name__ == "__main__":
    code = main()
    import slicer

    app = getattr(slicer, "app", None)  # present only inside the Slicer application
    if app is not None:
        app.exit(code)
    sys.exit(code)
