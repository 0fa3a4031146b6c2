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
    # item 7: a model whose cross-validated AUC is near chance is flagged in the card and on screen
    cv = card["metrics"]["models"]["svm"]["cv_auc_train"].get("value")
    poor = cv is None or cv < 0.6
    assert ("quality_warning" in card["extra"]) == poor
    assert ("WARNING: " in capsys.readouterr().out) == poor
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


# ----------------------------------------------------------------------------- item 6 (cards) + 3 (CNN tables)
def _who_cohort(tmp: Path, n: int = 12) -> Path:
    """A small synthetic WHO cohort with a stratified train/val/test split written into the manifest."""
    import csv

    from mediastinal_ai import taxonomy
    from mediastinal_ai.synthetic import generate_cohort

    man = generate_cohort(n, tmp / "cohort", seed=4242, classes=list(taxonomy.WHO_LOW + taxonomy.WHO_HIGH),
                          inplane_size=64)
    rows = list(csv.DictReader(man.read_text().splitlines()))
    count = {"low": 0, "high": 0}
    for r in rows:
        k = count[r["who_risk"]]
        count[r["who_risk"]] += 1
        r["split"] = "test" if k == 0 else "val" if k == 1 else "train"
    assert min(count.values()) >= 3, count  # the fixed seed gives both classes in every split
    with open(man, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return man


def test_train_cnn_card_has_held_out_test_split_sizes_manifest_sha_and_prediction_tables(tmp_path):
    pytest.importorskip("torch")
    import pandas as pd

    from mediastinal_ai.fileio import sha256_file

    man = _who_cohort(tmp_path)
    out = tmp_path / "cnn"
    assert main(["train-cnn", "--manifest", str(man), "--out", str(out), "--backbone", "shufflenet_v2_x1_0",
                 "--epochs", "2", "--batch-size", "4", "--input-size", "48", "--device", "cpu", "--name", "tiny"]) == 0
    card = json.loads((out / "tiny.model.json").read_text())
    td, m = card["training_data"], card["metrics"]
    assert td["split_sizes"] == {"train": 8, "val": 2, "test": 2, "unit": "cases"}
    assert td["manifest_sha256"] == sha256_file(man) and td["synthetic"] is True
    assert m["test_cases"] == 2 and len(m["test_auc_ci95_delong"]) == 2 and 0.0 <= m["test_auc"] <= 1.0
    assert m["test_threshold_metrics"]["n"] == 2 and "validation" in m["threshold_from"]
    assert card["license"] and card["data_license"].startswith("synthetic") and card["changelog"]
    val, test = pd.read_csv(out / "val_predictions.csv"), pd.read_csv(out / "test_predictions.csv")
    assert len(val) == 2 and len(test) == 2 and set(test.split) == {"test"}
    manifest = pd.read_csv(man)
    truth = dict(zip(manifest.case_id, manifest.who_risk))
    assert all(truth[c] == r for c, r in zip(test.case_id, test.who_risk))
    # the card's threshold is the one evaluate --threshold-from picks on the validation table
    from mediastinal_ai.evaluation import youden_threshold

    assert m["threshold"] == pytest.approx(youden_threshold(val.high_risk.to_numpy(), val.p_high_risk_cnn.to_numpy()),
                                           abs=1e-12)


def test_segmentation_card_written_by_the_trainer_path_says_synthetic_and_has_licence(tmp_path):
    """The segmentation trainer builds its card without a 'synthetic' key (train.py) and saves it
    through model_io.save_model → write_card_for: the flag comes from the manifest."""
    torch = pytest.importorskip("torch")
    from mediastinal_ai.models import ModelCard, verify
    from mediastinal_ai.segmentation.model_io import save_model
    from mediastinal_ai.segmentation.network import UNet3D
    from mediastinal_ai.segmentation.plan import Plan, load_config

    torch.manual_seed(0)
    plan = Plan(**{**load_config("segmentation_demo")["plan"], "features": [2, 4, 8, 16]})
    net = UNet3D(plan.features)
    for synthetic, expect in (("true", True), ("false", False)):
        man = tmp_path / f"m_{synthetic}.csv"
        man.write_text(f"case_id,ct,mask,synthetic\na,a.nii.gz,a_mask.nii.gz,{synthetic}\n"
                       f"b,b.nii.gz,b_mask.nii.gz,{synthetic}\n")
        card = ModelCard(name=f"seg-{synthetic}", task="segmentation", weights_file="",
                         training_data={"manifest": str(man), "n_train": 1, "n_val": 1})
        path = save_model(net, plan, tmp_path / f"seg-{synthetic}.safetensors", card)
        d = json.loads(path.read_text())
        assert d["training_data"]["synthetic"] is expect
        assert d["license"] and d["data_license"] and d["changelog"] == {"0.1.0": "trained (training)"}
        assert len(d["training_data"]["manifest_sha256"]) == 64
        verify(path)


def test_shipped_demo_cards_carry_licence_changelog_and_verify():
    from mediastinal_ai.models import list_models, resolve

    for card, _ in list_models():
        if card.name == "demo-seg-unet3d":
            continue  # retrained by the lead; its trainer path is tested above
        r = resolve(card.name)
        assert r.card.license == "Apache-2.0" and r.card.data_license.startswith("synthetic"), card.name
        assert r.card.version in r.card.changelog and r.card.training_data["synthetic"] is True
    cnn = resolve("demo-risk-cnn").card
    assert cnn.training_data["split_sizes"]["test"] == cnn.metrics["test_cases"]
    rad = resolve("demo-risk-radiomics-svm").card
    from mediastinal_ai.radiomics.params import load_params, params_hash

    assert rad.preprocessing["radiomics_params_hash"] == params_hash(load_params(rad.preprocessing["radiomics_params"]))


def _fake_model(folder: Path, name: str, task: str, payload: bytes, extra: dict | None = None) -> Path:
    from mediastinal_ai.models import ModelCard, write_card_for

    folder.mkdir(parents=True, exist_ok=True)
    w = folder / f"{name}.safetensors"
    w.write_bytes(payload)
    return write_card_for(w, ModelCard(name=name, task=task, weights_file="", extra=extra or {}))


def _fusion_pair(root: Path, tag: bytes) -> Path:
    """train-fusion's layout: OUT/<fusion>/ and OUT/<ct-only>/, the fusion card naming its twin."""
    from mediastinal_ai.models import ModelCard

    ct = _fake_model(root / "my-ct", "my-ct", "fusion-ct-only", b"ct-only " + tag)
    return _fake_model(root / "my-fusion", "my-fusion", "fusion", b"fusion " + tag,
                       {"ct_only_model": {"name": "my-ct", "sha256": ModelCard.load(ct).sha256,
                                          "card": "../my-ct/my-ct.model.json"}})


def test_installing_a_fusion_model_installs_updates_or_removes_its_ct_only_twin(tmp_path, capsys):
    from mediastinal_ai.models import ModelCard, resolve, user_models_dir

    first = _fusion_pair(tmp_path / "run1", b"1")
    assert main(["models", "install", str(first)]) == 0
    assert "CT-only twin" in capsys.readouterr().out
    twin = user_models_dir() / "my-ct" / "my-ct.model.json"
    assert ModelCard.load(twin).sha256 == ModelCard.load(first).extra["ct_only_model"]["sha256"]
    # a retrained pair: installing the fusion model updates its twin too
    second = _fusion_pair(tmp_path / "run2", b"2")
    assert main(["models", "install", str(second)]) == 0
    assert resolve("my-ct").card.sha256 == ModelCard.load(second).extra["ct_only_model"]["sha256"]
    # a fusion card copied without its twin: the installed twin (of another run) is removed, not kept
    lone = tmp_path / "lone"
    third = _fusion_pair(tmp_path / "run3", b"3")
    lone.mkdir()
    for f in third.parent.iterdir():
        (lone / f.name).write_bytes(f.read_bytes())
    assert main(["models", "install", str(lone / third.name)]) == 0
    assert "not found beside" in capsys.readouterr().out
    assert not twin.exists()


# ----------------------------------------------------------------------------- item 4 (one case folder)
@pytest.mark.slow
def test_one_case_folder_segment_predict_all_then_report_and_batch_use_the_same_names(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("radiomics")
    from mediastinal_ai.case_files import RESULT_FILES, find_result
    from mediastinal_ai.evaluation.report import gather_case
    from mediastinal_ai.io import write_image
    from mediastinal_ai.synthetic import generate_case

    c = generate_case(7100)
    write_image(c.ct, tmp_path / "ct.nii.gz")
    write_image(c.mask, tmp_path / "mask.nii.gz")
    ct, mask, case = str(tmp_path / "ct.nii.gz"), str(tmp_path / "mask.nii.gz"), tmp_path / "case"
    assert main(["segment", "--input", ct, "--out", str(case)]) == 0
    assert main(["predict-radiomics", "--ct", ct, "--mask", mask, "--out", str(case)]) == 0
    assert main(["predict-cnn", "--ct", ct, "--mask", mask, "--out", str(case)]) == 0
    assert main(["predict-fusion", "--ct", ct, "--mask", mask, "--ctc", "3", "--out", str(case)]) == 0
    tasks = {t: json.loads((case / n).read_text()).get("task") for t, n in RESULT_FILES.items()}
    assert tasks == {t: t for t in RESULT_FILES}  # four files, none overwrote another
    parts = gather_case(case)["parts"]
    assert all(parts[k] for k in ("segmentation", "radiomics", "cnn", "fusion")), parts.keys()
    assert main(["report", "--case", str(case), "--out", str(tmp_path / "rep")]) == 0
    # the batch writes the same names into cases/<id>/
    man = tmp_path / "m.csv"
    man.write_text(f"case_id,ct,mask,ctc\nk1,{ct},{mask},3\n")
    assert main(["run", "-i", str(man), "-o", str(tmp_path / "batch"), "--steps", "radiomics,cnn,fusion",
                 "--workers", "0"]) == 0
    folder = tmp_path / "batch" / "cases" / "k1"
    for task in ("risk-radiomics", "risk-cnn", "fusion"):
        assert find_result(folder, task) == folder / RESULT_FILES[task]
        a, b = (json.loads((d / RESULT_FILES[task]).read_text()) for d in (case, folder))
        assert a["task"] == b["task"] == task


def test_older_case_folders_are_still_read(tmp_path):
    """A predict-cnn result.json (the old name) is the CNN part, not a segmentation; segment's old
    result.json is the segmentation, but the new name wins; an older fusion result without 'task'
    is recognised too."""
    from mediastinal_ai.case_files import find_result, result_path

    (tmp_path / "result.json").write_text(json.dumps({"task": "risk-cnn", "probability_high_risk": 0.7}))
    assert find_result(tmp_path, "risk-cnn") == tmp_path / "result.json"
    assert find_result(tmp_path, "segmentation") is None
    (tmp_path / "segmentation_result.json").write_text(json.dumps({"task": "segmentation", "lesions": []}))
    assert find_result(tmp_path, "segmentation") == tmp_path / "segmentation_result.json"
    old_seg = tmp_path / "s"
    old_seg.mkdir()
    (old_seg / "result.json").write_text(json.dumps({"task": "segmentation", "lesions": []}))
    assert find_result(old_seg, "segmentation") == old_seg / "result.json"
    assert find_result(old_seg, "risk-cnn") is None
    (old_seg / "segmentation_result.json").write_text(json.dumps({"task": "segmentation", "lesions": [1]}))
    assert find_result(old_seg, "segmentation") == old_seg / "segmentation_result.json"
    other = tmp_path / "o"
    other.mkdir()
    (other / "result.json").write_text(json.dumps({"fusion": {}, "ct_only": None}))
    assert find_result(other, "fusion") == other / "result.json"
    assert result_path(tmp_path / "x.json", "fusion") == tmp_path / "x.json"
    assert result_path(tmp_path, "fusion") == tmp_path / "fusion_result.json"


# ----------------------------------------------------------------------------- item 3 (predictions → evaluate)
@pytest.mark.slow
def test_batch_predictions_joined_with_labels_go_straight_into_evaluate(tmp_path, capsys):
    """Own cohort → run (radiomics, cnn) → predictions.csv with the manifest's labels → evaluate,
    without a line of user code; a non-thymic case (no who_risk) is left out of the WHO evaluation."""
    pytest.importorskip("torch")
    pytest.importorskip("radiomics")
    import pandas as pd

    from mediastinal_ai import taxonomy
    from mediastinal_ai.synthetic import generate_cohort

    man = generate_cohort(7, tmp_path / "cohort", seed=5100, inplane_size=64,
                          classes=list(taxonomy.WHO_LOW + taxonomy.WHO_HIGH) + ["lymphoma"])
    truth = pd.read_csv(man)
    assert truth.who_risk.isna().any() and {"low", "high"} <= set(truth.who_risk.dropna())
    out = tmp_path / "results"
    assert main(["run", "-i", str(man), "-o", str(out), "--steps", "radiomics,cnn", "--workers", "0"]) == 0
    assert "predictions with the manifest's labels" in capsys.readouterr().out
    preds = pd.read_csv(out / "predictions.csv")
    assert len(preds) == len(truth)
    merged = preds.merge(truth, on="case_id", suffixes=("", "_manifest"))
    assert (merged.who_risk.fillna("") == merged.who_risk_manifest.fillna("")).all()
    assert {"p_high_risk_radiomics", "p_high_risk_cnn", "high_risk", "split", "synthetic"} <= set(preds)
    results = pd.read_csv(out / "results.csv").set_index("case_id")
    for _, r in preds.iterrows():  # the scores are the batch's, unchanged
        assert r.p_high_risk_cnn == pytest.approx(results.loc[r.case_id, "p_high_risk_cnn"])
    # the command gives the same table from the batch folder
    again = tmp_path / "again.csv"
    assert main(["predictions", "--manifest", str(man), "--from", str(out), "--out", str(again)]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(again), preds)
    ev = tmp_path / "eval"
    assert main(["evaluate", "--predictions", str(out / "predictions.csv"), "--label-col", "who_risk",
                 "--score-col", "p_high_risk_radiomics", "--compare-col", "p_high_risk_cnn", "--out", str(ev),
                 "--no-report"]) == 0
    s = json.loads((ev / "summary.json").read_text())
    assert s["n"] == int(truth.who_risk.notna().sum()) and s["n_pos"] == int((truth.who_risk == "high").sum())
    assert s["synthetic"] is True


def test_evaluate_label_column_text_values(tmp_path):
    import pandas as pd

    from mediastinal_ai.evaluation.evaluate import read_predictions

    p = tmp_path / "p.csv"
    pd.DataFrame({"who_risk": ["low", "High ", "", "high", "low"], "s": [0.1, 0.9, 0.5, 0.7, 0.2]}).to_csv(p, index=False)
    df = read_predictions(p, "who_risk", ["s"])
    assert df["who_risk"].tolist() == [0, 1, 1, 0] and df["s"].tolist() == [0.1, 0.9, 0.7, 0.2]
    pd.DataFrame({"y": ["benign", "malignant"], "s": [0.1, 0.9]}).to_csv(p, index=False)
    assert read_predictions(p, "y", ["s"])["y"].tolist() == [0, 1]
    pd.DataFrame({"y": ["A", "B2"], "s": [0.1, 0.9]}).to_csv(p, index=False)
    with pytest.raises(InputError, match="low/high"):
        read_predictions(p, "y", ["s"])


@pytest.mark.slow
def test_train_fusion_writes_val_and_test_tables_and_installs_with_its_twin(tmp_path, capsys):
    pytest.importorskip("torch")
    import pandas as pd

    from mediastinal_ai.evaluation import youden_threshold
    from mediastinal_ai.models import ModelCard, resolve
    from mediastinal_ai.synthetic import generate_cohort

    man = generate_cohort(24, tmp_path / "cohort", seed=300, classes=["fibroma", "other", "thymoma_B1", "lymphoma"],
                          inplane_size=48)
    out = tmp_path / "run"
    assert main(["train-fusion", "--manifest", str(man), "--out", str(out), "--epochs", "2", "--image-size", "32",
                 "--regnet", "tiny", "--device", "cpu", "--name", "j-fusion"]) == 0
    val, test = pd.read_csv(out / "val_predictions.csv"), pd.read_csv(out / "test_predictions.csv")
    assert list(val.columns) == list(test.columns) and len(val) and len(test)
    assert not set(val.case_id) & set(test.case_id)
    card = ModelCard.load(out / "j-fusion" / "j-fusion.model.json")
    if 0 < val.malignant.sum() < len(val):  # the card's threshold is Youden on exactly this table
        assert card.extra["threshold"] == pytest.approx(youden_threshold(val.malignant, val.p_malignant_fusion), abs=1e-6)
    assert card.license and card.changelog and card.training_data["synthetic"] is True
    # install from train-fusion's own layout: the CT-only twin comes along
    assert main(["models", "install", str(out / "j-fusion" / "j-fusion.model.json")]) == 0
    assert "CT-only twin" in capsys.readouterr().out
    assert resolve(card.extra["ct_only_model"]["name"]).card.sha256 == card.extra["ct_only_model"]["sha256"]


# ----------------------------------------------------------------------------- item 2 (batch masks, Dask, progress)
PLUGIN = '''
import os
import time

from mediastinal_ai.batch.steps import Step, register


def _hold(ctx):
    """Hold the GIL for HOLD_S seconds in ONE C call (builtin sum over a range), as a long
    SimpleITK/pyradiomics call does: the worker's event loop (and its heartbeats) cannot run."""
    target = float(os.environ.get("HOLD_S", "12"))
    t = time.perf_counter()
    sum(range(10_000_000))
    per = (time.perf_counter() - t) / 10_000_000
    t0 = time.perf_counter()
    sum(range(int(target / per)))
    ctx.results["held_s"] = round(time.perf_counter() - t0, 1)


def _nap(ctx):
    time.sleep(float(os.environ.get("NAP_S", "4")))


register(Step("hold", _hold, help="test: hold the GIL"))
register(Step("nap", _nap, help="test: sleep"))
'''


@pytest.fixture()
def plugin(tmp_path, monkeypatch):
    import sys

    d = tmp_path / "plugin"
    d.mkdir()
    (d / "issue18_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(d))
    monkeypatch.setenv("PYTHONPATH", str(d) + ((":" + sys.path[0]) if sys.path else ""))
    import importlib

    importlib.import_module("issue18_plugin")
    return "issue18_plugin"


def _tiny_ct(tmp: Path) -> Path:
    from mediastinal_ai.io import write_image
    from mediastinal_ai.volume import Volume

    rng = np.random.default_rng(0)
    p = tmp / "tiny_ct.nii.gz"
    write_image(Volume(rng.normal(0, 100, (8, 16, 16)).astype(np.int16), spacing_xyz=(1.0, 1.0, 2.0)), p)
    return p


def test_risk_mask_plan_dry_run_and_refusals(tmp_path, capsys):
    from mediastinal_ai.batch.steps import risk_mask_plan

    assert "predicted by the 'segment' step" in risk_mask_plan(["qc", "segment", "radiomics"])
    assert "manifest's 'mask'" in risk_mask_plan(["qc", "radiomics", "cnn"])
    assert "manifest's 'mask'" in risk_mask_plan(["qc", "segment", "cnn"], "manifest")
    assert risk_mask_plan(["qc", "segment"]) is None
    with pytest.raises(InputError, match="needs the 'segment' step"):
        risk_mask_plan(["qc", "radiomics"], "predicted")
    ct = _tiny_ct(tmp_path)
    man = tmp_path / "m.csv"
    man.write_text(f"case_id,ct,mask\nwith_mask,{ct},{ct}\nno_mask,{ct},\n")
    assert main(["run", "-i", str(man), "-o", str(tmp_path / "o"), "--steps", "segment,radiomics,cnn",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "tumor mask: radiomics, cnn use the mask predicted by the 'segment' step" in out
    assert main(["run", "-i", str(man), "-o", str(tmp_path / "o"), "--steps", "segment,radiomics",
                 "--risk-mask", "manifest", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "radiomics use the manifest's 'mask' column" in out
    assert [ln for ln in out.splitlines() if ln.startswith("no_mask")][0].split()[1:3] == ["will", "fail:"]
    assert main(["run", "-i", str(man), "-o", str(tmp_path / "o"), "--steps", "radiomics",
                 "--risk-mask", "predicted"]) == 2
    assert "needs the 'segment' step" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_risk_steps_take_the_mask_the_option_names():
    from mediastinal_ai.batch.discover import CaseSpec
    from mediastinal_ai.batch.steps import CaseContext
    from mediastinal_ai.volume import Volume

    ct = Volume(np.zeros((4, 8, 8), np.int16))
    manifest = ct.with_array(np.pad(np.ones((2, 2, 2), np.uint8), ((1, 1), (3, 3), (3, 3))), units="label")
    predicted = ct.with_array(np.pad(np.ones((2, 4, 4), np.uint8), ((1, 1), (2, 2), (2, 2))), units="label")

    def ctx(mode, segmented=True):
        c = CaseContext(spec=CaseSpec("a", "a.nii.gz", mask="a_mask.nii.gz"), workdir=Path("."),
                        params={"risk_mask": mode} if mode else {})
        c._ct, c._manifest_mask = ct, manifest
        if segmented:
            c.segmented, c.mask = True, predicted
        return c

    for mode, segmented, expect, kind in ((None, True, predicted, "predicted"), ("auto", False, manifest, "manifest"),
                                          ("manifest", True, manifest, "manifest"),
                                          ("predicted", True, predicted, "predicted")):
        c = ctx(mode, segmented)
        assert c.tumor_mask() is expect and c.results["risk_mask"] == kind
    c = ctx("predicted")
    c.mask = None  # the segmentation found nothing: never silently the manifest's mask
    with pytest.raises(InputError, match="found no tumor"):
        c.tumor_mask()


def test_progress_names_the_running_case_and_its_step(tmp_path, plugin, monkeypatch, caplog):
    import logging

    from mediastinal_ai.batch import engine
    from mediastinal_ai.batch.discover import CaseSpec

    monkeypatch.setattr(engine._Progress, "LONG_STEP_S", 1.0)
    monkeypatch.setenv("NAP_S", "4")
    ct = _tiny_ct(tmp_path)
    cfg = engine.RunConfig(steps=["nap"], params={"plugins": [plugin]}, workers=0)
    with caplog.at_level(logging.INFO, logger="mediastinal_ai.batch.engine"):
        rows = engine.run_cohort([CaseSpec("slow_case", str(ct))], tmp_path / "o", cfg)
    assert rows[0]["status"] == "ok"
    lines = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("slow_case: still in step nap (2/2) after") for m in lines), lines
    # and on a terminal: one line naming the case and step
    import io

    class Tty(io.StringIO):
        def isatty(self):
            return True

    s = Tty()
    bar = engine._Progress(3, stream=s)
    bar.running([{"case_id": "c7", "step": "radiomics", "index": 3, "n_steps": 4, "seconds": 42.0}])
    assert "running: c7 radiomics (3/4, 42s)" in s.getvalue()


@pytest.mark.slow
def test_a_case_holding_the_gil_longer_than_the_heartbeat_ttl_finishes_on_dask(tmp_path, plugin, monkeypatch):
    """The issue's failure, made small: a step holds the GIL for ~15 s while the scheduler's
    heartbeat TTL would be 5 s. With Dask's TTL check (the control, as before) the worker is
    restarted and the case is lost; with the run's cluster it finishes."""
    pytest.importorskip("distributed")
    from mediastinal_ai.batch import engine
    from mediastinal_ai.batch.discover import CaseSpec

    monkeypatch.setenv("HOLD_S", "15")
    ct = _tiny_ct(tmp_path)
    cases = lambda: [CaseSpec("gil_case", str(ct))]  # noqa: E731
    cfg = engine.RunConfig(steps=["hold"], params={"plugins": [plugin]}, workers=1)
    rows = engine.run_cohort(cases(), tmp_path / "fixed", cfg)
    assert rows[0]["status"] == "ok", rows[0]
    assert rows[0]["held_s"] >= 9  # longer than the 5 s TTL plus its 3 s check period
    original = engine.make_local_cluster
    monkeypatch.setattr(engine, "make_local_cluster", lambda n, d: original(n, d, worker_ttl="3s"))
    rows = engine.run_cohort(cases(), tmp_path / "control", cfg)
    assert rows[0]["status"] == "failed" and rows[0]["error_type"] == "WorkerDied", rows[0]


@pytest.mark.slow
def test_run_with_segment_uses_the_mask_risk_mask_names(tmp_path):
    """segment + radiomics on one synthetic case: by default radiomics reads the predicted mask,
    with --risk-mask manifest the manifest's; results.csv says which, and the numbers are those of
    predict-radiomics on that very mask."""
    pytest.importorskip("torch")
    pytest.importorskip("radiomics")
    import pandas as pd

    from mediastinal_ai.io import read_ct, read_mask, write_image
    from mediastinal_ai.radiomics import load_model, predict_risk
    from mediastinal_ai.synthetic import generate_case

    c = generate_case(7100)
    write_image(c.ct, tmp_path / "ct.nii.gz")
    write_image(c.mask, tmp_path / "mask.nii.gz")
    man = tmp_path / "m.csv"
    man.write_text(f"case_id,ct,mask\nk1,{tmp_path / 'ct.nii.gz'},{tmp_path / 'mask.nii.gz'}\n")
    model = load_model(None)
    ct = read_ct(tmp_path / "ct.nii.gz")
    used_masks = []
    for mode, expect in (("auto", "predicted"), ("manifest", "manifest")):
        out = tmp_path / mode
        assert main(["run", "-i", str(man), "-o", str(out), "--steps", "segment,radiomics", "--workers", "0",
                     "--risk-mask", mode]) == 0
        row = pd.read_csv(out / "results.csv").iloc[0]
        assert row.risk_mask == expect
        used = tmp_path / "mask.nii.gz" if expect == "manifest" else out / "cases" / "k1" / "mask.nrrd"
        ref = predict_risk(ct, read_mask(used, reference=ct), model=model)["probability_high_risk"]
        assert row.p_high_risk_radiomics == pytest.approx(ref, abs=1e-9)
        used_masks.append(np.asarray(read_mask(used, reference=ct).array) > 0)
    assert (used_masks[0] != used_masks[1]).any()  # the two runs really used different masks


def test_local_cluster_caps_itk_threads_and_has_no_heartbeat_ttl(tmp_path):
    pytest.importorskip("distributed")
    import os

    from distributed import Client

    from mediastinal_ai.batch.engine import make_local_cluster

    def env():
        import os

        return os.environ.get("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"), os.environ.get("OMP_NUM_THREADS")

    cluster = make_local_cluster(1, tmp_path / "dask")
    try:
        with Client(cluster) as client:
            want = os.environ.get("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS") or str(os.cpu_count() or 1)
            assert list(client.run(env).values()) == [(want, os.environ.get("OMP_NUM_THREADS") or "1")]
            assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.worker_ttl) is None
    finally:
        cluster.close()
