"""Search-space YAML: the typed schema of a study, loaded, overridden by ``--set`` and validated.

A space names fixed trainer settings (``trainer``), searched trainer keys (``search``) and how the
study runs (sampler, seeds, scheduler, resources ...). Every error is one ``SpaceError`` that names
the file (and line), the key and what is allowed, raised before any trial starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, get_args, get_origin, get_type_hints

import yaml

from model.config import SEED_RANGE, Config, ConfigError, all_keys, build_config, coerce, flatten
from model.inputs import InputError, compose, construct, parse_yaml, read_text, show, show_text, user_path
from study.adaptive import Resolve
from study.optuna_storage import ACCEPTED as STORAGE_FORMS
from study.optuna_storage import StorageError, normalize_storage
from study.schema import typed_value

REPO_ROOT = Path(__file__).resolve().parent.parent
SPACES_DIR = REPO_ROOT / "search_spaces"

SAMPLERS = ("grid", "random", "tpe")
SCHEDULERS = ("none", "asha", "median")
# Options of each scheduler with their defaults (Ray's, except a grace period of one epoch); the resolved
# space lists them all, so study.json records what ran.
SCHEDULER_OPTIONS: dict[str, dict[str, int]] = {
    "none": {},
    "asha": {"grace_period": 1, "reduction_factor": 2, "brackets": 1},
    "median": {"grace_period": 1, "min_samples_required": 3},
}
KINDS = ("grid", "choice", "uniform", "loguniform", "int")
FACET_KEY = "data.name"
"""A searched ``data.name`` is a facet: the metric means something else on each dataset, so the reports
draw one panel (and pick one best configuration) per dataset instead of pooling over it."""
MODES = ("max", "min")
# Per-epoch metrics of model.train.train that a study may select on; test_* would be a leak.
METRICS_MNER = ("dev_f1", "dev_precision", "dev_recall", "best_dev_f1", "train_loss", "loss_ce", "loss_mix",
                "loss_kl")
METRICS_MRE = METRICS_MNER + ("dev_accuracy",)
TOP_KEYS = ("study", "description", "trainer", "search", "sampler", "sampler_seed", "seeds", "trials",
            "scheduler", "scheduler_options", "metric", "mode", "resources", "max_concurrent", "max_failures",
            "reports", "reference", "progress_interval", "keep_checkpoints", "optuna_storage", "confirm", "resolve")
RESOURCE_KEYS = ("cpus", "gpus")
MAX_TRIALS = 1_000_000
"""Most configurations (``trials``) and trials at once (``max_concurrent``) a space may ask for."""
MAX_RESOURCE = 1024.0
"""Most CPUs or GPUs one trial may ask for."""
CONFIRM_KEYS = ("seeds", "top")
RESOLVE_KEYS = ("width", "max_seeds")
MAX_RESOLVE_SEEDS = 1000
"""Most seeds ``resolve`` may give one configuration."""


class SpaceError(ValueError):
    """A search space the study cannot run; the message names the file, the key and what is allowed."""


@dataclass(frozen=True)
class Param:
    """One searched trainer key: a finite set (grid/choice) or a range (uniform/loguniform/int)."""

    key: str
    kind: str
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    step: float | None = None

    @property
    def finite(self) -> bool:
        return self.kind in ("grid", "choice")

    def to_dict(self) -> dict[str, Any]:
        spec: dict[str, Any] = {self.kind: list(self.values) if self.finite else [self.low, self.high]}
        if self.step is not None:
            spec["step"] = self.step
        return spec

    @classmethod
    def from_dict(cls, key: str, spec: Mapping[str, Any]) -> Param:
        """The param of a spec written by ``to_dict`` (a study's stored, already validated space)."""
        kind = next((k for k in KINDS if k in spec), None)
        if kind is None or not isinstance(spec[kind], list):
            raise SpaceError(f"search key '{key}': {show(dict(spec))} is not a search spec; expected one of "
                             f"{', '.join(KINDS)} with a list.")
        if kind in ("grid", "choice"):
            return cls(key, kind, values=tuple(typed_value(key, v) for v in spec[kind]))
        low, high = spec[kind]
        return cls(key, kind, low=low, high=high, step=spec.get("step"))

    def distribution(self) -> Any:  # optuna.distributions.BaseDistribution (optuna is imported when needed)
        """Optuna's distribution of the param: what the searcher asks for and the importance report reads."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.finite:
            return CategoricalDistribution(list(self.values))
        if self.kind == "int":
            return IntDistribution(int(self.low or 0), int(self.high or 0), step=int(self.step or 1))
        if self.kind == "loguniform":
            return FloatDistribution(float(self.low or 0), float(self.high or 0), log=True)
        return FloatDistribution(float(self.low or 0), float(self.high or 0), step=self.step)


@dataclass(frozen=True)
class Resources:
    cpus: float = 1.0
    gpus: float = 0.0


@dataclass(frozen=True)
class Confirm:
    """Confirmation on fresh seeds: once the search has ended, the ``top`` best configurations (by their Optuna
    value) run once more per seed of ``seeds``, seeds the search never used (``study/search.py``)."""

    seeds: tuple[int, ...]
    top: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {"seeds": list(self.seeds), "top": self.top}


@dataclass
class Space:
    """A resolved search space (after ``--set``), as the runner and the reports read it."""

    study: str
    description: str
    trainer: dict[str, Any]
    search: dict[str, Param]
    sampler: str
    seeds: list[int]
    trials: int
    scheduler: str = "none"
    scheduler_options: dict[str, Any] = field(default_factory=dict)
    metric: str = "dev_f1"
    mode: str = "max"
    resources: Resources = field(default_factory=Resources)
    max_concurrent: int | None = None
    max_failures: int = 0
    reports: list[str] = field(default_factory=list)
    """Names of ``study/reports/registry.py``; empty: every report that applies to the search."""
    reference: dict[str, Any] = field(default_factory=dict)
    sampler_seed: int = 0
    progress_interval: float = 5.0
    keep_checkpoints: bool = False
    """Keep the last checkpoint of finished trials (only unfinished and failed ones need it to resume)."""
    optuna_storage: str | None = None
    """Where the Optuna study lives (``study/optuna_storage.py``): None = ``results/<study>/optuna.db``."""
    confirm: Confirm | None = None
    """Confirmation runs of the best configurations on fresh seeds; None = none."""
    resolve: Resolve | None = None
    """Adaptive seeds (``study/adaptive.py``): more seeds for a configuration while its interval is wide; None =
    every configuration runs ``seeds`` only."""
    source: str = ""

    @property
    def searched(self) -> list[str]:
        return list(self.search)

    @property
    def confirm_runs(self) -> int:
        """Runs of the confirmation: ``top`` configurations (at most all of them) times its fresh seeds."""
        if self.confirm is None:
            return 0
        return min(self.confirm.top, self.trials) * len(self.confirm.seeds)

    @property
    def seeds_per_configuration(self) -> int:
        """The most seeds a configuration of the search runs: ``seeds``, or ``resolve``'s ``max_seeds``."""
        return max(len(self.seeds), self.resolve.max_seeds) if self.resolve is not None else len(self.seeds)

    @property
    def total_runs(self) -> int:
        """Every run the study makes (with ``resolve``, the most it can make): each configuration once per seed,
        then the confirmation runs."""
        return self.trials * self.seeds_per_configuration + self.confirm_runs

    @property
    def fewest_runs(self) -> int:
        """The fewest runs the study makes: each configuration on ``seeds`` (``resolve`` may add more), then the
        confirmation runs."""
        return self.trials * len(self.seeds) + self.confirm_runs

    @property
    def trial_threads(self) -> int:
        """Torch threads of each run: one per CPU a trial is granted."""
        return max(1, int(self.resources.cpus))

    def distributions(self) -> dict[str, Any]:
        """Optuna's distribution of each searched key."""
        return {key: param.distribution() for key, param in self.search.items()}

    @property
    def grid_size(self) -> int:
        return math.prod(len(p.values) for p in self.search.values()) if self.search else 1

    def trial_overrides(self, params: Mapping[str, Any], seed: int) -> dict[str, Any]:
        """Flat trainer overrides of one trial: fixed settings, the searched values, the seed."""
        return {**self.trainer, **params, "train.seed": seed}

    def trial_config(self, params: Mapping[str, Any], seed: int) -> Config:
        return build_config(self.trial_overrides(params, seed))

    def base_config(self) -> Config:
        return build_config(self.trainer)

    @property
    def datasets(self) -> list[str]:
        """Every dataset the study trains on: the searched ``data.name`` values, else the base config's one."""
        facet = self.search.get(FACET_KEY)
        return [str(v) for v in facet.values] if facet is not None else [self.base_config().data.name]

    def data_configs(self) -> list[Config]:
        """One trainer config per dataset (the base config when ``data.name`` is not searched), each with
        that dataset's recipe: what the driver reads once before the trials start."""
        if FACET_KEY not in self.search:
            return [self.base_config()]
        return [build_config({**self.trainer, FACET_KEY: name}) for name in self.datasets]

    def preflight_configs(self) -> list[tuple[str, Config]]:
        """The configs the pre-flight checks on this machine (``model.preflight.check_resources``), each with the
        words that say where it comes from: one per dataset, then one per searched value (grid and choice values;
        a range's ends), the values that validating the space checked."""
        out = [(f"trainer ({cfg.data.name}): ", cfg) for cfg in self.data_configs()]
        for key, p in self.search.items():
            for v in (p.values if p.finite else (p.low, p.high)):
                out.append((f"search {key}={show(v)}: ", build_config({**self.trainer, key: v})))
        return out

    def to_dict(self) -> dict[str, Any]:
        """The YAML form; ``load_space`` of it gives this space back."""
        return {
            "study": self.study,
            "description": self.description,
            "trainer": dict(self.trainer),
            "search": {k: p.to_dict() for k, p in self.search.items()},
            "sampler": self.sampler,
            "sampler_seed": self.sampler_seed,
            "seeds": list(self.seeds),
            "trials": self.trials,
            "scheduler": self.scheduler,
            "scheduler_options": dict(self.scheduler_options),
            "metric": self.metric,
            "mode": self.mode,
            "resources": {"cpus": self.resources.cpus, "gpus": self.resources.gpus},
            "max_concurrent": self.max_concurrent,
            "max_failures": self.max_failures,
            "reports": list(self.reports),
            "reference": dict(self.reference),
            "progress_interval": self.progress_interval,
            "keep_checkpoints": self.keep_checkpoints,
            "optuna_storage": self.optuna_storage,
            "confirm": self.confirm.to_dict() if self.confirm is not None else None,
            "resolve": self.resolve.to_dict() if self.resolve is not None else None,
        }


# ---------------------------------------------------------------------------------------------- loading


def resolve_space_path(path_or_name: str | Path) -> Path:
    """A file path as given, else a bare name (``mixup`` or ``mixup.yaml``) looked up in ``search_spaces/``."""
    try:
        path = user_path(str(path_or_name), "--space")
    except InputError as e:
        raise SpaceError(str(e)) from None
    if path.is_file():
        return path.resolve()
    if path.is_dir():
        raise SpaceError(f"search space {show(str(path_or_name))} is a folder; give a YAML file or a name in "
                         f"{SPACES_DIR}.")
    name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    if path.parent == Path(".") and (SPACES_DIR / name).is_file():
        return SPACES_DIR / name
    known = ", ".join(sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))) or "none"
    raise SpaceError(f"search space {show(str(path_or_name))} not found: not a file, and not a name in {SPACES_DIR} "
                     f"(known: {known}).")


def load_space(path_or_name: str | Path, sets: list[str] | None = None) -> Space:
    """Read a space file (or a name in ``search_spaces/``), apply ``--set key=value`` items, validate."""
    path = resolve_space_path(path_or_name)
    try:
        text = read_text(path, "search space")
        node = compose(text, str(path))
        tree = construct(node, str(path))
    except InputError as e:
        raise SpaceError(str(e)) from None
    lines = _key_lines(node)
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise SpaceError(f"{path}: expected a mapping of study keys ({', '.join(TOP_KEYS)}).")
    return space_from_dict(tree, source=str(path), sets=sets, lines=lines)


def space_from_dict(tree: Mapping[str, Any], source: str = "<space>", sets: list[str] | None = None,
                    lines: Mapping[tuple[str, ...], int] | None = None) -> Space:
    """Validate a space given as a mapping (the YAML content), ``--set`` items applied on top."""
    return _Parser(source, lines or {}).parse(dict(tree), list(sets or []))


def _key_lines(node: yaml.Node | None, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """1-based line of every mapping key, by key path, so errors can point into the file."""
    out: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            path = prefix + (str(key_node.value),)
            out[path] = key_node.start_mark.line + 1
            out.update(_key_lines(value_node, path))
    return out


def _is_number(x: Any) -> bool:
    """A finite int or float (not a bool): ``.nan`` and ``.inf`` are never a study setting."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def _key_type(key: str) -> type:
    """Declared type of a trainer key (``str | None`` -> ``str``)."""
    section, _, name = key.partition(".")
    typ = get_type_hints(type(getattr(Config(), section)))[name]
    if get_origin(typ) is not None:
        typ = next(t for t in get_args(typ) if t is not type(None))
    return typ


class _Parser:
    """Turns the raw mapping into a ``Space``; knows where each key came from for its messages."""

    def __init__(self, source: str, lines: Mapping[tuple[str, ...], int]):
        self.source = source
        self.lines = dict(lines)
        self.set_origin: dict[tuple[str, ...], str] = {}

    # -- messages
    def where(self, *path: str) -> str:
        for n in range(len(path), 0, -1):
            if path[:n] in self.set_origin:
                return self.set_origin[path[:n]]
        # A dotted trainer key may sit nested in the file (trainer: {data: {name: ..}}).
        candidates = [path] + ([path[:-1] + tuple(path[-1].split("."))] if path and "." in path[-1] else [])
        for cand in candidates:
            if cand in self.lines:
                return f"{self.source} line {self.lines[cand]}"
        for n in range(len(path) - 1, 0, -1):
            if path[:n] in self.lines:
                return f"{self.source} line {self.lines[path[:n]]}"
        return self.source

    def error(self, path: tuple[str, ...], message: str) -> SpaceError:
        if len(path) == 2 and path[0] in ("trainer", "search", "reference"):
            return SpaceError(f"{self.where(*path)}: {path[0]} key {show(path[1])} {message}")
        return SpaceError(f"{self.where(*path)}: {show('.'.join(path))} {message}")

    # -- --set
    def apply_sets(self, tree: dict[str, Any], sets: list[str]) -> None:
        sections = {f.name for f in dataclasses.fields(Config)}
        for item in sets:
            key, sep, raw = item.partition("=")
            key = key.strip()
            origin = f"--set {show_text(item, 120)}"
            if not sep or not key:
                raise SpaceError(f"{origin}: expected key=value, e.g. --set train.epochs=2 or --set seeds=[1,2].")
            try:
                value = parse_yaml(raw, origin) if raw.strip() else raw
            except InputError as e:
                raise SpaceError(str(e)) from None
            head, _, rest = key.partition(".")
            if head in sections:
                path: tuple[str, ...] = ("trainer", key)
            elif head in ("trainer", "search", "reference") and rest:
                path = (head, rest)
            elif head in ("resources", "scheduler_options", "confirm", "resolve") and rest:
                path = (head, rest)
            elif key in TOP_KEYS:
                path = (key,)
            else:
                raise SpaceError(f"{origin}: unknown key {show(key)}.{_suggest(key, list(TOP_KEYS) + all_keys())} "
                                 f"Accepted: a trainer key (data.*, model.*, i2srm.*, train.*), "
                                 f"search.<trainer key>, or a study key ({', '.join(TOP_KEYS)}).")
            if path[0] == "trainer" and len(path) == 2:
                trainer = tree.get("trainer") or {}
                if not isinstance(trainer, Mapping):
                    raise self.error(("trainer",), "must be a mapping of trainer keys to values.")
                trainer = flatten(trainer)
                trainer[path[1]] = value
                tree["trainer"] = trainer
            elif len(path) == 2:
                sub = tree.get(path[0]) or {}
                if not isinstance(sub, Mapping):
                    raise self.error((path[0],), "must be a mapping.")
                sub = dict(sub)
                sub[path[1]] = value
                tree[path[0]] = sub
            else:
                tree[path[0]] = value
            self.set_origin[path] = origin

    # -- the whole space
    def parse(self, tree: dict[str, Any], sets: list[str]) -> Space:
        self.apply_sets(tree, sets)
        for key in tree:
            if key not in TOP_KEYS:
                raise self.error((str(key),), f"is not a study key.{_suggest(key, TOP_KEYS)} "
                                              f"Allowed: {', '.join(TOP_KEYS)}.")
        study = self.string(tree, "study", Path(self.source).stem if self.source.endswith((".yaml", ".yml"))
                            else "study")
        if not study or any(c in study for c in "/\\\0") or study.startswith(".") or len(study) > 200:
            raise self.error(("study",), f"is {show(study)}; a study name is a plain folder name under results/.")
        description = self.string(tree, "description", "")
        trainer = self.parse_trainer(tree.get("trainer"))
        search = self.parse_search(tree.get("search"), trainer)
        for key in search:
            if key in trainer:
                path = ("trainer", key) if ("trainer", key) in self.set_origin else ("search", key)
                raise self.error(path, f"is both searched and fixed in trainer; remove it from one of them "
                                       f"(to change its range: --set search.{key}={{grid: [...]}}).")
        try:
            base = build_config(trainer)
        except ConfigError as e:
            raise SpaceError(f"{self.where('trainer')}: trainer: {e}") from None
        sampler = self.enum(tree, "sampler", "grid" if all(p.finite for p in search.values()) else "tpe", SAMPLERS)
        if sampler == "grid":
            for key, p in search.items():
                if not p.finite:
                    raise self.error(("search", key), f"is a continuous {p.kind} range, which the grid sampler "
                                                      f"cannot enumerate; use grid/choice values or sampler: "
                                                      f"random/tpe.")
        seeds = self.parse_seeds(tree, base)
        trials = self.parse_trials(tree, sampler, search)
        scheduler = self.enum(tree, "scheduler", "none", SCHEDULERS)
        options = self.parse_options(tree.get("scheduler_options"), scheduler, base)
        mode = self.enum(tree, "mode", "max", MODES)
        metric = self.parse_metric(tree, base, search)
        resources = self.parse_resources(tree.get("resources"))
        max_concurrent = self.integer(tree, "max_concurrent", None, low=1, high=MAX_TRIALS)
        max_failures = self.integer(tree, "max_failures", 0, low=0, high=1000)
        reports = self.parse_reports(tree, search)
        reference = self.parse_reference(tree.get("reference"), search)
        sampler_seed = self.integer(tree, "sampler_seed", 0, low=SEED_RANGE[0], high=SEED_RANGE[1])
        interval = self.number(tree, "progress_interval", 5.0, low=0.0, high=86400.0)
        keep = tree.get("keep_checkpoints", False)
        if not isinstance(keep, bool):
            raise self.error(("keep_checkpoints",), f"must be true or false, got {show(keep)}.")
        try:
            optuna_storage = normalize_storage(tree.get("optuna_storage"))
        except StorageError as e:
            raise self.error(("optuna_storage",), f"{e}; accepted: {STORAGE_FORMS}.") from None
        confirm = self.parse_confirm(tree.get("confirm"), seeds, trials)
        resolve = self.parse_resolve(tree.get("resolve"), seeds)
        return Space(study=study, description=description, trainer=trainer, search=search, sampler=sampler,
                     seeds=seeds, trials=trials, scheduler=scheduler, scheduler_options=options, metric=metric,
                     mode=mode, resources=resources, max_concurrent=max_concurrent, max_failures=max_failures,
                     reports=reports, reference=reference, sampler_seed=sampler_seed,
                     progress_interval=interval, keep_checkpoints=keep, optuna_storage=optuna_storage,
                     confirm=confirm, resolve=resolve, source=self.source)

    # -- scalar helpers
    def string(self, tree: Mapping[str, Any], key: str, default: str) -> str:
        value = tree.get(key, default)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self.error((key,), f"must be a string, got {show(value)}.")
        return value

    def enum(self, tree: Mapping[str, Any], key: str, default: str, allowed: tuple[str, ...]) -> str:
        value = tree.get(key, default)
        value = default if value is None else value
        if not isinstance(value, str) or value not in allowed:
            raise self.error((key,), f"is {show(value)}; allowed: {', '.join(allowed)}.{_suggest(value, allowed)}")
        return value

    def integer(self, tree: Mapping[str, Any], key: str, default: int | None, low: int, high: int) -> Any:
        value = tree.get(key, default)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.error((key,), f"must be an integer >= {low}, got {show(value)}.")
        if value > high:
            raise self.error((key,), f"is {show(value)}; allowed: an integer in [{low}, {high}].")
        return value

    def number(self, tree: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
        value = tree.get(key, default)
        if not _is_number(value) or value < low:
            raise self.error((key,), f"must be a number >= {low}, got {show(value)}.")
        if value > high:
            raise self.error((key,), f"is {show(value)}; allowed: a number in [{low:g}, {high:g}].")
        return float(value)

    # -- sections
    def parse_trainer(self, raw: Any) -> dict[str, Any]:
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            raise self.error(("trainer",), "must be a mapping of dotted trainer keys (data.name: ...) to values.")
        keys = all_keys()
        out: dict[str, Any] = {}
        for key, value in flatten(raw).items():
            if key not in keys:
                raise self.error(("trainer", key), f"is not a trainer key.{_suggest(key, keys)} "
                                                   f"Trainer keys are dotted: data.*, model.*, i2srm.*, train.*.")
            try:
                out[key] = coerce(key, value)
            except ConfigError as e:
                raise self.error(("trainer", key), f"is refused: {e}") from None
        if "train.seed" in out:
            raise self.error(("trainer", "train.seed"), "is set by the study's seeds (one run per seed); "
                                                        "write seeds: [..] instead.")
        return out

    def parse_search(self, raw: Any, trainer: Mapping[str, Any]) -> dict[str, Param]:
        if raw is None:
            raise self.error(("search",), "is missing; a study searches at least one trainer key, "
                                          "e.g. search: {i2srm.delta: {grid: [0.0, 0.7]}}.")
        if not isinstance(raw, Mapping) or not raw:
            raise self.error(("search",), "must be a non-empty mapping of dotted trainer keys to "
                                          f"{{kind: values}} with kind one of {', '.join(KINDS)}.")
        keys = all_keys()
        out: dict[str, Param] = {}
        for key, spec in raw.items():
            key = str(key)
            path = ("search", key)
            if key not in keys:
                raise self.error(path, f"is not a trainer key.{_suggest(key, keys)} "
                                       f"Searched keys are dotted trainer keys such as i2srm.delta.")
            if key == "train.seed":
                raise self.error(path, "cannot be searched; list the seeds under seeds: [..].")
            out[key] = self.parse_param(key, spec, trainer)
        return out

    def parse_param(self, key: str, spec: Any, trainer: Mapping[str, Any]) -> Param:
        path = ("search", key)
        if not isinstance(spec, Mapping):
            raise self.error(path, f"must be a mapping like {{grid: [...]}}; kinds: {', '.join(KINDS)}.")
        kinds = [k for k in spec if k != "step"]
        if len(kinds) != 1 or kinds[0] not in KINDS:
            extra = "".join(_suggest(k, KINDS) for k in kinds if k not in KINDS)
            raise self.error(path, f"has {sorted(map(str, spec))}; give exactly one of {', '.join(KINDS)} "
                                   f"(and optionally step).{extra}")
        kind = str(kinds[0])
        arg, step = spec[kind], spec.get("step")
        typ = _key_type(key)
        if kind in ("grid", "choice"):
            if not isinstance(arg, list) or not arg:
                raise self.error(path, f"{kind} must be a non-empty list of values, got {show(arg)}.")
            if step is not None:
                raise self.error(path, f"step applies to uniform/int ranges, not to {kind}.")
            values = tuple(self.check_value(key, v, trainer) for v in arg)
            if len(set(values)) != len(values):  # by value: 0.0 and -0.0 (or 1 and 1.0) are one point
                raise self.error(path, f"{kind} lists a value twice (compared as numbers): {show(list(values))}.")
            return Param(key, kind, values=values)
        if not (isinstance(arg, list) and len(arg) == 2 and all(_is_number(x) for x in arg)):
            raise self.error(path, f"{kind} needs [low, high] (two numbers), got {show(arg)}.")
        if kind == "int" and typ is not int:
            raise self.error(path, f"is a {typ.__name__} key; int ranges are for integer keys "
                                   f"(use uniform/loguniform or choice).")
        if kind in ("uniform", "loguniform") and typ is not float:
            raise self.error(path, f"is a {typ.__name__} key; {kind} is for float keys "
                                   f"({'use int: [low, high]' if typ is int else 'use choice: [...]'}).")
        low, high = arg
        if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
            raise self.error(path, f"int range needs integer bounds, got {show(arg)}.")
        if not low < high:
            raise self.error(path, f"has an empty or inverted range [{low}, {high}]; need low < high.")
        if kind == "loguniform" and low <= 0:
            raise self.error(path, f"loguniform needs low > 0 (log scale), got {low}.")
        if step is not None:
            if kind == "loguniform":
                raise self.error(path, "step is not supported on a loguniform range.")
            if not _is_number(step) or step <= 0 or (kind == "int" and not float(step).is_integer()):
                raise self.error(path, f"step must be a positive {'integer' if kind == 'int' else 'number'}, "
                                       f"got {show(step)}.")
            if step > high - low:
                raise self.error(path, f"step {step} is wider than the range [{low}, {high}].")
        if kind == "int":
            low, high = int(low), int(high)
            step = int(step) if step is not None else None
            self.check_value(key, low, trainer)  # the ends first: the key's range bounds the grid below
            self.check_value(key, high, trainer)
            # Every integer of a small range is checked, so a value the trainer refuses (attn_heads that
            # does not divide the width) is caught here rather than as a failed trial.
            if (high - low) // (step or 1) < 64:
                for v in range(low, high + 1, step or 1):
                    self.check_value(key, v, trainer)
        else:
            low, high = float(low), float(high)
            step = float(step) if step is not None else None
            self.check_value(key, low, trainer)
            self.check_value(key, high, trainer)
        return Param(key, kind, low=low, high=high, step=step)

    def check_value(self, key: str, value: Any, trainer: Mapping[str, Any]) -> Any:
        """The value as the trainer types it; ``SpaceError`` if the trainer refuses it."""
        path = ("search", key)
        if isinstance(value, (dict, list)):
            raise self.error(path, f"value {show(value)} is not a scalar.")
        try:
            value = coerce(key, value)
            build_config({**trainer, key: value})
        except ConfigError as e:
            raise self.error(path, f"value {show(value)} is refused by the trainer: {e}") from None
        return value

    def parse_seeds(self, tree: Mapping[str, Any], base: Config) -> list[int]:
        value = tree.get("seeds")
        if value is None:
            return [base.train.seed]
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list) or not value or \
                not all(isinstance(s, int) and not isinstance(s, bool) for s in value):
            raise self.error(("seeds",), f"must be a non-empty list of integers, got {show(value)}.")
        if len(set(value)) != len(value):
            raise self.error(("seeds",), f"lists a seed twice: {show(value)}.")
        self.check_seeds(("seeds",), value)
        return list(value)

    def check_seeds(self, path: tuple[str, ...], seeds: list[int]) -> None:
        low, high = SEED_RANGE
        wrong = [s for s in seeds if not low <= s <= high]
        if wrong:
            raise self.error(path, f"holds {show(wrong[0])}; allowed: seeds in [{low}, {high}].")

    def parse_confirm(self, raw: Any, seeds: list[int], trials: int) -> Confirm | None:
        """``confirm: {seeds: [..], top: N}``: fresh seeds (none of ``seeds``) for the ``top`` best configurations."""
        if raw is None:
            return None
        form = "a mapping like {seeds: [11, 12, 13], top: 1} (or null: no confirmation)"
        if not isinstance(raw, Mapping):
            raise self.error(("confirm",), f"must be {form}, got {show(raw)}.")
        for key in raw:
            if key not in CONFIRM_KEYS:
                raise self.error(("confirm", str(key)), f"is not a confirm key; allowed: {', '.join(CONFIRM_KEYS)}."
                                                        f"{_suggest(key, CONFIRM_KEYS)}")
        fresh = raw.get("seeds")
        if isinstance(fresh, int) and not isinstance(fresh, bool):
            fresh = [fresh]
        if not isinstance(fresh, list) or not fresh or \
                not all(isinstance(s, int) and not isinstance(s, bool) for s in fresh):
            raise self.error(("confirm", "seeds"), f"must be a non-empty list of integers (seeds the search does "
                                                   f"not use), got {show(fresh)}.")
        if len(set(fresh)) != len(fresh):
            raise self.error(("confirm", "seeds"), f"lists a seed twice: {show(fresh)}.")
        self.check_seeds(("confirm", "seeds"), fresh)
        shared = sorted(set(fresh) & set(seeds))
        if shared:
            raise self.error(("confirm", "seeds"), f"{fresh} shares {shared} with the search's seeds {seeds}; "
                                                   f"confirmation seeds must be fresh (none of the search's).")
        top = raw.get("top", 1)
        if isinstance(top, bool) or not isinstance(top, int) or top < 1:
            raise self.error(("confirm", "top"), f"must be an integer >= 1 (configurations to confirm), "
                                                 f"got {show(top)}.")
        if top > trials:
            raise self.error(("confirm", "top"), f"is {top}, more than the study's {trials} configuration(s) "
                                                 f"(trials).")
        return Confirm(seeds=tuple(fresh), top=top)

    def parse_resolve(self, raw: Any, seeds: list[int]) -> Resolve | None:
        """``resolve: {width: W, max_seeds: M}``: W > 0 (score units), M an integer above the number of seeds."""
        if raw is None:
            return None
        form = "a mapping like {width: 1.0, max_seeds: 8} (or null: every configuration runs seeds only)"
        if not isinstance(raw, Mapping):
            raise self.error(("resolve",), f"must be {form}, got {show(raw)}.")
        for key in raw:
            if key not in RESOLVE_KEYS:
                raise self.error(("resolve", str(key)), f"is not a resolve key; allowed: {', '.join(RESOLVE_KEYS)}."
                                                        f"{_suggest(key, RESOLVE_KEYS)}")
        width: Any = raw.get("width")
        most: Any = raw.get("max_seeds")
        if "width" in raw and (not _is_number(width) or not math.isfinite(width) or width <= 0):
            raise self.error(("resolve", "width"), f"must be a number > 0 (half-width of the 95% interval, in the "
                                                   f"metric's units), got {show(width)}.")
        if "max_seeds" in raw and (isinstance(most, bool) or not isinstance(most, int) or most <= len(seeds)
                                   or most > MAX_RESOLVE_SEEDS):
            raise self.error(("resolve", "max_seeds"), f"must be an integer above the {len(seeds)} seed(s) of "
                                                       f"seeds: {show(seeds)} and at most {MAX_RESOLVE_SEEDS} (the "
                                                       f"most seeds a configuration runs), "
                                                       f"got {show(most)}.")
        for key in RESOLVE_KEYS:
            if key not in raw:
                raise self.error(("resolve",), f"lacks {key}; it must be {form}.")
        assert isinstance(width, (int, float)) and isinstance(most, int)
        if max(seeds) + most > SEED_RANGE[1]:  # the extra seeds follow the largest of seeds
            raise self.error(("resolve", "max_seeds"), f"is {most}: the extra seeds after {max(seeds)} (the largest "
                                                       f"of seeds) would pass {SEED_RANGE[1]}; use smaller seeds.")
        return Resolve(width=float(width), max_seeds=most)

    def parse_trials(self, tree: Mapping[str, Any], sampler: str, search: Mapping[str, Param]) -> int:
        if tree.get("trials") is None:
            if sampler == "grid":
                return math.prod(len(p.values) for p in search.values())
            raise self.error(("trials",), f"is required with sampler {sampler}: the number of configurations "
                                          f"to draw (each is run once per seed).")
        return self.integer(tree, "trials", None, low=1, high=MAX_TRIALS)

    def parse_options(self, raw: Any, scheduler: str, base: Config) -> dict[str, Any]:
        out: dict[str, Any] = dict(SCHEDULER_OPTIONS[scheduler])
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise self.error(("scheduler_options",), "must be a mapping, e.g. {grace_period: 1, reduction_factor: 2}.")
        allowed = tuple(SCHEDULER_OPTIONS[scheduler])
        for key, value in raw.items():
            path = ("scheduler_options", str(key))
            if key not in allowed:
                raise self.error(path, f"is not an option of scheduler {scheduler}; allowed: "
                                       f"{', '.join(allowed) or 'none'}.{_suggest(key, allowed)}")
            low = 2 if key == "reduction_factor" else 1
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 1000:
                raise self.error(path, f"must be an integer in [{low}, 1000], got {show(value)}.")
            out[str(key)] = value
        if out.get("grace_period", 0) > base.train.epochs:
            raise self.error(("scheduler_options", "grace_period"),
                             f"is {out['grace_period']}, more than train.epochs ({base.train.epochs}).")
        return out

    def parse_metric(self, tree: Mapping[str, Any], base: Config, search: Mapping[str, Param]) -> str:
        value = tree.get("metric", "dev_f1")
        facet = search.get(FACET_KEY)
        names = [str(v) for v in facet.values] if facet is not None else [base.data.name]
        tasks = sorted({dataclasses.replace(base, data=dataclasses.replace(base.data, name=n)).task for n in names})
        allowed = METRICS_MRE if tasks == ["mre"] else METRICS_MNER  # a metric every searched task reports
        task = " and ".join(tasks) + (" tasks" if len(tasks) > 1 else " task")
        if isinstance(value, str) and value.startswith("test_"):
            raise self.error(("metric",), f"is {show(value)}: choosing a configuration on the test set is a leak; "
                                          f"use the dev metric ({value.replace('test_', 'dev_', 1)}). "
                                          f"Allowed: {', '.join(allowed)}.")
        if not isinstance(value, str) or value not in allowed:
            raise self.error(("metric",), f"is {show(value)}, which the trainer does not report for the {task}; "
                                          f"allowed: {', '.join(allowed)}.{_suggest(value, allowed)}")
        return value

    def parse_resources(self, raw: Any) -> Resources:
        if raw is None:
            return Resources()
        if not isinstance(raw, Mapping):
            raise self.error(("resources",), "must be a mapping like {cpus: 1, gpus: 0}.")
        for key in raw:
            if key not in RESOURCE_KEYS:
                raise self.error(("resources", str(key)), f"is not a resource; allowed: "
                                                          f"{', '.join(RESOURCE_KEYS)}.{_suggest(key, RESOURCE_KEYS)}")
        cpus, gpus = raw.get("cpus", 1), raw.get("gpus", 0)
        if not _is_number(cpus) or not 0 < cpus <= MAX_RESOURCE:
            raise self.error(("resources", "cpus"), f"must be a number in (0, {MAX_RESOURCE:g}], got {show(cpus)}.")
        if not _is_number(gpus) or not 0 <= gpus <= MAX_RESOURCE or (gpus > 1 and not float(gpus).is_integer()):
            raise self.error(("resources", "gpus"), f"must be 0, a fraction in (0, 1] or a whole number, "
                                                    f"got {show(gpus)}.")
        return Resources(cpus=float(cpus), gpus=float(gpus))

    def parse_reports(self, tree: Mapping[str, Any], search: Mapping[str, Param]) -> list[str]:
        """The space's ``reports``; without one, every report that applies to the search. The registry is imported
        here, not at the top: the reports package imports this module."""
        from study.reports.registry import REPORTS, default_reports

        value = tree.get("reports")
        if value is None:
            value = default_reports(tuple(search))
        if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
            raise self.error(("reports",), f"must be a list drawn from {', '.join(REPORTS)}, got {show(value)}.")
        for r in value:
            if r not in REPORTS:
                raise self.error(("reports",), f"names {show(r)}; allowed: {', '.join(REPORTS)}.{_suggest(r, REPORTS)}")
        if "ablation" in value and "i2srm.ablation" not in search:
            raise self.error(("reports",), "asks for an ablation report, which needs i2srm.ablation searched.")
        return list(dict.fromkeys(value))

    def parse_reference(self, raw: Any, search: Mapping[str, Param]) -> dict[str, Any]:
        defaults = Config().flat()  # the paper's reference values are the dataclass defaults
        out = {key: defaults[key] for key in search}
        if raw is None:
            return out
        if not isinstance(raw, Mapping):
            raise self.error(("reference",), "must be a mapping of searched keys to the paper's values.")
        for key, value in flatten(raw).items():
            if key not in search:
                raise self.error(("reference", key), f"is not searched; reference values are for searched keys "
                                                     f"({', '.join(search)}).{_suggest(key, search)}")
            try:
                out[key] = coerce(key, value)
            except ConfigError as e:
                raise self.error(("reference", key), f"is refused: {e}") from None
        return out


def dump_space(space: Space) -> str:
    """The resolved space as YAML text (``space.yaml`` of a study)."""
    header = f"# Resolved search space of study '{space.study}' (from {space.source or 'a mapping'}, --set applied).\n"
    return header + yaml.safe_dump(space.to_dict(), sort_keys=False, allow_unicode=True)
