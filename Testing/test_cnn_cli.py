"""CNN command line: train-cnn on a tiny synthetic cohort writes a loadable model + card + log,
predict-cnn writes cnn_result.json / gradcam.nrrd on the CT grid / PNG, and bad inputs give a clean
error (exit code 2, message naming the problem) rather than a traceback."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mediastinal_ai.cli import main

torch = pytest.importorskip("torch")
torch.set_num_threads(2)


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory):
    from mediastinal_ai import taxonomy
    from mediastinal_ai.synthetic import generate_cohort

    out = tmp_path_factory.mktemp("cohort")
    return generate_cohort(10, out, seed=4242, classes=list(taxonomy.WHO_LOW + taxonomy.WHO_HIGH), inplane_size=64)


@pytest.mark.slow
def test_train_cnn_cli_writes_a_loadable_model(tiny_cohort, tmp_path):
    from mediastinal_ai.cnn import load_model
    from mediastinal_ai.models import resolve

    out = tmp_path / "m"
    rc = main(["train-cnn", "--manifest", str(tiny_cohort), "--out", str(out), "--backbone", "shufflenet_v2_x1_0",
               "--epochs", "2", "--batch-size", "4", "--input-size", "48", "--device", "cpu", "--name", "tiny"])
    assert rc == 0
    card = json.loads((out / "tiny.model.json").read_text())
    assert card["task"] == "risk-cnn" and card["architecture"]["backbone"] == "shufflenet_v2_x1_0"
    assert card["preprocessing"]["roi"]["size"] == 48 and card["training_data"]["synthetic"] is True
    assert (out / "training_log.csv").read_text().count("\n") == 3  # header + 2 epochs
    m = load_model(resolve(out / "tiny.model.json"))
    assert m.recipe["size"] == 48


@pytest.mark.slow
def test_predict_cnn_cli_outputs_on_the_ct_grid(tmp_path):
    from mediastinal_ai.io import read_image, write_image
    from mediastinal_ai.synthetic import generate_case

    c = generate_case(97_001, "thymoma_B2")
    write_image(c.ct, tmp_path / "ct.nii.gz")
    write_image(c.mask, tmp_path / "mask.nii.gz")
    out = tmp_path / "pred"
    assert main(["predict-cnn", "--ct", str(tmp_path / "ct.nii.gz"), "--mask", str(tmp_path / "mask.nii.gz"),
                 "--out", str(out)]) == 0
    res = json.loads((out / "cnn_result.json").read_text())
    assert 0 <= res["probability_high_risk"] <= 1 and res["group"] in ("low", "high")
    assert res["provenance"]["model_sha256"] == res["model_sha256"]
    heat = read_image(out / "gradcam.nrrd")
    assert heat.shape == c.ct.shape and np.allclose(heat.spacing_xyz, c.ct.spacing_xyz)
    k = res["roi"]["slice_index"]
    assert heat.array[k].max() > 0 and np.all(np.delete(heat.array, k, axis=0) == 0)
    assert (out / "gradcam.png").stat().st_size > 1000


def test_predict_cnn_cli_refuses_bad_inputs(tmp_path, capsys):
    from mediastinal_ai.io import write_image
    from mediastinal_ai.volume import Volume

    noise = np.random.default_rng(0).normal(-50, 30, (4, 32, 32))  # a plausible CT (soft tissue + air),
    noise[:, :8] = -1000  # so that the empty mask is what gets refused
    ct = Volume(noise.astype(np.int16), spacing_xyz=(1.0, 1.0, 5.0), units="HU")
    write_image(ct, tmp_path / "ct.nii.gz")
    write_image(ct.with_array(np.zeros(ct.shape, np.uint8), units="label"), tmp_path / "empty.nii.gz")
    rc = main(["predict-cnn", "--ct", str(tmp_path / "ct.nii.gz"), "--mask", str(tmp_path / "empty.nii.gz"),
               "--out", str(tmp_path / "o")])
    assert rc == 2 and "empty" in capsys.readouterr().err
    rc = main(["predict-cnn", "--ct", str(tmp_path / "ct.nii.gz"), "--mask", str(tmp_path / "empty.nii.gz"),
               "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert rc == 2 and "not found" in capsys.readouterr().err
    assert not (tmp_path / "o" / "cnn_result.json").exists()
