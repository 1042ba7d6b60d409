"""Confirmation on fresh seeds (the space's ``confirm``): after the search, the best configurations run again
on seeds the search never used, outside the Optuna search.

Real Optuna (the study's SQLite storage) behind ``StudySearcher``, called through Tune's ``Searcher`` interface
as Tune calls it; a driver kill is a searcher dropped between two calls, ``--resume`` is ``open_study`` on the
same storage. The end-to-end tests run ``python study/run.py`` with the tiny encoder on a local Ray instance.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.search import Searcher

from study.optuna_storage import open_storage
from study.search import (CONFIRM_CONFIGS_ATTR, CONFIRM_VALUES_ATTR, StudySearcher, choose_confirmed,
                          confirmation_pending, open_study)
from study.space import Space, SpaceError, dump_space, load_space, space_from_dict
from study.schema import CONFIG_KEY, CONFIRM_PHASE, PHASE_KEY, SCORE_KEY, SEARCH_PHASE, SEED_KEY
from ray_cluster import run_here

GRID = [0.0, 0.5, 0.7, 1.0]


def make_space(tmp_path: Path, confirm: str = "{seeds: [11, 12], top: 2}", mode: str = "max") -> Space:
    path = tmp_path / "space.yaml"
    path.write_text("study: s\ntrainer: {data.name: synthetic-mner, train.epochs: 3}\n"
                    "search:\n  i2srm.delta: {grid: [0.0, 0.5, 0.7, 1.0]}\n"
                    f"sampler: grid\nseeds: [1, 2]\nmode: {mode}\nconfirm: {confirm}\n", encoding="utf-8")
    return load_space(path)


def session(space: Space, tmp_path: Path) -> StudySearcher:
    """A driver session: the study opened (orphans closed) and a searcher on it."""
    return StudySearcher(space, open_study(space, "s", open_storage(None, tmp_path), space.trials))


def result(value: float | None, epoch: float = 3.0) -> dict[str, Any]:
    """A trial's last result: the metric and the run's score (its best epoch's value; here the last is best)."""
    return {"dev_f1": value, SCORE_KEY: value, "epoch": epoch}


def load(tmp_path: Path) -> optuna.Study:
    return optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")


def run_search(s: StudySearcher, values: dict[float, tuple[float | None, float | None]]) -> None:
    """Hand out and end every search run: ``values`` by delta, one value per seed (None: the run failed)."""
    given = {}
    for i in range(len(values) * 2):
        config = s.suggest(f"t{i}")
        assert isinstance(config, dict) and config[PHASE_KEY] == SEARCH_PHASE
        given[f"t{i}"] = config
    for tid, config in given.items():
        value = values[config["i2srm.delta"]][config[SEED_KEY] - 1]
        s.on_trial_complete(tid, result(value) if value is not None else None, error=value is None)


def test_the_best_configurations_run_on_the_fresh_seeds_after_the_search(tmp_path: Path) -> None:
    space = make_space(tmp_path)
    s = session(space, tmp_path)
    search = [s.suggest(f"t{i}") for i in range(8)]
    # Every search configuration is handed out but none has ended: nothing to confirm yet, and not finished.
    assert s.suggest("wait") is None
    values = {0.0: (50.0, 60.0), 0.5: (70.0, 70.0), 0.7: (80.0, 60.0), 1.0: (None, None)}
    for i, config in enumerate(search):
        value = values[config["i2srm.delta"]][config[SEED_KEY] - 1]
        s.on_trial_complete(f"t{i}", result(value) if value is not None else None, error=value is None)
        if i < 7:
            assert s.suggest(f"w{i}") is None  # a configuration is still running
    assert confirmation_pending(space, s.study)
    confirm = [s.suggest(f"c{i}") for i in range(4)]
    assert s.suggest("done") is Searcher.FINISHED
    # 0.5 and 0.7 tie at 70.0: the lower trial number (configuration 1) first; 1.0 failed and is not chosen.
    assert [(c["i2srm.delta"], c[CONFIG_KEY], c[SEED_KEY], c[PHASE_KEY]) for c in confirm] == \
        [(0.5, 1, 11, CONFIRM_PHASE), (0.5, 1, 12, CONFIRM_PHASE), (0.7, 2, 11, CONFIRM_PHASE),
         (0.7, 2, 12, CONFIRM_PHASE)]
    assert load(tmp_path).user_attrs[CONFIRM_CONFIGS_ATTR] == [1, 2]  # stored when chosen
    for i, value in enumerate((71.0, 72.0, 61.0, float("nan"))):
        s.on_trial_complete(f"c{i}", result(value))
    study = load(tmp_path)
    assert study.user_attrs[CONFIRM_VALUES_ATTR] == {"1": {"11": 71.0, "12": 72.0}, "2": {"11": 61.0, "12": None}}
    # Not told to Optuna: the search's four trials are all it holds, their values unchanged.
    assert [(t.state, t.value) for t in study.trials] == \
        [(TrialState.COMPLETE, 55.0), (TrialState.COMPLETE, 70.0), (TrialState.COMPLETE, 70.0), (TrialState.FAIL, None)]
    assert not confirmation_pending(space, study)


def test_a_resumed_study_confirms_the_stored_choice(tmp_path: Path) -> None:
    space = make_space(tmp_path, confirm="{seeds: [11, 12], top: 1}")
    first = session(space, tmp_path)
    run_search(first, {0.0: (50.0, 50.0), 0.5: (90.0, 90.0), 0.7: (60.0, 60.0), 1.0: (40.0, 40.0)})
    handed = [first.suggest("c1"), first.suggest("c2")]
    assert [(c[CONFIG_KEY], c[SEED_KEY]) for c in handed] == [(1, 11), (1, 12)]
    first.on_trial_complete("c1", result(88.0))
    del first  # the driver is killed while c1-s12 runs

    # Whatever the study holds now, the stored choice is what a resumed study confirms.
    study = load(tmp_path)
    study.set_user_attr("unrelated", 1)
    assert choose_confirmed(study, 1) == [1]
    resumed = session(space, tmp_path)
    assert resumed.budget == 0
    again = resumed.suggest("x")
    assert (again["i2srm.delta"], again[CONFIG_KEY], again[SEED_KEY], again[PHASE_KEY]) == (0.5, 1, 12, CONFIRM_PHASE)
    assert resumed.suggest("y") is Searcher.FINISHED  # c1-s11 ended before the kill: its end is stored
    assert confirmation_pending(space, load(tmp_path))
    resumed.on_trial_complete("x", result(89.0))
    assert load(tmp_path).user_attrs[CONFIRM_VALUES_ATTR] == {"1": {"11": 88.0, "12": 89.0}}
    assert not confirmation_pending(space, load(tmp_path))
    assert len(load(tmp_path).trials) == 4  # no Optuna trial for a confirmation run, in either session


def test_a_choice_stored_before_the_kill_is_kept_over_a_new_ranking(tmp_path: Path) -> None:
    """The choice is made once: a resumed study whose ranking would differ still confirms the stored one."""
    space = make_space(tmp_path, confirm="{seeds: [11], top: 1}", mode="min")
    first = session(space, tmp_path)
    run_search(first, {0.0: (5.0, 5.0), 0.5: (1.0, 1.0), 0.7: (3.0, 3.0), 1.0: (2.0, 2.0)})
    assert first.suggest("c")[CONFIG_KEY] == 1  # mode min: the lowest value
    del first
    load(tmp_path).set_user_attr(CONFIRM_CONFIGS_ATTR, [2])  # as if the ranking had been different then
    resumed = session(space, tmp_path)
    config = resumed.suggest("x")
    assert (config["i2srm.delta"], config[CONFIG_KEY], config[SEED_KEY]) == (0.7, 2, 11)


def test_no_complete_configuration_confirms_nothing(tmp_path: Path) -> None:
    space = make_space(tmp_path)
    s = session(space, tmp_path)
    run_search(s, {d: (None, None) for d in GRID})
    assert s.suggest("c") is Searcher.FINISHED
    study = load(tmp_path)
    assert study.user_attrs[CONFIRM_CONFIGS_ATTR] == [] and not confirmation_pending(space, study)


def test_without_confirm_the_searcher_finishes_after_the_search(tmp_path: Path) -> None:
    space = make_space(tmp_path, confirm="null")
    assert space.confirm is None and space.total_runs == 8
    s = session(space, tmp_path)
    for i in range(8):
        s.suggest(f"t{i}")
    assert s.suggest("x") is Searcher.FINISHED
    assert CONFIRM_CONFIGS_ATTR not in load(tmp_path).user_attrs and not confirmation_pending(space, s.study)


# ---------------------------------------------------------------------------------------------- the space


def base(**extra: Any) -> dict[str, Any]:
    return {"study": "s", "trainer": {"data.name": "synthetic-mner"},
            "search": {"i2srm.delta": {"grid": [0.0, 0.5]}}, "seeds": [1, 2], **extra}


def test_confirm_parses_round_trips_and_counts_in_the_runs(tmp_path: Path) -> None:
    space = space_from_dict(base(confirm={"seeds": [11, 12, 13], "top": 2}))
    assert (space.confirm.seeds, space.confirm.top) == ((11, 12, 13), 2)
    assert space.total_runs == 2 * 2 + 2 * 3
    path = tmp_path / "stored.yaml"
    path.write_text(dump_space(space), encoding="utf-8")
    assert load_space(path).to_dict() == space.to_dict() and load_space(path).confirm == space.confirm
    assert space_from_dict(base()).confirm is None and space_from_dict(base()).to_dict()["confirm"] is None
    sets = space_from_dict(base(), sets=["confirm={seeds: [11, 12], top: 1}"])
    assert (sets.confirm.seeds, sets.confirm.top) == ((11, 12), 1)
    assert space_from_dict(base(confirm={"seeds": [7]})).confirm.top == 1  # top defaults to 1
    assert space_from_dict(base(confirm={"seeds": [7]}), sets=["confirm.top=2"]).confirm.top == 2


@pytest.mark.parametrize("confirm, message", [
    ({"seeds": [2, 11]}, "'confirm.seeds' [2, 11] shares [2] with the search's seeds [1, 2]"),
    ({"seeds": []}, "'confirm.seeds' must be a non-empty list of integers"),
    ({"seeds": [11, "12"]}, "'confirm.seeds' must be a non-empty list of integers"),
    ({"seeds": [11, 11]}, "'confirm.seeds' lists a seed twice"),
    ({"top": 1}, "'confirm.seeds' must be a non-empty list of integers"),
    ({"seeds": [11], "top": 0}, "'confirm.top' must be an integer >= 1"),
    ({"seeds": [11], "top": True}, "'confirm.top' must be an integer >= 1"),
    ({"seeds": [11], "top": 1.5}, "'confirm.top' must be an integer >= 1"),
    ({"seeds": [11], "top": 3}, "'confirm.top' is 3, more than the study's 2 configuration(s)"),
    ({"seeds": [11], "tops": 1}, "'confirm.tops' is not a confirm key; allowed: seeds, top. Did you mean 'top'?"),
    ([11, 12], "'confirm' must be a mapping like {seeds: [11, 12, 13], top: 1}"),
])
def test_a_bad_confirm_is_one_error_naming_the_key(confirm: Any, message: str) -> None:
    with pytest.raises(SpaceError) as e:
        space_from_dict(base(confirm=confirm))
    assert message in str(e.value), str(e.value)


def test_a_bad_confirm_from_set_names_the_set(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match=r"^--set confirm=\{seeds: \[1\]\}: 'confirm.seeds' \[1\] shares \[1\]"):
        space_from_dict(base(), sets=["confirm={seeds: [1]}"])
    path = tmp_path / "bad.yaml"
    path.write_text("study: s\nsearch:\n  i2srm.delta: {grid: [0.0, 0.5]}\nseeds: [1]\nconfirm:\n  seeds: [11]\n"
                    "  top: -1\n", encoding="utf-8")
    with pytest.raises(SpaceError, match=rf"^{re.escape(str(path))} line 7: 'confirm.top' must be an integer >= 1 "):
        load_space(path)


# ---------------------------------------------------------------------------------------------- the reports


def write_records(folder: Path, runs: list[tuple[str, str, float, int, float, float]]) -> Path:
    """A stored study written with the records' own writer: ``runs`` of (run id, phase, delta, seed, dev, test),
    one epoch each; search seeds [1, 2], confirmation seeds [11, 12]."""
    from study.records import STUDY_JSON, record_epoch, write_json_atomic, write_run
    from study.schema import Run

    space = space_from_dict(base(confirm={"seeds": [11, 12], "top": 1}, trainer={"data.name": "synthetic-mner",
                                                                               "train.epochs": 1}))
    write_json_atomic(folder / STUDY_JSON, {"name": folder.name, "space": space.to_dict(), "searched": space.searched,
                                            "base_config": {"data.name": "synthetic-mner", "train.epochs": 1},
                                            "metric": "dev_f1", "mode": "max", "seeds": [1, 2]})
    for run, phase, delta, seed, dev, test in runs:
        epochs = record_epoch(folder, run, {"epoch": 1, "dev_f1": dev, "test_f1": test, "best_dev_f1": dev,
                                            "best_epoch": 1, "test_f1_at_best": test})
        write_run(folder, Run(trial_id=run, configuration=int(run[1:].split("-")[0]), seed=seed, phase=phase,
                              status="completed", params={"i2srm.delta": delta},
                              config={"train.epochs": 1, "i2srm.delta": delta, "train.seed": seed}).summarize(epochs))
    return folder


def test_reports_keep_the_confirmation_apart_and_lead_with_it(tmp_path: Path) -> None:
    import pandas as pd

    from study.reports import build_reports, load_study

    folder = write_records(tmp_path / "conf", [
        ("c0000-s1", "search", 0.0, 1, 60.0, 58.0), ("c0000-s2", "search", 0.0, 2, 62.0, 60.0),
        ("c0001-s1", "search", 0.5, 1, 80.0, 75.0), ("c0001-s2", "search", 0.5, 2, 82.0, 77.0),
        ("c0001-s11", "confirm", 0.5, 11, 70.0, 66.0), ("c0001-s12", "confirm", 0.5, 12, 74.0, 70.0)])
    study = load_study(folder)
    assert [t.trial_id for t in study.trials] == ["c0000-s1", "c0000-s2", "c0001-s1", "c0001-s2"]
    assert [t.trial_id for t in study.confirmations] == ["c0001-s11", "c0001-s12"]
    written = {p.name for p in build_reports(folder)}
    assert "confirm.csv" in written
    summary = pd.read_csv(folder / "summary.csv")
    assert summary["n"].tolist() == [2, 2]  # the fresh seeds are not in the search's statistics
    assert summary["test_f1_mean"].tolist() == [59.0, 76.0]
    assert len(pd.read_csv(folder / "trials.csv")) == 4
    confirm = pd.read_csv(folder / "confirm.csv")
    columns = ["trial_id", "configuration", "i2srm.delta", "seed", "best_dev_f1", "test_f1_at_best"]
    assert confirm[columns].values.tolist() == \
        [["c0001-s11", 1, 0.5, 11, 70.0, 66.0], ["c0001-s12", 1, 0.5, 12, 74.0, 70.0]]
    report = (folder / "REPORT.md").read_text(encoding="utf-8")
    sections = [ln for ln in report.splitlines() if ln.startswith("## ")]
    assert sections[0] == "## Confirmation on fresh seeds", sections
    # mean ± std (sample std, ddof 1) by hand: fresh 66, 70 -> 68 ± 2.83; search 75, 77 -> 76 ± 1.41
    assert ("Confirmed on fresh seeds [11, 12]: configuration 1 (`i2srm.delta` = 0.5) chosen by mean `dev_f1` over "
            "search seeds [1, 2] (81.00): test F1 68.00 ± 2.83 (n=2) on the fresh seeds, against 76.00 ± 1.41 (n=2) "
            "on the search seeds.") in report
    html = (folder / "REPORT.html").read_text(encoding="utf-8")
    assert "Confirmation on fresh seeds" in html and "68.00 ± 2.83 (n=2)" in html


def test_a_study_without_confirmation_has_no_such_section(tmp_path: Path) -> None:
    from study.reports import build_reports

    folder = write_records(tmp_path / "plain", [("c0000-s1", "search", 0.0, 1, 60.0, 58.0)])
    meta = json.loads((folder / "study.json").read_text())
    meta["space"]["confirm"] = None
    (folder / "study.json").write_text(json.dumps(meta))
    assert "confirm.csv" not in {p.name for p in build_reports(folder)}
    assert "Confirmation on fresh seeds" not in (folder / "REPORT.md").read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------- end to end


def confirm_space(tmp_path: Path, encoder: Path, epochs: int, confirm: str, epoch_seconds: float) -> Path:
    """The trainer's stand-in (``model/simulate.py``): the confirmation is the searcher's and the driver's work,
    whatever the trainer computes; ``epoch_seconds`` per epoch."""
    from ray_cluster import STAND_IN, write_space

    return write_space(tmp_path / "confirm.yaml", encoder, STAND_IN.format(seconds=epoch_seconds) + f"""\
study: conf
search:
  i2srm.delta: {{grid: [0.0, 1.0]}}
sampler: grid
seeds: [1]
confirm: {confirm}
resources: {{cpus: 1, gpus: 0}}
max_concurrent: 1
progress_interval: 1
reports: [summary]
""", epochs=epochs)


def best_configuration(study_dir: Path) -> int:
    """The search's best configuration by its Optuna value, as the searcher ranks it (ties: lower number)."""
    study = optuna.load_study(study_name=study_dir.name, storage=f"sqlite:///{study_dir / 'optuna.db'}")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    return min(complete, key=lambda t: (-t.value, t.number)).number


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_a_study_confirms_its_best_configuration_on_a_fresh_seed(tmp_path: Path, tiny_encoder: Path) -> None:
    import pandas as pd

    space = confirm_space(tmp_path, tiny_encoder, epochs=2, confirm="{seeds: [5], top: 1}", epoch_seconds=0)
    results = tmp_path / "results"
    proc = run_here(["--space", str(space), "--results-dir", str(results)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    d = results / "conf"
    assert "/3 done" in proc.stderr  # the progress line counts the confirmation run
    best = best_configuration(d)
    records = {p.parent.name: json.loads(p.read_text()) for p in (d / "trials").glob("*/trial.json")}
    assert {rid: (r["phase"], r["status"]) for rid, r in records.items()} == {
        "c0000-s1": ("search", "completed"), "c0001-s1": ("search", "completed"),
        f"c{best:04d}-s5": ("confirm", "completed")}
    fresh = records[f"c{best:04d}-s5"]
    assert fresh["seed"] == 5 and fresh["config"]["train.seed"] == 5 and fresh["epochs_run"] == 2
    assert fresh["params"] == records[f"c{best:04d}-s1"]["params"]
    study = optuna.load_study(study_name="conf", storage=f"sqlite:///{d / 'optuna.db'}")
    assert len(study.trials) == 2  # the confirmation run is not an Optuna trial
    assert study.user_attrs[CONFIRM_CONFIGS_ATTR] == [best]
    epochs = [json.loads(ln) for ln in (d / "trials" / f"c{best:04d}-s5" / "epochs.jsonl").read_text().splitlines()]
    # The run's score: dev_f1 at its best epoch, as the search's runs are scored.
    assert study.user_attrs[CONFIRM_VALUES_ATTR] == {str(best): {"5": max(e["dev_f1"] for e in epochs)}}
    confirm = pd.read_csv(d / "confirm.csv")
    assert confirm[["trial_id", "configuration", "seed"]].values.tolist() == [[f"c{best:04d}-s5", best, 5]]
    assert confirm["test_f1_at_best"].tolist() == [pytest.approx(fresh["test_f1_at_best"], abs=1e-4)]
    assert pd.read_csv(d / "summary.csv")["n"].tolist() == [1, 1]  # the fresh seed is not in the search's
    report = (d / "REPORT.md").read_text(encoding="utf-8")
    assert [ln for ln in report.splitlines() if ln.startswith("## ")][0] == "## Confirmation on fresh seeds"
    assert f"Confirmed on fresh seeds [5]: configuration {best} (`i2srm.delta` = " in report
    assert "chosen by mean `dev_f1` over search seeds [1]" in report


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_a_driver_killed_during_the_confirmation_resumes_it(tmp_path: Path, tiny_encoder: Path) -> None:
    from ray_cluster import STAND_IN_ENV, kill_group, start_study, trial_records, wait_until

    epochs = 4
    space = confirm_space(tmp_path, tiny_encoder, epochs=epochs, confirm="{seeds: [5, 6], top: 1}", epoch_seconds=1.0)
    results = tmp_path / "results"
    d = results / "conf"
    proc = start_study(["--space", str(space), "--results-dir", str(results)], tmp_path, tmp_path / "run1.log",
                       **STAND_IN_ENV)
    try:
        def confirming_midway() -> bool:
            return any(r.get("phase") == "confirm" and r["status"] == "running" and 1 <= r["epochs_run"] < epochs
                       for r in trial_records(d).values())
        wait_until(confirming_midway, 500, "a confirmation run midway", proc, poll=0.3)
    finally:
        kill_group(proc, signal.SIGKILL)
    before = trial_records(d)
    search = {rid: (d / "trials" / rid / "epochs.jsonl").read_bytes() for rid, r in before.items()
              if r["phase"] == "search"}
    assert len(search) == 2 and all(before[rid]["status"] == "completed" for rid in search)
    chosen = optuna.load_study(study_name="conf", storage=f"sqlite:///{d / 'optuna.db'}").user_attrs[
        CONFIRM_CONFIGS_ATTR]
    assert chosen == [best_configuration(d)]

    # The resume is an ordinary run of the driver: in this process, on the session's Ray instance.
    resumed = run_here(["--name", "conf", "--results-dir", str(results), "--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = trial_records(d)
    fresh = {f"c{chosen[0]:04d}-s5", f"c{chosen[0]:04d}-s6"}
    assert {rid for rid, r in after.items() if r["phase"] == "confirm"} == fresh
    assert all(r["status"] == "completed" and r["epochs_run"] == epochs for r in after.values()), after
    for rid, content in search.items():  # no search run trained again
        assert (d / "trials" / rid / "epochs.jsonl").read_bytes() == content
    for rid in fresh:  # every epoch recorded once
        rows = [json.loads(ln) for ln in (d / "trials" / rid / "epochs.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))
    midway = [rid for rid, r in before.items() if r["phase"] == "confirm" and r["status"] == "running"]
    assert all(after[rid]["resumed_from_epoch"] >= 1 for rid in midway), {rid: after[rid] for rid in midway}
    study = optuna.load_study(study_name="conf", storage=f"sqlite:///{d / 'optuna.db'}")
    assert study.user_attrs[CONFIRM_CONFIGS_ATTR] == chosen and len(study.trials) == 2
    assert set(study.user_attrs[CONFIRM_VALUES_ATTR][str(chosen[0])]) == {"5", "6"}


def test_the_scheduler_stops_search_runs_but_no_confirmation_run() -> None:
    """Ray's ASHA, as ``make_scheduler`` builds it, on real Tune trial objects: a result below the rung's cutoff
    stops a search run; the same result of a confirmation run does not (it must reach its last epoch)."""
    from ray.tune.experiment import Trial
    from ray.tune.schedulers import TrialScheduler

    from study.search import SearchASHAScheduler, SearchMedianStoppingRule, make_scheduler

    space = space_from_dict(base(trainer={"data.name": "synthetic-mner", "train.epochs": 4}, scheduler="asha",
                                 confirm={"seeds": [11]}))
    scheduler = make_scheduler(space, epochs=4)
    assert isinstance(scheduler, SearchASHAScheduler)
    assert isinstance(make_scheduler(space_from_dict(base(scheduler="median")), epochs=4), SearchMedianStoppingRule)
    scheduler.set_search_properties("dev_f1", "max")

    def trial(phase: str) -> Trial:
        t = Trial("__fake", config={PHASE_KEY: phase}, stub=True)
        scheduler.on_trial_add(None, t)
        return t

    for value in (80.0, 90.0):
        assert scheduler.on_trial_result(None, trial(SEARCH_PHASE), {"epoch": 1, "dev_f1": value}) == \
            TrialScheduler.CONTINUE
    low = {"epoch": 1, "dev_f1": 10.0}
    assert scheduler.on_trial_result(None, trial(SEARCH_PHASE), low) == TrialScheduler.STOP
    assert scheduler.on_trial_result(None, trial(CONFIRM_PHASE), low) == TrialScheduler.CONTINUE
