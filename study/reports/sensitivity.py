"""``sensitivity_<key>.png/.pdf``: F1 against one searched key, mean and std band over seeds.

Test F1 has error bars, the 95% t-interval of its mean, and each point says over how many runs it is (``n=``): with
adaptive seeds (the space's ``resolve``) the points differ in both.

One figure per searched key (the ablation switch gets a table instead). When several keys
are searched, each figure pools the trials over the other keys (a marginal curve). Values
from a continuous random/TPE search are mostly unique, so beyond ``MAX_DISTINCT_POINTS``
they are binned (equal width on the axis scale) and each bin's mean is drawn; every single
run stays visible as a faint point at its own value.

With ``data.name`` searched beside other keys (``study.reports.facets``), each figure has one panel per
dataset, stacked over one shared x axis, each with its own y axis: F1 means something else on each
dataset, so the datasets are never pooled (and ``data.name`` itself gets no figure).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from study.reports.facets import facets, is_faceted
from study.reports.figures import (FIGURE_HEIGHT_IN, SMALL_FONT_PT, STARS_NOTE, mark_significance, new_figure,
                                   paper_style, save_figure)
from study.reports.load import Study
from study.schema import Run
from study.space import Param
from study.reports.significance import key_tests
from study.reports.stats import group_trials, highest_test, spread
from study.reports.values import fmt_value, is_number, reference_value
from study.space import FACET_KEY

MAX_DISTINCT_POINTS = 12
"""A grid/choice with more distinct values than this is drawn as bins."""
N_BINS = 8
"""Bins of a continuous axis; a range search (uniform, loguniform, int) with more distinct values than
this is binned, since its values are mostly unique and a line through them would only trace noise."""
LOG_SPAN = 100.0
"""A positive numeric axis spanning this factor or more is drawn on a log scale."""
LOG2_SPAN = 8
"""Integers that are all powers of two spanning this factor or more (heads: 1..16) get a log2 axis."""
PANEL_HEIGHT_IN = 1.55
"""Height of one dataset's panel in a faceted figure (plus ``FIGURE_HEIGHT_IN - PANEL_HEIGHT_IN`` for the
legend and the x axis)."""


@dataclass(frozen=True)
class Point:
    x: float
    trials: tuple[Run, ...]


def axis_kind(key: str, values: Sequence[Any], param: Param | None) -> str:
    """``category``, ``log``, ``log2``, ``symlog`` or ``linear``."""
    if not all(is_number(v) for v in values):
        return "category"
    nums = [float(v) for v in values]
    positive = [v for v in nums if v > 0]
    if param is not None and param.kind == "loguniform" and len(positive) == len(nums):
        return "log"
    if len(positive) == len(nums) and all(isinstance(v, int) and v & (v - 1) == 0 for v in values) \
            and max(nums) / min(nums) >= LOG2_SPAN:
        return "log2"
    if positive and max(positive) / min(positive) >= LOG_SPAN:
        return "log" if len(positive) == len(nums) else "symlog" if min(nums) >= 0 else "linear"
    return "linear"


def is_range(param: Param | None) -> bool:
    return param is not None and not param.finite


def bin_edges(kind: str, values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """``N_BINS`` equal bins over the values' span, on the axis scale (log10 for a log axis)."""
    fwd = np.log10 if kind in ("log", "log2") else (lambda a: a)
    xs = np.array([float(v) for v in values])
    return np.linspace(fwd(xs.min()), fwd(xs.max()), N_BINS + 1)


def _points(study: Study, key: str, kind: str, binned: bool, cats: Sequence[Any] | None = None,
            edges: np.ndarray | None = None) -> tuple[list[Point], list[Any]]:
    """Plot positions and the trials pooled at each; for categories also the category order. ``cats`` and
    ``edges`` (bins on the axis scale) default to this study's own; a panel takes the whole figure's."""
    groups = group_trials(study, [key])
    if kind == "category":
        cats = [g.values[0] for g in groups] if cats is None else list(cats)
        text = [fmt_value(c) for c in cats]
        return [Point(float(text.index(fmt_value(g.values[0]))), g.trials) for g in groups], cats
    if not binned:
        return [Point(float(g.values[0]), g.trials) for g in groups], []
    log = kind in ("log", "log2")
    fwd = np.log10 if log else (lambda a: a)
    xs = np.array([float(g.values[0]) for g in groups])
    if edges is None:
        edges = bin_edges(kind, xs)
    which = np.clip(np.searchsorted(edges, fwd(xs), side="right") - 1, 0, N_BINS - 1)
    points = []
    for b in range(N_BINS):
        members = [t for g, w in zip(groups, which) if w == b for t in g.trials]
        if members:
            centre = (edges[b] + edges[b + 1]) / 2
            points.append(Point(float(10 ** centre if log else centre), tuple(members)))
    return points, []


def plot_sensitivity(study: Study, key: str) -> list[Path]:
    panels = facets(study)
    if key == FACET_KEY and len(study.searched) > 1:
        return []  # the datasets are the panels of the other keys' figures
    param = study.params.get(key)
    values = [t.value(key) for t in study.counted]
    if not values:
        return []
    kind = axis_kind(key, values, param)
    limit = N_BINS if is_range(param) else MAX_DISTINCT_POINTS
    binned = kind != "category" and len({fmt_value(v) for v in values}) > limit
    _, cats = _points(study, key, kind, binned)  # one category order and one set of bins for every panel
    edges = bin_edges(kind, values) if binned else None

    def x_of(value: Any) -> float | None:
        if kind == "category":
            text = [fmt_value(c) for c in cats]
            return float(text.index(fmt_value(value))) if fmt_value(value) in text else None
        return float(value) if is_number(value) else None

    panels = [(name, sub) for name, sub in panels if sub.counted]
    with paper_style():
        extra = FIGURE_HEIGHT_IN - PANEL_HEIGHT_IN
        fig = new_figure(FIGURE_HEIGHT_IN if not is_faceted(study) else extra + PANEL_HEIGHT_IN * len(panels))
        axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
        per = "per bin" if binned else "over seeds"
        starred = False
        for ax, (name, sub) in zip(axes, panels):
            points, _ = _points(sub, key, kind, binned, cats, edges)
            starred |= _draw_panel(ax, sub, key, points, binned, x_of)
            ref = reference_value(key, study.space)
            x_ref = x_of(ref) if ref is not None else None
            if x_ref is not None and (kind not in ("log", "log2") or x_ref > 0):
                ax.axvline(x_ref, color="0.35", linestyle=":", linewidth=0.9, zorder=0,
                           label=f"reference {ref:g}" if is_number(ref) else f"reference {fmt_value(ref)}")
            _set_x_axis(ax, kind, cats, values, ticks_at_values=not binned and not is_range(param))
            ax.set_ylabel(f"{name}\nF1 (%)" if name else "F1 (%)")
            ax.grid(True, linewidth=0.3, alpha=0.5)
            if ax is not axes[-1]:
                ax.tick_params(labelbottom=False)
        axes[-1].set_xlabel(key)
        # above the axes: inside, it would hide points whatever the data
        axes[0].legend(frameon=False, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=3, handlelength=1.6,
                       columnspacing=1.0, borderaxespad=0.2, alignment="left",
                       title=f"line: mean; band: ± std {per}; dots: runs"
                             + ("" if binned else "\nbars: 95% CI of test F1's mean; n: runs")
                             + (f"\n{STARS_NOTE}" if starred else ""),
                       title_fontsize=SMALL_FONT_PT)
        return save_figure(fig, study.dir / f"sensitivity_{key}")


def _draw_panel(ax: Any, study: Study, key: str, points: list[Point], binned: bool, x_of: Any) -> bool:
    """Test and dev F1 of ``study`` (one dataset's trials, or all) against ``key``; whether a star was drawn."""
    starred = False
    for attr, label, color, marker, style in (("test_f1_at_best", "test F1", "C0", "o", "-"),
                                              ("best_dev_f1", "dev F1", "C1", "s", "--")):
        xs = np.array([p.x for p in points])
        sp = [spread([getattr(t, attr) for t in p.trials]) for p in points]
        mean = np.array([s.mean for s in sp])
        std = np.array([s.std for s in sp])
        runs = [(x_of(t.value(key)), getattr(t, attr)) for p in points for t in p.trials]
        ax.scatter([x for x, _ in runs], [y for _, y in runs], s=5, color=color, alpha=0.3,
                   linewidths=0, zorder=1)  # every single run, at its own value
        ax.fill_between(xs, mean - std, mean + std, color=color, alpha=0.18, linewidth=0, zorder=2)
        ax.plot(xs, mean, color=color, marker=marker, linestyle=style, zorder=3, label=label)
        if attr == "test_f1_at_best" and not binned:  # how sure each point is, and over how many runs
            ci = np.array([s.ci95 if np.isfinite(s.ci95) else 0.0 for s in sp])
            ax.errorbar(xs, mean, yerr=ci, fmt="none", ecolor=color, elinewidth=0.8, capsize=2, zorder=3)
            for x, m, s in zip(xs, mean, sp):
                ax.annotate(f"n={s.n}", (x, m), xytext=(3, -8), textcoords="offset points",
                            fontsize=SMALL_FONT_PT - 1, color="0.3", zorder=4)
        if attr == "test_f1_at_best" and not binned:  # test F1 against the reference value, paired by seed
            groups, tests, _ = key_tests(study, key)
            marks = [(x_of(g.values[0]), highest_test(g.trials), p.stars if p else "") for g, p in zip(groups, tests)]
            mark_significance(ax, [(x, y, stars) for x, y, stars in marks if x is not None], color)
            starred = any(m[2] for m in marks)
    return starred


def _set_x_axis(ax: Any, kind: str, cats: list[Any], values: list[Any], ticks_at_values: bool) -> None:
    if kind == "category":
        labels = [fmt_value(c) for c in cats]
        ax.set_xticks(range(len(cats)), labels, rotation=30 if sum(map(len, labels)) > 30 else 0,
                      ha="right" if sum(map(len, labels)) > 30 else "center")
        ax.set_xlim(-0.5, len(cats) - 0.5)
        return
    distinct = sorted({float(v) for v in values})
    if kind == "log":
        ax.set_xscale("log")
    elif kind == "log2":
        ax.set_xscale("log", base=2)
    elif kind == "symlog":
        ax.set_xscale("symlog", linthresh=min(v for v in distinct if v > 0), linscale=0.5)
    if ticks_at_values:  # a grid: label exactly the values that ran
        ax.xaxis.set_major_locator(FixedLocator(distinct))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    elif kind == "linear":
        lo, hi = distinct[0], distinct[-1]
        pad = (hi - lo) * 0.03 or 0.5
        ax.set_xlim(lo - pad, hi + pad)
    if kind == "linear" and len(distinct) == 1:  # one value: give the point some room
        half = (abs(distinct[0]) or 1.0) * 0.5
        ax.set_xlim(distinct[0] - half, distinct[0] + half)
