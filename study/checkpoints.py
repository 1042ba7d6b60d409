"""The trials' checkpoints in the study's storage (Ray Tune's experiment folder, local or a URI).

Tune keeps one checkpoint per trial (``num_to_keep=1``): reporting epoch ``k`` writes ``checkpoint_<k-1>``
and deletes the one before it. Its saved experiment state is written separately, so a driver killed
between the two names a checkpoint that no longer exists. Both functions here keep ``--resume`` working
after such a kill: the finished trials' markers go into every older checkpoint folder, and an unfinished
trial's named checkpoint is recreated from its newest one.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Mapping

from model.fileio import atomic_copy_folder
from study.trainable import FINISHED_MARKER

log = logging.getLogger("study")

CHECKPOINT_DIR = re.compile(r"checkpoint_(\d{6})")


def _checkpoints(fs: Any, root: str) -> dict[int, str]:
    """``{index: path}`` of the ``checkpoint_NNNNNN`` folders directly under ``root``."""
    from pyarrow.fs import FileSelector, FileType

    found = {}
    for info in fs.get_file_info(FileSelector(root, allow_not_found=True)):
        match = CHECKPOINT_DIR.fullmatch(info.base_name)
        if info.type == FileType.Directory and match:
            found[int(match.group(1))] = info.path
    return found


def drop_checkpoints(trial: Any, final: Mapping[str, Any] | None = None) -> None:
    """Empty a finished trial's checkpoints in the study's storage, leaving a ``finished.json`` marker.

    A checkpoint of the trainer (weights + AdamW state) is hundreds of MB per trial. The folders stay, with
    the trial's final result in the marker: if the driver dies before Tune has saved that the trial
    finished, ``--resume`` restores the trial from the checkpoint its saved state names, and the trainable,
    finding the marker, reports the final result again and ends instead of training again. Tune's saved
    state can name an older checkpoint than the last, so every earlier ``checkpoint_NNNNNN`` gets a marker too.
    """
    try:
        fs, root = trial.storage.storage_filesystem, trial.storage.trial_fs_path
        payload = json.dumps({"finished": True, "result": dict(final or {})}).encode() + b"\n"
        found = _checkpoints(fs, root)
        last = max(found, default=-1)
        paths = set(found.values()) | {f"{root}/checkpoint_{i:06d}" for i in range(last)}
        for path in sorted(paths):
            fs.create_dir(path, recursive=True)
            fs.delete_dir_contents(path)
            with fs.open_output_stream(f"{path}/{FINISHED_MARKER}") as f:
                f.write(payload)
    except Exception as e:  # disk space only: never fail the study over it
        log.warning("could not delete the checkpoints of trial %s: %s", trial.trial_id, e)


def _copy_checkpoint(fs: Any, src: str, dst: str) -> None:
    """``dst`` becomes a copy of the checkpoint folder ``src``. A real copy, not hard links: Tune may later
    write its next checkpoint into ``src``'s folder in place, which must not change ``dst``."""
    from pyarrow.fs import LocalFileSystem, copy_files

    if isinstance(fs, LocalFileSystem):
        atomic_copy_folder(src, dst)  # complete or absent: a kill mid-copy leaves no half checkpoint under its name
    else:
        copy_files(src, dst, source_filesystem=fs, destination_filesystem=fs)


def refill_deleted_checkpoints(experiment: str) -> dict[str, str]:
    """Before ``Tuner.restore``: for every trial whose checkpoint Tune's saved state (at ``experiment``, a
    path or a URI) names but which Tune has since deleted, recreate it as a copy of the trial's newest one.

    A trial restored from that copy resumes from its newest epoch (the trainer reads the epoch from the
    checkpoint itself), which is what it would have done had Tune's state been saved in time; without it
    Tune fails the trial ("Could not recover from checkpoint as it does not exist on storage anymore").
    Only the named folder is recreated (a checkpoint can be hundreds of MB). Returns ``{trial id: the
    checkpoint folder name copied}`` for the trials that needed it.
    """
    from pyarrow.fs import FileType
    from ray.tune import ExperimentAnalysis

    try:
        trials = ExperimentAnalysis(experiment).trials
    except Exception as e:  # the repair never blocks a resume: Tune's restore reports what is wrong
        log.warning("could not read Tune's saved state at %s to check its checkpoints: %s", experiment, e)
        return {}
    refilled: dict[str, str] = {}
    for trial in trials:
        named = trial.checkpoint
        if named is None:
            continue
        fs, path = named.filesystem, named.path.rstrip("/")
        if fs.get_file_info(path).type != FileType.NotFound:
            continue
        parent, _, name = path.rpartition("/")
        match = CHECKPOINT_DIR.fullmatch(name)
        newer = ({i: p for i, p in _checkpoints(fs, parent).items() if i > int(match.group(1))} if match else {})
        if not newer:
            log.warning("trial %s: its checkpoint %s is gone and no newer one exists; Tune will fail the trial "
                        "on restore", trial.trial_id, path)
            continue
        source = newer[max(newer)]
        _copy_checkpoint(fs, source, path)
        refilled[trial.trial_id] = source.rpartition("/")[2]
        log.warning("trial %s: %s recreated as a copy of %s (Tune deleted it after its state was last saved); "
                    "the trial resumes from its latest epoch", trial.trial_id, name, refilled[trial.trial_id])
    return refilled
