"""Offer to install missing Python packages on first use (as the TotalSegmentator and
MONAIAuto3DSeg extensions do): the user is asked first, nothing is installed silently or at
import time."""

import slicer

from mediastinal_ai.mrml import dependencies


def installDependencies(importNames):
    """pip-install the given import names into Slicer's Python. torch/torchvision go through the
    PyTorch extension when it is installed (it picks the CUDA build that fits the machine)."""
    names = list(importNames)
    torchNames = [n for n in names if n in dependencies.TORCH_PACKAGES]
    if torchNames:
        try:
            import PyTorchUtils  # the SlicerPyTorch extension
        except ImportError:
            PyTorchUtils = None
        if PyTorchUtils is not None:
            PyTorchUtils.PyTorchUtilsLogic().installTorch(
                askConfirmation=False,
                torchVersionRequirement=dependencies.REQUIREMENTS["torch"].removeprefix("torch"),
                torchvisionVersionRequirement=dependencies.REQUIREMENTS["torchvision"].removeprefix(
                    "torchvision"
                ),
            )
            names = [n for n in names if n not in torchNames]
    if names:
        slicer.util.pip_install(dependencies.pip_requirements(names))


def ensureDependencies(features, title="MediastinalAI", statusCallback=None):
    """True when everything ``features`` need imports; otherwise ask, install, re-check."""
    missing = dependencies.missing(features)
    if not missing:
        return True
    requirements = dependencies.pip_requirements(missing)
    if not slicer.util.confirmOkCancelDisplay(
        f"{title} needs Python packages that are not installed in Slicer yet:\n\n  "
        + "\n  ".join(requirements)
        + "\n\nInstall them now? They are downloaded with pip; this can take several minutes.",
        windowTitle=f"{title}: install dependencies",
    ):
        if statusCallback:
            statusCallback("Not installed: " + ", ".join(requirements))
        return False
    with slicer.util.tryWithErrorDisplay("Installing Python packages failed.", waitCursor=True):
        installDependencies(missing)
    still = dependencies.missing(features)
    if still:
        slicer.util.errorDisplay(
            "Still missing after installation: " + ", ".join(still) + ". Restart Slicer and retry."
        )
        return False
    return True
