"""Offer to install missing Python packages on first use (as the TotalSegmentator and
MONAIAuto3DSeg extensions do): the user is asked first, nothing is installed silently or at
import time."""

import logging

import slicer

from mediastinal_ai.mrml import dependencies

try:
    from slicer.i18n import tr as _
except ImportError:  # Slicer without i18n support

    def _(text):
        return text


def installDependencies(importNames):
    """pip-install the given import names into Slicer's Python. torch/torchvision go through the
    PyTorch extension (declared in EXTENSION_DEPENDS) when it is installed: it picks the CUDA
    build that fits the machine. Minimum versions, not exact pins, because other AI extensions
    share Slicer's one Python environment."""
    names = list(importNames)
    torchNames = [n for n in names if n in dependencies.TORCH_PACKAGES]
    if torchNames:
        try:
            import PyTorchUtils  # the SlicerPyTorch extension
        except ImportError:
            PyTorchUtils = None
        if PyTorchUtils is not None:
            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                askConfirmation=False,
                torchVersionRequirement=dependencies.SLICER_REQUIREMENTS["torch"].removeprefix("torch"),
                torchvisionVersionRequirement=dependencies.SLICER_REQUIREMENTS["torchvision"].removeprefix(
                    "torchvision"
                ),
            )
            if torch is None:
                raise RuntimeError(_("The PyTorch extension did not install PyTorch."))
            names = [n for n in names if n not in torchNames]
    if names:
        slicer.util.pip_install(dependencies.pip_requirements(names, slicer=True))


def ensureDependencies(features, title="MediastinalAI", statusCallback=None):
    """True when everything ``features`` need imports; otherwise ask, install, re-check.

    A failed installation is reported, never raised: the caller gets False and goes on (its
    clean-up runs). ``slicer.util.tryWithErrorDisplay`` is not used here because it re-raises
    after showing the error, so the "still missing" check below would never run.
    """
    missing = dependencies.missing(features)
    if not missing:
        return True
    requirements = dependencies.pip_requirements(missing, slicer=True)
    if not slicer.util.confirmOkCancelDisplay(
        _("{title} needs Python packages that are not installed in Slicer yet:").format(title=title)
        + "\n\n  "
        + "\n  ".join(requirements)
        + "\n\n"
        + _("Install them now? They are downloaded with pip; this can take several minutes."),
        windowTitle=_("{title}: install dependencies").format(title=title),
    ):
        if statusCallback:
            statusCallback(_("Not installed: {packages}").format(packages=", ".join(requirements)))
        return False
    error = None
    try:
        with slicer.util.WaitCursor():
            installDependencies(missing)
    except Exception as e:  # pip / network / extension failure: reported below
        logging.exception("MediastinalAI: installing %s failed", requirements)
        error = e
    still = dependencies.missing(features)
    if still:
        text = _("Still missing after installation: {packages}. Restart Slicer and retry.").format(
            packages=", ".join(still)
        )
        if error is not None:
            text += "\n\n" + _("Installation error: {error}").format(error=error)
        slicer.util.errorDisplay(text, windowTitle=_("{title}: install dependencies").format(title=title))
        if statusCallback:
            statusCallback(text)
        return False
    return True
