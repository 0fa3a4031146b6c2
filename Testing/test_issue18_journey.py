"""Issue 18: the researcher's path from own cohort to evaluate — no silent mismatch, no glue code.

Item 1: a feature table extracted with other radiomics parameters is refused by train-radiomics,
the card names the table's own parameters, predict-radiomics refuses an edited card.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mediastinal_ai.cli import main
from mediastinal_ai.errors import InputError, ModelError


# ----------------------------------------------------------------------------- helpers
def _demo_feature_names() -> list[str]:
    from mediastinal_ai.models import resolve

    return list(resolve(None, task="risk-radiomics").card.input_schema["features"])


def _feature_cohort(tmp: Path, n: int = 24, params: str = "demo", sidecar: bool = True) -> tuple[Path, Path]:
    """A manifest (labels only; a training from a table never reads the images) and a feature table
    with the column names the ``params`` extraction gives, written as extract-radiomics writes it.

    The feature values are random with a signal in a few columns: this tests the plumbing
    (parameters, cards, prediction tables), not radiomics.
    """
    import pandas as pd

    from mediastinal_ai.radiomics.extract import write_table
    from mediastinal_ai.radiomics.params import load_params, params_hash

    rng = np.random.default_rng(18)
    names = _demo_feature_names()
    y = np.array([0, 1] * (n // 2))
    X = rng.normal(0, 1, (n, len(names)))
    X[:, :5] += 1.5 * y[:, None]
    ids = [f"c{i:03d}" for i in range(n)]
    table = pd.DataFrame(X, columns=names)
    table.insert(0, "reader", "1")
    table.insert(0, "case_id", ids)
    csv_path, _ = write_table(table, tmp / "features.csv")
    if sidecar:
        p = load_params(params)
        (tmp / "features.json").write_text(json.dumps({"params": p, "params_hash": params_hash(p)}))
    man = tmp / "manifest.csv"
    rows = ["case_id,ct,mask,who_risk,split,synthetic"]
    rows += [f"{c},{c}.nii.gz,{c}_mask.nii.gz,{'high' if t else 'low'},{'test' if i % 8 >= 6 else 'train'},true"
             for i, (c, t) in enumerate(zip(ids, y))]
    man.write_text("\n".join(rows) + "\n")
    return man, csv_path


# ----------------------------------------------------------------------------- item 1
def test_params_for_table_adopts_refuses_and_checks_names(tmp_path):
    from mediastinal_ai.radiomics.extract import columns_match_params, params_for_table
    from mediastinal_ai.radiomics.params import load_params, params_hash

    _, table = _feature_cohort(tmp_path)
    assert params_hash(params_for_table(table, None)) == params_hash(load_params("demo"))
    assert params_hash(params_for_table(table, "demo")) == params_hash(load_params("demo"))
    with pytest.raises(InputError, match="other radiomics parameters"):
        params_for_table(table, "paper")
    # no sidecar: parameters must be given, and the column names must fit them
    (tmp_path / "features.json").unlink()
    with pytest.raises(InputError, match="no sidecar"):
        params_for_table(table, None)
    with pytest.raises(InputError, match="does not fit --params"):
        params_for_table(table, "paper")  # paper enables wavelet etc.; the table has none
    assert params_hash(params_for_table(table, "demo")) == params_hash(load_params("demo"))
    other_sigma = load_params("demo")
    other_sigma["imageType"]["LoG"]["sigma"] = [1.0, 4.0]
    assert any("sigma" in p for p in columns_match_params(_demo_feature_names(), other_sigma))


def test_train_radiomics_refuses_mismatch_card_has_table_params_predict_refuses_edited_card(tmp_path, capsys):
    pytest.importorskip("radiomics")
    pytest.importorskip("skops")
    from mediastinal_ai.radiomics.params import load_params, params_hash

    man, table = _feature_cohort(tmp_path)
    out = tmp_path / "model"
    # 1. other parameters than the table's: refused before anything is written
    assert main(["train-radiomics", "--manifest", str(man), "--features", str(table), "--params", "paper",
                 "--out", str(out), "--classifiers", "svm"]) == 2
    assert "other radiomics parameters" in capsys.readouterr().err
    assert not out.exists()
    # 2. no --params: the table's (demo) parameters go into the card, with their hash
    assert main(["train-radiomics", "--manifest", str(man), "--features", str(table), "--out", str(out),
                 "--classifiers", "svm,logistic", "--name", "my-rad"]) == 0
    card = json.loads((out / "my-rad.model.json").read_text())
    demo_hash = params_hash(load_params("demo"))
    assert params_hash(load_params(card["preprocessing"]["radiomics_params"])) == demo_hash
    assert card["preprocessing"]["radiomics_params_hash"] == demo_hash
    # item 3: the trainer wrote its validation (out-of-fold) and test prediction tables
    import pandas as pd

    val, test = pd.read_csv(out / "val_predictions.csv"), pd.read_csv(out / "test_predictions.csv")
    assert list(val.columns) == list(test.columns)
    assert {"case_id", "who_risk", "high_risk", "p_high_risk_radiomics", "p_high_risk_radiomics_logistic"} <= set(val)
    assert len(test) == card["training_data"]["n_test"] == 6 and len(val) == card["training_data"]["n_train"]
    assert not set(val.case_id) & set(test.case_id)
    ev = tmp_path / "eval"
    assert main(["evaluate", "--predictions", str(out / "test_predictions.csv"), "--label-col", "who_risk",
                 "--score-col", "p_high_risk_radiomics", "--threshold-from", str(out / "val_predictions.csv"),
                 "--out", str(ev), "--no-report"]) == 0
    summary = json.loads((ev / "summary.json").read_text())
    assert summary["n"] == 6 and summary["n_pos"] == int(test.high_risk.sum())
    assert "separate training/validation" in summary["threshold_note"]
    # 3. an edited card (parameters changed after training) is refused at prediction time
    from mediastinal_ai.radiomics import load_model, predict_risk
    from mediastinal_ai.synthetic import generate_case

    case = generate_case(7100)
    edited = dict(card)
    edited["preprocessing"] = {**card["preprocessing"], "radiomics_params": load_params("paper")}
    (out / "my-rad.model.json").write_text(json.dumps(edited))
    with pytest.raises(ModelError, match="card was edited"):
        predict_risk(case.ct, case.mask, model=load_model(str(out / "my-rad.model.json")))
