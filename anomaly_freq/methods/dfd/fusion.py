"""DFD's fusion of its two discriminators' maps (spec §10), from training statistics only.

The official code fuses the maps with test-set statistics. The method itself never does that:
by default it standardises each map with statistics of clean training images, and returns the
raw per-discriminator maps as ``map_parts`` so that the evaluator's named ``minmax`` and
``dfd_code`` options can reproduce the paper's and the code's test-set fusions.
"""

from __future__ import annotations

import torch

FUSIONS = ("standardise", "closed_form", "raw")


def closed_form_constants(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, c) of the code's pixel normalisation for one discriminator's maps N×H×W.

    The code's broadcasting slip turns every map P_j into a·P_j − c with
    a = mean_i 1/r_i and c = mean_i min_i/r_i, r_i = max P_i − min P_i (spec §10); the
    ``closed_form`` fusion applies it with constants of clean training maps.

    >>> a, c = closed_form_constants(torch.tensor([[[0.0, 2.0]], [[1.0, 2.0]]]))
    >>> float(a), float(c)
    (0.75, 0.5)
    """
    flat = maps.reshape(maps.shape[0], -1).double()
    low, high = flat.amin(1), flat.amax(1)
    r = (high - low).clamp_min(1e-12)
    return (1 / r).mean(), (low / r).mean()
