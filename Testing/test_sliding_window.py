"""``segment``'s own sliding window (mediastinal_ai.segmentation.window, issue 17: no MONAI import
on the inference path) must give MONAI's ``sliding_window_inference`` output bit for bit, for the
settings ``segment`` uses (Gaussian blending, overlap 0.5, batches of windows)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
monai_inferers = pytest.importorskip("monai.inferers", reason="MONAI is not installed (the reference)")

from mediastinal_ai.segmentation.window import gaussian_importance, sliding_window, window_starts  # noqa: E402


def _predictor():
    """A small random 3D network: nonlinear, position-dependent output, 2 channels."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.Tanh(),
                              torch.nn.Conv3d(4, 2, 3, padding=1)).eval()

    def run(x):
        return net(x).float().contiguous()

    return run


@pytest.mark.parametrize(("shape", "roi", "batch", "overlap"), [
    ((62, 108, 133), (16, 64, 64), 8, 0.5),   # the demo plan on a real chest crop
    ((16, 64, 64), (16, 64, 64), 8, 0.5),     # exactly one window
    ((20, 70, 64), (16, 64, 64), 3, 0.5),     # one axis equal to the window, a partial last batch
    ((33, 41, 50), (8, 16, 24), 1, 0.25),     # batch 1, another overlap
    ((17, 30, 30), (16, 16, 16), 5, 0.6),
])
def test_equals_monai_bit_for_bit(shape, roi, batch, overlap):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.rand((1, 1, *shape), generator=g) * 2 - 1
    f = _predictor()
    with torch.inference_mode():
        ours = sliding_window(x, roi, batch, f, overlap=overlap)
        ref = monai_inferers.sliding_window_inference(x, roi, sw_batch_size=batch, predictor=f, overlap=overlap,
                                                      mode="gaussian", sw_device="cpu", device="cpu")
    assert ours.shape == ref.shape == (1, 2, *shape)
    assert ours.dtype == torch.float32
    assert torch.equal(ours, ref), float((ours - ref).abs().max())


def test_window_grid_and_weights():
    assert window_starts(64, 64, 0.5) == [0]
    assert window_starts(133, 64, 0.5) == [0, 32, 64, 69]  # the last window flush with the edge
    assert window_starts(10, 4, 0.99) == list(range(7))  # step never 0
    w = gaussian_importance((16, 64, 64))
    ref = monai_inferers.utils.compute_importance_map((16, 64, 64), mode="gaussian", sigma_scale=0.125)
    assert torch.equal(w, ref)
    assert float(w.max()) <= 1.0 and float(w.min()) >= 1e-3


def test_refuses_inputs_smaller_than_the_window():
    with pytest.raises(ValueError, match="pad them first"):
        sliding_window(torch.zeros(1, 1, 8, 64, 64), (16, 64, 64), 2, lambda t: t)


def test_segment_inference_does_not_import_monai(tmp_path):
    """Importing MONAI costs seconds and hundreds of MB; the inference path must not need it."""
    code = (
        "import sys, json, numpy as np\n"
        "from mediastinal_ai.segmentation.window import sliding_window\n"
        "import mediastinal_ai.segmentation.inference as inf, torch\n"
        "x = torch.zeros(1, 1, 16, 32, 32)\n"
        "sliding_window(x, (16, 16, 16), 2, lambda t: t)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'monai')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
