"""Window-network numerics (issue 17): folded batch norm is the same function, bfloat16 on a CPU
keeps the masks of fp32 on a real CT, the precision choice is explicit and recorded."""

from __future__ import annotations

import numpy as np
import pytest

from mediastinal_ai.errors import InputError
from mediastinal_ai.segmentation.inference import (
    _fold_batchnorm,
    choose_precision,
    cpu_has_native_bf16,
    predict_maps,
    window_network,
)


@pytest.fixture(scope="module")
def demo_model():
    from mediastinal_ai.models import resolve
    from mediastinal_ai.segmentation import load_model

    return load_model(resolve(None, task="segmentation"), device="cpu")


def test_folded_batchnorm_is_the_same_network():
    import torch

    from mediastinal_ai.segmentation.network import UNet3D

    torch.manual_seed(0)
    for decoder in ("deconv", "deconv_bn_relu"):  # the published decoder has BN after the deconvolution
        _check_fold(UNet3D((4, 8, 8, 8), decoder=decoder).eval())


def _check_fold(net):
    import torch

    for m in net.modules():  # non-trivial running statistics, as after training
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.3, 3.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    folded = _fold_batchnorm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm3d) for m in net.modules())  # the original is untouched
    x = torch.rand(2, 1, 16, 32, 32)
    with torch.inference_mode():
        a, b = net(x), folded(x)
    assert float((a - b).abs().max()) < 1e-4 * float(a.abs().max())


def test_fp32_window_network_is_the_trained_network_in_another_layout(demo_model):
    """The fp32 CPU path folds batch norm and runs in channels_last_3d: the same function as the
    trained network in its default layout, and it hands back ordinary contiguous logits."""
    import torch

    run = window_network(demo_model, "fp32")
    assert window_network(demo_model, "fp32") is run  # built once per model and precision
    x = torch.rand(3, 1, *demo_model.plan.patch_size_zyx)
    with torch.inference_mode():
        ref = demo_model.net.eval()(x)
        got = run(x)
    assert got.is_contiguous() and got.shape == ref.shape and got.dtype == torch.float32
    assert float((got - ref).abs().max()) < 1e-4 * float(ref.abs().max())


def test_precision_choice():
    assert choose_precision("fp32", "cpu") == "fp32"
    assert choose_precision("auto", "cpu") == ("bf16" if cpu_has_native_bf16() else "fp32")
    with pytest.raises(InputError, match="GPU"):
        choose_precision("fp16", "cpu")
    with pytest.raises(InputError, match="precision must be one of"):
        choose_precision("int8", "cpu")


def test_bf16_keeps_the_fp32_masks_on_a_real_ct(real_ct_dir, demo_model):
    """Same real CT (the real mediastinum crop with a SYNTHETIC-ON-REAL lesion so that there is a
    mask to compare), same windows: bfloat16 + channels_last_3d against fp32, Dice >= 0.99."""
    if not cpu_has_native_bf16():
        pytest.skip("this CPU has no native bfloat16 (AMX/AVX512-BF16): bf16 is not used here")
    from mediastinal_ai.io import read_ct
    from mediastinal_ai.synthetic.insertion import insert_lesion

    case = insert_lesion(read_ct(real_ct_dir / "mediastinum_crop_ct.nii.gz"), seed=3, lesion_class="thymoma_B2",
                         diameter_mm=40.0)
    ref = predict_maps(case.ct, demo_model, tta="none", precision="fp32")
    low = predict_maps(case.ct, demo_model, tta="none", precision="bf16", anatomy=ref.anatomy)
    assert ref.info["precision"] == "fp32" and low.info["precision"] == "bf16"
    assert ref.info["windows_per_pass"] == low.info["windows_per_pass"]
    a, b = ref.probability.array >= 0.5, low.probability.array >= 0.5
    assert a.sum() > 200, "fp32 found too little to compare"
    dice = 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())
    assert dice >= 0.99, dice
    assert float(np.abs(ref.probability.array - low.probability.array).max()) < 0.2


def _net_with_statistics(features, decoder):
    import torch

    from mediastinal_ai.segmentation.network import UNet3D

    torch.manual_seed(1)
    net = UNet3D(features, decoder=decoder).eval()
    for m in net.modules():  # non-trivial batch-norm statistics: some channels are mostly negative
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.3, 3.0)
            m.bias.data.uniform_(-0.5, 0.3)
    return net


@pytest.mark.parametrize("decoder", ["deconv", "deconv_bn_relu"])
def test_fused_convolution_relu_is_the_same_network(decoder):
    """Every convolution + ReLU as one oneDNN call (issue 17): each conv that a ReLU follows is
    replaced (the transposed convs of the published decoder too), none other, and the logits equal
    those of the folded network run op by op, in fp32 and — where the CPU computes it — bf16 (the
    precision ``segment`` fuses in; fp32 keeps separate ReLUs, measured no faster)."""
    import torch

    from mediastinal_ai.segmentation.inference import cpu_window_module
    from mediastinal_ai.segmentation.onednn import ConvReLU, fused_ops_available

    if not fused_ops_available():
        pytest.skip("this PyTorch build has no oneDNN fused convolution kernels: the plain modules are used")
    net = _net_with_statistics((4, 8, 8, 16), decoder)
    assert not any(isinstance(m, ConvReLU) for m in cpu_window_module(net, "fp32").modules())  # fp32: by measurement
    fused = cpu_window_module(net, "fp32", fuse_relu=True)
    n_fused = sum(isinstance(m, ConvReLU) for m in fused.modules())
    n_relu = sum(isinstance(m, torch.nn.ReLU) for m in net.modules())
    assert n_fused == n_relu == (14 if decoder == "deconv" else 17)  # 7 blocks × 2 (+ 3 decoder deconvs)
    assert not any(isinstance(m, torch.nn.ReLU) for m in fused.modules())
    assert isinstance(fused.head, torch.nn.Conv3d)  # the logits have no ReLU
    assert not any(isinstance(m, ConvReLU) for m in net.modules())  # the trained network is untouched
    x = torch.rand(2, 1, 16, 32, 32)
    with torch.inference_mode():
        ref = _fold_batchnorm(net).to(memory_format=torch.channels_last_3d)(x.contiguous(memory_format=torch.channels_last_3d))
        got = fused(x.contiguous(memory_format=torch.channels_last_3d))
        assert float((got - ref).abs().max()) <= 1e-5 * float(ref.abs().max())
        if cpu_has_native_bf16():
            xb = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last_3d)
            plain = _fold_batchnorm(net).to(memory_format=torch.channels_last_3d).to(torch.bfloat16)
            low = cpu_window_module(net, "bf16")
            assert sum(isinstance(m, ConvReLU) for m in low.modules()) == n_relu
            a, b = plain(xb).float(), low(xb).float()
            assert float((a - b).abs().max()) <= 1e-2 * float(a.abs().max())


def test_window_network_without_fused_kernels(monkeypatch, demo_model):
    """A PyTorch without oneDNN's fused kernels keeps the plain modules, and the same logits."""
    import torch

    from mediastinal_ai.segmentation import onednn
    from mediastinal_ai.segmentation.inference import cpu_window_module

    monkeypatch.setattr(onednn, "fused_ops_available", lambda: False)
    plain = cpu_window_module(demo_model.net, "fp32", fuse_relu=True)
    assert not any(isinstance(m, onednn.ConvReLU) for m in plain.modules())
    assert any(isinstance(m, torch.nn.ReLU) for m in plain.modules())
    x = torch.rand(2, 1, *demo_model.plan.patch_size_zyx).contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        ref = demo_model.net.eval()(x)
        assert float((plain(x) - ref).abs().max()) < 1e-4 * float(ref.abs().max())
