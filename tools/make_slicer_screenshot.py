"""Render docs/images/MediastinalAI-screenshot.png: the extension's result on a synthetic case.

This is NOT a capture of the Slicer window (the application is not available where this project
is built); the picture says so in its banner. It shows what the MediastinalAI module puts in the
scene, computed by the same code the module runs: the demo segmentation model on a synthetic
chest CT (``mediastinal_ai.synthetic.generate_case(seed=1)``), the tumor segment outlined on the
axial/coronal/sagittal slices through it in the segment's colour, the CNN's Grad-CAM overlay, and
the numbers the module's panels show. Demo models, synthetic data: not for clinical use.

    python tools/make_slicer_screenshot.py [--out docs/images/MediastinalAI-screenshot.png]

Replace it with a real capture of Slicer once one is taken (docs/slicer.md, "Extensions Index").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _window(a: np.ndarray, level: float = 40.0, width: float = 400.0) -> np.ndarray:
    return np.clip((a - (level - width / 2)) / width, 0.0, 1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "MediastinalAI-screenshot.png")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    from mediastinal_ai import DEMO_DISCLAIMER
    from mediastinal_ai.cnn import load_model as load_cnn
    from mediastinal_ai.cnn import predict_risk
    from mediastinal_ai.evaluation.plots import _plt, save_figure
    from mediastinal_ai.models import resolve
    from mediastinal_ai.mrml.terminology import TUMOR_COLOR
    from mediastinal_ai.segmentation import load_model, segment_volume
    from mediastinal_ai.synthetic import generate_case

    case = generate_case(seed=args.seed)
    seg_model = load_model(resolve(None, task="segmentation"), device="cpu")
    seg = segment_volume(case.ct, seg_model, threshold=0.5)
    mask = np.asarray(seg.mask.array) > 0
    if not mask.any():
        raise SystemExit(f"the demo model found no lesion in synthetic case {args.seed}: pick another --seed")
    cnn = predict_risk(case.ct, seg.mask, load_cnn(resolve(None, task="risk-cnn")))
    cam = np.asarray(cnn.pop("gradcam").array, dtype=float)

    ct = np.asarray(case.ct.array, dtype=float)
    k, j, i = (int(round(c)) for c in np.argwhere(mask).mean(axis=0))
    sz, sy, sx = case.ct.spacing_xyz[2], case.ct.spacing_xyz[1], case.ct.spacing_xyz[0]
    views = [  # (title, CT slice, mask slice, cam slice, aspect) as Slicer shows them
        ("Axial (red)", ct[k], mask[k], cam[k], sy / sx),
        ("Coronal (green)", ct[:, j, :][::-1], mask[:, j, :][::-1], cam[:, j, :][::-1], sz / sx),
        ("Sagittal (yellow)", ct[:, :, i][::-1], mask[:, :, i][::-1], cam[:, :, i][::-1], sz / sy),
    ]
    plt = _plt()
    fig = plt.figure(figsize=(12, 7.2), facecolor="#2b2b2b")
    fig.suptitle(
        "MediastinalAI result, rendered outside Slicer by tools/make_slicer_screenshot.py "
        "(not a capture of the Slicer window)\n"
        f"SYNTHETIC case (seed {args.seed}); models: {DEMO_DISCLAIMER}",
        color="#ffcc66", fontsize=10.5)
    color = tuple(TUMOR_COLOR)
    for n, (title, img, m, c, aspect) in enumerate(views):
        ax = fig.add_subplot(2, 3, n + 1 if n < 2 else 4)
        ax.imshow(_window(img), cmap="gray", aspect=aspect, interpolation="nearest")
        if c.max() > 0:
            ax.imshow(np.ma.masked_less(c / c.max(), 0.15), cmap="jet", alpha=0.35, aspect=aspect, vmin=0, vmax=1)
        if m.any():
            ax.contour(m.astype(float), levels=[0.5], colors=[color], linewidths=1.5)
        ax.set_title(title, color="white", fontsize=10)
        ax.axis("off")
    lesion = max(seg.lesions, key=lambda r: r["volume_ml"]) if seg.lesions else {}
    lines = [
        "Segmentation (3D U-Net, editable segment)",
        f"  model: {seg.model_label}",
        f"  lesions: {len(seg.lesions)}; largest {lesion.get('volume_ml', float('nan')):.1f} mL, "
        f"{lesion.get('max_diameter_mm', float('nan')):.0f} mm",
        "  threshold: 0.50 (slider re-thresholds the stored probability map)",
        "",
        "Risk (2D CNN + Grad-CAM, overlay in the slice views)",
        f"  P(high WHO risk): {100 * cnn['probability_high_risk']:.1f} %  -> group {cnn['group']}",
        f"  model: {cnn['model']}",
        "",
        f"Reference (synthetic ground truth): {case.lesion_class}, WHO risk {case.who_risk or '-'}",
    ]
    ax = fig.add_subplot(2, 3, (5, 6))
    ax.axis("off")
    ax.text(0.0, 1.0, "\n".join(lines), va="top", ha="left", family="monospace", fontsize=9.5, color="white",
            transform=ax.transAxes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, args.out.with_suffix(""), formats=("png",), dpi=90)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
