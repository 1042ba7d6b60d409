"""Paired comparisons of test F1 with a reference, one implementation for every report.

Two sets of trials are paired by *unit*: the seed plus the values of the ``match`` keys (the other searched
keys, so a pair differs only in the compared key). A unit that ran more than once on one side (a TPE or
random search may suggest one configuration twice) is taken at its mean. Over the paired differences
``d = x - y`` (x: the compared configuration, y: the reference):

* ``p_value``: the paired t-test, ``scipy.stats.ttest_rel(x, y)``; ``p_holm`` is Holm's step-down
  adjustment of the p-values of one family (the values of a key, the rows of a table; ``holm``);
* ``p_signflip``: the exact sign-flip permutation test of the mean difference
  (``scipy.stats.permutation_test``, ``permutation_type="samples"``, all ``2**n`` sign patterns). It assumes
  nothing about the shape of ``d``, which 2-5 seeds cannot show; its smallest possible value is ``2 / 2**n``
  (0.5 at 2 seeds, 0.0625 at 5), so below 6 seeds no difference can reach 0.05 without the t-test's
  normality assumption. Both are reported; the markers and the Holm column use the t-test;
* ``effect_size``: Cohen's d_z, ``mean(d) / std(d, ddof=1)``; empty when every difference is the same;
* ``diff_ci_low``, ``diff_ci_high``: the 95% bootstrap interval of ``mean(d)`` (``scipy.stats.bootstrap``, BCa,
  ``BOOTSTRAP_RESAMPLES`` resamples, seeded). With few seeds it is too narrow (at 2 seeds it is the two
  differences themselves): read it together with ``n_paired``.

Below ``MIN_PAIRS`` pairs only ``n_paired`` and ``diff`` are given, with the reason in ``note``: no p-value, no
stars and no interval (a t-test on 2 pairs has one degree of freedom, so two differences that happen to agree
give a tiny p, and their bootstrap "interval" is the range of the two). Everything is empty (None) for the
reference itself, and without pairs.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np

from study.reports.load import Study
from study.reports.stats import Group, group_trials
from study.reports.values import fmt_value, reference_value
from study.schema import Run, typed_value

MIN_PAIRS = 3
"""The fewest pairs a test, its stars and its interval are computed on."""
STARS = ((0.001, "***"), (0.01, "**"), (0.05, "*"))
"""Markers of the Holm-adjusted t-test p-value, in figures and tables."""
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0
CI_LEVEL = 0.95
EXACT_MAX_PAIRS = 16
"""Up to this many pairs the sign-flip test enumerates all 2**n patterns; beyond, 99999 seeded resamples."""
METRIC = "test_f1_at_best"


@dataclass(frozen=True)
class Paired:
    """One configuration against the reference: x - y over the units both ran."""
    n_paired: int
    diff: float | None = None
    p_value: float | None = None
    p_signflip: float | None = None
    effect_size: float | None = None
    diff_ci_low: float | None = None
    diff_ci_high: float | None = None
    p_holm: float | None = None
    note: str = ""
    """Why there is a difference but no test (below ``MIN_PAIRS`` pairs); "" otherwise."""

    @property
    def stars(self) -> str:
        return stars(self.p_holm)


def small_n_note(n: int) -> str:
    """The reason a difference over ``n`` pairs has no test and no interval."""
    return f"{n} pair{'s' if n != 1 else ''}: no test below {MIN_PAIRS}"


def stars(p: float | None) -> str:
    if p is None:
        return ""
    return next((mark for limit, mark in STARS if p < limit), "")


def _finite(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _mean_stat(sample: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(sample, axis=axis)


def paired_test(x: Sequence[float], y: Sequence[float]) -> Paired:
    """The paired statistics of ``x - y`` (same order, one pair per unit); no Holm adjustment here."""
    from scipy import stats  # ~1 s of import: only when a comparison is drawn

    if len(x) != len(y):
        raise ValueError(f"paired samples differ in length: {len(x)} and {len(y)}")
    n = len(x)
    if n == 0:
        return Paired(0)
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    d = xa - ya
    mean = float(d.mean())
    if n < MIN_PAIRS:
        return Paired(n, diff=mean, note=small_n_note(n))
    sd = float(d.std(ddof=1))
    with warnings.catch_warnings():  # identical runs: scipy warns and returns nan (reported as empty)
        warnings.simplefilter("ignore")
        p_t = _finite(stats.ttest_rel(xa, ya).pvalue)
        exact = n <= EXACT_MAX_PAIRS
        p_flip = _finite(stats.permutation_test(
            (d,), _mean_stat, permutation_type="samples", vectorized=True, alternative="two-sided",
            n_resamples=np.inf if exact else 99999, rng=None if exact else np.random.default_rng(BOOTSTRAP_SEED)
        ).pvalue)
        low = high = None
        if sd > 0:
            ci = stats.bootstrap((d,), _mean_stat, vectorized=True, confidence_level=CI_LEVEL,
                                 n_resamples=BOOTSTRAP_RESAMPLES, method="BCa",
                                 rng=np.random.default_rng(BOOTSTRAP_SEED)).confidence_interval
            low, high = _finite(ci.low), _finite(ci.high)
        elif math.isfinite(mean):  # every difference the same: the interval is that one value
            low = high = mean
    return Paired(n, diff=mean, p_value=p_t, p_signflip=p_flip, effect_size=mean / sd if sd > 0 else None,
                  diff_ci_low=low, diff_ci_high=high)


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment; None entries are not tests and stay None (they do not count in m).

    Sorted ascending, ``p_(i)`` becomes ``max_{j <= i} min(1, (m - j + 1) p_(j))`` (i, j from 1)."""
    present = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(present)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def with_holm(results: Sequence[Paired]) -> list[Paired]:
    """``results`` as one family, each with its Holm-adjusted t-test p-value."""
    adjusted = holm([r.p_value for r in results])
    return [replace(r, p_holm=p) for r, p in zip(results, adjusted)]


def pair_trials(x: Sequence[Run], y: Sequence[Run], match: Sequence[str],
                score: Callable[[Run], float | None] = lambda t: getattr(t, METRIC)) -> tuple[list[float], list[float]]:
    """The paired scores of the units (seed + values of ``match``) both ``x`` and ``y`` ran, in unit order."""
    def by_unit(trials: Sequence[Run]) -> dict[tuple[Any, ...], float]:
        units: dict[tuple[Any, ...], list[float]] = {}
        for t in trials:
            s = score(t)
            if t.seed is not None and s is not None:
                units.setdefault((t.seed, *(fmt_value(t.value(k)) for k in match)), []).append(s)
        return {u: float(np.mean(v)) for u, v in units.items()}

    a, b = by_unit(x), by_unit(y)
    common = sorted(u for u in a if u in b)  # (seed, value texts): one order for every report
    return [a[u] for u in common], [b[u] for u in common]


def compare_groups(groups: Sequence[Group], reference: Group | None, match: Sequence[str] = ()) -> list[Paired | None]:
    """Each group against ``reference`` as one Holm family; None for the reference itself (or all, without one)."""
    if reference is None:
        return [None] * len(groups)
    tested = [paired_test(*pair_trials(g.trials, reference.trials, match)) for g in groups if g is not reference]
    adjusted = iter(with_holm(tested))
    return [None if g is reference else next(adjusted) for g in groups]


def reference_values(study: Study, keys: Sequence[str]) -> tuple[Any, ...]:
    return tuple(typed_value(k, reference_value(k, study.space)) for k in keys)


def find_group(groups: Sequence[Group], values: Sequence[Any]) -> Group | None:
    wanted = tuple(fmt_value(v) for v in values)
    return next((g for g in groups if tuple(fmt_value(v) for v in g.values) == wanted), None)


def keys_tests(study: Study, keys: Sequence[str]) -> tuple[list[Group], list[Paired | None], Group | None]:
    """Each configuration of ``keys`` against the reference configuration (each of ``keys`` at its reference
    value), paired by seed and the other searched keys (pooled over them, as the sensitivity figure draws a
    key); one Holm family. When no reference configuration ran, every comparison is None."""
    groups = group_trials(study, keys)
    reference = find_group(groups, reference_values(study, keys)) if keys else None
    others = [k for k in study.searched if k not in keys]
    return groups, compare_groups(groups, reference, others), reference


def configuration_tests(study: Study) -> tuple[list[Group], list[Paired | None], Group | None]:
    """Every configuration of all searched keys against the reference configuration, paired by seed."""
    return keys_tests(study, study.searched)


def key_tests(study: Study, key: str) -> tuple[list[Group], list[Paired | None], Group | None]:
    """Each value of ``key`` against its reference value (a marginal comparison over the other keys)."""
    return keys_tests(study, [key])
