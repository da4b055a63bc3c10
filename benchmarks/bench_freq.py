"""Frequency toolkit: batched torch against the per-image loops of the official data loaders."""

from __future__ import annotations

import os

import cv2
import numpy as np
import torch

from anomaly_freq.freq import butterworth_highpass, gaussian_pyramid_split
from benchmarks.common import Section, best_time

BATCH, SIZE = 32, 256
# this VM's 2-thread torch timings vary up to 3× from call to call: the best of many calls each
REPEATS = 20


def _butterworth_transfer() -> np.ndarray:
    y, x = np.ogrid[:SIZE, :SIZE]
    dist = np.sqrt((x - SIZE // 2) ** 2 + (y - SIZE // 2) ** 2)
    return 1 / (1 + (30 / (dist + 1e-6)) ** 4)


def fair_loop(images: np.ndarray, transfer: np.ndarray | None = None) -> list[np.ndarray]:
    """FAIR's loader, per image: grey, float64 FFT, Butterworth high-pass, inverse FFT. The
    loader builds the transfer function inside its per-sample call (fair.md §4.2), which is what
    happens when ``transfer`` is None; pass one to time the loop with that work hoisted out."""
    out = []
    for image in images:
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        spectrum = np.fft.fftshift(np.fft.fft2(grey))
        h = _butterworth_transfer() if transfer is None else transfer
        out.append(np.real(np.fft.ifft2(np.fft.ifftshift(spectrum * h))).astype(np.float32))
    return out


def pyramid_loop(images: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """DFD's loader, per image: low = pyrUp(pyrDown(x)), high = x − low."""
    out = []
    for image in images:
        low = cv2.pyrUp(cv2.pyrDown(image))
        out.append((low, cv2.subtract(image, low)))
    return out


def _two_copies(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return batch.clone(), batch.clone()


def _rate(seconds: float) -> str:
    return f"{BATCH / seconds:,.0f}"


def run() -> Section:
    batch = torch.rand(BATCH, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    images = np.ascontiguousarray(batch.permute(0, 2, 3, 1).numpy())
    section = Section(f"Frequency toolkit, a batch of {BATCH}×3×{SIZE}×{SIZE}",
                      ["operation", "per-image NumPy/OpenCV loop (s)", "loop images/s",
                       "batched torch CPU (s)", "torch CPU images/s", "speed-up",
                       "torch CUDA (s)", "torch CUDA images/s"])
    transfer = _butterworth_transfer()
    cases = [
        ("Butterworth high-pass (FAIR input) vs FAIR's loader code", lambda: fair_loop(images),
         butterworth_highpass),
        ("Butterworth high-pass vs that loop with the transfer built once",
         lambda: fair_loop(images, transfer), butterworth_highpass),
        ("pyramid split (DFD/OCR-GAN)", lambda: pyramid_loop(images), gaussian_pyramid_split),
        ("floor for any split: two copies of the batch (what it must write)",
         lambda: pyramid_loop(images), _two_copies),
    ]
    with torch.no_grad():
        for name, loop, batched in cases:
            t_loop = best_time(loop, repeats=REPEATS)
            t_torch = best_time(lambda f=batched: f(batch), repeats=REPEATS)
            cuda = ["no GPU", "–"]
            if torch.cuda.is_available():
                gpu = batch.cuda()
                seconds = best_time(lambda f=batched, g=gpu: f(g), repeats=10)
                cuda = [f"{seconds:.4f}", _rate(seconds)]
            section.rows.append([name, f"{t_loop:.3f}", _rate(t_loop), f"{t_torch:.3f}",
                                 _rate(t_torch), f"{t_loop / t_torch:.2f}×", *cuda])
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    section.notes.append(
        f"Best of {REPEATS} calls each; torch uses {torch.get_num_threads()} threads, the loops "
        f"are what the official data loaders run per image (OpenCV/NumPy, mostly one thread). "
        f"1-minute load average at the end: {load:.1f} on {os.cpu_count()} CPUs; an "
        "oversubscribed CPU slows torch's multi-threaded kernels far more than the "
        "single-threaded loops. The first "
        "Butterworth loop is FAIR's loader as written (it rebuilds the transfer function for "
        "every sample); the second builds it once, the strictest reference. On CPU the pyramid "
        "is memory-bound and OpenCV's SIMD loop keeps each image in cache: the last row times "
        "only allocating and writing two batch-sized outputs, which any batched split must do, "
        "so its speed-up bounds what any implementation could reach against the loop here. The "
        "batched version is for running the split on the GPU, inside the model.")
    return section
