"""The "Export DICOM SR…" flow both Slicer modules share (MediastinalAILib/dicomSrExport.py),
run without Qt or the Slicer application: the Qt parts are passed in (or stubbed for the
handler), and both modules' handlers are checked to be thin calls into it."""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LIB = REPO / "MediastinalAI" / "MediastinalAILib" / "dicomSrExport.py"


def _load():
    spec = importlib.util.spec_from_file_location("_test_dicomSrExport", LIB)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _Recorder:
    def __init__(self, deps=True, folder="/exports/case1", fail=None):
        self.deps, self.folder, self.fail = deps, folder, fail
        self.events: list[tuple] = []

    def ensure(self, *features):
        self.events.append(("deps", features))
        return self.deps

    def choose(self, title):
        self.events.append(("choose", title))
        return self.folder

    @contextlib.contextmanager
    def busy(self):
        self.events.append(("busy on",))
        try:
            yield
        finally:
            self.events.append(("busy off",))

    def export(self, folder):
        self.events.append(("export", folder))
        if self.fail:
            raise self.fail
        return {"segmentation.dcm": Path(folder) / "segmentation.dcm",
                "measurements_sr.dcm": Path(folder) / "measurements_sr.dcm"}

    def error(self, message, exception):
        self.events.append(("error", message, exception))

    def status(self, text):
        self.events.append(("status", text))

    def run(self, mod):
        return mod.exportDicomSrFlow(self.export, ensureDependencies=self.ensure, chooseFolder=self.choose,
                                     busy=self.busy, onError=self.error, onStatus=self.status)


def test_the_module_loads_without_qt(monkeypatch):
    monkeypatch.setitem(sys.modules, "qt", None)  # any "import qt" now raises ImportError
    mod = _load()
    assert callable(mod.exportDicomSrFlow) and callable(mod.onExportDicomSr)


def test_success_exports_inside_the_wait_cursor_and_says_what_was_saved():
    mod, r = _load(), _Recorder()
    written = r.run(mod)
    assert set(written) == {"segmentation.dcm", "measurements_sr.dcm"}
    kinds = [e[0] for e in r.events]
    assert kinds == ["deps", "choose", "busy on", "export", "busy off", "status"]
    assert r.events[0] == ("deps", ("dicom-seg",))
    assert r.events[3] == ("export", "/exports/case1")
    assert r.events[-1] == ("status", "Saved measurements_sr.dcm, segmentation.dcm in /exports/case1")


@pytest.mark.parametrize(("deps", "folder"), [(False, "/x"), (True, ""), (True, None)])
def test_missing_dependencies_or_no_folder_exports_nothing(deps, folder):
    mod, r = _load(), _Recorder(deps=deps, folder=folder)
    assert r.run(mod) is None
    kinds = [e[0] for e in r.events]
    assert "export" not in kinds and "status" not in kinds and "error" not in kinds
    assert ("choose" in kinds) == deps  # no folder dialog when the dependencies are missing


def test_a_failing_export_is_reported_and_the_cursor_restored():
    err = ValueError("Select a CT volume and a tumor segment first")
    mod, r = _load(), _Recorder(fail=err)
    assert r.run(mod) is None
    assert r.events[-2:] == [("busy off",), ("error", "DICOM SR export failed.", err)]
    assert not any(e[0] == "status" for e in r.events)


def test_the_handler_wires_slicers_dialog_and_wait_cursor(monkeypatch):
    """onExportDicomSr with stand-ins for qt and slicer: the dialog's folder reaches the export,
    the widget's own error and dependency methods are used."""
    r = _Recorder()
    qt = types.ModuleType("qt")
    parents = []

    def dialog(parent, title):
        parents.append(parent)
        return r.choose(title)

    qt.QFileDialog = types.SimpleNamespace(getExistingDirectory=dialog)
    slicer = types.ModuleType("slicer")
    slicer.util = types.SimpleNamespace(mainWindow=lambda: "main window", WaitCursor=r.busy)
    monkeypatch.setitem(sys.modules, "qt", qt)
    monkeypatch.setitem(sys.modules, "slicer", slicer)
    widget = types.SimpleNamespace(_ensureDependencies=r.ensure, _error=r.error)
    written = _load().onExportDicomSr(widget, r.export, r.status)
    assert set(written) == {"segmentation.dcm", "measurements_sr.dcm"}
    assert [e[0] for e in r.events] == ["deps", "choose", "busy on", "export", "busy off", "status"]
    assert parents == ["main window"]


@pytest.mark.parametrize(("module", "status"), [("MediastinalAI", "_status"), ("MediastinalAIRadiomics", "_setStatus")])
def test_both_modules_handlers_are_thin_calls_into_the_shared_flow(module, status):
    tree = ast.parse((REPO / module / f"{module}.py").read_text())
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == f"{module}Widget")
    handler = next(f for f in widget.body if isinstance(f, ast.FunctionDef) and f.name == "onExportDicomSr")
    calls = [c for c in ast.walk(handler) if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)]
    shared = [c for c in calls if c.func.attr == "onExportDicomSr" and isinstance(c.func.value, ast.Name)
              and c.func.value.id == "dicomSrExport"]
    assert len(shared) == 1, f"{module}.onExportDicomSr does not call dicomSrExport.onExportDicomSr"
    assert isinstance(shared[0].args[-1], ast.Attribute) and shared[0].args[-1].attr == status
    names = {c.func.attr for c in calls}
    assert not names & {"getExistingDirectory", "WaitCursor", "_error", "_ensureDependencies"}, names
    assert "exportDicomSr" in names  # the module's own logic does the module-specific export
