"""OCR-GAN's networks: the two-branch U-Net generator with channel selection, and the
DCGAN-style discriminator (the ocrgan.md spec §4–§6).

At 256×256 with ngf = ndf = 64 the sizes are those measured on the official definitions:
generator 108.83 M parameters without channel-selection weights (the official code never
registers them), 110.93 M with the learned channel selection; discriminator 47.98 M.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from anomaly_freq.errors import AfreqError

CS_MODES = ("learned", "random", "none")


def unet_widths(ngf: int, levels: int) -> list[int]:
    """Channels of the encoder levels: ngf, 2ngf, 4ngf, then 8ngf (pix2pix's unet_256 at 8)."""
    return [ngf * min(2**k, 8) for k in range(levels)]


def _gate(f_low: torch.Tensor, f_high: torch.Tensor, fc_w: torch.Tensor, fc_b: torch.Tensor,
          heads_w: torch.Tensor, heads_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum, global average pool, bottleneck, two heads, softmax across the branches."""
    z = F.linear((f_low + f_high).mean(dim=(2, 3)), fc_w, fc_b)              # B×d
    logits = torch.einsum("bd,ncd->bnc", z, heads_w) + heads_b              # B×2×C
    gates = logits.softmax(dim=1)[..., None, None]
    return f_low * gates[:, 0], f_high * gates[:, 1]


class ChannelSelection(nn.Module):
    """SK-Net-like per-channel soft choice between the low and the high branch (§5).

    ``mode="learned"`` (the paper): registered, trained, checkpointed weights.
    ``mode="random"`` (the official code): fresh weights with PyTorch's default Linear
    initialisation on every call, never trained, so outputs are stochastic even in eval mode.
    ``mode="none"``: identity (two independent branches, Table V row 3).
    """

    def __init__(self, channels: int, reduction: int = 2, min_dim: int = 32,
                 mode: str = "learned") -> None:
        super().__init__()
        if mode not in CS_MODES:
            raise AfreqError(f"channel-selection mode '{mode}' is unknown; valid: "
                             f"{', '.join(CS_MODES)}")
        self.mode, self.channels = mode, channels
        self.dim = max(channels // reduction, min_dim)
        self.generator: torch.Generator | None = None  # random mode: None = global RNG
        if mode == "learned":
            self.fc = nn.Linear(channels, self.dim)
            self.heads_weight = nn.Parameter(torch.empty(2, channels, self.dim))
            self.heads_bias = nn.Parameter(torch.zeros(2, channels))
            nn.init.normal_(self.heads_weight, 0.0, 0.02)

    def _random_weights(self, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Weights as a freshly built nn.Linear would get them: U(±1/√fan_in)."""
        def uniform(shape: tuple[int, ...], fan_in: int) -> torch.Tensor:
            bound = 1.0 / math.sqrt(fan_in)
            gen = self.generator
            device = gen.device if gen is not None else like.device
            u = torch.rand(shape, generator=gen, device=device, dtype=like.dtype)
            return ((2 * u - 1) * bound).to(like.device)

        c, d = self.channels, self.dim
        return (uniform((d, c), c), uniform((d,), c),
                uniform((2, c, d), d), uniform((2, c), d))

    def forward(self, f_low: torch.Tensor,
                f_high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "none":
            return f_low, f_high
        if self.mode == "random":
            return _gate(f_low, f_high, *self._random_weights(f_low))
        return _gate(f_low, f_high, self.fc.weight, self.fc.bias, self.heads_weight,
                     self.heads_bias)


class _Branch(nn.Module):
    """One pix2pix U-Net (BatchNorm, no dropout) split into per-level encoder and decoder steps,
    so that the two branches can be coupled between encoder levels."""

    def __init__(self, in_channels: int, out_channels: int, widths: list[int]) -> None:
        super().__init__()
        levels = len(widths)
        self.down = nn.ModuleList()
        self.up = nn.ModuleList()
        for k, width in enumerate(widths):
            inner = k == levels - 1
            if k == 0:
                self.down.append(nn.Conv2d(in_channels, width, 4, 2, 1, bias=False))
            else:
                layers: list[nn.Module] = [nn.LeakyReLU(0.2),
                                           nn.Conv2d(widths[k - 1], width, 4, 2, 1, bias=False)]
                if not inner:
                    layers.append(nn.BatchNorm2d(width))
                self.down.append(nn.Sequential(*layers))
            up_in = width if inner else 2 * width
            if k == 0:
                self.up.append(nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(up_in, out_channels,
                                                                           4, 2, 1), nn.Tanh()))
            else:
                self.up.append(nn.Sequential(
                    nn.ReLU(), nn.ConvTranspose2d(up_in, widths[k - 1], 4, 2, 1, bias=False),
                    nn.BatchNorm2d(widths[k - 1])))


class TwoBranchUNet(nn.Module):
    """OCR-GAN's generator: a U-Net per frequency band, channel selection after every encoder
    level, the two branch outputs (each Tanh) summed into the reconstruction.

    ``levels`` is the number of stride-2 levels (8 at 256×256, so the bottleneck is 1×1).
    """

    def __init__(self, ngf: int = 64, levels: int = 8, cs_mode: str = "learned",
                 cs_reduction: int = 2, cs_min_dim: int = 32, channels: int = 3) -> None:
        super().__init__()
        widths = unet_widths(ngf, levels)
        self.low = _Branch(channels, channels, widths)
        self.high = _Branch(channels, channels, widths)
        self.cs = nn.ModuleList(ChannelSelection(w, cs_reduction, cs_min_dim, cs_mode)
                                for w in widths)

    def set_generator(self, generator: torch.Generator | None) -> None:
        """RNG of the random channel selection (None: the global torch RNG)."""
        for module in self.cs:
            module.generator = generator

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        skips = []
        a, b = low, high
        for down_a, down_b, cs in zip(self.low.down, self.high.down, self.cs, strict=True):
            a, b = cs(down_a(a), down_b(b))
            skips.append((a, b))
        out_a, out_b = skips[-1]
        for k in range(len(skips) - 1, -1, -1):
            if k < len(skips) - 1:
                out_a = torch.cat([skips[k][0], out_a], dim=1)
                out_b = torch.cat([skips[k][1], out_b], dim=1)
            out_a, out_b = self.low.up[k](out_a), self.high.up[k](out_b)
        return out_a + out_b


class Discriminator(nn.Module):
    """DCGAN encoder to a ``nz``-d feature (1×1, no activation) and a 3×3 conv + sigmoid head.

    Stride-2 convolutions double the width from ``ndf`` until the map is 4×4, then a 4×4 conv
    makes the feature; no convolution has a bias (§6).
    """

    def __init__(self, size: int = 256, ndf: int = 64, nz: int = 100, channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, ndf, 4, 2, 1, bias=False),
                                   nn.LeakyReLU(0.2)]
        side, width = size // 2, ndf
        while side > 4:
            layers += [nn.Conv2d(width, 2 * width, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2)]
            side, width = side // 2, 2 * width
        layers.append(nn.Conv2d(width, nz, 4, 1, 0, bias=False))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Conv2d(nz, 1, 3, 1, 1, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(probability B, feature B×nz) of B×3×S×S images; the probability in fp32 also
        under autocast, where a half-precision sigmoid would round confident outputs to 1."""
        feature = self.features(x)
        with torch.autocast(feature.device.type, enabled=False):
            probability = self.classifier(feature.float())
        return probability.flatten(), feature.flatten(1)


def init_weights(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """The code's initialisation: conv/linear N(0, 0.02) with zero bias, BatchNorm N(1, 0.02);
    drawn on the CPU from ``generator`` (None: torch's global RNG)."""
    def normal(weight: torch.Tensor, mean: float) -> None:
        draw = torch.empty(weight.shape).normal_(mean, 0.02, generator=generator)
        with torch.no_grad():
            weight.copy_(draw)

    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            normal(m.weight, 0.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            normal(m.weight, 1.0)
            nn.init.zeros_(m.bias)
