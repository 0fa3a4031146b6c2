"""3D U-Net segmentation: network + training step, post-processing and lesion table, lesion-wise
matching/FROC on hand-made cases, DICOM SEG round trip, MRML segments, demo weights on held-out
synthetic cases, and clear errors for bad input or bad model files."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mediastinal_ai.errors import InputError, ModelError
from mediastinal_ai.segmentation.metrics import froc, lesion_counts, match_lesions, voxel_metrics
from mediastinal_ai.segmentation.postprocess import components, lesion_table, max_diameter_mm
from mediastinal_ai.volume import Volume

torch = pytest.importorskip("torch")
torch.set_num_threads(2)


def test_unet_has_four_levels_and_a_training_step_lowers_the_loss():
    from mediastinal_ai.segmentation.network import UNet3D
    from mediastinal_ai.segmentation.train import dice_loss

    torch.manual_seed(0)
    net = UNet3D((4, 8, 16, 32))
    assert sum(isinstance(m, torch.nn.MaxPool3d) for m in net.modules()) == 1  # shared pool, used 3 times
    assert sum(isinstance(m, torch.nn.ConvTranspose3d) for m in net.modules()) == 3
    x = torch.rand(2, 1, 16, 32, 32)
    y = torch.zeros_like(x)
    y[:, :, 4:12, 8:24, 8:24] = 1
    x = x * 0.3 + y * 0.7
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(12):
        opt.zero_grad()
        loss = dice_loss(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1


def test_components_drop_small_and_table_measures():
    ct = Volume(np.zeros((10, 20, 20), np.int16) + 40, spacing_xyz=(1.0, 1.0, 2.0))
    m = np.zeros(ct.shape, bool)
    m[2:6, 2:12, 2:7] = True  # 4*10*5 = 200 voxels
    m[8, 15, 15:17] = True  # 2 voxels: dropped (< 10)
    labels, n = components(m)
    assert n == 1 and labels.max() == 1 and (labels > 0).sum() == 200
    rows = lesion_table(labels, ct, probability=m.astype(np.float32) * 0.9)
    assert rows[0]["volume_ml"] == pytest.approx(200 * 2.0 / 1000)
    assert rows[0]["max_diameter_mm"] == pytest.approx(np.sqrt(9**2 + 4**2 + 6**2), abs=0.05)
    assert rows[0]["mean_hu"] == 40 and rows[0]["max_probability"] == pytest.approx(0.9)
    assert max_diameter_mm(np.array([[0, 0, 0.0]])) == 0.0


def test_lesion_matching_and_froc_on_known_cases():
    truth = np.zeros((10, 30, 30), np.uint8)
    truth[1:4, 2:8, 2:8] = 1  # lesion A
    truth[5:9, 20:26, 20:26] = 1  # lesion B
    pred = np.zeros_like(truth)
    pred[1:4, 2:8, 2:8] = 1  # A exactly (IoU 1)
    pred[5:9, 20:26, 23:29] = 1  # B shifted by half: IoU = 3/9 = 0.333
    pred[1:4, 20:23, 2:6] = 1  # false positive (36 voxels)
    rows = {r["iou_threshold"]: r for r in lesion_counts(pred, truth)}
    assert rows[0.3]["tp"] == 2 and rows[0.3]["fp"] == 1 and rows[0.3]["fn"] == 0
    assert rows[0.35]["tp"] == 1 and rows[0.35]["fp"] == 2
    assert rows[0.95]["tp"] == 1
    fr = froc([lesion_counts(pred, truth), lesion_counts(truth, truth)])
    r05 = next(r for r in fr if r["iou_threshold"] == 0.5)
    assert r05["sensitivity"] == pytest.approx(3 / 4) and r05["fp_per_scan"] == pytest.approx(1.0)
    # one-to-one: a prediction overlapping two truths matches only one
    iou = np.array([[0.6, 0.0], [0.55, 0.0]])
    assert match_lesions(iou, 0.5) == [(0, 0)]
    vm = voxel_metrics(pred, truth)
    assert 0 < vm["dice"] < 1 and vm["precision"] < 1


def test_dicom_seg_roundtrip_on_real_series(real_ct_dir, tmp_path):
    from mediastinal_ai.io import read_ct
    from mediastinal_ai.segmentation.dicom_seg import read_dicom_seg, write_dicom_seg

    ct = read_ct(real_ct_dir / "abdomen_ct_dicom_series")
    m = np.zeros(ct.shape, np.uint8)
    m[5:9, 200:260, 230:300] = 1
    p = write_dicom_seg(ct.with_array(m), ct, tmp_path / "seg.dcm")
    back = read_dicom_seg(p, ct)
    assert np.array_equal(back.array, m) and back.same_geometry(ct)
    import pydicom

    ds = pydicom.dcmread(p)
    refs = {r.ReferencedSOPInstanceUID for s in ds.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence}
    assert len(refs) == 20 and ds.SegmentSequence[0].SegmentLabel == "Anterior mediastinal tumor"


def test_dicom_seg_refuses_non_dicom_ct(tmp_path):
    from mediastinal_ai.segmentation.dicom_seg import write_dicom_seg

    ct = Volume(np.zeros((3, 4, 4), np.int16), metadata={"format": "nii.gz"})
    with pytest.raises(InputError, match="DICOM SEG needs a CT read from a DICOM series"):
        write_dicom_seg(ct.with_array(np.ones(ct.shape, np.uint8)), ct, tmp_path / "x.dcm")


# ---------------------------------------------------------------- with the demo weights
@pytest.fixture(scope="module")
def demo_model():
    from mediastinal_ai.models import resolve
    from mediastinal_ai.segmentation import load_model

    try:
        return load_model(resolve(None, task="segmentation"), device="cpu")
    except ModelError as e:
        pytest.fail(f"demo segmentation model missing or broken: {e}")


@pytest.mark.slow
def test_demo_weights_segment_held_out_synthetic_cases(demo_model):
    from mediastinal_ai.segmentation import segment_volume
    from mediastinal_ai.segmentation.train import dice
    from mediastinal_ai.synthetic import generate_case

    scores = []
    for seed in (95_000, 95_001, 95_002):  # far from the training seeds (model card)
        c = generate_case(seed, classes=["thymoma_AB", "thymoma_B2", "thymic_carcinoma", "lymphoma"])
        res = segment_volume(c.ct, demo_model)
        scores.append(dice(res.mask.array, c.mask.array))
        assert res.probability.same_geometry(c.ct) and res.probability.array.dtype == np.float32
    print("held-out Dice", np.round(scores, 3))
    assert np.mean(scores) > 0.5


def test_bad_inputs_and_models(demo_model, tmp_path):
    from mediastinal_ai.models import ModelCard, resolve, write_card_for
    from mediastinal_ai.segmentation import load_model, segment_volume

    nan_ct = Volume(np.full((20, 64, 64), np.nan, np.float32), spacing_xyz=(2, 2, 5))
    with pytest.raises(InputError, match="NaN"):
        segment_volume(nan_ct, demo_model)
    with pytest.raises(InputError, match="too small"):
        segment_volume(Volume(np.zeros((3, 3, 3), np.int16)), demo_model)
    with pytest.raises(InputError, match="HU"):
        segment_volume(Volume(np.zeros((20, 64, 64), np.float32), units="probability"), demo_model)
    # tampered weights
    src = resolve(None, task="segmentation")
    d = tmp_path / "tampered"
    d.mkdir()
    w = d / src.weights_path.name
    data = bytearray(src.weights_path.read_bytes())
    data[-10] ^= 0xFF
    w.write_bytes(bytes(data))
    card = json.loads(src.card_path.read_text())
    (d / src.card_path.name).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="sha256 mismatch"):
        resolve(d)
    # weights of another shape, honestly hashed: refused by shape, not by hash
    from safetensors.torch import save_file

    from mediastinal_ai.segmentation.network import UNet3D

    d2 = tmp_path / "wrongshape"
    d2.mkdir()
    save_file(UNet3D((4, 8, 16, 32)).state_dict(), str(d2 / "m.safetensors"))
    c = ModelCard(name="wrong", task="segmentation", weights_file="", preprocessing=card["preprocessing"])
    write_card_for(d2 / "m.safetensors", c)
    with pytest.raises(ModelError, match="do not fit"):
        load_model(resolve(d2))


def test_segment_cli_writes_outputs_and_progress_lines(tmp_path):
    from mediastinal_ai.io import write_image
    from mediastinal_ai.synthetic import generate_case

    c = generate_case(95_010, "thymoma_B1")
    ct = write_image(c.ct, tmp_path / "ct in dir" / "ct.nii.gz")
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "mediastinal_ai.cli", "segment", "--input", str(ct), "--out", str(out),
                        "--progress-lines", "--device", "cpu"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stdout.splitlines() if line.startswith("MEDIASTINALAI_PROGRESS")]
    fr = [float(line.split()[1]) for line in lines]
    assert len(lines) > 3 and fr == sorted(fr) and fr[-1] == 1.0
    for f in ("mask.nrrd", "probability.nrrd", "lesions.csv", "segmentation_result.json"):
        assert (out / f).is_file()
    info = json.loads((out / "segmentation_result.json").read_text())
    assert info["model_sha256"] and "not for clinical use" in info["model"]


@pytest.mark.mrml
def test_mrml_segment_is_editable_and_rethresholds(tmp_path, demo_model):
    pytest.importorskip("slicer")
    from mediastinal_ai.mrml import nodes
    from mediastinal_ai.mrml.segmentation import import_result, rethreshold
    from mediastinal_ai.segmentation import segment_volume, write_result
    from mediastinal_ai.synthetic import generate_case

    c = generate_case(95_020, "thymoma_B2")
    res = segment_volume(c.ct, demo_model)
    write_result(res, tmp_path / "r", c.ct)
    scene = nodes.new_scene()
    vol_node = nodes.volume_to_node(scene, c.ct, "CT")
    out = import_result(scene, vol_node, tmp_path / "r")
    seg_node, sid = out["segmentation_node"], out["segment_id"]
    info = nodes.segment_info(seg_node, sid)
    assert "Anterior mediastinal tumor" in info["name"] and "4147007" in info["terminology"]
    assert seg_node.GetSegmentation().GetSourceRepresentationName() == "Binary labelmap"
    m1 = nodes.segment_to_mask(seg_node, sid, vol_node).array.sum()
    assert m1 == res.mask.array.sum()
    rethreshold(scene, out["probability_node"], seg_node, sid, 0.9, out["table_node"])
    m2 = nodes.segment_to_mask(seg_node, sid, vol_node).array.sum()
    assert m2 == int((res.probability.array >= 0.9).sum()) or m2 < m1
    assert m2 <= m1


@pytest.mark.slow
def test_batch_on_a_dicom_series_writes_a_dicom_seg_matching_the_nrrd(tmp_path, demo_model):
    """A DICOM input gets segmentation.dcm beside mask.nrrd in the batch output, referencing
    the source instances, with the same voxels."""
    import pydicom
    from pydicom.uid import generate_uid
    from test_io import write_series

    from mediastinal_ai.batch import RunConfig, discover, run_cohort
    from mediastinal_ai.io import read_ct, read_image
    from mediastinal_ai.segmentation.dicom_seg import read_dicom_seg
    from mediastinal_ai.synthetic import generate_case

    c = generate_case(91_234, "thymoma_B2")
    sx, sy, sz = c.ct.spacing_xyz
    files = write_series(tmp_path / "dicom" / "case one", c.ct.array.astype(np.int16), spacing=(sy, sx), dz=sz,
                         origin=c.ct.origin_xyz, extra={"FrameOfReferenceUID": generate_uid(), "PatientID": "SYNTH1"})
    rows = run_cohort(discover(tmp_path / "dicom"), tmp_path / "out", RunConfig(steps=["segment"], workers=0))
    assert [r["status"] for r in rows] == ["ok"], rows
    case_dir = next((tmp_path / "out" / "cases").iterdir())
    assert rows[0]["dicom_seg"] == "segmentation.dcm"
    ct = read_ct(tmp_path / "dicom" / "case one")
    seg = read_dicom_seg(case_dir / "segmentation.dcm", ct)
    nrrd = read_image(case_dir / "mask.nrrd")
    assert seg.array.any() and np.array_equal(seg.array > 0, nrrd.array > 0)
    ds = pydicom.dcmread(case_dir / "segmentation.dcm")
    refs = {r.ReferencedSOPInstanceUID for s in ds.ReferencedSeriesSequence for r in s.ReferencedInstanceSequence}
    assert refs <= {pydicom.dcmread(f).SOPInstanceUID for f in files} and refs
