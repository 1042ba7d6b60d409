"""Read a stored study (``results/<study>/``) into typed records; the reports read nothing else.

The layout is the platform contract: ``study.json``, ``trials/<trial_id>/trial.json`` and
``trials/<trial_id>/epochs.jsonl``. The files are read by ``study/records.py``, the module that writes them
and whose readers the runner uses too; this module types what they hold for the reports. The runs of the
confirmation on fresh seeds (``phase: confirm``) are set apart here, once: ``Study.trials`` holds the search's
runs, which every search statistic reads, and ``Study.confirmations`` the others (``confirm.py``). A malformed
record raises ``ReportError`` naming the file (and line) and what is expected.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model.config import ConfigError, coerce
from study.records import (EPOCHS_JSONL, PHASES, STUDY_JSON, TRIAL_JSON, RecordError, read_json, read_jsonl,
                           read_trial_json, trial_folders)
from study.trainable import CONFIRM_PHASE, SEARCH_PHASE

# Trials whose results count in the summary and figures (if they reported at least one epoch).
COUNTED_STATUSES = ("completed", "pruned")

ReportError = RecordError  # the shared reader's error, under the name the reports have always raised
"""A stored study the reports cannot read; the message names the file and what is expected."""


class NotAStudy(ReportError):
    """The folder holds no ``study.json``."""


@dataclass(frozen=True)
class Trial:
    trial_id: str
    status: str
    error: str
    params: dict[str, Any]
    """Searched values, typed as the trainer's config declares them."""
    seed: int | None
    config: dict[str, Any]
    node: str
    wall_seconds: float | None
    epochs_run: int
    best_dev_f1: float | None
    best_epoch: int | None
    test_f1_at_best: float | None
    epochs: tuple[dict[str, float], ...]
    phase: str = SEARCH_PHASE
    """``search``, or ``confirm`` for a run of a chosen configuration on a fresh seed."""

    @property
    def counted(self) -> bool:
        """Completed and pruned trials with a result count; failed and running ones do not."""
        return self.status in COUNTED_STATUSES and self.best_dev_f1 is not None \
            and self.test_f1_at_best is not None

    def value(self, key: str) -> Any:
        return self.params[key] if key in self.params else self.config.get(key)


@dataclass(frozen=True)
class Study:
    dir: Path
    name: str
    description: str
    space: dict[str, Any]
    base_config: dict[str, Any]
    searched: tuple[str, ...]
    metric: str
    mode: str
    seeds: tuple[int, ...]
    code_revision: str
    packages: dict[str, str]
    command: str
    created: str
    trials: tuple[Trial, ...]
    """The search's runs: what every search statistic (summary, figures, significance, importance) reads."""
    confirmations: tuple[Trial, ...] = ()
    """The runs of the confirmation on fresh seeds (``phase: confirm``), reported apart (``confirm.py``)."""

    @property
    def counted(self) -> list[Trial]:
        return [t for t in self.trials if t.counted]

    def search_spec(self, key: str) -> dict[str, Any]:
        spec = (self.space.get("search") or {}).get(key)
        return spec if isinstance(spec, dict) else {}

    def count(self, status: str) -> int:
        return sum(t.status == status for t in self.trials)


def natural_key(text: str) -> tuple[Any, ...]:
    """``trial_9`` before ``trial_10``: digit runs compare as numbers."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", text) if p)


def _number(value: Any, path: Path, key: str) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ReportError(f"{path}: '{key}' must be a number or null, got {value!r}.")
    return None if math.isnan(value) else float(value)


def _typed(key: str, value: Any) -> Any:
    """The trainer's type for a searched value, so that 0 and 0.0 are one configuration."""
    try:
        return coerce(key, value)
    except ConfigError:
        return value


def _best_from_epochs(epochs: tuple[dict[str, float], ...]) -> tuple[float, int, float] | None:
    """(best dev F1, its epoch, test F1 then), first maximum, for records that lack them (e.g. a pruned trial)."""
    rows = [r for r in epochs if isinstance(r.get("dev_f1"), (int, float)) and r.get("test_f1") is not None]
    if not rows:
        return None
    best = max(rows, key=lambda r: r["dev_f1"])  # max() keeps the first of equals
    return float(best["dev_f1"]), int(best.get("epoch", rows.index(best) + 1)), float(best["test_f1"])


def load_trial(folder: Path) -> Trial:
    path = folder / TRIAL_JSON
    raw = read_trial_json(folder)
    params = raw.get("params") or {}
    config = raw.get("config") or {}
    if not isinstance(params, dict) or not isinstance(config, dict):
        raise ReportError(f"{path}: 'params' and 'config' must be objects of dotted keys.")
    epochs = tuple(read_jsonl(folder / EPOCHS_JSONL))
    best_dev = _number(raw.get("best_dev_f1"), path, "best_dev_f1")
    best_epoch = raw.get("best_epoch")
    test_at_best = _number(raw.get("test_f1_at_best"), path, "test_f1_at_best")
    if best_dev is None or test_at_best is None:
        found = _best_from_epochs(epochs)
        if found is not None:
            best_dev, best_epoch, test_at_best = found
    seed = raw.get("seed", config.get("train.seed"))
    epochs_run = raw.get("epochs_run")
    # the epochs file is the truth; a running trial's record may lag behind it
    epochs_run = len(epochs) if epochs or not isinstance(epochs_run, (int, float)) else int(epochs_run)
    error = str(raw.get("error") or "").strip()
    phase = raw.get("phase", SEARCH_PHASE)
    if phase not in PHASES:
        raise ReportError(f"{path}: 'phase' is {phase!r}; allowed: {', '.join(PHASES)}.")
    return Trial(
        trial_id=str(raw.get("trial_id") or folder.name),
        status=raw["status"],
        error=error.splitlines()[0] if error else "",
        params={k: _typed(k, v) for k, v in params.items()},
        seed=int(seed) if isinstance(seed, (int, float)) and not isinstance(seed, bool) else None,
        config=config,
        node=str(raw.get("node") or ""),
        wall_seconds=_number(raw.get("wall_seconds"), path, "wall_seconds"),
        epochs_run=epochs_run,
        best_dev_f1=best_dev,
        best_epoch=int(best_epoch) if isinstance(best_epoch, (int, float)) else None,
        test_f1_at_best=test_at_best,
        epochs=epochs,
        phase=phase,
    )


def load_study(study_dir: str | Path) -> Study:
    study_dir = Path(study_dir)
    meta_path = study_dir / STUDY_JSON
    if not study_dir.is_dir():
        raise NotAStudy(f"{study_dir} is not a folder; expected results/<study>/ written by study/run.py.")
    if not meta_path.is_file():
        raise NotAStudy(f"{study_dir} is not a study folder: it has no study.json "
                        f"(expected results/<study>/ written by study/run.py).")
    meta = read_json(meta_path)
    for key in ("name", "searched"):
        if key not in meta:
            raise ReportError(f"{meta_path}: missing '{key}'; a study.json holds name, space, base_config, "
                              f"searched, metric, mode, seeds, code_revision, packages, command, created.")
    if not isinstance(meta["searched"], list):
        raise ReportError(f"{meta_path}: 'searched' must be a list of dotted keys.")
    space = meta.get("space") or {}
    runs = sorted((load_trial(p) for p in trial_folders(study_dir)), key=lambda t: natural_key(t.trial_id))
    command = meta.get("command") or ""
    if isinstance(command, list):
        command = shlex.join(str(c) for c in command)
    return Study(
        dir=study_dir,
        name=str(meta["name"]),
        description=str(space.get("description") or ""),
        space=space,
        base_config=meta.get("base_config") or {},
        searched=tuple(str(k) for k in meta["searched"]),
        metric=str(meta.get("metric") or "dev_f1"),
        mode=str(meta.get("mode") or "max"),
        seeds=tuple(int(s) for s in meta.get("seeds") or ()),
        code_revision=str(meta.get("code_revision") or "unknown"),
        packages={str(k): str(v) for k, v in (meta.get("packages") or {}).items()},
        command=str(command),
        created=str(meta.get("created") or ""),
        trials=tuple(t for t in runs if t.phase != CONFIRM_PHASE),
        confirmations=tuple(t for t in runs if t.phase == CONFIRM_PHASE),
    )
