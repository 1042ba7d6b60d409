"""What the study relies on in Optuna and Ray Tune, each checked on its own: a release that changes one of
these behaviours fails here, by name, before it silently breaks a study or its resume.

pyproject.toml bounds both libraries at the versions these tests pass on (ray 2.60, optuna 5.1); raise a
bound only after this file passes on the newer release.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

DIST = {"x": FloatDistribution(0.0, 1.0), "k": CategoricalDistribution([1, 2, 3])}


def rdb(tmp_path: Path) -> optuna.Study:
    return optuna.create_study(study_name="c", storage=f"sqlite:///{tmp_path / 'c.db'}",
                               sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")


# ---------------------------------------------------------------------------------------------- Optuna


def test_optuna_an_enqueued_configuration_is_the_next_ask_with_its_user_attrs(tmp_path: Path) -> None:
    study = rdb(tmp_path)
    study.enqueue_trial({"x": 0.25, "k": 2}, user_attrs={"config": 7})
    study.enqueue_trial({"x": 0.75, "k": 3})
    first, second = study.ask(DIST), study.ask(DIST)  # first in, first out
    assert (first.params, first.user_attrs) == ({"x": 0.25, "k": 2}, {"config": 7})
    assert second.params == {"x": 0.75, "k": 3}
    third = study.ask(DIST)  # the queue is empty: the sampler draws
    assert set(third.params) == {"x", "k"} and third.number == 2


def test_optuna_an_empty_enqueue_lets_the_sampler_draw_but_keeps_the_user_attrs(tmp_path: Path) -> None:
    study = rdb(tmp_path)
    study.enqueue_trial({}, user_attrs={"requeued_from": 4})
    trial = study.ask(DIST)
    assert set(trial.params) == {"x", "k"} and trial.user_attrs == {"requeued_from": 4}


def test_optuna_a_trial_is_told_by_number_and_its_state_read_back(tmp_path: Path) -> None:
    study = rdb(tmp_path)
    a, b, c = study.ask(DIST), study.ask(DIST), study.ask()  # c: asked, no parameter drawn (a kill inside ask)
    a.set_user_attr("seed_values", {"1": 50.0, "2": None})
    study.tell(a, 50.0)
    study.tell(b.number, state=TrialState.FAIL)
    assert [t.state for t in study.get_trials(deepcopy=False)] == [TrialState.COMPLETE, TrialState.FAIL,
                                                                  TrialState.RUNNING]
    loaded = optuna.load_study(study_name="c", storage=f"sqlite:///{tmp_path / 'c.db'}")
    assert loaded.trials[0].user_attrs == {"seed_values": {"1": 50.0, "2": None}} and loaded.trials[2].params == {}
    assert [t.number for t in loaded.get_trials(deepcopy=False, states=(TrialState.RUNNING,))] == [c.number]
    with pytest.raises(Exception):  # noqa: B017  (a finished trial cannot be told again: Optuna's own error type)
        study.tell(a.number, 1.0)


def test_optuna_study_user_attrs_hold_a_list_across_processes(tmp_path: Path) -> None:
    study = rdb(tmp_path)
    study.set_user_attr("orphans", [1, 2])
    assert optuna.load_study(study_name="c", storage=f"sqlite:///{tmp_path / 'c.db'}").user_attrs == {"orphans": [1, 2]}


def test_optuna_a_reseeded_sampler_draws_reproducibly(tmp_path: Path) -> None:
    draws = []
    for _ in range(2):
        study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
        study.sampler = optuna.samplers.TPESampler(seed=3)  # assignable: the study re-seeds it per session
        draws.append([study.ask(DIST).params for _ in range(3)])
    assert draws[0] == draws[1]


def test_optuna_a_loaded_study_keeps_its_trials(tmp_path: Path) -> None:
    study = rdb(tmp_path)
    study.tell(study.ask(DIST), 1.0)
    again = optuna.create_study(study_name="c", storage=f"sqlite:///{tmp_path / 'c.db'}", load_if_exists=True,
                                direction="maximize")
    assert len(again.get_trials(deepcopy=False)) == 1


# ---------------------------------------------------------------------------------------------- Ray Tune


@pytest.mark.usefixtures("local_ray")
def test_tune_runs_what_a_searcher_hands_out_until_it_says_finished(tmp_path: Path) -> None:
    from ray import tune
    from ray.tune.search import Searcher

    from study.local_ray import init_ray, stop_ray

    calls: list[tuple[str, Any]] = []

    class Fixed(Searcher):
        def __init__(self) -> None:
            super().__init__(metric="score", mode="max")
            self.todo = [{"v": 1, "__config__": 0, "__seed__": 1}, {"v": 2, "__config__": 1, "__seed__": 1},
                         {"v": 3, "__config__": 2, "__seed__": 1}]

        def set_search_properties(self, metric: Any, mode: Any, config: Any, **spec: Any) -> bool:
            return True

        def suggest(self, trial_id: str) -> Any:
            if not self.todo:
                return Searcher.FINISHED
            return self.todo.pop(0)

        def on_trial_complete(self, trial_id: str, result: Any = None, error: bool = False) -> None:
            calls.append(("searcher", (result or {}).get("score"), error))

        def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
            calls.append(("save", None, None))

    class Seen(tune.Callback):
        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            calls.append(("callback", trial.last_result.get("score"), trial.config["v"]))

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            calls.append(("error", trial.config["v"], bool(trial.error_file)))

    def trainable(config: dict[str, Any]) -> None:
        if config["v"] == 3:
            raise ValueError("three")
        for step in (1, 2):
            tune.report({"score": config["v"] * 10 + step, "epoch": step})  # no checkpoint: allowed

    started = init_ray(None)  # False: the session's instance (local_ray) runs already
    try:
        tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(
            search_alg=Fixed(), num_samples=-1, max_concurrent_trials=1, metric="score", mode="max",
            trial_dirname_creator=lambda t: f"c{t.config['__config__']:04d}-{t.trial_id}"),
            run_config=tune.RunConfig(name="contract", storage_path=str(tmp_path), verbose=0, callbacks=[Seen()]))
        grid = tuner.fit()
    finally:
        if started:
            stop_ray()
    assert len(grid) == 3  # num_samples=-1: exactly what the searcher handed out before FINISHED
    ends = [c for c in calls if c[0] != "save"]
    # The searcher learns each end (with the last result) before the callbacks do; a raising trial ends with
    # error=True and no result, and its callback sees the error file.
    assert ends[:2] == [("searcher", 12, False), ("callback", 12, 1)]
    assert ends[2:4] == [("searcher", 22, False), ("callback", 22, 2)]
    assert ends[4:] == [("searcher", None, True), ("error", 3, True)]
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "contract").iterdir() if p.is_dir()) == \
        ["c0000", "c0001", "c0002"]
