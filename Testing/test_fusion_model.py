"""CT + CTC fusion: network, model card round trip, refusal of mismatched models, statistics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mediastinal_ai.errors import ModelError  # noqa: E402
from mediastinal_ai.fusion import schema as sch  # noqa: E402
from mediastinal_ai.fusion.data import roi_recipe  # noqa: E402
from mediastinal_ai.fusion.model_io import load_model, save_model  # noqa: E402
from mediastinal_ai.fusion.net import DMFN, TINY_REGNET, entropy, head_loss  # noqa: E402
from mediastinal_ai.fusion.predict import get_model  # noqa: E402
from mediastinal_ai.models import ModelCard, resolve  # noqa: E402
from mediastinal_ai.taxonomy import CTC_UNIT  # noqa: E402

CLASSES = ["cyst", "lipoma", "thymoma_B2"]
SIZE = 32


def _schema():
    return sch.fit_schema([3.0, 7.0, 15.0], [30.0, 50.0, None], ["F", "M", "F"], ["anterior", "anterior", None])


def _save(folder: Path, task: str = "fusion", classes=CLASSES, name: str = "t-fusion") -> Path:
    torch.manual_seed(0)
    schema = _schema() if task == "fusion" else {"inputs": [], "features": []}
    net = DMFN(len(classes), len(schema["features"]), TINY_REGNET)
    card = ModelCard(name=name, task=task, weights_file="", classes=list(classes), input_schema=schema,
                     architecture={"regnet": TINY_REGNET, "tab_hidden": 32, "fusion_hidden": 64, "dropout": 0.2},
                     preprocessing={"roi": roi_recipe(SIZE)}, metrics={"test": {"auc": 0.5}}, demo=True)
    return save_model(net, folder / name / f"{name}.safetensors", card)


def _rewrite_header(weights: Path, **changes) -> None:
    from safetensors.torch import load_file, safe_open, save_file

    with safe_open(str(weights), framework="pt") as f:
        meta = dict(f.metadata())
    state = load_file(str(weights))
    meta.update({k: json.dumps(v) for k, v in changes.items()})
    save_file(state, str(weights), metadata=meta)


def _edit_card(card_path: Path, fix_sha: bool = False, **changes) -> None:
    from mediastinal_ai.fileio import sha256_file

    d = json.loads(card_path.read_text())
    d.update(changes)
    if fix_sha:
        d["sha256"] = sha256_file(card_path.parent / d["weights_file"])
    card_path.write_text(json.dumps(d))


# ---------------------------------------------------------------- network and losses
def test_dmfn_forward_shapes_and_ct_only_variant():
    net = DMFN(5, 10, TINY_REGNET).eval()
    lb, lc = net(torch.rand(3, 1, SIZE, SIZE), torch.randn(3, 10))
    assert lb.shape == (3, 2) and lc.shape == (3, 5)
    ct_only = DMFN(5, 0, TINY_REGNET).eval()
    assert ct_only.tabular is None
    lb, lc = ct_only(torch.rand(2, 1, SIZE, SIZE))
    assert lb.shape == (2, 2) and lc.shape == (2, 5)
    with pytest.raises(ValueError, match="tabular features"):
        net(torch.rand(2, 1, SIZE, SIZE), torch.randn(2, 9))
    with pytest.raises(ValueError, match="grey ROI"):
        net(torch.rand(2, 3, SIZE, SIZE), torch.randn(2, 10))


def test_neutral_loss_is_ce_minus_beta_entropy_and_ignores_unknown_targets():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.1, 0.2, 0.3], [1.0, 1.0, 1.0]])
    target = torch.tensor([0, 2, -1])
    ce = torch.nn.functional.cross_entropy(logits[:2], target[:2])
    assert torch.isclose(head_loss(logits, target, "ce"), ce)
    h = entropy(logits[:2]).mean()
    assert torch.isclose(head_loss(logits, target, "neutral", beta=0.3), ce - 0.3 * h)
    assert math.isclose(float(entropy(torch.zeros(1, 4))), math.log(4), rel_tol=1e-6)  # uniform = max entropy
    with pytest.raises(ValueError, match="unknown loss"):
        head_loss(logits, target, "focal")


# ---------------------------------------------------------------- model card round trip
def test_model_card_round_trip_and_identical_predictions(tmp_path):
    card_path = _save(tmp_path)
    resolved = resolve(card_path.parent, task="fusion")
    card = resolved.card
    assert card.classes == CLASSES and card.demo and card.sha256
    assert card.input_schema["units"]["ctc"] == CTC_UNIT
    assert card.input_schema["ranges"]["ctc"] == [3.0, 15.0]
    assert card.input_schema["normalisation"]["ctc"]["transform"] == "log1p"
    assert card.preprocessing["roi"]["window"] == [350.0, 50.0]
    assert ModelCard.load(card_path).to_dict() == card.to_dict()
    fm = load_model(resolved)
    imgs = np.random.default_rng(0).random((4, SIZE, SIZE), dtype=np.float32)
    x = np.stack([sch.encode(sch.validate_inputs(c, 40, "F", "anterior"), fm.schema) for c in (1, 5, 9, 30)])
    pm, pc = fm.predict_arrays(imgs, x)
    assert pm.shape == (4,) and pc.shape == (4, 3) and np.allclose(pc.sum(1), 1)
    pm2, pc2 = load_model(resolve(card_path)).predict_arrays(imgs, x)
    assert np.array_equal(pm, pm2) and np.array_equal(pc, pc2)
    with pytest.raises(ModelError, match="expects ROI images of 32"):
        fm.predict_arrays(np.zeros((1, 16, 16), np.float32), x[:1])


def test_class_list_mismatch_is_refused(tmp_path):
    card_path = _save(tmp_path)
    with pytest.raises(ModelError, match="do not match the expected classes"):
        get_model(card_path, expected_classes=["cyst", "lipoma", "thymoma_B3"])
    # card edited: classes no longer those the weights were trained with
    _edit_card(card_path, classes=["cyst", "lipoma", "thymoma_B3"])
    with pytest.raises(ModelError, match="class list in the card"):
        load_model(resolve(card_path))
    _edit_card(card_path, classes=["cyst", "lipoma", "dragon"])
    with pytest.raises(ModelError, match="unknown lesion classes"):
        load_model(resolve(card_path))
    _edit_card(card_path, classes=["cyst"])
    with pytest.raises(ModelError, match="at least two"):
        load_model(resolve(card_path))


def test_head_shape_mismatch_is_refused(tmp_path):
    card_path = _save(tmp_path)
    four = CLASSES + ["lymphoma"]
    weights = card_path.parent / "t-fusion.safetensors"
    _rewrite_header(weights, classes=four)  # header and card agree, the head has 3 outputs
    _edit_card(card_path, fix_sha=True, classes=four)
    with pytest.raises(ModelError, match="has shape"):
        load_model(resolve(card_path))


def test_input_schema_mismatch_is_refused(tmp_path):
    card_path = _save(tmp_path)
    schema = json.loads(card_path.read_text())["input_schema"]
    tampered = json.loads(json.dumps(schema))
    tampered["normalisation"]["ctc"]["mean"] += 1.0
    _edit_card(card_path, input_schema=tampered)
    with pytest.raises(ModelError, match="normalisation statistics in the card do not match"):
        load_model(resolve(card_path))
    tampered = json.loads(json.dumps(schema))
    tampered["features"] = tampered["features"][:-1]
    _edit_card(card_path, input_schema=tampered)
    with pytest.raises(ModelError, match="do not match what this version encodes"):
        load_model(resolve(card_path))
    tampered = json.loads(json.dumps(schema))
    tampered["units"]["ctc"] = "cells/7.5mL"
    _edit_card(card_path, input_schema=tampered)
    with pytest.raises(ModelError, match="do not match the weights' header"):
        load_model(resolve(card_path))


def test_wrong_task_and_tampered_weights_are_refused(tmp_path):
    ct_card = _save(tmp_path, task="fusion-ct-only", name="t-ct")
    with pytest.raises(ModelError, match="not 'fusion'"):
        get_model(ct_card, task="fusion")
    assert get_model(ct_card, task="fusion-ct-only").classes == CLASSES
    card_path = _save(tmp_path)
    w = card_path.parent / "t-fusion.safetensors"
    w.write_bytes(w.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(ModelError, match="sha256 mismatch"):
        get_model(card_path)
    # right sha256 but not a fusion safetensors file
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(w))
    _edit_card(card_path, fix_sha=True)
    with pytest.raises(ModelError, match="not a MediastinalAI fusion model"):
        load_model(resolve(card_path))
