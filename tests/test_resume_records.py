"""What a resumed study does with the traces of a driver killed mid-study: finished trials' checkpoints
(markers with the final result, also in the older checkpoint folders Tune's saved state may name) and
the records of trials Tune never saved; checkpoints Tune deleted after its state was last saved; a trial
restored from its final epoch; the one line a failed trial is recorded with."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from pyarrow.fs import LocalFileSystem
from ray.tune import ExperimentAnalysis

from study.checkpoints import drop_checkpoints, refill_deleted_checkpoints
from study.recorder import exception_line
from study.records import ORPHANED_DIR, TrialRecord, read_trials, write_trial
from study.runner import set_aside_orphans
from study.trainable import FINISHED_MARKER, finished_result

ROOT = Path(__file__).resolve().parent.parent


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


# A real Tune experiment: one trial of three iterations, a checkpoint each, Tune keeping one (as studies do).
EXPERIMENT = """
import sys, tempfile
from pathlib import Path
from ray import tune
from study.runner import init_ray, stop_ray

def trainable(config):
    for i in range(3):
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "state.pt").write_text(f"epoch {i + 1}")
            tune.report({"epoch": i + 1}, checkpoint=tune.Checkpoint.from_directory(d))

init_ray(None)
try:
    tune.Tuner(trainable, run_config=tune.RunConfig(name="exp", storage_path=sys.argv[1], verbose=0,
               checkpoint_config=tune.CheckpointConfig(num_to_keep=1))).fit()
finally:
    stop_ray()
"""


def test_the_checkpoint_tunes_saved_state_names_is_recreated_from_the_newest(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-c", EXPERIMENT, str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    experiment = tmp_path / "exp"
    (trial,) = ExperimentAnalysis(str(experiment)).trials
    named = Path(trial.checkpoint.path)
    assert named.name == "checkpoint_000002" and (named / "state.pt").read_text() == "epoch 3"
    assert refill_deleted_checkpoints(str(experiment)) == {}  # nothing missing: nothing done

    # Tune's race: checkpoint_000003 written and checkpoint_000002 deleted before the state names the new one.
    named.rename(named.with_name("checkpoint_000003"))
    assert refill_deleted_checkpoints(str(experiment)) == {trial.trial_id: "checkpoint_000003"}
    assert (named / "state.pt").read_text() == "epoch 3"
    assert sorted(p.name for p in named.parent.glob("checkpoint_*")) == ["checkpoint_000002", "checkpoint_000003"]
    (named.parent / "checkpoint_000003" / "state.pt").write_text("epoch 4")  # Tune writes the next one in place
    assert (named / "state.pt").read_text() == "epoch 3"  # a real copy, unchanged

    # Gone with nothing newer: left for Tune to report (a warning), nothing invented.
    for folder in named.parent.glob("checkpoint_*"):
        shutil.rmtree(folder)
    assert refill_deleted_checkpoints(str(experiment)) == {}
    assert not named.exists()
    assert refill_deleted_checkpoints(str(tmp_path / "no-experiment")) == {}  # nothing to read: left to Tune


def test_trial_restored_from_its_last_epoch_reports_its_final_result_again(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A node or driver lost after a trial's last report, before it ended: Tune restores the trial from the
    final epoch's checkpoint; the trainable trains nothing and hands Tune the final result again."""
    from ray import tune

    from model.train import train
    from study.trainable import REPLAYED_KEY, RESUMED_KEY, TrialSetup, train_trial

    setup = TrialSetup(trainer={"data.name": "synthetic-mner", "data.synthetic_size": 0.05, "data.max_len": 24,
                                "model.backbone": "resnet18", "model.image_size": 32, "train.epochs": 1},
                       seeds=(3,), searched=("i2srm.delta",), threads=1)
    config = {"i2srm.delta": 0.5, "__trial_index__": 0}
    first = train(setup.config(config), tmp_path / "run")
    reported: list[dict] = []
    monkeypatch.setattr(tune, "get_checkpoint", lambda: tune.Checkpoint.from_directory(str(tmp_path / "run" /
                                                                                          "checkpoint")))
    monkeypatch.setattr(tune, "get_context", lambda: SimpleNamespace(get_trial_id=lambda: "t1"))
    monkeypatch.setattr(tune, "report", lambda metrics, checkpoint=None: reported.append(dict(metrics)))
    train_trial(config, setup)
    assert len(reported) == 1
    final = reported[0]
    assert final[REPLAYED_KEY] is True and final[RESUMED_KEY] == 1 and final["node"]
    assert {k: final[k] for k in first["history"][-1]} == first["history"][-1]


def test_error_line_states_the_last_exception_or_rays_own_message() -> None:
    traceback = ("Failure # 1 (occurred at 2026-11-24_12-30-43)\n\x1b[36mray::ImplicitFunc.train()\x1b[39m\n"
                 "Traceback (most recent call last):\n  File \"x.py\", line 1, in f\n"
                 "KeyError: 'a'\n\nDuring handling of the above exception, another exception occurred:\n"
                 "model.train.NonFiniteLoss: training loss is not finite in epoch 1\n")
    assert exception_line(traceback) == "NonFiniteLoss: training loss is not finite in epoch 1"
    lost = ("Failure # 1 (occurred at 2026-11-24_12-30-43)\nThe actor f24ddad8 is unavailable: The actor is "
            "temporarily unavailable: RpcError: RPC error: recvmsg:Connection reset by peer rpc_code: 14. " + "x" * 400)
    line = exception_line(lost)
    assert line.startswith("The actor f24ddad8 is unavailable: ") and len(line) == 300 and line.endswith("...")
    assert exception_line("") == "" and exception_line("Failure # 2 (occurred at 2026-11-24_12-30-43)\n") == ""
