"""Radiomics parameter files: a pyradiomics parameter set plus our ``preprocessing`` block.

The shipped files live in ``mediastinal_ai/configs/radiomics_*.yaml``; users may pass their
own. Everything but ``preprocessing`` goes to pyradiomics unchanged, so a result can always be
reproduced with a direct ``RadiomicsFeatureExtractor`` call on the windowed image.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..volume import Volume

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
PAPER_PARAMS = CONFIG_DIR / "radiomics_paper.yaml"
DEMO_PARAMS = CONFIG_DIR / "radiomics_demo.yaml"
_NAMED = {"paper": PAPER_PARAMS, "demo": DEMO_PARAMS}


def load_params(source: str | Path | dict[str, Any] | None = None) -> dict[str, Any]:
    """A parameter dict from a YAML path, a shipped name ("paper", "demo"), a dict, or
    ``None`` (the published settings). Checked enough to fail early with the file's name."""
    if isinstance(source, dict):
        params = copy.deepcopy(source)
        where: str | Path = "parameters"
    else:
        path = _NAMED.get(str(source), None) if source is not None else PAPER_PARAMS
        path = Path(path if path is not None else str(source)).expanduser()
        if not path.is_file():
            raise InputError("radiomics parameter file not found", path)
        import yaml

        try:
            params = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise InputError(f"not valid YAML ({e})", path) from e
        where = path
    if not isinstance(params, dict) or "imageType" not in params:
        raise InputError("a radiomics parameter set needs at least an 'imageType' section", where)
    pre = params.get("preprocessing") or {}
    if not isinstance(pre, dict) or set(pre) - {"window"}:
        raise InputError("'preprocessing' may only hold 'window: {width, level}' (or null)", where)
    win = pre.get("window")
    if win is not None and (not isinstance(win, dict) or set(win) != {"width", "level"} or float(win["width"]) <= 0):
        raise InputError(f"'preprocessing.window' must be {{width: >0, level: number}}, got {win!r}", where)
    params["preprocessing"] = {"window": None if win is None else {"width": float(win["width"]),
                                                                    "level": float(win["level"])}}
    return params


def pyradiomics_params(params: dict[str, Any]) -> dict[str, Any]:
    """The part pyradiomics reads (without our ``preprocessing`` block)."""
    return {k: copy.deepcopy(v) for k, v in params.items() if k != "preprocessing"}


def window_range(params: dict[str, Any]) -> tuple[float, float] | None:
    win = (params.get("preprocessing") or {}).get("window")
    if not win:
        return None
    return win["level"] - win["width"] / 2.0, win["level"] + win["width"] / 2.0


def apply_window(ct: Volume, params: dict[str, Any]) -> Volume:
    """Clip HU to the window (W400/L40 → [-160, 240]); see the YAML for why a clip."""
    rng = window_range(params)
    if rng is None:
        return ct
    return ct.with_array(np.clip(ct.array.astype(np.float32), rng[0], rng[1]))


def params_hash(params: dict[str, Any]) -> str:
    """Short fingerprint of a parameter set, so cached features from other settings are not reused."""
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def make_extractor(params: dict[str, Any]) -> Any:
    """A configured ``RadiomicsFeatureExtractor`` (pyradiomics imported here: it is heavy)."""
    import logging

    from radiomics import featureextractor

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    logging.getLogger("pykwalify").setLevel(logging.WARNING)
    return featureextractor.RadiomicsFeatureExtractor(pyradiomics_params(params))


def enabled_image_types(params: dict[str, Any]) -> list[str]:
    return list((params.get("imageType") or {}).keys())
