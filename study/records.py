"""The stored layout of a study (``results/<study>/``): writing and reading its JSON records.

Everything a report or a resume needs is in these files; the report side reads only them, through the
readers here (``read_json``, ``read_jsonl``, ``read_runs``) that the runner and the recorder use too; a run's
record is typed by ``study.schema.Run``. A malformed record raises ``RecordError`` naming the file (and line)
and what is expected.
Writes are atomic (``model.fileio``: a temp file in the same folder, then ``os.replace``) so a killed driver
never leaves half a file.
No Ray here: the Ray-side callback that feeds these functions lives in ``study/recorder.py``.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import yaml

from model.config import Config
from model.fileio import atomic_write_text
from model.provenance import code_revision, package_versions
from study.space import Space, dump_space
from study.schema import PHASES, STATUSES, RecordError, Run

STUDY_JSON = "study.json"
SPACE_YAML = "space.yaml"
CONFIG_YAML = "config.yaml"
TRIALS_DIR = "trials"
TRIAL_JSON = "trial.json"
EPOCHS_JSONL = "epochs.jsonl"
RAY_DIR = "ray"
OPTUNA_ERRORS = "optuna_errors.jsonl"  # results Optuna could not be told (study/progress.py, TellFailures)
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
                      f"run; each run's complete config is trials/<run>/config.yaml).\n"
                      + yaml.safe_dump(base.to_dict(), sort_keys=False, allow_unicode=True))
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


# ---------------------------------------------------------------------------------------------- runs


def trial_dir(study_dir: Path, run: str) -> Path:
    return Path(study_dir) / TRIALS_DIR / run


def write_run(study_dir: Path, run: Run) -> None:
    """``trials/<run>/trial.json``."""
    if run.status not in STATUSES:
        raise ValueError(f"run status {run.status!r}; allowed: {', '.join(STATUSES)}")
    if run.phase not in PHASES:
        raise ValueError(f"run phase {run.phase!r}; allowed: {', '.join(PHASES)}")
    write_json_atomic(trial_dir(study_dir, run.trial_id) / TRIAL_JSON, run.to_json())


def write_run_config(study_dir: Path, run: str, config: Config) -> None:
    """``trials/<run>/config.yaml``: the complete trainer config of the run, which
    ``python -m model.train --config`` trains again as it ran (seed, threads, derived keys written out)."""
    atomic_write_text(trial_dir(study_dir, run) / CONFIG_YAML,
                      f"# Trainer config of run {run}; train it again with:\n"
                      f"#   python -m model.train --config {trial_dir(study_dir, run) / CONFIG_YAML}\n"
                      + yaml.safe_dump(config.to_dict(), sort_keys=False, allow_unicode=True))


def trial_folders(study_dir: Path) -> list[Path]:
    """The folders under ``trials/`` that hold a ``trial.json``, sorted by name."""
    root = Path(study_dir) / TRIALS_DIR
    if not root.is_dir():
        return []
    return [p for p in sorted(root.iterdir()) if (p / TRIAL_JSON).is_file()]


def read_run_folder(folder: Path, with_epochs: bool = True) -> Run:
    """The typed record of one run folder (``trial.json``, and ``epochs.jsonl`` unless ``with_epochs`` is false)."""
    path = Path(folder) / TRIAL_JSON
    return Run.from_json(read_json(path), path, read_jsonl(Path(folder) / EPOCHS_JSONL) if with_epochs else ())


def read_run(study_dir: Path, run: str, with_epochs: bool = True) -> Run | None:
    folder = trial_dir(study_dir, run)
    return read_run_folder(folder, with_epochs) if (folder / TRIAL_JSON).is_file() else None


def read_runs(study_dir: Path, with_epochs: bool = True) -> list[Run]:
    """Every stored run, sorted by run id."""
    return [read_run_folder(p, with_epochs) for p in trial_folders(study_dir)]


def read_epochs(study_dir: Path, run: str) -> list[dict[str, Any]]:
    return read_jsonl(trial_dir(study_dir, run) / EPOCHS_JSONL)


def record_epoch(study_dir: Path, run: str, metrics: Mapping[str, Any],
                 stored: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Store one epoch's metrics; returns all epochs so far. ``stored``: the run's epochs as last written, if
    the caller keeps them (the recorder does), instead of reading the file again.

    Idempotent by epoch: a run resumed from an older checkpoint (after a driver crash) reports some
    epochs again, and those replace the stored ones instead of being appended twice.
    """
    epoch = int(metrics["epoch"])
    stored = read_epochs(study_dir, run) if stored is None else stored
    kept = [e for e in stored if int(e.get("epoch", 0)) < epoch]
    kept.append(_clean(dict(metrics)))
    # Rewritten whole and atomically (a few KB): a killed driver never leaves a torn last line.
    atomic_write_text(trial_dir(study_dir, run) / EPOCHS_JSONL, "".join(json.dumps(e) + "\n" for e in kept))
    return kept
