"""Runs one study: a search space -> Ray Tune (Optuna searcher, seeds, scheduler) -> ``results/<study>/``.

Everything a resume needs is under ``results/<study>/``: Ray Tune's experiment (``ray/``, checkpoints
included), the Optuna study (``optuna.db``, unless the space's ``optuna_storage`` names another) and the
stored records. A bad space (or an Optuna storage that cannot be opened) is refused before Ray starts, bad
data while it starts (the data is read meanwhile); either way nothing is written under ``results/``.
"""

from __future__ import annotations

import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.config import Config
from study.records import (ORPHANED_DIR, RAY_DIR, SPACE_YAML, STUDY_JSON, TRIALS_DIR, read_study, read_trials,
                           study_is_started, write_json_atomic, write_study_meta)
from study.optuna_storage import StorageError, describe, open_storage
from study.space import REPO_ROOT, Space, SpaceError, load_space
from study.trainable import TrialSetup

log = logging.getLogger("study")


class StudyExistsError(RuntimeError):
    """The study folder already holds results and ``--resume`` was not given (or the reverse)."""


class ClusterError(RuntimeError):
    """The Ray cluster cannot run the study: unreachable address, or fewer resources than one trial asks."""

# How long the driver waits for a TCP connection to ``--address`` before refusing it (seconds).
ADDRESS_TIMEOUT_S = 5.0


@dataclass
class StudyOutcome:
    study_dir: Path
    counts: dict[str, int]
    interrupted: bool
    reports: list[Path]


def trial_dirname(trial: Any) -> str:
    return trial.trial_id  # short, and the same id as results/<study>/trials/<trial_id>


# ---------------------------------------------------------------------------------------------- Ray


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
    # A new local instance turns token authentication on by itself and says so in a warning: expected here.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    if host in LOOPBACK:
        keep_on_loopback(True)
    try:
        # No idle workers started ahead of time (one per CPU by default): Tune gives its trial actors their own
        # runtime env, so those workers would never host a trial; skipping them frees the CPUs while the
        # study starts (measured ~0.7 s less per study on 2 cores).
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, _node_ip_address=host,
                 runtime_env=runtime_env, logging_level=logging.WARNING, log_to_driver=False,
                 _system_config={"prestart_worker_first_driver": False})
    except BaseException:
        stop_ray()
        raise
    return True


def stop_ray() -> None:
    """End the local instance ``init_ray`` started and undo what it set for it in this process."""
    import ray

    ray.shutdown()
    keep_on_loopback(False)


LOOPBACK = ("127.0.0.1", "localhost", "::1")
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_saved_loopback: list[tuple[str | None, bool]] = []


def keep_on_loopback(on: bool) -> None:
    """Make a local Ray instance listen on 127.0.0.1 only (``on``), or undo that after ``ray.shutdown``.

    On Linux, Ray 2.60 replaces a 127.0.0.1 node address by the machine's own IP (``ray_constants.
    ENABLE_RAY_CLUSTER``, from the environment variable above, read when ray is imported) and its gRPC
    servers (GCS, raylet, workers) listen on all interfaces unless the node address is 127.0.0.1. Setting
    the variable to 0 keeps the node on 127.0.0.1, and with it every port; the raylet passes it on to the
    processes it starts. Only for a private single-node instance: a node started this way cannot be joined
    by others, so a cluster (``--address``) keeps its own settings.
    """
    from ray._private import ray_constants

    if on:
        saved = (os.environ.get(_LOOPBACK_ENV), getattr(ray_constants, "ENABLE_RAY_CLUSTER", True))
        _saved_loopback.append(saved)
        os.environ[_LOOPBACK_ENV] = "0"
        ray_constants.ENABLE_RAY_CLUSTER = False
    elif _saved_loopback:
        env, constant = _saved_loopback.pop()
        if env is None:
            os.environ.pop(_LOOPBACK_ENV, None)
        else:
            os.environ[_LOOPBACK_ENV] = env
        ray_constants.ENABLE_RAY_CLUSTER = constant


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
    # Tune warns when its driver loop stalls over 0.5 s, which happens whenever the trials hold every core;
    # with epochs of seconds to minutes a stall of a few seconds costs nothing.
    os.environ.setdefault("TUNE_WARN_THRESHOLD_S", "5")
    # Every epoch checkpoints (num_to_keep=1 forces a state snapshot): intended, so not worth a warning.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # "Trial task failed" (a traceback per failure) and "Trials did not complete": the study prints one line
    # per failed trial, naming its error.txt, and a summary at the end.
    # "Cannot tell a COMPLETE trial": a trial that finished just before a driver crash is restored and ends
    # at once on --resume; Optuna already holds its result.
    for name in ("ray.tune.tune", "ray.tune.execution.tune_controller", "ray.tune.search.optuna.optuna_search"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


# ---------------------------------------------------------------------------------------------- checks


def preflight(cfg: Config) -> None:
    """Load the base configuration's data once in the driver: a DataError (bad file, line) is reported here,
    before any trial starts, and the synthetic benchmark is generated once instead of by racing trials."""
    from model.data import load_task_data
    from model.train import load_tokenizer

    load_task_data(cfg, load_tokenizer(cfg.model.text_encoder))


def start_ray_reading_data(base: Config | None, address: str | None, host: str) -> bool:
    """``init_ray`` while another thread reads ``base``'s data once (``preflight``, unless None); as ``init_ray``.

    Starting Ray is mostly waiting for its processes, so loading torch and transformers (first imported
    here: checking the space does not need them) and reading the data (seconds on a cold cache) cost little
    wall time. A data error stops the Ray instance just started and is raised; an error starting Ray wins
    over a data error. Ray Tune and the study's modules are imported before (``run_study``); what ``ray.init``
    imports then (its autoscaler and CLI modules) and what the data read imports are disjoint, but for
    ``ctypes.util``, imported here first so that no module is ever imported by both threads at once.
    """
    import ctypes.util  # noqa: F401

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="study-preflight") as pool:
        reading = pool.submit(preflight, base) if base is not None else None
        started = init_ray(address, host)  # on an error here the pool still waits for the read, then re-raises
        try:
            if reading is not None:
                reading.result()
        except BaseException:
            if started:
                stop_ray()
            raise
    return started


def resolve_study(space_arg: str | None, sets: list[str], name: str | None, results_dir: Path,
                  resume: bool) -> tuple[Space, Path]:
    """The space to run and its folder; refuses to overwrite a study, or to resume one that is not there."""
    if name is not None and (not name or name in (".", "..") or any(c in name for c in "/\\")):
        raise SpaceError(f"--name {name!r}: a study name is a plain folder name under {results_dir}.")
    if resume:
        if name is None and space_arg is None:
            raise SpaceError("--resume needs --name or --space to know which study to continue.")
        if name is None:
            name = load_space(space_arg, sets).study
        study_dir = results_dir / name
        stored = study_dir / SPACE_YAML
        if not stored.is_file():
            raise StudyExistsError(f"--resume: {study_dir} holds no study (no space.yaml); start it without --resume.")
        space = load_space(stored)
        space.source = read_study(study_dir).get("space_file", space.source)
        given = load_space(space_arg, sets) if space_arg is not None else load_space(stored, sets) if sets else None
        if given is not None and given.optuna_storage != space.optuna_storage:
            raise SpaceError(f"--resume: optuna_storage is {describe(given.optuna_storage, study_dir)}, but study "
                             f"{space.study} keeps its Optuna study in {describe(space.optuna_storage, study_dir)}; "
                             f"a study resumes on the storage it started with (drop optuna_storage from --set and "
                             f"the space, or start a new study with --name).")
        if space_arg is not None:
            given.study = space.study
            if given.to_dict() != space.to_dict():
                raise SpaceError(f"--resume: the space given ({space_arg} with --set) differs from the stored "
                                 f"{stored}; a study resumes with its own space (drop --space/--set, or start a "
                                 f"new study with --name).")
        return space, study_dir
    if space_arg is None:
        raise SpaceError("--space is required (a file, or a name in search_spaces/ such as mixup.yaml).")
    space = load_space(space_arg, sets)
    if name:
        space.study = name
    study_dir = results_dir / space.study
    if study_is_started(study_dir):
        raise StudyExistsError(f"{study_dir} already holds results of a study; continue it with --resume, or "
                               f"choose another --name (nothing was changed).")
    return space, study_dir


# ---------------------------------------------------------------------------------------------- run


def run_study(space: Space, study_dir: Path, *, resume: bool = False, address: str | None = None,
              command: str = "", storage: str | None = None, host: str = "127.0.0.1") -> StudyOutcome:
    """Run (or resume) the study and build its reports. ``space`` is already validated.

    ``storage``: where Ray Tune keeps the experiment and its checkpoints, a folder every node can reach or
    a URI (s3://...); default ``results/<study>/ray``. Nothing is written under ``study_dir`` until the
    cluster is joined, its resources checked and the data read once, which happens while Ray starts (bad input
    changes nothing).
    """
    quiet_tune()  # before ray.tune is imported: some of its settings are read at import
    from ray import tune

    from study.checkpoints import refill_deleted_checkpoints
    from study.progress import ProgressLine, TellFailures
    from study.recorder import TrialRecorder
    from study.search import make_scheduler, make_search_alg, tell_log
    from study.trainable import train_trial

    base = space.base_config()
    study_dir = study_dir.resolve()
    name = study_dir.name
    if resume and storage is None:
        storage = read_study(study_dir).get("storage")
    storage = storage_root(storage, study_dir)
    experiment = f"{storage.rstrip('/')}/{name}"

    setup = TrialSetup(trainer=dict(space.trainer), seeds=tuple(space.seeds), searched=tuple(space.searched),
                       threads=max(1, int(space.resources.cpus)))
    trainable = tune.with_resources(tune.with_parameters(train_trial, setup=setup),
                                    {"cpu": space.resources.cpus, "gpu": space.resources.gpus})
    # A storage other than the study's own optuna.db is opened (and created) before Ray starts: one that
    # cannot be opened is refused while nothing is written under results/.
    ot_storage = open_storage(space.optuna_storage, study_dir) if space.optuna_storage is not None else None
    if ot_storage is not None and not resume:
        check_new_in_storage(ot_storage, space.optuna_storage, name)
    started_ray = start_ray_reading_data(base if not resume else None, address, host)
    try:
        check_resources(space)
        if not resume:
            study_dir.mkdir(parents=True, exist_ok=True)
            meta = write_study_meta(study_dir, space, base, command)
            write_json_atomic(study_dir / STUDY_JSON, {**meta, "storage": storage})
        if ot_storage is None:  # results/<study>/optuna.db, put in WAL mode (a study from before is too)
            ot_storage = open_storage(None, study_dir)
        callbacks = [TrialRecorder(study_dir, setup, keep_checkpoints=space.keep_checkpoints),
                     ProgressLine(name, setup, space.metric, space.mode, space.total_runs, base.train.epochs,
                                  space.progress_interval)]
        if resume and tune.Tuner.can_restore(experiment):
            refill_deleted_checkpoints(experiment)
            tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_errored=True)
            _replace_callbacks(tuner, callbacks)
        else:
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    metric=space.metric, mode=space.mode,
                    search_alg=make_search_alg(space, study_dir, name, base.train.epochs, ot_storage),
                    scheduler=make_scheduler(space, base.train.epochs), num_samples=space.total_runs,
                    max_concurrent_trials=space.max_concurrent, trial_dirname_creator=trial_dirname,
                    reuse_actors=True),
                run_config=tune.RunConfig(
                    name=name, storage_path=storage,
                    failure_config=tune.FailureConfig(max_failures=space.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                    verbose=0, callbacks=callbacks),
            )
        tell_failures = TellFailures(name, study_dir).attach(tell_log)
        try:
            tuner.fit()
        finally:
            tell_failures.detach()
        counts = count_statuses(study_dir)
        # Ctrl-C makes Tune save its state and return early: fewer finished trials than planned.
        finished = sum(counts.get(s, 0) for s in ("completed", "pruned", "failed"))
        interrupted = finished < space.total_runs
        if not interrupted and counts.get("running"):
            set_aside_orphans(study_dir)
            counts = count_statuses(study_dir)
    except BaseException:
        if started_ray:
            stop_ray()
        raise
    # The reports read only the stored records, so they are built while Ray shuts down (about 1.5 s of
    # waiting for its processes to exit); an error in either still reaches the caller.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="study-reports") as pool:
        building = pool.submit(build_study_reports, study_dir)
        try:
            if started_ray:
                stop_ray()
        finally:
            reports = building.result()
    return StudyOutcome(study_dir, counts, interrupted, reports)


def check_new_in_storage(ot_storage: Any, spec: str, name: str) -> None:
    """Refuse a new study whose name a shared Optuna storage already holds: Tune's OptunaSearch would load
    that study and go on with its trials (``load_if_exists``) as if they were this study's."""
    if any(s.study_name == name for s in ot_storage.get_all_studies()):
        raise StorageError(f"optuna_storage {describe(spec)} already holds an Optuna study named {name!r}; "
                           f"start this one under another --name, or continue that one with --resume.")


def set_aside_orphans(study_dir: Path) -> list[str]:
    """Move the records of trials Tune no longer knows out of ``trials/`` into ``orphaned/``; their ids.

    Called when every planned trial has finished: a record still ``running`` then belongs to a trial that
    started just before the driver was killed and was never in Tune's saved experiment state. Its
    configuration was queued again (``ResumableOptunaSearch``) and ran as a new trial, so the old record
    is kept for inspection but left out of the reports.
    """
    moved = []
    for record in read_trials(study_dir):
        if record.status != "running":
            continue
        src = study_dir / TRIALS_DIR / record.trial_id
        dst = study_dir / ORPHANED_DIR / record.trial_id
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
        moved.append(record.trial_id)
        log.warning("trial %s started before the driver stopped but was not in Tune's saved state; its "
                    "configuration ran again as a new trial; its record is kept in %s", record.trial_id, dst)
    return moved


def storage_root(storage: str | None, study_dir: Path) -> str:
    """Ray Tune's storage path: a URI as given, a local folder made absolute, default ``<study>/ray``."""
    if not storage:
        return str(study_dir / RAY_DIR)
    if "://" in storage:
        return storage
    return str(Path(storage).expanduser().resolve())


def _replace_callbacks(tuner: Any, callbacks: list[Any]) -> None:
    """Tuner.restore brings back the run's callbacks from Ray's pickle (with the state and study folder of the
    first run); swap in fresh ones of this run. Ray has no public setter, hence the private attribute; if it
    is gone, the restored callbacks still work as long as the study folder has not moved."""
    local = getattr(tuner, "_local_tuner", None)
    run_config = local.get_run_config() if local is not None and hasattr(local, "get_run_config") else None
    if run_config is None:
        log.warning("could not replace the restored Tune callbacks; using the stored ones")
        return
    ours = tuple(type(cb) for cb in callbacks)
    run_config.callbacks = [cb for cb in (run_config.callbacks or []) if not isinstance(cb, ours)] + callbacks


def count_statuses(study_dir: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in read_trials(study_dir):
        counts[record.status] = counts.get(record.status, 0) + 1
    return counts


def build_study_reports(study_dir: Path) -> list[Path]:
    from study.reports import build_reports

    return build_reports(study_dir)
