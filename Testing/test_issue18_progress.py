"""Issue 18 item 5: progress bars with ETA on a terminal, plain lines otherwise, and a note when
a segmentation config is GPU-scale on a CPU."""

from __future__ import annotations

import io
import logging

import pytest

from mediastinal_ai.progress import TerminalProgress, _hms


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_bar_redraws_in_place_with_eta_and_keeps_epoch_lines():
    clock, out = _Clock(), _Tty()
    bar = TerminalProgress("train-seg", stream=out, clock=clock, width=120, redraw_s=0.0,
                           keep=lambda m: m.startswith("epoch") and "loss" in m)
    assert bar.tty
    bar(0.0, "preparing")
    clock.t = 10.0
    bar(0.1, "epoch 1/10 batch 5/50")  # rate starts here: no ETA yet
    assert bar.eta() is None
    clock.t = 40.0
    bar(0.4, "epoch 4/10 batch 50/50")
    assert bar.eta() == pytest.approx(30.0 / 0.3 * 0.6)  # 60 s left
    clock.t = 41.0
    bar(0.41, "epoch 4/10 loss 0.41 val Dice 0.62")  # kept: a permanent line
    clock.t = 100.0
    bar(1.0, "done")
    text = out.getvalue()
    assert "\r" in text and "#" in text and "ETA" in text
    assert "1:00" in text or "0:59" in text  # the ETA drawn on the bar (m:ss)
    kept = [line for line in text.split("\n") if "epoch 4/10 loss 0.41" in line]
    assert kept and "elapsed" in kept[0]
    assert text.endswith("\n")  # the bar's line is closed at the end
    assert bar.lines and "val Dice 0.62" in bar.lines[0]


def test_not_a_terminal_gives_throttled_plain_lines(caplog):
    clock, out = _Clock(), io.StringIO()
    bar = TerminalProgress("segment", stream=out, clock=clock, min_step=0.1, min_interval_s=30)
    assert not bar.tty
    with caplog.at_level(logging.INFO, logger="mediastinal_ai.progress"):
        for i in range(101):  # 100 windows, one report each, 0.1 s apart
            clock.t = i * 0.1
            bar(i / 100, f"window {i}/100")
    assert out.getvalue() == ""  # no carriage returns into a log file
    lines = [r.getMessage() for r in caplog.records]
    assert 10 <= len(lines) <= 13  # every 10 %, not 101 lines
    assert all("segment:" in s and "elapsed" in s and "ETA" in s for s in lines)
    assert "100.0%" in lines[-1] and "window 100/100" in lines[-1]
    # the time rule: a slow job still says something every 30 s
    slow = TerminalProgress("x", stream=io.StringIO(), clock=clock, min_step=0.5, min_interval_s=30)
    slow(0.01, "a")
    clock.t += 31
    slow(0.02, "b")
    assert len(slow.lines) == 2


def test_hms():
    assert _hms(59.6) == "1:00" and _hms(3725) == "1:02:05" and _hms(-3) == "0:00"


def test_paper_config_on_cpu_gets_a_gpu_scale_note_demo_does_not():
    pytest.importorskip("torch")
    from mediastinal_ai.segmentation.compute import forward_flops, training_estimate, training_note
    from mediastinal_ai.segmentation.plan import load_config

    paper, demo = load_config("segmentation_paper"), load_config("segmentation_demo")
    note = training_note(paper, "cpu", name="config 'segmentation_paper'")
    assert note and "GPU-scale" in note and "per epoch" in note and "--device cuda" in note
    assert training_note(paper, "cuda") is None
    assert training_note(demo, "cpu") is None  # CPU-sized on purpose
    e = training_estimate(paper)
    assert e["epochs"] == paper["training"]["epochs"]
    # counted, not guessed: doubling the widths about quadruples the convolutions' work
    f1 = forward_flops((8, 16, 32, 64), (16, 32, 32))
    f2 = forward_flops((16, 32, 64, 128), (16, 32, 32))
    assert 3.5 < f2 / f1 < 4.5
    # a tiny run of the paper config (1 epoch) is not called GPU-scale
    assert training_note(paper, "cpu", epochs=1, batch_size=1) is None or e["tflop_per_epoch"] > 1000


def test_segment_note_for_a_gpu_scale_model_on_cpu():
    pytest.importorskip("torch")
    import numpy as np

    from mediastinal_ai.segmentation.compute import inference_note
    from mediastinal_ai.segmentation.plan import Plan, load_config
    from mediastinal_ai.volume import Volume

    ct = Volume(np.zeros((300, 512, 512), np.int16), spacing_xyz=(0.8, 0.8, 1.0))  # a thin-slice chest CT
    paper = Plan(**load_config("segmentation_paper")["plan"])
    demo = Plan(**load_config("segmentation_demo")["plan"])
    note = inference_note(paper, ct, "cpu")
    assert note and "windows" in note and "TFLOP" in note and "--device cuda" in note
    assert inference_note(paper, ct, "cuda") is None
    assert inference_note(demo, ct, "cpu") is None


def test_train_seg_cli_prints_the_note_before_training(tmp_path, capsys, monkeypatch):
    pytest.importorskip("torch")
    import mediastinal_ai.segmentation.train as train_mod
    from mediastinal_ai.cli import main

    called = {}

    def fake_train(*a, **kw):  # the note must come before any (long) training starts
        called["progress"] = kw["progress"]
        return {"best_val_dice": 0.5, "weights": "w.safetensors"}

    monkeypatch.setattr(train_mod, "train", fake_train)
    rc = main(["train-seg", "--manifest", str(tmp_path / "m.csv"), "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "GPU-scale" in err and "segmentation_paper" in err
    assert isinstance(called["progress"], TerminalProgress)


def test_train_seg_reports_every_batch_and_validation(tmp_path):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    import numpy as np

    from mediastinal_ai.segmentation.train import PreparedCase, train

    rng = np.random.default_rng(0)
    cases = []
    for i in range(2):
        img = rng.normal(0.3, 0.05, (12, 40, 40)).astype(np.float32)
        m = np.zeros(img.shape, np.uint8)
        m[3:9, 10:22, 12:24] = 1
        cases.append(PreparedCase(f"c{i}", np.clip(img + 0.4 * m, 0, 1).astype(np.float32), m))
    tiny = {"plan": {"target_spacing_xyz": [2.5, 2.5, 5.0], "hu_window": [-200, 300], "patch_size_zyx": [8, 32, 32],
                     "features": [4, 8, 16, 32]},
            "training": {"epochs": 2, "iterations_per_epoch": 3, "batch_size": 2, "validation_every": 1}}
    seen: list[tuple[float, str]] = []
    s = train("hand-made", tmp_path, tiny, device="cpu", prepared={"train": cases[:1], "val": cases[1:], "test": []},
              progress=lambda f, m: seen.append((f, m)))
    # item 7: a model saved with a poor validation Dice says so in its summary and its card
    poor = s["best_val_dice"] < 0.3
    assert (s["quality_warning"] is not None) == poor
    from pathlib import Path

    card_path = Path(s["weights"]).with_name("seg-unet3d.model.json")  # train's default name
    assert card_path.is_file()
    import json

    metrics = json.loads(card_path.read_text())["metrics"]
    assert ("quality_warning" in metrics) == poor
    if poor:
        assert "poor validation Dice" in metrics["quality_warning"] or "unknown" in metrics["quality_warning"]
    msgs = [m for _, m in seen]
    assert [m for m in msgs if "batch" in m] == [f"epoch {e}/2 batch {b}/3" for e in (1, 2) for b in (1, 2, 3)]
    assert sum("validating" in m for m in msgs) == 2
    assert sum(m.startswith("epoch") and "loss" in m for m in msgs) == 2
    fr = [f for f, _ in seen]
    assert fr == sorted(fr) and fr[-1] == pytest.approx(1.0)


def test_segment_cli_off_a_terminal_logs_plain_progress_lines_with_eta(tmp_path, caplog, capsys):
    """What a user piping `segment` into a log file sees: throttled lines with elapsed/ETA, no bar."""
    pytest.importorskip("torch")
    from mediastinal_ai.cli import main
    from mediastinal_ai.io import write_image
    from mediastinal_ai.synthetic import generate_case

    ct = write_image(generate_case(95_011, "thymoma_B1").ct, tmp_path / "ct.nii.gz")
    with caplog.at_level(logging.INFO, logger="mediastinal_ai.progress"):
        assert main(["segment", "--input", str(ct), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "mediastinal_ai.progress"]
    assert len(lines) >= 3, lines
    assert all(s.startswith("segment:") and "elapsed" in s and "ETA" in s for s in lines), lines
    assert "100.0%" in lines[-1]
    assert "\r" not in capsys.readouterr().err  # no carriage-return bar off a terminal
