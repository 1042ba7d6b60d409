"""The stored layout of a study (``results/<study>/``): writing and reading its JSON records.

Everything a report or a resume needs is in these files; the report side reads only them, through the
readers here (``read_json``, ``read_jsonl``, ``trial_folders``, ``read_trial_json``) that the runner and the
recorder use too. A malformed record raises ``RecordError`` naming the file (and line) and what is expected.
Writes are atomic (``model.fileio``: a temp file in the same folder, then ``os.replace``) so a killed driver
never leaves half a file.
No Ray here: the Ray-side callback that feeds these functions lives in ``study/recorder.py``.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from model.config import Config
from model.fileio import atomic_write_text
from model.provenance import code_revision, package_versions
from study.optuna_storage import OPTUNA_DB  # noqa: F401  (re-exported: part of the layout)
from study.space import Space, dump_space
from study.trainable import CONFIRM_PHASE, SEARCH_PHASE

STUDY_JSON = "study.json"
SPACE_YAML = "space.yaml"
CONFIG_YAML = "config.yaml"
TRIALS_DIR = "trials"
TRIAL_JSON = "trial.json"
EPOCHS_JSONL = "epochs.jsonl"
RAY_DIR = "ray"
OPTUNA_ERRORS = "optuna_errors.jsonl"  # results Optuna could not be told (study/progress.py, TellFailures)
STATUSES = ("completed", "pruned", "failed", "running")
PHASES = (SEARCH_PHASE, CONFIRM_PHASE)  # a run of the search, or of a chosen configuration on a fresh seed
# Packages named by the study.json contract (python is added by package_versions).
STUDY_PACKAGES = ("torch", "torchvision", "transformers", "ray", "optuna", "seqeval", "tensorboard", "numpy")


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf become null (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_json_atomic(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_clean(obj), indent=2, sort_keys=False) + "\n")


class RecordError(ValueError):
    """A stored record that cannot be read; the message names the file (and line) and what is expected."""


def read_json(path: Path) -> dict[str, Any]:
    """A stored JSON object (``study.json``, ``trial.json``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RecordError(f"{path} line {e.lineno}: not valid JSON ({e.msg}).") from None
    except OSError as e:
        raise RecordError(f"{path}: cannot be read ({e.strerror}).") from None
    if not isinstance(data, dict):
        raise RecordError(f"{path}: expected a JSON object, got {type(data).__name__}.")
    return data


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """One JSON object a line (``epochs.jsonl``); none when the file is missing.

    A last line without its newline that is not valid JSON is a line still being written, and is left out.
    """
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines):  # no final newline: a line still being appended
                break
            raise RecordError(f"{path} line {i}: not valid JSON ({e.msg}); expected one metrics object "
                              f"per line.") from None
        if not isinstance(row, dict):
            raise RecordError(f"{path} line {i}: expected a JSON object of metrics.")
        out.append(row)
    return out


# ---------------------------------------------------------------------------------------------- the study


def study_is_started(study_dir: Path) -> bool:
    """True when the folder already holds anything (a study that a new run must not overwrite)."""
    return study_dir.is_dir() and any(study_dir.iterdir())


def command_line(argv: list[str] | None = None) -> str:
    argv = list(sys.argv if argv is None else argv)
    return shlex.join(["python", *argv])


def write_study_meta(study_dir: Path, space: Space, base: Config, command: str) -> dict[str, Any]:
    """``study.json``, ``space.yaml`` and ``config.yaml``: what the study is and how to rerun it."""
    meta = {
        "name": study_dir.name,
        "space_file": space.source,
        "space": space.to_dict(),
        "base_config": base.flat(),
        "searched": space.searched,
        "metric": space.metric,
        "mode": space.mode,
        "seeds": list(space.seeds),
        "code_revision": code_revision(),
        "packages": package_versions(STUDY_PACKAGES),
        "command": command,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomic(study_dir / STUDY_JSON, meta)
    atomic_write_text(study_dir / SPACE_YAML, dump_space(space))
    atomic_write_text(study_dir / CONFIG_YAML,
                      f"# Base trainer config of study '{study_dir.name}' (searched keys and train.seed vary per "
                      f"trial).\n" + yaml.safe_dump(base.to_dict(), sort_keys=False, allow_unicode=True))
    return meta


def read_study(study_dir: Path) -> dict[str, Any]:
    path = Path(study_dir) / STUDY_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {study_dir} is not a study folder.")
    return read_json(path)


def append_jsonl(path: Path, row: Mapping[str, Any]) -> None:
    """Add one JSON object as a line (rewritten whole and atomically, like ``record_epoch``: small files)."""
    rows = read_jsonl(path) + [_clean(dict(row))]
    atomic_write_text(Path(path), "".join(json.dumps(r) + "\n" for r in rows))


# ---------------------------------------------------------------------------------------------- trials


@dataclass
class TrialRecord:
    """``trials/<trial_id>/trial.json``."""

    trial_id: str
    status: str = "running"
    error: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    node: str = ""
    wall_seconds: float = 0.0
    epochs_run: int = 0
    best_dev_f1: float | None = None
    best_epoch: int | None = None
    test_f1_at_best: float | None = None
    resumed_from_epoch: int = 0  # the checkpoint epoch of the trial's latest restart (node loss, retry, resume)
    phase: str = SEARCH_PHASE  # one of PHASES: confirmation runs are left out of the search's statistics

    def to_dict(self) -> dict[str, Any]:
        # Shallow (the config is a flat dict of plain values): dataclasses.asdict deep-copies it, which cost
        # the driver about 2 ms per write at scale (docs/performance.md).
        return {f.name: getattr(self, f.name) for f in fields(self)}


def trial_dir(study_dir: Path, trial_id: str) -> Path:
    return Path(study_dir) / TRIALS_DIR / trial_id


def write_trial(study_dir: Path, record: TrialRecord) -> None:
    if record.status not in STATUSES:
        raise ValueError(f"trial status {record.status!r}; allowed: {', '.join(STATUSES)}")
    if record.phase not in PHASES:
        raise ValueError(f"trial phase {record.phase!r}; allowed: {', '.join(PHASES)}")
    write_json_atomic(trial_dir(study_dir, record.trial_id) / TRIAL_JSON, record.to_dict())


def trial_folders(study_dir: Path) -> list[Path]:
    """The folders under ``trials/`` that hold a ``trial.json``, sorted by name."""
    root = Path(study_dir) / TRIALS_DIR
    if not root.is_dir():
        return []
    return [p for p in sorted(root.iterdir()) if (p / TRIAL_JSON).is_file()]


def read_trial_json(folder: Path) -> dict[str, Any]:
    """A trial folder's ``trial.json`` as stored, its status checked against ``STATUSES``."""
    path = Path(folder) / TRIAL_JSON
    raw = read_json(path)
    status = raw.get("status")
    if status not in STATUSES:
        raise RecordError(f"{path}: 'status' is {status!r}; allowed: {', '.join(STATUSES)}.")
    return raw


def read_trial(study_dir: Path, trial_id: str) -> TrialRecord | None:
    folder = trial_dir(study_dir, trial_id)
    if not (folder / TRIAL_JSON).is_file():
        return None
    data = read_trial_json(folder)
    known = {f for f in TrialRecord.__dataclass_fields__}
    return TrialRecord(**{k: v for k, v in data.items() if k in known})


def read_trials(study_dir: Path) -> list[TrialRecord]:
    """Every stored trial, sorted by trial id."""
    out = [read_trial(study_dir, p.name) for p in trial_folders(study_dir)]
    return [r for r in out if r is not None]


def read_epochs(study_dir: Path, trial_id: str) -> list[dict[str, Any]]:
    return read_jsonl(trial_dir(study_dir, trial_id) / EPOCHS_JSONL)


def record_epoch(study_dir: Path, trial_id: str, metrics: Mapping[str, Any],
                 stored: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Store one epoch's metrics; returns all epochs so far. ``stored``: the run's epochs as last written, if
    the caller keeps them (the recorder does), instead of reading the file again.

    Idempotent by epoch: a trial resumed from an older checkpoint (after a driver crash) reports some
    epochs again, and those replace the stored ones instead of being appended twice.
    """
    epoch = int(metrics["epoch"])
    stored = read_epochs(study_dir, trial_id) if stored is None else stored
    kept = [e for e in stored if int(e.get("epoch", 0)) < epoch]
    kept.append(_clean(dict(metrics)))
    # Rewritten whole and atomically (a few KB): a killed driver never leaves a torn last line.
    atomic_write_text(trial_dir(study_dir, trial_id) / EPOCHS_JSONL, "".join(json.dumps(e) + "\n" for e in kept))
    return kept


def summarize_epochs(record: TrialRecord, epochs: Iterable[Mapping[str, Any]]) -> TrialRecord:
    """Fill the per-trial summary fields of ``record`` from its epochs (the trainer's own best tracking)."""
    epochs = list(epochs)
    record.epochs_run = len(epochs)
    if epochs:
        last = epochs[-1]
        record.best_dev_f1 = last.get("best_dev_f1", record.best_dev_f1)
        best_epoch = last.get("best_epoch")
        record.best_epoch = int(best_epoch) if best_epoch is not None else None
        record.test_f1_at_best = last.get("test_f1_at_best", record.test_f1_at_best)
    return record
