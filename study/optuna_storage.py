"""Where a study keeps its Optuna study: the ``optuna_storage`` space key.

    optuna_storage: null              results/<study>/optuna.db (the default): SQLite in WAL mode, 60 s lock timeout
    optuna_storage: sqlite:///PATH    another SQLite file (60 s lock timeout; a relative PATH is made absolute)
    optuna_storage: postgresql://...  a database server (a SQLAlchemy URL; mysql://... too, and driver
                                      suffixes such as postgresql+psycopg2://)
    optuna_storage: journal:PATH      Optuna's journal file (``JournalStorage`` over ``JournalFileBackend``),
                                      for a folder several machines share (PATH made absolute)

``normalize_storage`` checks a value (the space parser calls it; no Optuna import) and ``open_storage`` opens
it for the study's searcher (the runner, before Ray starts). The default SQLite file is put in WAL journal mode
when it is opened for the study, so a live ``optuna-dashboard`` (or ``optuna.load_study`` in another process)
reads it while the study writes, and the study waits up to ``SQLITE_TIMEOUT_S`` for a lock instead of SQLite's 5 s.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from model.inputs import path_problem, show

OPTUNA_DB = "optuna.db"
JOURNAL_PREFIX = "journal:"
RDB_DIALECTS = ("sqlite", "postgresql", "mysql")
SQLITE_TIMEOUT_S = 60
ACCEPTED = ("null (the default, results/<study>/optuna.db), an RDB URL (sqlite:///PATH, postgresql://..., "
            "mysql://...) or journal:PATH (an Optuna journal file)")


class StorageError(ValueError):
    """An ``optuna_storage`` value that is malformed, or a storage that cannot be opened; one line."""


def _absolute(path: str) -> str:
    problem = path_problem(path)
    if problem is not None:
        raise StorageError(f"names the path {show(path)}, which {problem}")
    return str(Path(path).expanduser().resolve())


def normalize_storage(value: Any) -> str | None:
    """The stored form of an ``optuna_storage`` value: None (the default), ``journal:/ABS/PATH`` or an RDB
    URL (a relative SQLite path made absolute). ``StorageError`` says what is wrong (without the key)."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise StorageError(f"is {show(value)}")
    value = value.strip()
    shown = describe(value)  # a password in a URL is not repeated in messages
    if value.startswith(JOURNAL_PREFIX):
        path = value[len(JOURNAL_PREFIX):]
        if not path.strip() or path.endswith(("/", "\\")):
            raise StorageError(f"is {show(shown)}, which names no journal file")
        return JOURNAL_PREFIX + _absolute(path)
    scheme, sep, rest = value.partition("://")
    if not sep:
        hint = (f" (a file path: sqlite:///{value} for SQLite, journal:{value} for a journal file)"
                if "/" in value or "." in value else "")
        raise StorageError(f"is {show(shown)}, neither a URL nor journal:PATH{hint}")
    dialect = scheme.split("+", 1)[0].lower()
    if dialect not in RDB_DIALECTS:
        hint = " (SQLAlchemy spells it postgresql://)" if dialect == "postgres" else ""
        raise StorageError(f"is {show(shown)}: the database {dialect!r} is not one Optuna stores studies in{hint}")
    if dialect == "sqlite":
        # sqlite:///relative/path or sqlite:////absolute/path; no :memory: (nothing to resume from).
        if not rest.startswith("/") or rest in ("/", "/:memory:") or rest.startswith("/:memory:"):
            raise StorageError(f"is {show(shown)}: a SQLite URL names a file, sqlite:///PATH (in memory nothing "
                               f"is kept for --resume)")
        path, q, query = rest[1:].partition("?")
        return f"{scheme}:///{_absolute(path)}{q}{query}"
    if not rest.strip("/"):
        raise StorageError(f"is {show(shown)}, which names no server or database")
    return value


def describe(spec: str | None, study_dir: Path | None = None) -> str:
    """The storage for messages, a password in a URL masked."""
    if spec is None:
        return str(Path(study_dir) / OPTUNA_DB) if study_dir is not None else OPTUNA_DB
    return re.sub(r"(://[^/:@]*):[^/@]*@", r"\1:***@", spec)


def enable_wal(db: Path) -> str:
    """Put a SQLite file (created if missing) in WAL journal mode, which the file keeps: readers in other
    processes (optuna-dashboard) then never block the study's writes, nor it theirs. The mode it is in."""
    import sqlite3

    con = sqlite3.connect(str(db), timeout=SQLITE_TIMEOUT_S)
    try:
        return str(con.execute("PRAGMA journal_mode=WAL").fetchone()[0])
    finally:
        con.close()


def _sqlite_engine_kwargs(url: str) -> dict[str, Any]:
    return {"connect_args": {"timeout": SQLITE_TIMEOUT_S}} if url.split("://", 1)[0].startswith("sqlite") else {}


def _first_line(exc: BaseException) -> str:
    text = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def open_storage(spec: str | None, study_dir: Path) -> Any:
    """The Optuna storage of a study (``spec`` as ``normalize_storage`` gave it), created if missing.

    The default ``<study_dir>/optuna.db`` goes into WAL mode first; ``study_dir`` must exist. A storage
    that cannot be opened (no such folder, no database driver, the server refuses) raises ``StorageError``.
    """
    import optuna

    where = describe(spec, study_dir)
    try:
        if spec is None:
            db = (Path(study_dir) / OPTUNA_DB).resolve()
            enable_wal(db)
            url = f"sqlite:///{db}"
            return optuna.storages.RDBStorage(url, engine_kwargs=_sqlite_engine_kwargs(url))
        if spec.startswith(JOURNAL_PREFIX):
            path = Path(spec[len(JOURNAL_PREFIX):])
            if not path.parent.is_dir():
                raise StorageError(f"optuna_storage {where}: the folder {path.parent} does not exist (create it, "
                                   f"on a disk every machine of the study shares).")
            from optuna.storages.journal import JournalFileBackend

            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        if spec.startswith("sqlite"):
            folder = Path(spec.partition(":///")[2].partition("?")[0]).parent
            if not folder.is_dir():
                raise StorageError(f"optuna_storage {where}: the folder {folder} does not exist.")
        return optuna.storages.RDBStorage(spec, engine_kwargs=_sqlite_engine_kwargs(spec))
    except StorageError:
        raise
    except ImportError as e:  # Optuna's "Failed to import DB access module", from SQLAlchemy's dialect import
        missing = _first_line(e.__cause__ or e)
        raise StorageError(f"optuna_storage {where}: cannot be opened, its database driver is not installed "
                           f"({missing}; install it, or name an installed one in the URL, e.g. "
                           f"postgresql+psycopg2:// or mysql+pymysql://).") from None
    except Exception as e:  # sqlalchemy OperationalError (server down, permissions, bad database) ...
        raise StorageError(f"optuna_storage {where}: cannot be opened: {_first_line(e)}") from None
