"""Training synthesis moved into loader workers: what it takes off the training step (FAIR).

Before: the main process corrupted each batch (CutPaste / texture / clean, rotation, high-pass)
inside `training_step`, then ran the network. After: loader workers do the corruption, so the
main process only runs the step. Both are measured here in one run on the same batch.
"""

from __future__ import annotations

import time
import warnings
from functools import partial

import torch
from torch.utils.data import DataLoader

from anomaly_freq.contract import keyed_generator
from anomaly_freq.data.pipeline import EpochSampler, SynthesisDataset
from anomaly_freq.methods.fair import FAIR
from benchmarks.common import Section, best_time

BATCH, SIZE, N_IMAGES = 8, 256, 64
WIDTHS = (2, 16)


def _items(n: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(n, 3, SIZE // 8, SIZE // 8, generator=g),
                                             size=(SIZE, SIZE), mode="bilinear")
    return [{"image": smooth[i], "path": f"train/good/{i:03d}.png", "index": i}
            for i in range(n)]


def _step(model: FAIR, optimizer: torch.optim.Optimizer, batch: dict) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log outside a Trainer
        loss = model.training_step(batch, 0)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def _loader_rate(dataset: SynthesisDataset, workers: int, batches: int = 6) -> float:
    loader = DataLoader(dataset, batch_size=BATCH, sampler=EpochSampler(len(dataset), 0),
                        num_workers=workers, persistent_workers=workers > 0)
    iterator = iter(loader)
    next(iterator)  # worker start-up is not throughput
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches / (time.perf_counter() - start)


def _interleaved(first, second, rounds: int = 5) -> tuple[float, float]:
    """Best of ``rounds`` of each, alternating, so a slow spell of the VM hits both."""
    a, b = [], []
    for _ in range(rounds):
        a.append(best_time(first, repeats=1, warmup=0))
        b.append(best_time(second, repeats=1, warmup=0))
    return min(a), min(b)


def run() -> Section:
    section = Section(f"FAIR training step in the main process, {SIZE}×{SIZE}, batch {BATCH}",
                      ["", "main-process time per step", "before / after"])
    items = _items(N_IMAGES)
    for width in WIDTHS:
        torch.manual_seed(0)
        model = FAIR(base_width=width, image_size=SIZE)
        optimizer = torch.optim.Adam(model.network.parameters(), lr=1e-4)
        transform = model.train_transform()
        clean = {"image": torch.stack([it["image"] for it in items[:BATCH]]),
                 "path": [it["path"] for it in items[:BATCH]]}
        done = torch.utils.data.default_collate(
            [{**transform(it, keyed_generator(0, 0, i), items), "synthesised": True}
             for i, it in enumerate(items[:BATCH])])
        _step(model, optimizer, done)  # warm-up
        before, after = _interleaved(partial(_step, model, optimizer, clean),
                                     partial(_step, model, optimizer, done))
        section.rows += [
            [f"c = {width}, before: synthesis in the step", f"{before * 1e3:.0f} ms", ""],
            [f"c = {width}, after: synthesis in loader workers", f"{after * 1e3:.0f} ms",
             f"{before / after:.2f}"],
        ]
    synth = best_time(lambda: model.with_synthesis(clean), repeats=5)
    section.rows.append(["synthesis of one batch alone", f"{synth * 1e3:.0f} ms", ""])
    dataset = SynthesisDataset(items, transform, seed=0)
    serial, one = _loader_rate(dataset, 0), _loader_rate(dataset, 1)
    section.rows += [
        ["loader, synthesis in the main process (0 workers)", f"{serial:.1f} batches/s", ""],
        ["loader, 1 worker", f"{one:.1f} batches/s", f"{one / serial:.2f}× the batches/s"],
    ]
    section.notes.append(
        "The synthesis costs the same at every width, so its share of a CPU step shrinks as the "
        "network grows: at the paper's c = 128 a CPU step takes about 55 s and the gain is lost "
        "in the noise. On a GPU the step takes milliseconds and the synthesis would be most of "
        "the main process's time; `make bench-gpu` measures that. Every time is the best of "
        "alternating repeats in one run.")
    return section
