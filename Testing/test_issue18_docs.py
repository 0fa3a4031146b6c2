"""Issue 18 item 9: --help shows defaults; manifest paths resolved against the CSV's folder and
shown resolved in "not found" errors; docs point at files the repository holds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mediastinal_ai.cli import COMMANDS, main

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command, option, default", [
    ("train-seg", "--device", "auto"), ("train-seg", "--seed", "0"), ("train-seg", "--name", "seg-unet3d"),
    ("train-cnn", "--epochs", None), ("extract-radiomics", "--params", None), ("run", "--steps", "segment"),
])
def test_help_shows_defaults(command, option, default, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    opts = out[out.index("options:"):]  # the option list, not the usage line
    at = opts.index(f" {option} ")
    nxt = opts.find(" --", at + len(option) + 2 + len(option))  # the next option's entry
    entry = opts[at: nxt if nxt > 0 else None]
    assert "default" in entry.lower(), entry
    if default is not None:
        assert re.search(rf"default:? {re.escape(default)}\b", entry), entry


def test_every_command_help_names_a_default_for_each_valued_option(capsys):
    """No option with a default value is silent about it in --help (flags and required options aside)."""
    import argparse
    import importlib

    from mediastinal_ai.cli import DefaultsHelpFormatter, show_defaults

    for name, (module, _) in COMMANDS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError:
            continue
        p = argparse.ArgumentParser(prog=name, formatter_class=DefaultsHelpFormatter)
        mod.add_arguments(p)
        show_defaults(p)
        for a in p._actions:
            if a.option_strings and a.default not in (None, argparse.SUPPRESS) and not isinstance(a.default, bool) \
                    and a.help is not argparse.SUPPRESS:
                entry = DefaultsHelpFormatter(name)._get_help_string(a) if a.help else ""
                assert "default" in entry.lower(), (name, a.option_strings, entry)


def test_manifest_paths_are_resolved_against_its_folder_and_errors_show_them(tmp_path, monkeypatch):
    from mediastinal_ai.cohort import read_manifest
    from mediastinal_ai.errors import InputError
    from mediastinal_ai.io import read_ct

    sub = tmp_path / "study"
    sub.mkdir()
    (sub / "manifest.csv").write_text("case_id,ct\na,images/a.nii.gz\n")
    monkeypatch.chdir(tmp_path)  # a relative manifest path, run from elsewhere
    case = read_manifest("study/manifest.csv")[0]
    assert case.ct == (tmp_path / "study" / "images" / "a.nii.gz") and case.ct.is_absolute()
    with pytest.raises(InputError) as e:
        read_ct(case.ct)
    assert str(tmp_path / "study" / "images" / "a.nii.gz") in str(e.value) and "not found" in str(e.value)


def test_docs_reference_files_the_repository_holds():
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    for d in docs:
        text = d.read_text(encoding="utf-8")
        assert "DESIGN.md" not in text, f"{d.name} points at DESIGN.md outside the repository"
        for link in re.findall(r"\]\(([^)#]+\.md)\)", text):
            assert (d.parent / link).is_file(), f"{d.name} links {link}, which does not exist"
    manifest_doc = (REPO / "docs" / "manifest.md").read_text(encoding="utf-8")
    from mediastinal_ai.cohort import COLUMNS

    for col in COLUMNS:
        assert f"`{col}`" in manifest_doc, f"docs/manifest.md does not document column {col}"
    assert (REPO / "docs" / "fusion.md").stat().st_size > 4000


def test_readme_demo_paths_are_those_demo_writes():
    """The README's demo paths must be ones `mediastinal-ai demo` writes (checked against demo.py's
    own layout: data/, results/results.csv, results/cases/<id>/report/, a scene per case)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    demo = (REPO / "mediastinal_ai" / "demo.py").read_text(encoding="utf-8")
    named = set(re.findall(r"`(demo_output/[^`]+)`", text))
    assert named, "README names no demo output"
    assert "demo_output/scene/demo.mrml" not in named and "demo_output/report/" not in named
    assert 'out / "results"' in demo and '"cases"' in demo
    for p in named:
        assert p.startswith(("demo_output/data", "demo_output/results")), p


@pytest.mark.slow
def test_readme_demo_table_names_files_a_one_case_demo_writes(tmp_path, capsys):
    """Every file the README's demo table promises is there after a real (one-case) demo run."""
    pytest.importorskip("torch")
    pytest.importorskip("radiomics")
    text = (REPO / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(demo_output/[^`]+)` \| (.*) \|$", text, flags=re.M)
    assert len(rows) >= 4, rows
    out = tmp_path / "demo_output"
    assert main(["demo", "--out", str(out), "--cases", "1", "--no-scene"]) == 0
    cases = sorted(p.name for p in (out / "results" / "cases").iterdir() if p.is_dir())
    assert len(cases) == 1 and re.fullmatch(r"synth_0900\d\d", cases[0]), cases  # the README's case-id form
    assert (out / "data" / "manifest.csv").is_file()
    checked = 0
    for path, what in rows:
        if path.endswith(".mrml"):
            continue  # --no-scene: the scene needs slicer-core
        p = tmp_path / path.replace("<case_id>", cases[0])
        assert p.exists(), f"README names {path}, the demo did not write it"
        for name in re.findall(r"`([^`/]+\.[a-z]+)`", what):  # files a folder row lists
            assert (p / name).is_file(), f"README lists {name} in {path}, the demo did not write it"
            checked += 1
    assert checked >= 10
