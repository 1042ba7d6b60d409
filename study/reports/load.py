"""Read a stored study (``results/<study>/``) into typed records; the reports read nothing else.

The layout is the platform contract: ``study.json``, ``trials/<run>/trial.json`` and ``trials/<run>/epochs.jsonl``.
The files are read by ``study/records.py``, the module that writes them, and a run's record is typed once, by
``study.schema.Run``; this module adds the study around the runs for the reports. The runs of the
confirmation on fresh seeds (``phase: confirm``) are set apart here, once: ``Study.trials`` holds the search's
runs, which every search statistic reads, and ``Study.confirmations`` the others (``confirm.py``). A malformed
record raises ``RecordError`` naming the file (and line) and what is expected.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study.records import CONFIG_YAML, STUDY_JSON, TRIALS_DIR, read_json, read_runs
from study.schema import CONFIRM_PHASE, RecordError, Run
from study.space import Param, SpaceError

class ReportError(ValueError):
    """A report that cannot be made as asked (a folder that is no study, ``--combine``/``--compare`` inputs); the
    message names the folder or option and what is accepted. A stored record that cannot be read raises
    ``study.schema.RecordError`` instead."""


class NotAStudy(ReportError):
    """The folder holds no ``study.json``."""


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
    command: str
    created: str
    trials: tuple[Run, ...]
    """The search's runs: what every search statistic (summary, figures, significance, importance) reads."""
    confirmations: tuple[Run, ...] = ()
    """The runs of the confirmation on fresh seeds (``phase: confirm``), reported apart (``confirm.py``)."""
    params: dict[str, Param] = field(default_factory=dict)
    """The searched keys' specs, typed (``study.space.Param``)."""

    @property
    def counted(self) -> list[Run]:
        return [t for t in self.trials if t.counted]

    def listed(self, key: str) -> tuple[Any, ...]:
        """The values a grid/choice search of ``key`` lists, in the space's order (none for a range)."""
        param = self.params.get(key)
        return param.values if param is not None else ()

    def score(self, run: Run) -> float | None:
        """The run's score on the study's metric (``study.schema.score``), the number Optuna was told."""
        return run.score(self.metric, self.mode)

    def count(self, status: str) -> int:
        return sum(t.status == status for t in self.trials)

    @property
    def shown_dir(self) -> str:
        """The folder as a user at the repository root names it; independent of how report.py was called."""
        folder = self.dir.resolve()
        return f"{folder.parent.name}/{folder.name}" if folder.parent.name == "results" else folder.name

    def rerun_command(self, run: Run) -> str:
        """The command that trains ``run`` again as it ran: its complete trainer config (``config.yaml``)."""
        return f"python -m model.train --config {self.shown_dir}/{TRIALS_DIR}/{run.trial_id}/{CONFIG_YAML}"


def natural_key(text: str) -> tuple[Any, ...]:
    """``trial_9`` before ``trial_10``: digit runs compare as numbers."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", text) if p)


def _params(meta_path: Path, space: dict[str, Any]) -> dict[str, Param]:
    search = space.get("search") or {}
    try:
        return {str(k): Param.from_dict(str(k), v) for k, v in search.items() if isinstance(v, dict)}
    except SpaceError as e:
        raise RecordError(f"{meta_path}: 'space': {e}") from None


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
            raise RecordError(f"{meta_path}: missing '{key}'; a study.json holds name, space, base_config, "
                              f"searched, metric, mode, seeds, code_revision, packages, command, created.")
    if not isinstance(meta["searched"], list):
        raise RecordError(f"{meta_path}: 'searched' must be a list of dotted keys.")
    space = meta.get("space") or {}
    runs = sorted(read_runs(study_dir), key=lambda t: natural_key(t.trial_id))
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
        command=str(command),
        created=str(meta.get("created") or ""),
        trials=tuple(t for t in runs if t.phase != CONFIRM_PHASE),
        confirmations=tuple(t for t in runs if t.phase == CONFIRM_PHASE),
        params=_params(meta_path, space),
    )
