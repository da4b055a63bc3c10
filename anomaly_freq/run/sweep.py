"""Sweeps: a grid of runs from one YAML file, resumable, run locally or through submitit.

A sweep file holds ``overrides`` shared by every run, a ``grid`` of config keys to values (its
Cartesian product), optional ``settings`` (a paper table's column label → extra overrides) and
optional ``published`` metadata for `afreq tables`. ``dataset.category: all`` expands to the
dataset's categories; under ``dataset.setting=unified`` the categories (all, or the grid's list)
make one point, a single run that scores each of them. Each point is identified by the hash of
its resolved config, so a point that already has a finished run anywhere under the output root
is skipped.

Locally, each worker gets its own set of ``--devices-per-job`` GPUs and runs in the sweep's
process group; SIGINT or SIGTERM to the sweep stops its workers and records their points as
interrupted, to be run again on resume. On SLURM, each point is one task of a job array,
requeued when preempted or timed out, and a job of several tasks is one DDP run whose rank 0
alone takes the point's lock.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import submitit
import yaml
from rich.console import Console
from rich.markup import escape

from anomaly_freq import registry
from anomaly_freq.config import load_config
from anomaly_freq.errors import AfreqError
from anomaly_freq.files import write_atomic
from anomaly_freq.run.engine import with_category
from anomaly_freq.run.progress import SweepProgress
from anomaly_freq.run.rundir import config_hash
from anomaly_freq.run.store import finished_hashes, is_finished
from anomaly_freq.run.unified import UNIFIED, setting_of, unified_config

SWEEP_KEYS = {"name", "title", "overrides", "grid", "settings", "published", "deviations",
              "slurm"}
# Short names a sweep file's slurm: mapping may use for submitit's slurm_* parameters.
SLURM_ALIASES = {"partition": "slurm_partition", "array_parallelism": "slurm_array_parallelism"}
DECISION_WAIT_S = 600  # how long a rank > 0 waits for rank 0 to say whether the point runs
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
STOP_GRACE_S = 30  # how long an interrupted worker may take to exit before it is killed


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
    values: tuple[tuple[str, str], ...] = ()  # the grid's values of this point, but its category
    categories: tuple[str, ...] = ()  # those a unified point scores; else just its category

    @property
    def scored(self) -> tuple[str, ...]:
        return self.categories or (self.category,)

    @property
    def label(self) -> str:
        named = [*(f"{k}={v}" for k, v in self.values), f"category={self.category}"]
        return " ".join(named if self.setting == "full" else [f"setting={self.setting}", *named])


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


def expand(sweep: Sweep, devices: Sequence[str] = ()) -> list[Point]:
    """Every run of the sweep, categories expanded, each with its config hash; ``devices``
    (the executor's overrides) come last and are part of the hash."""
    points = []
    keys = list(sweep.grid)
    for setting, extra in sweep.settings.items():
        for values in itertools.product(*[_listed(sweep.grid[k]) for k in keys]):
            chosen = dict(zip(keys, values, strict=True))
            overrides = [*sweep.overrides, *(extra or []),
                         *(f"{k}={_text(v)}" for k, v in chosen.items() if k != "dataset.category")]
            cfg = load_config(overrides)
            values = tuple((k, _text(v)) for k, v in chosen.items() if k != "dataset.category")
            if setting_of(cfg) == UNIFIED:
                point = _unified_point(setting, overrides, sweep.grid.get(
                    "dataset.category", cfg.dataset.category), devices, values)
                if point not in points:  # the grid's categories were one run all along
                    points.append(point)
                continue
            categories = chosen.get("dataset.category", cfg.dataset.category)
            if categories == "all":
                categories = registry.create_dataset(cfg.dataset.name, cfg).categories()
            for category in [categories] if isinstance(categories, str) else categories:
                run = [*overrides, f"dataset.category={category}", *devices]
                resolved = with_category(load_config(run), category)
                points.append(Point(setting, category, tuple(run), config_hash(resolved),
                                    Path(resolved.output.root), values))
    return points


def _unified_point(setting: str, overrides: list[str], categories: Any,
                   devices: Sequence[str], values: tuple[tuple[str, str], ...]) -> Point:
    """One run over ``categories`` (all, or a list), scoring each of them."""
    run = [*overrides, f"dataset.category={_text(categories)}", *devices]
    resolved = unified_config(load_config(run))
    names = resolved.dataset.category
    if names == "all":
        names = registry.create_dataset(resolved.dataset.name, resolved).categories()
    return Point(setting, UNIFIED, tuple(run), config_hash(resolved),
                 Path(resolved.output.root), values, tuple(names))


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
              console: Console | None = None, submitit_cluster: str | None = None,
              devices_per_job: int = 1) -> dict:
    """Run every unfinished point; returns counts of done/skipped/failed."""
    console = console or Console()
    sweep = load_sweep(path)
    if executor == "local":
        gpus = _visible_gpus()
        slots = gpu_slots(gpus, devices_per_job, jobs)
        devices = local_overrides(devices_per_job, bool(slots))
        if slots and jobs > len(slots):
            console.print(f"--jobs {jobs} capped at {len(slots)}: {len(gpus)} GPUs visible, "
                          f"{devices_per_job} per run (--devices-per-job)", highlight=False)
    elif executor == "slurm":
        if devices_per_job != 1:
            raise AfreqError(f"--devices-per-job {devices_per_job} is for --executor local; on "
                             "SLURM set gpus_per_node and tasks_per_node in the sweep file's "
                             "slurm: mapping")
        devices = slurm_overrides(sweep.slurm)
    else:
        raise AfreqError(f"unknown executor '{executor}'; valid: local, slurm")
    points = expand(sweep, devices)
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
        counts = _run_local(todo, jobs, log_dir, console, slots, devices_per_job, len(done))
    else:
        counts = _run_submitit(sweep, todo, log_dir, console, submitit_cluster, len(done))
    if "stopped_by" in counts:
        console.print(f"[yellow]stopped by {counts['stopped_by']}[/]: "
                      f"{counts.get('interrupted', 0)} running runs recorded as interrupted in "
                      f"{escape(str(log_dir / 'status.jsonl'))}; run the same command again to "
                      "finish the sweep", highlight=False)
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


def _describe(ran: int, running: int, failed: int, remaining: int) -> str:
    return f"ran {ran} · running {running} · failed {failed} · remaining {remaining}"


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0


def gpu_slots(gpus: list[str], per_job: int, jobs: int) -> list[tuple[str, ...]]:
    """Disjoint sets of ``per_job`` GPU ids, one per local worker, at most ``jobs`` of them;
    empty without GPUs (the workers then run on the CPU)."""
    if per_job < 1:
        raise AfreqError(f"--devices-per-job {per_job}: give 1 or more GPUs per run")
    if not gpus:
        return []
    if per_job > len(gpus):
        raise AfreqError(f"--devices-per-job {per_job} asks for more GPUs per run than the "
                         f"{len(gpus)} visible ({','.join(gpus)}); use --devices-per-job "
                         f"{len(gpus)} or less, or make more GPUs visible (CUDA_VISIBLE_DEVICES)")
    count = min(max(1, jobs), len(gpus) // per_job)
    return [tuple(gpus[i * per_job:(i + 1) * per_job]) for i in range(count)]


def local_overrides(per_job: int, gpus: bool) -> list[str]:
    """What a local worker's run is told about its devices: DDP over them when there are two
    or more."""
    if per_job > 1:
        return [f"trainer.devices={per_job}", "trainer.strategy=ddp"]
    return ["trainer.devices=1"] if gpus else []


def slurm_overrides(slurm: dict[str, Any]) -> list[str]:
    """A job of ``nodes × tasks_per_node`` tasks is one DDP run over them; Lightning's
    SLURMEnvironment reads the ranks that srun started."""
    nodes, tasks = _count(slurm, "nodes", 1), _count(slurm, "tasks_per_node", 1)
    if nodes * tasks <= 1:
        return []
    return [f"trainer.devices={tasks}", f"trainer.num_nodes={nodes}", "trainer.strategy=ddp"]


def _count(slurm: dict[str, Any], key: str, default: int) -> int:
    value = slurm.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise AfreqError(f"slurm: {key}: {value!r} must be a whole number, e.g. {key}: 2")
    return value


def _run_local(todo: list[Point], jobs: int, log_dir: Path, console: Console,
               slots: Sequence[tuple[str, ...]] = (), devices_per_job: int = 1,
               done_before: int = 0) -> dict:
    """One worker subprocess per GPU set of ``slots`` (without GPUs: ``jobs`` workers sharing
    the cores), a lock per point; a worker's GPUs go to the next point when it ends. SIGINT or
    SIGTERM to the sweep stops the running workers and records their points as interrupted."""
    threads = _cpu_threads_per_job(jobs, len(slots), devices_per_job)
    free: list[tuple[str, ...] | None] = [*slots] or [None] * max(1, jobs)
    queue, running = list(todo), {}
    counts = {"ran": 0, "failed": 0, "skipped": 0}

    def settle(point: Point, stopping: bool) -> None:
        slot, proc, lock, log = running.pop(point)
        free.append(slot)
        log.close()
        lock.close()  # the worker's copy closed when it exited: the flock is released
        if proc.returncode == 0:
            status, detail = "done", ""
            counts["ran"] += 1
        else:
            status = "interrupted" if stopping else "failed"
            detail = (log_dir / f"{point.hash}.log").read_text()[-2000:]
            counts[status] = counts.get(status, 0) + 1
        _record(log_dir, point, status, detail)
        if status == "failed":
            console.print(f"[red]failed[/] ({proc.returncode}): "
                          f"{escape(shlex.join(point.overrides))}", highlight=False)
        progress.advance(f"{status} {point.label}")

    with (_StopRequest() as stop,
          SweepProgress(console, done_before + len(todo), done_before) as progress):
        while (queue or running) and stop.signum is None:
            while queue and free and stop.signum is None:
                point = queue.pop(0)
                started = _start(point, free[0], threads, log_dir)
                if started is None:
                    counts["skipped"] += 1
                    _record(log_dir, point, "skipped", "taken by another process or finished")
                    progress.advance(f"skipped {point.label}", executed=False)
                    continue
                running[point] = (free.pop(0), *started)
            time.sleep(0.2)
            for point, (_, proc, _, _) in list(running.items()):
                if proc.poll() is not None:
                    settle(point, stopping=stop.signum is not None)
            progress.describe(_describe(counts["ran"], len(running), counts["failed"],
                                        len(queue)))
        if stop.signum is not None:
            _interrupt([proc for _, proc, _, _ in running.values()])
            for point in list(running):
                settle(point, stopping=True)
            counts["stopped_by"] = signal.Signals(stop.signum).name
    return counts


class _StopRequest:
    """SIGINT and SIGTERM to the sweep, noted instead of raised while its workers run, so that
    the sweep stops them and records their points; the previous handlers come back after."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():  # the only one that may
            self._previous = {s: signal.signal(s, self._note) for s in STOP_SIGNALS}
        return self

    def _note(self, signum: int, _frame: Any) -> None:
        self.signum = signum

    def __exit__(self, *_) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _interrupt(workers: list[subprocess.Popen]) -> None:
    """Stop each worker as Ctrl-C would (SIGINT: the run records why it ended and exits, and
    its data-loader processes with it); kill the ones still running after STOP_GRACE_S."""
    for proc in workers:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_GRACE_S
    for proc in workers:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _visible_gpus() -> list[str]:
    """The GPU ids workers may use: the user's CUDA_VISIBLE_DEVICES, else every GPU."""
    count = _gpu_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip()][:count]
    return [str(i) for i in range(count)]


def _cpu_threads_per_job(jobs: int, gpus: int, per_job: int = 1) -> int | None:
    """Without GPUs, N workers (of ``per_job`` processes each) share the cores instead of each
    process starting one thread per core."""
    if gpus or jobs * per_job <= 1 or "OMP_NUM_THREADS" in os.environ:
        return None
    return max(1, (os.cpu_count() or 1) // (jobs * per_job))


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


def _start(point: Point, gpus: Sequence[str] | None, threads: int | None, log_dir: Path):
    """The worker of one point, seeing exactly ``gpus``; None when the point is taken."""
    lock = _claim(point)
    if lock is None:
        return None
    env = dict(os.environ)
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    log = (log_dir / f"{point.hash}.log").open("w")
    command = [sys.executable, "-m", "anomaly_freq.cli", "run", *point.overrides,
               "trainer.enable_progress_bar=false"]
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                            pass_fds=(lock.fileno(),))
    return proc, lock, log


def run_point(point: Point, rank: int = 0, tasks: int = 1, job: str = "") -> str:
    """One point in a submitit job: "done", or "skipped" when it is taken or finished. Rank 0
    alone takes the lock and decides; the other ranks of job ``job`` follow its decision."""
    from anomaly_freq.run.engine import run

    cfg = load_config([*point.overrides, "trainer.enable_progress_bar=false"])
    if rank:
        if not _await_decision(point, job):
            return "skipped"
        run(cfg)
        return "done"
    lock = _claim(point)
    if tasks > 1:
        write_atomic(_decision_file(point, job), "run" if lock else "skip")
    if lock is None:
        return "skipped"
    with lock:
        run(cfg)
    return "done"


def _decision_file(point: Point, job: str) -> Path:
    return point.output_root / ".locks" / f"{point.hash}.{job}.decision"


def _await_decision(point: Point, job: str, wait_s: float = DECISION_WAIT_S) -> bool:
    """Whether rank 0 of ``job`` took the point; waits for it to write its decision."""
    path = _decision_file(point, job)
    deadline = time.monotonic() + wait_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise AfreqError(f"job {job}: rank 0 wrote no decision to {path} within {wait_s:.0f} "
                             f"s; output.root ({point.output_root}) must be a folder that every "
                             "node of the job shares")
        time.sleep(1)
    return path.read_text() == "run"


def _job_context() -> tuple[int, int, str]:
    """(global rank, number of tasks, attempt id) of the running job; rank 0 of 1 outside
    one. The attempt id changes when SLURM requeues the job."""
    try:
        env = submitit.JobEnvironment()
        rank, tasks, job = env.global_rank, env.num_tasks, env.job_id
    except RuntimeError:
        rank, tasks = int(os.environ.get("SLURM_PROCID", 0)), int(os.environ.get("SLURM_NTASKS", 1))
        job = os.environ.get("SLURM_JOB_ID", "")
    return rank, tasks, f"{job}.{os.environ.get('SLURM_RESTART_COUNT', '0')}"


class PointJob(submitit.helpers.Checkpointable):
    """What each submitit job runs: one point. Preempted or timed out, it is requeued with the
    same point; the lock and the finished check then run it again or report it done."""

    def __call__(self, point: Point) -> str:
        return run_point(point, *_job_context())

    def checkpoint(self, point: Point) -> submitit.helpers.DelayedSubmission:
        """The resubmission of this point, which submitit requeues."""
        return submitit.helpers.DelayedSubmission(self, point)


def slurm_parameters(sweep: Sweep) -> dict[str, Any]:
    """submitit parameters from the sweep file's slurm: mapping (``partition`` and
    ``array_parallelism`` may drop their ``slurm_`` prefix)."""
    return {"timeout_min": 24 * 60,
            **{SLURM_ALIASES.get(key, key): value for key, value in sweep.slurm.items()}}


def _run_submitit(sweep: Sweep, todo: list[Point], log_dir: Path, console: Console,
                  cluster: str | None, done_before: int = 0) -> dict:
    """Every point as one task of a job array; waits for them all."""
    executor = submitit.AutoExecutor(folder=str(log_dir / "submitit"), cluster=cluster)
    try:
        executor.update_parameters(**slurm_parameters(sweep))
    except (NameError, AssertionError, TypeError, ValueError) as err:
        raise AfreqError(f"sweep file {sweep.path}: the slurm: mapping is not valid for "
                         f"submitit: {err}") from err
    _warn_idle_gpus(sweep.slurm, console)
    jobs = executor.map_array(PointJob(), todo) if todo else []
    counts = {"ran": 0, "failed": 0, "skipped": 0}
    with SweepProgress(console, done_before + len(jobs), done_before) as progress:
        progress.describe(f"submitted {len(jobs)} jobs")
        for point, job in zip(todo, jobs, strict=True):
            try:
                status = job.result()
            except Exception as err:
                status = "failed"
                counts["failed"] += 1
                _record(log_dir, point, "failed", f"job {job.job_id}: {err}")
            else:
                counts["ran" if status == "done" else "skipped"] += 1
                _record(log_dir, point, status, f"job {job.job_id}")
            progress.advance(f"{status} {point.label}", executed=status != "skipped")
    return counts


def _warn_idle_gpus(slurm: dict[str, Any], console: Console) -> None:
    gpus, tasks = _count(slurm, "gpus_per_node", 0), _count(slurm, "tasks_per_node", 1)
    if gpus > tasks:
        console.print(f"[yellow]slurm: gpus_per_node={gpus} but tasks_per_node={tasks}[/]: each "
                      f"task's run uses one GPU; set tasks_per_node={gpus} for one DDP run over "
                      f"all {gpus}", highlight=False)
