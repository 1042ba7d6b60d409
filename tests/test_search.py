"""The resumed searcher: Optuna trials given out after Tune's last checkpoint are run, not lost or repeated.

Real Optuna (SQLite storage, the grid sampler the studies use) behind Ray Tune's OptunaSearch; the driver
kill is reproduced exactly where it bites: the searcher's state is saved (Tune's experiment checkpoint),
then Optuna gives out one more configuration, then the driver dies and a fresh searcher restores the
saved state, as ``Tuner.restore`` does.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from ray.tune.search.optuna import OptunaSearch

from study.search import AskTellGridSampler, ResumableOptunaSearch

GRID = [0.0, 0.5, 0.7, 1.0]


def searcher(cls: type[OptunaSearch], db: Path) -> OptunaSearch:
    return cls(space={"i2srm.delta": optuna.distributions.CategoricalDistribution(GRID)}, metric="dev_f1",
               mode="max", sampler=AskTellGridSampler({"i2srm.delta": GRID}, seed=0), study_name="s",
               storage=optuna.storages.RDBStorage(f"sqlite:///{db}"))


def kill_after_ask_then_resume(cls: type[OptunaSearch], tmp_path: Path) -> tuple[list[float], optuna.Study]:
    """Two trials checkpointed, a third asked before the kill; the restored searcher runs the rest."""
    db, ckpt = tmp_path / "optuna.db", tmp_path / "searcher.pkl"
    first = searcher(cls, db)
    ran = [first.suggest("t0")["i2srm.delta"], first.suggest("t1")["i2srm.delta"]]
    first.save(str(ckpt))            # Tune's experiment checkpoint
    first.suggest("t2")              # asked from Optuna, never in the checkpoint: the driver dies now
    del first
    resumed = searcher(cls, db)      # Tuner.restore: the searcher object, then its saved state
    resumed.restore(str(ckpt))
    for tid, value in zip(("t0", "t1"), ran):  # the restored trials finish
        resumed.on_trial_complete(tid, {"dev_f1": value})
    more = {tid: resumed.suggest(tid)["i2srm.delta"] for tid in ("t3", "t4")}  # two slots: asked together
    for tid, value in more.items():
        ran.append(value)
        resumed.on_trial_complete(tid, {"dev_f1": value})
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{db}")
    return ran, study


def test_resumed_searcher_runs_the_orphaned_configuration_and_covers_the_grid(tmp_path: Path) -> None:
    ran, study = kill_after_ask_then_resume(ResumableOptunaSearch, tmp_path)
    assert sorted(ran) == GRID
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 4
    assert states.count(optuna.trial.TrialState.FAIL) == 1  # the orphan, closed
    assert not any(t.state == optuna.trial.TrialState.RUNNING for t in study.trials)
    orphan = next(t for t in study.trials if t.state == optuna.trial.TrialState.FAIL)
    requeued = next(t for t in study.trials if t.user_attrs.get("requeued_from") == orphan.number)
    assert requeued.params == orphan.params and requeued.state == optuna.trial.TrialState.COMPLETE


def test_plain_optuna_search_repeats_a_grid_point_after_the_same_kill(tmp_path: Path) -> None:
    # The bug the subclass fixes, so that the test above cannot pass by accident. Which point the grid
    # sampler repeats is its seeded random pick among unfinished points; with seed 0 it is the wrong one
    # (in a real study it depends on the timing: the bug showed in 2 of 3 driver-kill runs).
    ran, study = kill_after_ask_then_resume(OptunaSearch, tmp_path)
    assert sorted(ran) != GRID
    assert any(t.state == optuna.trial.TrialState.RUNNING for t in study.trials)


def test_restore_without_orphans_changes_nothing(tmp_path: Path) -> None:
    db, ckpt = tmp_path / "optuna.db", tmp_path / "searcher.pkl"
    first = searcher(ResumableOptunaSearch, db)
    first.suggest("t0")
    first.save(str(ckpt))
    resumed = searcher(ResumableOptunaSearch, db)
    resumed.restore(str(ckpt))
    assert resumed.requeue_orphans() == []
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{db}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.RUNNING]  # still owned by "t0"


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_orphans_are_requeued_for_other_samplers(tmp_path: Path, sampler: str) -> None:
    db, ckpt = tmp_path / "optuna.db", tmp_path / "searcher.pkl"
    make = {"random": optuna.samplers.RandomSampler, "tpe": optuna.samplers.TPESampler}[sampler]

    def build() -> ResumableOptunaSearch:
        return ResumableOptunaSearch(space={"i2srm.kl_weight": optuna.distributions.FloatDistribution(0.0, 1.0)},
                                     metric="dev_f1", mode="max", sampler=make(seed=3), study_name="s",
                                     storage=optuna.storages.RDBStorage(f"sqlite:///{db}"))
    first = build()
    first.save(str(ckpt))
    lost = first.suggest("t0")["i2srm.kl_weight"]
    resumed = build()
    resumed.restore(str(ckpt))
    assert resumed.suggest("t0b")["i2srm.kl_weight"] == lost


def test_orphan_killed_inside_ask_is_requeued_from_its_grid_id(tmp_path: Path) -> None:
    # The kill can land inside Optuna's ask: the trial holds its grid id but no parameters yet.
    db, ckpt = tmp_path / "optuna.db", tmp_path / "searcher.pkl"
    first = searcher(ResumableOptunaSearch, db)
    ran = [first.suggest("t0")["i2srm.delta"]]
    first.save(str(ckpt))
    bare = first._ot_study.ask()  # what a kill inside ask leaves: RUNNING, grid id set, no params
    stored = optuna.load_study(study_name="s", storage=f"sqlite:///{db}").trials[bare.number]
    assert stored.params == {} and "grid_id" in stored.system_attrs
    resumed = searcher(ResumableOptunaSearch, db)
    resumed.restore(str(ckpt))
    resumed.on_trial_complete("t0", {"dev_f1": ran[0]})
    more = {tid: resumed.suggest(tid)["i2srm.delta"] for tid in ("t1", "t2", "t3")}
    for tid, value in more.items():
        ran.append(value)
        resumed.on_trial_complete(tid, {"dev_f1": value})
    assert sorted(ran) == GRID
