"""OCR-GAN at the paper's size (256×256, ngf = ndf = 64): training steps/s, inference images/s,
peak memory; on CPU a couple of small-batch steps, on a GPU (when present) the paper's batch."""

from __future__ import annotations

import resource
import sys
import time

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from anomaly_freq.methods.ocrgan import OCRGAN
from anomaly_freq.parameters import count_parameters
from benchmarks.common import Section, best_time

SIZE = 256
CPU_BATCH, GPU_BATCH = 4, 32   # the full networks are slow on a CPU: time a small batch there
TIMED_STEPS = 2                # after one warm-up step


class _StepTimer(pl.Callback):
    """Wall time of each training step (G step + D step), synchronised on CUDA."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self._start)


def _model(batch: int, faithful: bool = False) -> OCRGAN:
    return OCRGAN(batch_size=batch, faithful=faithful)


def _images(n: int) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


def _train_steps(model: OCRGAN, batch: int, accelerator: str) -> float:
    """Seconds per training step through the Lightning loop, best of the timed steps."""
    images = _images(batch * (TIMED_STEPS + 1))
    loader = DataLoader([{"image": im} for im in images], batch_size=batch)
    timer = _StepTimer()
    trainer = pl.Trainer(max_epochs=1, accelerator=accelerator, devices=1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[timer])
    trainer.fit(model, train_dataloaders=loader)
    return min(timer.times[1:])


def _inference(model: OCRGAN, batch: int, device: str) -> float:
    """Seconds per batch of ``predict_step`` (G forward, two D forwards, map)."""
    model = model.to(device).eval()
    data = {"image": _images(batch).to(device)}
    with torch.inference_mode():
        return best_time(lambda: model.predict_step(data), repeats=3)


def _peak_rss_gib() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**30


def run() -> Section:
    section = Section(
        "OCR-GAN at 256×256 (ngf = ndf = 64)",
        ["device", "mode", "batch", "train steps/s", "train images/s", "inference images/s",
         "peak memory"],
    )
    model = _model(CPU_BATCH)
    section.notes.append(
        f"Generator {count_parameters(model.generator) / 1e6:.2f} M parameters (learned channel "
        f"selection; 108.83 M without it, as in the official code), discriminator "
        f"{count_parameters(model.discriminator) / 1e6:.2f} M. A training step is one generator "
        "step and one discriminator step (real, reconstruction and CutPaste + Cutout forgeries) "
        "through Lightning's manual optimisation; inference is `predict_step` (G forward and two "
        "D forwards).")
    step = _train_steps(model, CPU_BATCH, "cpu")
    infer = _inference(model, CPU_BATCH, "cpu")
    section.rows.append(["CPU", "default", str(CPU_BATCH), f"{1 / step:.3f}",
                         f"{CPU_BATCH / step:.2f}", f"{CPU_BATCH / infer:.2f}",
                         f"{_peak_rss_gib():.2f} GiB (process RSS)"])
    section.notes.append(
        f"CPU: batch {CPU_BATCH} instead of the paper's 32, {TIMED_STEPS} timed steps after one "
        "warm-up; peak memory is the benchmark process's resident set, so it includes "
        "everything loaded before.")
    del model
    if torch.cuda.is_available():
        for faithful in (False, True):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            model = _model(GPU_BATCH, faithful)
            step = _train_steps(model, GPU_BATCH, "gpu")
            infer = _inference(model, GPU_BATCH, "cuda")
            peak = torch.cuda.max_memory_allocated() / 2**30
            section.rows.append([torch.cuda.get_device_name(0),
                                 "faithful" if faithful else "default", str(GPU_BATCH),
                                 f"{1 / step:.2f}", f"{GPU_BATCH / step:.1f}",
                                 f"{GPU_BATCH / infer:.1f}", f"{peak:.2f} GiB (allocated)"])
            del model
        section.notes.append("GPU: the paper's batch of 32, float32; faithful mode draws new "
                             "channel-selection weights on every forward.")
    return section


if __name__ == "__main__":
    print(run().markdown())
