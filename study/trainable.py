"""The Ray Tune trainable: a thin adapter from one run's Tune config to ``model.train.train``.

A run is one configuration with one seed (``study/schema.py``). Tune's config carries the searched values and
the run's identity (``schema.RunKey``), set by the study's searcher (``study/search.py``); the fixed trainer
settings arrive through ``tune.with_parameters`` as a ``TrialSetup``. Every epoch is reported with the run's
score so far (``schema.SCORE_KEY``), the number the searcher tells Optuna.
After every epoch the trainer's resume state is stored at the run's fixed place (``study/resume_state.py``) and
then the epoch is reported, so whichever Tune trial runs the run next (a retry, a node loss, ``--resume`` after a
driver kill) continues from its last epoch.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from model.config import Config, build_config
from study.schema import REPLAYED_KEY, RESUMED_KEY, SCORE_KEY, RunKey, score

SCRATCH_NAME = "i2srm-trials"  # per-node folder (under the system temp dir) of the trials' scratch output

@dataclass(frozen=True)
class TrialSetup:
    """What every trial of a study shares: fixed trainer settings, the seeds, the searched keys, threads, and
    the metric (with its mode) that scores a run."""

    trainer: dict[str, Any]
    seeds: tuple[int, ...]
    searched: tuple[str, ...]
    threads: int
    metric: str = "dev_f1"
    mode: str = "max"
    state_root: str = ""
    """Where the runs keep their resume states (``resume_state.state_root``); "" in a direct call in a test."""
    keep_checkpoints: bool = False
    gpus: float = 0.0
    """GPUs each trial requests of Ray (the space's ``resources.gpus``)."""

    def run_of(self, config: Mapping[str, Any]) -> RunKey:
        """The run a Tune config names (configuration 0 on the first seed when it names none)."""
        return RunKey.of(config, self.seeds[0])

    def with_score(self, metrics: Mapping[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
        """``metrics`` with the run's score over ``history`` (the epochs so far, ``metrics``' own included)."""
        return {**metrics, SCORE_KEY: score(history, self.metric, self.mode)}

    def params_of(self, config: Mapping[str, Any]) -> dict[str, Any]:
        return {key: config[key] for key in self.searched}

    def overrides(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Flat trainer overrides of the trial whose Tune config is ``config``."""
        return {**self.trainer, **self.params_of(config), "train.seed": self.run_of(config).seed,
                # Inside a trial: no progress bar (stderr belongs to the study), one torch thread per CPU granted.
                "train.progress": False, "train.threads": self.threads,
                "train.save_best": False}

    def requested_gpus(self) -> list[int]:
        """What the driver knows of a trial's grant before it runs: one GPU (its id unknown) when it requests
        any, none otherwise; enough to resolve ``train.device: auto`` as the trial will."""
        return [0] if self.gpus > 0 else []

    def config(self, config: Mapping[str, Any], granted_gpus: Sequence[object]) -> Config:
        """The trial's complete trainer config; ``granted_gpus`` (Ray's ``get_gpu_ids()`` inside a trial, the
        trial's GPU request in the driver) decides ``train.device: auto``, see ``trial_device``."""
        flat = self.overrides(config)
        flat["train.device"] = trial_device(str(flat.get("train.device", "auto")), granted_gpus)
        return build_config(flat)


def trial_device(requested: str, granted_gpus: Sequence[object]) -> str:
    """The device of a trial: ``auto`` with no GPU granted is the CPU. Ray leaves ``CUDA_VISIBLE_DEVICES``
    unset for an actor granted no GPU, so torch would see every card and put the trial on ``cuda:0``,
    uncounted by Ray's scheduler. An explicit ``cuda``/``cpu`` is the user's choice and is kept."""
    if requested == "auto" and not granted_gpus:
        return "cpu"
    return requested


def node_label() -> str:
    """Where this trial runs: ``ip/node-id-prefix`` (several Ray nodes may share one host and ip)."""
    import ray

    try:
        ip = ray.util.get_node_ip_address()
        node_id = ray.get_runtime_context().get_node_id() or ""
    except Exception:  # outside Ray (a direct call in a test)
        return socket.gethostname()
    return f"{ip}/{node_id[:8]}" if node_id else ip


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def scratch_dir(trial_id: str, root: Path | None = None) -> Path:
    """A fresh folder for the trainer's own output (resume state, best weights: hundreds of MB).

    It is scratch on the node: Tune syncs the trial folder to the study's storage, and what the study keeps
    goes there through ``tune.report``. A trial killed by Ray (Ctrl-C, scheduler, lost node) never runs its
    ``finally``, so the folder name carries the owning pid and each new trial first deletes the folders of
    processes that are gone.
    """
    root = Path(root or Path(tempfile.gettempdir()) / SCRATCH_NAME)
    root.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():
        pid = old.name.rpartition("-pid")[2].partition("-")[0]
        if old.is_dir() and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{trial_id}-pid{os.getpid()}-", dir=root))


def train_trial(config: dict[str, Any], setup: TrialSetup) -> None:
    """Tune function trainable: train one run (a configuration with one seed), reporting every epoch."""
    import ray
    from ray import tune

    from model.train import train
    from study.resume_state import ResumeState

    state = ResumeState(setup.state_root, setup.run_of(config).id)
    ended = state.finished()
    if ended is not None:
        # The run ended before (its records are stored): hand Tune its final result again, so the searcher
        # and the scheduler see how it ended, and train nothing.
        tune.report({**ended.get("result", {}), REPLAYED_KEY: True})
        return
    cfg = setup.config(config, granted_gpus=ray.get_gpu_ids())
    node = node_label()
    out_dir = scratch_dir(tune.get_context().get_trial_id())
    try:
        latest = state.latest() or {}
        resume_dir = state.fetch(out_dir / "resume") if latest else None
        resumed = int(latest.get("epoch", 0)) if resume_dir is not None else 0
        history: list[dict[str, Any]] = list(latest.get("history", [])) if resume_dir is not None else []
        # A new trial continuing the run: report the epochs it already has (the records keep them by epoch,
        # and a scheduler sees this trial's whole curve), then train the rest.
        for i, metrics in enumerate(history):
            tune.report({**setup.with_score(metrics, history[:i + 1]), "node": node, RESUMED_KEY: resumed})

        def on_epoch(metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
            history.append(dict(metrics))
            if checkpoint_dir is not None:
                state.save(checkpoint_dir, int(metrics["epoch"]), history)
            tune.report({**setup.with_score(metrics, history), "node": node, RESUMED_KEY: resumed})

        train(cfg, out_dir / "run", on_epoch, resume_from=resume_dir)
        if history:
            state.finish("completed", {**setup.with_score(history[-1], history), "node": node, RESUMED_KEY: resumed},
                         keep_checkpoint=setup.keep_checkpoints)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
