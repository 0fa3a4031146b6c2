"""Small pure-Python helpers the Slicer modules use to show results (no Qt, no slicer):
model lists for the combo boxes, probabilities as text, where to jump in the slice views.

Kept here (not in the module files) so both modules share one copy and the tests can run
them without the Slicer application.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)


def model_names(task: str) -> list[str]:
    """Installed model names for a task, the task's default model first; the default's name
    alone when nothing is installed (choosing it then gives the registry's clear error)."""
    from ..models.registry import DEFAULT_MODELS, list_models

    try:
        names = [card.name for card, _ in list_models(task)]
    except Exception:  # noqa: BLE001 - a broken user models folder must not break the GUI
        log.exception("listing %s models failed", task)
        names = []
    default = DEFAULT_MODELS.get(task)
    if default in names:
        names.remove(default)
        names.insert(0, default)
    return names or ([default] if default else [])


def load_json(text: str | None) -> Any:
    """JSON kept in a parameter node string, or None when empty/invalid."""
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def first(d: Any, *keys: str) -> Any:
    """The value of the first key present (and not None) in ``d``."""
    for key in keys:
        if isinstance(d, dict) and d.get(key) is not None:
            return d[key]
    return None


def format_probability(value: Any) -> str:
    """0.734 → '73.4 %'; anything not a number → '-'."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return "-"
    return "-" if x != x else f"{100.0 * x:.1f} %"


def model_label(result: dict[str, Any] | None) -> str:
    model = first(result or {}, "model", "model_label", "model_name")
    if isinstance(model, dict):
        model = model.get("label") or model.get("name")
    return str(model) if model else "-"


def risk_summary(result: dict[str, Any] | None) -> dict[str, str]:
    """Probability of high risk, predicted group and model of a risk result (radiomics or CNN)
    as display text."""
    result = result or {}
    return {
        "probability": format_probability(
            first(result, "probability_high_risk", "p_high_risk", "probability")
        ),
        "group": str(first(result, "group", "risk_group", "predicted_group") or "-"),
        "model": model_label(result),
    }


def find_ras(result: Any) -> list[float] | None:
    """A position to jump the slice views to: the first 3-vector under a key ending in ``_ras``
    anywhere in the result, else one ending in ``_lps`` converted to RAS (x, y negated)."""
    ras = _find_vector(result, "_ras")
    if ras is not None:
        return ras
    lps = _find_vector(result, "_lps")
    return None if lps is None else [-lps[0], -lps[1], lps[2]]


def _find_vector(obj: Any, suffix: str) -> list[float] | None:
    if not isinstance(obj, dict):
        return None
    for key, value in obj.items():
        if str(key).endswith(suffix) and _is_vector3(value):
            return [float(v) for v in value]
    for value in obj.values():
        found = _find_vector(value, suffix)
        if found is not None:
            return found
    return None


def _is_vector3(value: Any) -> bool:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 3:
        return False
    try:
        [float(v) for v in value]
    except (TypeError, ValueError):
        return False
    return True
