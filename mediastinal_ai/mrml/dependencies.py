"""Which Python packages each MediastinalAI feature needs, and which of them are missing.

Pure Python (no Qt, no slicer). The Slicer modules call :func:`missing` before a feature is
first used and, if anything is missing, *ask* the user before installing it with
``slicer.util.pip_install`` (never silently, never at import). The pip requirements mirror
``pyproject.toml`` (a test keeps them in step).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

#: import name → pip requirement (as in pyproject.toml).
REQUIREMENTS: dict[str, str] = {
    "numpy": "numpy>=1.24",
    "scipy": "scipy>=1.10",
    "SimpleITK": "SimpleITK>=2.3",
    "pydicom": "pydicom>=2.4",
    "yaml": "pyyaml>=6",
    "pandas": "pandas>=2.0",
    "matplotlib": "matplotlib>=3.7",
    "torch": "torch==2.14.1",
    "torchvision": "torchvision==0.29.1",
    "monai": "monai>=1.3",
    "safetensors": "safetensors>=0.4",
    "radiomics": "pyradiomics-bhklab",
    "sklearn": "scikit-learn>=1.3",
    "imblearn": "imbalanced-learn>=0.12",
    "skops": "skops>=0.10",
    "highdicom": "highdicom>=0.22",
}

_CORE = ("numpy", "scipy", "SimpleITK", "pydicom", "yaml", "pandas", "matplotlib")
_TORCH = ("torch", "torchvision", "safetensors")

#: feature → import names it needs.
FEATURES: dict[str, tuple[str, ...]] = {
    "core": _CORE,
    "segmentation": _CORE + _TORCH + ("monai",),
    "dicom-seg": _CORE + ("highdicom",),
    "risk-cnn": _CORE + _TORCH,
    "fusion": _CORE + _TORCH,
    "radiomics": _CORE + ("radiomics", "sklearn", "imblearn", "skops"),
    "report": _CORE,
}

#: packages that Slicer installs better through an extension, when that extension is present.
TORCH_PACKAGES = ("torch", "torchvision")


def is_importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missing(features: Iterable[str]) -> list[str]:
    """Import names needed by ``features`` that cannot be imported here (sorted, unique)."""
    importlib.invalidate_caches()  # see packages pip installed since start-up
    needed: set[str] = set()
    for feature in features:
        try:
            needed.update(FEATURES[feature])
        except KeyError:
            raise ValueError(f"unknown feature {feature!r}; known: {sorted(FEATURES)}") from None
    return sorted(n for n in needed if not is_importable(n))


def pip_requirements(import_names: Iterable[str]) -> list[str]:
    """pip requirement strings for import names (unknown names are passed through)."""
    return [REQUIREMENTS.get(n, n) for n in import_names]
