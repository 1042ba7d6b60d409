"""Files on disk, written once here for model/ and study/: atomic writes, folder swaps, the read-or-build
protocol of the on-disk caches, and the hashes and cache folder they are keyed by.

Atomic: a file is written to a temporary name in its own folder, then renamed over its final name
(``os.replace``), so a reader (another trial, a browser, LaTeX, a second ``report.py``) sees the old
file or the new one, never half of one, and a crash mid-write leaves the previous version in place. The
temporary name is ``.<name>.<pid>.<8 hex>.tmp<suffix>`` (``temp_path``): unique per writer, hidden, and
created by the writer, so it gets the usual permissions (umask), not ``mkstemp``'s private 0600. A
write that fails removes its temporary file; one killed outright leaves it, and the caches remove such
leftovers under their lock (``remove_stale_temps``). Nothing is fsynced: a rename survives a crash of
the process, not necessarily of the machine.

Read or build: a cache file is read without a lock (safe: it is only ever renamed into place whole);
a missing or unusable one is judged again under ``<file>.lock``, where another process may have built
it while this one waited; if it is still unusable it is deleted (no writer can race with that under the
lock), temporary files left by a killed writer are removed, and this process builds and writes. What
happens when the folder or the lock cannot be had, or the write fails, is each cache's own policy
(``acquire`` and ``write`` of ``read_or_build``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

T = TypeVar("T")


# ------------------------------------------------------------------------------------------- files

def temp_path(path: Path) -> Path:
    """A fresh name beside ``path`` for writing it: ``.<name>.<pid>.<8 hex>.tmp<suffix>`` (nothing created)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")


def remove_stale_temps(path: Path) -> None:
    """Delete the temporary files a killed writer of ``path`` left: ``temp_path``'s, and ``<name>.tmp*`` files
    (the other name a cache folder may hold). Only under a lock that every writer holds: a
    live writer's file matches too."""
    for pattern in (f".{path.name}.*.tmp*", f"{path.name}.tmp*"):
        for stale in path.parent.glob(pattern):
            stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """``with atomic_path(path) as tmp:`` write ``tmp`` (any writer that takes a path); when the block ends
    without an exception ``tmp`` replaces ``path``. The temporary file never outlives the block; the
    folder is created if missing; an exception of the writer or the rename propagates unchanged."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp, open(tmp, "xb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8, line ends as given) to ``path`` atomically; returns ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(obj: Any, path: Path) -> Path:
    """``torch.save(obj, path)``, atomically; returns ``path``."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


# ----------------------------------------------------------------------------------------- folders

def _sibling_folder(final: Path, tag: str) -> Path:
    """A fresh empty private folder ``.<name>.<tag>-XXXXXXXX`` beside ``final``."""
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.{tag}-", dir=final.parent))


@contextlib.contextmanager
def temp_folder(final: Path) -> Iterator[Path]:
    """``with temp_folder(final) as tmp:`` fill ``tmp`` (``.<name>.tmp-XXXXXXXX`` beside ``final``, mode 0755
    so that, moved into place, it reads like its siblings), then move it into place (``swap_folder`` or a
    rename). Whatever is still at ``tmp`` when the block ends, normally or by an exception, is removed."""
    tmp = _sibling_folder(final, "tmp")
    tmp.chmod(0o755)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def swap_folder(new: Path, final: Path) -> Path:
    """Put the freshly written folder ``new`` in place of ``final``; the old one is removed, not merged.

    POSIX cannot ``rename`` onto a non-empty folder, so the old folder is first moved aside (into
    ``.<name>.old-XXXXXXXX``, kept if the second rename fails); the window in which ``final`` is absent is
    two renames long. Returns ``final``.
    """
    old = None
    if final.exists():
        old = _sibling_folder(final, "old")
        os.replace(final, old / final.name)
    os.replace(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def atomic_write_fs(fs: Any, path: str, data: bytes) -> None:
    """``atomic_write_bytes`` on a ``pyarrow.fs`` filesystem (a local disk, or an object store such as S3
    that the study's storage may be): written under a temporary name beside ``path``, then moved over it
    (a rename on a local disk; an object store writes an object whole anyway)."""
    folder, _, name = path.rpartition("/")
    tmp = f"{folder}/.{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    fs.move(tmp, path)


# ------------------------------------------------------------------------------------------ caches

def cache_dir(name: str) -> Path:
    """``$I2SRM_CACHE/<name>``, else ``~/.cache/i2srm/<name>``: where the on-disk caches live."""
    base = os.environ.get("I2SRM_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "i2srm") / name


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sources_sha256(folder: Path, names: Sequence[str]) -> str:
    """sha256 (hex) of the files ``names`` (relative to ``folder``), each with its name: a cache key part
    that changes whenever the code that computes the cached content does."""
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode() + b"\0" + (folder / name).read_bytes())
    return h.hexdigest()


def open_lock_file(path: Path) -> None:
    """Create (or open) the lock file ``path`` once, so that a folder where it cannot be made raises ``OSError``
    now: ``filelock`` retries a failed create as if the lock were held, until its timeout."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o644))


@contextlib.contextmanager
def held_lock(path: Path, timeout: float, error: type[Exception], what: str) -> Iterator[None]:
    """Hold the ``filelock`` lock ``path`` for the block. ``error`` (one line naming the folder, ``what`` the lock
    guards) when the lock file cannot be created there or another process holds the lock for ``timeout`` s."""
    from filelock import FileLock, Timeout

    try:
        open_lock_file(path)
    except OSError as e:
        raise error(f"cannot create the lock file {path.name} in {path.parent} ({e.strerror or type(e).__name__}) "
                    f"for {what}; use a folder this user can write.") from None
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise error(f"waited {timeout:.0f} s for the lock {path}, held by another process writing {what}; if none "
                    f"is running (a stale lock), delete the lock file.") from None
    try:
        yield
    finally:
        lock.release()


def read_or_build(file: Path, read: Callable[[], T], build: Callable[[], T], write: Callable[[T], None],
                  unusable: type[Exception], acquire: Callable[[], Any | None], label: str,
                  log: logging.Logger) -> tuple[T, bool]:
    """``read()`` the file, or ``build()`` and ``write()`` it under the lock ``acquire()`` returns (already
    held; ``None`` means: build without caching). Returns the value and whether this process built it.
    ``unusable``: what ``read`` raises for a file that is corrupt, partial or for another key; ``label`` and
    ``log``: how the rebuild of such a file is reported. ``write`` must write atomically (``atomic_path``)."""
    if file.is_file():
        try:
            return read(), False
        except unusable:
            pass  # judged again under the lock, where deleting it cannot race with a writer
    lock = acquire()
    if lock is None:
        return build(), True
    try:
        if file.is_file():
            try:
                return read(), False  # another process built it while we waited
            except unusable as e:
                log.warning("%s %s is not usable: %s; deleting and rebuilding it", label, file, e)
                file.unlink(missing_ok=True)
        remove_stale_temps(file)  # left by a killed writer; we hold the lock
        built = build()
        write(built)
        return built, True
    finally:
        lock.release()
