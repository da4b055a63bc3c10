"""Per-category checkpoints: the method's state_dict plus the resolved config that built it.

Saved with `torch.save` through a temporary file and loaded with ``weights_only=True`` (only
tensors and plain containers), so a checkpoint cannot run code when it is opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from anomaly_freq import __version__
from anomaly_freq.config import build_method
from anomaly_freq.errors import AfreqError
from anomaly_freq.files import replacing

FORMAT = 1


def save_checkpoint(method: Any, cfg: DictConfig, path: Path,
                    calibration: dict[str, Any] | None = None) -> None:
    """``calibration``: the run's threshold and map range (`anomaly_freq.run.calibration`)."""
    payload = {
        "format": FORMAT,
        "anomaly_freq": __version__,
        "method": cfg.method.name,
        "config": OmegaConf.to_container(cfg, resolve=True),
        "state_dict": {k: v.detach().cpu() for k, v in method.state_dict().items()},
        "calibration": calibration,
    }
    with replacing(path) as tmp:
        torch.save(payload, tmp)


@dataclass(frozen=True)
class Checkpoint:
    method: Any  # in eval mode
    cfg: DictConfig
    calibration: dict[str, Any] | None  # None in checkpoints saved before calibration existed


def load_checkpoint(path: Path, expected_method: str | None = None) -> tuple[Any, DictConfig]:
    """Rebuild the method from a checkpoint; returns (method in eval mode, its config)."""
    checkpoint = read_checkpoint(path, expected_method)
    return checkpoint.method, checkpoint.cfg


def checkpoint_file(path: Path) -> Path:
    """``path`` itself, or the model.pt of the run folder ``path``."""
    return path / "model.pt" if path.is_dir() else path


def read_checkpoint(path: Path, expected_method: str | None = None) -> Checkpoint:
    """The method rebuilt from a checkpoint (a model.pt or its run folder), its config and its
    stored calibration."""
    path = checkpoint_file(path)
    if not path.is_file():
        raise AfreqError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise AfreqError(f"{path} is not a readable afreq checkpoint ({err})") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise AfreqError(f"{path} is not an afreq checkpoint (format {FORMAT} expected)")
    name, config = payload["method"], payload["config"]
    preset = config.get("method", {}).get("preset", name)
    if expected_method and expected_method not in (name, preset):
        raise AfreqError(f"checkpoint {path} was trained with method '{name}' (preset "
                         f"'{preset}'), not '{expected_method}'")
    if isinstance(config.get("backbone"), dict):
        # the state_dict already holds the backbone: building it must not fetch weights again
        config["backbone"].update(pretrained=False, weights=None)
    cfg = OmegaConf.create(config)
    method = build_method(cfg)
    try:
        method.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise AfreqError(f"checkpoint {path} does not fit method '{name}' as configured "
                         f"({first}); was it saved by another version or width?") from err
    return Checkpoint(method.eval(), cfg, payload.get("calibration"))
