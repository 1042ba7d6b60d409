"""The confirmation on fresh seeds (the space's ``confirm``), reported apart from the search.

The search picks a configuration on the seeds it ran, so its best result is biased upwards (the winner's
curse); runs of the chosen configurations on seeds the search never used are an unbiased estimate. Their
records (``phase: confirm``, ``Study.confirmations``) are left out of every search statistic by ``load.py``;
here they get ``confirm.csv`` (one row per confirmation run) and the section that leads ``REPORT.md``: each
confirmed configuration's test F1 on the fresh seeds against its test F1 on the search's seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study.reports.load import Study
from study.reports.render import Block, Code, Heading, Para, Table, write_csv
from study.reports.stats import Spread, spread
from study.reports.values import NA, fmt_display, fmt_float, fmt_mean_std, fmt_value
from study.schema import CONFIRM_PHASE, SEARCH_PHASE, Run, mean_score

CONFIRM_CSV = "confirm.csv"
F1_DIGITS = 4
DIGITS = 2
def confirm_spec(study: Study) -> dict[str, Any] | None:
    """The space's ``confirm`` ({seeds, top}), or None when the study confirms nothing."""
    spec = study.space.get("confirm")
    return spec if isinstance(spec, dict) else None


@dataclass(frozen=True)
class Confirmed:
    """One confirmed configuration: its runs on the search's seeds and on the fresh ones."""

    config: int
    params: dict[str, Any]
    search: tuple[Run, ...]
    fresh: tuple[Run, ...]
    score: float | None
    """Mean score over the search's seeds (``Study.score``): the value Optuna was told, which the choice rests on."""

    @property
    def fresh_test(self) -> Spread:
        return spread([t.test_f1_at_best for t in self.fresh if t.counted])

    @property
    def search_test(self) -> Spread:
        return spread([t.test_f1_at_best for t in self.search if t.counted])


def confirmed(study: Study) -> list[Confirmed]:
    """The confirmed configurations, best search score first (ties by configuration number)."""
    by_config: dict[int, list[Run]] = {}
    for t in study.confirmations:
        by_config.setdefault(t.configuration, []).append(t)
    out = []
    for number, fresh in by_config.items():
        search = tuple(t for t in study.trials if t.configuration == number)
        out.append(Confirmed(number, dict(fresh[0].params), search, tuple(fresh),
                             mean_score([study.score(t) for t in search if t.counted])))
    sign = -1.0 if study.mode == "max" else 1.0
    return sorted(out, key=lambda c: (c.score is None, sign * (c.score or 0.0), c.config))


def write_confirm_csv(study: Study) -> Path:
    """``confirm.csv``: one row per confirmation run, by configuration then seed."""
    header = ["trial_id", "configuration", "status", *study.searched, "seed", "best_dev_f1", "best_epoch",
              "test_f1_at_best"]
    rows = [[t.trial_id, str(c.config), t.status, *(fmt_value(t.value(k)) for k in study.searched),
             "" if t.seed is None else str(t.seed), fmt_float(t.best_dev_f1, F1_DIGITS),
             "" if t.best_epoch is None else str(t.best_epoch), fmt_float(t.test_f1_at_best, F1_DIGITS)]
            for c in confirmed(study) for t in sorted(c.fresh, key=lambda t: (t.seed is None, t.seed or 0))]
    return write_csv(study.dir / CONFIRM_CSV, header, rows)


def _params_text(study: Study, params: dict[str, Any]) -> str:
    return ", ".join(f"`{k}` = {fmt_display(params.get(k))}" for k in study.searched) or "the base config"


def _spread_text(s: Spread) -> str:
    return NA if s.n == 0 else f"{fmt_mean_std(s.mean, s.std, DIGITS)} (n={s.n})"


def confirm_blocks(study: Study) -> list[Block]:
    """The section that leads ``REPORT.md`` when the study confirms; none otherwise."""
    spec = confirm_spec(study)
    if spec is None and not study.confirmations:
        return []
    fresh_seeds = list((spec or {}).get("seeds") or sorted({t.seed for t in study.confirmations if t.seed is not None}))
    blocks: list[Block] = [Heading(2, "Confirmation on fresh seeds")]
    found = confirmed(study)
    if not found:
        return blocks + [Para(f"The confirmation on fresh seeds {fresh_seeds} has not run yet: it starts once every "
                              f"configuration of the search has ended (`--resume` continues an interrupted study).")]
    rows = []
    for c in found:
        seeds = sorted(t.seed for t in c.search if t.seed is not None)
        score = NA if c.score is None else f"{c.score:.{DIGITS}f}"
        text = (f"Confirmed on fresh seeds {fresh_seeds}: configuration {c.config} ({_params_text(study, c.params)}) "
                f"chosen by mean `{study.metric}` over search seeds {seeds} ({score}): test F1 "
                f"{_spread_text(c.fresh_test)} on the fresh seeds, against {_spread_text(c.search_test)} on the "
                f"search seeds.")
        missing = [t.trial_id for t in c.fresh if not t.counted]
        if missing:
            text += f" Without a result: {', '.join(f'`{m}`' for m in missing)}."
        blocks.append(Para(text))
        rows += [[str(c.config), SEARCH_PHASE, ", ".join(map(str, seeds)), str(c.search_test.n),
                  fmt_mean_std(c.search_test.mean, c.search_test.std, DIGITS),
                  fmt_mean_std(*_dev(c.search), DIGITS)],
                 [str(c.config), CONFIRM_PHASE, ", ".join(str(t.seed) for t in c.fresh if t.seed is not None),
                  str(c.fresh_test.n), fmt_mean_std(c.fresh_test.mean, c.fresh_test.std, DIGITS),
                  fmt_mean_std(*_dev(c.fresh), DIGITS)]]
    blocks.append(Para("Test F1 at each run's best dev epoch, mean ± std over seeds (n/a for one seed). The search "
                       "chose on the search seeds, so its own numbers lean high; the fresh seeds did not take part "
                       f"in the choice. Every run: [{CONFIRM_CSV}]({CONFIRM_CSV})."))
    blocks.append(Table(["configuration", "phase", "seeds", "n", "test F1 (%)", "dev F1 (%)"], rows, "lllrcc"))
    blocks.append(Para("Train the confirmation runs again, each as it ran (from the repository root):"))
    blocks.append(Code("\n".join(study.rerun_command(t) for c in found for t in c.fresh)))
    return blocks


def _dev(trials: tuple[Run, ...]) -> tuple[float, float]:
    s = spread([t.best_dev_f1 for t in trials if t.counted])
    return s.mean, s.std
