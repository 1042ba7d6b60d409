"""Read a cache file, or build it once under a file lock: the protocol the encoded-data cache and the
visual feature store share.

Files are written to a temporary name and renamed into place whole, so reading without the lock is safe
(the fast path). A missing or unusable file is judged again under ``<file>.lock``: another process may
have built it while this one waited; if it is still unusable it is deleted (no writer can race with that
under the lock), temporary files left by a killed writer are removed, and this process builds and writes.
What happens when the folder or the lock cannot be had, or the write fails, is each cache's own policy
(``acquire`` and ``write``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")


def read_or_build(file: Path, read: Callable[[], T], build: Callable[[], T], write: Callable[[T], None],
                  unusable: type[Exception], acquire: Callable[[], Any | None], label: str,
                  log: logging.Logger) -> tuple[T, bool]:
    """``read()`` the file, or ``build()`` and ``write()`` it under the lock ``acquire()`` returns (already
    held; ``None`` means: build without caching). Returns the value and whether this process built it.
    ``unusable``: what ``read`` raises for a file that is corrupt, partial or for another key; ``label`` and
    ``log``: how the rebuild of such a file is reported."""
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
        for stale in file.parent.glob(file.name + ".tmp*"):  # left by a killed writer; we hold the lock
            stale.unlink(missing_ok=True)
        built = build()
        write(built)
        return built, True
    finally:
        lock.release()
