"""The unified multi-class setting, ``dataset.setting=unified``: one model for several categories.

As UniAD and ADer evaluate it, one model trains on the union of the categories' training images
(shuffled together, each sample keeping its category) and then scores every category's test set,
one category at a time. No category label reaches the model: it is built with
``category="unified"`` (a per-category table, such as DFD's foreground one, takes its
``unified`` entry or its default for the whole run), its statistics pool over all training
images, and its scores do not depend on the label a test batch carries. Few-shot runs draw
``dataset.shots`` images per category.

The run folder is ``<output.root>/<method>/<dataset>/unified/<run-id>/``: config.yaml,
environment.json, train_files.txt, model.pt, calibration.json (one threshold from the pooled
normal images), protocol.json, report.md, ``categories/<c>/`` with each category's scores.csv,
metrics.json and report, and last, only on success, metrics.json with every category's metrics
and their unweighted mean.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml
from omegaconf import DictConfig, ListConfig

from anomaly_freq.config import build_method, speed_options
from anomaly_freq.data import AnomalyDataModule, DatasetSource, Sample, cache_dir
from anomaly_freq.data.cache import DecodeCache
from anomaly_freq.data.check import check_files
from anomaly_freq.data.fewshot import draw_shots
from anomaly_freq.errors import AfreqError
from anomaly_freq.files import write_atomic, write_csv, write_json
from anomaly_freq.metrics import Evaluator, EvaluatorCallback
from anomaly_freq.run import calibration
from anomaly_freq.run.checkpoint import save_checkpoint
from anomaly_freq.run.engine import (
    CategoryResult,
    SharedRunDir,
    guard_interrupt,
    launched_rank,
    make_evaluator,
    make_trainer,
    open_run_folder,
    protocol,
    record_error,
    shot_fill,
    with_category,
)
from anomaly_freq.run.rundir import PER_CATEGORY, UNIFIED
from anomaly_freq.run.trackers import log_results
from anomaly_freq.viz import write_report

SETTINGS = (PER_CATEGORY, UNIFIED)
SUMMARY_METRICS = ("image_auroc", "pixel_auroc", "pixel_aupro")


def setting_of(cfg: DictConfig) -> str:
    setting = str(cfg.dataset.get("setting", PER_CATEGORY))
    if setting not in SETTINGS:
        raise AfreqError(f"dataset.setting={setting} is unknown; valid: {', '.join(SETTINGS)}")
    return setting


def unified_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` with ``dataset.category`` in one spelling: ``all``, or the list of names (a
    name, ``a,b``, ``[a, b]`` and ``["a", "b"]`` all become a list), so that equal
    experiments hash equally."""
    return with_category(cfg, requested(cfg.dataset.category))


def requested(value: Any) -> str | list[str]:
    """What ``dataset.category`` asks for: ``all``, or names in order, each once."""
    if isinstance(value, ListConfig | list):
        names = [str(v) for v in value]
    else:
        text = str(value).strip()
        try:
            parsed = yaml.safe_load(text) if text.startswith("[") else text.split(",")
        except yaml.YAMLError as err:
            raise AfreqError(f"dataset.category={text} is not a list of names; write it as "
                             "[bottle,cable]") from err
        names = [str(v).strip() for v in parsed]
    names = list(dict.fromkeys(n for n in names if n))
    if not names:
        raise AfreqError(f"dataset.category={value} names no category; give names or all")
    return "all" if names == ["all"] else names


def unified_categories(cfg: DictConfig, source: DatasetSource) -> list[str]:
    """The categories a unified run trains on: every one of the dataset with ``all``, which
    must then all be on disk (the model would otherwise be another experiment)."""
    chosen = requested(cfg.dataset.category)
    if chosen != "all":
        for name in chosen:
            source.check_category(name)
        return chosen
    present = source.present()
    missing = [c for c in source.categories() if c not in present]
    if not present:
        raise source.not_found()
    if missing:
        raise AfreqError(f"dataset.setting=unified with dataset.category=all needs every "
                         f"{cfg.dataset.name} category, and {', '.join(missing)} are not under "
                         f"{source.root()}; name the ones to train on, e.g. "
                         f"dataset.category=[{','.join(present[:2])}]")
    return present


def run_unified(cfg: DictConfig, source: DatasetSource) -> list[CategoryResult]:
    """Train one model on the categories' pooled training images; score each category."""
    if cfg.eval.test_every_n_epochs:
        raise AfreqError("eval.test_every_n_epochs chooses a model on one category's test set, "
                         "which a unified run has not; set eval.test_every_n_epochs=0 with "
                         "dataset.setting=unified")
    cfg = unified_config(cfg)
    categories = unified_categories(cfg, source)
    built = with_category(cfg, UNIFIED)  # no category reaches the method
    owner: dict[Path, str] = {}
    train: list[Sample] = []
    tests: dict[str, list[Sample]] = {}
    for category in categories:
        own_train, tests[category] = source.samples(category)
        if cfg.dataset.shots:
            own_train = draw_shots(own_train, cfg.dataset.shots, cfg.dataset.shot_seed)
        train += own_train
        owner.update((s.path, category) for s in (*own_train, *tests[category]))
    test = [s for category in categories for s in tests[category]]
    check_files([*train, *test], cfg.trainer.enable_progress_bar and launched_rank() == 0)
    split = calibration.split_training_images(cfg, train)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    method = build_method(built)
    method.apply_speed_options(**speed_options(cfg))
    shared, scorer = SharedRunDir(), EvaluatorCallback(make_evaluator(cfg))
    cache = DecodeCache(cfg.dataset.cache, cache_dir() / "decoded")
    datamodule = AnomalyDataModule.from_config(cfg.dataset, split.train, test, owner, cache,
                                               method.train_transform(), shot_fill(cfg, method),
                                               split.calibration, seed=cfg.seed)
    trainer = make_trainer(cfg, method, [shared, scorer])
    lead = trainer.global_rank == 0
    if lead:
        shared.path = open_run_folder(cfg, trainer, UNIFIED, split.train, tracked=built)
    try:
        guard_interrupt(trainer.fit, method, datamodule=datamodule)
        evaluators: dict[str, Evaluator] = {}
        start = 0
        for category in categories:
            scorer.evaluator = evaluators[category] = make_evaluator(cfg)
            indices = range(start, start + len(tests[category]))
            start = indices.stop
            guard_interrupt(trainer.predict, method, return_predictions=False,
                             dataloaders=datamodule.test_part_dataloader(indices))
        scorer.evaluator = calibrated = make_evaluator(cfg)
        guard_interrupt(trainer.predict, method, dataloaders=datamodule.calibration_dataloader(),
                         return_predictions=False)
        if not lead:
            return [CategoryResult(c, source.group(c), {}, shared.path, lead=False)
                    for c in categories]
        run_dir = shared.path
        per_category = {c: _write_category(run_dir / "categories" / c, cfg, e)
                        for c, e in evaluators.items()}
        means = mean_metrics(per_category)
        write_atomic(run_dir / "report.md", _report(run_dir, cfg, per_category, means))
        record = calibration.calibrate(split, calibrated)
        write_json(run_dir / "calibration.json", record)
        if cfg.output.save_checkpoint:
            save_checkpoint(method, built, run_dir / "model.pt", calibration.summary(record))
        run_protocol = {
            **protocol(cfg, method, len(split.train), len(test), trainer.world_size),
            **evaluators[categories[0]].protocol(),
            "category": UNIFIED, "categories": categories,
            "n_test_images_per_category": {c: len(tests[c]) for c in categories},
            "method_built_for": f"category={UNIFIED}: per-category tables take their "
                                f"'{UNIFIED}' entry, else their default (method_settings)",
            "calibration": calibration.summary(record)}
        write_json(run_dir / "protocol.json", run_protocol)
        log_results(trainer.loggers, cfg, run_protocol, _flat(per_category, means), [])
        (run_dir / "error.txt").unlink(missing_ok=True)
        write_json(run_dir / "metrics.json", {"setting": UNIFIED, "categories": per_category,
                                              "mean": means})
    except BaseException as err:
        record_error(shared.path, trainer.global_rank, err)
        raise
    return [CategoryResult(c, source.group(c), per_category[c], run_dir / "categories" / c)
            for c in categories]


def _write_category(folder: Path, cfg: DictConfig, evaluator: Evaluator) -> dict[str, float]:
    folder.mkdir(parents=True)
    metrics = evaluator.compute()
    if cfg.output.report_images:
        write_report(folder, evaluator, metrics, cfg.output.report_images,
                     f"{cfg.method.get('preset', cfg.method.name)} ({UNIFIED})")
    write_csv(folder / "scores.csv", evaluator.rows)
    write_json(folder / "metrics.json", {"category": evaluator.rows[0]["category"], **metrics})
    return metrics


def mean_metrics(per_category: dict[str, dict[str, float]]) -> dict[str, float]:
    """The unweighted mean over the categories of every metric that each of them has."""
    names = [m for m in next(iter(per_category.values()))
             if all(m in metrics for metrics in per_category.values())]
    return {m: statistics.fmean(metrics[m] for metrics in per_category.values()) for m in names}


def _flat(per_category: dict[str, dict[str, float]], means: dict[str, float]) -> dict[str, float]:
    """Metrics as one level for the trackers: ``<category>/<metric>`` and ``mean/<metric>``."""
    return {**{f"{c}/{m}": v for c, metrics in per_category.items() for m, v in metrics.items()},
            **{f"mean/{m}": v for m, v in means.items()}}


def _report(run_dir: Path, cfg: DictConfig, per_category: dict[str, dict[str, float]],
            means: dict[str, float]) -> str:
    shown = [m for m in SUMMARY_METRICS if m in means]
    linked = bool(cfg.output.report_images)
    lines = [f"# Unified run: {cfg.method.get('preset', cfg.method.name)} on "
             f"{cfg.dataset.name} ({run_dir.name})", "",
             f"One model trained on the pooled training images of {len(per_category)} "
             "categories (dataset.setting=unified), then each category's test set scored with "
             "it; the mean is unweighted over the categories.", "",
             "| category | " + " | ".join([*shown, *(["report"] if linked else [])]) + " |",
             "|---" * (1 + len(shown) + linked) + "|"]
    for category, metrics in per_category.items():
        link = [f"[report](categories/{category}/report.md)"] if linked else []
        lines.append(f"| {category} | " + " | ".join(
            [*(f"{metrics[m]:.4f}" for m in shown), *link]) + " |")
    lines.append("| **mean** | " + " | ".join(
        [*(f"**{means[m]:.4f}**" for m in shown), *([""] if linked else [])]) + " |")
    return "\n".join(lines) + "\n"
