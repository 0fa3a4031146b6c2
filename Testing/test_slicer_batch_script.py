"""The headless batch script run the way Slicer runs ``--python-script``: by file path.

Slicer (CTK's ``executeFile``, read in Slicer's source: ``qSlicerCoreApplication.cxx`` calls it,
and ``qSlicerPythonManager.cxx`` notes that it inserts the script's folder first on
``sys.path``) execs the file in ``__main__``'s globals with ``__file__`` set and ``__package__``
unset. Here a child Python does exactly that on slicer-core, on a small synthetic CT.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed")

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "mediastinal_ai" / "mrml" / "batch.py"

# What CTK's ctkAbstractPythonManager::executeFile runs (sys.path insert, exec in __main__).
EXECUTE_FILE = textwrap.dedent("""
    import sys
    script, args = sys.argv[1], sys.argv[2:]
    sys.argv = [script, *args]
    sys.path.insert(0, __import__("os").path.dirname(script))
    g = globals()
    g["__file__"] = script
    g.pop("__package__", None)
    g["__package__"] = None
    exec(compile(open(script).read(), script, "exec"), g)
""")


def _run_as_slicer_does(script: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    # cwd is not the repo, so only the script's own folder-juggling can find the package
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-c", EXECUTE_FILE, str(script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_batch_script_by_file_path_with_its_folder_first_on_sys_path(tmp_path):
    from mediastinal_ai.io import write_image
    from mediastinal_ai.volume import Volume

    a = np.full((6, 24, 24), 40, np.int16)
    a[:, :3, :] = -1000
    inp = tmp_path / "in"
    write_image(Volume(a, spacing_xyz=(1.5, 1.5, 3.0), metadata={"synthetic": True}), inp / "case1.nii.gz")
    out = tmp_path / "out"
    r = _run_as_slicer_does(SCRIPT, ["--", "--input", str(inp), "--out", str(out), "--steps", "qc"], tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    rows = (out / "results.csv").read_text()
    assert "case1" in rows and "error" not in rows.lower().split("\n", 1)[1], rows
    scenes = list(out.rglob("*.mrml"))
    assert scenes, f"no scene written: {sorted(p.name for p in out.rglob('*'))}"


def test_script_mode_imports_pyradiomics_not_the_adapter(tmp_path):
    """After the script's start-up, ``import radiomics`` is pyradiomics (the adapter module
    ``mrml/radiomics.py`` sits in the script's folder and would shadow it)."""
    pytest.importorskip("radiomics", reason="pyradiomics is not installed")
    # the real script's start-up, with runpy.run_module replaced by a probe of what 'radiomics' is
    code = EXECUTE_FILE.replace('exec(compile(open(script).read(), script, "exec"), g)', textwrap.dedent("""
        import runpy
        def fake(name, run_name=None, alter_sys=False):
            import radiomics
            print("RADIOMICS", radiomics.__file__)
            raise SystemExit(0)
        runpy.run_module = fake
        exec(compile(open(script).read(), script, "exec"), g)
    """))
    r = subprocess.run([sys.executable, "-c", code, str(SCRIPT)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("RADIOMICS"))
    assert "mrml" not in line and "radiomics" in line, line
