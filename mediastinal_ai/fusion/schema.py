"""Input schema of the CT + CTC fusion model: validation and encoding of the tabular inputs.

Pure Python + numpy (no torch): the Slicer CTC panel, the CLI, the batch step and training all
call :func:`validate_inputs`, so a value is refused or warned about with the same words
everywhere.

Inputs
======
``ctc``          circulating tumor cell level in the model's unit (``input_schema.units.ctc``:
                 :data:`~mediastinal_ai.taxonomy.CTC_UNIT`, the label the fusion study's Table 2
                 prints, unless the site that trained the model set its assay's unit). **Required**.
``age``          years, optional.
``sex``          one of :data:`~mediastinal_ai.taxonomy.SEXES`, optional.
``lesion_site``  one of :data:`~mediastinal_ai.taxonomy.LESION_SITES`, optional.

Validation rules
================
* CTC must be a finite, non-negative number. Non-numeric text, booleans, NaN/inf and negative
  values are refused (:class:`~mediastinal_ai.errors.InputError`).
* CTC above :data:`CTC_HARD_MAX` (1000 in the model's unit) is refused as absurd. Reason: the
  CTC levels of the fusion study's Table 2 lie in the single to low double digits (class means
  9.9–21.7, SDs up to 7.8), as do folate-receptor CTC counts per 3 mL reported for thoracic
  lesions; a value of more than 1000 is two orders of magnitude beyond anything plausible and is
  almost surely a unit or typing error (e.g. cells per mL × 1000, a missing decimal point).
* A CTC (or age) that is valid but outside the range the model saw in training (stored in the
  model card's ``input_schema.ranges``) is **accepted with a warning**: the prediction is an
  extrapolation. Categories never seen in training are accepted with a warning, too.
* age must be a finite number in [0, 120] years. sex and lesion_site must be one of the
  taxonomy values (case-insensitive; ``female``/``male`` are accepted for F/M).
* Missing optional inputs (``None`` or empty text) are explicit: the encoder sets the
  input's *missing-indicator* feature to 1 and its value features to 0. The network was
  trained with these indicators (and with random missing-input dropout), so "missing" is a
  state it knows, never a silent zero. A note says which inputs were missing.

Encoding (feature order is part of the schema; a model whose card lists other features is refused)
====================================================================================================
``ctc_z``                       z-score of log1p(ctc) with the training mean/std
``age_z``, ``age_missing``      z-score of age with the training mean/std; indicator
``sex_F``, ``sex_M``, ``sex_missing``                              one-hot + indicator
``site_anterior``, ``site_middle``, ``site_posterior``, ``site_missing``   one-hot + indicator
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError, ModelError
from ..taxonomy import CTC_UNIT, LESION_SITES, SEXES

SCHEMA_VERSION = 1
CTC_HARD_MAX = 1000.0  # in the model's CTC unit; see the module docstring for the reason
AGE_MIN, AGE_MAX = 0.0, 120.0
OPTIONAL_INPUTS = ("age", "sex", "lesion_site")
ALL_INPUTS = ("ctc", *OPTIONAL_INPUTS)
_SEX_ALIASES = {"f": "F", "female": "F", "w": "F", "m": "M", "male": "M"}


# ---------------------------------------------------------------------------- validation
@dataclass
class ValidatedInputs:
    """Clean tabular inputs plus what the user should be told about them."""

    ctc: float
    age: float | None = None
    sex: str | None = None
    lesion_site: str | None = None
    ctc_unit: str = CTC_UNIT
    warnings: list[str] = field(default_factory=list)  # shown prominently (out of range, unseen)
    notes: list[str] = field(default_factory=list)  # informational (missing optional inputs)

    def as_dict(self) -> dict[str, Any]:
        return {"ctc": self.ctc, "ctc_unit": self.ctc_unit, "age": self.age, "sex": self.sex,
                "lesion_site": self.lesion_site}


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, str) and v.strip() == "")


_PLAIN_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")


def _parse_number(v: Any, what: str, unit: str) -> float:
    if isinstance(v, bool):
        raise InputError(f"{what} must be a number{unit}, got a yes/no value ({v!r})")
    if isinstance(v, (int, float, np.integer, np.floating)):
        x = float(v)
    elif isinstance(v, str):
        s = v.strip()
        try:
            # float() also takes "1_000" and full-width digits; a table value must be plain ASCII
            if not _PLAIN_NUMBER.match(s) and s.lower().lstrip("+-") not in ("nan", "inf", "infinity"):
                raise ValueError(s)
            x = float(s)
        except ValueError:
            hint = " (use a dot as decimal separator)" if "," in s else ""
            raise InputError(f"{what} must be a number{unit}, got {v!r}{hint}") from None
        if s.lower().lstrip("+-") in ("nan", "inf", "infinity"):
            raise InputError(f"{what} must be a finite number{unit}, got {v!r}")
    else:
        raise InputError(f"{what} must be a number{unit}, got {type(v).__name__} {v!r}")
    if not math.isfinite(x):
        raise InputError(f"{what} must be a finite number{unit}, got {v!r}")
    return x


def validate_ctc(value: Any, unit: str = CTC_UNIT) -> float:
    """CTC level → float, or :class:`InputError` with a message the user can act on."""
    if _is_missing(value):
        raise InputError(f"the CTC level is required (a number in {unit})")
    x = _parse_number(value, "CTC level", f" in {unit}")
    if x < 0 or math.copysign(1.0, x) < 0:  # "-0" too: a sign typed on a count is a data-entry error
        raise InputError(f"CTC level cannot be negative (got {value!r})")
    if x > CTC_HARD_MAX:
        raise InputError(
            f"CTC level {x:g} {unit} is not plausible (limit {CTC_HARD_MAX:g} {unit}); "
            f"check the unit — the model expects {unit}")
    return x


def validate_age(value: Any) -> float | None:
    if _is_missing(value):
        return None
    x = _parse_number(value, "age", " in years")
    if not AGE_MIN <= x <= AGE_MAX:
        raise InputError(f"age must be between {AGE_MIN:g} and {AGE_MAX:g} years, got {x:g}")
    return x


def validate_sex(value: Any) -> str | None:
    if _is_missing(value):
        return None
    if isinstance(value, str):
        s = value.strip()
        if s in SEXES:
            return s
        if s.lower() in _SEX_ALIASES and _SEX_ALIASES[s.lower()] in SEXES:
            return _SEX_ALIASES[s.lower()]
    raise InputError(f"sex must be one of {', '.join(SEXES)} (or empty when unknown), got {value!r}")


def validate_site(value: Any) -> str | None:
    if _is_missing(value):
        return None
    if isinstance(value, str) and value.strip().lower() in LESION_SITES:
        return value.strip().lower()
    raise InputError(f"lesion site must be one of {', '.join(LESION_SITES)} (or empty when unknown), got {value!r}")


def schema_unit(schema: dict[str, Any] | None) -> str:
    """The CTC unit a model's input schema declares (the default label without a schema)."""
    u = ((schema or {}).get("units") or {}).get("ctc")
    return str(u) if isinstance(u, str) and u.strip() else CTC_UNIT


def validate_inputs(ctc: Any, age: Any = None, sex: Any = None, lesion_site: Any = None, *,
                    schema: dict[str, Any] | None = None) -> ValidatedInputs:
    """Validate the CTC panel's inputs (numbers or text as typed).

    ``schema`` is a fusion model card's ``input_schema``; with it, values outside the ranges
    seen in training give warnings, and inputs the model does not use give a note.
    Raises :class:`InputError` (one message naming the field) for values that are refused.
    """
    unit = schema_unit(schema)
    v = ValidatedInputs(ctc=validate_ctc(ctc, unit), age=validate_age(age), sex=validate_sex(sex),
                        lesion_site=validate_site(lesion_site), ctc_unit=unit)
    used = tuple(schema.get("inputs", ALL_INPUTS)) if schema else ALL_INPUTS
    for name in OPTIONAL_INPUTS:
        val = getattr(v, name)
        if name not in used:
            if val is not None:
                v.notes.append(f"{name} is not used by this model (ignored)")
        elif val is None:
            v.notes.append(f"{name} not given: the model uses its missing-value indicator")
    if schema:
        ranges = schema.get("ranges", {})
        lo_hi = ranges.get("ctc")
        if lo_hi and not (lo_hi[0] <= v.ctc <= lo_hi[1]):
            v.warnings.append(
                f"CTC level {v.ctc:g} {unit} is outside the range seen in training "
                f"({lo_hi[0]:.4g}–{lo_hi[1]:.4g} {unit}); the prediction is an extrapolation")
        lo_hi = ranges.get("age")
        if lo_hi and v.age is not None and "age" in used and not (lo_hi[0] <= v.age <= lo_hi[1]):
            v.warnings.append(
                f"age {v.age:g} is outside the range seen in training ({lo_hi[0]:.4g}–{lo_hi[1]:.4g} years)")
        for name in ("sex", "lesion_site"):
            seen = ranges.get(name)
            val = getattr(v, name)
            if seen is not None and val is not None and name in used and val not in seen:
                v.warnings.append(f"{name} {val!r} was never seen in training (seen: {', '.join(seen) or 'none'})")
    return v


# ---------------------------------------------------------------------------- encoding
def feature_names(inputs: tuple[str, ...] | list[str]) -> list[str]:
    """The encoded feature vector's names, in order, for the given inputs."""
    names: list[str] = []
    for name in inputs:
        if name == "ctc":
            names.append("ctc_z")
        elif name == "age":
            names += ["age_z", "age_missing"]
        elif name == "sex":
            names += [f"sex_{s}" for s in SEXES] + ["sex_missing"]
        elif name == "lesion_site":
            names += [f"site_{s}" for s in LESION_SITES] + ["site_missing"]
        else:
            raise ModelError(f"unknown fusion input {name!r}; this version knows {', '.join(ALL_INPUTS)}")
    return names


def fit_schema(ctc: list[float], age: list[float | None], sex: list[str | None], site: list[str | None],
               inputs: tuple[str, ...] = ALL_INPUTS, ctc_unit: str = CTC_UNIT) -> dict[str, Any]:
    """Input schema (stored in the model card) from the training cases: ranges and normalisation.
    ``ctc_unit``: the unit of the site's CTC assay (default: the study's printed label)."""
    if not isinstance(ctc_unit, str) or not ctc_unit.strip() or len(ctc_unit) > 40:
        raise InputError(f"the CTC unit must be a short non-empty text, got {ctc_unit!r}")
    c = np.asarray(ctc, dtype=float)
    if c.size == 0 or not np.all(np.isfinite(c)):
        raise InputError("training CTC values must be present and finite for every case")
    lc = np.log1p(c)
    ages = np.asarray([a for a in age if a is not None], dtype=float)
    norm: dict[str, Any] = {"ctc": {"transform": "log1p", "mean": float(lc.mean()), "std": float(max(lc.std(), 1e-6))}}
    ranges: dict[str, Any] = {"ctc": [float(c.min()), float(c.max())]}
    if "age" in inputs:
        if ages.size:
            norm["age"] = {"transform": "identity", "mean": float(ages.mean()), "std": float(max(ages.std(), 1e-6))}
            ranges["age"] = [float(ages.min()), float(ages.max())]
        else:
            norm["age"] = {"transform": "identity", "mean": 50.0, "std": 15.0}
    if "sex" in inputs:
        ranges["sex"] = sorted({s for s in sex if s is not None})
    if "lesion_site" in inputs:
        ranges["lesion_site"] = [s for s in LESION_SITES if s in set(site)]
    return {
        "version": SCHEMA_VERSION,
        "inputs": list(inputs),
        "features": feature_names(inputs),
        "units": {"ctc": ctc_unit.strip(), "age": "years"},
        "categories": {"sex": list(SEXES), "lesion_site": list(LESION_SITES)},
        "ctc_hard_max": CTC_HARD_MAX,
        "normalisation": norm,
        "ranges": ranges,
        "missing": "explicit indicator features (<input>_missing = 1, value features 0)",
    }


def check_schema(schema: dict[str, Any], source: Any = None) -> None:
    """Refuse (:class:`ModelError`) a card's input schema this code cannot feed exactly."""
    if not schema:
        raise ModelError("fusion model card has no input_schema", source)
    if schema.get("version") != SCHEMA_VERSION:
        raise ModelError(f"fusion input schema version {schema.get('version')!r} is not supported "
                         f"(this version reads {SCHEMA_VERSION})", source)
    inputs = schema.get("inputs")
    if not isinstance(inputs, list) or "ctc" not in inputs:
        raise ModelError(f"fusion input schema must list its inputs including 'ctc', got {inputs!r}", source)
    expected = feature_names(inputs)
    if schema.get("features") != expected:
        raise ModelError(f"fusion input schema features {schema.get('features')!r} do not match what this "
                         f"version encodes for inputs {inputs}: {expected}", source)
    unit = (schema.get("units") or {}).get("ctc")
    if not isinstance(unit, str) or not unit.strip():
        raise ModelError("fusion input schema does not say the CTC unit (units.ctc)", source)
    if schema.get("categories") != {"sex": list(SEXES), "lesion_site": list(LESION_SITES)}:
        raise ModelError("fusion input schema categories (sex / lesion site) differ from this version's taxonomy", source)
    norm = schema.get("normalisation", {})
    for name in [n for n in inputs if n in ("ctc", "age")]:
        st = norm.get(name, {})
        if not (isinstance(st.get("mean"), (int, float)) and isinstance(st.get("std"), (int, float)) and st["std"] > 0):
            raise ModelError(f"fusion input schema lacks valid normalisation statistics for {name!r}", source)


def encode(v: ValidatedInputs, schema: dict[str, Any], drop: tuple[str, ...] = ()) -> np.ndarray:
    """Validated inputs → float32 feature vector in the schema's order.

    ``drop`` marks optional inputs as missing (used for missing-input dropout in training).
    """
    norm = schema["normalisation"]
    out: list[float] = []
    for name in schema["inputs"]:
        if name == "ctc":
            st = norm["ctc"]
            x = math.log1p(v.ctc) if st.get("transform") == "log1p" else v.ctc
            out.append((x - st["mean"]) / st["std"])
        elif name == "age":
            if v.age is None or "age" in drop:
                out += [0.0, 1.0]
            else:
                st = norm["age"]
                out += [(v.age - st["mean"]) / st["std"], 0.0]
        elif name == "sex":
            val = None if "sex" in drop else v.sex
            out += [float(val == s) for s in SEXES] + [float(val is None)]
        elif name == "lesion_site":
            val = None if "lesion_site" in drop else v.lesion_site
            out += [float(val == s) for s in LESION_SITES] + [float(val is None)]
    return np.asarray(out, dtype=np.float32)
