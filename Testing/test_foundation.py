"""Core contracts every task builds on: Volume geometry, atomic output, model cards and the
registry, cohort manifests, and the CLI's behaviour (instant help, clean errors)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mediastinal_ai.cohort import read_manifest, write_manifest
from mediastinal_ai.errors import InputError, ModelError
from mediastinal_ai.fileio import atomic_path, atomic_write_json, sha256_file
from mediastinal_ai.models import ModelCard, install, list_models, resolve, verify, write_card_for
from mediastinal_ai.volume import Volume

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "mediastinal_ai.cli"]


def _oblique_direction() -> np.ndarray:
    a = np.deg2rad(20)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    b = np.deg2rad(10)
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


# ---------------------------------------------------------------- Volume
def test_volume_index_to_lps_matches_sitk_for_oblique_geometry():
    arr = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    vol = Volume(arr, spacing_xyz=(0.7, 0.8, 2.5), origin_xyz=(-100.0, 20.0, 300.0), direction=_oblique_direction())
    img = vol.to_sitk()
    for ijk in [(0, 0, 0), (5, 4, 3), (2, 1, 3)]:
        assert np.allclose(vol.index_to_lps(ijk), img.TransformIndexToPhysicalPoint(ijk), atol=1e-9)
        assert np.allclose(vol.lps_to_index(vol.index_to_lps(ijk)), ijk, atol=1e-9)
    # array order is z, y, x: voxel (i=5, j=4, k=3) is arr[3, 4, 5]
    assert img.GetPixel(5, 4, 3) == arr[3, 4, 5]
    back = Volume.from_sitk(img)
    assert back.same_geometry(vol) and np.array_equal(back.array, arr)
    m = vol.ijk_to_lps_matrix()
    assert np.allclose((m @ [5, 4, 3, 1])[:3], vol.index_to_lps((5, 4, 3)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"array": np.zeros((4, 4))},
        {"array": np.zeros((2, 2, 2)), "spacing_xyz": (1, 0, 1)},
        {"array": np.zeros((2, 2, 2)), "spacing_xyz": (1, float("nan"), 1)},
        {"array": np.zeros((2, 2, 2)), "origin_xyz": (0, float("inf"), 0)},
    ],
)
def test_volume_refuses_bad_geometry(kwargs):
    with pytest.raises(ValueError):
        Volume(**kwargs)


def test_with_array_keeps_geometry_and_checks_shape():
    vol = Volume(np.zeros((3, 4, 5), np.int16), spacing_xyz=(1, 2, 3), metadata={"a": 1})
    mask = vol.with_array(np.ones((3, 4, 5), np.uint8), units="label", b=2)
    assert mask.same_geometry(vol) and mask.units == "label" and mask.metadata == {"a": 1, "b": 2}
    with pytest.raises(ValueError, match="does not match"):
        vol.with_array(np.ones((3, 4, 4)))


# ---------------------------------------------------------------- atomic output
def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out" / "result.json"
    atomic_write_json(target, {"ok": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half written")
        raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"ok": 1}
    assert [p.name for p in target.parent.iterdir()] == ["result.json"]


def test_atomic_output_has_the_permissions_of_a_plain_write(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "r.json", {"ok": 1})
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(mask)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777 == 0o644


# ---------------------------------------------------------------- model cards / registry
def _make_model(folder: Path, name: str = "toy-seg", task: str = "segmentation") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    w = folder / f"{name}.safetensors"
    w.write_bytes(b"weights-" + name.encode())
    return write_card_for(w, ModelCard(name=name, task=task, weights_file="", demo=True))


def test_card_roundtrip_and_demo_label(tmp_path):
    card_path = _make_model(tmp_path)
    m = verify(card_path, expected_task="segmentation")
    assert m.card.sha256 == sha256_file(m.weights_path)
    assert "not for clinical use" in m.card.intended_use and "demo" in m.label
    with pytest.raises(ModelError, match="not 'fusion'"):
        verify(card_path, expected_task="fusion")


def test_tampered_weights_are_refused(tmp_path):
    card_path = _make_model(tmp_path)
    (tmp_path / "toy-seg.safetensors").write_bytes(b"tampered")
    with pytest.raises(ModelError, match="sha256 mismatch"):
        verify(card_path)


def test_registry_resolves_by_name_and_installs_local_file(tmp_path, monkeypatch):
    src = _make_model(tmp_path / "download")
    user = tmp_path / "user_models"
    monkeypatch.setenv("MEDIASTINAL_AI_MODELS", str(user))
    with pytest.raises(ModelError, match="not found"):
        resolve("toy-seg")
    sha = json.loads(src.read_text())["sha256"]
    with pytest.raises(ModelError, match="does not match"):
        install(src, sha256="0" * 64)
    with pytest.raises(ModelError, match="remote URLs"):
        install("https://example.org/model.model.json")
    installed = install(f"file://{src}", sha256=sha)
    assert installed.card_path.parent == user / "toy-seg"
    assert resolve("toy-seg").weights_path == installed.weights_path
    assert [c.name for c, _ in list_models("segmentation")] .count("toy-seg") == 1
    assert resolve(str(src)).card.name == "toy-seg"  # a path works too


def test_card_loader_rejects_garbage(tmp_path):
    p = tmp_path / "x.model.json"
    p.write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        ModelCard.load(p)
    p.write_text(json.dumps({"name": "x", "task": "astrology", "weights_file": "w"}))
    with pytest.raises(ModelError, match="unknown model task"):
        ModelCard.load(p)


# ---------------------------------------------------------------- manifests
def test_manifest_roundtrip_and_row_errors(tmp_path):
    rows = [
        {"case_id": "a", "ct": "images/a.nii.gz", "malignant": 1, "who_risk": "high", "ctc": 12.5, "synthetic": "true"},
        {"case_id": "b", "ct": "/abs/b.nii.gz", "malignant": 0, "ctc": "", "site_note": "x"},
    ]
    m = write_manifest(tmp_path / "manifest.csv", rows)
    cases = read_manifest(m)
    assert cases[0].ct == tmp_path / "images/a.nii.gz" and cases[0].high_risk == 1 and cases[0].synthetic
    assert cases[1].ct == Path("/abs/b.nii.gz") and cases[1].ctc is None and cases[1].extra == {"site_note": "x"}

    bad = tmp_path / "bad.csv"
    bad.write_text("case_id,ct,ctc,malignant\na,a.nii,abc,0\nb,b.nii,1,0\nc,,1,0\nd,d.nii,1,7\nb,b2.nii,1,0\n")
    with pytest.raises(InputError, match="row 1: column 'ctc' is not a number"):
        read_manifest(bad)
    cases, errors = read_manifest(bad, strict=False)
    assert [c.case_id for c in cases] == ["b"]
    assert [r for r, _ in errors] == [1, 3, 4, 5]
    assert "duplicate case_id" in errors[-1][1]


# ---------------------------------------------------------------- CLI
def test_cli_help_is_fast_and_lists_commands():
    t0 = time.perf_counter()
    out = subprocess.run([*CLI, "--help"], capture_output=True, text=True, check=True)
    elapsed = time.perf_counter() - t0
    assert "train-seg" in out.stdout and "synth" in out.stdout
    # Not a timing test of our code: a guard that --help never imports torch (which alone takes seconds).
    assert elapsed < 5.0
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, mediastinal_ai.cli as c; c._top_parser(); print('torch' in sys.modules)"],
        capture_output=True, text=True, check=True,
    )
    assert probe.stdout.strip() == "False"


def test_cli_reports_user_errors_without_traceback(tmp_path):
    out = subprocess.run([*CLI, "models", "verify", str(tmp_path / "nope")], capture_output=True, text=True)
    assert out.returncode == 2
    assert "error:" in out.stderr and "Traceback" not in out.stderr
    out = subprocess.run([*CLI, "no-such-command"], capture_output=True, text=True)
    assert out.returncode == 2
