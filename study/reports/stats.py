"""Pool trials into configurations (seeds pooled) and summarise them: mean, std, 95% CI."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy.special import stdtrit  # Student t quantile; scipy.stats would add ~1 s of import to every study

from study.reports.load import Study
from study.reports.values import order_key
from study.schema import Run, mean_score

CI_LEVEL = 0.95


@dataclass(frozen=True)
class Spread:
    n: int
    mean: float
    std: float
    """Sample standard deviation (ddof=1); nan for a single value (there is none: shown as n/a, never 0)."""
    ci95: float
    """Half-width of the t interval, t(0.975, n-1) * std / sqrt(n); nan for a single value."""


def spread(values: Sequence[float | None]) -> Spread:
    """The spread of the values that exist (a run without a result has None)."""
    xs = [x for x in values if x is not None]
    n = len(xs)
    if n == 0:
        return Spread(0, math.nan, math.nan, math.nan)
    arr = np.asarray(xs, dtype=float)
    mean = float(arr.mean())
    if n == 1:
        return Spread(1, mean, math.nan, math.nan)
    std = float(arr.std(ddof=1))
    ci = float(stdtrit(n - 1, 0.5 + CI_LEVEL / 2)) * std / math.sqrt(n)
    return Spread(n, mean, std, ci)


@dataclass(frozen=True)
class Group:
    """One configuration of the searched keys, with the trials (one per seed) that ran it."""
    values: tuple[Any, ...]
    trials: tuple[Run, ...]

    @property
    def dev(self) -> Spread:
        return spread([t.best_dev_f1 for t in self.trials])

    @property
    def test(self) -> Spread:
        return spread([t.test_f1_at_best for t in self.trials])


def highest_test(runs: Sequence[Run]) -> float:
    """The highest test F1 among counted runs (where a figure puts a configuration's significance stars)."""
    return max(t.test_f1_at_best for t in runs if t.test_f1_at_best is not None)


def group_trials(study: Study, keys: Sequence[str], trials: Sequence[Run] | None = None) -> list[Group]:
    """Counted trials grouped by their values of ``keys``, in each key's natural order."""
    trials = study.counted if trials is None else trials
    groups: dict[tuple[Any, ...], list[Run]] = {}
    for t in trials:
        groups.setdefault(tuple(t.value(k) for k in keys), []).append(t)
    listed = [study.listed(k) for k in keys]

    def sort_key(values: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(order_key(k, v, lst) for k, v, lst in zip(keys, values, listed))

    return [Group(v, tuple(sorted(groups[v], key=lambda t: (t.seed is None, t.seed or 0, t.trial_id))))
            for v in sorted(groups, key=sort_key)]


def best_group(study: Study, groups: Sequence[Group]) -> tuple[Group, float] | None:
    """The configuration with the best mean score over seeds (``mode`` max or min): the value Optuna was told."""
    scored = []
    for g in groups:
        value = mean_score([study.score(t) for t in g.trials])
        if value is not None:
            scored.append((g, value))
    if not scored:
        return None
    pick = max if study.mode == "max" else min
    return pick(scored, key=lambda gs: gs[1])
