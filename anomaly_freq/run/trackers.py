"""Experiment trackers: Lightning's loggers, chosen with ``logger=csv|tensorboard|mlflow|wandb``.

Every run keeps its CSV log in the run folder (``logs/metrics.csv``); another tracker is added
beside it and receives the training curves as Lightning logs them, then, when the run is done,
the configuration as hyperparameters, the protocol, the final metrics and the report's figures.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from anomaly_freq.errors import AfreqError

log = logging.getLogger(__name__)

#: tracker → (the module it needs, the extra that installs it)
TRACKERS = {"csv": (None, None), "tensorboard": ("tensorboard", "tensorboard"),
            "mlflow": ("mlflow", "mlflow"), "wandb": ("wandb", "wandb")}


def check_tracker(cfg: DictConfig) -> str:
    """The tracker the run asks for, or one line naming the extra to install."""
    kind = str(cfg.logger)
    if kind not in TRACKERS:
        raise AfreqError(f"logger={kind} is unknown; valid: {', '.join(TRACKERS)}")
    module, extra = TRACKERS[kind]
    if module and importlib.util.find_spec(module) is None:
        raise AfreqError(f"logger={kind} needs the {module} package: pip install "
                         f"'anomaly_freq[{extra}]' (or pip install {module})")
    return kind


def make_loggers(cfg: DictConfig, run_dir: Path) -> list[pl.loggers.Logger]:
    """The CSV log in the run folder, plus the chosen tracker named after the run folder."""
    loggers: list[pl.loggers.Logger] = [pl.loggers.CSVLogger(str(run_dir), name="logs",
                                                             version="")]
    kind, t = check_tracker(cfg), cfg.tracking
    name = f"{cfg.method.get('preset', cfg.method.name)}/{cfg.dataset.name}/" \
           f"{cfg.dataset.category}/{run_dir.name}"
    if kind == "tensorboard":
        root = Path(t.dir) if t.dir else Path(cfg.output.root) / "tensorboard"
        loggers.append(pl.loggers.TensorBoardLogger(str(root), name=name, version="",
                                                    default_hp_metric=False))
    elif kind == "mlflow":
        root = Path(cfg.output.root).resolve()
        loggers.append(pl.loggers.MLFlowLogger(
            experiment_name=t.experiment, run_name=name,
            tracking_uri=t.uri or f"sqlite:///{root / 'mlflow.db'}",
            artifact_location=None if t.uri else (root / "mlartifacts").as_uri()))
    elif kind == "wandb":
        loggers.append(pl.loggers.WandbLogger(project=t.experiment, name=name,
                                              save_dir=str(run_dir)))
    return loggers


def log_results(loggers: list[pl.loggers.Logger], cfg: DictConfig, protocol: dict[str, Any],
                metrics: dict[str, float], figures: list[Path]) -> None:
    """Configuration, protocol, final metrics and figures to every tracker but the CSV log
    (the run folder already holds them as files). A tracker that fails (a server gone, a
    locked database) is reported in one line: the run's own results are written anyway."""
    params = _flatten(OmegaConf.to_container(cfg, resolve=True))
    protocol_text = json.dumps(protocol, indent=2, sort_keys=True, default=str)
    final = {f"final/{k}": float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    for logger in loggers:
        if isinstance(logger, pl.loggers.CSVLogger):
            continue
        try:
            _log_to(logger, params, protocol, protocol_text, final, figures)
        except Exception as err:
            log.warning("tracker %s did not receive the results: %s", type(logger).__name__,
                        str(err).strip().splitlines()[0] if str(err).strip() else err)


def _log_to(logger: pl.loggers.Logger, params: dict[str, Any], protocol: dict[str, Any],
            protocol_text: str, final: dict[str, float], figures: list[Path]) -> None:
    if isinstance(logger, pl.loggers.TensorBoardLogger):  # its HPARAMS view pairs them
        logger.log_hyperparams(params, final)
    else:
        logger.log_hyperparams(params)
        logger.log_metrics(final)
    if isinstance(logger, pl.loggers.TensorBoardLogger):
        writer = logger.experiment
        writer.add_text("protocol", f"```\n{protocol_text}\n```")
        for path in figures:
            writer.add_image(f"figures/{path.stem}", _pixels(path), dataformats="HWC")
    elif isinstance(logger, pl.loggers.MLFlowLogger):
        client, run_id = logger.experiment, logger.run_id
        client.log_text(run_id, protocol_text, "protocol.json")
        for path in figures:
            client.log_artifact(run_id, str(path), "figures")
    elif isinstance(logger, pl.loggers.WandbLogger):
        logger.experiment.config.update({"protocol": protocol}, allow_val_change=True)
        logger.log_image("figures", [str(p) for p in figures],
                         caption=[p.stem for p in figures])
        logger.experiment.finish()  # else the next category's run would log into this one
    logger.finalize("success")


def _pixels(path: Path) -> Any:
    import numpy as np

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys with scalar values; lists as their text (trackers take scalars)."""
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    value = tree if tree is None or isinstance(tree, int | float | str | bool) else str(tree)
    return {prefix[:-1]: value}
