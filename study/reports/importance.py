"""``importance.csv`` and ``importance.png/.pdf``: which searched key moves the study metric most.

Optuna's fANOVA evaluator (a random forest) on the configurations of the stored records: each configuration's
value is the mean over its seeds of the study metric at each trial's best epoch. Trials stopped early by the
scheduler (``pruned``) are included at the budget they reached (their best epoch among those they ran), so an
ASHA study is not judged on its survivors alone; the CSV counts them. The forest is fitted with
``FANOVA_SEEDS`` seeds and each key's importance is the mean over them, with their standard deviation as its
spread. The estimate rests on ``n_configurations`` points: below ``MIN_CONFIGURATIONS`` none is made (the
CSV's ``note`` says why), below ``FEW_CONFIGURATIONS`` REPORT.md warns that it is fragile.

Why the records and not ``optuna.db``: the Optuna study holds a configuration with any seed stopped early as
PRUNED without a value (``study/search.py``), so an importance over it would silently drop those.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from study.reports.figures import new_figure, paper_style, save_figure
from study.reports.load import Study
from study.reports.render import write_csv
from study.reports.stats import group_trials
from study.reports.values import fmt_float
from study.schema import mean_score

MIN_CONFIGURATIONS = 4
"""Fewer configurations than this give no meaningful forest; the CSV says so instead."""
FEW_CONFIGURATIONS = 10
"""Below this many configurations REPORT.md warns that the importance is fragile."""
FANOVA_SEEDS = (0, 1, 2, 3, 4)
FANOVA_TREES, FANOVA_DEPTH = 16, 8
"""Forest size per seed. Optuna's default (64 trees of depth 64) took 138 s for the 5 seeds on a 1,000-configuration
study; 16 trees of depth 8 took 4.5 s and gave the same importances to 3 decimals (benchmarks/scale.py's study,
docs/performance.md); depth 8 still splits 256 ways, more than a study has configurations per key."""
HEADER = ["param", "importance", "importance_std", "n_configurations", "n_trials", "n_pruned", "note"]


@dataclass(frozen=True)
class Importance:
    mean: dict[str, float] = field(default_factory=dict)
    """Importance per dotted key (mean over the forest seeds), most important first; empty when not computed."""
    std: dict[str, float] = field(default_factory=dict)
    n_configurations: int = 0
    n_trials: int = 0
    n_pruned: int = 0
    note: str = ""


def compute_importance(study: Study) -> Importance:
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    optuna.logging.set_verbosity(logging.WARNING)
    keys = list(study.searched)
    points = [(g, value) for g in group_trials(study, keys)
              if (value := mean_score([study.score(t) for t in g.trials])) is not None]
    n_trials = sum(len(g.trials) for g, _ in points)
    n_pruned = sum(t.status == "pruned" for g, _ in points for t in g.trials)

    def counted(mean: dict[str, float] | None = None, std: dict[str, float] | None = None,
                note: str = "") -> Importance:
        return Importance(mean or {}, std or {}, n_configurations=len(points), n_trials=n_trials, n_pruned=n_pruned,
                          note=note)

    if len(keys) < 2 or len(points) < MIN_CONFIGURATIONS:
        return counted(note=f"too few configurations for an importance estimate: {len(points)} with a "
                          f"result over {len(keys)} searched key(s); at least {MIN_CONFIGURATIONS} configurations "
                          f"and 2 keys needed")
    missing = [k for k in keys if k not in study.params]
    if missing:
        return counted(note=f"no search range stored for {', '.join(missing)} in study.json")
    dists = {k: study.params[k].distribution() for k in keys}
    fixed = [k for i, k in enumerate(keys) if len({repr(g.values[i]) for g, _ in points}) < 2]
    if fixed:
        return counted(note=f"parameter(s) {', '.join(fixed)} took a single value in the trials")
    ostudy = optuna.create_study(direction="maximize" if study.mode == "max" else "minimize")
    try:
        for g, value in points:
            ostudy.add_trial(optuna.trial.create_trial(params=dict(zip(keys, g.values)), distributions=dists,
                                                       value=value))
        runs = [get_param_importances(ostudy, params=keys, evaluator=FanovaImportanceEvaluator(
                    n_trees=FANOVA_TREES, max_depth=FANOVA_DEPTH, seed=s)) for s in FANOVA_SEEDS]
    except (ValueError, RuntimeError) as e:  # a value outside its stored range, a degenerate forest
        return counted(note=f"fANOVA failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    mean = {k: float(np.mean([r[k] for r in runs])) for k in keys}
    std = {k: float(np.std([r[k] for r in runs], ddof=1)) for k in keys}
    ordered = dict(sorted(mean.items(), key=lambda kv: (-kv[1], kv[0])))
    pruned = (f", {n_pruned} of them stopped early and counted at the epoch they reached" if n_pruned
              else "")
    note = (f"fANOVA, mean ± std over forest seeds {FANOVA_SEEDS[0]}-{FANOVA_SEEDS[-1]}, on {len(points)} "
            f"configurations ({n_trials} trials{pruned}); target: mean {study.metric} over seeds")
    return counted(ordered, {k: std[k] for k in ordered}, note)


def write_importance(study: Study) -> list[Path]:
    imp = compute_importance(study)
    counts = [str(imp.n_configurations), str(imp.n_trials), str(imp.n_pruned)]
    if not imp.mean:
        for stale in ("importance.png", "importance.pdf"):  # from an earlier build with more trials
            (study.dir / stale).unlink(missing_ok=True)
        return [write_csv(study.dir / "importance.csv", HEADER, [["", "", "", *counts, imp.note]])]
    out = [write_csv(study.dir / "importance.csv", HEADER,
                     [[k, fmt_float(v), fmt_float(imp.std[k]), *counts, imp.note] for k, v in imp.mean.items()])]
    with paper_style():
        fig = new_figure(height_in=max(1.2, 0.6 + 0.28 * len(imp.mean)))
        ax = fig.add_subplot()
        keys = list(imp.mean)[::-1]  # most important on top
        ax.barh(keys, [imp.mean[k] for k in keys], xerr=[imp.std[k] for k in keys], color="C0", height=0.6,
                error_kw={"elinewidth": 0.8, "capsize": 2})
        ax.set_xlabel(f"importance for {study.metric} (fANOVA, {imp.n_configurations} configurations)")
        ax.set_xlim(0, 1)
        ax.grid(True, axis="x", linewidth=0.3, alpha=0.5)
        out += save_figure(fig, study.dir / "importance")
    return out


def read_importance_counts(study_dir: Path) -> tuple[int, str] | None:
    """(configurations, note) of the ``importance.csv`` a build just wrote, for REPORT.md; None without one."""
    import csv

    path = study_dir / "importance.csv"
    if not path.is_file():
        return None
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or not rows[0].get("n_configurations", "").isdigit():
        return None
    return int(rows[0]["n_configurations"]), rows[0].get("note", "")
