"""Warnings for models saved with validation figures that say they barely work (issue 18):
a model whose best validation AUC is near chance, or a segmentation model with a tiny Dice,
is still saved (a user may want to inspect it) but its card, the log and the CLI say so."""

from __future__ import annotations

import logging
import math

log = logging.getLogger(__name__)

# Floors below which a saved model is flagged. AUC 0.6: barely above chance (0.5) for any
# cohort size the project handles; Dice 0.3: far below what a usable tumor segmentation gives.
FLOORS = {"auc": 0.6, "dice": 0.3}


def poor_metric_warning(metric: str, value: float | None, what: str = "validation", floor: float | None = None,
                        model: str = "") -> str | None:
    """A warning text when ``value`` of ``metric`` ("auc" or "dice") is below its floor (or not
    finite), else None. The text is also logged at WARNING level."""
    f = FLOORS[metric] if floor is None else float(floor)
    name = {"auc": "AUC", "dice": "Dice"}.get(metric, metric)
    who = f"model {model!r}" if model else "the model"
    if value is None or not math.isfinite(float(value)):
        msg = f"{who} was saved without a finite {what} {name}: its quality is unknown"
    elif float(value) < f:
        chance = " (chance is 0.5)" if metric == "auc" else ""
        msg = (f"{who} was saved with a poor {what} {name} of {float(value):.3f} (below {f:g}{chance}): "
               "do not rely on it; check labels, data and training length")
    else:
        return None
    log.warning(msg)
    return msg
