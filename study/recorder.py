"""Driver-side Tune callback that keeps ``trials/<id>/trial.json`` and ``epochs.jsonl`` current.

It runs in the driver as results arrive, so the stored records follow the study live and survive a
driver crash. A record belongs to a run (``trials/c<config>-s<seed>/``), not to the Tune trial that executed
it: a run continued by a new trial (a resumed study) goes on in the same record, and its epochs are keyed
by epoch, so the epochs a continued run reports again are not stored twice.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Mapping

from ray.tune import Callback
from ray.tune.result import AUTO_RESULT_KEYS

from study.records import read_epochs, read_run, read_runs, record_epoch, write_run, write_run_config
from study.resume_state import ResumeState
from study.schema import (CONFIG_KEY, PHASE_KEY, REPLAYED_KEY, RESUMED_KEY, SCORE_KEY, SEED_KEY, Run, RunKey,
                          ended_status)
from study.trainable import TrialSetup

log = logging.getLogger("study")

# Keys Ray adds to every reported result; what remains (minus our "node") is the trainer's metrics dict.
RAY_RESULT_KEYS = frozenset(AUTO_RESULT_KEYS) | {
    "trial_id", "done", "experiment_tag", "should_checkpoint", "timesteps_this_iter", "episodes_this_iter",
    "experiment_id", "iterations_since_restore", "node", RESUMED_KEY, CONFIG_KEY, SEED_KEY, PHASE_KEY, SCORE_KEY,
}


def trainer_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The trainer's per-epoch metrics out of a Tune result (Ray's bookkeeping dropped)."""
    return {k: v for k, v in result.items() if k not in RAY_RESULT_KEYS
            and isinstance(v, (int, float)) and not isinstance(v, bool)}


# The line of a Python traceback that states the exception: "module.Name: message" at the start of a line.
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*): (\S.*)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_FAILURE_HEADER = re.compile(r"^Failure # \d+ \(occurred at [^)]*\)$")  # Tune's first line of every error.txt
MAX_ERROR_CHARS = 300


def exception_line(traceback_text: str) -> str:
    """``Name: message`` of the last exception stated in a traceback (the one raised last); for a Ray error
    that states no exception (a lost actor or node), its first line after Tune's ``Failure # N`` header
    (at most ``MAX_ERROR_CHARS`` characters); "" for an empty text."""
    found, first = "", ""
    for line in _ANSI.sub("", traceback_text).splitlines():
        line = line.rstrip()
        match = _EXCEPTION_LINE.match(line)
        if match:
            found = f"{match.group(1).rsplit('.', 1)[-1]}: {match.group(2)}"
        elif not first and line.strip() and not _FAILURE_HEADER.match(line) and not line.startswith("Traceback"):
            first = line.strip()
    if found:
        return found
    return first if len(first) <= MAX_ERROR_CHARS else first[:MAX_ERROR_CHARS - 3] + "..."


def error_line(trial: Any) -> str:
    """The trial's error as one line, read from Ray's ``error.txt`` (text; Ray's error.pkl is never unpickled)."""
    text = ""
    local = getattr(trial, "error_file", None)  # the driver's copy: written before the callbacks run
    if local and Path(local).is_file():
        text = Path(local).read_text(encoding="utf-8", errors="replace")
    if not text:
        try:
            text = trial.get_error() or ""  # the copy in the study's storage
        except Exception:
            text = ""
    return exception_line(text) or "unknown error (see the trial's error.txt under ray/)"


class TrialRecorder(Callback):
    """Writes the stored trial records of one study (see ``study/records.py`` for the layout)."""

    def __init__(self, study_dir: Path, setup: TrialSetup, keep_checkpoints: bool = False):
        self.study_dir = Path(study_dir)
        self.setup_ = setup
        self.keep_checkpoints = keep_checkpoints
        self.setup()

    def setup(self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None,
              **info: Any) -> None:
        # The records and epochs of the runs seen in this session, as last written: the recorder is their only
        # writer while the study runs, so each is read from disk once (a resumed run's) and then kept here.
        self._records: dict[str, Run] = {}
        self._epochs: dict[str, list[dict[str, Any]]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()  # Ray pickles callbacks with the experiment: without the session's copies
        state["_records"], state["_epochs"] = {}, {}
        return state

    def _run(self, trial: Any) -> RunKey:
        return self.setup_.run_of(trial.config)

    def _epochs_of(self, run: str) -> list[dict[str, Any]]:
        if run not in self._epochs:
            self._epochs[run] = read_epochs(self.study_dir, run)
        return self._epochs[run]

    def _record(self, trial: Any) -> Run:
        key = self._run(trial)
        record = self._records.get(key.id) or read_run(self.study_dir, key.id, with_epochs=False)
        if record is None:
            cfg = self.setup_.config(trial.config, granted_gpus=self.setup_.requested_gpus())
            record = Run(trial_id=key.id, configuration=key.configuration, seed=key.seed, phase=key.phase,
                         params=self.setup_.params_of(trial.config), config=cfg.flat())
            write_run_config(self.study_dir, key.id, cfg)
        self._records[key.id] = record
        return record

    def _update(self, trial: Any, status: str, error: str = "", result: Mapping[str, Any] | None = None) -> None:
        record = self._record(trial)
        record.status, record.error = status, error
        record.summarize(self._epochs_of(record.trial_id))
        last = result or trial.last_result or {}
        if last.get("node"):
            record.node = str(last["node"])
        if last.get(RESUMED_KEY):  # the latest restart from a checkpoint (0: never restarted)
            record.resumed_from_epoch = int(last[RESUMED_KEY])
        if last.get("time_total_s") is not None:  # never lowered: a restored trial may report a stale total
            record.wall_seconds = max(record.wall_seconds, round(float(last["time_total_s"]), 3))
        write_run(self.study_dir, record)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._update(trial, "running")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if result.get(REPLAYED_KEY):  # a finished trial's final result, reported again after --resume
            return
        metrics = trainer_metrics(result)
        if "epoch" in metrics:
            run = self._run(trial).id
            self._epochs[run] = record_epoch(self.study_dir, run, metrics, self._epochs_of(run))
        self._update(trial, "running", result=result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        record = self._record(trial)
        epochs = self._epochs_of(record.trial_id)
        last = int(epochs[-1]["epoch"]) if epochs else 0
        status = ended_status(last, int(record.config["train.epochs"]))
        self._update(trial, status)
        # The run's state is marked ended (a completed run marked itself already), so that a new trial
        # handed the run again replays its end instead of training; its checkpoints go unless kept.
        final = self.setup_.with_score(epochs[-1], epochs) if epochs else {}
        final.update({k: v for k, v in (trial.last_result or {}).items() if k in ("node", RESUMED_KEY)})
        try:
            ResumeState(self.setup_.state_root, record.trial_id).finish(status, final, self.keep_checkpoints)
        except Exception as e:  # disk space only: never fail the study over it
            log.warning("could not mark the stored state of run %s ended: %s", record.trial_id, e)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._update(trial, "failed", error=error_line(trial))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # Retried from its last checkpoint (max_failures): still running; the error is kept for the record.
        self._update(trial, "running", error=f"retrying after: {error_line(trial)}")


def close_lost_runs(study_dir: Path) -> list[str]:
    """Records still ``running`` once every configuration of the study has ended: runs whose end the driver
    never recorded (it was killed between telling Optuna and writing the record, or a configuration was
    replaced by a new one). Each is closed as ``failed`` with the reason; their ids."""
    lost = []
    for record in read_runs(study_dir):
        if record.status != "running":
            continue
        if record.epochs_run >= int(record.config.get("train.epochs", 0) or 0) > 0:
            record.status = "completed"  # every epoch is recorded: only its end was not
        else:
            record.status = "failed"
            record.error = "lost: the driver stopped before this run's end was recorded"
        write_run(study_dir, record)
        lost.append(record.trial_id)
        log.warning("run %s was still recorded as running after the study ended; closed as %s", record.trial_id,
                    record.status)
    return lost
