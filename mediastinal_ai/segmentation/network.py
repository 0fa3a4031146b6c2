"""The published 3D U-Net: 4 resolution levels, two conv-BN-ReLU per level, max-pool down,
transposed-conv up with skip concatenation, Glorot (Xavier) initialisation, one sigmoid output.

``decoder="deconv_bn_relu"`` follows the study's decoder block (transposed conv + BN + ReLU before
the skip concatenation); ``"deconv"`` (a bare transposed conv) is what the shipped demo model and
earlier plans use."""

from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True),
        nn.Conv3d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True),
    )


DECODERS = ("deconv", "deconv_bn_relu")


class UNet3D(nn.Module):
    def __init__(self, features: tuple[int, ...] = (32, 64, 128, 256), in_channels: int = 1, out_channels: int = 1,
                 decoder: str = "deconv"):
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
        if len(features) != 4:
            raise ValueError("UNet3D has 4 resolution levels: give 4 feature widths")
        f = list(features)
        self.enc = nn.ModuleList([_block(in_channels, f[0]), _block(f[0], f[1]), _block(f[1], f[2])])
        self.pool = nn.MaxPool3d(2)
        self.bottom = _block(f[2], f[3])
        def up(cin: int, cout: int) -> nn.Module:
            deconv = nn.ConvTranspose3d(cin, cout, 2, stride=2, bias=decoder == "deconv")
            return deconv if decoder == "deconv" else nn.Sequential(deconv, nn.BatchNorm3d(cout), nn.ReLU(inplace=True))

        self.up = nn.ModuleList([up(f[i + 1], f[i]) for i in (2, 1, 0)])
        self.dec = nn.ModuleList([_block(2 * f[i], f[i]) for i in (2, 1, 0)])
        self.head = nn.Conv3d(f[0], out_channels, 1)
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for enc in self.enc:
            x = enc(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            x = dec(torch.cat([up(x), skip], dim=1))
        return self.head(x)  # logits
