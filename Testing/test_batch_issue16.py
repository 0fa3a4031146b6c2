"""Issue 16 hardening, one test per finding: model cards cannot name paths; the run lock is an
OS-level lock; resume verifies outputs by size + sha256; case ids never collide; extract-radiomics
refuses path-like ids; SIGTERM ends a run like Ctrl-C; a case that kills its Dask worker is a
failed row, not the end of the run; summary.json always agrees with results.csv. Images are synthetic."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mediastinal_ai.batch import RunConfig, discover, run_cohort
from mediastinal_ai.batch.discover import CaseSpec
from mediastinal_ai.batch.steps import STEPS, Step
from mediastinal_ai.errors import InputError, MediastinalAIError, ModelError
from mediastinal_ai.io import write_image
from mediastinal_ai.volume import Volume

CLI = [sys.executable, "-m", "mediastinal_ai.cli"]


def synthetic_ct_file(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    a = rng.normal(40, 15, size=(6, 20, 20)).astype(np.int16)
    a[:, :4, :] = -1000
    return write_image(Volume(a, spacing_xyz=(1, 1, 2), units="HU", metadata={"synthetic": True}), path)


# ----------------------------------------------------------------------------- 1. model installs
def _model(folder: Path, name: str, weights_file: str | None = None) -> Path:
    from mediastinal_ai.fileio import sha256_file

    folder.mkdir(parents=True, exist_ok=True)
    w = folder / "w.safetensors"
    w.write_bytes(b"synthetic weights")
    card = {"name": name, "task": "segmentation", "weights_file": weights_file or w.name, "sha256": sha256_file(w)}
    p = folder / "m.model.json"
    p.write_text(json.dumps(card))
    return p


@pytest.mark.parametrize("name", ["../escaped", "/tmp/abs-escaped", "a/b", "..", ".hidden", "", "x\\..\\y"])
def test_install_refuses_path_like_names(tmp_path, name):
    from mediastinal_ai.models import install

    card = _model(tmp_path / "src", name)
    dest = tmp_path / "models" / "inner"
    with pytest.raises(ModelError, match="plain name"):
        install(card, dest_dir=dest)
    assert not (tmp_path / "models" / "escaped").exists() and not Path("/tmp/abs-escaped").exists()
    assert not dest.exists() or not any(dest.iterdir())


def test_weights_file_cannot_name_another_file(tmp_path):
    from mediastinal_ai.models import resolve

    target = tmp_path / "secret.txt"
    target.write_text("not weights")
    from mediastinal_ai.fileio import sha256_file

    card = _model(tmp_path / "m", "ok-name", weights_file="../secret.txt")
    d = json.loads(card.read_text())
    d["sha256"] = sha256_file(target)
    card.write_text(json.dumps(d))
    with pytest.raises(ModelError, match="plain name"):
        resolve(card)
    (tmp_path / "m" / "link.safetensors").symlink_to(target)
    d["weights_file"] = "link.safetensors"
    card.write_text(json.dumps(d))
    with pytest.raises(ModelError, match="outside"):
        resolve(card)


def test_good_model_still_installs(tmp_path):
    from mediastinal_ai.models import install

    m = install(_model(tmp_path / "src", "good-model_1.0"), dest_dir=tmp_path / "models")
    assert m.card_path.parent == (tmp_path / "models" / "good-model_1.0").resolve()


# ----------------------------------------------------------------------------- 4. lock + resume
def test_lock_is_exclusive_and_released_on_kill(tmp_path):
    from mediastinal_ai.batch.engine import _run_lock

    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys,time; from pathlib import Path; from mediastinal_ai.batch.engine import _run_lock\n"
        f"with _run_lock(Path({str(out)!r})):\n    print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(MediastinalAIError, match=f"pid {holder.pid}@"), _run_lock(out):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with _run_lock(out):  # the kernel dropped the dead holder's lock: no stale-lock guessing
        with pytest.raises(MediastinalAIError, match="another batch"), _run_lock(out):
            pass


def _register_writer():
    def write(ctx):
        ctx.path("out.txt").write_text(f"output of {ctx.spec.case_id}\n")
        ctx.results["wrote"] = 1

    STEPS["issue16_write"] = Step("issue16_write", write, help="test step: one output file")


@pytest.mark.parametrize("damage", ["delete", "truncate", "same_size_edit"])
def test_resume_reruns_a_case_whose_outputs_do_not_match(tmp_path, damage):
    _register_writer()
    ct = synthetic_ct_file(tmp_path / "c1.nii.gz")
    cases = [CaseSpec(case_id="c1", ct=str(ct))]
    out = tmp_path / "out"
    cfg = RunConfig(steps=["issue16_write"], workers=0)
    assert run_cohort(cases, out, cfg)[0]["status"] == "ok"
    assert run_cohort(cases, out, cfg)[0]["status"] == "skipped"
    f = out / "cases" / "c1" / "out.txt"
    if damage == "delete":
        f.unlink()
    elif damage == "truncate":
        f.write_text("")
    else:
        text = f.read_text()
        f.write_text(text.replace("c1", "X1"))
    rows = run_cohort(cases, out, cfg)
    assert rows[0]["status"] == "ok"
    assert f.read_text() == "output of c1\n"


# ----------------------------------------------------------------------------- 5. case ids
def test_case_ids_never_collide(tmp_path):
    from mediastinal_ai.batch.discover import unique_ids

    specs = [CaseSpec(case_id=i, ct="") for i in ("a_b", "a_b", "a_b_2", "A_B", "a_b_2")]
    ids = [c.case_id for c in unique_ids(specs)]
    assert len({i.casefold() for i in ids}) == 5, ids
    csv = tmp_path / "m.csv"
    ct = synthetic_ct_file(tmp_path / "ct.nii.gz")
    csv.write_text("case_id,ct\n" + "".join(f"{i},{ct}\n" for i in ("a/b", "a_b", "a_b_2")))
    ids = [c.case_id for c in discover(csv)]
    assert len(set(ids)) == 3, ids


# ----------------------------------------------------------------------------- 6. extract-radiomics
def test_extract_radiomics_refuses_path_like_ids(tmp_path):
    ct = synthetic_ct_file(tmp_path / "ct.nii.gz")
    csv = tmp_path / "m.csv"
    csv.write_text(f"case_id,ct,mask\n../../escaped,{ct},{ct}\n")
    out = tmp_path / "deep" / "out"
    r = subprocess.run([*CLI, "extract-radiomics", "--manifest", str(csv), "--out", str(out), "--workers", "1"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "not plain names" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "escaped__reader1.json").exists() and not list(tmp_path.rglob("escaped*"))


# ----------------------------------------------------------------------------- 3, 9: discover
def test_discover_refuses_fifo_and_marks_non_utf8_names(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="FIFO"):
        discover(fifo)
    d = tmp_path / "in"
    d.mkdir()
    synthetic_ct_file(d / "good.nii.gz")
    try:
        os.rename(os.fsencode(synthetic_ct_file(d / "x.nii.gz")), os.path.join(os.fsencode(d), b"bad\xff.nii.gz"))
    except OSError:
        pytest.skip("file system refuses non-UTF-8 names")
    cases = discover(d)
    assert sorted(c.error is None for c in cases) == [False, True]
    out = tmp_path / "out"
    rows = run_cohort(cases, out, RunConfig(steps=["qc"], workers=0))
    assert sorted(r["status"] for r in rows) == ["failed", "ok"]
    assert any("UTF-8" in r["error"] for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["failed"] == 1


# ----------------------------------------------------------------------------- 8. SIGTERM
def _slow_plugin(tmp_path: Path) -> str:
    (tmp_path / "issue16_slow.py").write_text(
        "import time\nfrom mediastinal_ai.batch.steps import Step, register\n"
        "def run(ctx):\n    time.sleep(0.4)\n    ctx.path('o.txt').write_text('x')\n"
        "register(Step('slow16', run, help='test: a slow step'))\n")
    return "issue16_slow"


@pytest.mark.parametrize("moment", ["at_start", "mid_case", "after_some"])
def test_sigterm_is_graceful_and_resumable(tmp_path, moment):
    """SIGTERM at three moments (while the command starts, inside a case, after some cases):
    a clean "interrupted" exit, summary.json agreeing with the finished cases (a case published
    in the instant of the signal may lack its row; it is then skipped, not lost, on resume), and
    a rerun that ends with all 12 cases."""
    d = tmp_path / "in"
    d.mkdir()
    for k in range(12):
        synthetic_ct_file(d / f"c{k:02d}.nii.gz", seed=k)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    args = [*CLI, "run", "--input", str(d), "--out", str(out), "--steps", "slow16", "--workers", "0",
            "--plugin", _slow_plugin(tmp_path)]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    ready = {"at_start": lambda: True,
             "mid_case": lambda: (out / ".work").is_dir() and any(x.name.startswith("c") for x in (out / ".work").iterdir()),
             "after_some": lambda: len(list((out / "cases").glob("*/case.json"))) >= 2}[moment]
    deadline = time.time() + 60
    if moment == "at_start":
        time.sleep(1.0)  # the interpreter is up and the CLI is importing its modules
    while time.time() < deadline and not ready():
        time.sleep(0.02)
    p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode in (2, 130), (p.returncode, stderr)  # 2: the batch said "interrupted", 130: the CLI did
    assert "interrupted" in stderr and "Traceback" not in stderr
    done = len(list((out / "cases").glob("*/case.json")))
    assert done < 12
    if (out / "summary.json").exists():
        summary = json.loads((out / "summary.json").read_text())
        assert not summary["complete"] and summary["ok"] in (done, done - 1), (summary, done)
        table = list(csv.DictReader((out / "results.csv").open(encoding="utf-8")))
        assert summary["cases"] == len(table) and summary["ok"] == sum(r["status"] == "ok" for r in table)
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"12 case(s): {12 - done} ok, {done} skipped" in r.stdout, r.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["ok"] + summary["skipped"] == 12


# ----------------------------------------------------------------------------- 3. worker death
@pytest.mark.slow
def test_case_that_kills_its_worker_fails_alone(tmp_path):
    """c1 crashes in native code (abort), c3 runs out of memory (the nanny kills it; the worker's
    limit is lowered to ~900 MB through Dask's own config for this run only): both are failed
    rows with the reason, the healthy cases queued on the same dying worker still finish."""
    from distributed.system import MEMORY_LIMIT  # what LocalCluster's memory_limit='auto' starts from

    (tmp_path / "issue16_crash.py").write_text(
        "import os, time\nimport numpy as np\nfrom mediastinal_ai.batch.steps import Step, register\n"
        "def run(ctx):\n    if ctx.spec.case_id == 'c1':\n        os.abort()\n"
        "    if ctx.spec.case_id == 'c3':  # up to 2 GB, then held: the nanny kills it at ~900 MB\n"
        "        hog = []\n        for _ in range(40):\n"
        "            hog.append(np.ones(50 * 2**20 // 8))\n            time.sleep(0.05)\n"
        "        time.sleep(120)\n"
        "    ctx.results['fine'] = 1\n"
        "register(Step('crash16', run, help='test: a native crash and an out-of-memory case'))\n")
    d = tmp_path / "in"
    d.mkdir()
    for k in range(4):
        synthetic_ct_file(d / f"c{k}.nii.gz", seed=k)
    out = tmp_path / "out"
    scratch = tmp_path / "tmp"  # TMPDIR of the run: Dask's scratch must stay under --out
    scratch.mkdir()
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "TMPDIR": str(scratch), "DASK_DISTRIBUTED__WORKER__MEMORY__TERMINATE": str(900e6 / MEMORY_LIMIT),
           "DASK_DISTRIBUTED__WORKER__MEMORY__PAUSE": "False", "DASK_DISTRIBUTED__WORKER__MEMORY__SPILL": "False",
           "DASK_DISTRIBUTED__WORKER__MEMORY__TARGET": "False"}
    r = subprocess.run([*CLI, "run", "--input", str(d), "--out", str(out), "--steps", "crash16", "--workers", "1",
                        "--plugin", "issue16_crash"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "2 ok" in r.stdout and "2 failed" in r.stdout, r.stdout + r.stderr
    assert "worker process died" in r.stdout and "out of memory" in r.stdout
    rows = {row["case_id"]: row for row in csv.DictReader((out / "results.csv").open())}
    assert rows["c1"]["status"] == rows["c3"]["status"] == "failed"
    assert rows["c1"]["error_type"] == rows["c3"]["error_type"] == "WorkerDied"
    assert rows["c0"]["status"] == rows["c2"]["status"] == "ok"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and (summary["ok"], summary["failed"]) == (2, 2)
    assert sorted((out / "cases").iterdir()) == [out / "cases" / "c0", out / "cases" / "c2"]
    assert not (out / ".work").exists()
    assert not list(scratch.iterdir()), list(scratch.iterdir())


@pytest.mark.slow
def test_dead_case_leaves_no_running_marker(tmp_path, monkeypatch):
    """A case whose worker died cannot clear its '.work/running/<case>.json' itself; the run
    must, or the progress line shows it as 'still in step …' for the rest of the run."""
    (tmp_path / "issue16_abort.py").write_text(
        "import os\nfrom mediastinal_ai.batch.steps import Step, register\n"
        "def run(ctx):\n    if ctx.spec.case_id == 'c1':\n        os.abort()\n"
        "register(Step('abort16', run, help='test: a native crash'))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    import importlib

    importlib.import_module("issue16_abort")
    cases = [CaseSpec(case_id=f"c{k}", ct=str(synthetic_ct_file(tmp_path / f"c{k}.nii.gz", seed=k))) for k in range(2)]
    out = tmp_path / "out"
    seen: dict[str, bool] = {}

    def on_result(row):
        seen[row["case_id"]] = (out / ".work" / "running" / f"{row['case_id']}.json").exists()

    rows = run_cohort(cases, out, RunConfig(steps=["abort16"], workers=1, params={"plugins": ["issue16_abort"]}),
                      on_result=on_result)
    assert {r["case_id"]: r["status"] for r in rows} == {"c0": "ok", "c1": "failed"}
    assert seen == {"c0": False, "c1": False}


def test_summary_names_the_results_csv_it_describes(tmp_path):
    """results.csv and summary.json are two atomic writes; a kill between them is detectable."""
    from mediastinal_ai.batch.engine import RunConfig, _write_results, summary_matches_results

    cfg = RunConfig(steps=["segment"])
    rows = [{"case_id": "a", "status": "ok", "seconds": 1.0}, {"case_id": "b", "status": "failed",
                                                                 "error": "x", "error_type": "InputError"}]
    _write_results(tmp_path, rows, cfg, partial=True)
    assert summary_matches_results(tmp_path)
    summary = (tmp_path / "summary.json").read_text()
    _write_results(tmp_path, rows + [{"case_id": "c", "status": "ok", "seconds": 2.0}], cfg, partial=True)
    (tmp_path / "summary.json").write_text(summary)  # as if killed after results.csv, before summary.json
    assert not summary_matches_results(tmp_path)
    _write_results(tmp_path, rows + [{"case_id": "c", "status": "ok", "seconds": 2.0}], cfg, partial=False)
    assert summary_matches_results(tmp_path)  # the next write (a resumed run) heals it


def test_resume_recomputes_a_segmented_case_whose_uncertainty_or_anatomy_is_gone(tmp_path):
    """A resumed run that finds the uncertainty map or the saved anatomy missing computes the case
    again (case.json hashes every file), and the step's ``outputs`` name those files too."""
    from mediastinal_ai.synthetic import generate_case

    ct = write_image(generate_case(7, inplane_size=64).ct, tmp_path / "s0.nii.gz")
    cases = [CaseSpec(case_id="s0", ct=str(ct))]
    out = tmp_path / "out"
    cfg = RunConfig(steps=["segment"], workers=0)
    assert run_cohort(cases, out, cfg)[0]["status"] == "ok"
    case = out / "cases" / "s0"
    rec = json.loads((case / "case.json").read_text())
    written = json.loads((case / "segmentation_result.json").read_text())["files"].values()
    assert "uncertainty.nrrd" in written and "anatomy_labels.nrrd" in written
    assert set(written) <= set(rec["outputs"])
    assert run_cohort(cases, out, cfg)[0]["status"] == "skipped"
    for name in ("uncertainty.nrrd", "anatomy_labels.nrrd"):
        (case / name).unlink()
        assert run_cohort(cases, out, cfg)[0]["status"] == "ok", name
        assert (case / name).is_file()
