"""What a resumed study does with the traces of a driver killed mid-study: finished trials' checkpoints
(markers with the final result, also in the older checkpoint folders Tune's saved state may name) and
the records of trials Tune never saved."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from pyarrow.fs import LocalFileSystem

from study.recorder import drop_checkpoints
from study.records import ORPHANED_DIR, TrialRecord, read_trials, write_trial
from study.runner import set_aside_orphans
from study.trainable import FINISHED_MARKER, finished_result


def test_finished_trial_leaves_markers_with_its_final_result_in_every_checkpoint_folder(tmp_path: Path) -> None:
    root = tmp_path / "trial"
    (root / "checkpoint_000002").mkdir(parents=True)
    (root / "checkpoint_000002" / "state.pt").write_bytes(b"x" * 1000)
    (root / "other").mkdir()
    trial = SimpleNamespace(trial_id="t", storage=SimpleNamespace(storage_filesystem=LocalFileSystem(),
                                                                  trial_fs_path=str(root)))
    final = {"epoch": 3.0, "dev_f1": 51.5, "node": "127.0.0.1/abc"}
    drop_checkpoints(trial, final)
    # Tune deleted checkpoint_000000/1 itself (num_to_keep=1), but its saved state may still name them.
    for i in range(3):
        folder = root / f"checkpoint_{i:06d}"
        assert sorted(p.name for p in folder.iterdir()) == [FINISHED_MARKER]
        assert finished_result(folder / FINISHED_MARKER) == final
    assert sorted(p.name for p in (root / "other").iterdir()) == []  # only checkpoint folders are touched


def test_old_or_unreadable_marker_gives_no_result(tmp_path: Path) -> None:
    (tmp_path / "a").write_text('{"finished": true}\n')
    (tmp_path / "b").write_text("{torn")
    assert finished_result(tmp_path / "a") == {} and finished_result(tmp_path / "b") == {}


def test_records_of_trials_tune_never_saved_are_set_aside(tmp_path: Path) -> None:
    for tid, status in (("a", "completed"), ("b", "running"), ("c", "failed")):
        write_trial(tmp_path, TrialRecord(trial_id=tid, params={}, seed=1, config={}, status=status))
    assert set_aside_orphans(tmp_path) == ["b"]
    assert [r.trial_id for r in read_trials(tmp_path)] == ["a", "c"]
    assert json.loads((tmp_path / ORPHANED_DIR / "b" / "trial.json").read_text())["status"] == "running"
