"""What the test suite costs in CPU: the machine's busy CPU seconds while ``python -m pytest`` runs, and each
test module's wall time and the CPU its pytest process and reaped children used.

    python benchmarks/suite_cpu.py [--out results/benchmarks/suite_cpu.json] [-- PYTEST_ARGS...]

It runs ``python -m pytest -q`` (the README's test command; arguments after ``--`` are added, e.g.
``-- tests/test_space.py -n 0``) with a small pytest plugin (this file, loaded with ``-p suite_cpu``) and reads
the whole machine's CPU counters from ``/proc/stat`` before and after: busy = user + nice + system + irq +
softirq. Busy seconds divided by the number of cores is the least wall time that the same work can take on this
machine, however the tests are scheduled. The plugin records, per test (setup, call and teardown together), its
wall time, the CPU of the pytest process and the CPU of the child processes it reaped (a study's driver run with
``subprocess`` and what that driver reaped). The processes of a Ray instance that outlive their parent (its
daemons, trial workers) are counted only in the machine's total: the gap between that total and the sum over the
tests is theirs, with pytest's own start-up and test collection. The plugin also records the machine's busy CPU
seconds during each test (``machine_busy_s``): with ``-- -n 0`` (one process, one test at a time) that charges each
test with everything it caused, Ray's daemons and trial workers included; with several workers it also counts what
the other workers did meanwhile. Linux only; run it on an otherwise idle machine, since every process on it counts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROC_STAT = Path("/proc/stat")
ROWS_ENV = "SUITE_CPU_ROWS"  # the folder where the plugin in each pytest process writes its rows
BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq")
STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")

# ---------------------------------------------------------------------------------------------- the plugin
# Loaded inside pytest (and each pytest-xdist worker) with ``-p suite_cpu``; inert unless ROWS_ENV is set.

try:
    import pytest
except ImportError:  # the plugin part is only used under pytest
    pytest = None  # type: ignore[assignment]


def _cpu_seconds() -> tuple[float, float]:
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


if pytest is not None:
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item: Any, nextitem: Any):  # noqa: ANN201 (a pytest hook wrapper)
        folder = os.environ.get(ROWS_ENV)
        if not folder:
            yield
            return
        own0, kids0 = _cpu_seconds()
        busy0, t0 = machine_busy(), time.monotonic()
        yield
        own1, kids1 = _cpu_seconds()
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        row = {"test": item.nodeid, "worker": worker, "wall_s": round(time.monotonic() - t0, 3),
               "own_cpu_s": round(own1 - own0, 3), "children_cpu_s": round(kids1 - kids0, 3),
               "machine_busy_s": round(machine_busy() - busy0, 3)}
        with open(Path(folder) / f"{worker}.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

# ---------------------------------------------------------------------------------------------- the runner


def machine_busy() -> float:
    """The machine's busy CPU seconds so far (all cores): user + nice + system + irq + softirq."""
    stat = read_stat()
    return sum(stat[name] for name in BUSY_FIELDS)


def read_stat() -> dict[str, float]:
    """The machine's CPU counters (all cores) in seconds, from the first line of /proc/stat."""
    fields = PROC_STAT.read_text(encoding="ascii").splitlines()[0].split()[1:]
    ticks = os.sysconf("SC_CLK_TCK")
    return {name: int(value) / ticks for name, value in zip(STAT_FIELDS, fields)}


def by_module(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    modules: dict[str, dict[str, float]] = defaultdict(lambda: {"tests": 0, "wall_s": 0.0, "own_cpu_s": 0.0,
                                                                "children_cpu_s": 0.0, "machine_busy_s": 0.0})
    for row in rows:
        m = modules[row["test"].split("::")[0]]
        m["tests"] += 1
        for key in ("wall_s", "own_cpu_s", "children_cpu_s", "machine_busy_s"):
            m[key] += row.get(key, 0.0)
    out = [{"module": name, **{k: round(v, 1) if k != "tests" else int(v) for k, v in m.items()}}
           for name, m in modules.items()]
    return sorted(out, key=lambda m: -(m["own_cpu_s"] + m["children_cpu_s"]))


def measure(pytest_args: list[str]) -> dict[str, Any]:
    if not PROC_STAT.is_file():
        raise SystemExit("error: benchmarks/suite_cpu.py reads /proc/stat: Linux only")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "suite_cpu", *pytest_args]
    with tempfile.TemporaryDirectory(prefix="suite-cpu-") as rows_dir:
        # A run started from inside pytest (the benchmark's own test) must not inherit the outer run's worker name.
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST_", "PYTEST_CURRENT"))},
               ROWS_ENV: rows_dir,
               "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "benchmarks"), os.environ.get("PYTHONPATH"))
                                             if p)}
        load_before = os.getloadavg()
        if load_before[0] > 0.5 * (os.cpu_count() or 1):
            print(f"suite_cpu: warning: the load average is {load_before[0]:.1f} before the run; every process on the "
                  f"machine counts in its busy CPU seconds", file=sys.stderr, flush=True)
        before, t0 = read_stat(), time.monotonic()
        status = subprocess.run(command, cwd=ROOT, env=env).returncode
        after, wall = read_stat(), time.monotonic() - t0
        rows = [json.loads(line) for path in sorted(Path(rows_dir).glob("*.jsonl"))
                for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    spent = {name: round(after[name] - before[name], 1) for name in STAT_FIELDS}
    busy = sum(spent[name] for name in BUSY_FIELDS)
    cores = os.cpu_count() or 1
    in_tests = sum(r["own_cpu_s"] + r["children_cpu_s"] for r in rows)
    workers: dict[str, float] = defaultdict(float)
    for row in rows:
        workers[row["worker"]] += row["wall_s"]
    return {
        "command": " ".join(["python", "-m", "pytest", "-q", *pytest_args]),
        "pytest_exit_status": status,
        "tests": len(rows),
        "cores": cores,
        "load_average_before": [round(x, 2) for x in load_before],
        "wall_s": round(wall, 1),
        "machine_cpu_s": spent,
        "busy_cpu_s": round(busy, 1),
        "busy_share": round(busy / (wall * cores), 3) if wall > 0 else None,
        "least_wall_s_on_these_cores": round(busy / cores, 1),
        "cpu_s_counted_in_tests": round(in_tests, 1),
        "cpu_s_outside_the_tests_processes": round(busy - in_tests, 1),
        "worker_wall_s": {w: round(s, 1) for w, s in sorted(workers.items())},
        "modules": by_module(rows),
        "test_rows": sorted(rows, key=lambda r: -r.get("machine_busy_s", 0.0)),
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    pytest_args = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(prog="python benchmarks/suite_cpu.py", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "suite_cpu.json",
                        help="where to write the JSON (default results/benchmarks/suite_cpu.json)")
    args = parser.parse_args(own)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from model.provenance import code_revision

    result = {"code_revision": code_revision(), "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
              **measure(pytest_args)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"\nsuite: {result['tests']} tests, exit status {result['pytest_exit_status']}, wall {result['wall_s']} s on "
          f"{result['cores']} cores; machine busy {result['busy_cpu_s']} CPU-s ({result['busy_share']:.0%} of the "
          f"cores), so at least {result['least_wall_s_on_these_cores']} s of wall here; "
          f"{result['cpu_s_outside_the_tests_processes']} CPU-s outside the tests (pytest's start-up and collection, "
          f"Ray daemons and workers, other processes)")
    print(f"{'module':42s} {'tests':>5s} {'wall s':>8s} {'own CPU s':>10s} {'children CPU s':>15s}")
    for m in result["modules"][:15]:
        print(f"{m['module']:42s} {m['tests']:5d} {m['wall_s']:8.1f} {m['own_cpu_s']:10.1f} "
              f"{m['children_cpu_s']:15.1f}")
    print(f"wrote {args.out}")
    return 0 if result["pytest_exit_status"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
