"""Run every benchmark and write docs/benchmarks.md (`make bench`)."""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path

from anomaly_freq.bench.rundir import write_atomic
from benchmarks.common import machine

MODULES = ["benchmarks.bench_data", "benchmarks.bench_freq", "benchmarks.bench_freqstat",
           "benchmarks.bench_metrics", "benchmarks.bench_fair", "benchmarks.bench_dfd",
           "benchmarks.bench_ocrgan"]
OUTPUT = Path("docs/benchmarks.md")


def main(names: list[str]) -> None:
    selected = [m for m in MODULES if not names or any(n in m for n in names)]
    sections = []
    for name in selected:
        print(f"running {name} ...", flush=True)
        section = importlib.import_module(name).run()
        print(section.markdown())
        sections.append(section.markdown())
    header = (
        "# Benchmarks\n\n"
        f"Written by `make bench` (`python -m benchmarks`) on {time.strftime('%Y-%m-%d')}.\n\n"
        f"Machine: {machine()}.\n\n"
        "Speed-ups are ratios against a reference measured in the same run on the same machine.\n\n"
    )
    if names:
        print(f"(a selection ran, so {OUTPUT} was left as it was)")
        return
    write_atomic(OUTPUT, header + "\n".join(sections))
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main(sys.argv[1:])
