"""Issue 18 item 9: docs/walkthrough.md is run as written — every ``mediastinal-ai`` line of its
bash blocks, in order, in one working folder, on the small synthetic cohort its first step makes
— and its outputs are the ones the page promises. No user code between the commands."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WALKTHROUGH = REPO / "docs" / "walkthrough.md"


def walkthrough_commands() -> list[list[str]]:
    text = WALKTHROUGH.read_text(encoding="utf-8")
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip() if " #" in line else line.strip()
            if line.startswith("mediastinal-ai "):
                cmds.append(shlex.split(line)[1:])
    return cmds


def test_walkthrough_lists_the_journey():
    names = [c[0] for c in walkthrough_commands()]
    assert names == ["synth", "extract-radiomics", "train-radiomics", "train-cnn", "train-seg", "evaluate", "run",
                     "evaluate-seg", "evaluate", "report"]


def test_walkthrough_runs_as_written(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("radiomics")
    pytest.importorskip("skops")
    import torch

    from mediastinal_ai.cli import main

    torch.set_num_threads(2)
    monkeypatch.chdir(tmp_path)
    for argv in walkthrough_commands():
        rc = main(list(argv))
        assert rc == 0, f"walkthrough command failed (exit {rc}): mediastinal-ai {shlex.join(argv)}"

    # what the page says is there
    for p in ("models/radiomics/my-radiomics.model.json", "models/radiomics/test_predictions.csv",
              "models/cnn/my-cnn.model.json", "models/cnn/training_curves.png", "models/seg/my-seg.model.json",
              "figures/radiomics-test/roc.png", "results/predictions.csv", "figures/segmentation/froc.csv",
              "figures/cohort/roc.png", "figures/cohort/roc.svg", "figures/cohort/metrics.csv",
              "figures/cohort/cohort_report.html", "figures/cohort/cohort_report.pdf"):
        assert (tmp_path / p).is_file(), p
    assert list((tmp_path / "figures/cohort").glob("training_curves_*.png"))
    assert list((tmp_path / "figures/cohort").glob("confusion_*.png"))
    n_cases = len((tmp_path / "cohort/manifest.csv").read_text().strip().splitlines()) - 1
    reports = list((tmp_path / "results/cases").glob("*/report/report.pdf"))
    assert len(reports) == n_cases
    s = json.loads((tmp_path / "figures/cohort/summary.json").read_text())
    assert s["synthetic"] is True and s["n"] == n_cases
    assert [r["model"] for r in s["auc"]] == ["p_high_risk_radiomics", "p_high_risk_cnn"]
    assert s["comparisons"] and "p" in s["comparisons"][0]
    html = (tmp_path / "figures/cohort/cohort_report.html").read_text(encoding="utf-8")
    assert "SYNTHETIC" in html
    # the models the batch used are the walkthrough's own, not the demo models
    card = json.loads((tmp_path / "models/radiomics/my-radiomics.model.json").read_text())
    first = next((tmp_path / "results/cases").iterdir())
    rad = json.loads((first / "radiomics_result.json").read_text())
    assert card["name"] in json.dumps(rad)
