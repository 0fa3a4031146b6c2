"""CNN WHO-risk model: ROI extraction on hand-made masks, the six backbones on CPU, a short
training lowers the loss, Grad-CAM on the tumor more often than chance, MRML overlay, and
clear errors for wrong inputs or tampered weights."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mediastinal_ai.errors import InputError, ModelError
from mediastinal_ai.roi import extract_roi, largest_area_slice
from mediastinal_ai.volume import Volume

torch = pytest.importorskip("torch")
torch.set_num_threads(2)


def _ct_and_mask():
    ct = Volume(np.random.default_rng(0).normal(0, 10, (6, 40, 50)).astype(np.float32), spacing_xyz=(0.5, 1.0, 3.0))
    m = np.zeros(ct.shape, np.uint8)
    m[2, 10:20, 20:26] = 1  # 60 voxels
    m[3, 12:16, 21:30] = 1  # 36 voxels
    return ct, ct.with_array(m, units="label")


def test_roi_on_hand_made_mask():
    ct, mask = _ct_and_mask()
    assert largest_area_slice(mask) == 2
    s = extract_roi(ct, mask, margin_mm=2.0, size=32, offsets=(0, 1))
    assert [x.slice_index for x in s] == [2, 3]
    y0, y1, x0, x1 = s[0].box
    # tumor 10 rows (10 mm) x 6 cols (3 mm): square of 10 mm + 2 mm margin each side = 14 mm
    assert (y1 - y0) == 14 and (x1 - x0) == 28
    assert y0 <= 10 and y1 >= 20 and x0 <= 20 and x1 >= 26
    assert s[0].image.shape == (32, 32) and abs(s[0].image.mean()) < 1e-5 and abs(s[0].image.std() - 1) < 1e-3
    back = s[0].roi_to_slice(np.ones((32, 32)))
    assert back.shape == (40, 50) and back[y0:y1, x0:x1].min() == 1 and back.sum() == (y1 - y0) * (x1 - x0)
    with pytest.raises(InputError, match="empty"):
        extract_roi(ct, mask.with_array(np.zeros(ct.shape, np.uint8)))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["densenet121", "resnet101", "inception_v3", "vgg11", "mobilenet_v2",
                                  "shufflenet_v2_x1_0"])
def test_every_backbone_runs_forward_and_backward_at_its_input_size(name):
    from mediastinal_ai.cnn.backbones import build, logits_of, spec, target_module

    net = build(name)
    size = spec(name).input_size
    net.train()
    x = torch.randn(2, 3, size, size)
    out = net(x)
    loss = logits_of(out).sum() + (out.aux_logits.sum() if getattr(out, "aux_logits", None) is not None else 0)
    loss.backward()
    assert logits_of(out).shape == (2, 1)
    assert target_module(net, name) is not None
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads[:5])


def test_short_training_lowers_the_loss(tmp_path):
    from mediastinal_ai.cnn.model import RoiDataset, train_cnn

    rng = np.random.default_rng(0)
    n = 24
    labels = np.array([0, 1] * (n // 2))
    imgs = rng.normal(0, 1, (n, 48, 48)).astype(np.float32)
    imgs[labels == 1, 12:36, 12:36] += 2.0  # a learnable signal
    data = RoiDataset(imgs, labels, [f"c{i}" for i in range(n)], ["train"] * 18 + ["val"] * 6)
    recipe = {"margin_mm": 10, "size": 48, "normalize": "zscore", "window": None}
    s = train_cnn(data, tmp_path, "shufflenet_v2_x1_0", recipe, epochs=3, lr=0.01, batch_size=6, device="cpu")
    log = (tmp_path / "training_log.csv").read_text().splitlines()[1:]
    losses = [float(r.split(",")[1]) for r in log]
    assert losses[-1] < losses[0]
    assert (tmp_path / "risk-cnn.safetensors").is_file() and (tmp_path / "training_curves.png").is_file()
    # resumable: a second call with more epochs continues from the checkpoint
    s2 = train_cnn(data, tmp_path, "shufflenet_v2_x1_0", recipe, epochs=4, batch_size=6, device="cpu", resume=True)
    assert len((tmp_path / "training_log.csv").read_text().splitlines()) == 1 + 4
    assert s2["best_val_auc"] >= s["best_val_auc"] - 1e-9


@pytest.fixture(scope="module")
def demo_cnn():
    from mediastinal_ai.cnn import load_model
    from mediastinal_ai.models import resolve

    try:
        return load_model(resolve(None, task="risk-cnn"))
    except ModelError as e:
        pytest.fail(f"demo CNN model missing or broken: {e}")


def test_gradcam_finds_evidence_where_it_is():
    """A network whose evidence is known by construction (a bright-blob detector: conv → ReLU →
    global average → positive weight) must give a Grad-CAM that peaks on the blob, wherever the
    blob is, and a map of the input's size in [0, 1]. This checks the implementation, apart from
    what any trained model happens to look at."""
    from mediastinal_ai.cnn.gradcam import grad_cam

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 5, padding=2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.rand_like(conv.weight))  # positive kernels: respond to brightness
    features = torch.nn.Sequential(conv, torch.nn.ReLU())
    net = torch.nn.Sequential(features, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 1))
    with torch.no_grad():
        net[3].weight.fill_(1.0)
        net[3].bias.fill_(0.0)
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:64, :64]
    for _ in range(10):
        cy, cx = rng.integers(8, 56, 2)
        blob = ((yy - cy) ** 2 + (xx - cx) ** 2 <= 16).astype(np.float32)
        x = torch.from_numpy(np.repeat((0.05 * rng.random((64, 64)) + blob)[None], 3, 0)[None].astype(np.float32))
        cam, p = grad_cam(net, x, features)
        assert cam.shape == (64, 64) and cam.min() >= 0 and cam.max() == pytest.approx(1.0)
        assert p > 0.5
        assert blob[np.unravel_index(np.argmax(cam), cam.shape)] == 1


def _poisson_binomial_tail(p: np.ndarray, k: int) -> float:
    """P(X >= k) for X = sum of independent Bernoulli(p_i): the chance of k or more hits."""
    dist = np.zeros(len(p) + 1)
    dist[0] = 1.0
    for q in p:
        dist[1:] = dist[1:] * (1 - q) + dist[:-1] * q
        dist[0] *= 1 - q
    return float(dist[k:].sum())


@pytest.mark.slow
def test_gradcam_is_brighter_on_the_tumor_than_around_it(demo_cnn):
    """Demo model on 80 held-out synthetic tumors (seeds 96000-96079): Grad-CAM is brighter on the
    tumor than on the rest of the ROI, and its peak is on the tumor at least as often as a peak
    placed at random would be. Also: map on the CT grid, zero outside the ROI of the reported slice,
    non-trivial.

    Why this statistic (fixed on 2026-12-03 before the retrained published-recipe model was evaluated
    with it; it replaced a peak-only test at 40 cases): with the study's tight rectangular ROI the
    tumor fills ~75 % of the box, so "peak in tumor" is right by chance three times in four and 40
    cases cannot tell a localising map from a random one. The per-case difference of mean map value
    inside vs outside the tumor uses the whole map, not one pixel, and does not depend on the box's
    tumor share. Required: one-sided Wilcoxon signed-rank p < 0.05 with a positive median
    difference, over at least 60 cases whose ROI holds background; and the peak rate >= chance."""
    from scipy.stats import wilcoxon

    from mediastinal_ai.cnn import predict_risk
    from mediastinal_ai.synthetic import generate_case
    from mediastinal_ai.taxonomy import WHO_HIGH, WHO_LOW

    hits, chance, diff = [], [], []
    for seed in range(96_000, 96_080):
        c = generate_case(seed, classes=list(WHO_LOW + WHO_HIGH))
        if not c.mask.array.any():  # a lesion below half a voxel leaves no mask, so no ROI
            continue
        res = predict_risk(c.ct, c.mask, demo_cnn)
        assert 0.0 <= res["probability_high_risk"] <= 1.0 and res["group"] in ("low", "high")
        cam_vol = res["gradcam"]
        assert cam_vol.same_geometry(c.ct) and cam_vol.array.min() >= 0 and cam_vol.array.max() <= 1
        k = res["roi"]["slice_index"]
        y0, y1, x0, x1 = res["roi"]["box_yx"]
        assert c.mask.array[k].any()  # the reported slice holds tumor
        outside = cam_vol.array.copy()
        outside[k, y0:y1, x0:x1] = 0
        assert not outside.any()  # nothing outside the ROI of that slice
        cam = cam_vol.array[k, y0:y1, x0:x1]
        assert cam.max() > 0 and cam.std() > 0
        tumor = c.mask.array[k, y0:y1, x0:x1] > 0
        hits.append(bool(tumor[np.unravel_index(np.argmax(cam), cam.shape)]))
        chance.append(tumor.mean())
        if not tumor.all():
            diff.append(float(cam[tumor].mean() - cam[~tumor].mean()))
    p_peak = _poisson_binomial_tail(np.asarray(chance), int(np.sum(hits)))
    p_in_out = wilcoxon(diff, alternative="greater").pvalue
    print(f"Grad-CAM: mean inside - outside tumor, median {np.median(diff):.3f} over {len(diff)} cases "
          f"(Wilcoxon one-sided p = {p_in_out:.3g}); peak in tumor {np.mean(hits):.3f} vs chance "
          f"{np.mean(chance):.3f} (Poisson-binomial p = {p_peak:.3g}, not required)")
    assert len(diff) >= 60
    assert np.median(diff) > 0 and p_in_out < 0.05
    assert np.mean(hits) >= np.mean(chance)


def test_poisson_binomial_tail_by_hand():
    assert _poisson_binomial_tail(np.array([0.5, 0.5]), 1) == pytest.approx(0.75)
    assert _poisson_binomial_tail(np.array([0.2, 0.5, 0.9]), 3) == pytest.approx(0.2 * 0.5 * 0.9)
    assert _poisson_binomial_tail(np.array([0.3, 0.3]), 0) == pytest.approx(1.0)


def test_wrong_inputs_and_tampered_weights(demo_cnn, tmp_path):
    from mediastinal_ai.cnn import load_model
    from mediastinal_ai.cnn.gradcam import grad_cam
    from mediastinal_ai.models import resolve

    with pytest.raises(RuntimeError):  # 1 channel into a 3-channel network
        grad_cam(demo_cnn.net, torch.zeros(1, 1, 224, 224), torch.nn.Identity())
    src = resolve(None, task="risk-cnn")
    d = tmp_path / "t"
    d.mkdir()
    data = bytearray(src.weights_path.read_bytes())
    data[-3] ^= 0x55
    (d / src.weights_path.name).write_bytes(bytes(data))
    (d / src.card_path.name).write_text(src.card_path.read_text())
    with pytest.raises(ModelError, match="sha256 mismatch"):
        resolve(d)
    card = json.loads(src.card_path.read_text())
    card["architecture"]["backbone"] = "mobilenet_v2"  # card says another network than the weights
    from mediastinal_ai.fileio import sha256_file

    (d / src.weights_path.name).write_bytes(src.weights_path.read_bytes())
    card["sha256"] = sha256_file(d / src.weights_path.name)
    (d / src.card_path.name).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="do not fit"):
        load_model(resolve(d))


@pytest.mark.mrml
def test_mrml_overlay_and_table(demo_cnn):
    pytest.importorskip("slicer")
    from mediastinal_ai.mrml import nodes
    from mediastinal_ai.mrml.cnn import predict_risk_cnn
    from mediastinal_ai.synthetic import generate_case

    c = generate_case(96_100, "thymoma_B3")
    scene = nodes.new_scene()
    vn = nodes.volume_to_node(scene, c.ct, "CT")
    seg, sid = nodes.mask_to_segment(scene, c.mask, vn)
    table, cam_node, res = predict_risk_cnn(scene, vn, seg, sid, model=demo_cnn)
    rows = nodes.table_to_records(table)
    assert rows[0]["probability_high_risk"] == pytest.approx(res["probability_high_risk"])
    cam = nodes.node_to_volume(cam_node)
    assert cam.shape == c.ct.shape and cam.array[res["roi"]["slice_index"]].max() > 0
    assert len(res["roi"]["center_ras"]) == 3
