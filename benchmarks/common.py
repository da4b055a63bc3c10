"""Timing helpers and the report format shared by the benchmark modules."""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class Section:
    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"## {self.title}", "", "| " + " | ".join(self.header) + " |",
                 "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.notes:
            lines += [""] + self.notes
        return "\n".join(lines) + "\n"


def best_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Smallest wall time of ``repeats`` calls (the least disturbed one), in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {torch.get_num_threads()} torch threads, {gpu}; "
            f"Python {platform.python_version()}, torch {torch.__version__}")


# `make bench-gpu` writes its section of docs/benchmarks.md between these; `make bench` keeps it
START, END = "<!-- gpu-benchmark:start -->", "<!-- gpu-benchmark:end -->"


def splice(existing: str, block: str) -> str:
    """``existing`` with the text between the markers replaced by ``block`` (which carries the
    markers), or ``block`` appended when the markers are absent."""
    start, end = existing.find(START), existing.find(END)
    if start != -1 and end > start:
        tail = existing[end + len(END):]
        return existing[:start] + block.rstrip("\n") + tail
    if not existing:
        return block
    return existing.rstrip("\n") + "\n\n" + block


def gpu_block(existing: str) -> str:
    """The marked GPU section of ``existing`` (markers included), or ""."""
    start, end = existing.find(START), existing.find(END)
    return existing[start:end + len(END)] + "\n" if start != -1 and end > start else ""
