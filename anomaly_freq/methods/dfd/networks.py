"""DFD's trainable parts (spec §5, §7): the feature adaptor and the two discriminators.

Both discriminators give one logit per token; positive means normal, negative anomalous.
With the default sizes the trainable total is 36.21 M parameters: adaptor 2.36 M, Gaussian
discriminator 1.58 M, Perlin discriminator 32.28 M.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.models.vision_transformer import Block
from torch import nn


class FeatureAdaptor(nn.Module):
    """ψ: one linear layer, no activation, Xavier-normal weight; shared by bands and images."""

    def __init__(self, dim: int = 1536) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        nn.init.xavier_normal_(self.linear.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


class GaussianDiscriminator(nn.Module):
    """φG: per-token MLP (Linear → BatchNorm → LeakyReLU 0.2 → Linear without bias)."""

    def __init__(self, dim: int = 1536, hidden: int = 1024) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden),
                                  nn.LeakyReLU(0.2))
        self.head = nn.Linear(hidden, 1, bias=False)
        for layer in (self.body[0], self.head):
            nn.init.xavier_normal_(layer.weight)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """N×dim tokens → N logits."""
        return self.head(self.body(tokens)).squeeze(-1)


class PerlinDiscriminator(nn.Module):
    """φP: token MLP, then one pre-norm ViT block over the token grid with a class token and
    learned absolute positions, a final LayerNorm, and a per-token linear head."""

    def __init__(self, dim: int = 1536, tokens: int = 1024, heads: int = 16,
                 mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.tokens = tokens
        self.token_mlp = nn.Sequential(nn.Linear(dim, dim), nn.BatchNorm1d(dim),
                                       nn.LeakyReLU(0.2))
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 1e-6)
        self.pos_embed = nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, tokens + 1, dim),
                                                            std=0.02))
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.block = Block(dim, heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=norm)
        self.norm = norm(dim)
        self.head = nn.Linear(dim, 1, bias=False)
        for module in self.block.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B·T)×dim tokens, rows in (b, y, x) order → (B·T) logits."""
        x = self.token_mlp(tokens).view(-1, self.tokens, tokens.shape[-1])
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.block(x))[:, 1:]
        return self.head(x).reshape(-1)
