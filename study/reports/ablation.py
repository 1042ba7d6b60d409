"""``ablation.csv/.md/.tex``: the paper's ablation table from a study that searches ``i2srm.ablation``.

Rows follow docs/method.md's order (``model.config.ABLATIONS``). Each row is compared with
the full model on the same seeds (``study.reports.significance``): difference of mean test F1, the
paired t-test with Holm's adjustment over the rows of a block, the exact sign-flip test, Cohen's d_z and
a bootstrap 95% interval of the paired difference, and, from ``MIN_WILCOXON_PAIRS`` pairs on, the
Wilcoxon signed-rank test. If other keys are searched too, each of their configurations gets its own
block of rows, compared with the full model of that block.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from study.reports.load import Study
from study.reports.registry import ABLATION_KEY as KEY
from study.reports.render import Table, tex_code, tex_escape, tex_label, write_csv, write_table
from study.reports.significance import MIN_PAIRS, Paired, compare_groups, pair_trials
from study.reports.stats import Group, Spread, group_trials
from study.reports.values import fmt_display, fmt_float, fmt_mean_std, fmt_number, fmt_p, fmt_value

FULL = "full"
MIN_WILCOXON_PAIRS = 6
"""Below this many seed pairs the signed-rank test cannot reach p < 0.05; it is reported as n/a."""
P_DIGITS = 3
TABLE_DIGITS = 2


@dataclass(frozen=True)
class Row:
    others: tuple[Any, ...]
    ablation: str
    test: Spread
    dev: Spread
    delta_test: float | None
    paired: Paired | None
    p_wilcoxon: float | None
    best: bool = False

    @property
    def n_paired(self) -> int:
        return self.paired.n_paired if self.paired else 0

    @property
    def p_ttest(self) -> float | None:
        return self.paired.p_value if self.paired else None


def wilcoxon(row: Group, full: Group) -> float | None:
    """The signed-rank test on the test F1 of the seeds both ran, from ``MIN_WILCOXON_PAIRS`` pairs."""
    from scipy import stats

    x, y = pair_trials(row.trials, full.trials, ())
    if len(x) < max(MIN_PAIRS, MIN_WILCOXON_PAIRS):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            p = float(stats.wilcoxon(x, y).pvalue)
        except ValueError:  # every difference is zero
            return None
    return None if math.isnan(p) else p


def ablation_rows(study: Study) -> tuple[list[str], list[Row]]:
    others = [k for k in study.searched if k != KEY]
    rows: list[Row] = []
    groups = group_trials(study, [*others, KEY])
    for group_values in dict.fromkeys(g.values[:-1] for g in groups):
        block = [g for g in groups if g.values[:-1] == group_values]
        full = next((g for g in block if g.values[-1] == FULL), None)
        tests = compare_groups(block, full)  # one Holm family per block
        start = len(rows)
        for g, paired in zip(block, tests):
            test = g.test
            delta = test.mean - full.test.mean if full is not None else None
            p_w = wilcoxon(g, full) if full is not None and g is not full else None
            rows.append(Row(group_values, str(g.values[-1]), test, g.dev, delta, paired, p_w))
        if len(rows) > start:  # bold the best test F1 of the block (first of equals)
            best = max(range(start, len(rows)), key=lambda i: rows[i].test.mean)
            rows[best] = replace(rows[best], best=True)
    return others, rows


def _delta(row: Row) -> str:
    if row.ablation == FULL or row.delta_test is None:
        return "—"
    return f"{row.delta_test:+.{TABLE_DIGITS}f}" + (row.paired.stars if row.paired else "")


def _stat(row: Row, name: str) -> str:
    return fmt_number(getattr(row.paired, name)) if row.paired else ""


def write_ablation(study: Study) -> list[Path]:
    others, rows = ablation_rows(study)
    if not rows:
        return []

    csv_rows = [[*(fmt_value(v) for v in r.others), r.ablation, str(r.test.n), fmt_float(r.test.mean),
                 fmt_float(r.test.std), fmt_float(r.dev.mean), fmt_float(r.dev.std),
                 "" if r.delta_test is None else fmt_float(r.delta_test), str(r.n_paired),
                 fmt_number(r.p_ttest), _stat(r, "p_holm"), _stat(r, "p_signflip"), _stat(r, "effect_size"),
                 _stat(r, "diff_ci_low"), _stat(r, "diff_ci_high"), fmt_number(r.p_wilcoxon)] for r in rows]
    csv_path = write_csv(study.dir / "ablation.csv",
                         [*others, KEY, "n", "test_f1_mean", "test_f1_std", "dev_f1_mean", "dev_f1_std",
                          "delta_test_f1", "n_paired", "p_value", "p_holm", "p_signflip", "effect_size",
                          "diff_ci_low", "diff_ci_high", "p_wilcoxon"], csv_rows)

    head = [*others, KEY, "n", "test F1 (%)", "dev F1 (%)", "Δ test", "p (t-test)", "p (Holm)", "p (Wilcoxon)"]
    cells = [[*(fmt_display(v) for v in r.others), r.ablation, str(r.test.n),
              fmt_mean_std(r.test.mean, r.test.std, TABLE_DIGITS), fmt_mean_std(r.dev.mean, r.dev.std, TABLE_DIGITS),
              _delta(r), fmt_p(r.p_ttest, P_DIGITS), fmt_p(r.paired.p_holm if r.paired else None, P_DIGITS),
              fmt_p(r.p_wilcoxon, P_DIGITS)] for r in rows]
    align = "l" * (len(others) + 1) + "rccrrrr"
    bold = frozenset((i, j) for i, r in enumerate(rows) if r.best for j in range(len(head)))
    table = Table(head, cells, align, bold, head_tex=[
        *(tex_code(k) for k in others), "Ablation", "$n$", r"Test F1 (\%)", r"Dev F1 (\%)",
        r"$\Delta$ test", r"$p$ (t-test)", r"$p$ (Holm)", r"$p$ (Wilcoxon)"])
    dataset = str(study.base_config.get("data.name", "?"))
    caption_md = (f"Ablation of I2SRM, study `{study.name}` ({dataset}): mean ± std over seeds (n/a for one seed); "
                  f"Δ is test F1 minus the full model's; p from paired tests over the seeds both ran (t-test, "
                  f"Holm-adjusted over the rows; Wilcoxon from {MIN_WILCOXON_PAIRS} pairs); "
                  f"* p(Holm) < 0.05, ** < 0.01, *** < 0.001. Best test F1 in bold.")
    unit_tex = r"\%"
    caption_tex = (rf"Ablation of I2SRM on {tex_escape(dataset)}: "
                   rf"F1 ({unit_tex}) as mean $\pm$ std over seeds. $\Delta$: test F1 minus the full model's. "
                   rf"$p$: paired t-test (Holm-adjusted over the rows) and Wilcoxon signed-rank test (from "
                   rf"{MIN_WILCOXON_PAIRS} seed pairs) of test F1 against the full model on the same seeds; "
                   rf"* $p_\mathrm{{Holm}}<0.05$, ** $<0.01$, *** $<0.001$. Best test F1 in bold.")
    return [csv_path, *write_table(study.dir / "ablation", table, caption_md, caption_tex,
                                   f"tab:ablation-{tex_label(study.name)}")]
