"""The "Export DICOM SR…" button of both modules, written once.

Both modules export the same kind of SR (the scene's lesions and predictions, with the SEG); they
differ only in which segment they take and what else goes in (the radiomics module adds the
model's input features), which each passes in as ``export``. The flow — dependencies, folder
choice, export under a wait cursor, error or status message — is :func:`exportDicomSrFlow`, which
takes the Qt parts as arguments and imports no Qt, so it is tested without the application;
:func:`onExportDicomSr` supplies Slicer's folder dialog and wait cursor.
"""

try:  # Slicer's translation function (as the modules use it)
    from slicer.i18n import tr as _
except ImportError:  # an older Slicer, or slicer-core without the application

    def _(text):
        return text


DEPENDENCY_FEATURE = "dicom-seg"  # highdicom: the SEG and SR writers


def exportDicomSrFlow(export, *, ensureDependencies, chooseFolder, busy, onError, onStatus):
    """One export. ``export(folder)`` writes the files and returns name → path.

    Returns what was written, or None when nothing was: the dependencies are missing (the
    installer has said why), no folder was chosen, or the export failed (``onError(message,
    exception)``; a missing segment is such a failure, so the user sees why)."""
    if not ensureDependencies(DEPENDENCY_FEATURE):
        return None
    folder = chooseFolder(_("Export DICOM SR: choose a folder"))
    if not folder:
        return None
    try:
        with busy():
            written = export(folder)
    except Exception as e:  # noqa: BLE001 - every failure goes to the user, none kills the GUI
        onError(_("DICOM SR export failed."), e)
        return None
    onStatus(_("Saved {files} in {folder}").format(files=", ".join(sorted(written)), folder=folder))
    return written


def onExportDicomSr(widget, export, onStatus):
    """The button handler: ``widget`` gives ``_ensureDependencies(*features)`` and
    ``_error(message, exception)``; ``onStatus(text)`` is the module's status line."""
    import qt
    import slicer

    return exportDicomSrFlow(
        export,
        ensureDependencies=widget._ensureDependencies,
        chooseFolder=lambda title: qt.QFileDialog.getExistingDirectory(slicer.util.mainWindow(), title),
        busy=slicer.util.WaitCursor,
        onError=widget._error,
        onStatus=onStatus,
    )
