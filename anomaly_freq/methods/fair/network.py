"""FAIR's restoration network: DRAEM's encoder–decoder with additive skip connections.

Five encoder levels of two conv-BN-ReLU units (widths c, 2c, 4c, 8c, 8c, max-pooling between),
four decoder stages (bilinear ×2 upsampling and one unit, plus the encoder feature of the same
level, then two units that halve the width) and a plain 3×3 head with no output activation.
With one input channel this has 69,046,275 parameters at c = 128 (fair.md §5), the model of
the paper's Table 5.
"""

from __future__ import annotations

import torch
from torch import nn


def cbr(c_in: int, c_out: int) -> nn.Sequential:
    """Conv3×3 (padding 1, with bias) → BatchNorm → ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class Up(nn.Module):
    """Bilinear ×2 upsampling (align_corners=True), then one unit of unchanged width."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.unit = cbr(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unit(self.upsample(x))


class RestorationNet(nn.Module):
    """``in_channels`` (1: high-pass grey) → 3-channel image, base width ``c``."""

    def __init__(self, in_channels: int = 1, out_channels: int = 3, base_width: int = 128) -> None:
        super().__init__()
        c = base_width
        widths = [c, 2 * c, 4 * c, 8 * c, 8 * c]
        self.encoder = nn.ModuleList()
        previous = in_channels
        for width in widths:
            self.encoder.append(nn.Sequential(cbr(previous, width), cbr(width, width)))
            previous = width
        self.pool = nn.MaxPool2d(2)
        # decoder stage i works at the width of encoder level 4 - i and halves it (not the last)
        stage_widths = [(8 * c, 4 * c), (4 * c, 2 * c), (2 * c, c), (c, c)]
        self.up = nn.ModuleList(Up(w) for w, _ in stage_widths)
        self.decoder = nn.ModuleList(nn.Sequential(cbr(w, w), cbr(w, out))
                                     for w, out in stage_widths)
        self.head = nn.Conv2d(c, out_channels, 3, padding=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DRAEM's initialisation: conv weights N(0, 0.02); BN weights N(1, 0.02), bias 0."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, block in enumerate(self.encoder):
            if level:
                x = self.pool(x)
            x = block(x)
            skips.append(x)
        x = skips.pop()  # the bottleneck
        for up, block in zip(self.up, self.decoder, strict=True):
            x = block(up(x) + skips.pop())
        return self.head(x)


def parameter_count(in_channels: int = 1, base_width: int = 128, out_channels: int = 3) -> int:
    """Trainable parameters, counted from the layer shapes without building the network.

    >>> parameter_count(base_width=128), parameter_count(base_width=32)
    (69046275, 4322307)
    """
    c = base_width

    def unit(c_in: int, c_out: int) -> int:
        return 9 * c_in * c_out + c_out + 2 * c_out  # conv weight + bias, BN weight + bias

    widths = [c, 2 * c, 4 * c, 8 * c, 8 * c]
    total, previous = 0, in_channels
    for width in widths:
        total += unit(previous, width) + unit(width, width)
        previous = width
    for w, out in [(8 * c, 4 * c), (4 * c, 2 * c), (2 * c, c), (c, c)]:
        total += unit(w, w) + unit(w, w) + unit(w, out)
    return total + 9 * c * out_channels + out_channels
