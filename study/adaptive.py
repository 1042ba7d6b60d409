"""Adaptive seeds (the space's ``resolve``): when a configuration's interval is narrow enough, and which seed is next.

A configuration's *interval* is the 95% t-interval of the mean of its paired differences from the reference
configuration (its score minus the reference's, over the seeds both ran with a score); without a reference
configuration in the study, of the mean of its own scores. Its half-width is ``t(0.975, n-1) * sd / sqrt(n)``
over the ``n`` values (infinite below 2). A configuration is *resolved* once the half-width is at most
``width``. The rule reads the width only, never the sign or the size of the difference, so stopping early does
not bias the intervals towards a conclusion.

The searcher (``study/search.py``) and the reports (``study/reports/``) both read the rule here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

CI_LEVEL = 0.95


@dataclass(frozen=True)
class Resolve:
    """``resolve: {width: W, max_seeds: M}``: more seeds, one at a time, while a configuration's interval is
    wider than ±W (score units, e.g. F1 points) and it has fewer than M seeds."""

    width: float
    max_seeds: int

    def to_dict(self) -> dict[str, float | int]:
        return {"width": self.width, "max_seeds": self.max_seeds}


def t_quantile(df: int) -> float:
    """Student's t quantile at ``0.5 + CI_LEVEL / 2`` with ``df`` degrees of freedom."""
    from scipy import stats  # imported when a width is computed, not by every module that reads the rule

    return float(stats.t.ppf(0.5 + CI_LEVEL / 2, df))


def half_width(values: Sequence[float]) -> float:
    """Half-width of the 95% t-interval of the mean of ``values``; inf below 2 values."""
    n = len(values)
    if n < 2:
        return math.inf
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return t_quantile(n - 1) * sd / math.sqrt(n)


def paired_differences(scores: Mapping[int, float | None], reference: Mapping[int, float | None] | None) -> list[float]:
    """The values the interval is over: ``scores[s] - reference[s]`` for every seed both have a score for (in seed
    order); without a reference, the configuration's own scores."""
    if reference is None:
        return [v for _, v in sorted(scores.items()) if v is not None]
    return [v - r for s, v in sorted(scores.items())
            if v is not None and (r := reference.get(s)) is not None]


def seeds_needed(values: Sequence[float], width: float, limit: int = 1000) -> int | None:
    """The number of values whose interval the observed spread of ``values`` suggests is ±``width`` wide: the
    smallest n with ``t(n-1) * sd / sqrt(n) <= width``; None below 2 values (no spread seen) or beyond ``limit``."""
    if len(values) < 2:
        return None
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    for m in range(2, limit + 1):
        if t_quantile(m - 1) * sd / math.sqrt(m) <= width:
            return m
    return None


def extra_seeds(seeds: Sequence[int], confirm: Sequence[int], count: int) -> list[int]:
    """The seeds a configuration gets beyond ``seeds``, in order: the next ``count`` integers after the largest of
    ``seeds`` that neither ``seeds`` nor the confirmation's ``confirm`` use. Every configuration gets the same
    ones, so that its runs pair with the reference's."""
    used = set(seeds) | set(confirm)
    out: list[int] = []
    seed = max(seeds)
    while len(out) < count:
        seed += 1
        if seed not in used:
            out.append(seed)
    return out
