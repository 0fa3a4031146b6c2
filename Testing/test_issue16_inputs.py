"""Issue 16, the smaller findings: CTC values typed as '1_000', '-0' or full-width digits; manifest
rows with more fields than the header ('12,5'); unknown classes in model cards; the run lock for
another user's live run and under a race; --threshold checked before any work; no empty --out
left by a failed command. Images are synthetic unless named real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mediastinal_ai.errors import InputError, MediastinalAIError, ModelError

CLI = [sys.executable, "-m", "mediastinal_ai.cli"]


# ----------------------------------------------------------------------------- CTC values
@pytest.mark.parametrize("text", ["1_000", "-0", "-0.0", "１２", "٣", "12 5", "0x10", "1,5", "12.5.1", "e5", "+-3"])
def test_ctc_refuses_what_is_not_a_plain_number(text):
    from mediastinal_ai.fusion.schema import validate_ctc

    with pytest.raises(InputError):
        validate_ctc(text)


@pytest.mark.parametrize("text,value", [("12", 12.0), (" 7.5 ", 7.5), ("0", 0.0), ("+5", 5.0), ("1e1", 10.0),
                                        (".5", 0.5), ("3.", 3.0)])
def test_ctc_plain_numbers_still_read(text, value):
    from mediastinal_ai.fusion.schema import validate_ctc

    assert validate_ctc(text) == value


# ----------------------------------------------------------------------------- manifests
def test_manifest_row_with_extra_fields_is_refused(tmp_path):
    from mediastinal_ai.cohort import read_manifest

    ct = tmp_path / "ct.nii.gz"
    ct.write_bytes(b"x")
    m = tmp_path / "m.csv"
    m.write_text(f"case_id,ct,ctc\na,{ct},12,5\nb,{ct},9.5\nc,{ct},3,\n", encoding="utf-8")
    cases, errors = read_manifest(m, strict=False)
    assert [c.case_id for c in cases] == ["b", "c"]  # a trailing empty field is harmless
    assert len(errors) == 1 and errors[0][0] == 1 and "more field" in errors[0][1] and "'5'" in errors[0][1]
    with pytest.raises(InputError, match="decimal separator"):
        read_manifest(m)


# ----------------------------------------------------------------------------- model cards
def _card(tmp_path: Path, task: str, classes: list[str]) -> Path:
    from mediastinal_ai.fileio import sha256_file

    d = tmp_path / task
    d.mkdir()
    (d / "w.safetensors").write_bytes(b"synthetic weights")
    p = d / "m.model.json"
    p.write_text(json.dumps({"name": "m", "task": task, "weights_file": "w.safetensors",
                             "sha256": sha256_file(d / "w.safetensors"), "classes": classes}))
    return p


@pytest.mark.parametrize("task,classes", [
    ("segmentation", ["background", "heart"]),
    ("segmentation", ["anterior mediastinal tumor", "background"]),
    ("risk-cnn", ["benign", "malignant"]),
    ("risk-radiomics", ["high", "low"]),
    ("risk-radiomics", ["low", "high", "unknown"]),
])  # fusion cards: unknown lesion classes refused by fusion.model_io (test_fusion_model.py)
def test_card_with_unknown_classes_is_refused(tmp_path, task, classes):
    from mediastinal_ai.models import resolve

    with pytest.raises(ModelError, match="classes"):
        resolve(_card(tmp_path, task, classes))


def test_builtin_cards_and_trainers_agree_with_the_class_table():
    from mediastinal_ai.cnn.model import CLASSES
    from mediastinal_ai.models import resolve
    from mediastinal_ai.models.card import TASK_CLASSES
    from mediastinal_ai.models.registry import DEFAULT_MODELS

    assert TASK_CLASSES["risk-cnn"] == CLASSES
    for task, name in DEFAULT_MODELS.items():
        m = resolve(name, task=task)  # verify() checks the classes: every shipped card passes
        if task in TASK_CLASSES:
            assert m.card.classes == TASK_CLASSES[task], task


# ----------------------------------------------------------------------------- run lock
def test_lock_of_another_user_is_live_not_stale(tmp_path, monkeypatch):
    """Another user's 0644 lock file cannot be opened for writing; a read-only descriptor must
    still see that user's live run (it was taken for stale and both ran)."""
    from mediastinal_ai.batch.engine import _run_lock

    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from pathlib import Path; from mediastinal_ai.batch.engine import _run_lock\n"
        f"with _run_lock(Path({str(out)!r})):\n    print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    real_open = os.open

    def other_users_file(path, flags, *a):
        if str(path).endswith(".lock") and flags & (os.O_RDWR | os.O_WRONLY):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *a)

    try:
        assert holder.stdout.readline().strip() == "locked"
        monkeypatch.setattr(os, "open", other_users_file)
        with pytest.raises(MediastinalAIError, match=f"pid {holder.pid}@"), _run_lock(out):
            pass
    finally:
        holder.kill()
        holder.wait()
    with _run_lock(out):  # the holder is gone: the read-only descriptor takes the lock
        pass


def test_lock_race_lets_exactly_one_in(tmp_path):
    from mediastinal_ai.batch.engine import _run_lock

    out = tmp_path / "out"
    out.mkdir()
    n = 16
    start = threading.Barrier(n)
    inside, most, got, busy = [0], [0], [], []
    guard = threading.Lock()

    def racer(k: int) -> None:
        start.wait()
        try:
            with _run_lock(out):
                with guard:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                got.append(k)
                time.sleep(0.3)
                with guard:
                    inside[0] -= 1
        except MediastinalAIError:
            busy.append(k)

    threads = [threading.Thread(target=racer, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert most[0] == 1 and len(got) >= 1 and len(got) + len(busy) == n, (most, got, busy)


# ----------------------------------------------------------------------------- CLI: early checks, no empty --out
def _ct_file(tmp_path: Path) -> Path:
    from mediastinal_ai.io import write_image
    from mediastinal_ai.volume import Volume

    rng = np.random.default_rng(0)
    a = rng.normal(40, 15, size=(8, 24, 24)).astype(np.int16)
    a[:, :4] = -1000
    return write_image(Volume(a, spacing_xyz=(1, 1, 2), metadata={"synthetic": True}), tmp_path / "ct.nii.gz")


@pytest.mark.parametrize("command", ["segment", "run"])
def test_threshold_checked_before_any_work(tmp_path, command, capsys, real_ct_dir):
    """On a real CT, so that without the early check the model would load and inference would run."""
    from mediastinal_ai.cli import main

    out = tmp_path / "deep" / "out"
    ct = real_ct_dir / "mediastinum_crop_ct.nii.gz"
    rc = main([command, "--input", str(ct), "--out", str(out), "--threshold", "1.5", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 2 and "--threshold must be a probability" in err, err
    assert not out.exists()


def test_failed_command_leaves_no_empty_out(tmp_path, capsys):
    from mediastinal_ai.cli import main

    missing = tmp_path / "nope.nii.gz"
    for args in (["segment", "--input", str(missing)], ["run", "--input", str(missing), "--workers", "0"],
                 ["run", "--input", str(_ct_file(tmp_path)), "--steps", "segment", "--seg-model",
                  str(tmp_path / "no-model"), "--workers", "0"]):
        out = tmp_path / "out"
        assert main([*args, "--out", str(out)]) == 2
        assert not out.exists(), args
        assert "Traceback" not in capsys.readouterr().err
    import mediastinal_ai.cnn.cli_predict as predict_cnn

    def creates_out_then_fails(args):
        (Path(args.out) / "sub").mkdir(parents=True)
        raise InputError("synthetic failure after --out was made")

    predict_cnn_run = predict_cnn.run
    predict_cnn.run = creates_out_then_fails
    try:
        out = tmp_path / "made"
        assert main(["predict-cnn", "--ct", "x", "--mask", "y", "--out", str(out)]) == 2
        assert not out.exists()
    finally:
        predict_cnn.run = predict_cnn_run
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    assert main(["segment", "--input", str(missing), "--out", str(kept)]) == 2
    assert (kept / "notes.txt").read_text() == "mine"  # an existing --out is never removed


# ----------------------------------------------------------------------------- extract-radiomics (library)
def test_extract_cohort_library_refuses_path_like_ids(tmp_path):
    """The CLI refuses them up front; the library function (used by other callers) does too."""
    from mediastinal_ai.io import read_ct, write_image
    from mediastinal_ai.radiomics.extract import extract_cohort

    ct = _ct_file(tmp_path)
    vol = read_ct(ct)
    a = np.zeros(vol.shape, np.uint8)
    a[2:6, 8:16, 8:16] = 1
    mask = write_image(vol.with_array(a, units="label"), tmp_path / "mask.nii.gz")
    m = tmp_path / "m.csv"
    m.write_text(f"case_id,ct,mask\n../../escaped,{ct},{mask}\n", encoding="utf-8")
    out = tmp_path / "a" / "b" / "out"
    with pytest.raises(InputError, match="not a plain name"):
        extract_cohort(m, out, workers=0)
    assert not list(tmp_path.rglob("escaped*"))


# ----------------------------------------------------------------------------- permission problems
def test_permission_problem_is_named_not_called_corrupt(tmp_path, monkeypatch):
    """As root (CI containers) chmod does not bite, so the OS answer is simulated: both where the
    reader asks (os.access) and where the NIfTI check opens the file (PermissionError)."""
    import gzip

    from mediastinal_ai.io import read_ct

    ct = _ct_file(tmp_path)  # .nii.gz
    real_access, real_gzip_open = os.access, gzip.open
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if str(p) == str(ct) else real_access(p, mode))
    with pytest.raises(InputError, match="permission denied"):
        read_ct(ct)
    monkeypatch.setattr(os, "access", real_access)

    def denied(p, *a, **k):
        if str(p) == str(ct):
            raise PermissionError(13, "Permission denied", str(p))
        return real_gzip_open(p, *a, **k)

    monkeypatch.setattr(gzip, "open", denied)
    with pytest.raises(InputError, match="permission denied") as e:
        read_ct(ct)
    assert "corrupt" not in str(e.value)


# ----------------------------------------------------------------------------- non-UTF-8 output paths
@pytest.mark.skipif(os.name != "posix", reason="byte file names are a POSIX thing")
def test_non_utf8_output_paths_are_refused_before_simpletk(tmp_path, capsys):
    """SimpleITK aborts the whole process (SIGABRT) when it writes to a path that is not UTF-8."""
    from mediastinal_ai.batch import RunConfig, run_cohort
    from mediastinal_ai.batch.discover import CaseSpec
    from mediastinal_ai.cli import main
    from mediastinal_ai.io import read_ct, write_image

    bad = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"out\xff")))
    vol = read_ct(_ct_file(tmp_path))
    with pytest.raises(InputError, match="UTF-8"):
        write_image(vol, bad / "mask.nrrd")
    with pytest.raises(InputError, match="UTF-8"):
        run_cohort([CaseSpec(case_id="c", ct=str(tmp_path / "ct.nii.gz"))], bad, RunConfig(steps=["qc"], workers=0))
    assert main(["segment", "--input", str(tmp_path / "ct.nii.gz"), "--out", str(bad)]) == 2
    assert "--out is not valid UTF-8" in capsys.readouterr().err
    assert not os.path.exists(os.fsencode(bad))
