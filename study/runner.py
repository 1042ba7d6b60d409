"""Runs one study: a search space -> Ray Tune trials asked of the study's Optuna study -> ``results/<study>/``.

Everything a resume needs is in three places, each the owner of one thing: the Optuna study (``optuna.db``,
unless the space's ``optuna_storage`` names another) holds which configurations exist and how each ended; the
runs' resume states (``<storage>/<study>/state/``, ``study/resume_state.py``) hold how far each run got; the
records (``trials/``) are what the reports read. Ray Tune executes the runs of one session (``ray/``: its trial
folders and error files); a resumed study starts a new Tune experiment from the Optuna study.
A bad space (or an Optuna storage that cannot be opened) is refused before Ray starts, bad data while it
starts (the data is read meanwhile); either way nothing is written under ``results/``.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from model.config import Config
from study.local_ray import check_resources, init_ray, quiet_tune, stop_ray
from study.optuna_storage import StorageError, describe, open_storage
from study.records import RAY_DIR, STUDY_JSON, read_runs, read_study, write_json_atomic, write_study_meta
from study.space import Space
from study.trainable import TrialSetup

log = logging.getLogger("study")


@dataclass
class StudyOutcome:
    study_dir: Path
    counts: dict[str, int]
    interrupted: bool
    reports: list[Path]


def trial_dirname(trial: Any) -> str:
    """Tune's folder of a trial: the run it executes and Tune's id (a run may be executed in several sessions)."""
    from study.schema import CONFIG_KEY, SEED_KEY, RunKey

    if CONFIG_KEY in trial.config and SEED_KEY in trial.config:
        return f"{RunKey.of(trial.config, 0).id}-{trial.trial_id}"
    return trial.trial_id


# ---------------------------------------------------------------------------------------------- checks


def preflight(configs: Sequence[Config]) -> None:
    """Load each dataset's data once in the driver (one config per searched ``data.name``): a DataError (bad
    file, line) is reported here, before any trial starts, and a synthetic benchmark is generated once instead
    of by racing trials."""
    from model.data import load_task_data
    from model.train import load_tokenizer

    for cfg in configs:
        load_task_data(cfg, load_tokenizer(cfg.model.text_encoder))


def preflight_space(space: Space) -> None:
    """What validating the space could not see without this machine (files, the encoder's width, downloads),
    checked for each config the space names (``Space.preflight_configs``), before anything is written; the
    answers are cached per encoder and host, so this costs well under a second for the offline recipes."""
    from model.preflight import check_resources

    for where, cfg in space.preflight_configs():
        check_resources(cfg, f"{space.source or space.study}: {where}")


def start_ray_reading_data(configs: Sequence[Config], address: str | None, host: str) -> bool:
    """``init_ray`` while another thread reads the data of ``configs`` once (``preflight``); as ``init_ray``.

    Starting Ray is mostly waiting for its processes, so loading torch and transformers (first imported
    here: checking the space does not need them) and reading the data (seconds on a cold cache) cost little
    wall time. A data error stops the Ray instance just started and is raised; an error starting Ray wins
    over a data error. Ray Tune and the study's modules are imported before (``run_study``); what ``ray.init``
    imports then (its autoscaler and CLI modules) and what the data read imports are disjoint, but for
    ``ctypes.util``, imported here first so that no module is ever imported by both threads at once.
    """
    import ctypes.util  # noqa: F401

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="study-preflight") as pool:
        reading = pool.submit(preflight, configs) if configs else None
        started = init_ray(address, host)  # on an error here the pool still waits for the read, then re-raises
        try:
            if reading is not None:
                reading.result()
        except BaseException:
            if started:
                stop_ray()
            raise
    return started


# ---------------------------------------------------------------------------------------------- run


def run_study(space: Space, study_dir: Path, *, resume: bool = False, address: str | None = None,
              command: str = "", storage: str | None = None, host: str = "127.0.0.1",
              threads: int | None = None) -> StudyOutcome:
    """Run (or resume) the study and build its reports. ``space`` is already validated.

    ``storage``: where Ray Tune keeps its trial folders and the runs keep their resume states, a folder every
    node can reach or a URI (s3://...); default ``results/<study>/ray``. Nothing is written under
    ``study_dir`` until the cluster is joined, its resources checked and the data read once, which happens
    while Ray starts (bad input changes nothing). ``threads``: torch threads of each run (default: the space's
    ``trial_threads``; a resumed study keeps its stored ones).
    """
    quiet_tune()  # before ray.tune is imported: some of its settings are read at import
    from ray import tune

    from study.progress import ProgressLine, TellFailures
    from study.recorder import TrialRecorder, close_lost_runs
    from study.resume_state import state_root
    from study.search import StudySearcher, confirmation_pending, make_scheduler, open_study, tell_log
    from study.trainable import train_trial

    base = space.base_config()
    epochs = max(c.train.epochs for c in space.data_configs())  # searched datasets may differ in recipe
    study_dir = study_dir.resolve()
    name = study_dir.name
    if resume:  # the runs' resume states are under the study's own storage
        stored = read_study(study_dir).get("storage")
        if storage is not None and stored and storage_root(storage, study_dir) != stored:
            raise StorageError(f"--storage {storage}: study {name} keeps its trial folders and the runs' resume "
                               f"states in {stored}; a study resumes on its own storage (drop --storage).")
        storage = stored or storage
    storage = storage_root(storage, study_dir)

    setup = TrialSetup(trainer=dict(space.trainer), seeds=tuple(space.seeds), searched=tuple(space.searched),
                       threads=threads or space.trial_threads, metric=space.metric, mode=space.mode,
                       state_root=state_root(storage, name), keep_checkpoints=space.keep_checkpoints,
                       gpus=space.resources.gpus)
    trainable = tune.with_resources(tune.with_parameters(train_trial, setup=setup),
                                    {"cpu": space.resources.cpus, "gpu": space.resources.gpus})
    preflight_space(space)
    # A storage other than the study's own optuna.db is opened (and created) before Ray starts: one that
    # cannot be opened is refused while nothing is written under results/.
    ot_storage = open_storage(space.optuna_storage, study_dir) if space.optuna_storage is not None else None
    if space.optuna_storage is not None and not resume:
        check_new_in_storage(ot_storage, space.optuna_storage, name)
    # Read once: every searched dataset, except on --resume (read before) and for a simulated trainer (no data).
    reading = space.data_configs() if not resume and base.train.simulate_seconds is None else []
    started_ray = start_ray_reading_data(reading, address, host)
    try:
        check_resources(space)
        if not resume:
            study_dir.mkdir(parents=True, exist_ok=True)
            meta = write_study_meta(study_dir, space, base, command)
            write_json_atomic(study_dir / STUDY_JSON, {**meta, "storage": storage})
        if ot_storage is None:  # results/<study>/optuna.db, put in WAL mode (a study from before is too)
            ot_storage = open_storage(None, study_dir)
        opened = open_study(space, name, ot_storage, space.trials)
        done_before = {r.trial_id: r.status for r in read_runs(study_dir, with_epochs=False) if r.status != "running"}
        callbacks = [TrialRecorder(study_dir, setup, keep_checkpoints=space.keep_checkpoints),
                     ProgressLine(name, setup, space.total_runs, epochs,
                                  space.progress_interval, done_before=done_before, fewest_runs=space.fewest_runs)]
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                metric=space.metric, mode=space.mode,
                search_alg=StudySearcher(space, opened),
                scheduler=make_scheduler(space, epochs), num_samples=-1,
                max_concurrent_trials=space.max_concurrent, trial_dirname_creator=trial_dirname,
                reuse_actors=True),
            run_config=tune.RunConfig(
                name=name, storage_path=storage,
                failure_config=tune.FailureConfig(max_failures=space.max_failures),
                verbose=0, callbacks=callbacks),
        )
        # Else every configuration has ended, and so has the confirmation on fresh seeds: nothing for Tune to run.
        if opened.budget > 0 or confirmation_pending(space, opened.study):
            tell_failures = TellFailures(name, study_dir).attach(tell_log)
            try:
                tuner.fit()
            finally:
                tell_failures.detach()
        finished = _configurations_ended(opened.study)
        # Ctrl-C makes Tune return early: fewer configurations ended than planned, or confirmation runs missing.
        interrupted = finished < min(space.trials, space.grid_size if space.sampler == "grid" else space.trials) \
            or confirmation_pending(space, opened.study)
        if not interrupted:
            close_lost_runs(study_dir)
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


def _configurations_ended(study: Any) -> int:
    """Configurations the Optuna study holds as ended, the orphans of killed drivers left out."""
    from optuna.trial import TrialState

    from study.search import ORPHANS_ATTR

    orphans = set(study.user_attrs.get(ORPHANS_ATTR, []))
    return sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                    TrialState.FAIL)) if t.number not in orphans)


def check_new_in_storage(ot_storage: Any, spec: str, name: str) -> None:
    """Refuse a new study whose name a shared Optuna storage already holds: its trials would be taken for
    this study's."""
    if any(s.study_name == name for s in ot_storage.get_all_studies()):
        raise StorageError(f"optuna_storage {describe(spec)} already holds an Optuna study named {name!r}; "
                           f"start this one under another --name, or continue that one with --resume.")


def storage_root(storage: str | None, study_dir: Path) -> str:
    """Ray Tune's storage path: a URI as given, a local folder made absolute, default ``<study>/ray``."""
    if not storage:
        return str(study_dir / RAY_DIR)
    if "://" in storage:
        return storage
    return str(Path(storage).expanduser().resolve())


def count_statuses(study_dir: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in read_runs(study_dir, with_epochs=False):
        counts[record.status] = counts.get(record.status, 0) + 1
    return counts


def build_study_reports(study_dir: Path) -> list[Path]:
    from study.reports import build_reports

    return build_reports(study_dir)
