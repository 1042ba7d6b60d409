"""Ray for a study: join a cluster (``--address``) or start a private local instance, check it can run a
trial, and keep Tune's console quiet. Ray Tune itself is used by ``study/runner.py``.

The local instance listens on 127.0.0.1 only: ``keep_local_ray_on_loopback`` sets the environment variable Ray
reads when it is first imported, and the study's command line calls it before anything imports ray.
"""

from __future__ import annotations

import logging
import os
import socket
import sys

from study.space import REPO_ROOT, Space


log = logging.getLogger("study")


class ClusterError(RuntimeError):
    """The Ray cluster cannot run the study: unreachable address, or fewer resources than one trial asks."""

# How long the driver waits for a TCP connection to ``--address`` before refusing it (seconds).
ADDRESS_TIMEOUT_S = 5.0


def check_address(address: str) -> None:
    """Refuse an unreachable ``host:port`` at once: ``ray.init`` would otherwise retry for about a minute."""
    if "://" in address or address == "auto":  # ray://, or auto-discovery: left to ray.init
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--address {address!r}: expected HOST:PORT of a Ray head (e.g. 10.0.0.5:6379), "
                           f"ray://HOST:PORT, or auto.")
    try:
        socket.create_connection((host, int(port)), timeout=ADDRESS_TIMEOUT_S).close()
    except OSError as e:
        raise ClusterError(f"--address {address}: no Ray head answers there ({e.strerror or e}); start one with "
                           f"`ray start --head --port={port}` or fix the address.") from None


def worker_env() -> dict[str, str]:
    """Environment every trial worker needs: the repository on ``PYTHONPATH`` (workers import model.* and
    study.*; on a cluster the repository must sit at the same path on every node, or be installed there),
    no usage stats, no tokenizer thread pools (each trial already has its own CPUs)."""
    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": pythonpath, "RAY_USAGE_STATS_ENABLED": "0", "TOKENIZERS_PARALLELISM": "false"}


def init_ray(address: str | None, host: str = "127.0.0.1") -> bool:
    """Join ``address`` (or ``RAY_ADDRESS``), else start a private local instance; True if we started it
    (``stop_ray`` ends it). ``worker_env`` is the job's runtime environment either way.

    The local instance binds to ``host`` (127.0.0.1 unless ``--host`` says otherwise) and runs no
    dashboard. A joined cluster keeps its own settings: token authentication (``RAY_AUTH_MODE=token``) and
    the addresses its nodes were started with.
    """
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    runtime_env = {"env_vars": worker_env()}
    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        return False
    if address:
        # A driver joining a cluster started with token authentication (the default of Ray 2.60's
        # `ray start --head`) must say so; a cluster started without it needs RAY_AUTH_MODE=disabled.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        check_address(address)
        try:
            ray.init(address=address, runtime_env=runtime_env, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ClusterError(f"--address {address}: could not join the Ray cluster: {first} (a cluster started "
                               f"with token auth needs RAY_AUTH_MODE=token and its token).") from None
        return False
    try:
        # No idle workers started ahead of time (one per CPU by default): Tune gives its trial actors their own
        # runtime env, so those workers would never host a trial; skipping them frees the CPUs while the
        # study starts (measured ~0.7 s less per study on 2 cores). address="local": a new instance even when a
        # cluster started with `ray start` runs on this machine (without it, ray.init joins that cluster, and then
        # refuses num_cpus).
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, _node_ip_address=host,
                 runtime_env=runtime_env, logging_level=logging.WARNING, log_to_driver=False,
                 _system_config={"prestart_worker_first_driver": False})
    except BaseException:
        stop_ray()
        raise
    node_ip = ray.util.get_node_ip_address()
    if host in LOOPBACK and node_ip not in LOOPBACK:
        log.warning("the local Ray instance listens on %s, not only on 127.0.0.1: ray was imported before "
                    "keep_local_ray_on_loopback() could set %s=0 (study/run.py calls it first)", node_ip, LOOPBACK_ENV)
    return True


def stop_ray() -> None:
    """End the local instance ``init_ray`` started."""
    import ray

    ray.shutdown()


LOOPBACK = ("127.0.0.1", "localhost", "::1")
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def keep_local_ray_on_loopback(address: str | None, host: str) -> bool:
    """Before ray is first imported in this process: make a private local instance on a loopback ``host`` listen
    on 127.0.0.1 only. True when it applies (no ``address`` and no ``RAY_ADDRESS``; ``host`` a loopback one).

    On Linux, Ray 2.60 replaces a 127.0.0.1 node address by the machine's own IP and its gRPC servers (GCS,
    raylet, workers) listen on all interfaces, unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` is 0 when ray is
    imported (it is read once, then). With it 0 the node, and every port, stays on 127.0.0.1, and the raylet
    passes the variable on to the processes it starts. Only for a private single-node instance: Ray refuses to
    start a worker node with it, so a process that joins a cluster (``--address``) leaves it alone.
    ``tests/test_loopback.py`` checks every listening socket of such an instance.
    """
    if address or os.environ.get("RAY_ADDRESS") or host not in LOOPBACK:
        return False
    os.environ[LOOPBACK_ENV] = "0"
    if "ray" not in sys.modules:
        # Token authentication, Ray's default for a new local instance, said explicitly: the instance then starts
        # without warning that it turned it on by itself. Only before ray is imported: ray reads the mode once,
        # at import, and a driver that read none would not send the token its new instance asks for.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    return True


def child_env(pythonpath: str | os.PathLike[str], **extra: str) -> dict[str, str]:
    """The environment for a study driver or ``ray start`` launched from this process (benchmarks, tests): this
    one's, offline from the hub, without Ray's usage report, with Ray's token authentication said explicitly,
    ``pythonpath`` on ``PYTHONPATH``, and ``extra`` on top. An inherited ``RAY_ADDRESS`` is dropped (the child
    starts its own instance unless told otherwise), and so is ``LOOPBACK_ENV``, which a study run earlier in
    this process sets: Ray refuses to start a worker node with it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": os.fspath(pythonpath), **extra}
    env.pop("RAY_ADDRESS", None)
    env.pop(LOOPBACK_ENV, None)
    return env


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port of ``host`` that nothing listens on now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def check_resources(space: Space) -> None:
    """Refuse a study whose single trial asks more CPUs or GPUs than the whole cluster has."""
    import ray

    total = ray.cluster_resources()
    for kind, key, want in (("GPU", "resources.gpus", space.resources.gpus),
                            ("CPU", "resources.cpus", space.resources.cpus)):
        have = float(total.get(kind, 0.0))
        if want > have:
            raise ClusterError(f"{key}: {want:g} per trial, but the Ray cluster has {have:g} {kind} in all; "
                               f"lower {key} (--set {key}=0 for no {kind}) or add nodes with {kind}s.")


def quiet_tune() -> None:
    """Tune's own console output off: the study prints its progress line and one line per failed trial."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter honours verbose=0 for trial errors
    # Tune's own per-trial result.json, progress.csv and TensorBoard events repeat the study's records (and
    # its TensorBoard writer syncs every result): about 60 ms of driver time per trial at 300 trials
    # (docs/performance.md). TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=0 in the environment brings them back.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Tune snapshots its experiment state (every trial's JSON state) at least every 10 s, for Tuner.restore;
    # a resumed study starts a new Tune experiment from the Optuna study and never reads it. Every 10 minutes
    # instead: the snapshot grows with the trials (about 45 ms of driver time per trial at 200 trials).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "600")
    # Tune warns when its driver loop stalls over 0.5 s, which happens whenever the trials hold every core;
    # with epochs of seconds to minutes a stall of a few seconds costs nothing.
    os.environ.setdefault("TUNE_WARN_THRESHOLD_S", "5")
    # Tune saves its experiment state as results arrive; on a busy machine that warns about slow syncs: harmless.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # "Trial task failed" (a traceback per failure) and "Trials did not complete": the study prints one line
    # per failed trial, naming its error.txt, and a summary at the end.
    # "Cannot tell a COMPLETE trial": a trial that finished just before a driver crash is restored and ends
    # at once on --resume; Optuna already holds its result.
    # "Failed to fetch metrics": the result grid Tune returns looks for the per-trial files of the auto loggers
    # turned off above; the study reads its own records.
    for name in ("ray.tune.tune", "ray.tune.execution.tune_controller", "ray.tune.search.optuna.optuna_search",
                 "ray.tune.analysis.experiment_analysis"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
