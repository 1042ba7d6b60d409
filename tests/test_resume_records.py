"""What a run leaves for its next trial: the trainer's resume state at the run's fixed place
(``study/resume_state.py``), a run continued or replayed by a new trial (``train_trial``), records a killed
driver left ``running`` (``close_lost_runs``), and the one line a failed run is recorded with."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from study.recorder import close_lost_runs, exception_line
from study.records import read_runs, write_run
from study.schema import Run
from study.resume_state import FINISHED_JSON, LATEST_JSON, ResumeState, state_root
from study.schema import CONFIG_KEY, REPLAYED_KEY, RESUMED_KEY, SEED_KEY, run_id
from study.trainable import TrialSetup

TINY = {"data.name": "synthetic-mner", "data.synthetic_size": 0.05, "data.max_len": 24, "model.backbone": "resnet18",
        "model.image_size": 33}


def checkpoint(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "state.pt").write_text(text, encoding="utf-8")
    return folder


def test_the_newest_whole_checkpoint_is_named_last_and_the_older_one_deleted(tmp_path: Path) -> None:
    state = ResumeState(state_root(str(tmp_path / "store"), "s"), "c0001-s2")
    assert state.latest() is None and state.finished() is None and state.fetch(tmp_path / "none") is None
    state.save(checkpoint(tmp_path / "e1", "epoch 1"), 1, [{"epoch": 1.0, "dev_f1": 10.0}])
    state.save(checkpoint(tmp_path / "e2", "epoch 2"), 2,
               [{"epoch": 1.0, "dev_f1": 10.0}, {"epoch": 2.0, "dev_f1": 20.0}])
    root = tmp_path / "store" / "s" / "state" / "c0001-s2"
    assert sorted(p.name for p in root.iterdir()) == ["epoch_0002", LATEST_JSON]
    latest = state.latest()
    assert latest["epoch"] == 2 and latest["folder"] == "epoch_0002"
    assert [h["epoch"] for h in latest["history"]] == [1, 2]
    got = state.fetch(tmp_path / "local")
    assert (got / "state.pt").read_text() == "epoch 2"


def test_a_finished_run_keeps_its_result_and_drops_its_checkpoint_unless_kept(tmp_path: Path) -> None:
    root = state_root(str(tmp_path), "s")
    for keep in (False, True):
        state = ResumeState(root, f"c0000-s{int(keep)}")
        state.save(checkpoint(tmp_path / f"e{keep}", "epoch 3"), 3, [{"epoch": 3.0}])
        state.finish("pruned", {"epoch": 3.0, "dev_f1": 7.0}, keep_checkpoint=keep)
        state.finish("completed", {"epoch": 9.0}, keep_checkpoint=keep)  # idempotent: the first end stays
        assert state.finished() == {"status": "pruned", "result": {"epoch": 3.0, "dev_f1": 7.0}}
        names = sorted(p.name for p in (tmp_path / "s" / "state" / state.run_id).iterdir())
        assert names == (["epoch_0003", FINISHED_JSON, LATEST_JSON] if keep else [FINISHED_JSON, LATEST_JSON])


def test_an_unreadable_state_file_counts_as_absent(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = ResumeState(state_root(str(tmp_path), "s"), "c0000-s1")
    folder = tmp_path / "s" / "state" / "c0000-s1"
    folder.mkdir(parents=True)
    (folder / LATEST_JSON).write_text("{not json", encoding="utf-8")
    assert state.latest() is None and "cannot be read" in caplog.text
    (folder / LATEST_JSON).write_text(json.dumps({"epoch": 2, "folder": "epoch_0002"}), encoding="utf-8")
    assert state.fetch(tmp_path / "local") is None and "is gone" in caplog.text  # named but missing: start over


@pytest.fixture
def tune_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """``tune.report`` / ``tune.get_context`` of a trial, recorded: ``train_trial`` runs in this process."""
    from ray import tune

    reported: list[dict] = []
    monkeypatch.setattr(tune, "get_context", lambda: SimpleNamespace(get_trial_id=lambda: "t1"))
    monkeypatch.setattr(tune, "report", lambda metrics, checkpoint=None: reported.append(dict(metrics)))
    return reported


def test_a_run_continued_by_a_new_trial_reports_its_epochs_then_trains_the_rest(tmp_path: Path,
                                                                                 tune_calls: list[dict]) -> None:
    from model.train import train
    from study.trainable import train_trial

    setup = TrialSetup(trainer={**TINY, "train.epochs": 2}, seeds=(3,), searched=("i2srm.delta",), threads=1,
                       state_root=state_root(str(tmp_path / "store"), "s"))
    config = {"i2srm.delta": 0.5, CONFIG_KEY: 4, SEED_KEY: 3}
    # Epoch 1 was trained and stored by an earlier trial (the driver was then killed).
    one = train(setup.config(config, granted_gpus=[]), tmp_path / "first")
    assert one["epochs_run"] == 2  # a whole run, for the reference values of both epochs
    state = ResumeState(setup.state_root, run_id(4, 3))
    partial: list[dict] = []

    def keep_first(metrics: dict, ckpt: Path | None) -> None:
        if metrics["epoch"] == 1:
            partial.append(dict(metrics))
            state.save(ckpt, 1, partial)
    train(setup.config(config, granted_gpus=[]), tmp_path / "again", keep_first)
    train_trial(config, setup)
    assert [m["epoch"] for m in tune_calls] == [1.0, 2.0]  # epoch 1 reported again, then epoch 2 trained
    assert all(m[RESUMED_KEY] == 1 for m in tune_calls) and REPLAYED_KEY not in tune_calls[-1]
    for mine, ref in zip(tune_calls, one["history"]):  # the same numbers as one uninterrupted run
        assert mine["dev_f1"] == ref["dev_f1"] and mine["train_loss"] == pytest.approx(ref["train_loss"], rel=1e-5)
    assert state.finished()["status"] == "completed"
    tune_calls.clear()
    train_trial(config, setup)  # handed out once more (its configuration ran again): the end is replayed
    assert len(tune_calls) == 1 and tune_calls[0][REPLAYED_KEY] is True and tune_calls[0]["epoch"] == 2.0


def test_runs_still_running_after_the_study_ended_are_closed(tmp_path: Path) -> None:
    base = {"train.epochs": 3}
    for number, status, epochs in ((0, "running", 3), (1, "running", 1), (2, "completed", 3)):
        write_run(tmp_path, Run(f"c{number:04d}-s1", number, 1, status=status, config=base, epochs_run=epochs))
    assert close_lost_runs(tmp_path) == ["c0000-s1", "c0001-s1"]
    got = {r.trial_id: (r.status, r.error) for r in read_runs(tmp_path)}
    assert got["c0000-s1"] == ("completed", "") and got["c0002-s1"] == ("completed", "")
    assert got["c0001-s1"][0] == "failed" and got["c0001-s1"][1].startswith("lost: the driver stopped")


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
