"""The closed-form FLOP count of the 3D U-Net (compute.unet_flops, issue 17: tracing it cost 1.8 s
of every ``segment`` run) must equal what torch's FlopCounterMode counts on the network itself."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")

from mediastinal_ai.segmentation.compute import forward_flops, unet_flops  # noqa: E402
from mediastinal_ai.segmentation.network import UNet3D  # noqa: E402


def _traced(features, patch, decoder="deconv"):
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        net = UNet3D(features, decoder=decoder)
        x = torch.empty(1, 1, *patch)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(x)
    return float(counter.get_total_flops())


@pytest.mark.parametrize(("features", "patch", "decoder"), [
    ((8, 16, 32, 64), (16, 64, 64), "deconv"),        # the demo plan
    ((32, 64, 128, 256), (48, 128, 128), "deconv"),   # the published network
    ((32, 64, 128, 256), (48, 128, 128), "deconv_bn_relu"),
    ((4, 12, 20, 36), (8, 24, 40), "deconv"),
])
def test_closed_form_equals_traced_count(features, patch, decoder):
    want = _traced(features, patch, decoder)
    assert want > 0
    assert unet_flops(features, patch) == want
    assert forward_flops(features, patch) == want


def test_patch_the_poolings_do_not_divide_falls_back():
    assert unet_flops((8, 16, 32, 64), (12, 64, 64)) is None
    assert unet_flops((8, 16, 32), (16, 64, 64)) is None
