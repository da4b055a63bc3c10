"""DFD's frozen feature extractor: a timm backbone and PatchCore-style local aggregation.

For WideResNet-50-2 at 256×256, layer2 (512×32×32) and layer3 (1024×16×16) become one
1536-dimensional vector per position of a 32×32 grid (spec §5): every position takes its 3×3
neighbourhood, layer3's neighbourhoods are resized bilinearly to layer2's grid, each layer's
C·9 vector is average-pooled to 1536, and the two layer vectors, laid end to end, are pooled
once more to 1536.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from anomaly_freq.errors import AfreqError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _weights_help(name: str) -> str:
    return (f"download the ImageNet weights of '{name}' once on a machine with network access "
            "(timm keeps them in the Hugging Face cache, $HF_HOME), or set "
            "backbone.weights=<file> to a local state dict (for WideResNet-50-2, torchvision's "
            "wide_resnet50_2-95faca4d.pth works), or backbone.pretrained=false to train on "
            "random features (results are then not comparable with the paper)")


def _read_state_dict(path: Path, name: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise AfreqError(f"backbone.weights={path} does not exist; {_weights_help(name)}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickles with code, truncated files, wrong formats
        raise AfreqError(f"backbone.weights={path} is not a plain state dict that torch.load "
                         f"can read with weights_only=True ({err})") from err
    for key in ("state_dict", "model"):  # common wrappers around the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise AfreqError(f"backbone.weights={path} holds a {type(state).__name__}, not a state "
                         "dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items() if torch.is_tensor(v)}


def build_backbone(name: str, layers: tuple[int, ...] = (2, 3), pretrained: bool = True,
                   weights: str | None = None) -> nn.Module:
    """A frozen timm feature extractor returning the feature maps of ``layers``.

    ``weights`` (a local state dict, loaded with ``weights_only=True``) wins over
    ``pretrained``; unused entries of the file (layer4, fc) are ignored, missing ones are an
    error. Without either, the backbone keeps timm's random initialisation.
    """
    try:
        model = timm.create_model(name, pretrained=pretrained and not weights,
                                  features_only=True, out_indices=tuple(layers))
    except Exception as err:
        if name.split(".")[0] not in timm.list_models():
            raise AfreqError(f"backbone.name='{name}' is not a timm model; pick one from "
                             "timm.list_models(), e.g. wide_resnet50_2.tv_in1k or resnet18"
                             ) from err
        if pretrained and not weights:
            raise AfreqError(f"could not load pretrained weights for backbone '{name}' through "
                             f"timm ({type(err).__name__}: {err}); {_weights_help(name)}"
                             ) from err
        raise
    if weights:
        state = _read_state_dict(Path(weights), name)
        own = model.state_dict()
        missing = [k for k in own if k not in state]
        if missing:
            raise AfreqError(f"backbone.weights={weights} lacks {len(missing)} tensors the "
                             f"backbone '{name}' needs (first: {missing[0]}); is it a state "
                             "dict of that architecture?")
        bad = [k for k in own if state[k].shape != own[k].shape]
        if bad:
            raise AfreqError(f"backbone.weights={weights}: tensor {bad[0]} has shape "
                             f"{tuple(state[bad[0]].shape)}, the backbone expects "
                             f"{tuple(own[bad[0]].shape)}")
        model.load_state_dict({k: state[k] for k in own})
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _pool_channels(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``adaptive_avg_pool1d`` to ``dim`` along axis 1 of a B×L×T tensor."""
    b, length, t = x.shape
    if length % dim == 0:  # equal windows of consecutive entries: a reshape and a mean
        return x.reshape(b, dim, length // dim, t).mean(2)
    rows = x.transpose(1, 2).reshape(b * t, 1, length)
    return F.adaptive_avg_pool1d(rows, dim).reshape(b, t, dim).transpose(1, 2)


def neighbourhoods(fmap: torch.Tensor) -> torch.Tensor:
    """``F.unfold(fmap, 3, padding=1)`` as B×(C·9)×(H·W), from shifted slices (much faster
    than unfold on CPU); entries in (c, dy, dx) order, zero outside the map."""
    b, c, h, w = fmap.shape
    padded = F.pad(fmap, (1, 1, 1, 1))
    shifts = [padded[:, :, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)]
    return torch.stack(shifts, dim=2).reshape(b, c * 9, h * w)


def local_aggregate(maps: list[torch.Tensor], dim: int = 1536) -> torch.Tensor:
    """PatchCore/SimpleNet aggregation: (B·h·w)×dim vectors, rows in (b, y, x) order.

    ``maps[0]`` sets the grid (h, w). Each map contributes its zero-padded 3×3 neighbourhoods
    (C·9 values, order c, dy, dx), average-pooled to ``dim`` and resized bilinearly to the
    grid when coarser; the layer vectors, concatenated, are pooled to ``dim`` again. Pooling
    before resizing gives the spec's resize-then-pool result (both are linear and act on
    different axes) at a fraction of the memory traffic.
    """
    b = maps[0].shape[0]
    grid = tuple(maps[0].shape[-2:])
    per_layer = []
    for fmap in maps:
        c, h, w = fmap.shape[1:]
        pooled = _pool_channels(neighbourhoods(fmap), dim).reshape(b, dim, h, w)
        if (h, w) != grid:
            pooled = F.interpolate(pooled, size=grid, mode="bilinear", align_corners=False)
        per_layer.append(pooled.flatten(2))
    joined = _pool_channels(torch.cat(per_layer, dim=1), dim)  # layer vectors end to end
    return joined.transpose(1, 2).reshape(-1, dim)


class FeatureExtractor(nn.Module):
    """Backbone + aggregation; always in eval mode, never trained."""

    def __init__(self, backbone: nn.Module, dim: int = 1536) -> None:
        super().__init__()
        self.backbone, self.dim = backbone, dim
        self.reduction = int(backbone.feature_info.reduction()[0])

    def train(self, mode: bool = True) -> FeatureExtractor:
        return super().train(False)  # BatchNorm statistics stay those of the weights

    def grid(self, side: int) -> int:
        """Side of the token grid for a square input of ``side`` pixels."""
        return -(-side // self.reduction)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_aggregate(list(self.backbone(x)), self.dim)
