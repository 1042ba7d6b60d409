"""The study's searcher: the Optuna study decides which configurations run and holds how each ended.

Real Optuna (the study's SQLite storage) behind ``StudySearcher``, called through Tune's ``Searcher``
interface as Tune calls it (``suggest`` per new Tune trial, ``on_trial_complete`` per ended one). A driver
kill is a searcher that is dropped between two calls; ``--resume`` is ``open_study`` on the same storage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.search import Searcher

from study.optuna_storage import open_storage
from study.search import (CONFIG_ATTR, ORPHANS_ATTR, REQUEUED_ATTR, SEEDS_ATTR, StudySearcher, grid_points,
                          open_study, tell_log)
from study.space import Space, load_space
from study.schema import CONFIG_KEY, SCORE_KEY, SEED_KEY

GRID = [0.0, 0.5, 0.7, 1.0]


def make_space(tmp_path: Path, sampler: str = "grid", seeds: str = "[1]", trials: int | None = None) -> Space:
    search = ("i2srm.delta: {grid: [0.0, 0.5, 0.7, 1.0]}" if sampler == "grid"
              else "i2srm.delta: {uniform: [0.0, 1.0]}\n  i2srm.kl_weight: {choice: [0.1, 1.0]}")
    path = tmp_path / f"{sampler}.yaml"
    path.write_text(f"study: s\ntrainer: {{data.name: synthetic-mner, train.epochs: 3}}\nsearch:\n  {search}\n"
                    f"sampler: {sampler}\nseeds: {seeds}\n" + (f"trials: {trials}\n" if trials else ""),
                    encoding="utf-8")
    return load_space(path)


def session(space: Space, tmp_path: Path) -> StudySearcher:
    """A driver session: the study opened (orphans closed) and a searcher on it."""
    return StudySearcher(space, open_study(space, "s", open_storage(None, tmp_path), space.trials))


def result(value: float | None, epoch: float = 3.0) -> dict[str, Any]:
    """A trial's last result: the metric and the run's score (its best epoch's value; here the last is best)."""
    return {"dev_f1": value, SCORE_KEY: value, "epoch": epoch}


def trials_of(tmp_path: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials


def test_one_optuna_trial_per_configuration_one_tune_trial_per_seed(tmp_path: Path) -> None:
    space = make_space(tmp_path, seeds="[1, 2]")
    s = session(space, tmp_path)
    configs = {tid: s.suggest(tid) for tid in ("a1", "a2", "b1", "b2", "c1", "c2", "d1", "d2")}
    assert s.suggest("e1") is Searcher.FINISHED  # the grid is handed out
    assert [(c["i2srm.delta"], c[SEED_KEY], c[CONFIG_KEY]) for c in configs.values()] == \
        [(d, seed, n) for n, d in enumerate(GRID) for seed in (1, 2)]  # in the listed order, each seed once
    s.on_trial_complete("a1", result(50.0))
    s.on_trial_complete("a2", result(60.0))
    s.on_trial_complete("b1", result(10.0, epoch=1.0))  # stopped early by the scheduler
    s.on_trial_complete("b2", result(70.0))
    s.on_trial_complete("c1", None, error=True)
    s.on_trial_complete("c2", None, error=True)
    s.on_trial_complete("d1", result(40.0))
    s.on_trial_complete("d2", result(float("nan")))  # a seed that reported no usable value
    got = [(t.state, t.value, t.user_attrs.get(SEEDS_ATTR)) for t in trials_of(tmp_path)]
    assert got == [(TrialState.COMPLETE, 55.0, {"1": 50.0, "2": 60.0}),
                   (TrialState.PRUNED, None, {"1": 10.0, "2": 70.0}),
                   (TrialState.FAIL, None, {"1": None, "2": None}),
                   (TrialState.COMPLETE, 40.0, {"1": 40.0, "2": None})]


def test_a_killed_driver_resumes_the_orphans_under_their_own_names_and_covers_the_grid(tmp_path: Path) -> None:
    space = make_space(tmp_path, seeds="[1, 2]")
    first = session(space, tmp_path)
    given = {tid: first.suggest(tid) for tid in ("a1", "a2", "b1", "b2", "c1")}
    first.on_trial_complete("a1", result(50.0))
    first.on_trial_complete("a2", result(60.0))
    first.on_trial_complete("b1", result(30.0))  # b2 and c1 still running, c2 asked but not handed out
    del first  # the driver is killed

    resumed = session(space, tmp_path)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert study.user_attrs[ORPHANS_ATTR] == [1, 2]
    again = [resumed.suggest(tid) for tid in ("x1", "x2", "y1", "y2", "z1", "z2")]
    assert resumed.suggest("w") is Searcher.FINISHED
    # The orphans' configurations run first, under their own configuration numbers (so each run continues
    # from its stored state in the same record); then the rest of the grid, each point once.
    assert [(c["i2srm.delta"], c[CONFIG_KEY], c[SEED_KEY]) for c in again] == \
        [(0.5, 1, 1), (0.5, 1, 2), (0.7, 2, 1), (0.7, 2, 2), (1.0, 5, 1), (1.0, 5, 2)]
    assert given["b1"][CONFIG_KEY] == 1 and given["c1"][CONFIG_KEY] == 2
    for tid, c in zip(("x1", "x2", "y1", "y2", "z1", "z2"), again):
        resumed.on_trial_complete(tid, result(10.0 * c[SEED_KEY]))
    trials = trials_of(tmp_path)
    assert [(t.number, t.state) for t in trials[:3]] == \
        [(0, TrialState.COMPLETE), (1, TrialState.FAIL), (2, TrialState.FAIL)]
    assert [(t.user_attrs.get(REQUEUED_ATTR), t.user_attrs.get(CONFIG_ATTR)) for t in trials[3:]] == \
        [(1, 1), (2, 2), (None, None)]
    complete = sorted(t.params["i2srm.delta"] for t in trials if t.state == TrialState.COMPLETE)
    assert complete == GRID


def test_a_second_resume_keeps_the_first_orphans_and_their_names(tmp_path: Path) -> None:
    space = make_space(tmp_path)
    first = session(space, tmp_path)
    first.suggest("a")  # configuration 0 running: the driver is killed
    second = session(space, tmp_path)
    assert second.suggest("b")[CONFIG_KEY] == 0  # trial 1 runs configuration 0 again; killed again
    third = session(space, tmp_path)
    config = third.suggest("c")
    assert (config["i2srm.delta"], config[CONFIG_KEY]) == (0.0, 0)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert study.user_attrs[ORPHANS_ATTR] == [0, 1]
    assert [config[CONFIG_KEY] for config in (third.suggest(t) for t in "def")] == [3, 4, 5]
    assert third.suggest("g") is Searcher.FINISHED


def test_a_resume_with_nothing_running_changes_nothing(tmp_path: Path) -> None:
    space = make_space(tmp_path)
    first = session(space, tmp_path)
    for tid in ("a", "b"):
        first.suggest(tid)
        first.on_trial_complete(tid, result(1.0))
    resumed = session(space, tmp_path)
    assert [resumed.suggest(t)["i2srm.delta"] for t in ("c", "d")] == [0.7, 1.0]
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert ORPHANS_ATTR not in study.user_attrs


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_samplers_resume_the_orphans_configuration_and_keep_the_budget(tmp_path: Path, sampler: str) -> None:
    space = make_space(tmp_path, sampler=sampler, trials=4)
    first = session(space, tmp_path)
    a, b = first.suggest("a"), first.suggest("b")
    first.on_trial_complete("a", result(5.0))
    resumed = session(space, tmp_path)
    again = resumed.suggest("c")
    assert {k: again[k] for k in space.search} == {k: b[k] for k in space.search} and again[CONFIG_KEY] == 1
    more = [resumed.suggest(t) for t in ("d", "e")]
    assert resumed.suggest("f") is Searcher.FINISHED  # 4 configurations: a, b (again), and two new ones
    drawn = {(m["i2srm.delta"], m["i2srm.kl_weight"]) for m in more} | {(a["i2srm.delta"], a["i2srm.kl_weight"])}
    assert len(drawn) == 3


def test_a_driver_killed_inside_ask_leaves_no_hole_in_the_grid(tmp_path: Path) -> None:
    """A trial asked but given only some of its parameters (the kill came inside Optuna's ask), and a trial
    enqueued but never asked: both are closed, and the grid is still covered once."""
    space = make_space(tmp_path)
    session(space, tmp_path).suggest("a")  # configuration 0 runs; then the driver dies inside the next ask
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    study.ask()  # a trial with no parameter drawn yet
    study.enqueue_trial({"i2srm.delta": 0.7})  # and one enqueued, never asked
    resumed = session(space, tmp_path)
    handed = [resumed.suggest(t) for t in "bcdef"]
    assert handed[-1] is Searcher.FINISHED
    assert sorted(c["i2srm.delta"] for c in handed[:-1]) == GRID
    assert handed[0][CONFIG_KEY] == 0  # the first configuration keeps its name


def test_grid_points_follow_the_listed_order(tmp_path: Path) -> None:
    path = tmp_path / "two.yaml"
    path.write_text("study: s\ntrainer: {data.name: synthetic-mner}\nsearch:\n  i2srm.delta: {grid: [0.7, 0.0]}\n"
                    "  i2srm.kl_weight: {grid: [1.0, 0.1]}\nsampler: grid\nseeds: [1]\n", encoding="utf-8")
    assert grid_points(load_space(path)) == [{"i2srm.delta": 0.7, "i2srm.kl_weight": 1.0},
                                             {"i2srm.delta": 0.7, "i2srm.kl_weight": 0.1},
                                             {"i2srm.delta": 0.0, "i2srm.kl_weight": 1.0},
                                             {"i2srm.delta": 0.0, "i2srm.kl_weight": 0.1}]


def test_a_failed_tell_is_printed_and_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from study.progress import TellFailures

    space = make_space(tmp_path)
    s = session(space, tmp_path)
    s.suggest("a")
    s.suggest("b")
    real_tell = s.study.tell

    def locked(*args: object, **kwargs: object) -> None:
        raise RuntimeError("(sqlite3.OperationalError) database is locked\n[SQL: UPDATE trials ...]")

    handler = TellFailures("s", tmp_path).attach(tell_log)
    try:
        monkeypatch.setattr(s.study, "tell", locked)
        s.on_trial_complete("a", result(50.0))
        monkeypatch.setattr(s.study, "tell", real_tell)
        s.on_trial_complete("b", result(60.0))
    finally:
        handler.detach()
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("[study s] error: Optuna was not told how configuration 0 ended"), lines
    assert "database is locked" in lines[0] and "optuna_errors.jsonl" in lines[0] and "--resume" in lines[0]
    rows = [json.loads(ln) for ln in (tmp_path / "optuna_errors.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["optuna_trial"] == 0 and rows[0]["value"] == 50.0
    assert rows[0]["error"] == "RuntimeError: (sqlite3.OperationalError) database is locked"
    assert [f["optuna_trial"] for f in s.tell_failures] == [0]
    assert [t.state for t in trials_of(tmp_path)] == [TrialState.RUNNING, TrialState.COMPLETE]
    assert tell_log.handlers == [] and tell_log.propagate
    # The configuration Optuna was not told about runs again on --resume (its runs replay their stored end).
    assert session(space, tmp_path).suggest("c")[CONFIG_KEY] == 0
