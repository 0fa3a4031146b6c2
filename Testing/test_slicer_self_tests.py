"""Defect 5: "Reload and Test" must pass on a clean Slicer, which ships no PyYAML, pandas, torch, ...

Two checks, both on slicer-core without the application:

* statically, every import a module file (and ``MediastinalAILib``) makes at load time, followed
  through the core modules it imports at their top level, is in the standard library, in
  :data:`~mediastinal_ai.mrml.dependencies.SLICER_BUNDLED` (what Slicer 5.10, the oldest supported
  release, ships: read from its SuperBuild) or in this project;
* dynamically, each module's ``ScriptedLoadableModuleTest.runTest()`` runs, as "Reload and Test"
  runs it, in a child Python in which every package Slicer does not ship is made unimportable:
  it must pass, skipping (with a message) what needs the missing packages.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mediastinal_ai.mrml import dependencies

REPO = Path(__file__).resolve().parents[1]
MODULES = ["MediastinalAI", "MediastinalAIRadiomics"]
OURS = {"mediastinal_ai", "MediastinalAILib", *MODULES}
# the stand-ins slicer-core uses for what the Slicer application provides
SLICER_CORE = {"slicer_core", "vtkmodules"}


def _module_level_imports(path: Path) -> list[tuple[str, int]]:
    """(absolute module name, level) of the imports executed when ``path`` is imported: module-level
    statements, including those inside try/if at module level, not those inside functions."""
    out: list[tuple[str, int]] = []

    def visit(stmts):
        for node in stmts:
            if isinstance(node, ast.Import):
                out.extend((a.name, 0) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level == 0:
                    out.append((base, 0))
                    out.extend((f"{base}.{a.name}", 0) for a in node.names)  # may be a submodule
                else:
                    out.append((base, node.level))
                    out.extend(((f"{base}.{a.name}" if base else a.name), node.level) for a in node.names)
            elif isinstance(node, (ast.Try, ast.If, ast.With)):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, field, []) or []:
                        visit(getattr(child, "body", None) or ([child] if isinstance(child, ast.stmt) else []))
            elif isinstance(node, ast.ClassDef):
                visit(node.body)  # class bodies run at import too

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return out


def _file_of(name: str) -> Path | None:
    """The source file of one of our modules (``mediastinal_ai.x.y`` / ``MediastinalAILib.z``)."""
    parts = name.split(".")
    roots = {"mediastinal_ai": REPO, "MediastinalAILib": REPO / "MediastinalAI"}
    root = roots.get(parts[0])
    if root is None:
        return None
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _package_of(path: Path) -> str:
    rel = path.relative_to(REPO / "MediastinalAI" if "MediastinalAILib" in path.parts else REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
        return ".".join(parts)
    return ".".join(parts[:-1])


def load_time_imports(start: Path) -> dict[str, str]:
    """Third-party top-level names imported (transitively through our modules) when ``start``
    loads → the file that imports each one first."""
    stdlib = set(sys.stdlib_module_names)
    seen: set[Path] = set()
    found: dict[str, str] = {}
    todo = [start]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        package = _package_of(path)
        for name, level in _module_level_imports(path):
            if level:
                base = package.split(".")
                base = base[: len(base) - (level - 1)] if level > 1 else base
                name = ".".join([*base, name] if name else base)
            top = name.split(".")[0]
            if top in OURS:
                parts = name.split(".")
                for i in range(1, len(parts) + 1):  # importing a.b.c runs a, a.b and a.b.c
                    f = _file_of(".".join(parts[:i]))
                    if f is not None:
                        todo.append(f)
            elif top and top not in stdlib and top != "__future__":
                found.setdefault(top, str(path.relative_to(REPO)))
    return found


LOAD_FILES = [REPO / m / f"{m}.py" for m in MODULES] + sorted((REPO / "MediastinalAI" / "MediastinalAILib").glob("*.py"))


@pytest.mark.parametrize("path", LOAD_FILES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_what_a_module_imports_at_load_is_shipped_with_slicer(path):
    extra = {k: v for k, v in load_time_imports(path).items() if k not in dependencies.SLICER_BUNDLED}
    assert not extra, f"imported when Slicer loads {path.name}, not shipped with Slicer: {extra}"


def test_the_static_check_sees_through_core_imports():
    """The checker follows our own modules, relative imports included: the synthetic generator
    (imported by ``mediastinal_ai.synthetic`` through ``from .cohort import ...``) needs PyYAML,
    which is exactly what made "Reload and Test" fail on a clean Slicer."""
    found = load_time_imports(REPO / "mediastinal_ai" / "synthetic" / "__init__.py")
    assert found.get("yaml") == "mediastinal_ai/synthetic/generator.py"
    assert "yaml" not in dependencies.SLICER_BUNDLED


# ------------------------------------------------------------------------------ dynamic
_CHILD = r'''
import importlib.abc, importlib.util, json, sys, types, unittest
repo, allowed, block = sys.argv[1], set(json.loads(sys.argv[2])), sys.argv[3] == "block"

class NotShippedWithSlicer(importlib.abc.MetaPathFinder):
    """Makes every top-level package Slicer does not ship unimportable (find_spec included)."""
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if not block or top in allowed or top in sys.stdlib_module_names:
            return None
        raise ModuleNotFoundError(f"No module named {top!r} (not shipped with Slicer)", name=top)

for name in list(sys.modules):  # nothing pytest or site imported may leak in
    if block and name.split(".")[0] not in allowed and name.split(".")[0] not in sys.stdlib_module_names:
        del sys.modules[name]
sys.meta_path.insert(0, NotShippedWithSlicer())
sys.path[:0] = [repo, repo + "/MediastinalAI", repo + "/MediastinalAIRadiomics"]

import slicer  # slicer-core: MRML, segmentations, vtk, numpy; the app-only parts are stood in for below
from mediastinal_ai.mrml import nodes

qt = types.ModuleType("qt")
class QProcess:
    NotRunning, Starting, Running = 0, 1, 2
    NormalExit, CrashExit = 0, 1
    FailedToStart, Crashed = 0, 1
    MergedChannels = 1
qt.QProcess = QProcess
slm = types.ModuleType("slicer.ScriptedLoadableModule")
messages = []
class _Base:
    def __init__(self, *a, **k):
        pass
    def getParameterNode(self):
        return slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
for n in ("ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic"):
    setattr(slm, n, type(n, (_Base,), {}))
class ScriptedLoadableModuleTest(unittest.TestCase):  # as in Slicer: a TestCase with delayDisplay
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
    def runTest(self):
        pass
    def delayDisplay(self, message, requestedDelay=None, msec=None):
        messages.append(str(message))
slm.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
pnw = types.ModuleType("slicer.parameterNodeWrapper")
def parameterNodeWrapper(cls):
    def __init__(self, node):
        object.__setattr__(self, "_node", node)
    cls.__init__ = __init__
    return cls
pnw.parameterNodeWrapper = parameterNodeWrapper
pnw.Choice = lambda choices: None
pnw.WithinRange = lambda lo, hi: None
sys.modules.update({"qt": qt, "slicer.ScriptedLoadableModule": slm, "slicer.parameterNodeWrapper": pnw})
slicer.ScriptedLoadableModule, slicer.parameterNodeWrapper = slm, pnw
slicer.mrmlScene = nodes.new_scene()

report = {}
for module in ("MediastinalAI", "MediastinalAIRadiomics"):
    messages.clear()
    mod = importlib.import_module(module)
    test = getattr(mod, module + "Test")()
    test.messageDelay = 100
    try:
        test.runTest()
        report[module] = {"ok": True, "messages": list(messages)}
    except Exception as e:  # noqa: BLE001 - reported to the parent test
        import traceback
        report[module] = {"ok": False, "messages": list(messages), "error": traceback.format_exc()}
report["blocked_loaded"] = sorted({m.split(".")[0] for m in sys.modules} - allowed - set(sys.stdlib_module_names)
                                  if block else [])
print("REPORT " + json.dumps(report))
'''


def _run_self_tests(tmp_path, block: bool) -> dict:
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    allowed = sorted(dependencies.SLICER_BUNDLED | OURS | SLICER_CORE)
    done = subprocess.run([sys.executable, "-c", _CHILD, str(REPO), json.dumps(allowed), "block" if block else "all"],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, f"the child did not finish:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    report = json.loads(lines[-1][len("REPORT "):])
    for module in MODULES:
        assert report[module]["ok"], f"{module} self-test failed:\n{report[module]['error']}"
    return report


@pytest.mark.mrml
def test_reload_and_test_passes_on_a_clean_slicer(tmp_path):
    report = _run_self_tests(tmp_path, block=True)
    for module in MODULES:
        skipped = [m for m in report[module]["messages"] if m.startswith("Skipped")]
        assert skipped, f"{module}: nothing was skipped, yet torch/pyyaml/... are missing: {report[module]}"
        assert all("not bundled with Slicer" in m for m in skipped)
    assert report["blocked_loaded"] == []


@pytest.mark.mrml
@pytest.mark.slow
def test_self_tests_run_everything_where_the_dependencies_are_installed(tmp_path):
    """The same self-tests with the packages installed: nothing skipped, the whole chain runs
    (segmentation, CNN, CTC fusion, radiomics on a synthetic case)."""
    for name in ("torch", "monai", "radiomics", "yaml", "pandas", "sklearn", "skops"):
        pytest.importorskip(name, reason=f"{name} is not installed")
    report = _run_self_tests(tmp_path, block=False)
    for module in MODULES:
        messages = report[module]["messages"]
        assert not [m for m in messages if m.startswith("Skipped")], messages
        assert messages[-1] == "Test passed", messages
