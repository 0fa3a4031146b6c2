"""Which Python packages each MediastinalAI feature needs, and which of them are missing.

Pure Python (no Qt, no slicer). The Slicer modules call :func:`missing` before a feature is
first used and, if anything is missing, *ask* the user before installing it with
``slicer.util.pip_install`` (never silently, never at import). The pip requirements mirror
``pyproject.toml`` (a test keeps them in step).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from pathlib import Path

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
    "psutil": "psutil>=5.9",
}

#: Inside Slicer, other AI extensions share Slicer's one Python environment, so exact pins would
#: downgrade (or upgrade) packages they need: minimum versions instead. The pip install of the
#: library (``pyproject.toml``) keeps the tested pins. Tested: torch 2.14.1 / torchvision 0.29.1;
#: the minimums are the oldest releases whose APIs the code uses (safetensors loading,
#: ``torch.amp``), not versions this project's CI runs.
SLICER_REQUIREMENTS: dict[str, str] = {
    **REQUIREMENTS,
    "torch": "torch>=2.2",
    "torchvision": "torchvision>=0.17",
}

#: What Slicer 5.10.0, the oldest supported release, ships in its Python besides the standard
#: library: the pinned packages of its SuperBuild/External_python-*.cmake (read in Slicer's
#: source at tag v5.10.0; SimpleITK is built by External_SimpleITK.cmake) and Slicer's own
#: modules. Later releases add to it (highdicom from 5.12), so this is the common floor.
#: Everything a module imports when it loads, and everything its self-test needs unless the test
#: checks ``missing()`` first, must be in here (Testing/test_slicer_self_tests.py checks).
SLICER_BUNDLED: frozenset[str] = frozenset({
    # Slicer itself
    "slicer", "vtk", "qt", "ctk", "ctkqt", "mrml", "vtkITK", "sitkUtils", "DICOMLib", "vtkSegmentationCore",
    "vtkSlicerSegmentationsModuleLogicPython", "vtkSlicerSegmentationsModuleMRMLPython",
    # SuperBuild python packages
    "numpy", "scipy", "SimpleITK", "pydicom", "PIL", "six", "retrying", "dicomweb_client", "typing_extensions", "chardet", "couchdb", "gitdb", "smmap", "git", "cryptography", "jwt",
    "wrapt", "deprecated", "pycparser", "cffi", "nacl", "dateutil", "github", "packaging", "pyparsing",
    "certifi", "idna", "charset_normalizer", "urllib3", "requests", "pip", "setuptools", "wheel",
})

# Reading a CT (NRRD/NIfTI/MHA/DICOM) needs only what Slicer ships: no install prompt.
_LOAD = ("numpy", "SimpleITK", "pydicom")
_CORE = ("numpy", "scipy", "SimpleITK", "pydicom", "yaml")
_TORCH = ("torch", "torchvision", "safetensors")
# the child-process runs (segmentation, CNN, fusion, radiomics): Cancel kills the process tree
_CHILD = ("psutil",)

#: feature → import names it needs.
FEATURES: dict[str, tuple[str, ...]] = {
    "load-ct": _LOAD,
    "core": _CORE,
    "segmentation": _CORE + _TORCH + ("monai",) + _CHILD,
    "dicom-seg": _LOAD + ("highdicom",),
    "risk-cnn": _CORE + _TORCH + _CHILD,
    "fusion": _CORE + _TORCH + ("pandas",) + _CHILD,
    "radiomics": _CORE + ("pandas", "radiomics", "sklearn", "imblearn", "skops") + _CHILD,
    "report": _CORE + ("pandas", "matplotlib"),
    # what the synthetic case of the self-tests needs (mediastinal_ai.synthetic reads YAML)
    "synthetic": _CORE,
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


def pip_requirements(import_names: Iterable[str], slicer: bool = False) -> list[str]:
    """pip requirement strings for import names (unknown names are passed through);
    ``slicer=True``: the minimum-version form used inside Slicer (:data:`SLICER_REQUIREMENTS`)."""
    table = SLICER_REQUIREMENTS if slicer else REQUIREMENTS
    return [table.get(n, n) for n in import_names]


def _distribution_of(folder: Path) -> tuple[str, str] | None:
    """(distribution, version) whose ``*.dist-info`` beside ``folder``'s parent lists it."""
    from importlib import metadata

    for dist in metadata.distributions(path=[str(folder.parent)]):
        files = dist.files or []
        if any(str(f).replace("\\", "/").startswith(f"{folder.name}/") for f in files):
            return dist.metadata["Name"], dist.version
    return None


def radiomics_copies(paths: Iterable[str] | None = None) -> list[dict[str, str]]:
    """Every ``radiomics`` package on ``sys.path`` (or ``paths``), in import order: the first wins.

    pyradiomics-bhklab (what this project installs), pyradiomics, and the copy the SlicerRadiomics
    extension carries all provide a top-level ``radiomics`` module; which one Python imports
    depends on the order of ``sys.path``, so the modules say which one is used. Nothing is
    imported: the folders are only looked at.
    """
    import sys

    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for entry in list(sys.path if paths is None else paths):
        folder = Path(entry or ".") / "radiomics"
        init = folder / "__init__.py"
        try:
            if not init.is_file():
                continue
            key = str(folder.resolve())
        except OSError:
            continue
        if key in seen:
            continue
        seen.add(key)
        dist = _distribution_of(folder)
        version = dist[1] if dist else _version_in_file(init)
        out.append({"path": str(folder), "distribution": dist[0] if dist else "unknown (no package metadata)",
                    "version": version or "unknown"})
    return out


def _version_in_file(init: Path) -> str | None:
    import re

    try:
        m = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)", init.read_text(errors="replace"), re.M)
    except OSError:
        return None
    return m.group(1) if m else None


def radiomics_version() -> tuple[str, str] | None:
    """(distribution, version) of the ``radiomics`` Python would import, or None."""
    copies = radiomics_copies()
    if not copies:
        return None
    return copies[0]["distribution"], copies[0]["version"]


def radiomics_note() -> str:
    """One line for the GUI: which radiomics is used, and that others are shadowed."""
    copies = radiomics_copies()
    if not copies:
        return "pyradiomics is not installed"
    used = copies[0]
    text = f"radiomics: {used['distribution']} {used['version']} ({used['path']})"
    if len(copies) > 1:
        others = "; ".join(f"{c['distribution']} {c['version']} ({c['path']})" for c in copies[1:])
        text += f" — also found, not used: {others}"
    return text


#: Oldest Slicer the extension supports. 5.8 is refused: its Python is 3.9 (the library needs
#: 3.10+, and the torch builds it is tested with have no 3.9 wheels) and it lacks
#: ``vtkSegment.SetTerminology`` (added to Slicer in March 2025, first released in 5.10).
MINIMUM_SLICER = (5, 10)


def slicer_version_problem(major: int, minor: int) -> str:
    """'' when this Slicer version is supported, else the message the modules show instead."""
    if (int(major), int(minor)) >= MINIMUM_SLICER:
        return ""
    need = ".".join(str(v) for v in MINIMUM_SLICER)
    return (f"MediastinalAI needs 3D Slicer {need} or later; this is Slicer {major}.{minor}. "
            f"Install Slicer {need} or a newer release from download.slicer.org.")
