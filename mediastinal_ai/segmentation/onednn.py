"""Convolution + ReLU as one oneDNN call on a CPU (issue 17).

Why: with batch norm folded into the convolutions, the ReLUs were the largest cost of a published
window after the convolutions themselves — a bfloat16 ``relu_`` over a full-resolution
32-channel activation is a memory pass oneDNN does not vectorise well (Xeon with AMX, 2 threads:
the five full-resolution ReLUs of one batch took 148 ms of 760). oneDNN applies a ReLU as a
*post-op* while the convolution's output is still in registers; PyTorch exposes that fused kernel
as ``torch.ops.mkldnn._convolution_pointwise`` (and its transposed twin), the kernels
``torch.compile`` itself uses for the same fusion on a CPU. Calling them directly gives the fusion
without compiling anything at run time. The outputs are the same numbers (the post-op is the
same max(0, ·) on the same accumulator; tested against the unfused network).

These are PyTorch-internal operators: :func:`fused_ops_available` checks for them and the caller
keeps the plain modules when they are missing (another PyTorch build, no oneDNN).
"""

from __future__ import annotations

import torch
from torch import nn


def fused_ops_available() -> bool:
    try:
        return bool(torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._convolution_pointwise is not None
                    and torch.ops.mkldnn._convolution_transpose_pointwise is not None)
    except (AttributeError, RuntimeError):
        return False


class ConvReLU(nn.Module):
    """``relu(conv(x))`` of a (folded) ``Conv3d`` or ``ConvTranspose3d`` in one oneDNN call.

    Weights are buffers, not parameters: this module only ever runs inference, and the fused
    operators have no autograd formula."""

    def __init__(self, conv: nn.Conv3d | nn.ConvTranspose3d):
        super().__init__()
        if conv.padding_mode != "zeros":
            raise ValueError("only zero-padded convolutions can be fused")
        self.transposed = isinstance(conv, nn.ConvTranspose3d)
        self.register_buffer("weight", conv.weight.detach().clone())
        bias = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(conv.out_channels)
        self.register_buffer("bias", bias)
        self.padding, self.stride = list(conv.padding), list(conv.stride)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.output_padding = list(getattr(conv, "output_padding", (0, 0, 0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.transposed:
            return torch.ops.mkldnn._convolution_transpose_pointwise(
                x, self.weight, self.bias, self.padding, self.output_padding, self.stride, self.dilation,
                self.groups, "relu", [], "")
        return torch.ops.mkldnn._convolution_pointwise(
            x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups, "relu", [], "")


def fuse_conv_relu(net: nn.Module) -> nn.Module:
    """``net`` (changed in place, returned) with every convolution that a ReLU follows — directly
    or through the ``Identity`` a folded batch norm left — replaced by :class:`ConvReLU`, and that
    ReLU by ``Identity``. Run it after folding batch norm: a convolution still followed by a
    ``BatchNorm3d`` is left alone."""
    for m in net.modules():
        if not isinstance(m, nn.Sequential):
            continue
        for i in range(len(m)):
            if not isinstance(m[i], (nn.Conv3d, nn.ConvTranspose3d)) or m[i].padding_mode != "zeros":
                continue
            j = i + 1
            while j < len(m) and isinstance(m[j], nn.Identity):
                j += 1
            if j < len(m) and isinstance(m[j], nn.ReLU):
                m[i] = ConvReLU(m[i])
                m[j] = nn.Identity()
    return net
