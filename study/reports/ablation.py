"""``ablation.csv/.md/.tex``: the paper's ablation table from a study that searches ``i2srm.ablation``.

Rows follow the method page's order (``model.config.ABLATIONS``). Each row is compared with
the full model on the same seeds: difference of mean test F1, a paired t-test
(``scipy.stats.ttest_rel``) and, from ``MIN_WILCOXON_PAIRS`` pairs on, the Wilcoxon signed-rank
test. If other keys are searched too, each of their configurations gets its own block of
rows, compared with the full model of that block.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from scipy import stats

from model.fileio import atomic_write_text
from study.reports.files import write_csv
from study.reports.load import Study
from study.reports.stats import Group, Spread, group_trials
from study.reports.values import fmt_float, fmt_value

KEY = "i2srm.ablation"
FULL = "full"
MIN_PAIRS = 2
MIN_WILCOXON_PAIRS = 6
"""Below this many seed pairs the signed-rank test cannot reach p < 0.05; it is reported as n/a."""
P_DIGITS = 3
TABLE_DIGITS = 2
NA = "n/a"


@dataclass(frozen=True)
class Row:
    others: tuple[Any, ...]
    ablation: str
    test: Spread
    dev: Spread
    delta_test: float | None
    n_paired: int
    p_ttest: float | None
    p_wilcoxon: float | None
    best: bool = False


def paired_tests(row: Group, full: Group) -> tuple[int, float | None, float | None]:
    """(pairs, t-test p, Wilcoxon p) on the test F1 of the seeds both ran; None where not defined."""
    a, b = row.by_seed(), full.by_seed()
    seeds = sorted(s for s in a if s is not None and s in b)
    x = [a[s].test_f1_at_best for s in seeds]
    y = [b[s].test_f1_at_best for s in seeds]
    if len(seeds) < MIN_PAIRS:
        return len(seeds), None, None
    with warnings.catch_warnings():  # identical runs: scipy warns and returns nan, reported as n/a
        warnings.simplefilter("ignore")
        p_t = float(stats.ttest_rel(x, y).pvalue)
        p_w = None
        if len(seeds) >= MIN_WILCOXON_PAIRS:
            try:
                p_w = float(stats.wilcoxon(x, y).pvalue)
            except ValueError:  # every difference is zero
                p_w = None
    clean = lambda p: None if p is None or math.isnan(p) else p  # noqa: E731
    return len(seeds), clean(p_t), clean(p_w)


def ablation_rows(study: Study) -> tuple[list[str], list[Row]]:
    others = [k for k in study.searched if k != KEY]
    rows: list[Row] = []
    groups = group_trials(study, [*others, KEY])
    for group_values in dict.fromkeys(g.values[:-1] for g in groups):
        block = [g for g in groups if g.values[:-1] == group_values]
        full = next((g for g in block if g.values[-1] == FULL), None)
        start = len(rows)
        for g in block:
            test = g.test
            if full is not None and g is not full:
                n_paired, p_t, p_w = paired_tests(g, full)
                delta = test.mean - full.test.mean
            else:
                n_paired, p_t, p_w, delta = 0, None, None, (0.0 if g is full else None)
            rows.append(Row(group_values, str(g.values[-1]), test, g.dev, delta, n_paired, p_t, p_w))
        if len(rows) > start:  # bold the best test F1 of the block (first of equals)
            best = max(range(start, len(rows)), key=lambda i: rows[i].test.mean)
            rows[best] = replace(rows[best], best=True)
    return others, rows


def _p(p: float | None, table: bool) -> str:
    if p is None:
        return NA
    if table and p < 0.5 * 10 ** -P_DIGITS:
        return f"<{10 ** -P_DIGITS:.{P_DIGITS}f}"
    return f"{p:.{P_DIGITS}f}"


def _pm(s: Spread) -> str:
    return f"{s.mean:.{TABLE_DIGITS}f} ± {s.std:.{TABLE_DIGITS}f}"


def _delta(row: Row) -> str:
    if row.ablation == FULL or row.delta_test is None:
        return "—"
    return f"{row.delta_test:+.{TABLE_DIGITS}f}"


def write_ablation(study: Study) -> list[Path]:
    others, rows = ablation_rows(study)
    if not rows:
        return []

    csv_rows = [[*(fmt_value(v) for v in r.others), r.ablation, str(r.test.n), fmt_float(r.test.mean),
                 fmt_float(r.test.std), fmt_float(r.dev.mean), fmt_float(r.dev.std),
                 "" if r.delta_test is None else fmt_float(r.delta_test), str(r.n_paired),
                 _p(r.p_ttest, False), _p(r.p_wilcoxon, False)] for r in rows]
    csv_path = write_csv(study.dir / "ablation.csv",
                         [*others, KEY, "n", "test_f1_mean", "test_f1_std", "dev_f1_mean", "dev_f1_std",
                          "delta_test_f1", "n_paired", "p_ttest", "p_wilcoxon"], csv_rows)

    head = [*others, KEY, "n", "test F1 (%)", "dev F1 (%)", "Δ test", "p (t-test)", "p (Wilcoxon)"]
    cells = [[*(fmt_value(v) for v in r.others), r.ablation, str(r.test.n), _pm(r.test), _pm(r.dev),
              _delta(r), _p(r.p_ttest, True), _p(r.p_wilcoxon, True)] for r in rows]
    md = [f"Ablation of I2SRM, study `{study.name}` ({study.base_config.get('data.name', '?')}): mean ± std over "
          f"seeds; Δ is test F1 minus the full model's; p from paired tests over the seeds both ran "
          f"(Wilcoxon from {MIN_WILCOXON_PAIRS} pairs). Best test F1 in bold.", "",
          "| " + " | ".join(head) + " |", "|" + "|".join("---" if i < len(others) + 1 else "---:"
                                                      for i in range(len(head))) + "|"]
    for r, c in zip(rows, cells):
        md.append("| " + " | ".join(f"**{x}**" if r.best else x for x in c) + " |")
    md_path = atomic_write_text(study.dir / "ablation.md", "\n".join(md) + "\n")
    tex_path = atomic_write_text(study.dir / "ablation.tex", _latex(study, others, rows, cells))
    return [csv_path, md_path, tex_path]


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex_escape(text: str) -> str:
    """Character by character, so that an inserted backslash is not escaped again."""
    out = "".join(_TEX.get(c, c) for c in text)
    return out.replace("±", r"$\pm$").replace("—", "---").replace("<", r"$<$")


def _latex(study: Study, others: Sequence[str], rows: Sequence[Row], cells: list[list[str]]) -> str:
    unit_tex = r"\%"
    head = [*(rf"\texttt{{{_tex_escape(k)}}}" for k in others), "Ablation", "$n$", f"Test F1 ({unit_tex})",
            f"Dev F1 ({unit_tex})", r"$\Delta$ test", r"$p$ (t-test)", r"$p$ (Wilcoxon)"]
    label = "".join(c if c.isalnum() or c in "-_:" else "-" for c in study.name)
    lines = [
        r"% Generated by study/report.py from the stored trials; needs \usepackage{booktabs}.",
        r"\begin{table}[t]",
        r"  \centering",
        rf"  \caption{{Ablation of I2SRM on {_tex_escape(str(study.base_config.get('data.name', '?')))}: "
        rf"F1 ({unit_tex}) as mean $\pm$ std over seeds. $\Delta$: test F1 minus the full model's. "
        rf"$p$: paired t-test and Wilcoxon signed-rank test (from {MIN_WILCOXON_PAIRS} seed pairs) "
        rf"of test F1 against the full model on the same seeds. Best test F1 in bold.}}",
        rf"  \label{{tab:ablation-{label}}}",
        r"  \begin{tabular}{" + "l" * (len(others) + 1) + "rccrrr}",
        r"    \toprule",
        "    " + " & ".join(head) + r" \\",
        r"    \midrule",
    ]
    for r, c in zip(rows, cells):
        tex = [_tex_escape(x) for x in c]
        lines.append("    " + " & ".join(rf"\textbf{{{x}}}" if r.best else x for x in tex) + r" \\")
    lines += [r"    \bottomrule", r"  \end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
