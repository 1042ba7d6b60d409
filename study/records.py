"""The stored layout of a study (``results/<study>/``): writing and reading its JSON records.

Everything a report or a resume needs is in these files; the report side reads only them. Writes are
atomic (``model.fileio``: a temp file in the same folder, then ``os.replace``) so a killed driver never
leaves half a file.
No Ray here: the Ray-side callback that feeds these functions lives in ``study/recorder.py``.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from model.config import Config
from model.fileio import atomic_write_text
from model.provenance import code_revision, package_versions
from study.space import Space, dump_space

STUDY_JSON = "study.json"
SPACE_YAML = "space.yaml"
CONFIG_YAML = "config.yaml"
TRIALS_DIR = "trials"
ORPHANED_DIR = "orphaned"  # records of trials lost with a killed driver and run again (see runner.set_aside_orphans)
TRIAL_JSON = "trial.json"
EPOCHS_JSONL = "epochs.jsonl"
OPTUNA_DB = "optuna.db"
RAY_DIR = "ray"
STATUSES = ("completed", "pruned", "failed", "running")
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


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def trial_dir(study_dir: Path, trial_id: str) -> Path:
    return Path(study_dir) / TRIALS_DIR / trial_id


def write_trial(study_dir: Path, record: TrialRecord) -> None:
    if record.status not in STATUSES:
        raise ValueError(f"trial status {record.status!r}; allowed: {', '.join(STATUSES)}")
    write_json_atomic(trial_dir(study_dir, record.trial_id) / TRIAL_JSON, record.to_dict())


def read_trial(study_dir: Path, trial_id: str) -> TrialRecord | None:
    path = trial_dir(study_dir, trial_id) / TRIAL_JSON
    if not path.is_file():
        return None
    data = read_json(path)
    known = {f for f in TrialRecord.__dataclass_fields__}
    return TrialRecord(**{k: v for k, v in data.items() if k in known})


def read_trials(study_dir: Path) -> list[TrialRecord]:
    """Every stored trial, sorted by trial id."""
    root = Path(study_dir) / TRIALS_DIR
    if not root.is_dir():
        return []
    out = [read_trial(study_dir, p.name) for p in sorted(root.iterdir()) if (p / TRIAL_JSON).is_file()]
    return [r for r in out if r is not None]


def read_epochs(study_dir: Path, trial_id: str) -> list[dict[str, Any]]:
    path = trial_dir(study_dir, trial_id) / EPOCHS_JSONL
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def record_epoch(study_dir: Path, trial_id: str, metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Store one epoch's metrics; returns all epochs so far.

    Idempotent by epoch: a trial resumed from an older checkpoint (after a driver crash) reports some
    epochs again, and those replace the stored ones instead of being appended twice.
    """
    epoch = int(metrics["epoch"])
    kept = [e for e in read_epochs(study_dir, trial_id) if int(e.get("epoch", 0)) < epoch]
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
