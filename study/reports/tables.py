"""``trials.csv`` (one row per trial, failures included) and ``summary.csv`` (one row per configuration).

``summary.csv`` compares every configuration with the reference configuration (each searched key at the
space's ``reference`` value, else the trainer's default) on the seeds both ran, with the statistics of
``study.reports.significance``: ``reference`` is ``true`` on that row, whose comparison columns stay empty,
as they do where no seeds pair up or no reference configuration ran (below 3 pairs only ``n_paired`` and the
difference are written: no test, no interval). ``interval_halfwidth`` is the half-width of the 95% t-interval
that the space's ``resolve`` reads (``study.reports.intervals``: the paired difference of the study's score from
the reference, else the configuration's own mean; empty below 2 values) and ``resolved`` says whether it is at
most ``resolve``'s width (empty without ``resolve``). A paired comparison's cells are
written here for a CSV (``paired_cells``) and for a reader (``diff_cells``), the same for every report.
"""

from __future__ import annotations

from pathlib import Path

from study.reports.facets import facets
from study.reports.intervals import Interval, fmt_half_width, intervals
from study.reports.load import Study
from study.reports.render import write_csv
from study.reports.significance import Paired, configuration_tests
from study.reports.values import NA, fmt_float, fmt_number, fmt_p, fmt_value

F1_DIGITS = 4
DIGITS = 2
"""Decimals of F1 and its differences where people read them."""
SECONDS_DIGITS = 1
SUMMARY_STATS = ["n", "dev_f1_mean", "dev_f1_std", "dev_f1_ci95", "test_f1_mean", "test_f1_std", "test_f1_ci95",
                 "reference", "n_paired", "test_f1_diff", "diff_ci_low", "diff_ci_high", "effect_size", "p_value",
                 "p_signflip", "p_holm", "interval_halfwidth", "resolved"]
"""The columns of ``summary.csv`` after the searched keys (and of the combined summary)."""


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


def paired_cells(paired: Paired | None) -> list[str]:
    """``n_paired`` .. ``p_holm`` of ``SUMMARY_STATS``; all empty for the reference or without one (None)."""
    if paired is None:
        return [""] * 8
    return [str(paired.n_paired), fmt_float(paired.diff, F1_DIGITS), fmt_float(paired.diff_ci_low, F1_DIGITS),
            fmt_float(paired.diff_ci_high, F1_DIGITS), fmt_number(paired.effect_size), fmt_number(paired.p_value),
            fmt_number(paired.p_signflip), fmt_number(paired.p_holm)]


def interval_cells(interval: Interval | None) -> list[str]:
    """``interval_halfwidth`` and ``resolved`` of ``SUMMARY_STATS``; empty for the reference (None)."""
    if interval is None:
        return ["", ""]
    resolved = "" if interval.resolved is None else "true" if interval.resolved else "false"
    return [fmt_half_width(interval.half_width, F1_DIGITS), resolved]


def diff_cells(p: Paired | None, is_reference: bool = False) -> list[str]:
    """Δ test F1 (with stars), 95% CI, d_z, p (t-test), p (sign-flip), p (Holm); n/a without enough pairs."""
    if is_reference:
        return ["reference", "", "", "", "", ""]
    if p is None or p.diff is None:
        return [NA] * 6
    if p.note:  # too few pairs for a test: the difference, no stars, and the reason instead of the rest
        return [f"{p.diff:+.{DIGITS}f}", f"{NA} ({p.note})", NA, NA, NA, NA]
    ci = NA if p.diff_ci_low is None else f"[{p.diff_ci_low:+.{DIGITS}f}, {p.diff_ci_high:+.{DIGITS}f}]"
    dz = NA if p.effect_size is None else f"{p.effect_size:+.2f}"
    return [f"{p.diff:+.{DIGITS}f}{p.stars}", ci, dz, fmt_p(p.p_value), fmt_p(p.p_signflip), fmt_p(p.p_holm)]


def summary_rows(study: Study) -> list[list[str]]:
    """One row per configuration: the searched values (exact), then ``SUMMARY_STATS``. With ``data.name``
    searched, grouped by dataset, each dataset's configurations compared with its own reference."""
    rows = []
    for _, part in facets(study):
        groups, tests, reference = configuration_tests(part)
        for g, paired, interval in zip(groups, tests, intervals(part, groups, reference)):
            dev, test = g.dev, g.test
            rows.append([*(fmt_value(v) for v in g.values), str(dev.n),
                         *(fmt_float(x, F1_DIGITS) for x in (dev.mean, dev.std, dev.ci95, test.mean, test.std,
                                                             test.ci95)),
                         "true" if g is reference else "false", *paired_cells(paired), *interval_cells(interval)])
    return rows


def write_summary_csv(study: Study) -> Path:
    return write_csv(study.dir / "summary.csv", [*study.searched, *SUMMARY_STATS], summary_rows(study))
