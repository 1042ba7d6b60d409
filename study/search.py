"""How a study searches: its Optuna study decides, Ray Tune executes.

The Optuna study (``results/<study>/optuna.db``, or the space's ``optuna_storage``) is the one record of which
configurations exist and how each ended. One Optuna trial is one configuration; its seeds are the Tune trials
that run it (``runs``, named ``c<config>-s<seed>``, see ``study/trainable.py``). ``StudySearcher`` is a Tune
``Searcher`` on Tune's public interface (``suggest`` / ``on_trial_complete``) over Optuna's public ask/tell:

* ``suggest`` asks Optuna for a configuration (a grid point is fixed with ``enqueue_trial`` first; the space's
  grid is enumerated here, in its listed order) and hands out one Tune trial per seed;
* when every seed of a configuration has ended it tells Optuna: COMPLETE with the mean over seeds of the runs'
  scores (``study.schema.score``: the metric at each run's best epoch), PRUNED if the scheduler stopped a seed
  (an early epoch's value is not comparable), FAIL if no seed reported the metric. The per-seed scores go into
  the Optuna trial's user attribute ``seed_values``.
  A result Optuna could not be told is an error the user sees (``tell_log``), never lost.
* it returns ``Searcher.FINISHED`` once the study's budget of configurations is handed out, and, with the
  space's ``confirm``, the confirmation runs after it.

Adaptive seeds (``resolve: {width: W, max_seeds: M}``, ``study/adaptive.py``): once every seed handed out to a
configuration has ended, it gets one more seed (the next of ``adaptive.extra_seeds``) while its interval is wider
than ±W and it has fewer than M seeds; then it is told to Optuna. Its interval is of its paired differences from
the reference configuration (the space's ``reference`` values) when the study runs that configuration (a grid
that lists it; a random or TPE search whose space holds it asks it first), else of its own scores. The reference
runs every seed a configuration has (a run on a seed it lacks is handed out, and the configuration waits for
it), and is told to Optuna last, once no other configuration can ask it for a seed. A configuration the
scheduler stopped gets no more seeds (PRUNED, as always). The seeds handed out beyond ``seeds`` are kept in the
trial's user attribute ``extra_seeds``, so that a configuration run again after a killed driver hands them out
again (their runs replay or continue from their stored states).

Confirmation on fresh seeds (``confirm: {seeds: [..], top: N}``): once every configuration of the search has
ended, the ``top`` best by their Optuna value (COMPLETE trials, the study's direction, ties by trial number) are
stored in the study's user attribute ``confirm_configs`` the moment they are chosen, and each runs once per
fresh seed, under its own configuration number (``c<config>-s<seed>``, disjoint from the search's runs). These
runs are not told to Optuna (they must not change the search); their ends go into the study's user attribute
``confirm_values`` ({config: {seed: score or null}}). A resumed study confirms the stored choice, handing out
again the confirmation runs whose end ``confirm_values`` does not hold.

``open_study`` prepares the Optuna study before Tune starts. On ``--resume`` every Optuna trial left RUNNING
is by definition an orphan (its driver is gone): its number is added to the study's user attribute
``orphans``, it is told FAIL, and its configuration is handed out again first (user attributes
``requeued_from`` and ``config``), so the runs continue under their own names from their stored state.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import TrialState
from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule, TrialScheduler
from ray.tune.search import Searcher

from study.adaptive import extra_seeds, half_width, paired_differences
from study.schema import CONFIRM_PHASE, SCORE_KEY, SEARCH_PHASE, RunKey, ended_status, mean_score, typed_value
from study.space import Space

log = logging.getLogger(__name__)
# A result Optuna could not be told: its own logger, so that the runner can print it as the study's own line
# and record it (``study/progress.py``, ``TellFailures``) without touching this module's other warnings.
tell_log = logging.getLogger(f"{__name__}.tell")

ORPHANS_ATTR = "orphans"  # study user attribute: numbers of the trials closed as orphans on --resume
REQUEUED_ATTR = "requeued_from"  # trial user attribute: the orphan whose configuration this trial runs again
CONFIG_ATTR = "config"  # trial user attribute: the configuration's number (its runs' names), when not its own
OPTUNA_KEY = "__optuna_trial__"  # Tune config key: the Optuna trial a run reports to
SEEDS_ATTR = "seed_values"  # trial user attribute: {seed: the run's score, or null} once every seed has ended
CONFIRM_CONFIGS_ATTR = "confirm_configs"  # study user attribute: the configurations chosen for confirmation
CONFIRM_VALUES_ATTR = "confirm_values"  # study user attribute: {config: {seed: the run's score, or null}}
EXTRA_SEEDS_ATTR = "extra_seeds"  # trial user attribute: the seeds handed out beyond the space's seeds (resolve)


def optuna_sampler(space: Space, trials_before: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler for configurations that are not fixed. A grid study fixes every configuration itself
    (``grid_points``), so its sampler is never consulted for a value. Seeded with ``sampler_seed`` plus the
    number of trials the study held when the session began: a resumed study draws new configurations, not
    the first session's again, and a rerun of the same history draws the same ones."""
    seed = space.sampler_seed + trials_before
    if space.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def grid_points(space: Space) -> list[dict[str, Any]]:
    """Every configuration of a grid space, in the order its values are listed (last key fastest)."""
    keys = list(space.search)
    return [dict(zip(keys, values)) for values in itertools.product(*(space.search[k].values for k in keys))]


def reference_point(space: Space) -> dict[str, Any] | None:
    """The reference configuration's values (the space's ``reference``) when the study runs it as one of its
    configurations: a grid that lists it, or a random/TPE space whose distributions hold it; else None."""
    point = {k: typed_value(k, space.reference[k]) for k in space.search}
    if space.sampler == "grid":
        return point if _point_key(point) in {_point_key(p) for p in grid_points(space)} else None
    for key, dist in space.distributions().items():
        try:
            if not dist._contains(dist.to_internal_repr(point[key])):
                return None
        except (ValueError, TypeError):
            return None
    return point


def config_number(trial: optuna.trial.FrozenTrial | optuna.trial.Trial) -> int:
    """The configuration a trial runs: its own number, or the one it runs again after an orphan."""
    return int(trial.user_attrs.get(CONFIG_ATTR, trial.number))


def choose_confirmed(study: optuna.Study, top: int) -> list[int]:
    """The numbers of the ``top`` best configurations by their Optuna value: COMPLETE trials only, best first
    in the study's direction, ties by trial number."""
    sign = -1.0 if study.direction == StudyDirection.MAXIMIZE else 1.0
    ranked = sorted(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                    key=lambda t: (sign * float(t.value or 0.0), t.number))  # COMPLETE: a value
    return list(dict.fromkeys(config_number(t) for t in ranked))[:top]


def confirm_values(study: optuna.Study) -> dict[int, dict[int, float | None]]:
    """The stored ends of the confirmation runs, {config: {seed: the metric, or null}}."""
    stored = study.user_attrs.get(CONFIRM_VALUES_ATTR) or {}
    return {int(c): {int(s): v for s, v in seeds.items()} for c, seeds in stored.items()}


def confirmation_pending(space: Space, study: optuna.Study) -> bool:
    """True while the space confirms and its confirmation has not ended: no configurations chosen yet, or a
    fresh seed of a chosen one whose end is not stored."""
    if space.confirm is None:
        return False
    chosen = study.user_attrs.get(CONFIRM_CONFIGS_ATTR)
    if chosen is None:
        return True
    ended = confirm_values(study)
    return any(seed not in ended.get(int(c), {}) for c in chosen for seed in space.confirm.seeds)


@dataclass
class OpenStudy:
    """The Optuna study, ready for a session: what is left of its budget and what to hand out first."""

    study: optuna.Study
    budget: int  # configurations still to hand out (re-queued ones included)
    requeue: deque = field(default_factory=deque)  # (params or None, orphan number, configuration number)
    taken: set = field(default_factory=set)  # grid points handed out (as sorted tuples) by finished trials
    orphans: list[int] = field(default_factory=list)  # closed in this session


def _point_key(params: dict[str, Any]) -> tuple:
    return tuple(sorted(params.items()))


def open_study(space: Space, name: str, storage: Any, configs: int) -> OpenStudy:
    """Create or load the Optuna study ``name`` in ``storage`` and close the orphans of a killed driver."""
    study = optuna.create_study(study_name=name, storage=storage, sampler=optuna_sampler(space),
                                direction="maximize" if space.mode == "max" else "minimize", load_if_exists=True)
    study.sampler = optuna_sampler(space, len(study.get_trials(deepcopy=False)))
    distributions = space.distributions()
    # A trial enqueued just before a kill was never asked: ask it now, so that it is closed like the others.
    while any(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False)):
        study.ask(distributions)
    trials = study.get_trials(deepcopy=False)
    running = [t for t in trials if t.state == TrialState.RUNNING]
    orphans = sorted(set(study.user_attrs.get(ORPHANS_ATTR, [])) | {t.number for t in running})
    if running:  # recorded before they are closed, so that a kill in between loses nothing
        study.set_user_attr(ORPHANS_ATTR, orphans)
        for t in running:
            study.tell(t.number, state=TrialState.FAIL)
    requeued = {int(t.user_attrs[REQUEUED_ATTR]) for t in trials if REQUEUED_ATTR in t.user_attrs}
    by_number = {t.number: t for t in trials}
    opened = OpenStudy(study, budget=max(0, configs - (len(trials) - len(orphans))),
                       orphans=[t.number for t in running])
    for number in orphans:
        if number in requeued or number not in by_number:
            continue
        t = by_number[number]
        params = dict(t.params) if set(t.params) == set(distributions) else None  # killed inside ask: not all drawn
        opened.requeue.append((params, number, config_number(t) if params else None))
        log.warning("Optuna trial %d was running when the driver stopped; %s", number,
                    f"its configuration {params} runs again" if params else "a new configuration replaces it")
    opened.taken = {_point_key(dict(t.params)) for t in trials if t.number not in orphans}
    opened.taken |= {_point_key(p) for p, _, _ in opened.requeue if p}
    return opened


@dataclass
class _Configuration:
    trial: optuna.trial.Trial
    number: int  # its runs' configuration number
    seeds: list[int]  # handed out so far (``resolve`` adds to them)
    epochs: int  # its trainer's train.epochs (a searched dataset brings its own recipe)
    values: dict[int, float | None] = field(default_factory=dict)
    stopped: bool = False

    @property
    def ended(self) -> bool:
        """Every seed handed out has ended."""
        return all(s in self.values for s in self.seeds)


class StudySearcher(Searcher):
    """Hands Tune one trial per seed of each configuration Optuna gives, and tells Optuna how it ended."""

    def __init__(self, space: Space, opened: OpenStudy):
        super().__init__(metric=space.metric, mode=space.mode)
        self.space = space
        self.study = opened.study
        self.distributions = space.distributions()
        self.seeds = tuple(space.seeds)
        self.budget = opened.budget
        self.requeue = opened.requeue
        self.grid = [p for p in grid_points(space) if _point_key(p) not in opened.taken] \
            if space.sampler == "grid" else None
        self.pending: deque[dict[str, Any]] = deque()  # Tune configs of asked configurations, not handed out
        self.open: dict[int, _Configuration] = {}  # Optuna trial number -> configuration in flight
        self.trial_of: dict[str, tuple[int, int]] = {}  # Tune trial id -> (Optuna trial number, seed)
        self.tell_failures: list[dict[str, Any]] = []
        self.confirm = space.confirm
        self.confirming = False  # the confirmation is queued (or given up for this session)
        self.confirm_of: dict[str, tuple[int, int]] = {}  # Tune trial id -> (configuration, fresh seed)
        self.confirmed: dict[int, dict[int, float | None]] = {}  # ends of confirmation runs, as stored
        self.resolve = space.resolve
        self.extra: list[int] = extra_seeds(self.seeds, space.confirm.seeds if space.confirm else (),
                                            space.resolve.max_seeds - len(self.seeds)) if space.resolve else []
        point = reference_point(space) if space.resolve else None
        self.reference_key = _point_key(point) if point is not None else None
        self.reference: _Configuration | None = None  # the reference configuration, while it is open
        self.reference_ended = self._ended_reference(opened)  # its stored scores, when it ended in a session before
        if point is not None and space.sampler != "grid" and not opened.study.get_trials(deepcopy=False):
            self.requeue.appendleft((point, None, None))  # a new random/TPE study asks the reference first

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True  # metric and mode come from the space, the same ones Tune is given

    def _ask(self) -> None:
        params, orphan, number = self.requeue.popleft() if self.requeue else (None, None, None)
        if params is None and self.grid is not None:
            if not self.grid:
                self.budget = 0  # the grid is covered
                self._advance()  # a configuration waiting for a reference that will not be asked decides now
                return
            params = self.grid.pop(0)
        attrs: dict[str, Any] = {}
        extra: list[int] = []
        if orphan is not None:  # the runs keep their names (and stored states) unless the configuration is new
            attrs = {REQUEUED_ATTR: orphan, **({CONFIG_ATTR: number} if number is not None else {})}
            if number is not None:  # the seeds resolve had added are handed out again
                extra = [int(s) for s in
                         self.study.get_trials(deepcopy=False)[orphan].user_attrs.get(EXTRA_SEEDS_ATTR, [])]
                if extra:
                    attrs[EXTRA_SEEDS_ATTR] = extra
        if params is not None or attrs:
            self.study.enqueue_trial(params or {}, user_attrs=attrs)
        trial = self.study.ask(self.distributions)
        self.budget -= 1
        epochs = self.space.trial_config(trial.params, self.seeds[0]).train.epochs
        conf = _Configuration(trial, config_number(trial), [*self.seeds, *extra], epochs)
        self.open[trial.number] = conf
        if self.reference is None and self._first_at_reference() == conf.number:
            self.reference = conf
        for seed in conf.seeds:
            self._hand_out(conf, seed)

    def _ended_reference(self, opened: OpenStudy) -> dict[int, float | None] | None:
        """The scores by seed of the reference configuration when it already ended (a resumed study whose other
        configurations Optuna was not told about); None when it has not."""
        if self.reference_key is None:
            return None
        closed = set(opened.study.user_attrs.get(ORPHANS_ATTR, [])) | set(opened.orphans)
        for t in opened.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                   TrialState.FAIL)):
            if t.number not in closed and set(t.params) == set(self.distributions) and \
                    _point_key(self._typed(t.params)) == self.reference_key:
                return {int(k): v for k, v in (t.user_attrs.get(SEEDS_ATTR) or {}).items()}
        return None

    def _typed(self, params: dict[str, Any]) -> dict[str, Any]:
        return {k: typed_value(k, v) for k, v in params.items()}

    def _first_at_reference(self) -> int | None:
        """The configuration that is the reference: the first the study asked at the reference's values (a
        random or TPE search may ask them again later: those are configurations like any other)."""
        if self.reference_key is None:
            return None
        return min((config_number(t) for t in self.study.get_trials(deepcopy=False)
                    if set(t.params) == set(self.distributions)
                    and _point_key(self._typed(t.params)) == self.reference_key),
                   default=None)

    def _hand_out(self, conf: _Configuration, seed: int) -> None:
        self.pending.append({**conf.trial.params, **RunKey(conf.number, seed, SEARCH_PHASE).tune_keys(),
                             OPTUNA_KEY: conf.trial.number})

    def _add_seed(self, conf: _Configuration, seed: int) -> None:
        """Hand out one more seed of ``conf`` (``resolve``), recorded in its trial first."""
        conf.seeds.append(seed)
        try:
            conf.trial.set_user_attr(EXTRA_SEEDS_ATTR, conf.seeds[len(self.seeds):])
        except Exception as exc:  # the run still runs; a resumed study decides again from the replayed scores
            log.warning("Optuna's storage did not keep the seeds added to configuration %d: %s", conf.number, exc)
        self._hand_out(conf, seed)

    def _advance(self) -> None:
        """Settle every open configuration whose seeds have all ended: more seeds (``resolve``), or told to Optuna.
        The reference is told once it is the only configuration left open and no other will be asked."""
        for number, conf in list(self.open.items()):
            if conf is not self.reference and conf.ended and self._settled(conf):
                del self.open[number]
                self._tell(conf)
        ref = self.reference
        if ref is not None and ref.ended and self.budget <= 0 and not self.requeue and list(self.open) == [
                ref.trial.number]:
            del self.open[ref.trial.number]
            self.reference = None
            self._tell(ref)

    def _settled(self, conf: _Configuration) -> bool:
        """True when ``conf`` is done: no ``resolve``, stopped by the scheduler, resolved or at ``max_seeds``.
        Else it hands out what it waits for (a seed of the reference, or its own next seed) and returns False."""
        if self.resolve is None or conf.stopped:
            return True
        ref = self.reference
        reference_values = None
        if self.reference_ended is not None:  # it cannot run more seeds: the pairs there are
            reference_values = self.reference_ended
        elif self.reference_key is not None and ref is None and (self.budget > 0 or self.requeue):
            return False  # the reference is still to be asked (it comes later in the grid, or is run again)
        elif ref is not None:
            if not ref.stopped:  # a reference the scheduler stopped has no comparable scores: own intervals
                lacking = [s for s in conf.seeds if s not in ref.seeds]
                for seed in lacking:
                    self._add_seed(ref, seed)
                if not all(s in ref.values for s in conf.seeds):
                    return False
                reference_values = ref.values
        values = paired_differences(conf.values, reference_values)
        if half_width(values) <= self.resolve.width or len(conf.seeds) >= self.resolve.max_seeds:
            return True
        self._add_seed(conf, self.extra[len(conf.seeds) - len(self.seeds)])
        return False

    def _queue_confirmation(self) -> None:
        """Choose the configurations to confirm (or read the stored choice) and queue their runs on the fresh
        seeds whose end is not stored. Nothing is queued while Optuna holds a configuration RUNNING (a result
        it could not be told): the study is then interrupted, and ``--resume`` confirms after that one ends."""
        assert self.confirm is not None
        self.confirming = True
        if any(t.state == TrialState.RUNNING for t in self.study.get_trials(deepcopy=False)):
            log.warning("the confirmation on fresh seeds waits for --resume: a configuration's result was not "
                        "told to Optuna")
            return
        chosen = self.study.user_attrs.get(CONFIRM_CONFIGS_ATTR)
        if chosen is None:
            chosen = choose_confirmed(self.study, self.confirm.top)
            try:  # stored before any run is handed out, so that a resumed study confirms the same ones
                self.study.set_user_attr(CONFIRM_CONFIGS_ATTR, chosen)
            except Exception as exc:
                self._storage_failed(f"the configurations chosen for confirmation ({chosen})", exc,
                                     {"confirm_configs": chosen})
                return
        self.confirmed = confirm_values(self.study)
        params = {config_number(t): dict(t.params)
                  for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
        for number in map(int, chosen):
            for seed in self.confirm.seeds:
                if seed not in self.confirmed.get(number, {}):
                    self.pending.append({**params[number], **RunKey(number, seed, CONFIRM_PHASE).tune_keys()})

    # Tune's Searcher annotates suggest as returning a config or None, yet takes its own Searcher.FINISHED (a str).
    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]
        if not self.pending and self.budget > 0:
            self._ask()
        if not self.pending and self.budget <= 0 and self.resolve is not None and self.open:
            return None  # an open configuration may hand out more seeds (or the reference's) when its runs end
        if not self.pending and self.budget <= 0 and self.confirm is not None and not self.confirming:
            if self.open:
                return None  # the best configurations are known once every configuration has ended
            self._queue_confirmation()
        if not self.pending:
            return Searcher.FINISHED
        config = self.pending.popleft()
        run = RunKey.of(config, self.seeds[0])
        if run.phase == CONFIRM_PHASE:
            self.confirm_of[trial_id] = (run.configuration, run.seed)
        else:
            self.trial_of[trial_id] = (int(config[OPTUNA_KEY]), run.seed)
        return config

    def _value(self, result: dict | None, error: bool) -> float | None:
        """The run's score, as the trial reported it with its last result (``schema.SCORE_KEY``)."""
        value = result.get(SCORE_KEY) if result and not error else None
        return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self.confirm_of:
            self._confirmed(*self.confirm_of.pop(trial_id), self._value(result, error))
            return
        if trial_id not in self.trial_of:
            return
        number, seed = self.trial_of.pop(trial_id)
        conf = self.open.get(number)
        if conf is None:
            return
        if result and not error and ended_status(int(result.get("epoch", conf.epochs)), conf.epochs) == "pruned":
            conf.stopped = True
        conf.values[seed] = self._value(result, error)
        self._advance()

    def _tell(self, conf: _Configuration) -> None:
        value = mean_score(list(conf.values.values()))
        if value is None:
            state = TrialState.FAIL
        elif conf.stopped:
            state, value = TrialState.PRUNED, None
        else:
            state = TrialState.COMPLETE
        try:
            conf.trial.set_user_attr(SEEDS_ATTR, {str(k): v for k, v in conf.values.items()})
            self.study.tell(conf.trial, value, state=state)
        except Exception as exc:  # a storage that fails (locked, unreachable), a value Optuna refuses
            text = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
            failure = {"optuna_trial": conf.trial.number, "state": state.name, "value": value,
                       "params": dict(conf.trial.params),
                       "error": f"{type(exc).__name__}: {text}" if text else type(exc).__name__}
            self.tell_failures.append(failure)
            tell_log.error("Optuna was not told how configuration %d ended (Optuna trial %d, %s%s): %s; that "
                           "trial stays RUNNING in the Optuna study and runs again on --resume", conf.number,
                           conf.trial.number, state.name, f" {value}" if value is not None else "",
                           failure["error"], extra={"tell_failure": failure})

    def _confirmed(self, number: int, seed: int, value: float | None) -> None:
        """Store a confirmation run's end in the study's ``confirm_values`` (never told to Optuna as a trial)."""
        self.confirmed.setdefault(number, {})[seed] = value
        stored = {str(c): {str(s): v for s, v in sorted(seeds.items())} for c, seeds in sorted(self.confirmed.items())}
        try:
            self.study.set_user_attr(CONFIRM_VALUES_ATTR, stored)
        except Exception as exc:
            self.confirmed[number].pop(seed)
            self._storage_failed(f"the end of confirmation run c{number}-s{seed} ({value})", exc,
                                 {"config": number, "seed": seed, "value": value})

    def _storage_failed(self, what: str, exc: Exception, failure: dict[str, Any]) -> None:
        """A confirmation attribute Optuna's storage could not keep: reported like a failed tell; the study ends
        interrupted and ``--resume`` hands the runs out again (they replay their stored ends)."""
        text = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
        failure = {**failure, "error": f"{type(exc).__name__}: {text}" if text else type(exc).__name__}
        self.tell_failures.append(failure)
        tell_log.error("Optuna's storage did not keep %s: %s; the confirmation continues on --resume", what,
                       failure["error"], extra={"tell_failure": failure})

    def save_to_dir(self, checkpoint_dir: str, session_str: str = "default") -> None:
        """Nothing to save: the Optuna study is the searcher's state, and a resumed study starts a new Tune
        experiment from it (``open_study``)."""

    def restore_from_dir(self, checkpoint_dir: str) -> None:
        """Nothing to restore (see ``save_to_dir``)."""


class _ConfirmationRunsToTheEnd:
    """Mixed into a scheduler: it stops no confirmation run (a fresh seed runs every epoch the search's runs
    did, so that their scores compare), and decides on the search's runs as it is."""

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if RunKey.of(trial.config, 0).phase == CONFIRM_PHASE:
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)  # type: ignore[misc]


class SearchASHAScheduler(_ConfirmationRunsToTheEnd, ASHAScheduler):
    """Ray's ASHA on the search's runs."""


class SearchMedianStoppingRule(_ConfirmationRunsToTheEnd, MedianStoppingRule):
    """Ray's median stopping rule on the search's runs."""


def make_scheduler(space: Space, epochs: int) -> TrialScheduler | None:
    """ASHA or the median stopping rule over the trainer's ``epoch``, on the search's runs (confirmation runs
    always run to the end); None runs every trial to the end."""
    opts = space.scheduler_options  # complete: the schema fills in SCHEDULER_OPTIONS' defaults
    if space.scheduler == "asha":
        return SearchASHAScheduler(time_attr="epoch", max_t=epochs, **opts)
    if space.scheduler == "median":
        return SearchMedianStoppingRule(time_attr="epoch", **opts)
    return None
