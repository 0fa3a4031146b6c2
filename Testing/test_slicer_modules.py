"""Static checks of the Slicer extension without the Slicer application.

The module files import ``qt``/``slicer`` (the app), so they are read with ``ast``/``xml``:
every .ui parses; every widget the Python uses exists in its .ui; every parameter-node binding
(``SlicerParameterName``) names a field of the ``@parameterNodeWrapper`` class, on a widget
type Slicer can connect to that field's type; CMake lists the files that exist; the logic's
calls into the task adapters match their signatures; the layering holds.
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mediastinal_ai.mrml import dependencies, display, process

REPO = Path(__file__).resolve().parents[1]
MODULES = ["MediastinalAI", "MediastinalAIRadiomics"]


# ------------------------------------------------------------------------------ parsing helpers
def module_py(module: str) -> Path:
    return REPO / module / f"{module}.py"


def module_ui(module: str) -> Path:
    return REPO / module / "Resources" / "UI" / f"{module}.ui"


def ui_widgets(module: str) -> dict[str, ET.Element]:
    root = ET.parse(module_ui(module)).getroot()
    return {w.get("name"): w for w in root.iter("widget")}


def ui_bindings(module: str) -> dict[str, tuple[str, str]]:
    """widget name → (widget class, SlicerParameterName)."""
    out = {}
    for name, w in ui_widgets(module).items():
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                out[name] = (w.get("class"), prop.findtext("string"))
    return out


def ui_property(widget: ET.Element, name: str) -> ET.Element | None:
    for prop in widget.findall("property"):
        if prop.get("name") == name:
            return prop
    return None


@dataclass
class Param:
    name: str
    base: str  # "float", "str", "vtkMRMLScalarVolumeNode", ...
    validators: list[str] = field(default_factory=list)  # "Choice", "WithinRange", ...
    choices: list[str] | None = None


def parameter_fields(path: Path) -> dict[str, Param]:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(
            (isinstance(d, ast.Name) and d.id == "parameterNodeWrapper") for d in node.decorator_list
        ):
            params = {}
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    params[stmt.target.id] = _param(stmt.target.id, stmt.annotation, tree)
            return params
    raise AssertionError(f"{path} has no @parameterNodeWrapper class")


def _param(name: str, ann: ast.expr, tree: ast.Module) -> Param:
    if isinstance(ann, ast.Subscript) and isinstance(ann.value, ast.Name) and ann.value.id == "Annotated":
        elts = ann.slice.elts  # type: ignore[attr-defined]
        p = Param(name, ast.unparse(elts[0]))
        for v in elts[1:]:
            if isinstance(v, ast.Call) and isinstance(v.func, ast.Name):
                p.validators.append(v.func.id)
                if v.func.id == "Choice":
                    p.choices = _choices(v.args[0], tree)
        return p
    return Param(name, ast.unparse(ann))


def _choices(expr: ast.expr, tree: ast.Module) -> list[str]:
    """Evaluate a Choice([...]) list written with module constants and taxonomy names."""
    from mediastinal_ai import taxonomy

    env: dict = {"taxonomy": taxonomy, "process": process}
    for stmt in tree.body:  # module-level simple constants (NOT_GIVEN, DEVICE_CHOICES, ...)
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            try:
                env[stmt.targets[0].id] = eval(compile(ast.Expression(stmt.value), "<const>", "eval"), env)
            except Exception:  # noqa: BLE001 - not a constant we can evaluate here
                pass
    return list(eval(compile(ast.Expression(expr), "<choices>", "eval"), env))


def ui_names_used(path: Path) -> set[str]:
    return set(re.findall(r"\b(?:self|widget)\.ui\.(\w+)", path.read_text()))


# What Slicer's parameterNodeWrapper GUI connectors accept (slicer/parameterNodeWrapper/
# guiConnectors.py: the match is on the exact widget class).
CONNECTABLE = {
    "bool": {"QCheckBox", "QPushButton"},
    "int": {"QSpinBox", "QSlider"},
    "float": {"QDoubleSpinBox", "ctkSliderWidget"},
    "str": {"QComboBox", "QLineEdit", "QTextEdit"},
    "pathlib.Path": {"ctkPathLineEdit", "ctkDirectoryButton"},
}
NODE_WIDGETS = {"qMRMLNodeComboBox", "qMRMLSubjectHierarchyTreeView"}


# ------------------------------------------------------------------------------ .ui files
@pytest.mark.parametrize("module", MODULES)
def test_ui_parses_with_unique_names_and_declared_custom_widgets(module):
    root = ET.parse(module_ui(module)).getroot()
    assert root.tag == "ui" and root.findtext("class") == module
    top = root.find("widget")
    assert top is not None and top.get("class") == "qMRMLWidget" and top.get("name") == module
    names = [w.get("name") for w in root.iter("widget")]
    assert len(names) == len(set(names)), "duplicate widget names"
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    custom = {c for c in used if c.startswith(("ctk", "qMRML", "qSlicer"))}
    assert custom <= declared, f"custom widgets not declared: {custom - declared}"
    # MRML widgets get the scene from the module widget
    receivers = {
        c.findtext("receiver")
        for c in root.iter("connection")
        if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    }
    mrml_widgets = {w.get("name") for w in root.iter("widget") if w.get("class", "").startswith("qMRML")} - {
        module
    }
    assert mrml_widgets <= receivers, f"MRML widgets without the scene: {mrml_widgets - receivers}"


@pytest.mark.parametrize("module", MODULES)
def test_every_widget_the_python_uses_exists_in_the_ui(module):
    widgets = ui_widgets(module)
    files = [module_py(module), *sorted((REPO / module / "Testing" / "Python").glob("*.py"))]
    used = set().union(*(ui_names_used(f) for f in files))
    assert used, "the module uses no widgets?"
    missing = sorted(used - set(widgets))
    assert not missing, f"{module}: self.ui.{missing} not in {module_ui(module).name}"


@pytest.mark.parametrize("module", MODULES)
def test_parameter_bindings_name_fields_on_connectable_widgets(module):
    params = parameter_fields(module_py(module))
    bindings = ui_bindings(module)
    assert bindings, "no SlicerParameterName bindings"
    bound = {}
    for widget_name, (widget_class, param_name) in bindings.items():
        assert param_name in params, f"{widget_name} binds to unknown parameter {param_name!r}"
        assert param_name not in bound, f"{param_name} bound twice ({bound[param_name]}, {widget_name})"
        bound[param_name] = widget_name
        p = params[param_name]
        if p.base.startswith("vtkMRML"):
            assert widget_class in NODE_WIDGETS, f"{widget_name}: {widget_class} cannot show a {p.base}"
            node_types = ui_property(ui_widgets(module)[widget_name], "nodeTypes")
            if node_types is not None:
                assert [s.text for s in node_types.iter("string")] == [p.base]
            continue
        assert widget_class in CONNECTABLE.get(p.base, set()), (
            f"{widget_name}: {widget_class} cannot bind {p.base}"
        )
        if widget_class == "QComboBox":
            assert p.choices, f"{param_name}: a QComboBox binding needs Annotated[str, Choice([...])]"
        if widget_class in ("ctkSliderWidget", "QSlider"):
            assert "WithinRange" in p.validators, f"{param_name}: a slider needs WithinRange"


@pytest.mark.parametrize("module", MODULES)
def test_every_parameter_is_bound_or_used_in_code(module):
    params = parameter_fields(module_py(module))
    bound = {p for _, p in ui_bindings(module).values()}
    source = module_py(module).read_text()
    body = source.split("class " + module + "Widget", 1)[1]  # code after the dataclass
    unused = [name for name in params if name not in bound and not re.search(rf"\.{name}\b", body)]
    assert not unused, f"{module}: parameters neither bound in the .ui nor used: {unused}"


def test_choice_defaults_are_valid_and_follow_the_taxonomy():
    from mediastinal_ai import taxonomy

    tree_src = module_py("MediastinalAI").read_text()
    params = parameter_fields(module_py("MediastinalAI"))
    assert params["device"].choices == list(process.DEVICES)
    assert params["sex"].choices[1:] == list(taxonomy.SEXES)
    assert params["lesionSite"].choices[1:] == list(taxonomy.LESION_SITES)
    for name in ("device", "sex", "lesionSite"):
        default = re.search(rf"^\s+{name}: .*= (.+)$", tree_src, re.M).group(1)
        assert eval(default, {"NOT_GIVEN": params["sex"].choices[0]}) in params[name].choices


def test_ctc_unit_label_comes_from_the_taxonomy():
    src = module_py("MediastinalAI").read_text()
    assert "self.ui.ctcUnitLabel.text = taxonomy.CTC_UNIT" in src


# ------------------------------------------------------------------------------ python files
@pytest.mark.parametrize(
    "path",
    sorted(p.relative_to(REPO).as_posix() for m in MODULES for p in (REPO / m).rglob("*.py")),
)
def test_module_files_compile(path):
    compile((REPO / path).read_text(), path, "exec")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_core_never_imports_slicer_vtk_or_qt():
    bad = {}
    for path in (REPO / "mediastinal_ai").rglob("*.py"):
        rel = path.relative_to(REPO).as_posix()
        top = {n.split(".")[0] for n in _imports(path)}
        if rel.startswith("mediastinal_ai/mrml/"):
            forbidden = {"qt", "ctk"} & top
            if "slicer.util" in _imports(path):
                forbidden.add("slicer.util")
        else:
            forbidden = {"slicer", "vtk", "qt", "ctk"} & top
        if forbidden:
            bad[rel] = sorted(forbidden)
    assert not bad, f"layering broken: {bad}"


@pytest.mark.parametrize("name", ["process", "dependencies", "display", "terminology"])
def test_pure_mrml_helpers_do_not_need_slicer(name):
    assert not {"slicer", "vtk", "qt", "ctk"} & {
        n.split(".")[0] for n in _imports(REPO / "mediastinal_ai" / "mrml" / f"{name}.py")
    }


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_only_slicer_side_and_light_core_at_top_level(module):
    """Heavy/adapter imports must be lazy (inside logic methods) so the module loads fast."""
    tree = ast.parse(module_py(module).read_text())
    top_level = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            top_level.add(node.module)
        elif isinstance(node, ast.Import):
            top_level.update(a.name for a in node.names)
    core = {n for n in top_level if n.startswith("mediastinal_ai")}
    assert core <= {"mediastinal_ai", "mediastinal_ai.mrml"}, core
    assert not {"numpy", "torch", "radiomics", "SimpleITK"} & top_level


# ------------------------------------------------------------------------------ adapter contracts
def _adapter_calls(module: str) -> list[tuple[str, str, int, list[str], int]]:
    """(adapter module, function, positional count, keyword names, line) for every call the
    module makes through ``from mediastinal_ai.mrml import X`` inside a function."""
    calls = []
    tree = ast.parse(module_py(module).read_text())
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef):
            continue
        aliases = {}
        for node in ast.walk(fn):
            if isinstance(node, ast.ImportFrom) and node.module == "mediastinal_ai.mrml":
                aliases.update({(a.asname or a.name): a.name for a in node.names})
        for node in ast.walk(fn):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in aliases
            ):
                kw = [k.arg for k in node.keywords if k.arg]
                calls.append((aliases[node.func.value.id], node.func.attr, len(node.args), kw, node.lineno))
    return calls


ADAPTER_CALLS = sorted({(m, *c[:2], c[2], tuple(c[3])) for m in MODULES for c in _adapter_calls(m)})


@pytest.mark.parametrize(("module", "adapter", "function", "n_args", "keywords"), ADAPTER_CALLS)
def test_logic_calls_match_the_adapter_signatures(module, adapter, function, n_args, keywords):
    """Each task adapter is written by another engineer; when it exists, our call must bind."""
    pytest.importorskip("slicer", reason="slicer-core needed to import the MRML adapters")
    if not (REPO / "mediastinal_ai" / "mrml" / f"{adapter}.py").is_file():
        pytest.skip(f"mediastinal_ai/mrml/{adapter}.py has not landed yet")
    import importlib

    mod = importlib.import_module(f"mediastinal_ai.mrml.{adapter}")
    assert hasattr(mod, function), f"mediastinal_ai.mrml.{adapter} has no {function}()"
    sig = inspect.signature(getattr(mod, function))
    sig.bind(*range(n_args), **dict.fromkeys(keywords))


def test_the_gui_uses_the_agreed_adapter_functions():
    used = {(a, f) for m in MODULES for (a, f, *_rest) in _adapter_calls(m)}
    for expected in [
        ("segmentation", "import_result"),
        ("segmentation", "rethreshold"),
        ("segmentation", "export_dicom_seg"),
        ("cnn", "predict_risk_cnn"),
        ("fusion", "predict_with_ctc"),
        ("radiomics", "predict_risk"),
        ("radiomics", "compute_all_features"),
        ("report", "save_report_file"),
        ("nodes", "volume_to_node"),
        # the GUI's child-process jobs put their results into the scene through these
        ("worker", "write_job"),
        ("worker", "read_result"),
        ("cnn", "publish_risk_cnn"),
        ("fusion", "publish_fusion"),
        ("radiomics", "publish_risk"),
        ("radiomics", "publish_features"),
    ]:
        assert expected in used, expected


# ------------------------------------------------------------------------------ CMake
def _cmake_list(text: str, var: str, module: str) -> list[str]:
    m = re.search(rf"set\({var}\s+(.*?)\)", text, re.S)
    assert m, f"no {var}"
    return [t.replace("${MODULE_NAME}", module) for t in m.group(1).split()]


@pytest.mark.parametrize("module", MODULES)
def test_module_cmake_lists_existing_files_and_all_scripts(module):
    text = (REPO / module / "CMakeLists.txt").read_text()
    assert "slicerMacroBuildScriptedModule(" in text
    assert re.search(rf"set\(MODULE_NAME {module}\)", text)
    scripts = _cmake_list(text, "MODULE_PYTHON_SCRIPTS", module)
    resources = _cmake_list(text, "MODULE_PYTHON_RESOURCES", module)
    for f in scripts + resources:
        assert (REPO / module / f).is_file(), f"{module}/CMakeLists.txt lists missing {f}"
    assert f"Resources/UI/{module}.ui" in resources and f"Resources/Icons/{module}.png" in resources
    on_disk = {
        p.relative_to(REPO / module).as_posix()
        for p in (REPO / module).rglob("*.py")
        if "Testing" not in p.parts
    }
    assert on_disk == set(scripts), f"scripts not listed in CMake: {on_disk - set(scripts)}"
    # Testing/Python registers the self-test that exists
    testing = (REPO / module / "Testing" / "Python" / "CMakeLists.txt").read_text()
    for script in re.findall(r"SCRIPT\s+\$\{CMAKE_CURRENT_SOURCE_DIR\}/(\S+)\)", testing):
        assert (REPO / module / "Testing" / "Python" / script).is_file()
    assert "add_subdirectory(Python)" in (REPO / module / "Testing" / "CMakeLists.txt").read_text()


def test_top_level_cmake_is_an_extension_with_both_modules_and_the_core():
    text = (REPO / "CMakeLists.txt").read_text()
    for var in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL"):
        assert f"set({var} " in text
    assert re.findall(r"add_subdirectory\((\w+)\)", text) == MODULES
    assert "find_package(Slicer REQUIRED)" in text and "Slicer_EXTENSION_CPACK" in text
    assert "mediastinal_ai/*.py" in text and "Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR" in text
    assert (REPO / "Resources" / "Icons" / "MediastinalAI.png").is_file()


# ------------------------------------------------------------------------------ pure helpers
def test_dependency_requirements_match_pyproject():
    tomllib = pytest.importorskip("tomllib", reason="Python < 3.11")
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = set(meta["dependencies"])
    for extra in meta["optional-dependencies"].values():
        specs.update(s for s in extra if not s.startswith("mediastinal-ai"))
    assert set(dependencies.REQUIREMENTS.values()) <= specs
    for feature, names in dependencies.FEATURES.items():
        assert set(names) <= set(dependencies.REQUIREMENTS), feature
    assert dependencies.missing(["core"]) == []  # the test environment has the core
    assert dependencies.pip_requirements(["torch", "x"]) == ["torch==2.14.1", "x"]
    with pytest.raises(ValueError):
        dependencies.missing(["no-such-feature"])


def test_progress_line_protocol():
    line = process.format_progress_line(0.5, "window 3/6\nnext")
    assert line == "MEDIASTINALAI_PROGRESS 0.5000 window 3/6 next"
    assert process.parse_progress_line(line) == (0.5, "window 3/6 next")
    assert process.parse_progress_line("MEDIASTINALAI_PROGRESS 1.7") == (1.0, "")
    assert process.parse_progress_line("MEDIASTINALAI_PROGRESS -2 x") == (0.0, "x")
    for other in ("", "INFO loading", "MEDIASTINALAI_PROGRESS abc x", "MEDIASTINALAI_PROGRESS nan"):
        assert process.parse_progress_line(other) is None
    buf = process.LineBuffer()
    assert buf.feed("MEDIASTINALAI_PROGRESS 0.1 a\nMEDIASTI") == ["MEDIASTINALAI_PROGRESS 0.1 a"]
    assert buf.feed("NALAI_PROGRESS 0.2 b\r\nlog") == ["MEDIASTINALAI_PROGRESS 0.2 b"]
    assert buf.flush() == ["log"] and buf.flush() == []


def test_segment_command_is_a_list_without_shell(tmp_path):
    ct = tmp_path / "my ct.nrrd"
    args = process.segment_command(ct, tmp_path / "out", "demo-seg-unet3d", "GPU", 0.35, (1, 2, 3, 4, 5, 6))
    assert args[:3] == ["-m", "mediastinal_ai.cli", "segment"]
    assert args[args.index("--input") + 1] == str(ct)  # one argument despite the space
    assert args[args.index("--device") + 1] == "cuda"
    assert args[args.index("--threshold") + 1] == "0.35"
    assert "--progress-lines" in args and args[-1] == "--roi=1,2,3,4,5,6"
    assert "--model" not in process.segment_command(ct, tmp_path, None)
    with pytest.raises(ValueError):
        process.segment_command(ct, tmp_path, device="TPU")
    with pytest.raises(ValueError):
        process.segment_command(ct, tmp_path, threshold=1.0)
    # RAS bounds of a Slicer ROI → LPS box
    assert process.ras_bounds_to_lps_box((-10, 20, -30, 40, 5, 6)) == (-20, -40, 5, 10, 30, 6)


def test_segment_cli_accepts_the_gui_arguments_when_it_exists():
    """The child process runs ``mediastinal_ai.cli segment``: its parser must accept what the GUI sends."""
    if not (REPO / "mediastinal_ai" / "segmentation" / "cli_segment.py").is_file():
        pytest.skip("mediastinal_ai/segmentation/cli_segment.py has not landed yet")
    import argparse

    from mediastinal_ai.segmentation import cli_segment

    parser = argparse.ArgumentParser()
    cli_segment.add_arguments(parser)
    args = process.segment_command("ct.nrrd", "out", "m", "CPU", 0.5, (0, 0, 0, 1, 1, 1))
    parser.parse_args(args[3:])
    # a box crossing the midline starts with a minus sign: it must still be one argument
    args = process.segment_command("ct.nrrd", "out", "m", "CPU", 0.5, (-40.5, -20, 5, 30, 20, 45))
    assert parser.parse_args(args[3:]).roi == (-40.5, -20.0, 5.0, 30.0, 20.0, 45.0)


def test_child_environment_puts_this_package_first(monkeypatch):
    env = process.child_environment({"PYTHONPATH": "/elsewhere", "X": "1"})
    first = env["PYTHONPATH"].split(":" if sys.platform != "win32" else ";")[0]
    assert (Path(first) / "mediastinal_ai" / "__init__.py").is_file()
    assert env["PYTHONPATH"].endswith("/elsewhere") and env["X"] == "1"


def test_display_helpers():
    assert display.format_probability(0.7345) == "73.5 %"
    assert display.format_probability(None) == "-" and display.format_probability(float("nan")) == "-"
    assert display.load_json('{"a": 1}') == {"a": 1} and display.load_json("oops") is None
    summary = display.risk_summary({"probability_high_risk": 0.2, "group": "low", "model": {"name": "m"}})
    assert summary == {"probability": "20.0 %", "group": "low", "model": "m"}
    assert display.risk_summary(None) == {"probability": "-", "group": "-", "model": "-"}
    assert display.find_ras({"roi": {"slice_index": 3, "center_ras": [1, 2, 3]}}) == [1.0, 2.0, 3.0]
    assert display.find_ras({"roi": {"center_lps": [1, 2, 3]}}) == [-1.0, -2.0, 3.0]
    assert display.find_ras({"box_ras": "abc", "n": 1}) is None


def test_model_names_put_the_default_first():
    names = display.model_names("segmentation")
    assert names and names[0] == "demo-seg-unet3d"
