"""One run: config → datamodule → method → Lightning Trainer → predictions → metrics → run folder.

`run(cfg)` handles ``dataset.category=all`` by running each category in turn; each category gets
its own run folder with the resolved config, environment, per-image scores and, written last and
only on success, ``metrics.json``. ``dataset.setting=unified`` trains one model for all the
categories instead (`anomaly_freq.run.unified`).
"""

from __future__ import annotations

import logging
import os
import signal
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.plugins.precision import MixedPrecision
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from anomaly_freq import registry
from anomaly_freq.config import build_method, config_to_yaml, speed_options
from anomaly_freq.data import AnomalyDataModule, DatasetSource, Sample, cache_dir
from anomaly_freq.data.cache import DecodeCache
from anomaly_freq.data.check import check_files
from anomaly_freq.data.fewshot import SHOT_FILLS, draw_shots
from anomaly_freq.errors import AfreqError, worker_error
from anomaly_freq.files import write_atomic, write_csv, write_json
from anomaly_freq.metrics import Evaluator, EvaluatorCallback
from anomaly_freq.metrics.monitor import BestOnTestMonitor
from anomaly_freq.run import calibration
from anomaly_freq.run.checkpoint import save_checkpoint
from anomaly_freq.run.rundir import config_hash, create_run_dir, environment
from anomaly_freq.run.trackers import check_tracker, log_results, make_loggers
from anomaly_freq.viz import write_report

log = logging.getLogger(__name__)


@dataclass
class CategoryResult:
    category: str
    group: str
    metrics: dict[str, float]
    run_dir: Path | None
    lead: bool = True  # False on DDP ranks other than 0, which write and report nothing


def categories_of(cfg: DictConfig, source: DatasetSource) -> list[str]:
    """The category asked for, or with ``all`` those on disk (the missing ones named)."""
    if cfg.dataset.category != "all":
        source.check_category(cfg.dataset.category)
        return [cfg.dataset.category]
    present = source.present()
    if not present:
        raise source.not_found()
    missing = [c for c in source.categories() if c not in present]
    if missing and launched_rank() == 0:
        log.warning("%s: %d of %d categories are not under %s and are skipped: %s",
                    cfg.dataset.name, len(missing), len(missing) + len(present), source.root(),
                    ", ".join(missing))
    return present


def run(cfg: DictConfig) -> list[CategoryResult]:
    """Train and evaluate ``cfg.method.name`` on each requested category."""
    _quiet_lightning()
    registry.get_method(cfg.method.name)  # fail on an unknown method before touching data
    check_tracker(cfg)
    if cfg.eval.resolution == "original" and cfg.dataset.center_crop:
        raise AfreqError(
            f"eval.resolution=original cannot score dataset.center_crop={cfg.dataset.center_crop}"
            ": the maps would cover the crop and the masks the whole image; set eval.resolution"
            " to a size (e.g. eval.resolution=256)")
    from anomaly_freq.run import unified  # it builds on this module

    setting = unified.setting_of(cfg)
    source = registry.create_dataset(cfg.dataset.name, cfg)
    if setting == unified.UNIFIED:
        results = unified.run_unified(cfg, source)
    else:
        results = [run_category(cfg, source, c) for c in categories_of(cfg, source)]
    return [r for r in results if r.lead]


def _quiet_lightning() -> None:
    """Lightning sets its loggers to INFO when imported; a run reports through its own table."""
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", category=UserWarning, module="pytorch_lightning.*")


def with_category(cfg: DictConfig, category: str | list[str]) -> DictConfig:
    out = OmegaConf.to_container(cfg, resolve=True)
    out["dataset"]["category"] = category
    frozen = OmegaConf.create(out)
    OmegaConf.set_readonly(frozen, True)
    return frozen


def run_category(cfg: DictConfig, source: DatasetSource, category: str) -> CategoryResult:
    """Train and score one category. Under DDP every rank runs this; rank 0 alone creates the
    run folder and writes results, the other ranks receive its path when training starts."""
    cfg = with_category(cfg, category)
    train, test = source.samples(category)
    if cfg.dataset.shots:
        train = draw_shots(train, cfg.dataset.shots, cfg.dataset.shot_seed)
    check_files([*train, *test], cfg.trainer.enable_progress_bar and launched_rank() == 0)
    split = calibration.split_training_images(cfg, train)
    train = split.train
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    method = build_method(cfg)
    method.apply_speed_options(**speed_options(cfg))
    evaluator = make_evaluator(cfg)
    shared, scorer = SharedRunDir(), EvaluatorCallback(evaluator)
    callbacks: list[pl.Callback] = [shared, scorer]
    cache = DecodeCache(cfg.dataset.cache, cache_dir() / "decoded")
    datamodule = AnomalyDataModule.from_config(cfg.dataset, train, test, category, cache,
                                               method.train_transform(), shot_fill(cfg, method),
                                               split.calibration, seed=cfg.seed)
    monitor = None
    if cfg.eval.test_every_n_epochs:
        monitor = BestOnTestMonitor(lambda: make_evaluator(cfg), cfg.eval.test_every_n_epochs,
                                    list(cfg.eval.best_on_test_by), None)
        callbacks.append(monitor)
    trainer = make_trainer(cfg, method, callbacks)  # bad devices/strategy fail before a folder
    lead = trainer.global_rank == 0
    if lead:
        shared.path = open_run_folder(cfg, trainer, category, train)
        if monitor is not None:
            monitor.path = shared.path / "test_curve.csv"
    try:
        guard_interrupt(trainer.fit, method, datamodule=datamodule)
        guard_interrupt(trainer.predict, method, datamodule=datamodule, return_predictions=False)
        scorer.evaluator = calibrated = make_evaluator(cfg)  # the test set's stays intact
        guard_interrupt(trainer.predict, method, dataloaders=datamodule.calibration_dataloader(),
                         return_predictions=False)
        if not lead:
            return CategoryResult(category, source.group(category), {}, shared.path, lead=False)
        run_dir = shared.path
        metrics = evaluator.compute()
        if monitor is not None:
            metrics.update(monitor.best())
        if cfg.output.report_images:
            write_report(run_dir, evaluator, metrics, cfg.output.report_images,
                         cfg.method.get("preset", cfg.method.name))
        record = calibration.calibrate(split, calibrated)
        write_json(run_dir / "calibration.json", record)
        if cfg.output.save_checkpoint:
            save_checkpoint(method, cfg, run_dir / "model.pt", calibration.summary(record))
        write_csv(run_dir / "scores.csv", evaluator.rows)
        run_protocol = {**protocol(cfg, method, len(train), len(test), trainer.world_size),
                        **evaluator.protocol(), "calibration": calibration.summary(record)}
        write_json(run_dir / "protocol.json", run_protocol)
        log_results(trainer.loggers, cfg, run_protocol, metrics,
                    sorted((run_dir / "figures").glob("*.png")))
        (run_dir / "error.txt").unlink(missing_ok=True)
        write_json(run_dir / "metrics.json", {"category": category, **metrics})
    except BaseException as err:
        record_error(shared.path, trainer.global_rank, err)
        raise
    return CategoryResult(category, source.group(category), metrics, run_dir)


def open_run_folder(cfg: DictConfig, trainer: pl.Trainer, name: str, train: list[Sample],
                    tracked: DictConfig | None = None) -> Path:
    """Rank 0's fresh run folder ``<method>/<dataset>/<name>/<run-id>/`` with the config, the
    environment and the training files, and the trackers attached (named after ``tracked``,
    default ``cfg``); under DDP a pending error.txt until the run ends."""
    path = create_run_dir(cfg, name)
    write_atomic(path / "config.yaml", config_to_yaml(cfg))
    write_json(path / "environment.json", {"seed": cfg.seed, **environment()})
    write_atomic(path / "train_files.txt", _file_list(train))
    trainer.loggers = make_loggers(tracked or cfg, path)
    if trainer.world_size > 1:  # Lightning kills the others when one rank dies
        write_atomic(path / "error.txt", PENDING)
    return path


def launched_rank() -> int:
    """This process's global rank as its launcher (Lightning, torchrun, SLURM) set it."""
    return rank_zero_only.rank


def make_evaluator(cfg: DictConfig) -> Evaluator:
    return Evaluator(cfg.eval.resolution, cfg.metrics.pro_variant, cfg.eval.normalisation,
                     mask_rule=cfg.dataset.mask_rule)


def shot_fill(cfg: DictConfig, method: Any) -> str:
    """The corner fill of rotated training copies, with ``code`` resolved by the method."""
    fill = str(cfg.dataset.shot_fill)
    if fill not in (*SHOT_FILLS, "code"):
        raise AfreqError(f"dataset.shot_fill={fill} is unknown; valid: {', '.join(SHOT_FILLS)}, "
                         "code")
    if fill != "code":
        return fill
    resolved = method.code_shot_fill()
    if resolved is None:
        raise AfreqError(f"dataset.shot_fill=code: method {cfg.method.name}'s code has no "
                         "rotated copies; use zero or corner")
    return resolved


class SharedRunDir(pl.Callback):
    """Rank 0's run folder, sent to every rank once the processes are connected."""

    def __init__(self) -> None:
        self.path: Path | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        path = trainer.strategy.broadcast(None if self.path is None else str(self.path), src=0)
        self.path = None if path is None else Path(path)


PENDING = ("no result yet: the run is in progress, or one of its processes was killed before "
           "it could report (its traceback is in the terminal or job log)\n")


def record_error(run_dir: Path | None, rank: int, err: BaseException) -> None:
    """error.txt in the run folder, holding the first failure: when one DDP rank fails, the
    others fail next (their peer is gone) and must not hide the cause."""
    if run_dir is None:
        return
    try:
        os.close(os.open(run_dir / ".error-claimed", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return  # another rank recorded its failure first
    except OSError:
        pass  # a folder this rank cannot reach: write_atomic reports that below
    prefix = f"rank {rank} failed:\n" if rank else ""
    write_atomic(run_dir / "error.txt", prefix + "".join(traceback.format_exception(err)))


def make_trainer(cfg: DictConfig, method: Any, callbacks: list) -> pl.Trainer:
    """The Lightning Trainer of a run; settings it cannot honour fail here, in one line that
    names the keys, before any run folder exists."""
    kwargs = trainer_kwargs(cfg, method, callbacks)
    check_devices(kwargs)
    check_strategy(kwargs)
    if _several(kwargs) and not any(p.requires_grad for p in method.parameters()):
        raise AfreqError(f"method {cfg.method.name} learns no parameters by gradient, so DDP "
                         f"has nothing to synchronise; run it with trainer.devices=1")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*GPU available but not used.*")
            trainer = pl.Trainer(**kwargs)
    except (MisconfigurationException, ValueError, RuntimeError, ImportError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise AfreqError(f"{_trainer_settings(kwargs)} cannot run here: {first}") from err
    check_precision(trainer, kwargs)
    return trainer


def _several(kwargs: dict) -> bool:
    return kwargs.get("devices", 1) not in (1, "1") or int(kwargs.get("num_nodes", 1)) > 1


# environment variables through which a launcher joins the machines of a multi-node run
MULTI_NODE_LAUNCHERS = ("SLURM_NTASKS", "TORCHELASTIC_RUN_ID", "MASTER_ADDR", "NODE_RANK")


def check_strategy(kwargs: dict) -> None:
    """Strategies whose processes the engine can follow: not the spawning kinds (the results
    would stay in the spawned processes), and several nodes only with a launcher."""
    strategy = str(kwargs.get("strategy", "auto"))
    if any(word in strategy for word in ("spawn", "fork", "notebook")):
        raise AfreqError(f"trainer.strategy={strategy} runs training in processes that cannot "
                         "return the predictions; use trainer.strategy=ddp")
    nodes = int(kwargs.get("num_nodes", 1))
    if nodes > 1 and not any(v in os.environ for v in MULTI_NODE_LAUNCHERS):
        raise AfreqError(f"trainer.num_nodes={nodes} needs a launcher that starts the other "
                         "nodes (SLURM, torchrun, or the same command on each node with "
                         "MASTER_ADDR and NODE_RANK set); on one machine use trainer.devices")


def _trainer_settings(kwargs: dict) -> str:
    keys = ("accelerator", "devices", "num_nodes", "strategy", "precision")
    return " ".join(f"trainer.{k}={kwargs[k]}" for k in keys if k in kwargs)


def check_devices(kwargs: dict) -> None:
    """trainer.devices within what this machine has (CUDA GPUs, or CPU cores for CPU DDP)."""
    devices, accelerator = kwargs.get("devices", 1), str(kwargs.get("accelerator", "auto"))
    if not isinstance(devices, int) or devices < 1:
        return  # "auto", -1 and device lists are Lightning's to resolve
    gpus = torch.cuda.device_count()
    on_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and gpus > 0)
    have, what = (gpus, "CUDA GPU(s)") if on_gpu else (os.cpu_count() or 1, "CPU cores")
    if have == 0:
        raise AfreqError(f"trainer.accelerator={accelerator} asks for CUDA GPUs and this machine "
                         "has none; set trainer.accelerator=cpu")
    if devices > have:
        hint = " (or trainer.accelerator=cpu for CPU processes)" if on_gpu else ""
        raise AfreqError(f"trainer.devices={devices} but this machine has {have} {what}; set "
                         f"trainer.devices to at most {have}{hint}")


def check_precision(trainer: pl.Trainer, kwargs: dict) -> None:
    precision = str(kwargs.get("precision", "32-true"))
    device = trainer.strategy.root_device
    if (precision.startswith("bf16") and device.type == "cuda"
            and not torch.cuda.is_bf16_supported()):
        raise AfreqError(f"trainer.precision={precision} needs bfloat16, which "
                         f"{torch.cuda.get_device_name(device)} lacks; use "
                         "trainer.precision=16-mixed or 32-true")


def trainer_kwargs(cfg: DictConfig, method: Any, callbacks: list) -> dict:
    """Trainer arguments from ``cfg.trainer``, overridden by the method's own requirements."""
    kwargs = dict(OmegaConf.to_container(cfg.trainer, resolve=True))
    for key, value in method.trainer_arguments.items():
        if key in kwargs and kwargs[key] != value:
            log.info("method %s sets trainer.%s=%s", cfg.method.name, key, value)
        kwargs[key] = value
    if kwargs.get("enable_progress_bar", True):
        callbacks = [*callbacks, pl.callbacks.RichProgressBar(leave=True)]
    if kwargs.get("precision") == "16-mixed" and _on_cpu(kwargs):
        # Lightning would quietly switch to bf16 on CPU; keep the float16 autocast asked for
        kwargs.pop("precision")
        kwargs["plugins"] = [MixedPrecision("16-mixed", "cpu")]
    strategy = str(kwargs.get("strategy", "auto"))
    if method.ddp_find_unused_parameters and (
            strategy == "ddp" or (strategy == "auto" and _several(kwargs))):
        kwargs["strategy"] = "ddp_find_unused_parameters_true"
    return {
        **kwargs,
        **validation_kwargs(cfg),
        "default_root_dir": str(cfg.output.root),
        "logger": False,  # rank 0 gets its CSV log in the run folder once that exists
        "enable_checkpointing": False,
        "enable_model_summary": False,
        "use_distributed_sampler": False,  # AnomalyDataModule shards by rank itself
        "callbacks": callbacks,
    }


def validation_kwargs(cfg: DictConfig) -> dict:
    """Lightning validates only for the test-set monitor: the whole test set every
    ``eval.test_every_n_epochs`` epochs, with no sanity steps before training."""
    every = int(cfg.eval.test_every_n_epochs)
    if every < 1:
        return {"limit_val_batches": 0}
    return {"check_val_every_n_epoch": every, "num_sanity_val_steps": 0, "limit_val_batches": 1.0}


def _on_cpu(kwargs: dict) -> bool:
    accelerator = str(kwargs.get("accelerator", "auto"))
    return accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available()
                                    and not torch.backends.mps.is_available())


def protocol(cfg: DictConfig, method: Any, n_train: int, n_test: int,
             world_size: int = 1) -> dict[str, Any]:
    """What a reader needs to compare this result with another: the evaluation protocol."""
    return {
        "method": cfg.method.name,
        "learning_type": method.learning_type,
        "dataset": cfg.dataset.name,
        "category": cfg.dataset.category,
        "setting": cfg.dataset.setting,
        "image_size": cfg.dataset.image_size,
        "resize": cfg.dataset.resize,
        "epochs": method.trainer_arguments.get("max_epochs", cfg.trainer.max_epochs),
        "model_selection": "last_epoch",
        "best_on_test": (f"every {cfg.eval.test_every_n_epochs} epochs, the largest "
                         f"{' + '.join(cfg.eval.best_on_test_by)}, recorded as best_on_test_*"
                         if cfg.eval.test_every_n_epochs else "not evaluated"),
        "seed": cfg.seed,
        "shots": cfg.dataset.shots,
        "shot_seed": cfg.dataset.shot_seed if cfg.dataset.shots else None,
        "shot_copies": cfg.dataset.shot_copies,
        "shot_fill": (f"{cfg.dataset.shot_fill} → {shot_fill(cfg, method)}"
                      if cfg.dataset.shot_copies else None),
        "n_train_images": n_train,
        "n_test_images": n_test,
        "processes": world_size,
        "precision": str(cfg.trainer.precision),
        "image_score": "method pred_score (raw)",
        "method_settings": method.protocol(),
        "config_hash": config_hash(cfg),
    }


def guard_interrupt(call, *args, **kwargs) -> None:
    """Lightning turns Ctrl-C into `sys.exit(1)` and ignores SIGINT after; undo both. An
    AfreqError from a loader worker comes back as its own line (see `worker_error`)."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            warnings.filterwarnings("ignore", ".*returned `None`, this fit will run with no.*")
            call(*args, **kwargs)
    except AfreqError as err:
        original = worker_error(err)
        if original is err:
            raise
        raise original from err
    except SystemExit as err:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        raise KeyboardInterrupt("run interrupted during training or prediction") from err


def _file_list(samples: list[Sample]) -> str:
    return "".join(f"{s.path}\n" for s in samples)

