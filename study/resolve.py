"""Which study a command line names: the space to run and its folder under the results directory.

Refuses to overwrite a study that holds results, to resume one that is not there, and to resume with a space
or an Optuna storage other than the study's own; nothing is written here.
"""

from __future__ import annotations

from pathlib import Path

from study.optuna_storage import describe
from study.records import SPACE_YAML, read_study, study_is_started
from study.space import Space, SpaceError, load_space


class StudyExistsError(RuntimeError):
    """The study folder already holds results and ``--resume`` was not given (or the reverse)."""


def resolve_study(space_arg: str | None, sets: list[str], name: str | None, results_dir: Path,
                  resume: bool) -> tuple[Space, Path]:
    """The space to run and its folder; refuses to overwrite a study, or to resume one that is not there."""
    if name is not None and (not name or name in (".", "..") or any(c in name for c in "/\\")):
        raise SpaceError(f"--name {name!r}: a study name is a plain folder name under {results_dir}.")
    if resume:
        if name is None and space_arg is None:
            raise SpaceError("--resume needs --name or --space to know which study to continue.")
        if name is None:
            name = load_space(space_arg, sets).study
        study_dir = results_dir / name
        stored = study_dir / SPACE_YAML
        if not stored.is_file():
            raise StudyExistsError(f"--resume: {study_dir} holds no study (no space.yaml); start it without --resume.")
        space = load_space(stored)
        space.source = read_study(study_dir).get("space_file", space.source)
        given = load_space(space_arg, sets) if space_arg is not None else load_space(stored, sets) if sets else None
        if given is not None and given.optuna_storage != space.optuna_storage:
            raise SpaceError(f"--resume: optuna_storage is {describe(given.optuna_storage, study_dir)}, but study "
                             f"{space.study} keeps its Optuna study in {describe(space.optuna_storage, study_dir)}; "
                             f"a study resumes on the storage it started with (drop optuna_storage from --set and "
                             f"the space, or start a new study with --name).")
        if space_arg is not None:
            given.study = space.study
            if given.to_dict() != space.to_dict():
                raise SpaceError(f"--resume: the space given ({space_arg} with --set) differs from the stored "
                                 f"{stored}; a study resumes with its own space (drop --space/--set, or start a "
                                 f"new study with --name).")
        return space, study_dir
    if space_arg is None:
        raise SpaceError("--space is required (a file, or a name in search_spaces/ such as mixup.yaml).")
    space = load_space(space_arg, sets)
    if name:
        space.study = name
    study_dir = results_dir / space.study
    if study_is_started(study_dir):
        raise StudyExistsError(f"{study_dir} already holds results of a study; continue it with --resume, or "
                               f"choose another --name (nothing was changed).")
    return space, study_dir
