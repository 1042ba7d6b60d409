"""What a large study costs the platform, measured on a simulated Ray cluster on this machine.

    python benchmarks/scale.py [--quick] [--cells 100x8x5,300x32x10,1000x64x20] [--epochs 3] [--nodes 4]
                               [--trials N --slots N --epoch-seconds S] [--optuna-storage sqlite|journal]
                               [--out FILE] [--figure FILE]

Each cell is one study, run by ``study/run.py`` exactly as a user runs it (the driver is a subprocess of this
script, so its CPU time and memory are its own) against a Ray cluster of ``--nodes`` nodes started with
``ray start`` on 127.0.0.1 that together advertise ``slots`` logical CPUs (more than the machine has). Every
trial is a real Ray Tune trial through the study's real trainable, with ``train.simulate_seconds`` set: each
epoch's model compute is a sleep (``model/simulate.py``) while the reports, checkpoints, trial records and
Optuna ask/tell are the platform's own work. The space: random sampler over ``i2srm.delta`` (uniform 0-1) and
``i2srm.kl_weight`` (loguniform 0.01-2), one seed, ``--epochs`` epochs, no scheduler, 1 CPU per trial,
``max_concurrent`` = slots, every default report (trials.csv, summary, sensitivity, importance, tensorboard).

A cell is ``TRIALSxSLOTSxEPOCH_SECONDS``. The default grid (49 minutes here, 27 of them the last cell):

    100x8x5      100 trials,  8 slots, 15-s trials (3 epochs x 5 s)
    300x32x10    300 trials, 32 slots, 30-s trials
    1000x64x20  1000 trials, 64 slots, 60-s trials (the target's case)

``--quick`` runs ``100x8x2`` (6-s trials, 3-5 minutes here). Per cell it measures: trials per minute against
the ideal ``slots / trial duration``; the driver's CPU seconds per trial (all of it, and only while trials
ran); its peak RSS; the time from the last trial's end to the last report written; the size of
``results/<study>`` and of its ``optuna.db``; and the time of each report builder on the finished study's
records, in a fresh process. Writes ``results/benchmarks/scale.json`` and ``results/benchmarks/scale.png``.
The machine needs ``ray`` on PATH beside this Python; nodes are stopped by their process group, never with
``ray stop``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from model.config import ALLOW_SIMULATE_ENV  # noqa: E402  (model.config imports no torch)
from study.local_ray import child_env, free_port  # noqa: E402  (imports no ray at module level)

RUN = ROOT / "study" / "run.py"
REPORT = ROOT / "study" / "report.py"
RAY = str(Path(sys.executable).parent / "ray")
DEFAULT_CELLS = "100x8x5,300x32x10,1000x64x20"
QUICK_CELLS = "100x8x2"
# The targets.
TARGET_DRIVER_CPU_MS = 50.0
TARGET_THROUGHPUT = 0.90  # of ideal, at 64 slots with 60-s trials
TARGET_REPORTS_S = 60.0  # every report of a 1,000-trial study
# Memory a slot's trial process takes on this machine (a Ray worker without torch), for the pre-flight check.
SLOT_MIB = 200
FIXED_MIB = 2500  # the driver (with torch loaded by its data pre-flight) and the nodes' own processes
POLL_S = 1.0
MEMORY_WAIT_S = 900.0
REPORT_TOTALS = ("build_reports", "imports_and_build", "report_py_total")


@dataclass(frozen=True)
class Cell:
    trials: int
    slots: int
    epoch_seconds: float
    epochs: int

    @property
    def name(self) -> str:
        return f"{self.trials}x{self.slots}x{self.epoch_seconds:g}"

    @property
    def trial_seconds(self) -> float:
        return self.epochs * self.epoch_seconds


def parse_cells(text: str, epochs: int) -> list[Cell]:
    cells = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        m = re.fullmatch(r"(\d+)x(\d+)x(\d+(?:\.\d+)?)", item)
        if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
            raise SystemExit(f"error: --cells item {item!r}: expected TRIALSxSLOTSxEPOCH_SECONDS, e.g. 1000x64x20")
        cells.append(Cell(int(m.group(1)), int(m.group(2)), float(m.group(3)), epochs))
    if not cells:
        raise SystemExit("error: --cells names no cell")
    return cells


def log(msg: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def bench_env() -> dict[str, str]:
    return child_env(ROOT, **{ALLOW_SIMULATE_ENV: "1", "PYTHONUNBUFFERED": "1"})


# ---------------------------------------------------------------------------------------------- the cluster


def session_members(sid: int) -> list[int]:
    """The processes of session ``sid`` (read from /proc): what a process started with ``start_new_session``
    left running, Ray's daemons included."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    out.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                continue
    return out


def kill_session(proc: subprocess.Popen) -> None:
    """Kill the session ``proc`` leads (it was started with ``start_new_session``), every member of it."""
    for pid in [proc.pid, *session_members(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=30)
    except (subprocess.TimeoutExpired, ChildProcessError):
        pass


@dataclass
class SimCluster:
    """``nodes`` Ray nodes on 127.0.0.1 (a head and workers) whose logical CPUs add up to the cell's slots."""

    address: str
    temp_dir: Path
    cpus: list[int]
    procs: list[subprocess.Popen] = field(default_factory=list)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            kill_session(proc)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


_COUNT_NODES = """
import json, ray
ray.init(address=%r, logging_level="ERROR", log_to_driver=False)
print(json.dumps(sum(1 for n in ray.nodes() if n["Alive"])))
"""
STARTED = "Ray runtime started"  # what `ray start` prints once its node has joined


def start_cluster(slots: int, nodes: int, log_dir: Path, timeout: float = 180.0) -> SimCluster:
    """A head, then each worker in turn (several joining at once can time out on a loaded 2-core machine);
    a node is up when its ``ray start`` says so, and the whole cluster is checked once with ``ray.nodes()``."""
    nodes = max(1, min(nodes, slots))
    cpus = [slots // nodes + (1 if i < slots % nodes else 0) for i in range(nodes)]
    port = free_port()
    address = f"127.0.0.1:{port}"
    temp_dir = Path(tempfile.mkdtemp(prefix="rays-", dir="/tmp"))  # Ray's socket paths must stay short
    cluster = SimCluster(address, temp_dir, cpus)
    common = ["--node-ip-address=127.0.0.1", "--num-gpus=0", "--disable-usage-stats",
              "--object-store-memory=100000000", "--block"]
    try:
        for i, n in enumerate(cpus):
            args = ([f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp_dir}"] if i == 0
                    else [f"--address={address}"])
            log_file = log_dir / f"node{i}.log"
            cluster.procs.append(subprocess.Popen(
                [RAY, "start", *(["--head"] if i == 0 else []), *args, f"--num-cpus={n}", *common],
                stdout=log_file.open("wb"), stderr=subprocess.STDOUT, env=bench_env(), start_new_session=True))
            wait_for_log(cluster.procs[-1], log_file, timeout)
        proc = subprocess.run([sys.executable, "-c", _COUNT_NODES % address], capture_output=True, text=True,
                              env=bench_env(), timeout=timeout)
        alive = int(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else 0
        if alive < nodes:
            raise RuntimeError(f"the Ray cluster at {address} has {alive} of {nodes} nodes alive: "
                               f"{proc.stderr[-1000:]}")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def wait_for_log(proc: subprocess.Popen, log_file: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if STARTED in log_file.read_text(encoding="utf-8", errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"`ray start` exited ({proc.returncode}) before its node was up; see {log_file}")
        time.sleep(1.0)
    raise TimeoutError(f"`ray start` did not bring its node up in {timeout:.0f} s; see {log_file}")


# ---------------------------------------------------------------------------------------------- one cell


SPACE = """\
study: {name}
description: benchmarks/scale.py cell {cell} ({trials} trials, {slots} slots, {epochs} epochs of a {seconds:g}-s
  stand-in each); simulated trials, not a result about I2SRM.
trainer:
  data.name: synthetic-mner
  train.epochs: {epochs}
  train.simulate_seconds: {seconds}
search:
  i2srm.delta: {{uniform: [0.0, 1.0]}}
  i2srm.kl_weight: {{loguniform: [0.01, 2.0]}}
sampler: random
sampler_seed: 0
seeds: [1]
trials: {trials}
scheduler: none
resources: {{cpus: 1, gpus: 0}}
max_concurrent: {slots}
progress_interval: 10
{storage}"""


def read_proc(pid: int) -> tuple[float, float] | None:
    """(CPU seconds, peak RSS MiB) of a live process, from /proc; None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    m = re.search(r"^VmHWM:\s+(\d+) kB", status, re.M)
    return cpu, (int(m.group(1)) / 1024 if m else 0.0)


_PROGRESS = re.compile(r"\[study [^\]]+\] (\d+)/(\d+) done, (\d+) running")


def last_progress(log_file: Path) -> str:
    try:
        with log_file.open("rb") as f:
            f.seek(max(0, log_file.stat().st_size - 8192))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    found = _PROGRESS.findall(text)
    return f"{found[-1][0]}/{found[-1][1]} trials done, {found[-1][2]} running" if found else "starting"


@dataclass
class DriverRun:
    returncode: int
    wall_seconds: float
    cpu_seconds: float
    peak_rss_mib: float
    timeline: list[tuple[float, float]]  # (seconds since spawn, CPU seconds so far)
    started_at: float  # unix time of the spawn


def run_driver(args: list[str], log_file: Path, label: str, progress_every: float,
               profile: Path | None = None) -> DriverRun:
    """Run ``study/run.py`` as a child and measure it: CPU from ``wait4``'s rusage (the child's own and its
    waited-for children's), the peak RSS from ``/proc/PID/status`` ``VmHWM`` polled every second (``ru_maxrss``
    of a forked child can carry this process's own peak), and a CPU timeline to split the phases."""
    started_at = time.time()
    t0 = time.monotonic()
    prefix = ["-m", "cProfile", "-o", str(profile)] if profile is not None else []
    proc = subprocess.Popen([sys.executable, *prefix, str(RUN), *args], cwd=ROOT, env=bench_env(),
                            stdout=log_file.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    timeline: list[tuple[float, float]] = []
    peak = 0.0
    next_print = time.monotonic() + progress_every
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            sample = read_proc(proc.pid)
            if sample is not None:
                timeline.append((time.monotonic() - t0, sample[0]))
                peak = max(peak, sample[1])
            if time.monotonic() >= next_print:
                cpu = timeline[-1][1] if timeline else 0.0
                log(f"{label}: {last_progress(log_file)}; {time.monotonic() - t0:.0f} s, driver CPU {cpu:.1f} s, "
                    f"peak RSS {peak:.0f} MiB")
                next_print += progress_every
            time.sleep(POLL_S)
    except BaseException:
        kill_session(proc)
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    cpu = usage.ru_utime + usage.ru_stime
    timeline.append((wall, cpu))
    return DriverRun(proc.returncode, wall, cpu, max(peak, 0.0), timeline, started_at)


def cpu_at(timeline: list[tuple[float, float]], t: float) -> float:
    """Driver CPU seconds at ``t`` seconds after the spawn (linear between the 1-s samples)."""
    prev = (0.0, 0.0)
    for point in timeline:
        if point[0] >= t:
            span = point[0] - prev[0]
            return prev[1] + (point[1] - prev[1]) * ((t - prev[0]) / span if span > 0 else 1.0)
        prev = point
    return timeline[-1][1] if timeline else 0.0


def trial_times(study_dir: Path) -> tuple[list[dict[str, float]], str]:
    """Per trial: start and end (unix seconds) and ``time_total_s``, and where they came from.

    From each trial's last result in Ray Tune's ``result.json`` under ``ray/`` (``timestamp``: when the trial
    process reported it, whole seconds); without those files (Tune's loggers off), from the study's records:
    the end is when the driver stored the last epoch (``epochs.jsonl``'s mtime), the start that minus the
    record's ``wall_seconds``."""
    out = []
    for path in sorted((study_dir / "ray").rglob("result.json")):
        last = None
        with path.open("rb") as f:
            for line in f:
                if line.strip():
                    last = line
        if last is None:
            continue
        row = json.loads(last)
        total = float(row.get("time_total_s") or 0.0)
        end = float(row["timestamp"])
        out.append({"start": end - total, "end": end, "seconds": total})
    if out:
        return out, "ray result.json"
    for folder in sorted((study_dir / "trials").iterdir()):
        record, epochs = folder / "trial.json", folder / "epochs.jsonl"
        if record.is_file() and epochs.is_file():
            total = float(json.loads(record.read_text(encoding="utf-8")).get("wall_seconds") or 0.0)
            end = epochs.stat().st_mtime
            out.append({"start": end - total, "end": end, "seconds": total})
    return out, "study records"


NOT_REPORTS = ("optuna.db", "optuna.db-wal", "optuna.db-shm", "ray", "trials", ".report.lock")


def last_report_written(study_dir: Path) -> float:
    """Unix time of the newest entry at the top of the study folder that is a report (``REPORT.md``, the
    CSVs, figures, ``tensorboard/``), not a record, Ray's folder or the Optuna database."""
    return max(p.stat().st_mtime for p in study_dir.iterdir() if p.name not in NOT_REPORTS)


def folder_bytes(path: Path) -> tuple[int, int]:
    """(apparent bytes, files) under ``path``."""
    size = files = 0
    for root, _, names in os.walk(path):
        for n in names:
            try:
                size += (Path(root) / n).lstat().st_size
                files += 1
            except OSError:
                continue
    return size, files


def study_sizes(study_dir: Path) -> dict[str, Any]:
    total, files = folder_bytes(study_dir)
    parts = {}
    for child in sorted(study_dir.iterdir()):
        parts[child.name] = folder_bytes(child)[0] if child.is_dir() else child.stat().st_size
    db = sum(parts.get(n, 0) for n in ("optuna.db", "optuna.db-wal", "optuna.db-shm"))
    big = {k: v for k, v in parts.items() if k in ("ray", "trials", "tensorboard", "optuna.db", "optuna.db-wal")}
    return {"study_dir_bytes": total, "study_dir_files": files, "optuna_db_bytes": db, "parts_bytes": big}


TIME_REPORTS = """
import importlib, json, pkgutil, sys, time
from functools import wraps
import study.reports as reports
times, depth = {}, [0]

def timer(name, fn):
    @wraps(fn)
    def timed(*args, **kwargs):
        if depth[0]:  # a builder called by another: counted in the outer one
            return fn(*args, **kwargs)
        depth[0] += 1
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            depth[0] -= 1
            times[name] = times.get(name, 0.0) + time.perf_counter() - t
    return timed

t0 = time.perf_counter()
for info in pkgutil.iter_modules(reports.__path__):
    t = time.perf_counter()
    module = importlib.import_module(f"study.reports.{info.name}")
    times["import " + info.name] = time.perf_counter() - t
    for attr, value in list(vars(module).items()):
        if attr.startswith(("write_", "plot_")) and callable(value) and value.__module__ == module.__name__:
            setattr(module, attr, timer(f"{info.name}.{attr}", value))
reports.load_study = timer("load_study", reports.load_study)
t = time.perf_counter()
reports.build_reports(sys.argv[1])
times["build_reports"] = time.perf_counter() - t
times["imports_and_build"] = time.perf_counter() - t0
print(json.dumps(times))
"""


def time_reports(study_dir: Path) -> dict[str, float]:
    """``build_reports`` on the finished study's records in a fresh process, with each builder of
    ``study/reports`` (every module's ``write_*``/``plot_*`` function, and ``load_study``) timed on its own as
    ``build_reports`` calls it (a builder called by another counts in the outer one), every module's import
    timed before; then ``study/report.py`` as a user runs it, whole, in another process."""
    proc = subprocess.run([sys.executable, "-c", TIME_REPORTS, str(study_dir)], cwd=ROOT, env=bench_env(),
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"timing the reports of {study_dir} failed: {proc.stderr[-2000:]}")
    times = {k: round(v, 3) for k, v in json.loads(proc.stdout.strip().splitlines()[-1]).items()}
    t = time.monotonic()
    whole = subprocess.run([sys.executable, str(REPORT), str(study_dir)], cwd=ROOT, env=bench_env(),
                           capture_output=True, text=True, timeout=1800)
    if whole.returncode != 0:
        raise RuntimeError(f"study/report.py {study_dir} failed: {whole.stderr[-2000:]}")
    times["report_py_total"] = round(time.monotonic() - t, 3)
    return times


def mem_available_mib() -> float:
    m = re.search(r"^MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    return int(m.group(1)) / 1024 if m else math.inf


def wait_for_memory(cell: Cell, timeout: float = MEMORY_WAIT_S) -> None:
    """The machine is shared: wait (up to ``timeout``) until the cell's estimated memory is available."""
    need = FIXED_MIB + SLOT_MIB * cell.slots
    deadline = time.monotonic() + timeout
    while (have := mem_available_mib()) < need:
        if time.monotonic() > deadline:
            raise RuntimeError(f"cell {cell.name} needs about {need / 1024:.1f} GiB of memory ({cell.slots} trial "
                               f"processes); {have / 1024:.1f} GiB is available. Use fewer slots (--cells).")
        log(f"cell {cell.name}: waiting for {need / 1024:.1f} GiB of memory ({have / 1024:.1f} GiB available)")
        time.sleep(30)


def run_cell(cell: Cell, nodes: int, work_dir: Path, progress_every: float, profile: bool = False,
             optuna_storage: str = "sqlite") -> dict[str, Any]:
    wait_for_memory(cell)
    folder = work_dir / cell.name
    shutil.rmtree(folder, ignore_errors=True)  # this script's own output from an earlier run
    folder.mkdir(parents=True)
    name = f"scale-{cell.name}".replace(".", "_")
    space = folder / "space.yaml"
    journal = folder / "optuna.journal"  # beside the study folder: the space names it before the study exists
    storage = f"optuna_storage: journal:{journal}\n" if optuna_storage == "journal" else ""
    space.write_text(SPACE.format(name=name, cell=cell.name, trials=cell.trials, slots=cell.slots,
                                  epochs=cell.epochs, seconds=cell.epoch_seconds, storage=storage), encoding="utf-8")
    results = folder / "results"
    load_before = os.getloadavg()[0]
    log(f"cell {cell.name}: starting {min(nodes, cell.slots)} Ray nodes with {cell.slots} logical CPUs in all")
    t_cluster = time.monotonic()
    cluster = start_cluster(cell.slots, nodes, folder)
    cluster_s = time.monotonic() - t_cluster
    try:
        log(f"cell {cell.name}: cluster up in {cluster_s:.0f} s (CPUs per node {cluster.cpus}); running the study "
            f"({cell.trials} trials of {cell.trial_seconds:g} s, {cell.slots} at a time)")
        run = run_driver(["--space", str(space), "--address", cluster.address, "--name", name,
                          "--results-dir", str(results)], folder / "driver.log", cell.name, progress_every,
                         folder / "driver.prof" if profile else None)
        load_after = os.getloadavg()[0]
    finally:
        cluster.stop()
    study_dir = results / name
    if run.returncode != 0:
        tail = (folder / "driver.log").read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"cell {cell.name}: study/run.py exited {run.returncode}:\n{tail}")
    log(f"cell {cell.name}: study done in {run.wall_seconds:.0f} s; timing the report builders")
    times, times_from = trial_times(study_dir)
    statuses: dict[str, int] = {}
    for p in (study_dir / "trials").glob("*/trial.json"):
        s = json.loads(p.read_text(encoding="utf-8"))["status"]
        statuses[s] = statuses.get(s, 0) + 1
    first_start = min(t["start"] for t in times)
    last_end = max(t["end"] for t in times)
    span = last_end - first_start
    last_report = last_report_written(study_dir)
    driver_end = run.started_at + run.wall_seconds
    rel_first, rel_last = first_start - run.started_at, last_end - run.started_at
    running_cpu = cpu_at(run.timeline, rel_last) - cpu_at(run.timeline, rel_first)
    ideal = 60.0 * cell.slots / cell.trial_seconds
    rounds = math.ceil(cell.trials / cell.slots)
    measured = 60.0 * len(times) / span if span > 0 else math.nan
    reports = time_reports(study_dir)
    mean_s = sum(t["seconds"] for t in times) / len(times)
    return {
        "cell": cell.name, "optuna_storage": optuna_storage,
        "optuna_journal_bytes": journal.stat().st_size if journal.is_file() else None,
        "trials": cell.trials, "slots": cell.slots, "epochs": cell.epochs,
        "epoch_seconds": cell.epoch_seconds, "trial_seconds": cell.trial_seconds, "nodes": len(cluster.cpus),
        "cpus_per_node": cluster.cpus, "cluster_start_s": round(cluster_s, 1), "statuses": statuses,
        # 1-minute load average of the machine before the cluster started and when the driver ended: the
        # machine is shared, and every figure here depends on what else ran
        "load_average": [round(load_before, 2), round(load_after, 2)],
        "trials_timed": len(times), "trial_times_from": times_from,
        "driver_wall_s": round(run.wall_seconds, 1),
        "first_trial_start_s": round(rel_first, 1), "last_trial_end_s": round(rel_last, 1),
        "trials_per_min": round(measured, 2), "ideal_trials_per_min": round(ideal, 2),
        "throughput_vs_ideal": round(measured / ideal, 4),
        "throughput_vs_rounds_bound": round(measured / (60.0 * cell.trials / (rounds * cell.trial_seconds)), 4),
        "trials_per_min_end_to_end": round(60.0 * len(times) / run.wall_seconds, 2),
        "trial_seconds_mean": round(mean_s, 3), "trial_overhead_s_mean": round(mean_s - cell.trial_seconds, 3),
        "driver_cpu_s": round(run.cpu_seconds, 2),
        "driver_cpu_ms_per_trial": round(1000.0 * run.cpu_seconds / cell.trials, 1),
        "driver_cpu_s_while_trials_ran": round(running_cpu, 2),
        "driver_cpu_ms_per_trial_while_running": round(1000.0 * running_cpu / cell.trials, 1),
        "driver_cpu_s_before_first_trial": round(cpu_at(run.timeline, rel_first), 2),
        "driver_cpu_s_after_last_trial": round(run.cpu_seconds - cpu_at(run.timeline, rel_last), 2),
        "driver_peak_rss_mib": round(run.peak_rss_mib, 1),
        "last_trial_end_to_last_report_s": round(last_report - last_end, 1),
        "last_trial_end_to_driver_exit_s": round(driver_end - last_end, 1),
        **study_sizes(study_dir),
        "reports_s": reports,
        "study_dir": str(study_dir.relative_to(ROOT) if study_dir.is_relative_to(ROOT) else study_dir),
    }


# ---------------------------------------------------------------------------------------------- summary


def verdicts(cells: list[dict[str, Any]]) -> dict[str, Any]:
    cpu = [{"cell": c["cell"], "ms": c["driver_cpu_ms_per_trial"]} for c in cells]
    thr = [{"cell": c["cell"], "fraction": c["throughput_vs_ideal"]} for c in cells
           if c["slots"] == 64 and c["trial_seconds"] == 60]
    rep = [{"cell": c["cell"], "s": c["reports_s"]["report_py_total"],
            "s_in_driver": c["last_trial_end_to_last_report_s"]} for c in cells if c["trials"] >= 1000]
    return {
        "driver_cpu_ms_per_trial_at_most_50": {
            "holds": all(c["ms"] <= TARGET_DRIVER_CPU_MS for c in cpu) if cpu else None, "measured": cpu},
        "throughput_at_least_90pct_at_64_slots_60s_trials": {
            "holds": all(t["fraction"] >= TARGET_THROUGHPUT for t in thr) if thr else None, "measured": thr},
        "reports_of_1000_trials_under_60s": {
            "holds": all(r["s"] < TARGET_REPORTS_S for r in rep) if rep else None, "measured": rep},
    }


def draw(cells: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{c['trials']} trials\n{c['slots']} slots\n{c['trial_seconds']:g}-s trials" for c in cells]
    x = list(range(len(cells)))
    fig, axes = plt.subplots(2, 2, figsize=(10, 7.5), constrained_layout=True)
    ax = axes[0][0]
    ax.bar(x, [100 * c["throughput_vs_ideal"] for c in cells], color="C0")
    ax.axhline(100 * TARGET_THROUGHPUT, color="0.3", linestyle=":", label="target 90%")
    ax.set_ylabel("throughput, % of ideal (slots / trial time)")
    ax.set_ylim(0, 105)
    ax.legend(frameon=False, loc="lower right")
    ax = axes[0][1]
    ax.bar([i - 0.2 for i in x], [c["driver_cpu_ms_per_trial"] for c in cells], width=0.4, color="C1",
           label="whole run")
    ax.bar([i + 0.2 for i in x], [c["driver_cpu_ms_per_trial_while_running"] for c in cells], width=0.4,
           color="C2", label="while trials ran")
    ax.axhline(TARGET_DRIVER_CPU_MS, color="0.3", linestyle=":", label="target 50 ms")
    ax.set_ylabel("driver CPU per trial (ms)")
    ax.legend(frameon=False)
    ax = axes[1][0]
    ax.bar([i - 0.2 for i in x], [c["driver_peak_rss_mib"] for c in cells], width=0.4, color="C3",
           label="driver peak RSS (MiB)")
    ax.bar([i + 0.2 for i in x], [c["study_dir_bytes"] / 2**20 for c in cells], width=0.4, color="C4",
           label="results/<study> (MiB)")
    ax.set_ylabel("MiB")
    ax.legend(frameon=False)
    ax = axes[1][1]
    names = sorted({k for c in cells for k in c["reports_s"] if k not in REPORT_TOTALS and
                    not k.startswith("import ")})
    bottom = [0.0] * len(cells)
    for i, n in enumerate(["imports", *names]):
        vals = [sum(v for k, v in c["reports_s"].items() if k.startswith("import ")) if n == "imports"
                else c["reports_s"].get(n, 0.0) for c in cells]
        ax.bar(x, vals, bottom=bottom, color=f"C{i % 10}", hatch="//" if i >= 10 else None, label=n)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.scatter(x, [c["reports_s"]["report_py_total"] for c in cells], color="k", marker="_", s=400, zorder=3,
               label="study/report.py, whole")
    ax.set_ylabel("report build time (s)")
    ax.legend(frameon=False, fontsize=7)
    for ax in axes.flat:
        ax.set_xticks(x, labels, fontsize=8)
        ax.grid(True, axis="y", linewidth=0.3, alpha=0.5)
    fig.suptitle("Platform cost of a study on a simulated Ray cluster (benchmarks/scale.py)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/scale.py", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="A cell is " + __doc__.split("A cell is ", 1)[1])
    parser.add_argument("--quick", action="store_true", help=f"one 100-trial study ({QUICK_CELLS}), 3-5 minutes here")
    parser.add_argument("--cells", default=DEFAULT_CELLS,
                        help=f"comma-separated TRIALSxSLOTSxEPOCH_SECONDS (default {DEFAULT_CELLS})")
    parser.add_argument("--trials", type=int, help="with --slots: one cell of this many trials (replaces --cells)")
    parser.add_argument("--slots", type=int, help="with --trials: concurrent trials of that one cell")
    parser.add_argument("--epoch-seconds", type=float, default=1.0,
                        help="with --trials/--slots: the stand-in's seconds per epoch (default 1)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial (default 3)")
    parser.add_argument("--nodes", type=int, default=4, help="Ray nodes on 127.0.0.1 (default 4: a head, 3 workers)")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "results" / "benchmarks" / "scale",
                        help="where each cell's study, space and logs go (default results/benchmarks/scale)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "scale.json",
                        help="the JSON written (default results/benchmarks/scale.json)")
    parser.add_argument("--figure", type=Path, default=ROOT / "results" / "benchmarks" / "scale.png",
                        help="the figure written (default results/benchmarks/scale.png)")
    parser.add_argument("--progress-every", type=float, default=15.0, help="seconds between progress lines")
    parser.add_argument("--optuna-storage", choices=("sqlite", "journal"), default="sqlite",
                        help="the study's Optuna storage: the default SQLite file results/<study>/optuna.db, or "
                        "an Optuna journal file beside it (optuna_storage: journal:PATH; default %(default)s)")
    parser.add_argument("--profile-driver", action="store_true",
                        help="run the driver under cProfile (its main thread), writing <cell>/driver.prof; the "
                        "profiler's own cost inflates the driver's CPU figures of that run")
    args = parser.parse_args(argv)
    args.work_dir, args.out, args.figure = (p.resolve() for p in (args.work_dir, args.out, args.figure))
    if (args.trials is None) != (args.slots is None):
        parser.error("--trials and --slots go together")
    if args.epochs < 1 or args.nodes < 1 or args.epoch_seconds < 0:
        parser.error("--epochs and --nodes must be >= 1, --epoch-seconds >= 0")
    if args.trials is not None:
        if args.trials < 1 or args.slots < 1:
            parser.error("--trials and --slots must be >= 1")
        cells = [Cell(args.trials, args.slots, args.epoch_seconds, args.epochs)]
    else:
        cells = parse_cells(QUICK_CELLS if args.quick else args.cells, args.epochs)
    if not Path(RAY).is_file():
        raise SystemExit(f"error: {RAY} not found: Ray's command line must sit beside this Python")
    signal.signal(signal.SIGTERM, _terminate)  # stop the cluster and the driver on `kill` too
    log(f"{len(cells)} cell(s): {', '.join(c.name for c in cells)}; {args.nodes} nodes; results in {args.work_dir}")
    t0 = time.monotonic()
    done: list[dict[str, Any]] = []
    for i, cell in enumerate(cells, 1):
        log(f"cell {i}/{len(cells)}: {cell.name}")
        try:
            result = run_cell(cell, args.nodes, args.work_dir, args.progress_every, args.profile_driver,
                              args.optuna_storage)
        except Exception as e:  # the cells done so far are written, with the failure, before it is raised
            write_outputs(args, done, t0, failed={"cell": cell.name, "error": str(e).strip().splitlines()[0]})
            raise
        done.append(result)
        log(f"cell {cell.name}: {result['trials_per_min']:.1f} trials/min of ideal "
            f"{result['ideal_trials_per_min']:.1f} ({100 * result['throughput_vs_ideal']:.1f}%), driver CPU "
            f"{result['driver_cpu_ms_per_trial']:.0f} ms/trial, peak RSS {result['driver_peak_rss_mib']:.0f} MiB, "
            f"reports {result['reports_s']['report_py_total']:.1f} s")
        doc = write_outputs(args, done, t0)
    for key, v in doc["verdicts"].items():
        log(f"target {key}: {'not measured' if v['holds'] is None else 'holds' if v['holds'] else 'does not hold'}"
            f" {v['measured']}")
    return 0


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def write_outputs(args: argparse.Namespace, done: list[dict[str, Any]], t0: float,
                  failed: dict[str, str] | None = None) -> dict[str, Any]:
    """The JSON (and the figure, when a cell is done), rewritten after every cell."""
    from model.provenance import code_revision

    doc = {
        "benchmark": "benchmarks/scale.py",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/scale.py", *sys.argv[1:]]),
        "code_revision": code_revision(),
        "machine": {"cpus": os.cpu_count(), "memory_gib": round(_mem_total_gib(), 1),
                    "python": platform.python_version(), "ray": _version("ray"), "optuna": _version("optuna")},
        "space": {"sampler": "random", "search": {"i2srm.delta": "uniform [0, 1]",
                                                  "i2srm.kl_weight": "loguniform [0.01, 2]"},
                  "seeds": [1], "scheduler": "none", "resources": {"cpus": 1, "gpus": 0}},
        "targets": {"driver_cpu_ms_per_trial_max": TARGET_DRIVER_CPU_MS,
                    "throughput_vs_ideal_min_at_64_slots_60s": TARGET_THROUGHPUT,
                    "reports_1000_trials_max_s": TARGET_REPORTS_S},
        "total_seconds": round(time.monotonic() - t0, 1),
        "cells": done,
        "verdicts": verdicts(done),
    }
    if failed:
        doc["failed"] = failed
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, args.out)
    if done:
        draw(done, args.figure)
    log(f"wrote {args.out}" + (f" and {args.figure}" if done else "") + f" ({doc['total_seconds']:.0f} s so far)")
    return doc


def _mem_total_gib() -> float:
    m = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    return int(m.group(1)) / 2**20 if m else math.nan


def _version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    sys.exit(main())
