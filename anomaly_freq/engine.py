"""One run: config → datamodule → method → Lightning Trainer → predictions → metrics → run folder.

`run(cfg)` handles ``dataset.category=all`` by running each category in turn; each category gets
its own run folder with the resolved config, environment, per-image scores and, written last and
only on success, ``metrics.json``.
"""

from __future__ import annotations

import logging
import signal
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from anomaly_freq import registry
from anomaly_freq.bench.rundir import (
    config_hash,
    create_run_dir,
    environment,
    write_atomic,
    write_csv,
    write_json,
)
from anomaly_freq.checkpoint import save_checkpoint
from anomaly_freq.config import config_to_yaml
from anomaly_freq.data import AnomalyDataModule, DatasetSource, Sample, cache_dir
from anomaly_freq.data.cache import DecodeCache
from anomaly_freq.data.fewshot import draw_shots
from anomaly_freq.errors import AfreqError
from anomaly_freq.metrics import Evaluator, EvaluatorCallback
from anomaly_freq.metrics.monitor import BestOnTestMonitor
from anomaly_freq.viz import write_report

log = logging.getLogger(__name__)


@dataclass
class CategoryResult:
    category: str
    group: str
    metrics: dict[str, float]
    run_dir: Path


def categories_of(cfg: DictConfig, source: DatasetSource) -> list[str]:
    if cfg.dataset.category == "all":
        return source.categories()
    source.check_category(cfg.dataset.category)
    return [cfg.dataset.category]


def run(cfg: DictConfig) -> list[CategoryResult]:
    """Train and evaluate ``cfg.method.name`` on each requested category."""
    _quiet_lightning()
    registry.get_method(cfg.method.name)  # fail on an unknown method before touching data
    if cfg.eval.resolution == "original" and cfg.dataset.center_crop:
        raise AfreqError(
            f"eval.resolution=original cannot score dataset.center_crop={cfg.dataset.center_crop}"
            ": the maps would cover the crop and the masks the whole image; set eval.resolution"
            " to a size (e.g. eval.resolution=256)")
    source = registry.create_dataset(cfg.dataset.name, cfg)
    return [run_category(cfg, source, category) for category in categories_of(cfg, source)]


def _quiet_lightning() -> None:
    """Lightning sets its loggers to INFO when imported; a run reports through its own table."""
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", category=UserWarning, module="pytorch_lightning.*")


def with_category(cfg: DictConfig, category: str) -> DictConfig:
    out = OmegaConf.to_container(cfg, resolve=True)
    out["dataset"]["category"] = category
    frozen = OmegaConf.create(out)
    OmegaConf.set_readonly(frozen, True)
    return frozen


def run_category(cfg: DictConfig, source: DatasetSource, category: str) -> CategoryResult:
    cfg = with_category(cfg, category)
    train, test = source.samples(category)
    if cfg.dataset.shots:
        train = draw_shots(train, cfg.dataset.shots, cfg.dataset.shot_seed)
    run_dir = create_run_dir(cfg, category)
    write_atomic(run_dir / "config.yaml", config_to_yaml(cfg))
    write_json(run_dir / "environment.json", {"seed": cfg.seed, **environment()})
    write_atomic(run_dir / "train_files.txt", _file_list(train))
    try:
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        method = registry.create_method(cfg.method.name, cfg)
        cache = DecodeCache(cfg.dataset.cache, cache_dir() / "decoded")
        datamodule = AnomalyDataModule.from_config(cfg, train, test, category, cache)
        def make_evaluator() -> Evaluator:
            return Evaluator(cfg.eval.resolution, cfg.metrics.pro_variant, cfg.eval.normalisation)

        evaluator = make_evaluator()
        callbacks: list[pl.Callback] = [EvaluatorCallback(evaluator)]
        monitor = None
        if cfg.eval.test_every_n_epochs:
            monitor = BestOnTestMonitor(make_evaluator, datamodule.predict_dataloader,
                                     cfg.eval.test_every_n_epochs, list(cfg.eval.best_on_test_by),
                                     run_dir / "test_curve.csv")
            callbacks.append(monitor)
        trainer = pl.Trainer(**trainer_kwargs(cfg, method, run_dir, callbacks))
        _guard_interrupt(trainer.fit, method, datamodule=datamodule)
        _guard_interrupt(trainer.predict, method, datamodule=datamodule, return_predictions=False)
        metrics = evaluator.compute()
        if monitor is not None:
            metrics.update(monitor.best())
        if cfg.output.report_images:
            write_report(run_dir, evaluator, metrics, cfg.output.report_images)
        if cfg.output.save_checkpoint:
            save_checkpoint(method, cfg, run_dir / "model.pt")
        write_csv(run_dir / "scores.csv", evaluator.rows)
        write_json(run_dir / "protocol.json",
                   {**protocol(cfg, method, len(train), len(test)), **evaluator.protocol()})
        write_json(run_dir / "metrics.json", {"category": category, **metrics})
    except BaseException as err:
        write_atomic(run_dir / "error.txt", "".join(traceback.format_exception(err)))
        raise
    return CategoryResult(category, source.group(category), metrics, run_dir)


def trainer_kwargs(cfg: DictConfig, method: Any, run_dir: Path, callbacks: list) -> dict:
    """Trainer arguments from ``cfg.trainer``, overridden by the method's own requirements."""
    kwargs = dict(OmegaConf.to_container(cfg.trainer, resolve=True))
    for key, value in method.trainer_arguments.items():
        if key in kwargs and kwargs[key] != value:
            log.info("method %s sets trainer.%s=%s", cfg.method.name, key, value)
        kwargs[key] = value
    if kwargs.get("enable_progress_bar", True):
        callbacks = [*callbacks, pl.callbacks.RichProgressBar(leave=True)]
    return {
        **kwargs,
        "default_root_dir": str(run_dir),
        "logger": pl.loggers.CSVLogger(str(run_dir), name="logs", version=""),
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "callbacks": callbacks,
    }


def protocol(cfg: DictConfig, method: Any, n_train: int, n_test: int) -> dict[str, Any]:
    """What a reader needs to compare this result with another: the evaluation protocol."""
    return {
        "method": cfg.method.name,
        "learning_type": method.learning_type,
        "dataset": cfg.dataset.name,
        "category": cfg.dataset.category,
        "image_size": cfg.dataset.image_size,
        "epochs": method.trainer_arguments.get("max_epochs", cfg.trainer.max_epochs),
        "model_selection": "last_epoch",
        "best_on_test": (f"every {cfg.eval.test_every_n_epochs} epochs, the largest "
                         f"{' + '.join(cfg.eval.best_on_test_by)}, recorded as best_on_test_*"
                         if cfg.eval.test_every_n_epochs else "not evaluated"),
        "seed": cfg.seed,
        "shots": cfg.dataset.shots,
        "shot_seed": cfg.dataset.shot_seed if cfg.dataset.shots else None,
        "shot_copies": cfg.dataset.shot_copies,
        "n_train_images": n_train,
        "n_test_images": n_test,
        "image_score": "method pred_score (raw)",
        "config_hash": config_hash(cfg),
    }


def _guard_interrupt(call, *args, **kwargs) -> None:
    """Lightning turns Ctrl-C into `sys.exit(1)` and ignores SIGINT after; undo both."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            warnings.filterwarnings("ignore", ".*returned `None`, this fit will run with no.*")
            call(*args, **kwargs)
    except SystemExit as err:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        raise KeyboardInterrupt("run interrupted during training or prediction") from err


def _file_list(samples: list[Sample]) -> str:
    return "".join(f"{s.path}\n" for s in samples)

