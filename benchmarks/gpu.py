"""GPU benchmark of the three learned methods (issue #17 part 5): `make bench-gpu`.

``python -m benchmarks.gpu [--dry] [--out-json PATH] [--out-md PATH] [--budget SECONDS]``

Measures, on one CUDA GPU:

1. FAIR at the paper's size (c = 128, 256², batch 8 and 32): training steps/s through a real
   Lightning Trainer, inference images/s, peak memory and achieved TFLOP/s (FLOPs counted by
   `torch.utils.flop_counter.FlopCounterMode`), in fp32, bf16 autocast and bf16 + torch.compile
   + channels-last;
2. the same for DFD (paper settings, random backbone weights) and OCR-GAN at their config batch;
3. the training loader's throughput with FAIR's synthesis at 0/4/8/15 workers;
4. the share of a real FAIR fit's step spent waiting for data with 8 workers;
5. projected GPU-hours of every paper preset from the measured step times.

Results go to ``docs/benchmarks_gpu.json`` and to a marked section of ``docs/benchmarks.md``.
Every measurement runs in its own ``try``: a failure is recorded as its error text, and once the
time budget is spent the remaining measurements are recorded as ``skipped: budget``. A watchdog
writes whatever was measured and exits if the run reaches its hard limit.

``--dry`` runs every code path on the CPU at toy sizes (and writes to a temporary folder unless
``--out-json/--out-md`` say otherwise); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import logging
import math
import os
import platform
import re
import shlex
import statistics
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

from anomaly_freq import registry
from anomaly_freq.config import build_method, load_config, speed_options
from anomaly_freq.contract import check_outputs, keyed_generator
from anomaly_freq.data import AnomalyDataModule, cache_dir
from anomaly_freq.data.cache import DecodeCache
from anomaly_freq.files import write_atomic
from benchmarks.common import END, START, machine, splice

OUT_JSON = Path("docs/benchmarks_gpu.json")
OUT_MD = Path("docs/benchmarks.md")
VARIANTS = ("fp32", "bf16", "bf16+compile")
METHODS = ("fair", "dfd", "ocrgan")
#: Dense bf16 tensor-core peak, TFLOP/s (NVIDIA datasheets give twice these, with sparsity:
#: H200 SXM 1979, H200 NVL 1671). Used only when the device name contains a key (the first that
#: matches); other GPUs get no share of peak.
PEAK_BF16_TFLOPS = {"H200 NVL": 835.5, "H200": 989.5}
#: The issue's own FLOP counts for FAIR at c = 128, 256×256.
ISSUE_FAIR_INFER_TFLOP_PER_IMAGE = 0.32
ISSUE_FAIR_TRAIN_TFLOP_PER_STEP8 = 7.67
#: Training images per category (MVTec AD; VisA, 1cls split): 3629 and 8659 in all.
MVTEC_TRAIN = {"bottle": 209, "cable": 224, "capsule": 219, "carpet": 280, "grid": 264,
               "hazelnut": 391, "leather": 245, "metal_nut": 220, "pill": 267, "screw": 320,
               "tile": 230, "toothbrush": 60, "transistor": 213, "wood": 247, "zipper": 240}
VISA_TRAIN = {"candle": 900, "capsules": 542, "cashew": 450, "chewinggum": 453, "fryum": 450,
              "macaroni1": 900, "macaroni2": 900, "pcb1": 904, "pcb2": 901, "pcb3": 905,
              "pcb4": 904, "pipe_fryum": 450}
DFD_SHOTS = (1, 2, 4)
GIB = 2**30

log = logging.getLogger("benchmarks.gpu")


# ------------------------------------------------------------------------------- the plan


@dataclass
class Plan:
    """Sizes and repeat counts: the GPU run, or the dry run's toy version of it."""

    dry: bool
    device: str  # "cuda" or "cpu"
    method_overrides: dict[str, list[str]]
    fair_batches: tuple[int, ...]
    warmup: int
    timed: int
    compile_warmup: int
    infer_warmup: int
    infer_repeats: int
    compile_infer_warmup: int
    loader_workers: tuple[int, ...]
    loader_extra: tuple[tuple[int, str], ...]  # (workers, cache) rows beside the disk-cache ones
    loader_overrides: list[str]
    loader_warmup: int  # batches, beyond one per worker
    loader_batches: int
    loader_batches_serial: int
    wait_workers: int
    wait_warmup: int
    wait_steps: int
    estimates: dict[str, float]
    #: torch.compile backend for `apply_speed_options`; None = its own default (inductor)
    compile_backend: str | None = None


def make_plan(dry: bool, device: str, compile_backend: str | None = None) -> Plan:
    loader_common = ["dataset=synthetic", "dataset.category=weave", "dataset.n_test_good=1",
                     "dataset.n_test_per_defect=1", "dataset.batch_size=8"]
    if dry:
        return Plan(
            dry=True, device=device,
            method_overrides={
                "fair": ["method=fair", "model.base_width=4", "dataset.image_size=32"],
                "dfd": ["method=dfd_fast", "dataset.image_size=32", "method.stats_batches=0",
                        "dataset.batch_size=2"],
                "ocrgan": ["method=ocrgan_fast", "dataset.image_size=32",
                           "dataset.batch_size=4"],
            },
            fair_batches=(2, 4), warmup=1, timed=2, compile_warmup=2, infer_warmup=1,
            infer_repeats=2, compile_infer_warmup=2, loader_workers=(0, 1),
            loader_extra=((1, "none"),),
            loader_overrides=["method=fair", "model.base_width=4", *loader_common,
                              "dataset.image_size=32", "dataset.size=64",
                              "dataset.n_train=12"],
            loader_warmup=1, loader_batches=3, loader_batches_serial=2,
            wait_workers=1, wait_warmup=1, wait_steps=3,
            estimates={"infer": 5, "train": 10, "infer_compile": 30, "train_compile": 60,
                       "loader": 10, "wait": 20},
            compile_backend=compile_backend,
        )
    return Plan(
        dry=False, device=device,
        method_overrides={
            "fair": ["method=fair", "model.base_width=128", "dataset.image_size=256"],
            # no ImageNet weights offline; the fusion statistics (4 inference batches after
            # training) are not part of a training step
            "dfd": ["method=dfd", "backbone.pretrained=false", "method.stats_batches=0"],
            "ocrgan": ["method=ocrgan"],
        },
        fair_batches=(8, 32), warmup=5, timed=20, compile_warmup=10, infer_warmup=3,
        infer_repeats=20, compile_infer_warmup=5, loader_workers=(0, 4, 8, 15),
        loader_extra=((8, "none"),),
        # 240 training images: about an MVTec AD category (30 batches of 8 per epoch)
        loader_overrides=["method=fair", "model.base_width=128", *loader_common,
                          "dataset.image_size=256", "dataset.size=256", "dataset.n_train=240"],
        loader_warmup=3, loader_batches=30, loader_batches_serial=8,
        wait_workers=8, wait_warmup=10, wait_steps=30,
        estimates={"infer": 10, "train": 20, "infer_compile": 45, "train_compile": 90,
                   "loader": 15, "wait": 30},
        compile_backend=compile_backend,
    )


# ------------------------------------------------------------------------------- state


class Clock:
    """The time budget: a part runs only if its estimated duration still fits."""

    def __init__(self, budget: float, estimates: dict[str, float]) -> None:
        self.start, self.budget = time.perf_counter(), budget
        self.estimates, self.observed = dict(estimates), {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def allows(self, kind: str) -> bool:
        estimate = self.observed.get(kind, self.estimates.get(kind, 0.0))
        return self.elapsed() + estimate <= self.budget

    def observe(self, kind: str, seconds: float) -> None:
        self.observed[kind] = max(self.observed.get(kind, 0.0), seconds)


def pending() -> dict[str, Any]:
    return {"status": "pending"}


@dataclass
class State:
    """Everything measured so far; the lock guards it against the watchdog's snapshot."""

    meta: dict[str, Any]
    models: list[dict[str, Any]] = field(default_factory=list)
    flops: dict[str, dict[str, Any]] = field(default_factory=dict)
    loader: list[dict[str, Any]] = field(default_factory=list)
    other: dict[str, Any] = field(default_factory=lambda: {"data_wait": pending()})
    current: tuple[dict[str, Any], str] | None = None  # the part being measured
    finished: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy({"meta": self.meta, "models": self.models,
                                  "flops": list(self.flops.values()), "loader": self.loader,
                                  "data_wait": self.other["data_wait"]})


def error_text(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".strip()
    return "error: " + re.sub(r"\s+", " ", text)[:600]


def run_part(state: State, clock: Clock, holder: dict[str, Any], part: str, kind: str,
             fn: Callable[[], dict[str, Any]]) -> None:
    """``holder[part] = fn()``, or its error, or "skipped: budget" when it no longer fits."""
    if not clock.allows(kind):
        with state.lock:
            holder[part] = {"status": "skipped: budget"}
        print(f"  {part}: skipped (budget)", flush=True)
        return
    with state.lock:
        state.current = (holder, part)
    began = time.perf_counter()
    try:
        result = {"status": "ok", **fn()}
    except Exception as err:  # a measurement's failure is a result, never the end of the run
        traceback.print_exc()
        result = {"status": error_text(err)}
    wall = time.perf_counter() - began
    clock.observe(kind, wall)
    result["wall_s"] = round(wall, 2)
    with state.lock:
        holder[part] = result
        state.current = None
    print(f"  {part}: {result['status']} ({wall:.1f} s)", flush=True)
    release_memory()


def release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------- measuring


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / GIB if device == "cuda" else None


def autocast(device: str, variant: str) -> contextlib.AbstractContextManager:
    if variant == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device, dtype=torch.bfloat16)


def variant_overrides(variant: str) -> list[str]:
    return ["method.compile=true", "method.channels_last=true"] if "compile" in variant else []


def module_totals(counter: FlopCounterMode, root: str) -> dict[str, int]:
    """Counted FLOPs per top-level submodule (the module tracker's names, ``root.`` dropped)."""
    totals: dict[str, int] = {}
    for name, ops in counter.get_flop_counts().items():
        name = str(name).removeprefix(root + ".")
        if name == "Global" or name == root or "." in name:
            continue
        totals[name] = max(totals.get(name, 0), int(sum(ops.values())))
    return totals


class StepTimer(pl.Callback):
    """Wall time of every training batch (synchronised on CUDA) and of the gaps between them;
    optionally the FLOPs of the first batch (forward, backward and optimiser step)."""

    def __init__(self, device: str, count_flops: bool = False) -> None:
        self.device, self.count_flops = device, count_flops
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.counter: FlopCounterMode | None = None
        self.flops: int | None = None
        self.modules: dict[str, int] = {}
        self.root = ""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.count_flops and self.flops is None and self.counter is None and not self.starts:
            self.root = type(pl_module).__name__
            self.counter = FlopCounterMode(display=False)
            self.counter.__enter__()
        sync(self.device)
        self.starts.append(time.perf_counter())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        sync(self.device)
        self.ends.append(time.perf_counter())
        if self.counter is not None:
            self.close(keep=True)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.close(keep=False)

    def close(self, keep: bool) -> None:
        counter, self.counter = self.counter, None
        if counter is None:
            return
        counter.__exit__(None, None, None)
        if keep:
            self.flops = int(counter.get_total_flops())
            self.modules = module_totals(counter, self.root)

    def steps(self, skip: int) -> dict[str, Any]:
        """Median step time and the gap share over the batches after the first ``skip``."""
        n = min(len(self.starts), len(self.ends))
        durations = [self.ends[i] - self.starts[i] for i in range(skip, n)]
        if not durations:
            raise RuntimeError(f"no timed training steps ({n} ran, {skip} were warm-up)")
        gaps = [self.starts[i] - self.ends[i - 1] for i in range(max(skip, 1), n)]
        intervals = [self.ends[i] - self.ends[i - 1] for i in range(max(skip, 1), n)]
        return {"step_s": statistics.median(durations), "durations_s": durations,
                "gaps_s": gaps, "intervals_s": intervals, "steps_run": n}


def trainer_for(plan: Plan, method: Any, callbacks: list, precision: str, root: str,
                **limits: Any) -> pl.Trainer:
    kwargs = {**method.trainer_arguments, "accelerator": "gpu" if plan.device == "cuda" else "cpu",
              "devices": 1, "precision": precision, "logger": False,
              "enable_checkpointing": False, "enable_progress_bar": False,
              "enable_model_summary": False, "use_distributed_sampler": False,
              "num_sanity_val_steps": 0, "default_root_dir": root, "callbacks": callbacks,
              **limits}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pl.Trainer(**kwargs)


def fit(trainer: pl.Trainer, method: Any, **kwargs: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(method, **kwargs)


def method_for(name: str, overrides: list[str], backend: str | None = None) -> Any:
    """The method as `engine.run_category` builds it: config, registry, speed options."""
    cfg = load_config(overrides)
    torch.manual_seed(0)
    method = build_method(cfg)
    method.apply_speed_options(**speed_options(cfg), compile_backend=backend)
    return method


def synthesised_items(method: Any, count: int, side: int) -> tuple[list[dict], torch.Tensor]:
    """``count`` training items run through the method's per-sample synthesis once (so step
    times exclude it), and their clean images as one batch."""
    g = torch.Generator().manual_seed(0)
    clean = [{"image": torch.rand(3, side, side, generator=g), "mask": torch.zeros(1, side, side),
              "label": torch.tensor(0), "path": f"train/good/{i:03d}.png", "category": "bench",
              "defect": "good", "index": i, "mask_path": ""} for i in range(count)]
    transform = method.train_transform()
    if transform is None:
        items = clean
    else:
        items = [{**transform(item, keyed_generator(0, 0, i), clean), "synthesised": True}
                 for i, item in enumerate(clean)]
    return items, torch.stack([item["image"] for item in clean])


def describe(name: str, cfg: Any) -> str:
    """The measured model in a few words."""
    side = int(cfg.dataset.center_crop or cfg.dataset.image_size)
    if name == "fair":
        return f"FAIR c = {cfg.model.base_width}, {side}²"
    if name == "dfd":
        return (f"DFD {cfg.backbone.name} (pretrained={cfg.backbone.pretrained}), "
                f"{cfg.method.feature_dim}-d, {side}²")
    return f"OCR-GAN ngf {cfg.model.ngf}, ndf {cfg.model.ndf}, {side}²"


@dataclass
class ModelJob:
    method: str
    variant: str
    batch: int
    overrides: list[str]
    side: int
    row: dict[str, Any]


class ModelBench:
    """Training (through Lightning) and inference rows of the three methods."""

    def __init__(self, plan: Plan, state: State, clock: Clock, scratch: str) -> None:
        self.plan, self.state, self.clock, self.scratch = plan, state, clock, scratch
        self.items: dict[str, tuple[list[dict], torch.Tensor]] = {}

    def jobs(self) -> list[ModelJob]:
        """Every row, in run order: eager variants of all methods first, then the compiled
        ones (slow to compile, so the budget cuts those first), FAIR batch 8 before 32."""
        jobs = []
        for name in METHODS:
            overrides = self.plan.method_overrides[name]
            cfg = load_config(overrides)
            side = int(cfg.dataset.center_crop or cfg.dataset.image_size)
            batches = self.plan.fair_batches if name == "fair" else (int(cfg.dataset.batch_size),)
            for variant in VARIANTS:
                for batch in batches:
                    row = {"method": name, "variant": variant, "batch": batch, "image_size": side,
                           "model": describe(name, cfg), "preset": str(cfg.method.preset),
                           "overrides": [*overrides, *variant_overrides(variant)],
                           "train": pending(), "infer": pending()}
                    jobs.append(ModelJob(name, variant, batch, overrides, side, row))
        compiled = [j for j in jobs if j.variant == "bf16+compile"]
        first = min(self.plan.fair_batches)
        rank = {"dfd": 1, "ocrgan": 2}
        compiled.sort(key=lambda j: 0 if (j.method, j.batch) == ("fair", first)
                      else rank.get(j.method, 3))
        return [j for j in jobs if j.variant != "bf16+compile"] + compiled

    def run(self, job: ModelJob) -> None:
        print(f"{job.method} {job.variant} batch {job.batch} ({job.side}²)", flush=True)
        compiled = "compile" in job.variant
        run_part(self.state, self.clock, job.row, "infer",
                 "infer_compile" if compiled else "infer", lambda: self.infer(job))
        run_part(self.state, self.clock, job.row, "train",
                 "train_compile" if compiled else "train", lambda: self.train(job))
        if compiled:
            with contextlib.suppress(Exception):
                torch._dynamo.reset()
        release_memory()

    def data(self, job: ModelJob, method: Any) -> tuple[list[dict], torch.Tensor]:
        """Synthesised items of ``job.method``, built once at its largest batch."""
        if job.method not in self.items:
            count = max(self.plan.fair_batches) if job.method == "fair" else job.batch
            self.items[job.method] = synthesised_items(method, max(count, job.batch), job.side)
        items, images = self.items[job.method]
        return items[:job.batch], images[:job.batch]

    def flop_entry(self, job: ModelJob) -> dict[str, Any]:
        key = f"{job.method}/{job.batch}"
        with self.state.lock:
            return self.state.flops.setdefault(key, {
                "method": job.method, "batch": job.batch, "image_size": job.side,
                "model": job.row["model"],
                "train_flop_per_step": None, "infer_flop_per_image": None,
                "train_modules": {}, "infer_modules": {}})

    def infer(self, job: ModelJob) -> dict[str, Any]:
        device = self.plan.device
        method = method_for(job.method, [*job.overrides, *variant_overrides(job.variant)],
                              self.plan.compile_backend)
        _, images = self.data(job, method)
        method = method.to(device).eval()
        batch = {"image": images.to(device)}
        entry = self.flop_entry(job)
        # counted in eager mode (the first eager row of this method and batch that gets here)
        if "compile" not in job.variant and entry["infer_flop_per_image"] is None:
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                check_outputs(method.predict_step(batch), batch, job.method)
            with self.state.lock:
                entry["infer_flop_per_image"] = counter.get_total_flops() / job.batch
                entry["infer_modules"] = module_totals(counter, type(method).__name__)

        def predict() -> None:
            with torch.no_grad(), autocast(device, job.variant):
                method.predict_step(batch)

        compiled = "compile" in job.variant
        warmup = self.plan.compile_infer_warmup if compiled else self.plan.infer_warmup
        reset_peak(device)
        for _ in range(warmup):
            predict()
        times = []
        for _ in range(self.plan.infer_repeats):
            sync(device)
            start = time.perf_counter()
            predict()
            sync(device)
            times.append(time.perf_counter() - start)
        median = statistics.median(times)
        out = {"batch_ms": median * 1e3, "images_per_s": job.batch / median,
               "times_ms": [t * 1e3 for t in times], "warmup": warmup,
               "repeats": self.plan.infer_repeats, "peak_gib": peak_gib(device)}
        return out

    def train(self, job: ModelJob) -> dict[str, Any]:
        device = self.plan.device
        compiled = "compile" in job.variant
        warmup = self.plan.compile_warmup if compiled else self.plan.warmup
        steps = warmup + self.plan.timed
        method = method_for(job.method, [*job.overrides, *variant_overrides(job.variant)],
                              self.plan.compile_backend)
        items, _ = self.data(job, method)
        # one epoch of exactly `steps` full batches (the same items again: no synthesis, no
        # decoding in the step); bounded by epochs, not max_steps, which counts optimiser
        # steps (two per batch under OCR-GAN's manual optimisation)
        loader = DataLoader(items * steps, batch_size=job.batch, shuffle=False, num_workers=0,
                            pin_memory=device == "cuda")
        entry = self.flop_entry(job)
        count = "compile" not in job.variant and entry["train_flop_per_step"] is None
        timer = StepTimer(device, count_flops=count)
        precision = "32-true" if job.variant == "fp32" else "bf16-mixed"
        trainer = trainer_for(self.plan, method, [timer], precision, self.scratch, max_epochs=1,
                              max_steps=-1)
        reset_peak(device)
        try:
            fit(trainer, method, train_dataloaders=loader)
        finally:
            timer.close(keep=False)
        if count and timer.flops is not None:
            with self.state.lock:
                entry["train_flop_per_step"] = timer.flops
                entry["train_modules"] = timer.modules
        result = timer.steps(warmup)
        step = result["step_s"]
        gaps, intervals = result["gaps_s"], result["intervals_s"]
        out = {"step_ms": step * 1e3, "steps_per_s": 1 / step, "images_per_s": job.batch / step,
               "step_ms_all": [d * 1e3 for d in result["durations_s"]],
               "between_steps_ms_median": statistics.median(gaps) * 1e3 if gaps else None,
               "between_steps_share": sum(gaps) / sum(intervals) if intervals else None,
               "warmup_steps": warmup, "timed_steps": len(result["durations_s"]),
               "peak_gib": peak_gib(device), "precision": precision}
        del trainer, method, loader
        return out


# ------------------------------------------------------------------------------- data loading


def loader_overrides(plan: Plan, workers: int, cache: str, root: str | None) -> list[str]:
    extra = [f"dataset.root={root}"] if root else []
    return [*plan.loader_overrides, *extra, f"dataset.num_workers={workers}",
            f"dataset.cache={cache}"]


def build_datamodule(cfg: Any, transform: Any, cache_root: Path) -> AnomalyDataModule:
    """The datamodule exactly as `engine.run_category` builds it, for the configured category."""
    source = registry.create_dataset(cfg.dataset.name, cfg)
    category = str(cfg.dataset.category)
    train, test = source.samples(category)
    cache = DecodeCache(cfg.dataset.cache, cache_root / "decoded")
    return AnomalyDataModule.from_config(cfg.dataset, train, test, category, cache, transform,
                                         seed=cfg.seed)


def batches_forever(loader: DataLoader) -> Iterator[Any]:
    """Batches across epochs, the sampler re-seeded per epoch as Lightning does."""
    epoch = 0
    while True:
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def shut_down(loader: DataLoader) -> None:
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        with contextlib.suppress(Exception):
            iterator._shutdown_workers()
    with contextlib.suppress(Exception):
        loader._iterator = None


class LoaderBench:
    """Train-loader throughput with FAIR's synthesis, and the data-wait share of a real fit."""

    def __init__(self, plan: Plan, state: State, clock: Clock, scratch: str) -> None:
        self.plan, self.state, self.clock, self.scratch = plan, state, clock, scratch
        self.root = str(Path(scratch) / "data") if plan.dry else None
        self.cache_root = Path(scratch) if plan.dry else cache_dir()
        self.transform: Any = None
        self.warmed = False

    def rows(self) -> list[tuple[int, str, dict[str, Any]]]:
        cpus = os.cpu_count() or 1
        combos = [(w, "disk") for w in self.plan.loader_workers] + list(self.plan.loader_extra)
        out = []
        for workers, cache in combos:
            row = {"workers": workers, "cache": cache, "batch": 8, "cpu_count": cpus,
                   "result": pending()}
            out.append((workers, cache, row))
        return out

    def fair_transform(self, cfg: Any) -> Any:
        if self.transform is None:
            torch.manual_seed(0)
            self.transform = build_method(cfg).train_transform()
        return self.transform

    def measure(self, workers: int, cache: str) -> dict[str, Any]:
        cfg = load_config(loader_overrides(self.plan, workers, cache, self.root))
        pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
        dm = build_datamodule(cfg, self.fair_transform(cfg), self.cache_root)
        if cache == "disk" and not self.warmed:  # fill the decode cache once, outside timing
            for i in range(len(dm.train_set)):
                dm.train_set[i]
            self.warmed = True
        if self.plan.device == "cuda":  # what the datamodule sees under a GPU trainer
            with contextlib.suppress(Exception):
                dm.trainer = SimpleNamespace(global_rank=0, world_size=1, strategy=SimpleNamespace(
                    root_device=torch.device("cuda")))
        loader = dm.train_dataloader()
        pinned = bool(loader.pin_memory)
        warmup = workers + self.plan.loader_warmup if workers else 1
        timed = self.plan.loader_batches if workers else self.plan.loader_batches_serial
        stream = batches_forever(loader)
        try:
            for _ in range(warmup):
                next(stream)
            start = time.perf_counter()
            for _ in range(timed):
                next(stream)
            seconds = time.perf_counter() - start
        finally:
            stream.close()
            shut_down(loader)
        side = int(cfg.dataset.image_size)
        return {"batches_per_s": timed / seconds, "images_per_s": timed * 8 / seconds,
                "warmup_batches": warmup, "timed_batches": timed, "pin_memory": pinned,
                "image_size": side, "train_images": len(dm.train_set),
                "batches_per_epoch": math.ceil(len(dm.train_set) / 8)}

    def data_wait(self) -> dict[str, Any]:
        """A real FAIR fit on the datamodule: share of each step interval spent between the
        previous step's end and this step's start (waiting for the loader, plus Lightning's
        own work between steps)."""
        workers = self.plan.wait_workers
        cfg_data = load_config(loader_overrides(self.plan, workers, "disk", self.root))
        pl.seed_everything(int(cfg_data.seed), workers=True, verbose=False)
        method = method_for("fair", loader_overrides(self.plan, workers, "disk", self.root))
        dm = build_datamodule(cfg_data, method.train_transform(), self.cache_root)
        timer = StepTimer(self.plan.device)
        steps = self.plan.wait_warmup + self.plan.wait_steps
        trainer = trainer_for(self.plan, method, [timer], "bf16-mixed", self.scratch,
                              max_steps=steps, max_epochs=-1)
        try:
            fit(trainer, method, datamodule=dm)
        finally:
            with contextlib.suppress(Exception):
                shut_down(trainer.train_dataloader)
        result = timer.steps(self.plan.wait_warmup)
        gaps, intervals = result["gaps_s"], result["intervals_s"]
        if not intervals:
            raise RuntimeError("too few steps to measure the data wait")
        out = {"workers": workers, "cache": "disk", "precision": "bf16-mixed",
               "model": describe("fair", cfg_data),
               "image_size": int(cfg_data.dataset.image_size), "batch": 8,
               "warmup_steps": self.plan.wait_warmup, "timed_steps": len(intervals),
               "share": sum(gaps) / sum(intervals),
               "median_wait_ms": statistics.median(gaps) * 1e3,
               "median_interval_ms": statistics.median(intervals) * 1e3,
               "median_step_ms": result["step_s"] * 1e3,
               "batches_per_epoch": math.ceil(len(dm.train_set) / 8)}
        del trainer, method, dm
        return out


# ------------------------------------------------------------------------------- derived figures


def peak_tflops(gpu: str) -> float | None:
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in gpu), None)


def add_rates(data: dict[str, Any]) -> None:
    """TFLOP/s and share of peak of every measured row, from the counted FLOPs."""
    peak = data["meta"].get("peak_bf16_tflops")
    flops = {(f["method"], f["batch"]): f for f in data["flops"]}
    for row in data["models"]:
        entry = flops.get((row["method"], row["batch"]), {})
        train, infer = row["train"], row["infer"]
        per_step = entry.get("train_flop_per_step")
        if train.get("status") == "ok" and per_step:
            train["tflop_per_step"] = per_step / 1e12
            train["tflops"] = per_step / (train["step_ms"] / 1e3) / 1e12
            train["share_of_peak"] = train["tflops"] / peak if peak else None
        per_image = entry.get("infer_flop_per_image")
        if infer.get("status") == "ok" and per_image:
            infer["tflop_per_image"] = per_image / 1e12
            infer["tflops"] = per_image * infer["images_per_s"] / 1e12
            infer["share_of_peak"] = infer["tflops"] / peak if peak else None


def fastest_step(data: dict[str, Any], method: str, batch: int) -> tuple[float, str, str] | None:
    """(seconds, variant, basis) of the fastest measured bf16 training step at ``batch``; else
    the nearest measured batch scaled linearly; else fp32."""
    rows = [r for r in data["models"] if r["method"] == method
            and r["train"].get("status") == "ok"]
    for variants in (("bf16", "bf16+compile"), ("fp32",)):
        pool = [r for r in rows if r["variant"] in variants]
        exact = [r for r in pool if r["batch"] == batch]
        if exact:
            best = min(exact, key=lambda r: r["train"]["step_ms"])
            return best["train"]["step_ms"] / 1e3, best["variant"], "measured at this batch"
        if pool:
            near = min(pool, key=lambda r: (abs(r["batch"] - batch), r["train"]["step_ms"]))
            scale = batch / near["batch"]
            return (near["train"]["step_ms"] / 1e3 * scale, near["variant"],
                    f"scaled linearly from batch {near['batch']}")
    return None


def preset_steps(counts: list[int], batch: int, epochs: int, drop_last: bool) -> int:
    """Training steps over all categories: batches per epoch per category × epochs."""
    total = 0
    for n in counts:
        if drop_last and n >= batch:
            per_epoch = n // batch  # OCR-GAN skips the incomplete last batch
        else:
            per_epoch = math.ceil(n / batch)
        total += per_epoch * epochs
    return total


def presets() -> list[dict[str, Any]]:
    """The paper presets' schedules, epochs and batches read from the configs."""
    out = []
    for name, method, dataset, counts in (
            ("FAIR on MVTec AD", "fair", "mvtec_ad", list(MVTEC_TRAIN.values())),
            ("FAIR on VisA", "fair", "visa", list(VISA_TRAIN.values())),
            ("OCR-GAN on MVTec AD", "ocrgan", "mvtec_ad", list(MVTEC_TRAIN.values()))):
        cfg = load_config([f"method={method}", f"dataset={dataset}"])
        drop = bool(cfg.method.get("drop_last", False))
        out.append({"preset": name, "method": method, "dataset": dataset,
                    "categories": len(counts), "train_images": sum(counts),
                    "batch": int(cfg.dataset.batch_size), "epochs": int(cfg.trainer.max_epochs),
                    "drop_last": drop, "counts": counts})
    for k in DFD_SHOTS:
        cfg = load_config(["method=dfd", "dataset=mvtec_ad", f"dataset.shots={k}"])
        per_category = int(cfg.dataset.shots) * int(cfg.dataset.shot_copies)
        counts = [per_category] * len(MVTEC_TRAIN)
        out.append({"preset": f"DFD on MVTec AD, {k}-shot", "method": "dfd",
                    "dataset": "mvtec_ad", "categories": len(counts),
                    "train_images": sum(counts), "batch": int(cfg.dataset.batch_size),
                    "epochs": int(cfg.trainer.max_epochs), "drop_last": False,
                    "counts": counts, "shots": k, "shot_copies": int(cfg.dataset.shot_copies)})
    return out


def projections(data: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in presets():
        counts = p.pop("counts")
        steps = preset_steps(counts, p["batch"], p["epochs"], p["drop_last"])
        found = fastest_step(data, p["method"], p["batch"])
        row = {**p, "steps": steps, "step_ms": None, "variant": None, "gpu_hours": None,
               "basis": "no successful training row of this method"}
        if found is not None:
            seconds, variant, basis = found
            row.update(step_ms=seconds * 1e3, variant=variant, basis=basis,
                       gpu_hours=steps * seconds / 3600)
        out.append(row)
    return out


def finalise(data: dict[str, Any], interrupted: bool = False) -> dict[str, Any]:
    """Mark what did not run, add the derived figures and the notes."""
    for row in data["models"]:
        for part in ("train", "infer"):
            if row[part].get("status") == "pending":
                row[part] = {"status": "skipped: budget"}
    for row in data["loader"]:
        if row["result"].get("status") == "pending":
            row["result"] = {"status": "skipped: budget"}
    if data["data_wait"].get("status") == "pending":
        data["data_wait"] = {"status": "skipped: budget"}
    add_rates(data)
    data["projections"] = projections(data)
    data["meta"]["interrupted"] = interrupted
    data["notes"] = notes(data)
    return data


# ------------------------------------------------------------------------------- the report


def notes(data: dict[str, Any]) -> dict[str, str]:
    flops = {(f["method"], f["batch"]): f for f in data["flops"]}
    fair = [f for f in data["flops"] if f["method"] == "fair" and f["train_flop_per_step"]]
    fair = sorted(fair, key=lambda f: abs(f["batch"] - 8))[:1]
    infer = next((f["infer_flop_per_image"] for f in data["flops"]
                  if f["method"] == "fair" and f["infer_flop_per_image"]), None)
    train = fair[0]["train_flop_per_step"] * 8 / fair[0]["batch"] if fair else None
    model = next((f["model"] for f in data["flops"] if f["method"] == "fair"), "FAIR")
    counted = (f"{model}: counted {fmt(infer and infer / 1e12, '.3g')} TFLOP per inference "
               f"image (issue: {ISSUE_FAIR_INFER_TFLOP_PER_IMAGE}) and "
               f"{fmt(train and train / 1e12, '.3g')} TFLOP per training step of 8 "
               f"(issue: {ISSUE_FAIR_TRAIN_TFLOP_PER_STEP8})")
    if fair and fair[0]["batch"] != 8:
        counted += f" (scaled from the step of {fair[0]['batch']})"
    if data["meta"]["dry"]:
        counted += " — dry run: toy sizes, so not comparable with the issue's figures"
    plan, tf32 = data["meta"]["plan"], data["meta"].get("tf32", {})
    dfd = next((f for (m, _), f in flops.items() if m == "dfd"), {})
    share = _module_share(dfd.get("train_modules", {}), dfd.get("train_flop_per_step"),
                          "FeatureExtractor")
    ocr = next((f for (m, _), f in flops.items() if m == "ocrgan"), {})
    d_share = _module_share(ocr.get("train_modules", {}), ocr.get("train_flop_per_step"),
                            "Discriminator")
    return {
        "fair_flops": counted + ".",
        "flop_counting": (
            "FLOPs are counted once per (method, batch) in eager mode (fp32 unless that row "
            "did not run) by "
            "torch.utils.flop_counter.FlopCounterMode (2 per multiply-add, convolutions, "
            "matrix products and attention only; FFTs, element-wise ops, pooling and "
            "interpolation are not counted): a training step's FLOPs are those of the first "
            "Lightning batch (forward, backward, optimiser), inference's one predict_step. "
            "TFLOP/s = counted FLOPs / measured median time, also for bf16 and compiled rows."),
        "peak": (
            f"Share of peak is against {data['meta'].get('peak_bf16_tflops')} TFLOP/s, the "
            "device's dense bf16 tensor-core peak, for every variant; fp32 rows ran with "
            f"torch.backends.cuda.matmul.allow_tf32={tf32.get('matmul')} and "
            f"torch.backends.cudnn.allow_tf32={tf32.get('cudnn')} (torch's defaults, as afreq "
            "runs), cudnn.benchmark="
            f"{data['meta'].get('cudnn_benchmark')}." if data["meta"].get("peak_bf16_tflops")
            else "No share of peak: the device is not one with a recorded peak (H200 only)."),
        "timing": (
            "Training: a real pytorch_lightning.Trainer (logger, checkpointing, progress bar "
            "and model summary off) over an in-memory loader of items already run through the "
            "method's train_transform, so a step excludes data loading and synthesis; step "
            "time = median over the timed batches of on_train_batch_start → "
            f"on_train_batch_end (synchronised), {plan['timed']} timed batches after "
            f"{plan['warmup']} warm-up ({plan['compile_warmup']} when compiled). "
            "Inference: predict_step under no_grad (and bf16 autocast), median of "
            f"{plan['infer_repeats']} batches after {plan['infer_warmup']} warm-up (more when "
            "compiled); images/s = batch / median. Peak memory is "
            "torch.cuda.max_memory_allocated, reset before each part. bf16+compile = "
            "method.compile=true method.channels_last=true through apply_speed_options(), "
            f"torch.compile backend {data['meta'].get('compile_backend')}."),
        "dfd_change": (
            "DFD, the change that would most raise its throughput (from the code's structure): "
            "every training step runs the frozen backbone and the PatchCore aggregation "
            "(FeatureExtractor, under no_grad in eval mode) on 4·B images — the clean and the "
            "augmented copies, each as low and high band — yet with the default "
            "fixed_anomalies=true both copies are fixed for the whole run (rotated copies drawn "
            "once, pseudo-anomalies keyed by the copy), so the FeatureExtractor's output (the "
            "trained adaptor's input) could be computed once per copy and cached — at 256² "
            "1024 tokens × 1536 per band, 2 bands × 2 copies, about 12.6 MB per training "
            "copy in bf16, 4 GB for 4-shot's 320 copies — leaving only the adaptor and the "
            "two discriminators in the step"
            + (f"; the FeatureExtractor holds {share:.0%} of the counted training FLOPs, and "
               "its neighbourhood stacking and pooling are memory traffic the count omits"
               if share is not None else "") + "."),
        "ocrgan_change": (
            "OCR-GAN, the change that would most raise its throughput (from the code's "
            "structure): each step runs the generator once but the discriminator five times — "
            "D(x̂) and a no-grad D(x) in the generator step, then D(x), D(x̂) and D(forged) as "
            "three separate batch-B forwards and backwards in the discriminator step — while "
            "the map and score are cheap; running the discriminator step's three passes as "
            "one 3·B batch (BatchNorm statistics kept per part) and reusing the generator "
            "step's D(x) features (the generator step leaves D's weights unchanged) would "
            "cut the discriminator's launches and passes"
            + (f"; the discriminator holds {d_share:.0%} of the counted training FLOPs"
               if d_share is not None else "") + "."),
        "projection": (
            "Projected GPU-hours = training steps × the fastest measured bf16 step time "
            "(bf16 or bf16+compile) at the preset's batch; steps per category = "
            "ceil(n_train / batch) × epochs (floor for OCR-GAN, which drops incomplete "
            "batches), summed over categories from the per-category training counts (MVTec "
            "AD 3629 and VisA 8659 images in all; DFD k shots × shot_copies copies per "
            "category). Excludes data loading, evaluation, checkpoints and compile time; "
            "multiply by 1 / (1 − data-wait share) for a data-bound FAIR run."),
        "one_run": "All figures are from one run on one device; no repeat across runs.",
    }


def _module_share(modules: dict[str, int], total: int | None, name: str) -> float | None:
    if not total or name not in modules:
        return None
    return modules[name] / total


def fmt(value: Any, spec: str = ".1f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return format(value, spec)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows), ""]


def short(status: str) -> str:
    return "" if status == "ok" else status.replace("|", "/")[:160]


def markdown(data: dict[str, Any]) -> str:
    meta = data["meta"]
    lines = [START, "## GPU benchmark (issue #17 part 5)", ""]
    if meta["dry"]:
        lines += ["**Dry run** at toy sizes on " + meta["device"] + ": it checks the code "
                  "paths; the figures mean nothing.", ""]
    lines += [f"Device: {meta['gpu']}. Host: {meta['machine']}, {meta['cpu_count']} CPU "
              f"cores. Date: {meta['date']}. "
              f"Command: `{meta['command']}`. Figures are from one run"
              + (" (the run hit its hard time limit; see the statuses)" if meta["interrupted"]
                 else "") + f"; {meta['elapsed_s']:.0f} s of a {meta['budget_s']:.0f} s budget.",
              ""]
    lines += ["### Training and inference", ""]
    rows = []
    for r in sorted(data["models"], key=lambda r: (METHODS.index(r["method"]),
                                                   VARIANTS.index(r["variant"]), r["batch"])):
        t, i = r["train"], r["infer"]
        status = "; ".join(f"{p}: {short(x['status'])}" for p, x in (("train", t), ("infer", i))
                           if x.get("status") != "ok")
        rows.append([r["method"], r["variant"], str(r["batch"]), f"{r['image_size']}²",
                     fmt(t.get("step_ms")), fmt(t.get("steps_per_s"), ".2f"),
                     fmt(t.get("tflops"), ".3g"), fmt(t.get("share_of_peak"), ".1%"),
                     fmt(t.get("peak_gib"), ".1f"), fmt(i.get("images_per_s")),
                     fmt(i.get("tflops"), ".3g"), fmt(i.get("share_of_peak"), ".1%"),
                     fmt(i.get("peak_gib"), ".1f"), status])
    lines += table(["method", "variant", "batch", "size", "train step ms", "train steps/s",
                    "train TFLOP/s", "train share of peak", "train peak GiB",
                    "inference images/s", "inference TFLOP/s", "inference share of peak",
                    "inference peak GiB", "status"], rows)
    lines += ["### Counted FLOPs", ""]
    rows = []
    for f in sorted(data["flops"], key=lambda f: (METHODS.index(f["method"]), f["batch"])):
        ref = ("" if f["method"] != "fair" or meta["dry"] else
               f"issue: {ISSUE_FAIR_INFER_TFLOP_PER_IMAGE} per image, "
               f"{ISSUE_FAIR_TRAIN_TFLOP_PER_STEP8} per step of 8")
        train, infer = f["train_flop_per_step"], f["infer_flop_per_image"]
        modules = ""
        if train:
            parts = sorted(f["train_modules"].items(), key=lambda kv: -kv[1])
            rest = train - sum(v for _, v in parts)
            outside = [f"outside modules {rest / train:.0%}"] if rest >= 0 else []
            modules = ", ".join([*(f"{k} {v / train:.0%}" for k, v in parts), *outside])
        rows.append([f["model"], str(f["batch"]), fmt(train and train / 1e12, ".3g"),
                     fmt(infer and infer / 1e12, ".3g"), modules, ref])
    lines += table(["model", "batch", "TFLOP per training step", "TFLOP per inference image",
                    "training FLOPs by module", "reference"], rows)
    lines += [data["notes"]["fair_flops"] + " Shares by module follow torch's module tracker "
              "(top-level submodules by class name); backward FLOPs can be credited to more than "
              "one module, so the shares may overlap.", ""]
    lines += ["### Training loader (FAIR synthesis, batch 8)", ""]
    rows = []
    for row in data["loader"]:
        x = row["result"]
        rows.append([str(row["workers"]), row["cache"], fmt(x.get("batches_per_s"), ".2f"),
                     fmt(x.get("images_per_s")), str(x.get("pin_memory", "—")),
                     str(x.get("timed_batches", "—")), short(x["status"])])
    lines += table(["workers", "decode cache", "batches/s", "images/s", "pinned",
                    "timed batches", "status"], rows)
    cpus = data["loader"][0]["cpu_count"] if data["loader"] else "?"
    first = next((r["result"] for r in data["loader"] if r["result"].get("status") == "ok"), {})
    lines += [f"The real AnomalyDataModule on the synthetic `weave` category "
              f"({first.get('train_images', '?')} training images at "
              f"{first.get('image_size', '?')}², {first.get('batches_per_epoch', '?')} batches "
              f"per epoch), EpochSampler order across epochs; the timed batches follow one "
              f"warm-up batch per worker plus a few. {cpus} CPU cores.", ""]
    lines += ["### Waiting for data in a real fit", ""]
    w = data["data_wait"]
    if w.get("status") == "ok":
        ref = next((r["train"] for r in sorted(data["models"], key=lambda r: r["batch"] != 8)
                    if r["method"] == "fair" and r["variant"] == "bf16"
                    and r["train"].get("status") == "ok"), {})
        lines += [f"{w['model']}, bf16, batch 8, {w['workers']} workers "
                  f"(disk cache): over {w['timed_steps']} steps after {w['warmup_steps']}, "
                  f"**{w['share']:.1%}** of each step interval was spent between one step's "
                  f"end and the next one's start (median wait {w['median_wait_ms']:.1f} ms, "
                  f"median interval {w['median_interval_ms']:.1f} ms, median step "
                  f"{w['median_step_ms']:.1f} ms; {w['batches_per_epoch']} batches per "
                  "epoch, so epoch ends fall inside the window). The same gap with the "
                  "in-memory loader (Lightning's own between-step work): "
                  f"{fmt(ref.get('between_steps_share'), '.1%')}.", ""]
    else:
        lines += [f"Not measured: {w.get('status')}.", ""]
    lines += ["### Projected training time of the paper presets", ""]
    rows = []
    for p in data["projections"]:
        rows.append([p["preset"], str(p["categories"]), str(p["train_images"]), str(p["batch"]),
                     str(p["epochs"]), f"{p['steps']:,}", fmt(p["step_ms"]),
                     p["variant"] or "—", fmt(p["gpu_hours"], ".2f"), p["basis"]])
    lines += table(["preset", "categories", "training images", "batch", "epochs", "steps",
                    "step ms", "variant", "GPU-hours", "step time"], rows)
    lines += ["### Notes", ""]
    for key in ("timing", "flop_counting", "peak", "projection", "dfd_change", "ocrgan_change",
                "one_run"):
        lines += [f"- {data['notes'][key]}"]
    lines += ["", END]
    return "\n".join(lines) + "\n"


def write_outputs(data: dict[str, Any], out_json: Path, out_md: Path) -> None:
    write_atomic(out_json, json.dumps(data, indent=2, default=str) + "\n")
    existing = out_md.read_text(encoding="utf-8") if out_md.exists() else ""
    write_atomic(out_md, splice(existing, markdown(data)))


# ------------------------------------------------------------------------------- main


def describe_device(device: str) -> tuple[str, float | None]:
    if device == "cuda":
        name = torch.cuda.get_device_name(0)
        return name, peak_tflops(name)
    return f"CPU ({platform.processor() or platform.machine()})", None


def quiet() -> None:
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pytorch_lightning.*")
    warnings.filterwarnings("ignore", module="lightning_fabric.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--dry", action="store_true",
                        help="toy sizes on the CPU, every code path; writes to a temporary "
                             "folder unless --out-json/--out-md are given")
    parser.add_argument("--out-json", type=Path, default=None, help=f"default {OUT_JSON}")
    parser.add_argument("--out-md", type=Path, default=None,
                        help=f"default {OUT_MD} (the section between the gpu-benchmark markers)")
    parser.add_argument("--budget", type=float, default=420.0,
                        help="seconds; parts that no longer fit are recorded as skipped")
    parser.add_argument("--hard-limit", type=float, default=None,
                        help="seconds after which the watchdog writes what was measured and "
                             "exits (default: budget + 30)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: cpu for --dry, cuda otherwise (--dry --device cuda is a "
                             "quick pre-flight on a GPU)")
    parser.add_argument("--compile-backend", default=None,
                        help="torch.compile backend of the bf16+compile rows (default: "
                             "inductor, torch.compile's own; aot_eager for --dry on the CPU, "
                             "which traces and builds the joint graph like inductor but skips "
                             "its slow C++ code generation)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's own; 1 for --dry on the CPU, "
                             "steady on a loaded machine)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    device = args.device if args.device != "auto" else ("cpu" if args.dry else "cuda")
    if device == "cuda" and not torch.cuda.is_available():
        print("benchmarks.gpu: no CUDA GPU here; run with --dry for the CPU check",
              file=sys.stderr)
        return 2
    quiet()
    on_cpu_dry = args.dry and device == "cpu"
    backend = args.compile_backend or ("aot_eager" if on_cpu_dry else None)
    threads = args.threads or (1 if on_cpu_dry else None)
    if threads:
        torch.set_num_threads(threads)
    scratch_dir = tempfile.TemporaryDirectory(prefix="afreq-bench-gpu-")
    scratch = scratch_dir.name
    if args.dry and (args.out_json is None or args.out_md is None):
        out_dir = Path(tempfile.mkdtemp(prefix="afreq-bench-gpu-dry-"))
    else:
        out_dir = None
    out_json = args.out_json or (out_dir / "benchmarks_gpu.json" if out_dir else OUT_JSON)
    out_md = args.out_md or (out_dir / "benchmarks.md" if out_dir else OUT_MD)
    plan = make_plan(args.dry, device, backend)
    clock = Clock(args.budget, plan.estimates)
    hard_limit = args.hard_limit if args.hard_limit is not None else args.budget + 30
    gpu, peak = describe_device(device)
    command = shlex.join(["python", "-m", "benchmarks.gpu",
                          *(sys.argv[1:] if argv is None else argv)])
    state = State(meta={
        "gpu": gpu, "device": device, "dry": args.dry, "torch": torch.__version__,
        "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        "python": platform.python_version(), "machine": machine(),
        "cpu_count": os.cpu_count(), "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "budget_s": args.budget, "hard_limit_s": hard_limit, "peak_bf16_tflops": peak,
        "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32,
                 "cudnn": torch.backends.cudnn.allow_tf32},
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "compile_backend": backend or "inductor", "torch_threads": torch.get_num_threads(),
        "plan": {"warmup": plan.warmup, "timed": plan.timed, "compile_warmup":
                 plan.compile_warmup, "infer_warmup": plan.infer_warmup,
                 "infer_repeats": plan.infer_repeats}})

    def conclude(interrupted: bool) -> bool:
        """Write the outputs once (the main thread or the watchdog, whichever comes first)."""
        with state.lock:
            if state.finished:
                return False
            state.finished = True
            if interrupted and state.current is not None:
                holder, part = state.current
                holder[part] = {"status": "interrupted: hard time limit"}
        data = state.snapshot()
        data["meta"]["elapsed_s"] = clock.elapsed()
        data = finalise(data, interrupted)
        write_outputs(data, out_json, out_md)
        print(markdown(data), flush=True)
        print(f"wrote {out_json} and {out_md}", flush=True)
        return True

    def deadline() -> None:
        print("benchmarks.gpu: hard time limit reached; writing what was measured",
              file=sys.stderr, flush=True)
        try:
            conclude(interrupted=True)
        finally:
            os._exit(0)

    watchdog = threading.Timer(max(1.0, hard_limit - clock.elapsed()), deadline)
    watchdog.daemon = True
    watchdog.start()

    models = ModelBench(plan, state, clock, scratch)
    jobs = models.jobs()
    loaders = LoaderBench(plan, state, clock, scratch)
    loader_rows = loaders.rows()
    with state.lock:
        state.models = [j.row for j in jobs]
        state.loader = [row for _, _, row in loader_rows]
    eager = [j for j in jobs if j.variant != "bf16+compile"]
    compiled = [j for j in jobs if j.variant == "bf16+compile"]
    for job in eager:
        models.run(job)
    print("train loader", flush=True)
    for workers, cache, row in loader_rows:
        run_part(state, clock, row, "result", "loader",
                 lambda w=workers, c=cache: loaders.measure(w, c))
    print("data wait", flush=True)
    run_part(state, clock, state.other, "data_wait", "wait", loaders.data_wait)
    for job in compiled:
        models.run(job)
    watchdog.cancel()
    if not conclude(interrupted=False):
        watchdog.join()  # the watchdog is writing; it ends the process
    scratch_dir.cleanup()
    print(f"benchmarks.gpu: {clock.elapsed():.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
