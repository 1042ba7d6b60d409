"""Test helpers for studies and command lines: a real two-node Ray cluster on 127.0.0.1, a space file for the
tiny trainer (and the trainer's stand-in), ``study/run.py`` or another command run as a subprocess (``run_py``,
``start_study``), or its ``main`` run in the pytest process (``run_main``; ``run_here`` for a study, on the
session's Ray instance of ``conftest.local_ray``).

Every process these helpers start runs in its own session (process group), and is stopped by that
group's id: never ``ray stop`` (it ends every Ray process of the machine, other users' included).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from benchmarks.scale import session_members
from model.config import ALLOW_SIMULATE_ENV
from study.local_ray import child_env, free_port  # noqa: F401  (free_port: for the tests)

ROOT = Path(__file__).resolve().parent.parent
RUN = str(ROOT / "study" / "run.py")
RAY = str(Path(sys.executable).parent / "ray")


def study_env(**extra: str) -> dict[str, str]:
    return child_env(ROOT, **extra)


STAND_IN = "  train.simulate_seconds: {seconds}\n"
"""A trainer key for ``write_space``'s body: the trainer's stand-in (``model/simulate.py``), for study tests
where what the trainer computes is not what is tested. Its trials sleep ``seconds`` per epoch instead of loading a
model; a driver needs ``I2SRM_ALLOW_SIMULATE=1`` (``STAND_IN_ENV``; the ``local_ray`` fixture sets it)."""
STAND_IN_ENV = {ALLOW_SIMULATE_ENV: "1"}


TINY_TRAINER = """\
trainer:
  data.name: synthetic-mner
  data.synthetic_size: 0.05
  data.max_len: 24
  model.backbone: resnet18
  model.image_size: 33
  model.text_encoder: {encoder}
  i2srm.attn_heads: 4
  train.batch_size: 8
  train.epochs: {epochs}
"""


def write_space(path: Path, encoder: Path, body: str, epochs: int = 2) -> Path:
    """A space file: the tiny trainer block (5% synthetic MNER, resnet18 at 32 px, ``encoder``) + ``body``."""
    path.write_text(TINY_TRAINER.format(encoder=encoder, epochs=epochs) + body, encoding="utf-8")
    return path


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """Signal the process group (session) that ``proc`` leads, and every process of its session."""
    sid = proc.pid
    try:
        os.killpg(sid, sig)
    except ProcessLookupError:
        pass
    # Ray daemonizes some helpers into their own group, but they stay in the session we started.
    for pid in session_members(sid):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


@dataclass
class RayNode:
    proc: subprocess.Popen
    node_id: str = ""

    def kill(self) -> None:
        kill_group(self.proc)


@dataclass
class Cluster:
    """A head (1 CPU) and one worker (1 CPU, custom resource ``worker``) on 127.0.0.1."""

    address: str
    temp_dir: Path
    head: RayNode
    workers: list[RayNode] = field(default_factory=list)

    def stop(self) -> None:
        for node in [*self.workers, self.head]:
            node.kill()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _ray_start(args: list[str], log: Path) -> subprocess.Popen:
    # --block: `ray start` stays in the foreground as the leader of the node's process group.
    return subprocess.Popen([RAY, "start", *args, "--block"], stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            env=study_env(), start_new_session=True)


def start_cluster(workers: int = 1, timeout: float = 120.0) -> Cluster:
    """Start the cluster; its temp dir is short (Ray's unix socket paths must stay under 108 bytes)."""
    port = free_port()
    address = f"127.0.0.1:{port}"
    temp_dir = Path(tempfile.mkdtemp(prefix="rayc-", dir="/tmp"))
    head = RayNode(_ray_start(["--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=1",
                               "--num-gpus=0", "--include-dashboard=false", f"--temp-dir={temp_dir}",
                               "--disable-usage-stats"], temp_dir / "head.log"))
    cluster = Cluster(address, temp_dir, head)
    try:
        wait_for_nodes(address, 1, timeout, head.proc)
        for i in range(workers):
            cluster.workers.append(RayNode(_ray_start(
                [f"--address={address}", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--num-gpus=0",
                 '--resources={"worker": 1}', "--disable-usage-stats"], temp_dir / f"worker{i}.log")))
        nodes = wait_for_nodes(address, 1 + workers, timeout, head.proc)
    except BaseException:
        cluster.stop()
        raise
    for node_id, resources in nodes:
        target = cluster.workers[0] if "worker" in resources else cluster.head
        target.node_id = node_id
    return cluster


_LIST_NODES = """
import json, ray
ray.init(address=%r, logging_level="ERROR", log_to_driver=False)
print(json.dumps([(n["NodeID"], n["Resources"]) for n in ray.nodes() if n["Alive"]]))
"""


def wait_for_nodes(address: str, count: int, timeout: float, head: subprocess.Popen) -> list[tuple[str, dict]]:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"the Ray head exited ({head.returncode}); see its log under the cluster temp dir")
        if socket.socket().connect_ex(tuple([address.split(":")[0], int(address.split(":")[1])])) == 0:
            proc = subprocess.run([sys.executable, "-c", _LIST_NODES % address], capture_output=True, text=True,
                                  env=study_env(), timeout=90)
            last = proc.stderr[-2000:]
            if proc.returncode == 0:
                nodes = json.loads(proc.stdout.strip().splitlines()[-1])
                if len(nodes) >= count:
                    return nodes
        time.sleep(2)
    raise TimeoutError(f"the Ray cluster at {address} did not reach {count} nodes: {last}")


def run_py(argv: list[str], cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``python *argv`` (a script such as study/run.py, or ``-m model.train ...``) the way every test runs a CLI:
    the environment of ``study_env``, output captured as text."""
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=study_env())


def run_main(main: Callable[[list[str]], int], argv: list[str], cwd: Path | None = None,
             name: str = RUN) -> subprocess.CompletedProcess[str]:
    """A command line's ``main(argv)`` run in this process, from ``cwd``, its stdout and stderr captured as text
    and its exit status returned as ``run_py`` returns them (argparse's ``SystemExit`` included): the same code
    as the script, without a new Python process importing torch, pandas and matplotlib again. An exception that
    ``main`` does not turn into an exit status propagates."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd or Path.cwd()), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return subprocess.CompletedProcess([name, *argv], code, out.getvalue(), err.getvalue())


def run_here(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python study/run.py *args`` run in this process (``run_main`` of ``study.run.main``) on the session's Ray
    instance, which the calling test asks for with the ``local_ray`` fixture: the same driver code, without a new
    Python process and a new Ray instance per study."""
    import ray

    from study.run import main

    if not ray.is_initialized():
        raise RuntimeError("run_here runs on the session's Ray instance: the test must use the local_ray fixture")
    return run_main(main, args, cwd)


def start_study(args: list[str], cwd: Path, log: Path, **env: str) -> subprocess.Popen:
    """``python study/run.py *args`` started in its own session (``kill_group`` stops it and its Ray instance),
    stderr to ``log``, with ``env`` on top of ``study_env``."""
    return subprocess.Popen([sys.executable, RUN, *args], cwd=cwd, env=study_env(**env), stdout=subprocess.PIPE,
                            stderr=log.open("wb"), start_new_session=True)


def trial_records(study_dir: Path) -> dict[str, dict]:
    out = {}
    for path in sorted((study_dir / "trials").glob("*/trial.json")):
        try:
            out[path.parent.name] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # being replaced right now
            continue
    return out


def wait_until(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None, poll: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the study ended (exit {proc.returncode}) before {what}")
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
