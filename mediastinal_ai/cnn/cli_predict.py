"""``mediastinal-ai predict-cnn``: WHO risk (low/high) from CT + tumor mask, with a Grad-CAM map."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ct", required=True, help="CT (DICOM folder, .nii/.nii.gz, .nrrd, .mha)")
    p.add_argument("--mask", required=True, help="tumor mask on the CT grid")
    p.add_argument("--model", default=None, help="risk-cnn model name, card or folder (default: demo-risk-cnn)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--out", required=True,
                   help="case folder: cnn_result.json, gradcam.nrrd, gradcam.png (beside segment's outputs)")


def overlay_png(ct: Any, mask: Any, heat: Any, k: int, path: Path, title: str = "", *, model: str = "",
                mark: str | None = None) -> None:
    """CT slice k (W400/L40) with the Grad-CAM map (jet, semi-transparent), the tumor outline,
    a colour bar, the slice's orientation letters, the model's name and the SYNTHETIC/demo mark."""
    from ..evaluation.plots import plot_gradcam, save_figure

    fig = plot_gradcam(np.asarray(ct.array[k], np.float32), np.asarray(heat.array[k], np.float32),
                       np.asarray(mask.array[k]) > 0, direction=ct.direction,
                       spacing_xy=(float(ct.spacing_xyz[0]), float(ct.spacing_xyz[1])), model=model, title=title,
                       mark=mark)
    save_figure(fig, Path(path).with_suffix(""), formats=("png",), dpi=100)


def run(args: argparse.Namespace) -> int:
    from ..fileio import atomic_write_json, provenance, source_provenance
    from ..io import read_ct, read_mask, write_image
    from ..models import resolve
    from ..segmentation.model_io import pick_device
    from .model import load_model, predict_risk

    model = load_model(resolve(args.model, task="risk-cnn"), device=pick_device(args.device))
    ct = read_ct(args.ct)
    mask = read_mask(args.mask, reference=ct)
    result = predict_risk(ct, mask, model)
    heat = result.pop("gradcam")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_image(heat, out / "gradcam.nrrd")
    k = result["roi"]["slice_index"]
    from ..evaluation.plots import mark_text

    overlay_png(ct, mask, heat, k, out / "gradcam.png",
                f"P(high risk) = {result['probability_high_risk']:.2f} ({result['group']}), slice {k}",
                model=model.card.name, mark=mark_text(bool(ct.metadata.get("synthetic")), bool(model.card.demo)))
    result["source"] = {"ct": str(args.ct), "mask": str(args.mask)}
    result["outputs"] = {"gradcam": "gradcam.nrrd", "overlay": "gradcam.png"}
    result["provenance"] = provenance(model=model.card.name, model_sha256=model.card.sha256,
                                      model_version=model.card.version, source=source_provenance(ct, args.ct),
                                      mask=source_provenance(path=args.mask))
    from ..case_files import result_name

    atomic_write_json(out / result_name("risk-cnn"), result)
    print(f"P(high risk) = {result['probability_high_risk']:.3f} → {result['group']} ({result['model']})")
    for w in result.get("warnings", []):
        print(f"warning: {w}")
    print(f"wrote {out / result_name('risk-cnn')}, gradcam.nrrd, gradcam.png")
    return 0
