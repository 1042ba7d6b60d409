"""Adaptive seeds (the space's ``resolve``): the rule against scipy, its validation, and real small studies (real Ray,
Optuna and trainer; one epoch of the tiny trainer, scored on ``train_loss`` so that every seed scores differently).

- A narrow width adds seeds up to ``max_seeds`` (the next integers, skipping the confirmation's), and the reference
  configuration runs every seed a configuration got; Optuna is told the mean over all of them; the reports say so.
- A wide width adds none; a TPE search asks the reference configuration first.
- A driver killed while extra seeds run, then ``--resume``: the seeds added before the kill are kept (their runs not
  run again), the ones being added continue, and every configuration ends with ``max_seeds`` seeds.
"""

from __future__ import annotations

import csv
import math
import signal
import subprocess
from pathlib import Path
from typing import Any, Callable

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.search import Searcher
from scipy import stats

from ray_cluster import kill_group, run_here, run_py, start_study, trial_records, wait_until, write_space  # noqa: I001
from study.adaptive import extra_seeds, half_width, paired_differences, seeds_needed
from study.records import read_runs
from study.schema import CONFIG_KEY, SCORE_KEY, SEED_KEY
from study.search import StudySearcher, open_study
from study.space import SpaceError, space_from_dict

ROOT = Path(__file__).resolve().parent.parent
RUN = str(ROOT / "study" / "run.py")
SCORED = """\
metric: train_loss
mode: min
resources: {cpus: 1, gpus: 0}
progress_interval: 1
"""
ONE_AT_A_TIME = "max_concurrent: 1\n"  # one trial process, reused by every run (Tune's reuse_actors)
TWO_AT_A_TIME = "max_concurrent: 2\n"


def test_half_width_is_scipys_t_interval_and_seeds_needed_reaches_it() -> None:
    xs = [1.3, -0.4, 2.2, 0.9, 1.7]
    low, high = stats.t.interval(0.95, len(xs) - 1, loc=np.mean(xs), scale=stats.sem(xs))
    assert half_width(xs) == pytest.approx((high - low) / 2, rel=1e-12)
    assert half_width([1.0]) == math.inf and half_width([]) == math.inf
    need = seeds_needed(xs, 0.5)
    sd = float(np.std(xs, ddof=1))
    assert need is not None and stats.t.ppf(0.975, need - 1) * sd / math.sqrt(need) <= 0.5
    assert stats.t.ppf(0.975, need - 2) * sd / math.sqrt(need - 1) > 0.5  # the smallest such n
    assert seeds_needed([2.0], 0.5) is None
    assert paired_differences({1: 5.0, 2: 7.0, 3: None, 4: 1.0}, {1: 4.0, 2: 4.5, 3: 1.0}) == [1.0, 2.5]
    assert paired_differences({2: 7.0, 1: 5.0, 3: None}, None) == [5.0, 7.0]
    assert extra_seeds([1, 2], [4, 5], 4) == [3, 6, 7, 8]


BASE = {"study": "r", "trainer": {"data.name": "synthetic-mner"}, "search": {"i2srm.delta": {"grid": [0.0, 0.7]}},
        "seeds": [1, 2]}


@pytest.mark.parametrize("resolve, sets, expected", [
    ({"width": 1.0, "max_seeds": 2}, [], ["'resolve.max_seeds'", "above the 2 seed(s)", "got 2"]),
    ({"width": 0, "max_seeds": 5}, [], ["'resolve.width'", "number > 0", "got 0"]),
    ({"width": 1.0, "max_sedes": 5}, [], ["'resolve.max_sedes'", "allowed: width, max_seeds", "max_seeds"]),
    ({"width": 1.0}, [], ["'resolve'", "lacks max_seeds"]),
    ("wide", [], ["'resolve'", "{width: 1.0, max_seeds: 8}"]),
    (None, ["resolve.width=-1"], ["--set resolve.width=-1", "number > 0"]),
    (None, ["resolve.width=0.5"], ["'resolve'", "lacks max_seeds"]),
    ({"width": 1.0, "max_seeds": 4}, ["resolve.max_seeds=true"], ["--set resolve.max_seeds=true", "integer"]),
])
def test_resolve_is_validated_with_one_line(resolve: object, sets: list[str], expected: list[str]) -> None:
    tree = {**BASE, **({"resolve": resolve} if resolve is not None else {})}
    with pytest.raises(SpaceError) as err:
        space_from_dict(tree, "r.yaml", sets=sets)
    text = str(err.value)
    assert "\n" not in text and all(e in text for e in expected), text


def test_resolve_is_set_and_stored() -> None:
    space = space_from_dict(BASE, "r.yaml", sets=["resolve={width: 0.5, max_seeds: 6}"])
    assert space.resolve is not None and (space.resolve.width, space.resolve.max_seeds) == (0.5, 6)
    assert space.to_dict()["resolve"] == {"width": 0.5, "max_seeds": 6} and space.total_runs == 2 * 6
    assert space_from_dict(space.to_dict(), "space.yaml").resolve == space.resolve


def test_run_py_refuses_a_bad_resolve_with_exit_2(tmp_path: Path, tiny_encoder: Path) -> None:
    space = write_space(tmp_path / "bad.yaml", tiny_encoder, "study: bad\nsearch:\n  i2srm.delta: {grid: [0.0]}\n"
                                                              "seeds: [1, 2]\nresolve: {width: 1.0, max_seeds: 1}\n")
    proc = run_py([RUN, "--space", str(space), "--results-dir", str(tmp_path / "results")], tmp_path, timeout=120)
    assert proc.returncode == 2 and "resolve.max_seeds" in proc.stderr and not (tmp_path / "results").exists()


def _run(tmp_path: Path, name: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    """The study in this process, on the session's Ray instance (the test uses the ``local_ray`` fixture)."""
    return run_here(["--space", str(tmp_path / f"{name}.yaml"), "--results-dir", str(tmp_path / "results"), *args],
                    tmp_path)


def _seeds(study_dir: Path) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for r in read_runs(study_dir, with_epochs=False):
        if r.phase == "search":
            out.setdefault(r.configuration, []).append(r.seed)
    return {c: sorted(s) for c, s in out.items()}


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_narrow_width_adds_seeds_up_to_max_and_the_reference_runs_them(tmp_path: Path, tiny_encoder: Path) -> None:
    write_space(tmp_path / "narrow.yaml", tiny_encoder, f"""\
study: narrow
search:
  i2srm.delta: {{grid: [0.0, 0.7]}}
reference: {{i2srm.delta: 0.7}}
seeds: [1, 2]
resolve: {{width: 1.0e-9, max_seeds: 4}}
confirm: {{seeds: [4], top: 1}}
reports: [summary]
{SCORED}{ONE_AT_A_TIME}""", epochs=1)
    proc = _run(tmp_path, "narrow", [])
    assert proc.returncode == 0, proc.stderr[-3000:]
    d = tmp_path / "results" / "narrow"
    # Configuration 0 never resolves to ±1e-9: seeds 3 and 5 (4 is the confirmation's); the reference
    # (configuration 1) runs both because configuration 0 got them, not on its own account.
    assert _seeds(d) == {0: [1, 2, 3, 5], 1: [1, 2, 3, 5]}
    runs = read_runs(d)
    score = {(r.configuration, r.seed): r.score("train_loss", "min") for r in runs if r.phase == "search"}
    ot = optuna.load_study(study_name="narrow", storage=f"sqlite:///{d / 'optuna.db'}")
    by = {t.number: t for t in ot.trials}
    assert [t.state for t in ot.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    for number in (0, 1):
        mine = [score[(number, s)] for s in (1, 2, 3, 5)]
        assert by[number].value == pytest.approx(sum(mine) / 4, abs=1e-12)
        assert by[number].user_attrs["extra_seeds"] == [3, 5]
    assert by[1].datetime_complete >= by[0].datetime_complete  # the reference is told last
    assert sorted((r.configuration, r.seed) for r in runs if r.phase == "confirm") == [(0, 4)]
    with (d / "summary.csv").open(encoding="utf-8") as f:
        rows = {r["i2srm.delta"]: r for r in csv.DictReader(f)}
    diffs = [score[(0, s)] - score[(1, s)] for s in (1, 2, 3, 5)]
    assert rows["0.0"]["n"] == "4" and rows["0.0"]["resolved"] == "false"
    assert float(rows["0.0"]["interval_halfwidth"]) == pytest.approx(
        stats.t.ppf(0.975, 3) * stats.sem(diffs), abs=1e-4)
    assert rows["0.7"]["reference"] == "true" and rows["0.7"]["interval_halfwidth"] == ""
    report = (d / "REPORT.md").read_text(encoding="utf-8")
    assert "Adaptive seeds: 0 of 1 configurations resolved to ±1e-09" in report
    assert "Unresolved: 0 (4 pairs" in report


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_wide_width_adds_none_and_tpe_asks_the_reference_first(tmp_path: Path, tiny_encoder: Path) -> None:
    write_space(tmp_path / "wide.yaml", tiny_encoder, f"""\
study: wide
search:
  i2srm.delta: {{choice: [0.0, 0.7]}}
reference: {{i2srm.delta: 0.7}}
sampler: tpe
trials: 2
seeds: [1, 2]
resolve: {{width: 1.0e+9, max_seeds: 4}}
reports: [summary]
{SCORED}{ONE_AT_A_TIME}""", epochs=1)
    proc = _run(tmp_path, "wide", [])
    assert proc.returncode == 0, proc.stderr[-3000:]
    d = tmp_path / "results" / "wide"
    assert _seeds(d) == {0: [1, 2], 1: [1, 2]}
    ot = optuna.load_study(study_name="wide", storage=f"sqlite:///{d / 'optuna.db'}")
    assert ot.trials[0].params == {"i2srm.delta": 0.7}
    assert all("extra_seeds" not in t.user_attrs for t in ot.trials)
    report = (d / "REPORT.md").read_text(encoding="utf-8")
    resolved = sum(1 for t in ot.trials if t.params != {"i2srm.delta": 0.7})
    assert f"Adaptive seeds: {resolved} of {resolved} configurations resolved" in report


EPOCHS = 3  # long enough for a run to be killed midway


@pytest.mark.slow
@pytest.mark.usefixtures("local_ray")
def test_driver_kill_while_seeds_are_added_then_resume_keeps_them(tmp_path: Path, tiny_encoder: Path) -> None:
    # The reference (delta 0.7 by default) is not in the grid: each configuration's own interval decides.
    write_space(tmp_path / "kill.yaml", tiny_encoder, f"""\
study: kill
search:
  i2srm.delta: {{grid: [0.0, 0.5]}}
seeds: [1]
resolve: {{width: 1.0e-9, max_seeds: 3}}
reports: [summary]
{SCORED}{TWO_AT_A_TIME}""", epochs=EPOCHS)
    results = tmp_path / "results"
    d = results / "kill"
    proc = start_study(["--space", str(tmp_path / "kill.yaml"), "--results-dir", str(results)], tmp_path,
                       tmp_path / "run1.log")
    try:
        def last_seed_midway() -> bool:
            records = trial_records(d)
            return any(t["seed"] == 2 and t["status"] == "completed" for t in records.values()) and any(
                t["seed"] == 3 and t["status"] == "running" and 1 <= t["epochs_run"] < EPOCHS
                for t in records.values())
        wait_until(last_seed_midway, 400, "a seed added and completed, and the next one midway", proc, poll=0.2)
    finally:
        kill_group(proc, signal.SIGKILL)
    before = trial_records(d)
    finished = {tid: (d / "trials" / tid / "epochs.jsonl").read_bytes()
                for tid, t in before.items() if t["status"] == "completed"}
    assert any(t["seed"] == 2 for t in before.values() if t["status"] == "completed")
    # The resume is an ordinary run of the driver: in this process, on the session's Ray instance.
    resumed = run_here(["--name", "kill", "--results-dir", str(results), "--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = trial_records(d)
    assert _seeds(d) == {0: [1, 2, 3], 1: [1, 2, 3]}
    assert all(t["status"] == "completed" and t["epochs_run"] == EPOCHS for t in after.values()), after
    for tid, content in finished.items():  # nothing that had finished ran again
        assert (d / "trials" / tid / "epochs.jsonl").read_bytes() == content
    ot = optuna.load_study(study_name="kill", storage=f"sqlite:///{d / 'optuna.db'}")
    complete = [t for t in ot.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.params["i2srm.delta"] for t in complete) == [0.0, 0.5]
    assert all(sorted(map(int, t.user_attrs["seed_values"])) == [1, 2, 3] for t in complete)
    # The configurations left running were closed as orphans with the seeds they had been given, and run again
    # with those handed out at once.
    orphans = ot.user_attrs["orphans"]
    assert any(ot.trials[n].user_attrs.get("extra_seeds") for n in orphans)
    assert all(t.user_attrs["extra_seeds"] == [2, 3] for t in complete)


# ---------------------------------------------------------------------------------------------- the searcher alone
# The searcher driven through Tune's Searcher interface (suggest / on_trial_complete) over a real in-memory Optuna
# study, as Tune drives it: which runs it hands out, in what order, and what Optuna is told.

def _searcher(extra: dict[str, Any]) -> StudySearcher:
    space = space_from_dict({**BASE, "reference": {"i2srm.delta": 0.7}, **extra}, "r.yaml")
    return StudySearcher(space, open_study(space, "r", optuna.storages.InMemoryStorage(), space.trials))


def _drive(searcher: StudySearcher, score: Callable[[int, int], float],
           epoch: Callable[[int, int], int] = lambda c, s: 1) -> list[tuple[int, int]]:
    """Hand out and end runs one at a time (each ends before the next is asked); the (configuration, seed) order."""
    order: list[tuple[int, int]] = []
    for n in range(100):
        config = searcher.suggest(f"t{n}")
        if config == Searcher.FINISHED:
            return order
        assert isinstance(config, dict), "nothing to hand out while every run has ended"
        run = (int(config[CONFIG_KEY]), int(config[SEED_KEY]))
        order.append(run)
        searcher.on_trial_complete(f"t{n}", {SCORE_KEY: score(*run), "epoch": epoch(*run)})
    raise AssertionError(order)


def test_the_reference_runs_the_seed_a_configuration_got_and_is_told_last() -> None:
    searcher = _searcher({"resolve": {"width": 1e-9, "max_seeds": 3}, "trainer": {"train.epochs": 1}})
    noise = {1: 0.0, 2: 1.0, 3: 0.5}
    order = _drive(searcher, lambda c, s: 50.0 + c + noise[s] * (c + 1))
    # Configuration 0 waits for the reference's seeds 1-2, gets seed 3, and the reference runs seed 3 for it.
    assert order == [(0, 1), (0, 2), (1, 1), (1, 2), (0, 3), (1, 3)]
    trials = searcher.study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert trials[1].datetime_complete >= trials[0].datetime_complete
    assert trials[0].value == pytest.approx(50.0 + (0.0 + 1.0 + 0.5) / 3)
    assert [t.user_attrs["extra_seeds"] for t in trials] == [[3], [3]]


def test_a_configuration_the_scheduler_stopped_gets_no_more_seeds() -> None:
    searcher = _searcher({"resolve": {"width": 1e-9, "max_seeds": 4}, "scheduler": "asha",
                          "trainer": {"train.epochs": 2}})
    order = _drive(searcher, lambda c, s: 50.0 + s * (c + 1), epoch=lambda c, s: 1 if (c, s) == (0, 2) else 2)
    assert order == [(0, 1), (0, 2), (1, 1), (1, 2)]  # configuration 0 was stopped: no seed 3 for either
    assert [t.state for t in searcher.study.get_trials()] == [TrialState.PRUNED, TrialState.COMPLETE]


def test_without_the_reference_in_the_grid_each_configuration_resolves_on_its_own() -> None:
    searcher = _searcher({"search": {"i2srm.delta": {"grid": [0.0, 0.5]}},
                          "resolve": {"width": 0.6, "max_seeds": 5}, "trainer": {"train.epochs": 1}})
    spread = {0: {1: 50.0, 2: 52.0, 3: 51.0, 4: 51.0, 5: 51.0}, 1: {s: 60.0 + 0.01 * s for s in range(1, 6)}}
    order = _drive(searcher, lambda c, s: spread[c][s])
    # 0: [50, 52] is ±12.7 wide, [50, 52, 51] ±2.5, 4 seeds ±1.3, 5 seeds ±0.88: at max_seeds; 1 resolves at 2.
    assert sorted(order) == [(0, 1), (0, 2), (0, 3), (0, 4), (0, 5), (1, 1), (1, 2)]


# ---------------------------------------------------------------------------------------------- the reports
def test_reports_give_each_configurations_interval_and_the_power_line(tmp_path: Path) -> None:
    from study.reports import build_reports
    from tests.helpers import write_study

    dev = {0.7: [70.0, 72.0, 71.0, 73.0], 0.0: [71.0, 73.5, 71.5, 74.0], 1.0: [60.0, 75.0, 66.0]}
    space = {"study": "res", "search": {"i2srm.delta": {"grid": [0.0, 0.7, 1.0]}}, "sampler": "grid",
             "seeds": [1, 2, 3], "reports": ["summary", "sensitivity"], "reference": {"i2srm.delta": 0.7},
             "resolve": {"width": 1.0, "max_seeds": 4}}
    trials = [{"trial_id": f"c{d}-s{s}", "status": "completed", "seed": s, "params": {"i2srm.delta": d},
               "dev": [v], "test": [v - 5.0]} for d, vs in dev.items() for s, v in enumerate(vs, 1)]
    folder = write_study(tmp_path / "res", "res", space, trials)
    build_reports(folder)
    with (folder / "summary.csv").open(encoding="utf-8") as f:
        rows = {r["i2srm.delta"]: r for r in csv.DictReader(f)}
    near = np.subtract(dev[0.0], dev[0.7])  # 1.0, 1.5, 0.5, 1.0
    far = np.subtract(dev[1.0], dev[0.7][:3])  # -10, 3, -5
    assert float(rows["0.0"]["interval_halfwidth"]) == pytest.approx(stats.t.ppf(0.975, 3) * stats.sem(near),
                                                                     abs=1e-4)
    assert (rows["0.0"]["n"], rows["0.0"]["resolved"]) == ("4", "true")
    assert float(rows["1.0"]["interval_halfwidth"]) == pytest.approx(stats.t.ppf(0.975, 2) * stats.sem(far),
                                                                     abs=1e-4)
    assert (rows["1.0"]["n"], rows["1.0"]["resolved"]) == ("3", "false")
    assert rows["0.7"]["interval_halfwidth"] == "" and rows["0.7"]["resolved"] == ""
    need = seeds_needed(list(far), 1.0)
    assert need is not None and need > 3
    report = (folder / "REPORT.md").read_text(encoding="utf-8")
    assert "Adaptive seeds: 1 of 2 configurations resolved to ±1 (dev_f1, 95% t-interval of their paired " \
           "difference from the reference configuration; at most 4 seeds each)." in report
    assert (f"Unresolved: 1 (3 pairs, ±{stats.t.ppf(0.975, 2) * stats.sem(far):.2f}: its spread suggests about "
            f"{need} pairs in all, {need - 3} more).") in report
    assert "| 1 | 3 |" in report and "(open)" in report and "95% interval (dev_f1)" in report
    assert "seeds [1, 2, 3], more (up to 4) while a configuration's 95% interval is wider than ±1: seeds [4] " \
           "added" in report


def test_compare_of_two_2_seed_studies_gives_no_test_and_says_why(tmp_path: Path) -> None:
    # Two paired differences that happen to agree (-1.43, -1.45): a one-degree-of-freedom t-test would star them.
    from study.reports import build_reports
    from study.reports.studies import compare
    from tests.helpers import write_study

    a = {0.0: [80.0, 84.0], 0.7: [78.0, 79.0]}
    b = {0.0: [78.57, 82.55], 0.7: [78.0, 79.5]}
    folders = []
    for name, test in (("a", a), ("b", b)):
        space = {"study": name, "search": {"i2srm.delta": {"grid": [0.0, 0.7]}}, "sampler": "grid",
                 "seeds": [1, 2], "reports": ["summary"], "reference": {"i2srm.delta": 0.7}}
        trials = [{"trial_id": f"c{d}-s{s}", "status": "completed", "seed": s, "params": {"i2srm.delta": d},
                   "dev": [v], "test": [v]} for d, vs in test.items() for s, v in enumerate(vs, 1)]
        folders.append(write_study(tmp_path / name, name, space, trials))
        build_reports(folders[-1])
    assert stats.ttest_rel(b[0.0], a[0.0]).pvalue < 0.05  # what used to be starred
    out = tmp_path / "a_vs_b"
    compare(folders[0], folders[1], out)
    with (out / "compare.csv").open(encoding="utf-8") as f:
        rows = {r["i2srm.delta"]: r for r in csv.DictReader(f)}
    row = rows["0.0"]
    assert row["n_paired"] == "2" and float(row["test_f1_diff"]) == pytest.approx(-1.44)
    assert all(row[c] == "" for c in ("p_value", "p_holm", "p_signflip", "diff_ci_low", "diff_ci_high"))
    md = (out / "compare.md").read_text(encoding="utf-8")
    assert "| 0 | 82.00 ± 2.83 | 80.56 ± 2.81 | 2 | -1.44 | n/a (2 pairs: no test below 3) | n/a | n/a |" in md


def test_progress_line_gives_the_run_count_and_eta_as_ranges() -> None:
    """With ``resolve`` a study makes between ``fewest_runs`` and ``total_runs`` runs; the line shows both."""
    from types import SimpleNamespace

    from study.progress import ProgressLine
    from study.trainable import TrialSetup

    space = space_from_dict({**BASE, "resolve": {"width": 1.0, "max_seeds": 4}, "trainer": {"train.epochs": 2}},
                            "r.yaml")
    assert (space.fewest_runs, space.total_runs) == (4, 8)
    setup = TrialSetup(trainer=dict(space.trainer), seeds=tuple(space.seeds), searched=tuple(space.searched),
                       threads=1)
    line = ProgressLine("r", setup, space.total_runs, 2, 0.0, fewest_runs=space.fewest_runs)

    def trial(n: int, status: str, epoch: int) -> SimpleNamespace:
        return SimpleNamespace(trial_id=f"t{n}", status=status, config={CONFIG_KEY: n % 2, SEED_KEY: 1 + n // 2},
                               last_result={"epoch": epoch})
    assert line.line([])[0].startswith("[study r] 0/4-8 done, 0 running") and line.line([])[0].endswith("ETA ?")
    # Two runs ended (4 epochs) and two run their first epoch: 6 epochs of 8-16, at the rate seen so far.
    text, _ = line.line([trial(0, "TERMINATED", 2), trial(1, "TERMINATED", 2), trial(2, "RUNNING", 1),
                         trial(3, "RUNNING", 1)])
    assert "2/4-8 done, 2 running, 0 failed" in text
    low, high = text.rsplit("ETA ", 1)[1].split("-")
    assert low and high and low != "?"
    # Resolve handed out more seeds: the fewest is at least what ended or runs now.
    more = [trial(n, "TERMINATED", 2) for n in range(5)] + [trial(5, "RUNNING", 0)]
    assert "5/6-8 done, 1 running" in line.line(more)[0]
    # Without resolve the count is one number.
    plain = ProgressLine("r", setup, 4, 2, 0.0)
    assert "0/4 done" in plain.line([])[0]
