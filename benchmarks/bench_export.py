"""Exported models (`afreq export`) against eager `predict_step` on the CPU, every preset.

Each preset's model is built at its own size (random weights: speed does not depend on them),
saved as a checkpoint and exported to TorchScript and ONNX through `export_checkpoint`, the path
`afreq export` takes; then the three score the same random batch, at batch 1 and 8, in
alternating rounds, so that a slow spell of the machine hits all three.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from anomaly_freq.config import build_method, load_config
from anomaly_freq.run.checkpoint import read_checkpoint, save_checkpoint
from anomaly_freq.run.export import export_checkpoint
from anomaly_freq.run.exported import onnx_runner, torchscript_runner
from benchmarks.common import Section

PRESETS = ("freqstat", "fair_fast", "dfd_fast", "ocrgan_fast", "fair", "dfd", "ocrgan")
BATCHES = (1, 8)
ROUND_BUDGET = 4.0  # seconds per runtime: fast models get up to 10 rounds, the largest 2


def _checkpoint(preset: str, folder: Path) -> tuple[Path, int]:
    """A saved, export-ready model of ``preset`` and its image side."""
    cfg = load_config([f"method={preset}", "backbone.pretrained=false"] if "dfd" in preset
                      else [f"method={preset}"])
    method = build_method(cfg)
    if preset == "freqstat":
        method.fitted.fill_(True)  # statistics of zeros and ones: the cost is the same
    path = folder / preset / "model.pt"
    path.parent.mkdir(parents=True)
    save_checkpoint(method, cfg, path)
    return path, int(cfg.dataset.center_crop or cfg.dataset.image_size)


def _once(fn, images) -> float:
    start = time.perf_counter()
    fn(images)
    return time.perf_counter() - start


def _best_alternating(runners: dict, images) -> dict[str, float]:
    """Best time per runner over rounds that call each in turn, after one warm-up each."""
    warm = {name: _once(fn, images[name]) for name, fn in runners.items()}
    rounds = max(2, min(10, round(ROUND_BUDGET / max(warm.values()))))
    best = dict(warm)
    for _ in range(rounds):
        for name, fn in runners.items():
            best[name] = min(best[name], _once(fn, images[name]))
    return best


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def run() -> Section:
    threads = torch.get_num_threads()
    section = Section(
        "Exported models on the CPU (images/s)",
        ["preset", "side", "batch", "eager predict_step", "TorchScript", "ONNX Runtime",
         "TorchScript / eager", "ONNX Runtime / eager", "export s (TorchScript, ONNX)"])
    with tempfile.TemporaryDirectory() as folder:
        for preset in PRESETS:
            path, side = _checkpoint(preset, Path(folder))
            seconds = {}
            for fmt in ("torchscript", "onnx"):
                start = time.perf_counter()
                done = export_checkpoint(path, fmt)
                seconds[fmt] = time.perf_counter() - start
                if fmt == "onnx":
                    onnx = onnx_runner(done.path, threads)
                else:
                    script = torchscript_runner(done.path)
            method = read_checkpoint(path).method

            def eager(images, model=method):
                with torch.no_grad():
                    return model.predict_step({"image": images}, 0)

            for batch in BATCHES:
                x = torch.rand(batch, 3, side, side, generator=torch.Generator().manual_seed(0))
                times = _best_alternating(
                    {"eager": eager, "torchscript": script, "onnx": onnx},
                    {"eager": x, "torchscript": x.numpy(), "onnx": x.numpy()})
                rate = {name: batch / t for name, t in times.items()}
                section.rows.append([
                    preset, str(side), str(batch), _rate(rate["eager"]),
                    _rate(rate["torchscript"]), _rate(rate["onnx"]),
                    f"{rate['torchscript'] / rate['eager']:.2f}×",
                    f"{rate['onnx'] / rate['eager']:.2f}×",
                    f"{seconds['torchscript']:.0f}, {seconds['onnx']:.0f}"
                    if batch == BATCHES[0] else ""])
            del method, onnx, script
    section.notes.append(
        "Every runtime scores the same random float32 batch with the same weights and the "
        f"same {threads} intra-op thread{'s' * (threads > 1)}; images/s is the batch over its "
        "best time, after one warm-up call each, in alternating rounds (up to 10, at least 2). "
        "Eager is `predict_step` under `torch.no_grad`, TorchScript the traced file behind its "
        "input check, ONNX Runtime the CPU execution provider with default graph "
        "optimisations. The paper presets run at their own sizes (256×256, FAIR c = 128, DFD "
        "WideResNet-50-2 with random weights, OCR-GAN ngf = ndf = 64). The export time "
        "includes loading the checkpoint and the parity check on 3 images.")
    return section


if __name__ == "__main__":
    print(run().markdown())
