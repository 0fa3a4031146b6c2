"""LASSO figures the radiomics studies show: the coefficient path against log(alpha) and the
cross-validated error (mean ± SD over the folds) with the chosen alpha marked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def plot_lasso(selector: Any, feature_names: list[str] | None = None, *, synthetic: bool = False,
               max_labels: int = 10):
    """Two panels from a fitted :class:`~.selection.LassoSelector`: (a) coefficient path of the
    features ever non-zero on the CV grid, (b) CV mean squared error ± SD per alpha."""
    from ..evaluation.plots import _plt

    plt = _plt()
    if not hasattr(selector, "coef_path_"):
        raise ValueError("this LASSO step was fitted by an older version and kept no path")
    la = np.log10(selector.alphas_)
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = np.asarray(feature_names if feature_names is not None else
                       [f"x{i}" for i in range(int(selector.n_features_in_))], dtype=object)
    order = np.argsort(-np.abs(selector.coef_path_[:, -1] if selector.coef_path_.size else []))
    final = np.abs(selector.coef_[selector.path_features_]) if selector.coef_path_.size else np.zeros(0)
    top = set(np.argsort(-final)[:max_labels].tolist())
    for i in order:
        a1.plot(la, selector.coef_path_[i], lw=1.2 if i in top else 0.6,
                label=str(names[selector.path_features_[i]])[:40] if i in top else None)
    a1.axvline(np.log10(selector.alpha_), color="k", ls="--", lw=0.8)
    a1.set_xlabel("log10(alpha)")
    a1.set_ylabel("coefficient (standardised features)")
    a1.set_title(f"LASSO path ({len(selector.path_features_)} features ever non-zero)")
    if top:
        a1.legend(fontsize=6, loc="best")
    mse = selector.mse_path_
    mean, sd = mse.mean(axis=1), mse.std(axis=1, ddof=1) if mse.shape[1] > 1 else np.zeros(mse.shape[0])
    a2.errorbar(la, mean, yerr=sd, fmt="o-", ms=2.5, lw=0.8, elinewidth=0.6, capsize=1.5)
    a2.axvline(np.log10(selector.alpha_), color="k", ls="--", lw=0.8,
               label=f"chosen alpha {selector.alpha_:.3g} ({int(selector.support_.size)} features kept)")
    a2.set_xlabel("log10(alpha)")
    a2.set_ylabel(f"CV mean squared error ({mse.shape[1]}-fold, mean ± SD)")
    a2.set_title("LASSO cross-validation")
    a2.legend(fontsize=7)
    if synthetic:
        fig.suptitle("SYNTHETIC data — demo, not for clinical use", color="crimson", fontsize=9)
    fig.tight_layout()
    return fig


def write_lasso_plots(pipe: Any, out_stem: str | Path, synthetic: bool = False) -> list[Path]:
    """``<out_stem>.png/.svg`` for the LASSO step of a fitted radiomics pipeline."""
    from ..evaluation.plots import save_figure

    names = pipe.named_steps["stable"].get_feature_names_out()
    names = pipe.named_steps["decorrelate"].get_feature_names_out(names)
    return save_figure(plot_lasso(pipe.named_steps["lasso"], list(names), synthetic=synthetic), out_stem)
