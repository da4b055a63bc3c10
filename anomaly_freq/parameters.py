"""Parameter counts of a torch module (a leaf: every layer may import it)."""

from __future__ import annotations

from torch import nn


def count_parameters(module: nn.Module, trainable: bool | None = None) -> int:
    """Number of parameters of ``module``; ``trainable=True``/``False`` counts only those that
    do/do not require gradients.

    >>> net = nn.Linear(3, 2)
    >>> _ = net.bias.requires_grad_(False)
    >>> count_parameters(net), count_parameters(net, trainable=True)
    (8, 6)
    """
    return sum(p.numel() for p in module.parameters()
               if trainable is None or p.requires_grad == trainable)
