"""``trials.csv`` (one row per trial, failures included) and ``summary.csv`` (one row per configuration)."""

from __future__ import annotations

from pathlib import Path

from study.reports.files import write_csv
from study.reports.load import Study
from study.reports.stats import group_trials
from study.reports.values import fmt_float, fmt_value

F1_DIGITS = 4
SECONDS_DIGITS = 1


def _int(value: int | None) -> str:
    return "" if value is None else str(value)


def write_trials_csv(study: Study) -> Path:
    header = ["trial_id", "status", "error", *study.searched, "seed", "best_dev_f1", "best_epoch",
              "test_f1_at_best", "epochs_run", "wall_seconds", "node"]
    rows = [[t.trial_id, t.status, t.error, *(fmt_value(t.value(k)) for k in study.searched), _int(t.seed),
             fmt_float(t.best_dev_f1, F1_DIGITS), _int(t.best_epoch), fmt_float(t.test_f1_at_best, F1_DIGITS),
             str(t.epochs_run), fmt_float(t.wall_seconds, SECONDS_DIGITS), t.node]
            for t in study.trials]  # already sorted by trial id
    return write_csv(study.dir / "trials.csv", header, rows)


def write_summary_csv(study: Study) -> Path:
    header = [*study.searched, "n", "dev_f1_mean", "dev_f1_std", "dev_f1_ci95",
              "test_f1_mean", "test_f1_std", "test_f1_ci95"]
    rows = []
    for g in group_trials(study, study.searched):
        dev, test = g.dev, g.test
        rows.append([*(fmt_value(v) for v in g.values), str(dev.n),
                     *(fmt_float(x, F1_DIGITS) for x in (dev.mean, dev.std, dev.ci95, test.mean, test.std, test.ci95))])
    return write_csv(study.dir / "summary.csv", header, rows)
