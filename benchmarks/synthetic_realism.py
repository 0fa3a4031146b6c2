"""Realism of the SYNTHETIC generator against the real chest CTs: per-tissue HU distributions and
the noise power spectrum, before (generator v2 parameters) and after (the shipped v3 parameters).

    .venv/bin/python benchmarks/synthetic_realism.py --real-ct ../shared/data/real-ct \
        --json benchmarks/results/synthetic_realism.json --figure docs/figures/synthetic_realism_nps.png

Each real series is compared with a synthetic case generated at its own pixel size and slice
thickness (so noise and partial volume are sampled alike), measured with the same code
(:mod:`mediastinal_ai.synthetic.realism`): non-contrast synthetic against the four Lung-PET-CT-Dx
series, venous-phase synthetic against the two LIDC contrast slabs. The peer is the real CT itself;
the figures are distances (lower is closer), not timings. Patient A0001 (and LIDC-IDRI-0001) were
used to choose the v3 parameters; patient A0002 and LIDC-IDRI-0003 are reported as held out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAIRS = [  # real series, phase of the synthetic case, used for tuning?
    ("lung-pet-ct-dx/Lung_Dx-A0001_s1", "non_contrast", True),
    ("lung-pet-ct-dx/Lung_Dx-A0001_s2", "non_contrast", True),
    ("lung-pet-ct-dx/Lung_Dx-A0002_s3", "non_contrast", False),
    ("lung-pet-ct-dx/Lung_Dx-A0002_s4", "non_contrast", False),
    ("lidc-contrast-slabs/LIDC-IDRI-0001", "venous", True),
    ("lidc-contrast-slabs/LIDC-IDRI-0003", "venous", False),
]
TISSUES = ("lung", "fat", "soft_tissue", "mediastinum", "bone")


def main(argv: list[str] | None = None) -> int:
    from mediastinal_ai.io import read_ct
    from mediastinal_ai.synthetic.generator import FOV_MM, appearance_params
    from mediastinal_ai.synthetic.realism import (
        NPS_FREQ,
        V2_PARAMETERS,
        compare,
        generator_parameters,
        matched_synthetic,
        measure,
        resampled,
    )

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--real-ct", default=str(ROOT.parent / "shared" / "data" / "real-ct"))
    ap.add_argument("--seed", type=int, default=3, help="synthetic case seed (default 3)")
    ap.add_argument("--only", nargs="*", help="real series to use (default: all six)")
    ap.add_argument("--json", help="write all figures here")
    ap.add_argument("--figure", help="write an NPS figure (PNG) here (matched sampling)")
    ap.add_argument("--grid", nargs="+", choices=("matched", "coarse"), default=["matched", "coarse"],
                    help="matched: the synthetic case at the real series' own pixel and slice size; coarse: "
                         "both on the generator's default 128² grid (2.73 mm), the real CT resampled")
    args = ap.parse_args(argv)
    root = Path(args.real_ct)
    if not root.is_dir():
        print(f"no real CT folder at {root}", file=sys.stderr)
        return 2
    rows, curves = [], {}
    cache: dict[tuple, object] = {}
    t0 = time.time()
    sharp = {"noise": {"sharp_kernel": dict(appearance_params()["noise"]["sharp_kernel"], p=1.0)}}
    for grid in args.grid:
        for rel, phase, tuned in PAIRS:
            if args.only and rel not in args.only:
                continue
            real_ct = read_ct(root / rel)
            if grid == "coarse":  # the generator's default grid; the real CT resampled as segmentation does
                real_ct = resampled(real_ct, FOV_MM / 128)
            real = measure(real_ct, rel)
            curves.setdefault(grid, {})[rel] = {"real": real.nps["on_grid"]}
            kernel = read_kernel(root / rel)
            variants = [("v2", V2_PARAMETERS), ("v3", {})]
            if real.nps["n_rois"] and real.nps["f_peak"] > 0.3 or kernel in ("L", "B70f"):
                variants.append(("v3 sharp-kernel option", sharp))
            for label, over in variants:
                px = round(float(np.mean(real_ct.spacing_xyz[:2])), 3)
                key = (grid, label, phase, px, real_ct.spacing_xyz[2])
                if key not in cache:
                    with generator_parameters(over):
                        syn_ct = matched_synthetic(real_ct, args.seed, phase)
                    cache[key] = measure(syn_ct, f"synthetic {label} {phase} seed {args.seed}")
                syn = cache[key]
                d = compare(real, syn)
                curves[grid][rel][label] = syn.nps["on_grid"]
                rows.append({"grid": grid, "real": rel, "kernel": kernel, "phase": phase, "tuned_on": tuned,
                             "generator": label, "distances": d, "real_figures": real.summary(),
                             "synthetic_figures": syn.summary()})
                print(f"[{grid}] {rel} [{phase}] {label}: " + ", ".join(
                    f"{t} W1 {d['tissues'][t]['wasserstein_hu']}" for t in TISSUES)
                    + f"; NPS SD ratio {d['nps']['sd_ratio']}, f_mean diff {d['nps']['f_mean_diff']}, "
                      f"shape L1 {d['nps']['shape_l1']}  ({time.time() - t0:.0f} s)", flush=True)
    for grid in args.grid:
        print(f"\n{grid} grid\n")
        print(table([r for r in rows if r["grid"] == grid]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"seed": args.seed, "rows": rows, "nps_freq_per_mm": NPS_FREQ.tolist()},
                                              indent=1, default=_plain), encoding="utf-8")
    if args.figure and "matched" in curves:
        figure(curves["matched"], rows, Path(args.figure))
    return 0


def read_kernel(path: Path) -> str:
    """The series' reconstruction kernel (DICOM ConvolutionKernel), '' when unknown."""
    try:
        import pydicom

        f = next(p for p in sorted(path.iterdir()) if p.is_file() and p.suffix.lower() in (".dcm", ""))
        k = pydicom.dcmread(f, stop_before_pixels=True).get("ConvolutionKernel", "")
    except (StopIteration, OSError, ValueError, NotADirectoryError):
        return ""
    return str(k) if isinstance(k, str) else "/".join(str(x) for x in k)


def _plain(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o))


def table(rows: list[dict]) -> str:
    """Markdown table: W1 per tissue and NPS figures, v2 → v3 per real series."""
    head = ("| real series (kernel) | phase | " + " | ".join(f"W1 {t}" for t in TISSUES)
            + " | NPS SD real / syn | NPS f̄ real / syn | NPS shape L1 | sharp-kernel option |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    by = {}
    for r in rows:
        by.setdefault(r["real"], {})[r["generator"]] = r
    for rel, g in by.items():
        if "v2" not in g or "v3" not in g:
            continue
        a, b = g["v2"]["distances"], g["v3"]["distances"]
        rn = g["v3"]["real_figures"]["nps"]
        held = "" if g["v3"]["tuned_on"] else " *held out*"
        cells = [f"{rel.split('/')[-1]} ({g['v3']['kernel']}){held}", g["v3"]["phase"]]
        cells += [f"{a['tissues'][t]['wasserstein_hu']} → {b['tissues'][t]['wasserstein_hu']}" for t in TISSUES]
        s2, s3 = g["v2"]["synthetic_figures"]["nps"], g["v3"]["synthetic_figures"]["nps"]
        cells += [f"{rn['sd_hu']} / {s2['sd_hu']} → {s3['sd_hu']}", f"{rn['f_mean']} / {s2['f_mean']} → {s3['f_mean']}",
                  f"{a['nps']['shape_l1']} → {b['nps']['shape_l1']}"]
        sk = g.get("v3 sharp-kernel option")
        cells.append(f"SD {sk['synthetic_figures']['nps']['sd_hu']}, L1 {sk['distances']['nps']['shape_l1']}, "
                     f"W1 fat {sk['distances']['tissues']['fat']['wasserstein_hu']}" if sk else "")
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def figure(curves: dict, rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mediastinal_ai.synthetic.realism import NPS_FREQ

    styles = {"real": ("k-", "real"), "v2": ("r--", "synthetic v2"), "v3": ("b-", "synthetic v3"),
              "v3 sharp-kernel option": ("g:", "v3 sharp-kernel option")}
    n = len(curves)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.0), squeeze=False)
    for ax, (rel, c) in zip(axes[0], curves.items(), strict=True):
        for label, (style, name) in styles.items():
            if label in c:
                ax.plot(NPS_FREQ, c[label], style, label=name)
        ax.set_title(rel.split("/")[-1], fontsize=8)
        ax.set_xlabel("cycles/mm", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("NPS (HU² mm²)", fontsize=8)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Noise power spectrum: real CT vs SYNTHETIC (same sampling, same estimator)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)


if __name__ == "__main__":
    raise SystemExit(main())
