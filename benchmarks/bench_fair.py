"""FAIR at the paper's size (c = 128, 256×256, batch 8): training steps/s, inference images/s,
peak memory; on CPU always, on CUDA when available (plus batch-1 latency, AMP, channels-last)."""

from __future__ import annotations

import contextlib
import resource
import statistics
import sys
import time
import warnings
from collections.abc import Callable

import torch

from anomaly_freq.methods.fair import FAIR
from anomaly_freq.methods.fair.network import parameter_count
from benchmarks.common import Section

BATCH, SIZE, WIDTH = 8, 256, 128
PAPER_FPS = 57  # Table 5, FAIR c = 128 on an RTX 3090 Ti (batch size and timed span not stated)


def _max_rss_mib() -> float:
    """Peak resident set size of this process so far (ru_maxrss is KiB on Linux, B on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _timed(fn: Callable[[], object], repeats: int, warmup: int, cuda: bool) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def _model(device: str) -> tuple[FAIR, torch.optim.Optimizer]:
    model = FAIR(base_width=WIDTH, image_size=SIZE).to(device)  # else the paper preset
    return model, torch.optim.Adam(model.network.parameters(), lr=1e-4)


def _autocast(enabled: bool) -> contextlib.AbstractContextManager:
    return torch.autocast("cuda", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def _train_step(model: FAIR, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                autocast: bool = False) -> None:
    """One full step: corruptions, high-pass, forward, MSE + (1 − SSIM), backward, Adam."""
    with warnings.catch_warnings(), _autocast(autocast):
        warnings.simplefilter("ignore")  # self.log outside a Trainer
        loss = model.training_step({"image": images}, 0)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _predict(model: FAIR, images: torch.Tensor, autocast: bool = False) -> None:
    with torch.no_grad(), _autocast(autocast):
        model.predict_step({"image": images})


def _cpu_rows(section: Section) -> None:
    base = _max_rss_mib()
    model, optimizer = _model("cpu")
    images = torch.rand(BATCH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    after_model = _max_rss_mib()
    model.eval()
    infer = _timed(lambda: _predict(model, images), repeats=1, warmup=1, cuda=False)
    after_infer = _max_rss_mib()
    model.train()
    # the forward kernels are warm from inference: 2 steps, the faster one counts
    train = _timed(lambda: _train_step(model, optimizer, images), repeats=2, warmup=0, cuda=False)
    after_train = _max_rss_mib()
    t_train, t_infer = min(train), min(infer)
    section.rows.append([
        f"CPU ({torch.get_num_threads()} threads), fp32", f"{1 / t_train:.4f} ({t_train:.1f} s)",
        f"{BATCH / t_infer:.2f}", f"{after_train:.0f} MiB (+{after_train - after_model:.0f})",
        f"{after_infer:.0f} MiB (+{after_infer - after_model:.0f})", "—"])
    section.notes.append(
        f"CPU memory is the process's peak RSS (ru_maxrss); in brackets the growth over the "
        f"built model ({after_model:.0f} MiB, of which the interpreter and libraries "
        f"{base:.0f} MiB). Inference was measured before training, so its peak is its own. "
        "CPU times (about 1 min per step, so few): training, the faster of 2 steps; "
        "inference, 1 batch after 1 warm-up batch.")


def _cuda_row(section: Section, autocast: bool, channels_last: bool) -> None:
    model, optimizer = _model("cuda")
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    images = torch.rand(BATCH, 3, SIZE, SIZE, device="cuda")
    single = images[:1]
    torch.cuda.reset_peak_memory_stats()
    model.train()
    train = _timed(lambda: _train_step(model, optimizer, images, autocast), repeats=10,
                   warmup=3, cuda=True)
    train_mem = torch.cuda.max_memory_allocated() / 2**20
    model.eval()
    torch.cuda.reset_peak_memory_stats()
    infer = _timed(lambda: _predict(model, images, autocast), repeats=20, warmup=3, cuda=True)
    infer_mem = torch.cuda.max_memory_allocated() / 2**20
    latency = _timed(lambda: _predict(model, single, autocast), repeats=50, warmup=5, cuda=True)
    t_train, t_infer = statistics.median(train), statistics.median(infer)
    label = (f"{torch.cuda.get_device_name(0)}, {'AMP bf16' if autocast else 'fp32'}"
             f"{', channels-last' if channels_last else ''}")
    section.rows.append([label, f"{1 / t_train:.2f}", f"{BATCH / t_infer:.1f}",
                         f"{train_mem:.0f} MiB", f"{infer_mem:.0f} MiB",
                         f"{1 / statistics.median(latency):.1f} (paper: {PAPER_FPS})"])


def _cuda_rows(section: Section) -> None:
    for autocast, channels_last in ((False, False), (True, False), (True, True)):
        _cuda_row(section, autocast, channels_last)
        torch.cuda.empty_cache()
    section.notes.append(
        "GPU memory is torch.cuda.max_memory_allocated. GPU times: median of 10 training steps "
        "and 20 inference batches after warm-up; batch-1 FPS is the median of 50 single-image "
        "predictions (high-pass, network and anomaly map; no data loading).")


def run() -> Section:
    section = Section(
        f"FAIR c = {WIDTH} ({parameter_count(1, WIDTH) / 1e6:.2f} M parameters), "
        f"{SIZE}×{SIZE}, batch {BATCH}",
        ["device", "training steps/s", "inference images/s", "peak memory, training",
         "peak memory, inference", "batch-1 images/s"],
    )
    _cpu_rows(section)
    if torch.cuda.is_available():
        _cuda_rows(section)
    section.notes.append(
        f"A training step is the whole `training_step` (per-sample corruptions on the CPU, grey "
        f"Butterworth high-pass, forward, MSE + (1 − SSIM)), backward and Adam. Inference is "
        f"`predict_step` (high-pass, restoration, MSGMS + Lab map, 21×21 mean filter). The "
        f"paper reports {PAPER_FPS} FPS for c = 128 on an RTX 3090 Ti with an i7-12700 and "
        "does not say what the timing includes or the batch size, so it is a reference point, "
        "not a like-for-like comparison.")
    return section


if __name__ == "__main__":
    print(run().markdown())
