"""Where a study keeps its Optuna study (the ``optuna_storage`` key): the default ``optuna.db`` in WAL mode,
read by a second process while the study runs; a study on a journal file; bad values and a resume on
another storage refused in one line. (A result Optuna could not be told: tests/test_search.py.)

Real Optuna, and for the two studies real Ray Tune and the trainer at its smallest (the tiny BERT of the
``tiny_encoder`` fixture of conftest.py, 5% synthetic MNER, 2 epochs).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from ray_cluster import (STAND_IN, STAND_IN_ENV, kill_group, run_here, start_study, study_env,  # noqa: I001
                         wait_until, write_space)

from study.optuna_storage import SQLITE_TIMEOUT_S, StorageError, normalize_storage, open_storage
from study.run import main
from study.space import SpaceError, dump_space, load_space

BODY = """\
study: {name}
search:
  i2srm.delta: {{grid: [0.0, 0.7]}}
sampler: grid
seeds: [1]
resources: {{cpus: 1, gpus: 0}}
max_concurrent: 1
progress_interval: 1
reports: [summary]
"""

# Run in another process while the study runs: opens the study the way optuna-dashboard does (a plain
# sqlite URL, SQLite's default 5 s lock timeout) every second, marks its first good read with a file, and
# stops when the test creates the stop file (after the study's process has exited).
READER = textwrap.dedent("""\
    import json, os, sqlite3, sys, time
    from pathlib import Path
    import optuna
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    db, name, first, stop = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
    seen, reads, errors, mode = 0, 0, [], ""
    while reads < 300:
        done = stop.exists()
        try:
            seen = max(seen, len(optuna.load_study(study_name=name, storage=f"sqlite:///{db}").trials))
            con = sqlite3.connect(db)
            mode = con.execute("PRAGMA journal_mode").fetchone()[0]
            con.close()
            reads += 1
            first.touch()
        except Exception as e:
            errors.append(f"{type(e).__name__}: {e}")
        if done:
            break
        time.sleep(1.0)
    print(json.dumps({"seen": seen, "reads": reads, "errors": errors, "mode": mode}))
""")



def trials_in(db: Path) -> int:
    """Optuna trials in a SQLite file, read-only (0 while the file or its tables are not there yet)."""
    import sqlite3

    if not db.is_file():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return int(con.execute("SELECT COUNT(*) FROM trials").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def test_a_second_process_reads_the_running_study_in_wal_mode(tmp_path: Path, tiny_encoder: Path) -> None:
    # The trainer's stand-in: 1.5-s epochs keep the study running while the reader starts (no model is loaded).
    space = write_space(tmp_path / "live.yaml", tiny_encoder, STAND_IN.format(seconds=1.5) + BODY.format(name="live"))
    results = tmp_path / "results"
    db = results / "live" / "optuna.db"
    first, stop = tmp_path / "first_read", tmp_path / "stop"
    proc = start_study(["--space", str(space), "--results-dir", str(results)], cwd=tmp_path,
                       log=tmp_path / "study.log", **STAND_IN_ENV)
    reader = None
    try:
        wait_until(lambda: trials_in(db), timeout=300, what="a trial in optuna.db", proc=proc)
        reader = subprocess.Popen([sys.executable, "-c", READER, str(db), "live", str(first), str(stop)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=study_env())
        # The first read is done while the study still runs (wait_until fails if the study ends before).
        wait_until(first.exists, timeout=300, what="a read of optuna.db from another process", proc=proc)
        assert proc.wait(timeout=600) == 0, (tmp_path / "study.log").read_text(errors="replace")[-3000:]
        stop.touch()
        out, err = reader.communicate(timeout=120)
        assert reader.returncode == 0, err[-3000:]
        seen = json.loads(out.strip().splitlines()[-1])
    finally:
        stop.touch()
        if proc.poll() is None:
            kill_group(proc)
        if reader is not None and reader.poll() is None:
            reader.kill()
            reader.wait()
    assert seen["errors"] == [] and seen["reads"] >= 1 and seen["seen"] >= 1, seen
    assert seen["mode"] == "wal"
    final = optuna.load_study(study_name="live", storage=f"sqlite:///{db}")
    assert len(final.trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in final.trials)


@pytest.mark.usefixtures("local_ray")
def test_a_study_on_a_journal_file_runs_and_resume_keeps_its_storage(tmp_path: Path, tiny_encoder: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    space = write_space(tmp_path / "jrnl.yaml", tiny_encoder, STAND_IN.format(seconds=0) + BODY.format(name="jrnl"))
    results, shared = tmp_path / "results", tmp_path / "shared"
    shared.mkdir()
    journal = shared / "jrnl.log"
    proc = run_here(["--space", str(space), "--results-dir", str(results), "--set",
                     f"optuna_storage=journal:{journal}"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    ot = optuna.load_study(study_name="jrnl", storage=storage)
    assert sorted(t.params["i2srm.delta"] for t in ot.trials) == [0.0, 0.7]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in ot.trials)
    d = results / "jrnl"
    assert not (d / "optuna.db").exists()
    assert load_space(d / "space.yaml").optuna_storage == f"journal:{journal}"
    assert json.loads((d / "study.json").read_text())["space"]["optuna_storage"] == f"journal:{journal}"

    # --resume on another storage is refused, before anything starts.
    code = main(["--name", "jrnl", "--results-dir", str(results), "--resume", "--set", "optuna_storage=null"])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "optuna_storage" in lines[0] and str(journal) in lines[0], lines

    # A new study under the same name on the same journal is refused: it would continue the old Optuna study.
    code = main(["--space", str(space), "--name", "jrnl", "--results-dir", str(tmp_path / "other"), "--set",
                 f"optuna_storage=journal:{journal}"])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "already holds an Optuna study named 'jrnl'" in lines[0], lines
    assert not (tmp_path / "other").exists()


MINIMAL = """\
study: tiny
trainer:
  data.name: synthetic-mner
  train.epochs: 1
search:
  i2srm.delta: {grid: [0.0, 0.5]}
seeds: [1]
"""

BAD = ["redis://localhost/0", "postgres://host/db", "sqlite:///:memory:", "/tmp/optuna.db", "journal:", "3"]


@pytest.mark.parametrize("value", BAD)
def test_a_bad_value_is_one_line_naming_the_key(tmp_path: Path, value: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(MINIMAL, encoding="utf-8")
    results = tmp_path / "results"
    code = main(["--space", str(space), "--results-dir", str(results), "--set", f"optuna_storage={value}"])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: --set optuna_storage="), lines
    assert "'optuna_storage' is" in lines[0] and "journal:PATH" in lines[0] and "sqlite:///PATH" in lines[0]
    assert not results.exists()


def test_a_journal_in_a_missing_folder_is_refused_before_ray_starts(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(MINIMAL, encoding="utf-8")
    results = tmp_path / "results"
    code = main(["--space", str(space), "--results-dir", str(results), "--set",
                 f"optuna_storage=journal:{tmp_path}/nowhere/j.log"])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "optuna_storage" in lines[0] and "does not exist" in lines[0], lines
    assert not results.exists()


def test_values_are_stored_absolute_and_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert normalize_storage(None) is None
    assert normalize_storage("journal:shared/s.log") == f"journal:{tmp_path}/shared/s.log"
    assert normalize_storage("sqlite:///s.db") == f"sqlite:///{tmp_path}/s.db"
    url = "postgresql+psycopg2://u@db.example/studies"
    assert normalize_storage(url) == url
    with pytest.raises(StorageError, match=r"u:\*\*\*@"):  # a password is not repeated in the message
        normalize_storage("postgres://u:secret@db.example/studies")
    path = tmp_path / "space.yaml"
    path.write_text(MINIMAL, encoding="utf-8")
    space = load_space(path, ["optuna_storage=journal:j.log"])
    again = tmp_path / "again.yaml"
    again.write_text(dump_space(space), encoding="utf-8")
    assert load_space(again).to_dict() == space.to_dict() and space.optuna_storage == f"journal:{tmp_path}/j.log"
    assert load_space(path).optuna_storage is None and load_space(path).to_dict()["optuna_storage"] is None
    with pytest.raises(SpaceError, match="line 8: 'optuna_storage' is 'mongodb://x'"):
        load_space(write_text(tmp_path / "bad.yaml", MINIMAL + "optuna_storage: mongodb://x\n"))


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_the_default_sqlite_file_gets_wal_and_a_long_lock_timeout(tmp_path: Path) -> None:
    import sqlite3

    storage = open_storage(None, tmp_path)
    assert sqlite3.connect(tmp_path / "optuna.db").execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert storage.engine_kwargs == {"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
