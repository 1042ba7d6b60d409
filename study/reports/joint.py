"""``joint_contour``, ``joint_parallel`` and ``joint_history`` (``.png/.pdf``): a search over several keys at once.

Drawn with Optuna's matplotlib plots (``optuna.visualization.matplotlib``) on an in-memory Optuna study built
from the stored records alone, so a rebuild needs neither ``optuna.db`` nor the runner's Optuna study:
- one Optuna trial per configuration (seeds pooled), whose value is the mean over seeds of the study metric
  (``Study.score``, the value Optuna was told and the best configuration of ``REPORT.md`` is chosen by), added
  in the order the configurations first ran (their first trial's id);
- its parameters are the searched keys that take two or more values there, with the distributions of the
  space: a numeric grid/choice becomes a range over its values (log-scaled where the sensitivity figure's
  axis is), a range keeps its kind, anything else is a category.

``joint_contour``: the metric over each pair of keys, interpolated between the configurations (Optuna's
contour plot). ``joint_parallel``: one line per configuration through every key. ``joint_history``: each
configuration's value in run order and the best so far. With ``data.name`` searched (``FACET_KEY``), one
study and set of figures per dataset, named ``joint_<plot>_<dataset>``, since the metric means something else
on each. A study with fewer than two keys that vary, or fewer than two configurations, gets none (the reason
is returned); files of an earlier build that this one did not draw are removed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from study.reports.facets import facets
from study.reports.figures import COLUMN_WIDTH_IN, FONT_PT, SMALL_FONT_PT, paper_style, save_figure
from study.reports.load import Study, natural_key
from study.reports.sensitivity import axis_kind
from study.reports.stats import group_trials
from study.reports.values import fmt_value, is_number, order_key
from study.schema import Run, mean_score
from study.space import FACET_KEY

PLOTS = ("contour", "parallel", "history")
"""The figures of one (per-dataset) study, as ``joint_<plot>``."""
MIN_KEYS = 2
MIN_CONFIGURATIONS = 2
CELL_IN = 1.65
"""Width and height of one panel of the contour matrix (three or more keys)."""


@dataclass(frozen=True)
class Configuration:
    """One configuration of the searched keys with its seed-mean value of the study metric."""

    values: dict[str, Any]
    value: float
    first_trial: str


def configurations(study: Study, keys: Sequence[str], trials: Sequence[Run]) -> list[Configuration]:
    """The configurations of ``trials`` over ``keys`` that have a score, in the order they first ran."""
    out = []
    for g in group_trials(study, keys, trials):
        value = mean_score([study.score(t) for t in g.trials])
        if value is not None:
            first = min((t.trial_id for t in g.trials), key=natural_key)
            out.append(Configuration(dict(zip(keys, g.values)), value, first))
    return sorted(out, key=lambda c: natural_key(c.first_trial))


def plotted_distribution(study: Study, key: str, values: Sequence[Any]) -> Any:
    """The axis Optuna's plots draw ``key`` on: an Optuna distribution over the values its configurations took
    (not the space's distribution: a numeric grid becomes a range, on the sensitivity figure's scale)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    kind = axis_kind(key, values, study.params.get(key))
    if kind == "category" or not all(is_number(v) for v in values):
        distinct = sorted({fmt_value(v): v for v in values}.values(), key=lambda v: order_key(key, v))
        return CategoricalDistribution(distinct)
    log = kind in ("log", "log2")
    low, high = min(values), max(values)
    if all(isinstance(v, int) for v in values):
        return IntDistribution(int(low), int(high), log=log)
    return FloatDistribution(float(low), float(high), log=log)


def optuna_study(study: Study, keys: Sequence[str], configs: Sequence[Configuration]) -> Any:
    """An in-memory Optuna study with one COMPLETE trial per configuration."""
    import optuna
    from optuna.trial import create_trial

    ostudy = optuna.create_study(direction="maximize" if study.mode == "max" else "minimize",
                                 study_name=study.name)
    dists = {k: plotted_distribution(study, k, [c.values[k] for c in configs]) for k in keys}
    for c in configs:
        params = {k: c.values[k] for k in keys}
        ostudy.add_trial(create_trial(value=c.value, params=params, distributions=dists,
                                      user_attrs={"first_trial": c.first_trial}))
    return ostudy


def _figure_of(drawn: Any) -> Any:
    return (drawn.flat[0] if isinstance(drawn, np.ndarray) else drawn).figure


def _restyle(fig: Any, title: str) -> None:
    """Paper sizes on Optuna's ggplot look: its style sets 10 pt text, larger labels and its own titles."""
    if fig.get_suptitle():  # an empty one would still take room at the top
        fig.suptitle("")
    for ax in fig.axes:
        ax.set_title("")
        ax.xaxis.label.set_size(FONT_PT)
        ax.yaxis.label.set_size(FONT_PT)
        ax.tick_params(labelsize=SMALL_FONT_PT)
        legend = ax.get_legend()
        if legend is not None:
            for text in legend.get_texts():
                text.set_fontsize(SMALL_FONT_PT)
    if title:
        fig.suptitle(title, fontsize=FONT_PT)


def _draw(plot: str, ostudy: Any, keys: Sequence[str], target: str) -> Any:
    from optuna.visualization import matplotlib as ovm

    if plot == "contour":
        drawn = ovm.plot_contour(ostudy, params=list(keys), target_name=target)
        n = len(keys)
        size = (COLUMN_WIDTH_IN, 2.6) if n == 2 else (CELL_IN * n + 0.9, CELL_IN * n)
        if n > 2:  # a matrix: labels on the outer row and column only, as the panels of a row/column share them
            for (row, col), ax in np.ndenumerate(drawn):
                if row < n - 1:
                    ax.set_xlabel("")
                    ax.tick_params(labelbottom=False)
                if col > 0:
                    ax.set_ylabel("")
                    ax.tick_params(labelleft=False)
    elif plot == "parallel":
        drawn = ovm.plot_parallel_coordinate(ostudy, params=list(keys), target_name=target)
        size = (max(COLUMN_WIDTH_IN, 1.3 * (len(keys) + 1)), 2.4)
    else:
        drawn = ovm.plot_optimization_history(ostudy, target_name=target)
        drawn.set_xlabel("configuration, in the order it first ran")
        # Optuna anchors its legend right of the axes, which squeezes them in a column-wide figure
        handles, labels = drawn.get_legend_handles_labels()
        drawn.legend(handles, ["best so far" if label == "Best Value" else label for label in labels], frameon=False,
                     loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, borderaxespad=0.2)
        size = (COLUMN_WIDTH_IN, 2.4)
    fig = _figure_of(drawn)
    fig.set_size_inches(*size)
    return fig


def write_joint(study: Study) -> tuple[list[Path], str]:
    """Every joint figure of ``study``; (paths written, why none or some were not drawn: "" if all were)."""
    import matplotlib.pyplot as plt  # Optuna's matplotlib plots draw on pyplot figures
    import optuna
    from optuna.exceptions import ExperimentalWarning

    keys = [k for k in study.searched if k != FACET_KEY]
    written: list[Path] = []
    reasons: list[str] = []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name, part in facets(study):
        configs = configurations(part, keys, part.counted)
        varying = [k for k in keys if len({fmt_value(c.values[k]) for c in configs}) >= 2]
        where = f" on {name}" if name else ""
        if len(configs) < MIN_CONFIGURATIONS or len(varying) < MIN_KEYS:
            reasons.append(f"needs at least {MIN_CONFIGURATIONS} configurations with a result over at least "
                           f"{MIN_KEYS} keys that vary{where}; found {len(configs)} over "
                           f"{len(varying)} ({', '.join(varying) or 'none'})")
            continue
        ostudy = optuna_study(part, varying, configs)
        target = f"{study.metric} (seed mean)"
        suffix = f"_{name}" if name else ""
        for plot in PLOTS:
            with paper_style(), warnings.catch_warnings():
                warnings.simplefilter("ignore", ExperimentalWarning)
                fig = _draw(plot, ostudy, varying, target)
                try:
                    _restyle(fig, name)
                    if not (plot == "contour" and len(varying) > 2):  # its colorbar took room from a grid of axes
                        fig.set_layout_engine("tight")
                    written += save_figure(fig, study.dir / f"joint_{plot}{suffix}")
                finally:
                    plt.close(fig)
    for stale in study.dir.glob("joint_*"):  # figures of an earlier build this one did not draw
        if stale.suffix in (".png", ".pdf") and stale not in written:
            stale.unlink(missing_ok=True)
    return written, "; ".join(reasons)


def describe(filename: str) -> str:
    """What ``joint_<plot>[_<dataset>].png/.pdf`` shows, for ``REPORT.md``."""
    stem = filename.rsplit(".", 1)[0].removeprefix("joint_")
    plot, _, dataset = stem.partition("_")
    what = {"contour": "the study metric (mean over seeds) over each pair of searched keys, interpolated",
            "parallel": "parallel coordinates: one line per configuration, coloured by the study metric",
            "history": "each configuration's study metric (mean over seeds) in run order, and the best so far"}
    return what.get(plot, "") + (f" ({dataset})" if dataset and plot in what else "")


__all__ = ["Configuration", "PLOTS", "configurations", "describe", "optuna_study", "write_joint"]
