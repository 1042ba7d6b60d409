"""The Ray Tune trainable: a thin adapter from one trial's config to ``model.train.train``.

Tune's config carries only the searched values and ``__trial_index__`` (the seed's index, set by
``ray.tune.search.Repeater``); the fixed trainer settings arrive through ``tune.with_parameters`` as a
``TrialSetup``. Each epoch is reported with the trainer's resume state as a Tune checkpoint, so a trial
that is restarted (``max_failures``, node loss, ``--resume``) continues from its last epoch.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from model.config import Config, build_config

SCRATCH_NAME = "i2srm-trials"  # per-node folder (under the system temp dir) of the trials' scratch output
TRIAL_INDEX = "__trial_index__"  # ray.tune.search.repeater.TRIAL_INDEX, written out so this module stays light
FINISHED_MARKER = "finished.json"  # what the recorder leaves in a finished trial's emptied checkpoint
RESUMED_KEY = "resumed_from_epoch"  # reported beside the trainer's metrics; kept in trial.json, not epochs.jsonl
REPLAYED_KEY = "replayed_final"  # marks the final result a finished trial reports again after a driver loss


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of a study shares: fixed trainer settings, the seeds, the searched keys, threads."""

    trainer: dict[str, Any]
    seeds: tuple[int, ...]
    searched: tuple[str, ...]
    threads: int

    def seed_of(self, config: Mapping[str, Any]) -> int:
        return self.seeds[int(config.get(TRIAL_INDEX, 0)) % len(self.seeds)]

    def params_of(self, config: Mapping[str, Any]) -> dict[str, Any]:
        return {key: config[key] for key in self.searched}

    def overrides(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Flat trainer overrides of the trial whose Tune config is ``config``."""
        return {**self.trainer, **self.params_of(config), "train.seed": self.seed_of(config),
                # Inside a trial: no progress bar (stderr belongs to the study), one torch thread per CPU granted.
                "train.progress": False, "train.threads": self.threads,
                "train.save_best": False}

    def config(self, config: Mapping[str, Any]) -> Config:
        return build_config(self.overrides(config))


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


def finished_result(marker: Path) -> dict[str, Any]:
    """The final result stored in a finished trial's marker ({} for an old or unreadable marker)."""
    import json

    try:
        doc = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    result = doc.get("result") if isinstance(doc, dict) else None
    return dict(result) if isinstance(result, dict) else {}


def train_trial(config: dict[str, Any], setup: TrialSetup) -> None:
    """Tune function trainable: train one configuration with one seed, reporting every epoch."""
    from ray import tune

    from model.train import train

    cfg = setup.config(config)
    node = node_label()
    out_dir = scratch_dir(tune.get_context().get_trial_id())

    checkpoint = tune.get_checkpoint()
    # The epoch this run of the trial starts after: 0 when fresh, else the restored checkpoint's epoch
    # (node loss, max_failures retry, --resume). Set from the first epoch reported below.
    resumed: list[int] = []

    def on_epoch(metrics: dict[str, float], checkpoint_dir: Path | None) -> None:
        if not resumed:
            resumed.append(int(metrics["epoch"]) - 1 if checkpoint is not None else 0)
        saved = tune.Checkpoint.from_directory(str(checkpoint_dir)) if checkpoint_dir is not None else None
        tune.report({**metrics, "node": node, RESUMED_KEY: resumed[0]}, checkpoint=saved)
    try:
        if checkpoint is None:
            train(cfg, out_dir, on_epoch)
        else:
            with checkpoint.as_directory() as resume_dir:
                marker = Path(resume_dir) / FINISHED_MARKER
                if marker.is_file():
                    # Finished before the driver died (its records are stored): hand Tune the final result
                    # again, so the restored searcher and scheduler see how it ended, and train nothing.
                    final = finished_result(marker)
                    if final:
                        tune.report({**final, REPLAYED_KEY: True})
                    return
                done = train(cfg, out_dir, on_epoch, resume_from=resume_dir)
                history = done.get("history") or []
                if not resumed and history:
                    # Restored from the last epoch's checkpoint (node or driver lost after the final report,
                    # before the trial ended): nothing left to train. Report the final result again, with
                    # this restart, so the searcher sees how the trial ended and its record names the resume.
                    final = dict(history[-1])
                    tune.report({**final, "node": node, RESUMED_KEY: int(final["epoch"]), REPLAYED_KEY: True})
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
