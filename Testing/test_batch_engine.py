"""Batch engine on cheap steps: discovery, per-case isolation, resumability, atomic
publication, dry run, Dask. (Model steps and the malformed-input corpus: test_batch_pipeline.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mediastinal_ai.batch import RunConfig, discover, order_steps, run_cohort
from mediastinal_ai.batch.discover import safe_case_id
from mediastinal_ai.cohort import write_manifest
from mediastinal_ai.errors import InputError
from mediastinal_ai.volume import Volume

CLI = [sys.executable, "-m", "mediastinal_ai.cli"]


def _ct(seed: int) -> Volume:
    rng = np.random.default_rng(seed)
    a = rng.normal(40, 15, size=(6, 24, 24)).astype(np.int16)
    a[:, :3, :] = -1000  # air, so the image reads as HU
    return Volume(a, spacing_xyz=(1.5, 1.5, 3.0), metadata={"synthetic": True})


@pytest.fixture()
def image_folder(tmp_path) -> Path:
    from mediastinal_ai.io import write_image

    d = tmp_path / "in put ünï"  # spaces and unicode in paths must work
    for i in range(3):
        write_image(_ct(i), d / f"case {i}.nii.gz")
    return d


def test_discover_folder_and_manifest_rows(image_folder, tmp_path):
    cases = discover(image_folder)
    assert [c.case_id for c in cases] == ["case_0", "case_1", "case_2"]
    m = write_manifest(tmp_path / "m.csv", [
        {"case_id": "a", "ct": str(image_folder / "case 0.nii.gz"), "ctc": 9},
        {"case_id": "b", "ct": str(image_folder / "case 1.nii.gz"), "ctc": "lots"},
    ])
    cases = discover(m)
    assert cases[0].clinical == {"ctc": 9.0} and cases[0].error is None
    assert cases[1].error and "not a number" in cases[1].error
    with pytest.raises(InputError):
        discover(tmp_path / "missing")
    assert safe_case_id("../../etc/passwd") == "etc_passwd"


def test_steps_are_ordered_and_validated():
    assert order_steps(["report", "segment"]) == ["qc", "segment", "report"]
    with pytest.raises(InputError, match="unknown step"):
        order_steps(["segmentt"])


def test_run_is_isolated_resumable_and_atomic(image_folder, tmp_path):
    bad = image_folder / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b\x08 definitely not a gzip stream")
    out = tmp_path / "out"
    cases = discover(image_folder)
    rows = run_cohort(cases, out, RunConfig(steps=["qc"]))
    status = {r["case_id"]: r["status"] for r in rows}
    assert status == {"broken": "failed", "case_0": "ok", "case_1": "ok", "case_2": "ok"}
    assert "broken.nii.gz" in next(r["error"] for r in rows if r["case_id"] == "broken")
    assert not (out / "cases" / "broken").exists()  # no partial output for a failed case
    assert not (out / ".work").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] == 3 and summary["failed"] == 1
    rec = json.loads((out / "cases" / "case_0" / "case.json").read_text())
    assert rec["status"] == "ok" and rec["results"]["shape_zyx"] == "6x24x24"

    # unchanged inputs -> skipped; a changed input -> recomputed
    rows2 = run_cohort(cases, out, RunConfig(steps=["qc"]))
    assert {r["case_id"]: r["status"] for r in rows2}["case_0"] == "skipped"
    from mediastinal_ai.io import write_image

    write_image(_ct(99), image_folder / "case 1.nii.gz")
    rows3 = {r["case_id"]: r["status"] for r in run_cohort(cases, out, RunConfig(steps=["qc"]))}
    assert rows3["case_0"] == "skipped" and rows3["case_1"] == "ok"


def test_debris_of_a_killed_run_is_never_trusted(image_folder, tmp_path):
    out = tmp_path / "out"
    cases = discover(image_folder)
    # simulate a kill -9 between writing outputs and publishing: debris in .work, no case.json
    (out / ".work" / "case_0.deadbeef").mkdir(parents=True)
    (out / ".work" / "case_0.deadbeef" / "half.nrrd").write_bytes(b"half")
    (out / "cases" / "case_1").mkdir(parents=True)  # a folder without case.json is not a result
    rows = run_cohort(cases, out, RunConfig(steps=["qc"]))
    assert all(r["status"] == "ok" for r in rows)
    assert not (out / ".work").exists()
    assert (out / "cases" / "case_1" / "case.json").is_file()


def test_cli_dry_run_and_exit_codes(image_folder, tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([*CLI, "run", "--input", str(image_folder), "--out", str(out), "--steps", "qc", "--dry-run"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "case_0" in r.stdout and "will run" in r.stdout and not out.exists()
    r = subprocess.run([*CLI, "run", "--input", str(image_folder), "--out", str(out), "--steps", "qc",
                        "--workers", "0"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "3 ok" in r.stdout
    r = subprocess.run([*CLI, "run", "--input", str(tmp_path / "nope"), "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 2 and "input not found" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_dask_local_cluster_gives_the_same_results(image_folder, tmp_path):
    seq = run_cohort(discover(image_folder), tmp_path / "seq", RunConfig(steps=["qc"], workers=0))
    par = run_cohort(discover(image_folder), tmp_path / "par", RunConfig(steps=["qc"], workers=2))
    key = lambda rows: {r["case_id"]: (r["status"], r.get("hu_p99")) for r in rows}  # noqa: E731
    assert key(seq) == key(par)
    # scratch space stayed inside --out
    assert not any(p.name.startswith("dask-scratch") for p in Path.cwd().iterdir())


def test_local_cluster_workers_keep_glibc_malloc_defaults(tmp_path):
    """Dask's MALLOC_TRIM_THRESHOLD_=65536 made torch steps 1.6x slower per case on a worker;
    our LocalCluster drops it and keeps Dask's one-thread-per-worker settings."""
    from distributed import Client

    from mediastinal_ai.batch.engine import make_local_cluster

    def env():
        import os

        return os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("MKL_NUM_THREADS")

    cluster = make_local_cluster(1, tmp_path / "dask")
    try:
        with Client(cluster) as client:
            assert list(client.run(env).values()) == [(None, "1")]
    finally:
        cluster.close()
