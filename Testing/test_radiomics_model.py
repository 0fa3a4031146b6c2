"""The shipped demo radiomics model: held-out synthetic cases, the CLI, and the MRML adapter."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("radiomics")
pytest.importorskip("skops")

from mediastinal_ai import taxonomy  # noqa: E402
from mediastinal_ai.errors import InputError  # noqa: E402
from mediastinal_ai.models import resolve  # noqa: E402
from mediastinal_ai.radiomics import load_model, predict_risk  # noqa: E402
from mediastinal_ai.synthetic import generate_case  # noqa: E402

HELD_OUT_SEEDS = range(7000, 7030)  # the demo model was trained on seeds 1000-1159
TET = list(taxonomy.WHO_LOW + taxonomy.WHO_HIGH)


@pytest.fixture(scope="module")
def demo():
    return load_model(None)


def test_demo_model_card_is_labelled_and_verified(demo):
    r = resolve(None, task="risk-radiomics")
    assert r.card.name == "demo-risk-radiomics-svm" and r.card.demo and "not for clinical use" in r.card.intended_use
    assert r.card.training_data["synthetic"] is True
    assert r.weights_path.stat().st_size < 2_000_000
    m = r.card.metrics["models"]
    assert set(m) == {"svm", "logistic", "knn", "extratrees", "mlp"}
    for k in ("auc", "accuracy", "sensitivity", "specificity", "ppv", "npv"):
        assert m["svm"]["test"][k]["ci_low"] <= m["svm"]["test"][k]["value"] <= m["svm"]["test"][k]["ci_high"]
    assert 1 <= len(demo.card.input_schema["selected_features"]) <= 40


@pytest.mark.slow
def test_demo_model_beats_chance_on_new_synthetic_cases(demo):
    from mediastinal_ai.radiomics.stats import auc_ci

    y, p = [], []
    for s in HELD_OUT_SEEDS:
        c = generate_case(s, classes=TET)
        r = predict_risk(c.ct, c.mask, model=demo)
        y.append(int(c.who_risk == "high"))
        p.append(r["probability_high_risk"])
    auc = auc_ci(np.array(y), np.array(p))
    print(f"demo radiomics model on {len(y)} new synthetic cases: AUC {auc['value']:.3f} "
          f"[{auc['ci_low']:.3f}, {auc['ci_high']:.3f}] (DeLong 95% CI)")
    assert 0 < sum(y) < len(y)
    assert auc["value"] > 0.6 and auc["ci_low"] > 0.5


def test_predict_result_and_cli(tmp_path, demo):
    from mediastinal_ai.cli import main
    from mediastinal_ai.io import write_image

    c = generate_case(7100, classes=TET)
    r = predict_risk(c.ct, c.mask, model=demo)
    assert 0.0 <= r["probability_high_risk"] <= 1.0 and r["group"] in ("low", "high")
    assert [f["feature"] for f in r["features"]] == demo.card.input_schema["selected_features"]
    assert all(np.isfinite(f["contribution"]) for f in r["features"])
    assert r["model"]["demo"] and r["warning"]
    write_image(c.ct, tmp_path / "ct.nii.gz")
    write_image(c.mask, tmp_path / "mask.nii.gz")
    out = tmp_path / "result.json"
    assert main(["predict-radiomics", "--ct", str(tmp_path / "ct.nii.gz"), "--mask", str(tmp_path / "mask.nii.gz"),
                 "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["probability_high_risk"] == pytest.approx(r["probability_high_risk"], abs=1e-6)
    assert d["model"]["sha256"] == demo.sha256
    empty = c.mask.with_array(np.zeros(c.mask.shape, np.uint8))
    with pytest.raises(InputError, match="empty"):
        predict_risk(c.ct, empty, model=demo)


@pytest.mark.mrml
def test_mrml_predict_risk_and_all_features_write_tables():
    pytest.importorskip("slicer")
    from mediastinal_ai.mrml import nodes
    from mediastinal_ai.mrml import radiomics as mrad

    c = generate_case(7101, classes=TET)
    scene = nodes.new_scene()
    vn = nodes.volume_to_node(scene, c.ct, "CT")
    sn, sid = nodes.mask_to_segment(scene, c.mask, vn)
    seen = []
    table, result = mrad.predict_risk(scene, vn, sn, sid, progress=lambda f, m: seen.append(f))
    rows = nodes.table_to_records(table)
    assert rows[0]["item"] == "P(high risk)"
    assert rows[0]["value"] == pytest.approx(result["probability_high_risk"])
    assert len(rows) == 1 + len(result["features"])
    assert mrad.stored_result(table)["probability_high_risk"] == pytest.approx(result["probability_high_risk"])
    assert table.GetAttribute("MediastinalAI.modelSha256") == result["model"]["sha256"] and seen[-1] == 1.0
    # same on the core directly (segment → mask on the CT grid is exact here)
    assert result["probability_high_risk"] == pytest.approx(predict_risk(c.ct, c.mask)["probability_high_risk"],
                                                            abs=1e-9)
    table2, _ = mrad.predict_risk(scene, vn, sn, sid)
    assert table2 is table  # refilled, not duplicated
    feats = mrad.compute_all_features(scene, vn, sn, sid, params="demo")
    frows = nodes.table_to_records(feats)
    assert len(frows) == 107 + 2 * 93
    assert {r["image_type"] for r in frows} == {"original", "log-sigma-2-0-mm-3D", "log-sigma-4-0-mm-3D"}
