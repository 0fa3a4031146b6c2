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


def overlay_png(ct: Any, mask: Any, heat: Any, k: int, path: Path, title: str = "") -> None:
    """CT slice k (W400/L40) with the Grad-CAM map (jet, semi-transparent) and the tumor outline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..fileio import atomic_path

    img = np.clip((np.asarray(ct.array[k], np.float32) - (40 - 200)) / 400, 0, 1)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.imshow(img, cmap="gray", interpolation="nearest")
    ax.imshow(np.ma.masked_less_equal(heat.array[k], 0.05), cmap="jet", alpha=0.45, vmin=0, vmax=1)
    ax.contour(np.asarray(mask.array[k]) > 0, levels=[0.5], colors="white", linewidths=0.8)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


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
    overlay_png(ct, mask, heat, k, out / "gradcam.png",
                f"P(high risk) = {result['probability_high_risk']:.2f} ({result['group']}), slice {k}")
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
