"""The trainer's resume state of one run (a configuration with one seed), at a fixed place in the study's storage.

Ray Tune executes the runs but keeps no checkpoint of them: each run keeps its own state here, under a name
that does not depend on which Tune trial (or which driver session) runs it, so a run handed out again after a
driver kill, a node loss or a ``max_failures`` retry continues from its last epoch::

    <storage>/<study>/state/<run_id>/
        epoch_NNNN/      the trainer's checkpoint after epoch NNNN (``model.train``'s state file)
        latest.json      {"epoch": N, "folder": "epoch_NNNN", "history": [per-epoch metrics]}, written last
        finished.json    {"status": "completed" | "pruned", "result": {final metrics}} once the run has ended

``<storage>`` is a local folder or a URI that every node reaches (``pyarrow.fs``: s3://, gs://, ...). A
checkpoint folder is complete before ``latest.json`` names it, and the older one is deleted only after, so a
kill at any point leaves a state that names a whole checkpoint. A finished run's checkpoints are deleted (a
checkpoint is hundreds of MB) unless the space keeps them (``keep_checkpoints``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from model.fileio import atomic_write_fs

log = logging.getLogger("study")

STATE_DIR = "state"
LATEST_JSON = "latest.json"
FINISHED_JSON = "finished.json"


def state_root(storage: str, name: str) -> str:
    """Where the runs of study ``name`` keep their states: ``<storage>/<name>/state``."""
    return f"{storage.rstrip('/')}/{name}/{STATE_DIR}"


class ResumeState:
    """The stored state of run ``run_id`` under ``root`` (``state_root``); every method is safe to call from
    the driver and from a trial on any node."""

    def __init__(self, root: str, run_id: str):
        from pyarrow.fs import FileSystem

        self.fs, base = FileSystem.from_uri(root) if "://" in root else FileSystem.from_uri(str(Path(root).resolve()))
        self.path = f"{base.rstrip('/')}/{run_id}"
        self.run_id = run_id
        self._latest: dict[str, Any] | None = None  # latest.json as last read or written by this object

    # ------------------------------------------------------------------------------------------ reading

    def _read_json(self, name: str) -> dict[str, Any] | None:
        from pyarrow.fs import FileType

        path = f"{self.path}/{name}"
        if self.fs.get_file_info(path).type != FileType.File:
            return None
        try:
            with self.fs.open_input_stream(path) as f:
                doc = json.loads(f.read().decode("utf-8"))
        except (OSError, ValueError) as e:
            log.warning("run %s: %s cannot be read (%s); treated as absent", self.run_id, path, e)
            return None
        return doc if isinstance(doc, dict) else None

    def latest(self) -> dict[str, Any] | None:
        """``latest.json``: the newest whole checkpoint and the metrics of every epoch up to it."""
        self._latest = self._read_json(LATEST_JSON)
        return self._latest

    def _known_latest(self) -> dict[str, Any] | None:
        """``latest.json`` as this object last read or wrote it, read now if it never did."""
        return self._latest if self._latest is not None else self.latest()

    def finished(self) -> dict[str, Any] | None:
        """``finished.json`` of a run that has ended (None while it has not)."""
        return self._read_json(FINISHED_JSON)

    def fetch(self, into: Path) -> Path | None:
        """Copy the newest checkpoint into the local folder ``into``; that folder, or None when there is none."""
        from pyarrow.fs import FileType, LocalFileSystem, copy_files

        latest = self._known_latest()
        if not latest or not latest.get("folder"):
            return None
        src = f"{self.path}/{latest['folder']}"
        if self.fs.get_file_info(src).type != FileType.Directory:
            log.warning("run %s: latest.json names %s, which is gone; the run starts over", self.run_id, src)
            return None
        into = Path(into)
        into.mkdir(parents=True, exist_ok=True)
        copy_files(src, str(into.resolve()), source_filesystem=self.fs, destination_filesystem=LocalFileSystem())
        return into

    # ------------------------------------------------------------------------------------------ writing

    def _write_json(self, name: str, doc: Mapping[str, Any]) -> None:
        atomic_write_fs(self.fs, f"{self.path}/{name}", (json.dumps(doc) + "\n").encode("utf-8"))

    def save(self, checkpoint: Path, epoch: int, history: Sequence[Mapping[str, Any]]) -> None:
        """Store the local checkpoint folder of ``epoch`` and name it the newest; the older one is deleted."""
        from pyarrow.fs import LocalFileSystem, copy_files

        folder = f"epoch_{epoch:04d}"
        old = (self._known_latest() or {}).get("folder")
        self.fs.create_dir(self.path, recursive=True)
        self.fs.delete_dir_contents(f"{self.path}/{folder}", missing_dir_ok=True)
        self.fs.create_dir(f"{self.path}/{folder}", recursive=True)
        copy_files(str(Path(checkpoint).resolve()), f"{self.path}/{folder}", source_filesystem=LocalFileSystem(),
                   destination_filesystem=self.fs)
        self._latest = {"epoch": epoch, "folder": folder, "history": [dict(h) for h in history]}
        self._write_json(LATEST_JSON, self._latest)
        if old and old != folder:
            self.fs.delete_dir(f"{self.path}/{old}")

    def finish(self, status: str, result: Mapping[str, Any], keep_checkpoint: bool = False) -> None:
        """Mark the run ended (``completed`` or ``pruned``) with its final result; its checkpoints are
        deleted unless ``keep_checkpoint``. Idempotent: a run finished already keeps its first marker."""
        from pyarrow.fs import FileSelector, FileType

        if self.finished() is None:
            self.fs.create_dir(self.path, recursive=True)
            self._write_json(FINISHED_JSON, {"status": status, "result": dict(result)})
        if keep_checkpoint:
            return
        for info in self.fs.get_file_info(FileSelector(self.path, allow_not_found=True)):
            if info.type == FileType.Directory and info.base_name.startswith("epoch_"):
                self.fs.delete_dir(info.path)
