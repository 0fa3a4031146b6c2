"""Ready for the Slicer Extensions Index: licence, CMake metadata, catalog entry, pictures.

What the index needs (read in Slicer's source and the ExtensionsIndex repository): the
``EXTENSION_*`` variables of the top-level CMakeLists.txt, an icon and screenshot that exist at
their URLs, a licence file, and a catalog entry ``<Extension>.json`` following
``Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json`` (Slicer repository). The draft
entry lives in Resources/ExtensionsIndex/. URLs point into this repository's published location;
that the files exist at those paths is checked here (the network is not used).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mediastinal_ai.mrml import dependencies

REPO = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"

# slicer-extension-catalog-entry-schema-v1.0.1.json (Slicer main): required keys, the only keys
# allowed (additionalProperties: false) and their JSON types.
_SCHEMA_ID = "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json#"
_REQUIRED = {"$schema", "category", "scm_url"}
_TYPES = {"$schema": str, "category": str, "scm_url": str, "scm_revision": str, "scm_type": str,
          "build_dependencies": list, "build_subdirectory": str, "enabled": bool, "tier": int}


def _cmake_vars() -> dict[str, str]:
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    return dict(re.findall(r'^set\((EXTENSION_\w+)\s+"?(.*?)"?\)\s*(?:#.*)?$', text, re.M))


def test_license_file_is_the_apache_2_license_the_code_declares():
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert 'license = { text = "Apache-2.0" }' in (REPO / "pyproject.toml").read_text(encoding="utf-8")


def test_extension_metadata_is_complete_and_states_the_supported_slicer():
    v = _cmake_vars()
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert v.get(key), f"{key} is not set"
    need = ".".join(str(n) for n in dependencies.MINIMUM_SLICER)
    assert f"3D Slicer {need} or later" in v["EXTENSION_DESCRIPTION"]
    assert "not for clinical use" in v["EXTENSION_DESCRIPTION"]
    assert v["EXTENSION_DEPENDS"].split() == ["PyTorch"]  # torch is installed through it
    for doc in ("README.md", "docs/slicer.md"):
        assert f"Slicer {need}" in (REPO / doc).read_text(encoding="utf-8"), doc


@pytest.mark.parametrize("key", ["EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"])
def test_icon_and_screenshot_urls_point_to_png_files_in_this_repository(key):
    v = _cmake_vars()
    repo_url = v["EXTENSION_HOMEPAGE"].split("#")[0].rstrip("/")
    owner_repo = repo_url.removeprefix("https://github.com/")
    for url in v[key].split():
        prefix = f"https://raw.githubusercontent.com/{owner_repo}/main/"
        assert url.startswith(prefix), url
        path = REPO / url.removeprefix(prefix)
        assert path.is_file(), f"{key} points to {path.relative_to(REPO)}, which does not exist"
        assert path.read_bytes()[:8] == PNG


def test_screenshot_says_what_it_is():
    """The picture is rendered by tools/make_slicer_screenshot.py, not captured from Slicer: the
    tool writes that into the image's banner, and docs/slicer.md says so too."""
    tool = (REPO / "tools" / "make_slicer_screenshot.py").read_text(encoding="utf-8")
    assert "not a capture of the Slicer window" in tool and "SYNTHETIC" in tool
    assert "not a capture of the Slicer window" in (REPO / "docs" / "slicer.md").read_text(encoding="utf-8")


def test_catalog_entry_draft_follows_the_schema_and_the_cmake_metadata():
    entry = json.loads((REPO / "Resources" / "ExtensionsIndex" / "MediastinalAI.json").read_text(encoding="utf-8"))
    assert entry["$schema"] == _SCHEMA_ID
    assert _REQUIRED <= set(entry) and set(entry) <= set(_TYPES), set(entry) - set(_TYPES)
    for key, value in entry.items():
        assert type(value) is _TYPES[key], (key, value)  # bool is not int here, as in JSON Schema
    assert all(isinstance(d, str) for d in entry["build_dependencies"])
    assert 1 <= entry["tier"] <= 5
    v = _cmake_vars()
    assert entry["category"] == v["EXTENSION_CATEGORY"]
    assert entry["build_dependencies"] == v["EXTENSION_DEPENDS"].split()
    assert entry["scm_url"] == v["EXTENSION_HOMEPAGE"].split("#")[0]
    assert entry.get("build_subdirectory", ".") == v.get("EXTENSION_BUILD_SUBDIRECTORY", ".")


def test_module_icons_are_128_pixel_pngs_listed_in_cmake():
    import struct

    for module in ("MediastinalAI", "MediastinalAIRadiomics"):
        icon = REPO / module / "Resources" / "Icons" / f"{module}.png"
        data = icon.read_bytes()
        assert data[:8] == PNG
        width, height = struct.unpack(">II", data[16:24])  # IHDR
        assert (width, height) == (128, 128), icon


# ------------------------------------------------------------------------------ translation
_UI_CALLS = {"errorDisplay", "confirmOkCancelDisplay", "infoDisplay", "warningDisplay", "_status", "_setStatus",
             "QLabel", "setText", "appendPlainText"}


def _literal_words(node) -> str:
    """The literal text of a str / f-string / concatenation, HTML tags removed ('' if none)."""
    import ast

    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value
    elif isinstance(node, ast.JoinedStr):
        text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
    elif isinstance(node, ast.BinOp):
        text = _literal_words(node.left) + " " + _literal_words(node.right)
    else:
        return ""
    return re.sub(r"<[^>]*>|&#?\w+;", "", text)


@pytest.mark.parametrize("path", ["MediastinalAI/MediastinalAI.py", "MediastinalAIRadiomics/MediastinalAIRadiomics.py",
                                  *sorted(p.relative_to(REPO).as_posix()
                                          for p in (REPO / "MediastinalAI" / "MediastinalAILib").glob("*.py"))])
def test_user_visible_strings_go_through_slicer_i18n(path):
    """Every literal word the GUI shows (dialogs, status lines, labels) is wrapped in ``_()``
    (``slicer.i18n.tr``), as the peer extensions do; self-test messages (delayDisplay) are
    developer output and, as in Slicer's own module tests, not translated."""
    import ast

    tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
    bare = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in _UI_CALLS:
                for arg in [*node.args, *(k.value for k in node.keywords if k.arg in ("windowTitle", "text"))]:
                    if re.search(r"[A-Za-z]{2,}", _literal_words(arg)):
                        bare.append((node.lineno, name, _literal_words(arg)[:60]))
        elif (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Attribute)
              and node.targets[0].attr == "text" and re.search(r"[A-Za-z]{2,}", _literal_words(node.value))):
            bare.append((node.lineno, ".text =", _literal_words(node.value)[:60]))
    assert not bare, f"untranslated user-visible strings in {path}: {bare}"
    source = (REPO / path).read_text(encoding="utf-8")
    calls_tr = any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "_"
                   for n in ast.walk(tree))
    if calls_tr:  # files that show text take _ from slicer.i18n (a fallback only without it)
        assert "from slicer.i18n import tr as _" in source
