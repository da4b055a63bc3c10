"""Sweeps (resumable after a kill, past failures, submitit), the result store and tables."""

import io
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import submitit
from rich.console import Console

from anomaly_freq.cli import main
from anomaly_freq.errors import AfreqError
from anomaly_freq.run.published import PUBLISHED_DIR
from anomaly_freq.run.store import COLUMNS, finished_runs, load_results
from anomaly_freq.run.sweep import (
    PointJob,
    _claim,
    _cpu_threads_per_job,
    _decision_file,
    _start,
    expand,
    gpu_slots,
    load_sweep,
    local_overrides,
    run_point,
    run_sweep,
    slurm_overrides,
    slurm_parameters,
)
from anomaly_freq.run.tables import write_tables
from tests.conftest import TINY_SYNTHETIC, run_cli

TINY = "\n".join(f"  - {o}" for o in TINY_SYNTHETIC)


def write_sweep(folder, text):
    path = folder / "sweep.yaml"
    path.write_text(text)
    return path


def tiny_sweep(folder, name, category, grid=""):
    """A sweep of tiny freqstat runs on one synthetic category, written into ``folder/runs``."""
    return write_sweep(folder, f"""
name: {name}
overrides:
{TINY}
  - output.root={folder / 'runs'}
  - dataset.category={category}
{grid}""")


def test_expand_grid_and_categories(tmp_path):
    path = write_sweep(tmp_path, f"""
name: demo
overrides:
{TINY}
grid:
  seed: [0, 1, 2]
  dataset.category: all
settings:
  full: []
  small: [method.d0=8]
""")
    points = expand(load_sweep(path))
    assert len(points) == 2 * 3 * 4
    assert len({p.hash for p in points}) == len(points)
    assert {p.category for p in points} == {"weave", "granite", "washer", "chip"}


def test_bad_sweep_file(tmp_path):
    with pytest.raises(AfreqError, match="unknown keys griid"):
        load_sweep(write_sweep(tmp_path, "griid: {seed: [1]}\n"))
    with pytest.raises(AfreqError, match="grid key 'seed' needs a list"):
        load_sweep(write_sweep(tmp_path, "grid: {seed: 3}\n"))


def test_killed_sweep_resumes_and_runs_each_point_once(tmp_path, plugin_dir):
    path = write_sweep(tmp_path, f"""
name: resume
overrides:
{TINY}
  - output.root={tmp_path / 'runs'}
grid:
  method: [freqstat, mean_image]
  dataset.category: [weave, chip]
  seed: [0, 1]
""")
    env = {**os.environ, "PYTHONPATH": str(plugin_dir)}
    command = [sys.executable, "-m", "anomaly_freq.cli", "sweep", str(path), "--jobs", "2"]
    first = subprocess.Popen(command, env=env, cwd=tmp_path, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(list(finished_runs(tmp_path / "runs"))) < 2 and time.time() < deadline:
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    finished_early = len(list(finished_runs(tmp_path / "runs")))
    assert 2 <= finished_early < 8, "the kill should land part way through the sweep"

    second = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True,
                            timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"{finished_early} already finished" in second.stdout
    runs = list(finished_runs(tmp_path / "runs"))
    hashes = [json.loads((r / "protocol.json").read_text())["config_hash"] for r in runs]
    assert len(hashes) == 8 and len(set(hashes)) == 8  # every point exactly once
    for run_dir in runs:
        assert 0 <= json.loads((run_dir / "metrics.json").read_text())["image_auroc"] <= 1
    again = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True)
    assert "8 already finished, 0 to run" in again.stdout


def test_a_worker_holds_its_point_after_the_sweep_dies(tmp_path):
    path = tiny_sweep(tmp_path, "orphan", "chip")
    (point,) = expand(load_sweep(path))
    proc, lock, log = _start(point, None, None, tmp_path)
    lock.close()  # as if the sweep process were killed: the worker keeps the point locked
    assert _claim(point) is None, "a second sweep could take a point that is still running"
    assert proc.wait(timeout=300) == 0, (tmp_path / f"{point.hash}.log").read_text()
    log.close()
    assert _claim(point) is None, "a finished point must not be claimed again"
    assert run_point(point) == "skipped"
    summary = run_sweep(path)
    assert summary["finished_before"] == 1 and summary["ran"] == 0
    assert len(list(finished_runs(tmp_path / "runs"))) == 1


HOLDING_PLUGIN = """
import os
import time
from pathlib import Path

from afreq_test_plugin import MeanImage


class Holding(MeanImage):
    \"\"\"MeanImage that, while the folder $AFREQ_TEST_HOLD holds a file named hold, leaves a
    file named after its pid there at its first step and waits (at most 300 s).\"\"\"

    default_config = {"method": {"name": "holding", "power": 2.0}}

    def training_step(self, batch, batch_idx):
        hold = Path(os.environ["AFREQ_TEST_HOLD"])
        if (hold / "hold").exists():
            (hold / f"started-{os.getpid()}").touch()
            deadline = time.monotonic() + 300
            while (hold / "hold").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return super().training_step(batch, batch_idx)
"""


def process_group(pgid):
    """The processes in group ``pgid`` (Linux: the group is field 5 of /proc/<pid>/stat)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[2]) == pgid:
            members.append(int(stat.parent.name))
    return members


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_to_the_sweep_alone_stops_its_workers(tmp_path, plugin_dir, signum):
    (plugin_dir / "afreq_test_plugin" / "holding.py").write_text(HOLDING_PLUGIN)
    entry = plugin_dir / "afreq_test_plugin-0.1.dist-info" / "entry_points.txt"
    entry.write_text(entry.read_text() + "holding = afreq_test_plugin.holding:Holding\n")
    hold = tmp_path / "hold"
    hold.mkdir()
    (hold / "hold").touch()
    runs = tmp_path / "runs"
    path = tiny_sweep(tmp_path, "signals", "weave", "  - method=holding\ngrid:\n  seed: [0, 1]\n")
    env = {**os.environ, "AFREQ_TEST_HOLD": str(hold),
           "PYTHONPATH": os.pathsep.join([str(plugin_dir), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "anomaly_freq.cli", "sweep", str(path)]
    log = tmp_path / "first.log"
    try:
        with log.open("w") as out:
            sweep = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + 300
            while not list(hold.glob("started-*")) and sweep.poll() is None \
                    and time.monotonic() < deadline:
                time.sleep(0.2)
            (worker,) = [int(p.name.split("-")[1]) for p in hold.glob("started-*")]
            assert os.getpgid(worker) == sweep.pid  # the worker is in the sweep's group
            os.kill(sweep.pid, signum)  # the sweep alone, not its group
            assert sweep.wait(timeout=120) == 128 + signum, log.read_text()
        assert process_group(sweep.pid) == [], "a worker or one of its processes still runs"
    finally:
        (hold / "hold").unlink(missing_ok=True)  # a worker left behind by a failure ends
    assert "recorded as interrupted" in log.read_text()
    status = runs / "sweeps" / "signals" / "status.jsonl"
    (entry,) = [json.loads(line) for line in status.read_text().splitlines()]
    assert entry["status"] == "interrupted"  # and the second point was not started
    assert not list(finished_runs(runs))

    resumed = subprocess.run([*command, "--jobs", "2"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "2 runs, 0 already finished, 2 to run" in resumed.stdout
    done = [json.loads(line) for line in status.read_text().splitlines()][1:]
    assert [e["status"] for e in done] == ["done", "done"]
    assert entry["hash"] in {e["hash"] for e in done}
    assert len(list(finished_runs(runs))) == 2


def test_workers_use_the_users_visible_gpus(monkeypatch):
    from anomaly_freq.run import sweep

    monkeypatch.setattr(sweep, "_gpu_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert sweep._visible_gpus() == ["2", "3"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert sweep._visible_gpus() == ["0", "1"]


def test_reruns_of_one_configuration_are_not_counted_as_seeds(tmp_path):
    rows = [{"method": "freqstat", "preset": "freqstat", "variant": "v" * 16, "data": "",
             "dataset": "synthetic", "category": "weave", "metric": "image_auroc",
             "value": value, "config_hash": config}
            for config, value in [("seed0", 0.90), ("seed0", 0.90), ("seed1", 0.80)]]
    write_tables([], pd.DataFrame(rows, columns=COLUMNS), tmp_path)
    text = (tmp_path / "synthetic__cross_method.md").read_text()
    assert "| weave | **85.0 ± 7.1** |" in text  # two seeds; with the rerun: 86.7 ± 5.8


def test_bold_follows_the_printed_values(tmp_path):
    rows = [{"method": m, "preset": m, "variant": m * 8, "data": "", "dataset": "synthetic",
             "category": "weave", "metric": "image_auroc", "value": value, "config_hash": m}
            for m, value in [("aa", 0.98996), ("bb", 0.9900)]]
    write_tables([], pd.DataFrame(rows, columns=COLUMNS), tmp_path)
    text = (tmp_path / "synthetic__cross_method.md").read_text()
    assert "| weave | **99.0** | **99.0** |" in text


def test_cpu_workers_split_the_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert _cpu_threads_per_job(jobs=2, gpus=0) == 4
    assert _cpu_threads_per_job(jobs=16, gpus=0) == 1
    assert _cpu_threads_per_job(jobs=1, gpus=0) is None  # one worker keeps torch's default
    assert _cpu_threads_per_job(jobs=2, gpus=2) is None
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's setting wins
    assert _cpu_threads_per_job(jobs=2, gpus=0) is None


def test_sweep_keeps_going_past_a_failure(tmp_path):
    path = tiny_sweep(tmp_path, "failing", "weave", "grid:\n  dataset.shots: [2, 999]\n")
    summary = run_sweep(path)
    assert summary == {"total": 2, "finished_before": 0, "ran": 1, "failed": 1, "skipped": 0}
    log = [json.loads(line) for line in
           (tmp_path / "runs" / "sweeps" / "failing" / "status.jsonl").read_text().splitlines()]
    failed = next(e for e in log if e["status"] == "failed")
    assert "dataset.shots=999 is out of range" in failed["detail"]


@pytest.mark.parametrize("cluster", ["local", "debug"])
def test_submitit_executor_runs_a_job_array(tmp_path, cluster):
    path = tiny_sweep(tmp_path, "cluster", "granite",
                      "grid:\n  seed: [0, 1]\nslurm: {array_parallelism: 2, timeout_min: 30}\n")
    summary = run_sweep(path, executor="slurm", submitit_cluster=cluster)
    assert summary["ran"] == 2 and summary["failed"] == 0
    assert len(list(finished_runs(tmp_path / "runs"))) == 2
    again = run_sweep(path, executor="slurm", submitit_cluster=cluster)
    assert again["finished_before"] == 2 and again["ran"] == 0


def run_folders(root):
    return [p for p in root.glob("*/*/*/*") if p.is_dir()]


def test_a_requeued_point_runs_only_if_unfinished(tmp_path):
    path = tiny_sweep(tmp_path, "requeue", "weave", "grid:\n  seed: [0, 1]\n")
    finished, killed = expand(load_sweep(path))
    job = PointJob()
    assert job(finished) == "done" and job(killed) == "done"
    # a job killed part way leaves a run folder without metrics.json
    (killed_dir,) = [r for r in finished_runs(tmp_path / "runs") if killed.hash[:8] in r.name]
    (killed_dir / "metrics.json").unlink()
    for point, status, folders in ((finished, "skipped", 1), (killed, "done", 2)):
        # preempted: submitit pickles checkpoint()'s submission and runs it after the requeue
        resubmission = job.checkpoint(point)
        assert resubmission.function is job and resubmission.args == (point,)
        resubmission.dump(tmp_path / "submitted.pkl")
        requeued = submitit.helpers.DelayedSubmission.load(tmp_path / "submitted.pkl")
        assert requeued.result() == status
        ours = [r for r in run_folders(tmp_path / "runs") if point.hash[:8] in r.name]
        assert len(ours) == folders
    assert len(list(finished_runs(tmp_path / "runs"))) == 2


def test_only_rank_zero_takes_the_point(tmp_path):
    path = tiny_sweep(tmp_path, "ranks", "chip")
    (point,) = expand(load_sweep(path))
    held = _claim(point)  # another sweep holds the point, so rank 0 of job 7 skips it ...
    assert run_point(point, rank=0, tasks=2, job="7.0") == "skipped"
    assert _decision_file(point, "7.0").read_text() == "skip"
    assert run_point(point, rank=1, tasks=2, job="7.0") == "skipped"  # ... and so does rank 1
    assert not run_folders(tmp_path / "runs")
    # rank 0 of job 8 holds the lock and said "run": rank 1 joins the run without the lock
    _decision_file(point, "8.0").write_text("run")
    assert run_point(point, rank=1, tasks=2, job="8.0") == "done"
    assert len(list(finished_runs(tmp_path / "runs"))) == 1
    held.close()
    assert run_point(point) == "skipped"


def test_multi_task_jobs_are_one_ddp_run(tmp_path):
    assert slurm_overrides({"nodes": 2, "tasks_per_node": 4, "gpus_per_node": 4}) == [
        "trainer.devices=4", "trainer.num_nodes=2", "trainer.strategy=ddp"]
    assert slurm_overrides({"tasks_per_node": 2}) == [
        "trainer.devices=2", "trainer.num_nodes=1", "trainer.strategy=ddp"]
    assert slurm_overrides({"gpus_per_node": 1}) == slurm_overrides({}) == []
    with pytest.raises(AfreqError, match="slurm: nodes: 'two' must be a whole number"):
        slurm_overrides({"nodes": "two"})
    sweep = load_sweep(write_sweep(tmp_path, "slurm: {partition: gpu, array_parallelism: 8, "
                                             "slurm_mem_gb: 32, nodes: 2}\n"))
    assert slurm_parameters(sweep) == {"timeout_min": 1440, "slurm_partition": "gpu",
                                       "slurm_array_parallelism": 8, "slurm_mem_gb": 32,
                                       "nodes": 2}


def test_gpu_slots_are_disjoint_sets(monkeypatch):
    gpus = ["0", "1", "2", "3"]
    assert gpu_slots(gpus, per_job=2, jobs=8) == [("0", "1"), ("2", "3")]
    assert gpu_slots(gpus, per_job=1, jobs=2) == [("0",), ("1",)]
    assert gpu_slots(["4", "6", "7"], per_job=2, jobs=8) == [("4", "6")]
    assert gpu_slots([], per_job=2, jobs=8) == []  # CPU: --jobs workers share the cores
    assert local_overrides(2, gpus=True) == ["trainer.devices=2", "trainer.strategy=ddp"]
    assert local_overrides(1, gpus=True) == ["trainer.devices=1"]
    assert local_overrides(1, gpus=False) == []
    with pytest.raises(AfreqError, match="--devices-per-job 5 .* the 4 visible"):
        gpu_slots(gpus, per_job=5, jobs=1)
    with pytest.raises(AfreqError, match="--devices-per-job 0"):
        gpu_slots(gpus, per_job=0, jobs=1)


class FakeWorker:
    """A worker process that is still running at its first poll and has ended at the second."""

    live: list[set[str]] = []
    started: list[tuple[str, list[str]]] = []

    def __init__(self, command, env, **_):
        self.devices = set(env["CUDA_VISIBLE_DEVICES"].split(","))
        assert all(not self.devices & other for other in self.live), "two runs on one GPU"
        self.live.append(self.devices)
        self.started.append((env["CUDA_VISIBLE_DEVICES"], command))
        self.polls, self.returncode = 0, None

    def poll(self):
        self.polls += 1
        if self.polls < 2:
            return None
        self.live.remove(self.devices)
        self.returncode = 0
        return 0


def test_each_local_worker_gets_its_own_gpus(tmp_path, monkeypatch):
    from anomaly_freq.run import sweep

    monkeypatch.setattr(sweep, "_visible_gpus", lambda: ["0", "1", "2", "3"])
    monkeypatch.setattr(sweep.subprocess, "Popen", FakeWorker)
    monkeypatch.setattr(FakeWorker, "live", [])
    monkeypatch.setattr(FakeWorker, "started", [])
    path = tiny_sweep(tmp_path, "gpus", "weave", "grid:\n  seed: [0, 1, 2, 3, 4]\n")
    console = Console(record=True, width=200)
    summary = run_sweep(path, jobs=8, console=console, devices_per_job=2)
    assert summary["ran"] == 5 and summary["failed"] == 0
    # two workers at a time; a set freed by a finished worker goes to the next point
    assert [gpus for gpus, _ in FakeWorker.started] == ["0,1", "2,3", "0,1", "2,3", "0,1"]
    for _, command in FakeWorker.started:
        assert command[-3:-1] == ["trainer.devices=2", "trainer.strategy=ddp"]
    assert "--jobs 8 capped at 2: 4 GPUs visible, 2 per run" in console.export_text()


def test_progress_without_a_terminal_is_one_plain_line_per_point(tmp_path, monkeypatch):
    from anomaly_freq.run import sweep

    monkeypatch.setattr(sweep, "_visible_gpus", lambda: ["0"])
    monkeypatch.setattr(sweep.subprocess, "Popen", FakeWorker)
    monkeypatch.setattr(FakeWorker, "live", [])
    monkeypatch.setattr(FakeWorker, "started", [])
    path = tiny_sweep(tmp_path, "plain", "weave", "grid:\n  seed: [0, 1, 2]\n")
    out = io.StringIO()
    run_sweep(path, console=Console(file=out, width=200))
    lines = [line for line in out.getvalue().splitlines() if " points, ETA " in line]
    assert [line.split(",")[0] for line in lines] == ["1/3 points", "2/3 points", "3/3 points"]
    assert lines[-1].endswith("ETA 0:00:00: done seed=2 category=weave")
    assert "\x1b" not in out.getvalue()  # no cursor movement or colour in a log


def test_bad_devices_per_job(tmp_path, monkeypatch, capsys):
    from anomaly_freq.run import sweep

    path = tiny_sweep(tmp_path, "gpus", "weave")
    monkeypatch.setattr(sweep, "_visible_gpus", lambda: ["0", "1"])
    assert main(["sweep", str(path), "--devices-per-job", "3", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "--devices-per-job 3" in err and "the 2 visible (0,1)" in err
    assert "--devices-per-job 2 or less" in err
    assert main(["sweep", str(path), "--executor", "slurm", "--devices-per-job", "2"]) == 2
    assert "on SLURM set gpus_per_node and tasks_per_node" in capsys.readouterr().err


def test_results_export_and_tables(tmp_path, capsys):
    runs = tmp_path / "runs"
    result = run_cli(["run", "dataset.category=washer", f"output.root={runs}", *TINY_SYNTHETIC],
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    frame = load_results(runs)
    assert set(frame["metric"]) >= {"image_auroc", "pixel_auroc"}
    assert (frame["method"] == "freqstat").all() and (frame["category"] == "washer").all()
    assert (frame["preset"] == "freqstat").all()
    for suffix in ("csv", "parquet"):
        out = run_cli(["results", "--root", str(runs), "--export", f"r.{suffix}"], cwd=tmp_path)
        assert out.returncode == 0, out.stderr
    assert len(pd.read_parquet(tmp_path / "r.parquet")) == len(frame)

    paper = tmp_path / "experiments" / "fair"
    paper.mkdir(parents=True)
    (paper / "table1.yaml").write_text("""
name: fair/table1
title: FAIR Table 1
overrides: [method=freqstat, dataset=mvtec_ad]
grid: {dataset.category: all, seed: [0]}
published: {source: fair, table: "Table 1: MVTec AD image-level AUROC", method: FAIR,
            metrics: [image_auroc]}
deviations: [an example deviation]
""")
    tables_command = ["tables", "--root", str(runs), "--experiments",
                      str(tmp_path / "experiments"), "--out", str(tmp_path / "tables")]
    assert main(tables_command) == 2
    assert "experiments/published: run from a clone" in capsys.readouterr().err
    shutil.copytree(PUBLISHED_DIR, tmp_path / "experiments" / "published")
    assert main(tables_command) == 0
    text = (tmp_path / "tables" / "fair__table1.md").read_text()
    assert "| carpet | 92.9 | **100.0** | 95.6 |" in text  # as published, best in bold
    assert "not run" in text and "Deviation: an example deviation" in text
    assert text.index("| carpet") < text.index("| bottle") < text.index("| mean texture")
    assert "98.6" in text  # FAIR's printed MVTec mean
    synthetic = (tmp_path / "tables" / "synthetic__cross_method.md").read_text()
    assert "| washer |" in synthetic and "freqstat" in synthetic
    assert (tmp_path / "tables" / "fair__table1.tex").read_text().count(r"\textbf") >= 15
    assert len(list((tmp_path / "tables").glob("*__*.md"))) == 2


def test_results_group_by_configuration_and_merge_only_seeds(tmp_path, monkeypatch):
    from anomaly_freq import cli
    from anomaly_freq.config import load_config
    from anomaly_freq.run.engine import run

    runs = tmp_path / "runs"
    base = [*TINY_SYNTHETIC, "dataset.category=weave", f"output.root={runs}",
            "output.report_images=0", "output.save_checkpoint=false"]
    for extra in (["seed=0"], ["seed=1"], ["seed=0", "dataset.shots=4"], ["seed=0", "method.d0=8"]):
        run(load_config([*base, *extra]))
    assert main(["results", "--root", str(runs), "--export", str(tmp_path / "groups.csv"),
                 "--grouped"]) == 0
    groups = pd.read_csv(tmp_path / "groups.csv", dtype=str)
    # shots tell the 4-shot run apart; method.d0 the two groups that agree on every shown key;
    # what all groups share (method, category, image size, ...) and the seed are no columns
    assert list(groups.columns[:4]) == ["shots", "method.d0", "n", "image_auroc_mean"]
    assert "seed" not in groups.columns and "category" not in groups.columns
    assert sorted(zip(groups["shots"], groups["method.d0"], groups["n"], strict=True)) == [
        ("4", "16", "1"), ("all", "16", "2"), ("all", "8", "1")]
    frame = load_results(runs)
    full = frame[(frame["metric"] == "image_auroc") & frame["shots"].isna()]
    (seeds,) = [runs for _, runs in full.groupby("group") if len(runs) == 2]
    assert sorted(seeds["seed"]) == [0, 1]
    merged = groups[groups["n"] == "2"].iloc[0]
    assert float(merged["image_auroc_mean"]) == pytest.approx(seeds["value"].mean())
    assert float(merged["image_auroc_std"]) == pytest.approx(seeds["value"].std())

    monkeypatch.setattr(cli, "console", Console(record=True, width=300))
    assert main(["results", "--root", str(runs)]) == 0
    printed = cli.console.export_text()
    header = next(line for line in printed.splitlines() if "shots" in line)
    assert [c.strip() for c in header.strip("┃ ").split("┃")][:4] == [
        "shots", "method.d0", "n", "image_auroc"]
    assert "same in every group: method freqstat · preset freqstat · dataset synthetic" in printed


def test_a_sweeps_own_table(tmp_path):
    from anomaly_freq.config import load_config
    from anomaly_freq.run.engine import run

    runs = tmp_path / "runs"
    path = tiny_sweep(tmp_path, "mine/cutoff", "weave", """  - output.report_images=0
  - output.save_checkpoint=false
grid:
  method.d0: [8, 16]
  dataset.category: [weave, chip]
  seed: [0, 1]
""")
    points = {(dict(p.values)["method.d0"], p.category, dict(p.values)["seed"]): p
              for p in expand(load_sweep(path))}
    auroc = {key: 100 * run(load_config(list(points[key].overrides)))[0].metrics["image_auroc"]
             for key in [("8", "weave", "0"), ("8", "weave", "1"), ("8", "chip", "0"),
                         ("16", "weave", "0")]}
    assert main(["tables", str(path)]) == 0
    written = runs / "tables" / "mine__cutoff.grid.csv"  # under the sweep's run root
    table = pd.read_csv(written, dtype=str).set_index(["metric", "method.d0"])
    assert list(table.columns) == ["weave", "chip", "mean"]
    weave = [auroc[("8", "weave", "0")], auroc[("8", "weave", "1")]]
    mean, std = statistics.fmean(weave), statistics.stdev(weave)
    chip = auroc[("8", "chip", "0")]
    assert list(table.loc[("image_auroc", "8")]) == [
        f"{mean:.1f} ± {std:.1f}", f"{chip:.1f} (1/2 seeds)", f"{(mean + chip) / 2:.1f}"]
    assert list(table.loc[("image_auroc", "16")]) == [
        f"{auroc[('16', 'weave', '0')]:.1f} (1/2 seeds)", "not run", "1/2 categories"]
    markdown = written.with_suffix(".md").read_text()
    assert "| method.d0 | weave | chip | mean |" in markdown and "pixel_aupro" in markdown

    assert main(["tables", "--sweep", str(path), "--out", str(tmp_path / "elsewhere")]) == 0
    assert (tmp_path / "elsewhere" / "mine__cutoff.grid.md").read_text() == markdown


def test_tables_leave_a_clean_clone_clean(tmp_path):
    repo = tmp_path / "clone"
    source = Path(__file__).resolve().parents[1]
    shutil.copytree(source / "experiments" / "published", repo / "experiments" / "published")
    (repo / "experiments" / "synthetic").mkdir()
    shutil.copy(source / "experiments" / "synthetic" / "cross_method.yaml",
                repo / "experiments" / "synthetic")
    shutil.copytree(source / "docs" / "tables", repo / "docs" / "tables")
    shutil.copy(source / ".gitignore", repo)

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                              cwd=repo, capture_output=True, text=True, check=True).stdout

    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "clone")
    result = run_cli(["tables"], cwd=repo)
    assert result.returncode == 0, result.stderr
    assert git("status", "--porcelain") == ""
    index = (repo / "runs" / "tables" / "README.md").read_text()  # under the ignored run root
    assert "(synthetic__cross_method.md)" in index


def test_summary_table_averages_over_datasets(tmp_path):
    # FAIR Table 5's layout: one row per published method/setting, a column per metric, our
    # value the mean over datasets of the per-dataset category means, shown once all ran.
    runs = tmp_path / "runs"
    path = write_sweep(tmp_path, f"""
name: fair/table5
overrides:
{TINY}
  - output.root={runs}
grid: {{dataset: [synthetic], dataset.category: [washer, chip], seed: [0]}}
settings: {{full: [], c64: [method.d0=8.0]}}
published: {{source: fair, table: "Table 5: mean over MVTec AD and VisA plus efficiency",
             method: FAIR, layout: summary, metrics: [image_auroc, fps, params_mb]}}
""")

    def table():
        write_tables([path], load_results(runs), tmp_path / "tables")
        return (tmp_path / "tables" / "fair__table5.md").read_text()

    for category in ("washer", "chip"):
        if category == "chip":
            assert "| reproduced full | 1/2 runs | not measured |" in table()
        result = run_cli(["run", f"dataset.category={category}", f"output.root={runs}",
                          *TINY_SYNTHETIC], cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    frame = load_results(runs)
    auroc = 100 * frame[frame["metric"] == "image_auroc"]["value"].mean()
    text = table()
    plain = text.replace("**", "")
    assert f"| reproduced full | {auroc:.1f} ({auroc - 97.7:+.1f}) | not measured | 0.0 (-65.8) |" \
        in plain
    assert "| reproduced c64 | not run | not measured |" in plain
    assert "| FAIR (c32) | 96.4 | 132.0 | 4.1 |" in plain
    # the best per column is bold, for the accuracy metrics only
    best = f"**{auroc:.1f} (" if auroc > 97.7 else "| **97.7** |"
    assert best in text and text.count("**") == 2


def test_best_on_test_gets_its_own_column(tmp_path):
    path = write_sweep(tmp_path, """
name: ocrgan/oracle
overrides: [dataset=synthetic]
grid: {dataset.category: [weave, chip], seed: [0, 1]}
published: {source: ocrgan, table: "Table I: MVTec AD image AUROC vs SOTA", method: OCR-GAN,
            metrics: [image_auroc]}
""")
    points = expand(load_sweep(path))
    rows = []
    for i, p in enumerate(points):
        for metric, value in (("image_auroc", 0.60 + 0.1 * i), ("best_on_test_image_auroc", 0.95)):
            rows.append({"method": "freqstat", "dataset": "synthetic", "category": p.category,
                         "seed": i % 2, "metric": metric, "value": value,
                         "config_hash": p.hash, "model_selection": "last_epoch"})
    write_tables([path], pd.DataFrame(rows, columns=COLUMNS), tmp_path / "tables")
    text = (tmp_path / "tables" / "ocrgan__oracle.md").read_text()
    assert "| category | reproduced | Δ vs OCR-GAN | best epoch on test |" in text
    weave = [p for p in points if p.category == "weave"]
    assert len(weave) == 2
    # weave holds the first two points: 60 % and 70 %, best-on-test 95 % each; never bold
    assert "| weave | **65.0 ± 7.1** |  | 95.0 ± 0.0 |" in text
    assert "as the paper's code chose its model" in text


def test_cross_method_columns_are_named_by_preset(tmp_path):
    rows = [{"method": method, "preset": preset, "variant": variant, "dataset": "synthetic",
             "category": "weave", "metric": "image_auroc", "value": 0.5, "config_hash": variant}
            for method, preset, variant in [
                ("fair", "fair_fast", "a" * 16), ("fair", "fair", "b" * 16),
                ("dfd", "dfd_fast", "c" * 16), ("dfd", "dfd_fast", "d" * 16)]]
    write_tables([], pd.DataFrame(rows, columns=COLUMNS), tmp_path)
    text = (tmp_path / "synthetic__cross_method.md").read_text()
    assert ("| category | dfd_fast (cccccc) | dfd_fast (dddddd) | fair_fast | fair |" in text
            or "| category | dfd_fast (cccccc) | dfd_fast (dddddd) | fair | fair_fast |" in text)


def test_cross_method_table_keeps_data_settings_apart(tmp_path):
    from anomaly_freq.config import load_config
    from anomaly_freq.run.store import data_settings

    assert data_settings(load_config(["dataset.category=weave", "seed=3"])) == ""
    subtle = load_config(["dataset.defect_strength=0.3", "dataset.n_train=12"])
    assert data_settings(subtle) == "n_train=12, defect_strength=0.3"
    rows = [{"method": "freqstat", "preset": "freqstat", "variant": variant, "data": data,
             "dataset": "synthetic", "category": "weave", "metric": "image_auroc",
             "value": value, "config_hash": variant}
            for variant, data, value in [("a" * 16, "", 0.9), ("b" * 16, "defect_strength=0.3",
                                                              0.6)]]
    write_tables([], pd.DataFrame(rows, columns=COLUMNS), tmp_path)
    text = (tmp_path / "synthetic__cross_method.md").read_text()
    shipped = text.index("Synthetic set — image_auroc\n")
    faint = text.index("Synthetic set — image_auroc (defect_strength=0.3)")
    assert shipped < faint
    assert "| weave | **90.0** |" in text[shipped:faint] and "| weave | **60.0** |" in text[faint:]
    assert "freqstat (" not in text  # one column per block, so no hash suffix


def test_summary_mean_is_a_mean_of_dataset_means(tmp_path):
    path = write_sweep(tmp_path, """
name: fair/t5
overrides: [method=fair, dataset=mvtec_ad, model.base_width=4]
grid: {dataset.category: [bottle, cable, candle], seed: [0]}
published: {source: fair, table: "Table 5: mean over MVTec AD and VisA plus efficiency",
            method: FAIR, layout: summary, metrics: [image_auroc, params_mb]}
""")
    points = expand(load_sweep(path))
    # two categories of one dataset and one of another: (mean(0.6, 0.8) + 1.0) / 2 = 0.85,
    # where pooling the three runs would give 0.8
    values = {"bottle": ("mvtec_ad", 0.6), "cable": ("mvtec_ad", 0.8), "candle": ("visa", 1.0)}
    rows = [{"method": "fair", "dataset": values[p.category][0], "category": p.category,
             "metric": "image_auroc", "value": values[p.category][1], "config_hash": p.hash}
            for p in points]
    write_tables([path], pd.DataFrame(rows, columns=COLUMNS), tmp_path / "tables")
    text = (tmp_path / "tables" / "fair__t5.md").read_text().replace("**", "")
    assert "| reproduced full | 85.0 (-12.7) | 0.1 (-65.7) |" in text  # FAIR c=4: 68,547

    rows[0]["metric"] = "image_ap"  # bottle ran but gives no image_auroc
    write_tables([path], pd.DataFrame(rows, columns=COLUMNS), tmp_path / "tables")
    assert "| reproduced full | n/a |" in (tmp_path / "tables" / "fair__t5.md").read_text()
    write_tables([path], pd.DataFrame(rows[1:], columns=COLUMNS), tmp_path / "tables")
    assert "| reproduced full | 2/3 runs |" in (tmp_path / "tables" / "fair__t5.md").read_text()


def test_dry_run_prints_commands_a_shell_accepts(tmp_path):
    path = write_sweep(tmp_path, f"""
name: quoted
overrides:
{TINY}
  - "eval.best_on_test_by=[image_auroc,pixel_auroc]"
grid: {{dataset.category: [weave]}}
""")
    console = Console(record=True, width=400)
    run_sweep(path, dry_run=True, console=console)
    line = [t for t in console.export_text().splitlines() if "afreq run" in t][0]
    assert "'eval.best_on_test_by=[image_auroc,pixel_auroc]'" in line
    assert shlex.split(line)[2:] == [
        *TINY_SYNTHETIC, "eval.best_on_test_by=[image_auroc,pixel_auroc]", "dataset.category=weave"]
