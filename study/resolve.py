"""Which study a command line names: the space to run and its folder under the results directory.

Refuses to overwrite a study that holds results, to resume one that is not there, and to resume with a change of
what the study computes (trainer keys, the search, seeds, metric, ...) or with an Optuna storage other than the
study's own. A resume may change how the study runs (``RESUME_APPLIED``); nothing is written here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.inputs import show
from study.optuna_storage import describe
from study.records import SPACE_YAML, read_study, study_is_started
from study.space import Space, SpaceError, load_space


class StudyExistsError(RuntimeError):
    """The study folder already holds results and ``--resume`` was not given (or the reverse)."""


RESUME_APPLIED = ("resources.cpus", "resources.gpus", "max_concurrent", "max_failures", "progress_interval",
                  "keep_checkpoints")
"""Space keys a resume may change: how the study runs, not what a run computes. ``resources.cpus`` changes what
Ray grants a trial; the runs keep the study's torch threads (``train.threads`` of their configs)."""
_NESTED = ("trainer", "search", "resources", "scheduler_options", "reference", "confirm", "resolve")


def _flat(space: Space) -> dict[str, Any]:
    """A space as dotted keys the way ``--set`` names them (``train.epochs``, ``search.i2srm.delta``, ``seeds``)."""
    out: dict[str, Any] = {}
    for key, value in space.to_dict().items():
        if key == "study":
            continue
        if key in _NESTED and isinstance(value, dict):
            out.update({(k if key == "trainer" else f"{key}.{k}"): v for k, v in value.items()})
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class Resolved:
    """The space to run, its folder, and (on ``--resume``) the changes of how it runs that this session applies,
    ``{key: (stored, given)}``."""

    space: Space
    study_dir: Path
    applied: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    threads: int | None = None
    """Torch threads of each run: the stored space's on ``--resume`` (a run computes as the study's others)."""


def resume_changes(stored: Space, given: Space, study_dir: Path) -> dict[str, tuple[Any, Any]]:
    """The keys of ``given`` that differ from the ``stored`` space of a study being resumed, all of them keys a
    resume may change (``RESUME_APPLIED``); any other difference is refused with one line naming the keys."""
    if given.optuna_storage != stored.optuna_storage:
        raise SpaceError(f"--resume: optuna_storage is {describe(given.optuna_storage, study_dir)}, but study "
                         f"{stored.study} keeps its Optuna study in {describe(stored.optuna_storage, study_dir)}; "
                         f"a study resumes on the storage it started with (drop optuna_storage from --set and "
                         f"the space, or start a new study with --name).")
    old, new = _flat(stored), _flat(given)
    changed = {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}
    refused = [k for k in changed if k not in RESUME_APPLIED]
    if refused:
        shown = ", ".join(f"{k} ({_short(changed[k][0])} stored, {_short(changed[k][1])} given)" for k in refused[:5])
        more = f" and {len(refused) - 5} more" if len(refused) > 5 else ""
        raise SpaceError(f"--resume: study {stored.study} keeps its own {shown}{more}: they change what its runs "
                         f"compute. A resume may change only {', '.join(RESUME_APPLIED)}; start a new study with "
                         f"--name to change the others.")
    if (stored.resources.gpus > 0) != (given.resources.gpus > 0):
        raise SpaceError(f"--resume: resources.gpus {given.resources.gpus:g} given, {stored.resources.gpus:g} "
                         f"stored: that moves the runs between the CPU and a GPU, which changes what they compute; "
                         f"a resume may change the GPU fraction, not whether there is one.")
    return changed


def _short(value: Any, limit: int = 40) -> str:
    text = "unset" if value is None else repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def resolve_study(space_arg: str | None, sets: list[str], name: str | None, results_dir: Path,
                  resume: bool) -> Resolved:
    """The space to run and its folder; refuses to overwrite a study, or to resume one that is not there, or
    to resume it with a change of what it computes."""
    if name is not None and (not name or name in (".", "..") or any(c in name for c in "/\\\0") or len(name) > 200):
        raise SpaceError(f"--name {show(name)}: a study name is a plain folder name (at most 200 characters) under "
                         f"{results_dir}.")
    if resume:
        if name is None and space_arg is None:
            raise SpaceError("--resume needs --name or --space to know which study to continue.")
        if name is None and space_arg is not None:
            name = load_space(space_arg, sets).study
        assert name is not None
        study_dir = results_dir / name
        stored_file = study_dir / SPACE_YAML
        if not stored_file.is_file():
            raise StudyExistsError(f"--resume: {study_dir} holds no study (no space.yaml); start it without --resume.")
        stored = load_space(stored_file)
        stored.source = read_study(study_dir).get("space_file", stored.source)
        given = load_space(space_arg if space_arg is not None else stored_file, sets)
        given.study, given.source = stored.study, stored.source
        applied = resume_changes(stored, given, study_dir)
        return Resolved(given, study_dir, applied, threads=stored.trial_threads)
    if space_arg is None:
        raise SpaceError("--space is required (a file, or a name in search_spaces/ such as mixup.yaml).")
    space = load_space(space_arg, sets)
    if name:
        space.study = name
    study_dir = results_dir / space.study
    if study_is_started(study_dir):
        raise StudyExistsError(f"{study_dir} already holds results of a study; continue it with --resume, or "
                               f"choose another --name (nothing was changed).")
    return Resolved(space, study_dir)
