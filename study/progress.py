"""The study's live progress line on stderr (a driver-side Tune callback; Ray's own table stays off).

    [study mixup] 3/10 done, 2 running, 0 failed | best dev_f1 71.2 (i2srm.delta=0.5, seed 1) | elapsed 2m10s, ETA 4m30s

With ``resolve`` (adaptive seeds) the run count and the ETA are ranges, from the fewest runs the study can still
make to the most (every configuration at ``max_seeds``): ``3/15-30 done ... ETA 4m10s-11m``.
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from ray.tune import Callback

from study.schema import SCORE_KEY, SEARCH_PHASE
from study.trainable import TrialSetup


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m:02d}m"
    return f"{m}m{s:02d}s" if m else f"{s}s"


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class ProgressLine(Callback):
    """Prints one line when the counts or the best result change, at most every ``interval`` seconds,
    plus a heartbeat line every ``heartbeat`` intervals."""

    def __init__(self, name: str, setup: TrialSetup, total_runs: int, epochs: int, interval: float,
                 heartbeat: int = 6, stream: TextIO | None = None, done_before: dict[str, str] | None = None,
                 fewest_runs: int | None = None):
        self.name, self.setup_, self.metric, self.mode = name, setup, setup.metric, setup.mode
        self.total_runs, self.epochs, self.interval, self.heartbeat = total_runs, epochs, interval, heartbeat
        # With ``resolve`` a study makes between ``fewest_runs`` and ``total_runs`` runs: the line shows both ends.
        self.fewest_runs = min(fewest_runs, total_runs) if fewest_runs is not None else total_runs
        self.stream = stream
        # Runs that had ended before this session ({run id: status}, from the records of a resumed study):
        # counted as done, and not counted again when a new trial replays one of them.
        self.done_before = dict(done_before or {})
        self._reset()

    def _reset(self) -> None:
        self.started = time.monotonic()
        self.last_print = 0.0
        self.last_key: tuple = ()
        self.best: dict[str, float] = {}  # trial_id -> its run's score so far (schema.SCORE_KEY)
        self.epochs_at_start: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["stream"] = None  # sys.stderr is not picklable; Ray pickles callbacks with the experiment
        return state

    def setup(self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None,
              **info: Any) -> None:
        self._reset()

    def _better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if self.setup_.run_of(trial.config).phase != SEARCH_PHASE:  # the search's best: fresh seeds confirm it
            return
        value = result.get(SCORE_KEY)
        if isinstance(value, (int, float)):
            self.best[trial.trial_id] = float(value)

    def _say_failed(self, trial: Any, what: str) -> None:
        from study.recorder import error_line

        params = ", ".join(f"{k}={format_value(v)}" for k, v in self.setup_.params_of(trial.config).items())
        run = self.setup_.run_of(trial.config)
        print(f"[study {self.name}] run {run.id} ({params}, seed {run.seed}) "
              f"{what}: {error_line(trial)}" + (f" (traceback: {trial.error_file})" if trial.error_file else ""),
              file=self.stream or sys.stderr, flush=True)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._say_failed(trial, "failed")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._say_failed(trial, "failed, retrying from its last checkpoint")

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.maybe_print(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.maybe_print(trials, force=True)

    def line(self, trials: list) -> tuple[str, tuple]:
        ended = dict(self.done_before)  # run id -> "done" / "failed", the latest trial of a run winning
        running = 0
        for t in trials:
            if t.status == "RUNNING":
                running += 1
            elif t.status in ("TERMINATED", "ERROR"):
                ended[self.setup_.run_of(t.config).id] = "failed" if t.status == "ERROR" else "done"
        failed = sum(s == "failed" for s in ended.values())
        done = len(ended) - failed
        by_id = {t.trial_id: t for t in trials}
        best_text = f"best {self.metric} -"
        if self.best:
            best_id = max(self.best, key=lambda k: self.best[k] if self.mode == "max" else -self.best[k])
            t = by_id.get(best_id)
            if t is not None:
                params = ", ".join(f"{k}={format_value(v)}" for k, v in self.setup_.params_of(t.config).items())
                best_text = (f"best {self.metric} {self.best[best_id]:.4g} ({params}, "
                             f"seed {self.setup_.run_of(t.config).seed})")
        # Progress in epochs: finished trials count whole (pruned and failed ones will run no more).
        epochs_done = self.epochs * len(ended) + sum(int((t.last_result or {}).get("epoch", 0)) for t in trials
                                                     if t.status == "RUNNING")
        if self.epochs_at_start is None:
            self.epochs_at_start = epochs_done
        elapsed = time.monotonic() - self.started
        rate_epochs = epochs_done - self.epochs_at_start

        def eta(runs: int) -> str:
            remaining = max(0, runs * self.epochs - epochs_done)
            if remaining == 0:
                return "0s"
            return format_duration(elapsed * remaining / rate_epochs) if rate_epochs > 0 else "?"

        # The fewest runs left to make: at least those that ended or run now (resolve adds seeds as it goes).
        fewest = max(self.fewest_runs, len(ended) + running)
        if fewest < self.total_runs:
            total, etas = f"{fewest}-{self.total_runs}", f"{eta(fewest)}-{eta(self.total_runs)}"
            etas = etas if etas != "?-?" else "?"
        else:
            total, etas = f"{self.total_runs}", eta(self.total_runs)
        key = (done, failed, running, best_text)
        text = (f"[study {self.name}] {done + failed}/{total} done, {running} running, {failed} failed | "
                f"{best_text} | elapsed {format_duration(elapsed)}, ETA {etas}")
        return text, key

    def maybe_print(self, trials: list, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_print < self.interval:
            return
        text, key = self.line(trials)
        if key != self.last_key or (not force and now - self.last_print >= self.interval * self.heartbeat):
            print(text, file=self.stream or sys.stderr, flush=True)
            self.last_print, self.last_key = now, key


class TellFailures(logging.Handler):
    """A result Optuna could not be told (``study.search.tell_log``), as the study's own line on stderr,
    ``[study NAME] error: ...``, and one line of ``results/<study>/optuna_errors.jsonl``. Attached to that
    logger for the length of ``tuner.fit`` (``attach``/``detach``), so nothing else prints it twice."""

    def __init__(self, name: str, study_dir: Path, stream: TextIO | None = None):
        super().__init__(level=logging.ERROR)
        self.name, self.study_dir, self.stream = name, Path(study_dir), stream
        self._saved: list[tuple[logging.Logger, bool]] = []

    def emit(self, record: logging.LogRecord) -> None:
        from study.records import OPTUNA_ERRORS, append_jsonl

        path = self.study_dir / OPTUNA_ERRORS
        try:
            append_jsonl(path, {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                "message": record.getMessage(), **getattr(record, "tell_failure", {})})
            where = f" (recorded in {path})"
        except OSError as e:
            where = f" (could not be recorded in {path}: {e.strerror or e})"
        print(f"[study {self.name}] error: {record.getMessage()}{where}", file=self.stream or sys.stderr,
              flush=True)

    def attach(self, logger: logging.Logger) -> "TellFailures":
        self._saved.append((logger, logger.propagate))
        logger.addHandler(self)
        logger.propagate = False
        return self

    def detach(self) -> None:
        while self._saved:
            logger, propagate = self._saved.pop()
            logger.removeHandler(self)
            logger.propagate = propagate
