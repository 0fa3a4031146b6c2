"""Issue 18 item 7 (and the FROC part of item 8), as a user sees them on screen: the AUC caveats
printed by ``evaluate`` at tiny n and for a constant scorer, and ``evaluate-seg`` giving the same
(sample) SD on screen as in summary.json, its FROC figure carrying the SYNTHETIC mark."""

from __future__ import annotations

import json

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

from mediastinal_ai.cli import main  # noqa: E402


def test_evaluate_prints_the_caveats_of_a_tiny_cohort_and_a_constant_scorer(tmp_path, capsys):
    df = pd.DataFrame({"case_id": [f"c{i}" for i in range(5)], "y": [0, 0, 1, 1, 1],
                       "perfect": [0.1, 0.2, 0.8, 0.9, 0.95], "const": [0.3] * 5})
    df.to_csv(tmp_path / "p.csv", index=False)
    assert main(["evaluate", "--predictions", str(tmp_path / "p.csv"), "--label-col", "y", "--score-col", "perfect",
                 "--compare-col", "const", "--out", str(tmp_path / "ev"), "--no-report"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()

    def cautions(model: str) -> list[str]:
        """The indented caution lines right under the model's AUC line."""
        i = next(i for i, s in enumerate(lines) if s.startswith(f"{model}: AUC"))
        block = []
        for s in lines[i + 1:]:
            if not s.startswith("  caution:"):
                break
            block.append(s)
        return block

    assert any(s.startswith("perfect: AUC 1.000") for s in lines), out
    assert any("only 3 positive and 2 negative" in s for s in cautions("perfect")), out
    assert any("zero-width" in s for s in cautions("perfect")), out
    assert any("constant" in s for s in cautions("const")), out
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    by_model = {r["model"]: r for r in summary["auc"]}
    assert any("constant" in c for c in by_model["const"]["caveats"])
    assert by_model["perfect"]["caveats"]


def test_evaluate_seg_sd_on_screen_is_the_json_sample_sd_and_froc_is_marked(tmp_path, capsys, monkeypatch):
    from mediastinal_ai.evaluation import plots
    from mediastinal_ai.io import write_image
    from mediastinal_ai.volume import Volume

    marks = []
    real_stamp = plots.stamp
    monkeypatch.setattr(plots, "stamp", lambda fig, mark: marks.append(mark) or real_stamp(fig, mark))
    shape = (12, 24, 24)
    rng = np.random.default_rng(0)
    hu = np.full(shape, -1000.0)  # air around a soft-tissue body: values a CT check accepts
    hu[:, 2:22, 2:22] = 40
    ct = Volume((hu + rng.normal(0, 10, shape)).astype(np.int16), spacing_xyz=(1.0, 1.0, 2.0))
    rows = []
    for i, grow in enumerate((0, 1, 3)):  # predictions grown by 0, 1 and 3 voxels: three different Dice values
        truth = np.zeros(shape, np.uint8)
        truth[4:8, 8:16, 8:16] = 1
        pred = np.zeros(shape, np.uint8)
        pred[4:8, 8 - grow:16 + grow, 8 - grow:16 + grow] = 1
        write_image(ct, tmp_path / f"ct{i}.nii.gz")
        write_image(Volume(truth, spacing_xyz=(1.0, 1.0, 2.0)), tmp_path / f"gt{i}.nii.gz")
        (tmp_path / "pred").mkdir(exist_ok=True)
        write_image(Volume(pred, spacing_xyz=(1.0, 1.0, 2.0)), tmp_path / "pred" / f"k{i}.nii.gz")
        rows.append({"case_id": f"k{i}", "ct": f"ct{i}.nii.gz", "mask": f"gt{i}.nii.gz", "synthetic": "true"})
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    assert main(["evaluate-seg", "--manifest", str(tmp_path / "m.csv"), "--predictions", str(tmp_path / "pred"),
                 "--out", str(tmp_path / "es")]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "es" / "summary.json").read_text())
    dice = pd.read_csv(tmp_path / "es" / "per_case.csv")["dice"].to_numpy()
    sample, population = np.std(dice, ddof=1), np.std(dice, ddof=0)
    assert round(sample, 3) != round(population, 3)  # the cases tell the two apart
    assert summary["dice"]["sd"] == pytest.approx(sample)
    std_row = next(s for s in out.splitlines() if s.startswith("std"))
    screen = dict(zip(next(s for s in out.splitlines() if "dice" in s and not s.startswith(("mean", "std"))).split(),
                      map(float, std_row.split()[1:])))
    assert screen["dice"] == pytest.approx(round(sample, 3), abs=1e-9)
    assert marks == [plots.SYNTHETIC_MARK]  # the FROC figure, from the manifest's synthetic column
    assert (tmp_path / "es" / "froc.png").is_file()
