"""The facts of a study, each defined once: what a run is, how it is named, how it ended and what it scored.

A *configuration* is one set of searched values, numbered by the Optuna trial that first ran it; a *run* is a
configuration trained with one seed, in one *phase* (the search, or the confirmation on fresh seeds). Every part
of the study reads these facts here: the searcher that tells Optuna a configuration's value, the Tune trainable
and the recorder that name and store a run, the progress line, the reports and the confirmation. A run's stored
record (``trials/<run>/trial.json``) has one typed view, ``Run``; the files themselves are read and written by
``study/records.py``.

The score of a run is its ``metric`` at its best epoch by ``mode`` (the first best on ties): the rule the trainer
uses to pick the epoch whose test F1 it reports. Optuna is told the mean score over a configuration's seeds, and
every report ranks configurations by the same number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from model.config import ConfigError, coerce

SEARCH_PHASE = "search"  # a run of the search: its configuration's mean score is told to Optuna
CONFIRM_PHASE = "confirm"  # a run of a chosen configuration on a fresh seed, after the search (study/search.py)
PHASES = (SEARCH_PHASE, CONFIRM_PHASE)
STATUSES = ("completed", "pruned", "failed", "running")
COUNTED_STATUSES = ("completed", "pruned")  # a run of these statuses with a result counts in the statistics

# Keys of a run's Tune config, set by the searcher beside the searched values.
CONFIG_KEY = "__config__"  # the configuration's number
SEED_KEY = "__seed__"  # the run's seed
PHASE_KEY = "__phase__"  # SEARCH_PHASE or CONFIRM_PHASE
# Keys a trial reports beside the trainer's per-epoch metrics.
SCORE_KEY = "run_score"  # the run's score over the epochs reported so far (``score``)
RESUMED_KEY = "resumed_from_epoch"  # the epoch a restarted run continued from; kept in trial.json
REPLAYED_KEY = "replayed_final"  # the final result of a run that had ended, reported again by a new trial


class RecordError(ValueError):
    """A stored record that cannot be read; the message names the file (and line or key) and what is expected."""


def run_id(configuration: int, seed: int) -> str:
    """The name of a run: its folder under ``trials/`` and under the resume states, e.g. ``c0003-s1``."""
    return f"c{int(configuration):04d}-s{int(seed)}"


@dataclass(frozen=True)
class RunKey:
    """Who a run is: its configuration, seed and phase, as the searcher puts them in the run's Tune config."""

    configuration: int
    seed: int
    phase: str = SEARCH_PHASE

    @property
    def id(self) -> str:
        return run_id(self.configuration, self.seed)

    def tune_keys(self) -> dict[str, Any]:
        return {CONFIG_KEY: self.configuration, SEED_KEY: self.seed, PHASE_KEY: self.phase}

    @classmethod
    def of(cls, tune_config: Mapping[str, Any], default_seed: int) -> RunKey:
        """The run of a Tune config (a config without the keys, as in a direct call in a test: configuration 0
        with ``default_seed``)."""
        return cls(int(tune_config.get(CONFIG_KEY, 0)), int(tune_config.get(SEED_KEY, default_seed)),
                   str(tune_config.get(PHASE_KEY, SEARCH_PHASE)))


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def best_row(epochs: Sequence[Mapping[str, Any]], metric: str = "dev_f1",
             mode: str = "max") -> Mapping[str, Any] | None:
    """The epoch whose ``metric`` is best by ``mode``, the first of equals; None when no epoch reports it."""
    best: Mapping[str, Any] | None = None
    for row in epochs:
        value = _finite(row.get(metric))
        if value is None:
            continue
        if best is None or (value > best[metric] if mode == "max" else value < best[metric]):
            best = row
    return best


def score(epochs: Sequence[Mapping[str, Any]], metric: str, mode: str) -> float | None:
    """A run's score: ``metric`` at its best epoch by ``mode``; None when no epoch reports it."""
    row = best_row(epochs, metric, mode)
    return None if row is None else float(row[metric])


def ended_status(last_epoch: int, planned_epochs: int) -> str:
    """How a run that ended without an error ended: ``completed`` when it reached its last planned epoch,
    ``pruned`` when the scheduler (ASHA, median rule) stopped it before."""
    return "completed" if int(last_epoch) >= int(planned_epochs) else "pruned"


def mean_score(scores: Sequence[float | None]) -> float | None:
    """A configuration's value: the mean score over its seeds that have one; None when none has."""
    found = [s for s in scores if s is not None]
    return sum(found) / len(found) if found else None


def typed_value(key: str, value: Any) -> Any:
    """A searched value in the trainer's declared type for ``key``, so that YAML's 0 and a record's 0.0 are one
    configuration; a value the type does not take is left as it is."""
    try:
        return coerce(key, value)
    except ConfigError:
        return value


@dataclass
class Run:
    """One run's record, ``trials/<run>/trial.json``, with its epochs (``epochs.jsonl``, not stored in it).

    The summary (``epochs_run``, ``best_dev_f1``, ``best_epoch``, ``test_f1_at_best``) is derived from the
    epochs by ``summarize``: the best epoch by dev F1, the trainer's rule.
    """

    trial_id: str
    """The run's id (``run_id``), its folder's name."""
    configuration: int
    seed: int
    phase: str = SEARCH_PHASE
    status: str = "running"
    error: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    """The searched values, typed as the trainer's config declares them."""
    config: dict[str, Any] = field(default_factory=dict)
    """The complete flat trainer config the run trained with (also ``trials/<run>/config.yaml``)."""
    node: str = ""
    wall_seconds: float = 0.0
    epochs_run: int = 0
    best_dev_f1: float | None = None
    best_epoch: int | None = None
    test_f1_at_best: float | None = None
    resumed_from_epoch: int = 0
    """The checkpoint epoch of the run's latest restart (node loss, retry, resume); 0 when never restarted."""
    epochs: tuple[dict[str, Any], ...] = ()

    STORED = ("trial_id", "configuration", "seed", "phase", "status", "error", "params", "config", "node",
              "wall_seconds", "epochs_run", "best_dev_f1", "best_epoch", "test_f1_at_best", "resumed_from_epoch")

    @property
    def key(self) -> RunKey:
        return RunKey(self.configuration, self.seed, self.phase)

    @property
    def counted(self) -> bool:
        """Completed and pruned runs with a result count; failed and running ones do not."""
        return self.status in COUNTED_STATUSES and self.best_dev_f1 is not None and self.test_f1_at_best is not None

    def value(self, key: str) -> Any:
        """The run's value of a trainer key: searched, else from its config."""
        return self.params[key] if key in self.params else self.config.get(key)

    def score(self, metric: str, mode: str) -> float | None:
        return score(self.epochs, metric, mode)

    def summarize(self, epochs: Sequence[Mapping[str, Any]]) -> Run:
        """Take ``epochs`` as the run's epochs and derive its summary from them."""
        self.epochs = tuple(dict(e) for e in epochs)
        self.epochs_run = len(self.epochs)
        best = best_row(self.epochs, "dev_f1", "max")
        if best is not None:
            self.best_dev_f1 = float(best["dev_f1"])
            self.best_epoch = int(best.get("epoch", self.epochs.index(best) + 1))
            self.test_f1_at_best = _finite(best.get("test_f1"))
        return self

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.STORED}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], path: Path, epochs: Sequence[Mapping[str, Any]] = ()) -> Run:
        """The typed record of a stored ``trial.json`` (``path``, for messages) and its epochs."""

        def need(key: str, kind: type | tuple[type, ...], what: str) -> Any:
            value = raw.get(key)
            if isinstance(value, bool) or not isinstance(value, kind):
                raise RecordError(f"{path}: '{key}' is {value!r}; expected {what}.")
            return value

        status, phase = raw.get("status"), raw.get("phase", SEARCH_PHASE)
        if status not in STATUSES:
            raise RecordError(f"{path}: 'status' is {status!r}; allowed: {', '.join(STATUSES)}.")
        if phase not in PHASES:
            raise RecordError(f"{path}: 'phase' is {phase!r}; allowed: {', '.join(PHASES)}.")
        params, config = raw.get("params") or {}, raw.get("config") or {}
        if not isinstance(params, dict) or not isinstance(config, dict):
            raise RecordError(f"{path}: 'params' and 'config' must be objects of dotted keys.")
        error = str(raw.get("error") or "").strip()
        kwargs = {k: v for k, v in raw.items() if k in ("node", "epochs_run", "resumed_from_epoch")}
        kwargs.update(
            trial_id=str(need("trial_id", str, "the run's id, e.g. c0003-s1")),
            configuration=int(need("configuration", int, "the configuration's number (an integer)")),
            seed=int(need("seed", int, "the run's seed (an integer)")), phase=phase, status=status,
            error=error.splitlines()[0] if error else "", params={k: typed_value(k, v) for k, v in params.items()},
            config=config, wall_seconds=_finite(raw.get("wall_seconds")) or 0.0,
            best_dev_f1=_finite(raw.get("best_dev_f1")), test_f1_at_best=_finite(raw.get("test_f1_at_best")))
        run = cls(**kwargs)
        best_epoch = _finite(raw.get("best_epoch"))
        run.best_epoch = int(best_epoch) if best_epoch is not None else None
        if epochs:  # the epochs file is the truth: a running run's record may lag behind it
            run.summarize(epochs)
        return run
