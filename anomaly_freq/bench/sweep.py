"""Sweeps: a grid of runs from one YAML file, resumable, run locally or through submitit.

A sweep file holds ``overrides`` shared by every run, a ``grid`` of config keys to values (its
Cartesian product), optional ``settings`` (a paper table's column label → extra overrides) and
optional ``published`` metadata for `afreq tables`. ``dataset.category: all`` expands to the
dataset's categories. Each point is identified by the hash of its resolved config, so a point
that already has a finished run anywhere under the output root is skipped.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TimeElapsedColumn, TimeRemainingColumn

from anomaly_freq import registry
from anomaly_freq.bench.rundir import config_hash
from anomaly_freq.bench.store import finished_hashes, is_finished
from anomaly_freq.config import load_config
from anomaly_freq.engine import with_category
from anomaly_freq.errors import AfreqError

SWEEP_KEYS = {"name", "title", "overrides", "grid", "settings", "published", "deviations",
              "slurm"}


@dataclass
class Sweep:
    name: str
    path: Path
    overrides: list[str]
    grid: dict[str, list[Any]]
    settings: dict[str, list[str]]
    title: str = ""
    published: dict[str, Any] = field(default_factory=dict)
    deviations: list[str] = field(default_factory=list)
    slurm: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Point:
    setting: str
    category: str
    overrides: tuple[str, ...]
    hash: str
    output_root: Path


def load_sweep(path: Path) -> Sweep:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise AfreqError(f"cannot read sweep file {path}: {err}") from err
    if not isinstance(data, dict):
        raise AfreqError(f"sweep file {path} must hold a mapping")
    unknown = set(data) - SWEEP_KEYS
    if unknown:
        raise AfreqError(f"sweep file {path}: unknown keys {', '.join(sorted(unknown))}; "
                         f"valid: {', '.join(sorted(SWEEP_KEYS))}")
    grid = data.get("grid") or {}
    for key, values in grid.items():
        if not isinstance(values, list) and values != "all":
            raise AfreqError(f"sweep file {path}: grid key '{key}' needs a list of values")
    return Sweep(
        name=data.get("name") or path.stem, path=path, overrides=list(data.get("overrides") or []),
        grid=grid, settings=data.get("settings") or {"full": []}, title=data.get("title", ""),
        published=data.get("published") or {}, deviations=list(data.get("deviations") or []),
        slurm=data.get("slurm") or {},
    )


def expand(sweep: Sweep) -> list[Point]:
    """Every run of the sweep, categories expanded, each with its config hash."""
    points = []
    keys = list(sweep.grid)
    for setting, extra in sweep.settings.items():
        for values in itertools.product(*[_listed(sweep.grid[k]) for k in keys]):
            chosen = dict(zip(keys, values, strict=True))
            overrides = [*sweep.overrides, *(extra or []),
                         *(f"{k}={_text(v)}" for k, v in chosen.items() if k != "dataset.category")]
            cfg = load_config(overrides)
            categories = chosen.get("dataset.category", cfg.dataset.category)
            if categories == "all":
                categories = registry.create_dataset(cfg.dataset.name, cfg).categories()
            for category in [categories] if isinstance(categories, str) else categories:
                run = [*overrides, f"dataset.category={category}"]
                resolved = with_category(load_config(run), category)
                points.append(Point(setting, category, tuple(run), config_hash(resolved),
                                    Path(resolved.output.root)))
    return points


def _listed(values: Any) -> list[Any]:
    return values if isinstance(values, list) else [values]


def _text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list | dict | bool) or value is None else str(
        value)


def pending(points: list[Point]) -> tuple[list[Point], list[Point]]:
    """(to run, already finished) according to the run folders on disk."""
    done_hashes: dict[Path, set[str]] = {}
    todo, done = [], []
    for p in points:
        if p.output_root not in done_hashes:
            done_hashes[p.output_root] = set(finished_hashes(p.output_root))
        (done if p.hash in done_hashes[p.output_root] else todo).append(p)
    return todo, done


def run_sweep(path: Path, executor: str = "local", jobs: int = 1, dry_run: bool = False,
              console: Console | None = None, submitit_cluster: str | None = None) -> dict:
    """Run every unfinished point; returns counts of done/skipped/failed."""
    console = console or Console()
    sweep = load_sweep(path)
    points = expand(sweep)
    todo, done = pending(points)
    console.print(f"sweep {sweep.name}: {len(points)} runs, {len(done)} already finished, "
                  f"{len(todo)} to run")
    if dry_run:
        for p in todo:
            # shell-quoted and printed verbatim: overrides such as key=[a,b] are not markup
            console.print("  afreq run " + shlex.join(p.overrides), highlight=False,
                          markup=False, soft_wrap=True)
        return {"total": len(points), "finished_before": len(done), "to_run": len(todo)}
    log_dir = (points[0].output_root if points else Path("runs")) / "sweeps" / _slug(sweep.name)
    log_dir.mkdir(parents=True, exist_ok=True)
    if executor == "local":
        counts = _run_local(todo, jobs, log_dir, console)
    elif executor == "slurm":
        counts = _run_submitit(sweep, todo, log_dir, console, submitit_cluster)
    else:
        raise AfreqError(f"unknown executor '{executor}'; valid: local, slurm")
    if counts["skipped"]:
        console.print(f"[yellow]{counts['skipped']} runs were taken by another sweep process or "
                      "finished meanwhile[/]; run the sweep again once that process is done")
    return {"total": len(points), "finished_before": len(done), **counts}


def _slug(name: str) -> str:
    return name.replace("/", "__")


def _record(log_dir: Path, point: Point, status: str, detail: str = "") -> None:
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "hash": point.hash, "status": status,
             "overrides": list(point.overrides), "detail": detail[-2000:]}
    with (log_dir / "status.jsonl").open("a") as handle:
        handle.write(json.dumps(entry) + "\n")


def _progress(console: Console) -> Progress:
    return Progress("{task.description}", BarColumn(), "{task.completed}/{task.total}",
                    TimeElapsedColumn(), "ETA", TimeRemainingColumn(), console=console)


def _describe(done: int, running: int, failed: int, remaining: int) -> str:
    return (f"done {done} · running {running} · failed {failed} · remaining {remaining}")


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0


def _run_local(todo: list[Point], jobs: int, log_dir: Path, console: Console) -> dict:
    """N worker subprocesses (one GPU each when there are GPUs), a lock per point."""
    devices = _visible_gpus()
    threads = _cpu_threads_per_job(jobs, len(devices))
    queue, running = list(todo), {}
    counts = {"ran": 0, "failed": 0, "skipped": 0}
    with _progress(console) as progress:
        task = progress.add_task(_describe(0, 0, 0, len(todo)), total=len(todo))
        while queue or running:
            while queue and len(running) < max(1, jobs):
                point = queue.pop(0)
                slot = next(i for i in range(max(1, jobs)) if i not in
                            {s for s, *_ in running.values()})
                device = devices[slot % len(devices)] if devices else None
                started = _start(point, device, threads, log_dir)
                if started is None:
                    counts["skipped"] += 1
                    _record(log_dir, point, "skipped", "taken by another process or finished")
                    progress.advance(task)
                    continue
                running[point] = (slot, *started)
            time.sleep(0.2)
            for point, (_slot, proc, lock, log) in list(running.items()):
                if proc.poll() is None:
                    continue
                del running[point]
                log.close()
                lock.close()  # the worker's copy closed when it exited: the flock is released
                if proc.returncode == 0:
                    counts["ran"] += 1
                    _record(log_dir, point, "done")
                else:
                    counts["failed"] += 1
                    tail = (log_dir / f"{point.hash}.log").read_text()[-2000:]
                    _record(log_dir, point, "failed", tail)
                    console.print(f"[red]failed[/] ({proc.returncode}): "
                                  f"{escape(shlex.join(point.overrides))}", highlight=False)
                progress.advance(task)
            progress.update(task, description=_describe(counts["ran"], len(running),
                                                        counts["failed"], len(queue)))
    return counts


def _visible_gpus() -> list[str]:
    """The GPU ids workers may use: the user's CUDA_VISIBLE_DEVICES, else every GPU."""
    count = _gpu_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d for d in visible.split(",") if d.strip()][:count]
    return [str(i) for i in range(count)]


def _cpu_threads_per_job(jobs: int, gpus: int) -> int | None:
    """Without GPUs, N workers share the cores instead of each starting one thread per core."""
    if gpus or jobs <= 1 or "OMP_NUM_THREADS" in os.environ:
        return None
    return max(1, (os.cpu_count() or 1) // jobs)


def _claim(point: Point):
    """The point's lock file, held; None when another process holds it or the point finished
    since the sweep started. A worker inherits the lock, so it stays held while the worker
    runs even if the sweep process is killed."""
    folder = point.output_root / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    lock = (folder / f"{point.hash}.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        return None
    if is_finished(point.output_root, point.hash):
        lock.close()
        return None
    return lock


def _start(point: Point, device: str | None, threads: int | None, log_dir: Path):
    lock = _claim(point)
    if lock is None:
        return None
    env = dict(os.environ)
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    log = (log_dir / f"{point.hash}.log").open("w")
    command = [sys.executable, "-m", "anomaly_freq.cli", "run", *point.overrides,
               "trainer.enable_progress_bar=false"]
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                            pass_fds=(lock.fileno(),))
    return proc, lock, log


def run_point(point: Point) -> str:
    """What one submitit job executes: "done", or "skipped" when the point is taken."""
    from anomaly_freq.engine import run

    lock = _claim(point)
    if lock is None:
        return "skipped"
    with lock:
        run(load_config([*point.overrides, "trainer.enable_progress_bar=false"]))
    return "done"


def _run_submitit(sweep: Sweep, todo: list[Point], log_dir: Path, console: Console,
                  cluster: str | None) -> int:
    import submitit

    executor = submitit.AutoExecutor(folder=str(log_dir / "submitit"), cluster=cluster)
    executor.update_parameters(**{"timeout_min": 24 * 60, **sweep.slurm})
    with executor.batch():
        jobs = [executor.submit(run_point, p) for p in todo]
    counts = {"ran": 0, "failed": 0, "skipped": 0}
    with _progress(console) as progress:
        task = progress.add_task(f"submitted {len(jobs)} jobs", total=len(jobs))
        for point, job in zip(todo, jobs, strict=True):
            try:
                status = job.result()
            except Exception as err:
                counts["failed"] += 1
                _record(log_dir, point, "failed", f"job {job.job_id}: {err}")
            else:
                counts["ran" if status == "done" else "skipped"] += 1
                _record(log_dir, point, status, f"job {job.job_id}")
            progress.advance(task)
    return counts
