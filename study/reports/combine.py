"""``report.py --combine A B ... --out DIR``: several studies as one paper figure and one table.

Writes into ``DIR``:

* ``sensitivity_1col.png/.pdf`` (3.5 in wide) and ``sensitivity_2col.png/.pdf`` (7.2 in): test F1 against each
  searched key the studies share, one panel per study (``--panels study``), per dataset (``dataset``: the
  studies of one ``data.name`` as curves of one panel) or per key (``key``: every study a curve); one y axis
  shared by all panels; mean ± std over seeds (pooled over a study's other keys), single runs as dots,
  * where the value differs from the study's reference value (paired t-test, Holm; ``significance.py``);
* ``summary.csv``: every study's ``summary.csv`` rows under a ``study`` column (and ``data.name``);
* ``table.md`` and ``table.tex``: test F1 per value of the shared keys (rows) and study (columns), the best
  value of each column in bold;
* ``REPORT.md`` and ``REPORT.html``: what was combined, the table and the figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from model.fileio import atomic_write_text
from study.reports.figures import (FONT_PT, ONE_COLUMN_IN, SMALL_FONT_PT, STARS_NOTE, TWO_COLUMN_IN, mark_significance,
                                   paper_style, save_figure)
from study.reports.load import ReportError, Study
from study.reports.render import (Block, Bullets, Heading, Image, Para, Table, best_in_column, latex_table,
                                  markdown_table, tex_escape, tex_label, write_csv, write_page)
from study.reports.significance import keys_tests
from study.reports.studies import (DATASET_KEY, check_out, common_keys, curve, dataset, labels, load_studies,
                                   numeric, ordered_values, pooled_test)
from study.reports.tables import SUMMARY_STATS, summary_rows
from study.reports.values import (display_values, fmt_display, fmt_mean_std, fmt_value, listed_values, order_key,
                                  reference_value)

PANELS = ("study", "dataset", "key")
WIDTHS_IN = {"1col": ONE_COLUMN_IN, "2col": TWO_COLUMN_IN}
MAX_COLUMNS = {"1col": 2, "2col": 4}
PANEL_HEIGHT_IN = 1.7
LEGEND_HEIGHT_IN = 0.45
MAX_LINE_POINTS = 12
"""A key with more distinct values than this (a range search) is drawn as single runs, without a line."""
DIGITS = 2
OPTION = "--combine"


@dataclass(frozen=True)
class Panel:
    title: str
    key: str
    members: tuple[int, ...]
    """Indices of the studies drawn in this panel."""


def panels(studies: Sequence[Study], keys: Sequence[str], names: Sequence[str], by: str) -> list[Panel]:
    out = []
    for key in keys:
        suffix = f" · {key}" if len(keys) > 1 and by != "key" else ""
        if by == "study":
            out += [Panel(f"{names[i]}{suffix}", key, (i,)) for i in range(len(studies))]
        elif by == "dataset":
            sets = list(dict.fromkeys(dataset(s) for s in studies))
            out += [Panel(f"{d}{suffix}", key, tuple(i for i, s in enumerate(studies) if dataset(s) == d))
                    for d in sets]
        else:
            out.append(Panel(key, key, tuple(range(len(studies)))))
    return out


def draw(studies: Sequence[Study], names: Sequence[str], layout: Sequence[Panel], width: str, stem: Path) -> list[Path]:
    with paper_style():
        return save_figure(figure(studies, names, layout, width), stem)


def figure(studies: Sequence[Study], names: Sequence[str], layout: Sequence[Panel], width: str):  # -> Figure
    """The panels of ``layout`` in rows of at most ``MAX_COLUMNS[width]``, one y axis shared by all."""
    from matplotlib.figure import Figure

    ncols = min(len(layout), MAX_COLUMNS[width])
    nrows = math.ceil(len(layout) / ncols)
    multi = any(len(p.members) > 1 for p in layout)
    with paper_style():
        fig = Figure(figsize=(WIDTHS_IN[width], nrows * PANEL_HEIGHT_IN + LEGEND_HEIGHT_IN), layout="constrained")
        axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False)
        handles: dict[str, Any] = {}
        starred = False
        for n, panel in enumerate(layout):
            ax = axes[n // ncols][n % ncols]
            members = [studies[i] for i in panel.members]
            values = ordered_values(members, panel.key)
            category = not numeric(values)
            position = {fmt_value(v): (float(j) if category else float(v)) for j, v in enumerate(values)}
            for i in panel.members:
                color = f"C{i % 10}"
                points = curve(studies[i], panel.key)
                runs = [(position[fmt_value(t.value(panel.key))], t.test_f1_at_best) for t in studies[i].counted]
                ax.scatter([x for x, _ in runs], [y for _, y in runs], s=4, color=color, alpha=0.3, linewidths=0,
                           zorder=1)
                if len(points) <= MAX_LINE_POINTS:
                    xs = np.array([position[fmt_value(p.value)] for p in points])
                    mean = np.array([p.test.mean for p in points])
                    std = np.array([p.test.std for p in points])
                    ax.fill_between(xs, mean - std, mean + std, color=color, alpha=0.15, linewidth=0, zorder=2)
                    (line,) = ax.plot(xs, mean, color=color, marker="o", zorder=3)
                    handles.setdefault(names[i], line)
                    marks = [(position[fmt_value(p.value)], p.top, p.paired.stars if p.paired else "") for p in points]
                    mark_significance(ax, marks, color)
                    starred = starred or any(m[2] for m in marks)
                ref = reference_value(panel.key, studies[i].space)
                if fmt_value(ref) in position:
                    ax.axvline(position[fmt_value(ref)], color=color if multi else "0.35", linestyle=":",
                               linewidth=0.8, zorder=0)
            shown = display_values(values)
            if category:
                ax.set_xticks(range(len(values)), [shown[fmt_value(v)] for v in values],
                              rotation=30 if sum(len(shown[fmt_value(v)]) for v in values) > 20 else 0,
                              ha="right" if sum(len(shown[fmt_value(v)]) for v in values) > 20 else "center")
                ax.set_xlim(-0.5, len(values) - 0.5)
            elif len(values) <= MAX_LINE_POINTS:
                ax.set_xticks([float(v) for v in values], [shown[fmt_value(v)] for v in values])
            ax.set_title(panel.title, fontsize=FONT_PT)
            ax.set_xlabel(panel.key)
            if n % ncols == 0:
                ax.set_ylabel("test F1 (%)")
            ax.grid(True, linewidth=0.3, alpha=0.5)
        for n in range(len(layout), nrows * ncols):
            axes[n // ncols][n % ncols].set_visible(False)
        note = "line: mean; band: ± std over seeds;\ndots: runs; dotted: reference" + (f"; {STARS_NOTE}" if starred else "")
        if multi:
            fig.legend(list(handles.values()), list(handles), loc="outside upper center", ncol=min(len(handles), 4),
                       frameon=False, title=note, title_fontsize=SMALL_FONT_PT)
        else:
            fig.suptitle(note, fontsize=SMALL_FONT_PT)
        return fig


def write_summary(studies: Sequence[Study], names: Sequence[str], out: Path) -> Path:
    keys = list(dict.fromkeys(k for s in studies for k in s.searched))
    with_dataset = DATASET_KEY not in keys
    rows = []
    for s, name in zip(studies, names):
        for row in summary_rows(s):
            values = dict(zip(s.searched, row[:len(s.searched)]))
            rows.append([name, *([dataset(s)] if with_dataset else []), *(values.get(k, "") for k in keys),
                         *row[len(s.searched):]])
    return write_csv(out / "summary.csv", ["study", *([DATASET_KEY] if with_dataset else []), *keys, *SUMMARY_STATS],
                     rows)


def table(studies: Sequence[Study], names: Sequence[str], keys: Sequence[str]) -> Table:
    """Rows: the values of ``keys`` any study ran; columns: studies; cells: test F1 mean ± std with stars."""
    configs: dict[tuple[str, ...], tuple[Any, ...]] = {}
    tests = []
    for s in studies:
        groups, paired, _ = keys_tests(s, keys)
        tests.append({tuple(fmt_value(v) for v in g.values): p for g, p in zip(groups, paired)})
        for g in groups:
            configs.setdefault(tuple(fmt_value(v) for v in g.values), g.values)
    listed = [listed_values(studies[0].search_spec(k)) for k in keys]
    order = sorted(configs, key=lambda c: tuple(order_key(k, v, lst) for k, v, lst in zip(keys, configs[c], listed)))
    shown = [display_values(configs[c][i] for c in order) for i in range(len(keys))]
    rows, means = [], [[None] * len(order) for _ in studies]
    for r, c in enumerate(order):
        cells = [shown[i][c[i]] for i in range(len(keys))]
        for j, s in enumerate(studies):
            sp = pooled_test(s, keys, configs[c])
            if sp.n == 0:
                cells.append("—")
                continue
            means[j][r] = sp.mean
            p = tests[j].get(c)
            cells.append(fmt_mean_std(sp.mean, sp.std, DIGITS) + (p.stars if p else ""))
        rows.append(cells)
    bold = set()
    for j, column in enumerate(means):
        best = best_in_column(column, "max")
        if best is not None:
            bold.add((best, len(keys) + j))
    head_tex = [*(rf"\texttt{{{tex_escape(k)}}}" for k in keys),
                *(rf"{tex_escape(n)} ({tex_escape(dataset(s))})" for n, s in zip(names, studies))]
    return Table([*keys, *(f"{n} ({dataset(s)})" for n, s in zip(names, studies))], rows,
                 "l" * len(keys) + "c" * len(studies), frozenset(bold), head_tex)


def combine(dirs: Sequence[Path], out: Path, by: str = "study") -> list[Path]:
    if by not in PANELS:
        raise ValueError(f"--panels {by!r}; allowed: {', '.join(PANELS)}")
    if len(dirs) < 2:
        raise ReportError(f"{OPTION} needs at least two study folders, got {len(dirs)}.")
    studies = load_studies(dirs, OPTION)
    check_out(out, studies, OPTION)
    keys = common_keys(studies, OPTION)
    names = labels(studies)
    out.mkdir(parents=True, exist_ok=True)
    layout = panels(studies, keys, names, by)
    written = []
    for width in WIDTHS_IN:
        written += draw(studies, names, layout, width, out / f"sensitivity_{width}")
    written.append(write_summary(studies, names, out))
    tab = table(studies, names, keys)
    refs = "; ".join(f"{n}: " + ", ".join(f"{k} = {fmt_display(reference_value(k, s.space))}" for k in keys)
                     for n, s in zip(names, studies))
    caption_md = (f"Test F1 (%) as mean ± std over seeds (n/a for one seed; — not run), by "
                  f"{', '.join(f'`{k}`' for k in keys)}{' (other searched keys pooled)' if any(len(s.searched) > len(keys) for s in studies) else ''}. "
                  f"Best of each study in bold. * p(Holm) < 0.05, ** < 0.01, *** < 0.001 against the study's "
                  f"reference ({refs}): paired t-test over seeds, Holm-adjusted within the study.")
    written.append(atomic_write_text(out / "table.md", "\n".join([caption_md, "", *markdown_table(tab)]) + "\n"))
    caption_tex = (r"Test F1 (\%) as mean $\pm$ std over seeds, by " + ", ".join(rf"\texttt{{{tex_escape(k)}}}" for k in keys)
                   + r". Best of each study in bold. * $p_\mathrm{Holm}<0.05$, ** $<0.01$, *** $<0.001$ against "
                   r"the study's reference (" + tex_escape(refs) + r"): paired t-test over seeds.")
    written.append(atomic_write_text(out / "table.tex", latex_table(tab, caption_tex, f"tab:{tex_label('-'.join(keys))}")))
    blocks: list[Block] = [
        Heading(1, "Combined studies"),
        Bullets([f"`{n}`: `{s.dir}` ({dataset(s)}, {len(s.counted)} trials with a result, searched "
                 f"{', '.join(f'`{k}`' for k in s.searched)})" for n, s in zip(names, studies)]),
        Para(f"Panels by {by}; shared key(s): {', '.join(f'`{k}`' for k in keys)}."),
        Heading(2, "Table"), Para(caption_md), tab,
        Heading(2, "Figure"), Image(out / "sensitivity_2col.png", "test F1 against the shared key(s), two-column width"),
        Heading(2, "Files"),
        Bullets([f"[{p.name}]({p.name})" for p in written]
                + ["[REPORT.md](REPORT.md), [REPORT.html](REPORT.html): this page"]),
    ]
    return written + write_page(out, "Combined studies", blocks)
