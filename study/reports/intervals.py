"""How sure each configuration is: the interval the space's ``resolve`` reads (``study/adaptive.py``), from the records.

A configuration's interval is over its paired differences from the reference configuration on the study's score
(the metric at each run's best epoch, the number Optuna is told), by seed; without a reference configuration,
over its own scores. The reference itself has none. With ``resolve``, a configuration is *resolved* when the
interval's half-width is at most ``width``; for one that is not, the spread it shows suggests how many seeds
would make it so (``adaptive.seeds_needed``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from study.adaptive import Resolve, half_width, paired_differences, seeds_needed
from study.reports.load import Study
from study.reports.stats import Group
from study.reports.values import fmt_display


@dataclass(frozen=True)
class Interval:
    n: int
    """Values the interval is over: pairs with the reference, or the configuration's own scores."""
    half_width: float
    """Of the 95% t-interval; inf below 2 values."""
    paired: bool
    resolved: bool | None = None
    """With ``resolve``: whether the half-width is at most its ``width``; None without ``resolve``."""
    needed: int | None = None
    """With ``resolve`` and not resolved: the values the observed spread suggests for ±``width``."""


def resolve_of(study: Study) -> Resolve | None:
    """The study's ``resolve`` (its stored, validated space), or None."""
    raw: Any = study.space.get("resolve")
    if not isinstance(raw, dict):
        return None
    return Resolve(width=float(raw["width"]), max_seeds=int(raw["max_seeds"]))


def _scores(study: Study, group: Group) -> dict[int, float | None]:
    """The group's score by seed (a seed run twice, as a TPE search may, at its mean)."""
    by_seed: dict[int, list[float]] = {}
    for t in group.trials:
        s = study.score(t)
        if s is not None:
            by_seed.setdefault(t.seed, []).append(s)
    return {seed: sum(v) / len(v) for seed, v in by_seed.items()}


def interval(study: Study, group: Group, reference: Group | None) -> Interval:
    """``group``'s interval, paired with ``reference`` when there is one."""
    resolve = resolve_of(study)
    ref = _scores(study, reference) if reference is not None else None
    values = paired_differences(_scores(study, group), ref)
    width = half_width(values)
    if resolve is None:
        return Interval(len(values), width, ref is not None)
    resolved = width <= resolve.width
    return Interval(len(values), width, ref is not None, resolved,
                    None if resolved else seeds_needed(values, resolve.width))


def intervals(study: Study, groups: Sequence[Group], reference: Group | None) -> list[Interval | None]:
    """Each group's interval; None for the reference itself."""
    return [None if g is reference else interval(study, g, reference) for g in groups]


def fmt_half_width(value: float, digits: int) -> str:
    return "" if not math.isfinite(value) else f"{value:.{digits}f}"


def power_line(study: Study, groups: Sequence[Group], reference: Group | None) -> str:
    """With ``resolve``: how many configurations were resolved to ±width and, for the others, how many seeds
    the spread they show suggests; "" without ``resolve``."""
    resolve = resolve_of(study)
    if resolve is None:
        return ""
    shown = [(g, i) for g, i in zip(groups, intervals(study, groups, reference)) if i is not None]
    done = sum(1 for _, i in shown if i.resolved)
    of = "their paired difference from the reference configuration" if reference is not None else "their mean"
    text = (f"Adaptive seeds: {done} of {len(shown)} configurations resolved to ±{resolve.width:g} "
            f"({study.metric}, 95% t-interval of {of}; at most {resolve.max_seeds} seeds each).")
    open_ = [(g, i) for g, i in shown if not i.resolved]
    if open_:
        parts = []
        for g, i in open_:
            name = ", ".join(fmt_display(v) for v in g.values)
            unit = "pairs" if i.paired else "seeds"
            need = ("no spread seen yet" if i.n < 2 else
                    f"its spread suggests about {i.needed} {unit} in all, {i.needed - i.n} more"
                    if i.needed is not None else f"its spread suggests more than 1000 {unit}")
            width = "±∞" if not math.isfinite(i.half_width) else f"±{i.half_width:.2f}"
            parts.append(f"{name} ({i.n} {unit}, {width}: {need})")
        text += " Unresolved: " + "; ".join(parts) + "."
    return text
