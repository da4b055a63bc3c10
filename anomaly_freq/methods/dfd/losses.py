"""DFD's losses (spec §8), one band at a time; logits are positive for normal."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_loss(clean: torch.Tensor, noisy: torch.Tensor, margin: float) -> torch.Tensor:
    """Hinge: clean tokens above +margin, noise-corrupted tokens below −margin."""
    return F.relu(margin - clean).mean() + F.relu(margin + noisy).mean()


def perlin_pixel_loss(logits: torch.Tensor, mask: torch.Tensor, margin: float) -> torch.Tensor:
    """Class-balanced hinge of full-resolution logits (B×1×H×W) against the mask.

    Anomalous and normal pixels are averaged separately over the batch; a batch without any
    anomalous pixel has only the normal term.
    """
    anomalous = mask > 0.5
    normal_term = F.relu(margin - logits[~anomalous]).mean()
    if not anomalous.any():
        return normal_term
    return F.relu(margin + logits[anomalous]).mean() + normal_term


def perlin_image_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Squared error between the image label and the map maximum of sigmoid(−logit)."""
    peak = torch.sigmoid(-logits).flatten(1).amax(1)
    return F.mse_loss(peak, labels.float())


def similarity_loss(augmented: torch.Tensor, clean: torch.Tensor,
                    token_mask: torch.Tensor) -> torch.Tensor:
    """Mean cosine between augmented and clean features at pseudo-anomalous tokens.

    Minimising it pushes those features apart (the code's sign; the paper's printed
    1 − cos would pull them together, spec §13 row 4). Zero when no token is anomalous.
    """
    picked = token_mask.reshape(-1) > 0.5
    if not picked.any():
        return augmented.sum() * 0.0
    return F.cosine_similarity(augmented[picked], clean[picked], dim=-1).mean()
