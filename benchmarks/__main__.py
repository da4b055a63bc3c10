"""Run every benchmark and write docs/benchmarks.md (`make bench`).

Each benchmark module runs in a fresh interpreter, so none inherits another's worker processes,
thread pools or memory peak (the peak-RSS columns are per module).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from anomaly_freq.files import write_atomic
from benchmarks.common import gpu_block, machine

# The toolkit first: right after the data-loading benchmark, the kernel is still writing its
# disk cache back and 2-thread torch timings there came out 2-3x slower.
MODULES = ["benchmarks.bench_freq", "benchmarks.bench_data", "benchmarks.bench_freqstat",
           "benchmarks.bench_metrics", "benchmarks.bench_fair", "benchmarks.bench_dfd",
           "benchmarks.bench_ocrgan", "benchmarks.bench_pipeline", "benchmarks.bench_export"]
OUTPUT = Path("docs/benchmarks.md")


def run_isolated(name: str) -> str:
    """The Markdown section of module ``name``, measured in a child interpreter."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "section.md"
        subprocess.run([sys.executable, "-m", "benchmarks", "--one", name, str(out)], check=True)
        return out.read_text()


def main(names: list[str]) -> None:
    if names[:1] == ["--one"]:  # the child: one module, its section to a file
        Path(names[2]).write_text(importlib.import_module(names[1]).run().markdown())
        return
    selected = [m for m in MODULES if not names or any(n in m for n in names)]
    sections = []
    for name in selected:
        print(f"running {name} ...", flush=True)
        sections.append(run_isolated(name))
        print(sections[-1], flush=True)
    header = (
        "# Benchmarks\n\n"
        f"Written by `make bench` (`python -m benchmarks`) on {time.strftime('%Y-%m-%d')}.\n\n"
        f"Machine: {machine()}.\n\n"
        "Speed-ups are ratios against a reference measured in the same run on the same machine. "
        "Each section ran in a fresh interpreter.\n\n"
    )
    if names:
        print(f"(a selection ran, so {OUTPUT} was left as it was)")
        return
    kept = gpu_block(OUTPUT.read_text()) if OUTPUT.exists() else ""  # make bench-gpu's
    write_atomic(OUTPUT, header + "\n".join(sections) + ("\n" + kept if kept else ""))
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main(sys.argv[1:])
