"""How a study searches: the Optuna sampler and study behind Tune's ``OptunaSearch``, seeds, the scheduler.

One Optuna trial per configuration: ``SeedRepeater`` runs each suggestion once per seed (Tune config key
``__trial_index__`` = the seed's index) and tells Optuna the mean over seeds, so ``optuna.db`` (or the
space's ``optuna_storage``) is a real Optuna study of configurations that ``optuna.load_study`` opens and
the importance report reads. A result Optuna could not be told is an error the user sees
(``ResumableOptunaSearch.on_trial_complete``), not a warning Ray logs where the study has silenced it.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import optuna
from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule, TrialScheduler
from ray.tune.search import Repeater, Searcher
from ray.tune.search.optuna import OptunaSearch

from study.space import Param, Space

log = logging.getLogger(__name__)
# A result Optuna could not be told: its own logger, so that the runner can print it as the study's own line
# and record it (``study/progress.py``, ``TellFailures``) without touching this module's other warnings.
tell_log = logging.getLogger(f"{__name__}.tell")


def optuna_distribution(param: Param) -> optuna.distributions.BaseDistribution:
    if param.finite:
        return optuna.distributions.CategoricalDistribution(list(param.values))
    if param.kind == "int":
        return optuna.distributions.IntDistribution(int(param.low), int(param.high), step=int(param.step or 1))
    if param.kind == "loguniform":
        return optuna.distributions.FloatDistribution(param.low, param.high, log=True)
    return optuna.distributions.FloatDistribution(param.low, param.high, step=param.step)


class AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler for ask/tell use: its after_trial calls study.stop() once the grid is covered, which only
    works inside study.optimize() and raises under Tune's ask/tell; Tune stops after num_samples anyway.
    (Module level, because the searcher is pickled with Tune's experiment state.)"""

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        return None

    def grid_point(self, trial: optuna.trial.FrozenTrial) -> dict[str, Any] | None:
        """The parameters of the grid point ``trial`` was given (None if it was given none), read the way
        GridSampler itself reads them: a trial asked just before a kill may hold its grid id but no params."""
        grid_id = trial.system_attrs.get("grid_id")
        if grid_id is None or not 0 <= int(grid_id) < len(self._all_grids):
            return None
        point = self._all_grids[int(grid_id)]
        return {name: point[i] for i, name in enumerate(self._param_names)}


class ResumableOptunaSearch(OptunaSearch):
    """OptunaSearch that, when Tune restores it after the driver was killed, hands back the configurations
    Optuna gave out after Tune's last experiment checkpoint.

    A kill between Optuna's ``ask`` and Tune's next checkpoint leaves a RUNNING trial in ``optuna.db`` that
    the restored searcher does not know (an orphan): no Tune trial will ever report it. Left alone, it
    blocks its configuration for good (the GridSampler counts RUNNING grid points as taken, so the resumed
    study repeats one point and never runs the orphan's). On restore, each orphan is told FAIL and its parameters are
    enqueued (user attr ``requeued_from`` = the orphan's number), so the next ``ask`` runs exactly that
    configuration: the study goes on where it was. (Module level: the searcher is pickled with Tune's experiment state.)
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.tell_failures: list[dict[str, Any]] = []  # results Optuna could not be told (on_trial_complete)

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self.requeue_orphans()

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """OptunaSearch's own, but for what a failed ``tell`` does: Ray's logs a warning (which the study
        silences with Ray's searcher logger) and goes on; here it is logged as an error on ``tell_log`` (the
        runner prints it as one line on stderr and keeps it in ``optuna_errors.jsonl``) and
        kept in ``tell_failures``. The Optuna trial stays RUNNING; the Tune trials and their records are
        unaffected. A trial Optuna already holds as finished (one that ended just before a driver was
        killed, reported again on ``--resume``) is skipped, as before."""
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return super().on_trial_complete(trial_id, result, error)
        ot_trial = self._ot_trials[trial_id]
        value = None
        if result:
            value = ([result.get(m) for m in self.metric] if isinstance(self.metric, list)
                     else result.get(self.metric))
        state = optuna.trial.TrialState.COMPLETE
        if value is None:
            state = optuna.trial.TrialState.FAIL if error else optuna.trial.TrialState.PRUNED
        try:
            self._ot_study.tell(ot_trial, value, state=state, skip_if_finished=True)
        except Exception as exc:  # a storage that fails (locked, unreachable), a value Optuna refuses
            text = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
            failure = {"trial_id": trial_id, "optuna_trial": ot_trial.number, "state": state.name,
                       "value": value, "params": dict(ot_trial.params),
                       "error": f"{type(exc).__name__}: {text}" if text else type(exc).__name__}
            # setdefault: a searcher unpickled from a state saved before this attribute existed lacks it
            self.__dict__.setdefault("tell_failures", []).append(failure)
            tell_log.error("Optuna was not told how trial %s ended (Optuna trial %d, %s%s): %s; that trial "
                           "stays RUNNING in the Optuna study", trial_id, ot_trial.number, state.name,
                           f" {value}" if value is not None else "", failure["error"],
                           extra={"tell_failure": failure})
        self._completed_trials.add(trial_id)

    def requeue_orphans(self) -> list[int]:
        """Fail and re-enqueue the RUNNING Optuna trials this searcher does not own; their numbers."""
        study = self._ot_study
        if study is None:
            return []
        owned = {t.number for t in self._ot_trials.values()}
        orphans = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                   if t.number not in owned]
        for t in orphans:
            params: dict[str, Any] | None = dict(t.params)
            if isinstance(self._space, dict) and set(params) != set(self._space):
                # Killed inside ask: not every parameter drawn yet. A grid point is known from its grid id;
                # otherwise the sampler simply proposes a new configuration in its place.
                sampler = study.sampler
                params = sampler.grid_point(t) if isinstance(sampler, AskTellGridSampler) else None
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            if params:
                study.enqueue_trial(params, user_attrs={"requeued_from": t.number})
            log.warning("optuna trial %d was given out just before the driver stopped and never reached a Tune "
                        "trial; %s", t.number,
                        f"its configuration {params} is queued again" if params else "it is closed as failed")
        return [t.number for t in orphans]


def optuna_sampler(space: Space) -> optuna.samplers.BaseSampler:
    if space.sampler == "grid":
        return AskTellGridSampler({k: list(p.values) for k, p in space.search.items()}, seed=space.sampler_seed)
    if space.sampler == "random":
        return optuna.samplers.RandomSampler(seed=space.sampler_seed)
    return optuna.samplers.TPESampler(seed=space.sampler_seed)


class SeedRepeater(Repeater):
    """Ray's Repeater, telling Optuna what happened to a configuration over all its seeds:

    * every seed finished all epochs: COMPLETE with the mean of the seeds' last ``metric``;
    * a seed was stopped early by the scheduler: PRUNED (an early epoch's value is not comparable);
    * no seed reported the metric (all failed): FAIL.
    """

    def __init__(self, searcher: Searcher, repeat: int, epochs: int):
        super().__init__(searcher, repeat=repeat, set_index=True)
        self.epochs = epochs
        self._stopped_groups: set[str] = set()  # primary trial ids of configurations with a pruned seed

    def on_trial_complete(self, trial_id: str, result: dict | None = None, **kwargs: Any) -> None:
        group = self._trial_id_to_group.get(trial_id)
        if group is None:
            return super().on_trial_complete(trial_id, result, **kwargs)  # logs Ray's own error
        metric = self.searcher.metric
        score = float(result[metric]) if result and metric in result else math.nan
        if result and not kwargs.get("error") and float(result.get("epoch", self.epochs)) < self.epochs:
            self._stopped_groups.add(group.primary_trial_id)
        group.report(trial_id, score)
        if not group.finished_reporting():
            return
        scores = [s for s in group.scores() if s is not None and not math.isnan(s)]
        primary = group.primary_trial_id
        if not scores:
            self.searcher.on_trial_complete(primary, result=None, error=True)
        elif primary in self._stopped_groups:
            self.searcher.on_trial_complete(primary, result=None, error=False)
        else:
            self.searcher.on_trial_complete(primary, result={metric: sum(scores) / len(scores)}, error=False)


def make_search_alg(space: Space, study_dir: Path, name: str, epochs: int,
                    storage: optuna.storages.BaseStorage | None = None) -> Searcher:
    """OptunaSearch over the searched keys with the space's seeded sampler, stored in ``storage`` (default:
    the space's ``optuna_storage`` opened here, ``results/<study>/optuna.db`` unless it names another)."""
    from study.optuna_storage import open_storage

    if storage is None:
        storage = open_storage(space.optuna_storage, study_dir)
    searcher = ResumableOptunaSearch(space={k: optuna_distribution(p) for k, p in space.search.items()},
                            metric=space.metric, mode=space.mode, sampler=optuna_sampler(space),
                            study_name=name, storage=storage)
    return SeedRepeater(searcher, repeat=len(space.seeds), epochs=epochs)


def make_scheduler(space: Space, epochs: int) -> TrialScheduler | None:
    """ASHA or the median stopping rule over the trainer's ``epoch``; None runs every trial to the end."""
    opts = space.scheduler_options  # complete: the schema fills in SCHEDULER_OPTIONS' defaults
    if space.scheduler == "asha":
        return ASHAScheduler(time_attr="epoch", max_t=epochs, **opts)
    if space.scheduler == "median":
        return MedianStoppingRule(time_attr="epoch", **opts)
    return None
