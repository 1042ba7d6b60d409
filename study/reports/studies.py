"""Several stored studies in one report, written into ``DIR`` and never into a study folder.

``report.py --combine A B ... --out DIR``: the studies as one paper figure and one table. Writes

* ``sensitivity_1col.png/.pdf`` (3.5 in wide) and ``sensitivity_2col.png/.pdf`` (7.2 in): test F1 against each
  searched key the studies share, one panel per study (``--panels study``), per dataset (``dataset``: the
  studies of one ``data.name`` as curves of one panel) or per key (``key``: every study a curve); one y axis
  shared by all panels; mean ± std over seeds (pooled over a study's other keys), single runs as dots,
  * where the value differs from the study's reference value (paired t-test, Holm; ``significance.py``);
* ``summary.csv``: every study's ``summary.csv`` rows under a ``study`` column (and ``data.name``);
* ``table.md`` and ``table.tex``: test F1 per value of the shared keys (rows) and study (columns), the best
  value of each column in bold.

``report.py --compare A B --out DIR``: study B against study A, configuration by configuration. A configuration
is a combination of values of the searched keys both studies share; a study that searches more keys is pooled
over them (its runs of one seed averaged). For each configuration both ran: the difference B - A of test F1 over
the seeds both ran, with the paired statistics of ``significance.py`` (t-test, Holm-adjusted over the
configurations, exact sign-flip test, d_z, bootstrap 95% interval). Writes ``compare.csv``, ``compare.md``,
``compare.tex`` and ``compare.png/.pdf`` (both curves against each shared key, 3.5 in wide for one key, 7.2 in
for several). The fixed settings in which the two studies differ (e.g. ``i2srm.variant``) are named in the
captions.

Both read only the stored records (``load.py``), refuse with one line what cannot be put together, and end with
``REPORT.md`` and ``REPORT.html``: what was put together, the table, the figure and the files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from study.reports.facets import dataset
from study.reports.figures import (FONT_PT, ONE_COLUMN_IN, SMALL_FONT_PT, STARS_NOTE, TWO_COLUMN_IN, mark_significance,
                                   paper_style, save_figure)
from study.reports.load import ReportError, Study, load_study
from study.reports.render import (HTML_NAME, MD_NAME, Block, Bullets, Heading, Image, Para, Table, best_in_column,
                                  code_list, tex_code, tex_escape, tex_label, write_csv, write_page, write_table)
from study.reports.significance import Paired, key_tests, keys_tests, pair_trials, paired_test, with_holm
from study.reports.stats import Spread, group_trials, highest_test, spread
from study.reports.tables import F1_DIGITS, SUMMARY_STATS, diff_cells, paired_cells, summary_rows
from study.reports.values import (display_values, fmt_display, fmt_float, fmt_mean_std, fmt_value, is_number,
                                  order_key, reference_value)
from study.space import FACET_KEY

PANELS = ("study", "dataset", "key")
WIDTHS_IN = {"1col": ONE_COLUMN_IN, "2col": TWO_COLUMN_IN}
MAX_COLUMNS = {"1col": 2, "2col": 4}
PANEL_HEIGHT_IN = 1.7
LEGEND_HEIGHT_IN = 0.45
COMPARE_HEIGHT_IN = 2.3
MAX_LINE_POINTS = 12
"""A key with more distinct values than this (a range search) is drawn as single runs, without a line."""
DIGITS = 2
COMPARE_STATS = ["n_a", "test_f1_mean_a", "test_f1_std_a", "n_b", "test_f1_mean_b", "test_f1_std_b", "n_paired",
                 "test_f1_diff", "diff_ci_low", "diff_ci_high", "effect_size", "p_value", "p_signflip", "p_holm"]
"""The columns of ``compare.csv`` after the shared keys."""


# ------------------------------------------------------------------------------------------- reading the studies

def labels(studies: Sequence[Study]) -> list[str]:
    """Each study's name, or ``parent/name`` where two studies share a name."""
    names = [s.name for s in studies]
    return [f"{s.dir.resolve().parent.name}/{s.name}" if names.count(s.name) > 1 else s.name for s in studies]


def open_studies(dirs: Sequence[Path], out: Path, option: str) -> tuple[list[Study], list[str], list[str]]:
    """(the studies, the searched keys they share in the first study's order, their labels), with ``out``
    created. Refused: a folder given twice or that is not a study, a study without a single result, studies
    that share no searched key, and an ``out`` that is or lies inside a study folder (it would mix with or
    overwrite the study's own reports)."""
    seen: dict[Path, Path] = {}
    for d in dirs:
        real = Path(d).resolve()
        if real in seen:
            raise ReportError(f"{option}: {d} is given twice (as {seen[real]} and {d}); name each study once.")
        seen[real] = Path(d)
    studies = [load_study(d) for d in dirs]  # NotAStudy names the folder
    for s in studies:
        if not s.counted:
            raise ReportError(f"{option}: {s.dir} has no completed or pruned trial with a result yet; "
                              f"nothing of it can be drawn.")
    real = Path(out).resolve()
    for s in studies:
        folder = s.dir.resolve()
        if real == folder or folder in real.parents:
            raise ReportError(f"{option}: --out {out} is inside the study folder {s.dir}, whose own reports "
                              f"(summary.csv, REPORT.md, ...) it would overwrite; choose a folder outside every study.")
    if (real / "study.json").is_file():
        raise ReportError(f"{option}: --out {out} is a study folder (it holds study.json); choose another folder.")
    if real.exists() and not real.is_dir():
        raise ReportError(f"{option}: --out {out} exists and is not a folder.")
    keys = [k for k in studies[0].searched if all(k in s.searched for s in studies[1:])]
    if not keys:
        searched = "; ".join(f"{s.dir} searches {', '.join(s.searched) or 'nothing'}" for s in studies)
        raise ReportError(f"{option}: the studies share no searched key ({searched}); combine studies that "
                          f"search the same key, e.g. i2srm.delta.")
    out.mkdir(parents=True, exist_ok=True)
    return studies, keys, labels(studies)


def about(study: Study, more: str = "") -> str:
    """Where a study lies and what it holds, for the list of studies that opens a report."""
    return f"`{study.dir}` ({dataset(study)}, {len(study.counted)} trials with a result{more})"


def ordered_values(studies: Sequence[Study], key: str) -> list[Any]:
    """Every value of ``key`` the studies ran, in the key's natural order (as one study orders them)."""
    values: dict[str, Any] = {}
    for s in studies:
        for g in group_trials(s, [key]):
            values.setdefault(fmt_value(g.values[0]), g.values[0])
    listed = studies[0].listed(key)
    return sorted(values.values(), key=lambda v: order_key(key, v, listed))


def positions(values: Sequence[Any]) -> tuple[dict[str, float], bool]:
    """The x of each value (its own number, or its place for categories) and whether the axis is categorical."""
    category = not (bool(values) and all(is_number(v) for v in values))
    return {fmt_value(v): (float(j) if category else float(v)) for j, v in enumerate(values)}, category


def draw_study(ax: Any, study: Study, key: str, x: dict[str, float], color: str, line: bool = True,
               linestyle: str = "-", label: str | None = None) -> Any:
    """Every run of ``study`` as a dot at its value of ``key`` and, with ``line``, the mean over seeds at each
    value in a ± std band; returns the line (None without one)."""
    runs = [(x[fmt_value(t.value(key))], t.test_f1_at_best) for t in study.counted]
    ax.scatter([p for p, _ in runs], [y for _, y in runs], s=4, color=color, alpha=0.3, linewidths=0, zorder=1)
    if not line:
        return None
    groups = group_trials(study, [key])
    xs = np.array([x[fmt_value(g.values[0])] for g in groups])
    mean, std = np.array([g.test.mean for g in groups]), np.array([g.test.std for g in groups])
    ax.fill_between(xs, mean - std, mean + std, color=color, alpha=0.15, linewidth=0, zorder=2)
    return ax.plot(xs, mean, color=color, marker="o", linestyle=linestyle, zorder=3, label=label)[0]


def write_report(out: Path, title: str, heading: str, intro: Sequence[Block], caption: str, table: Table,
                 figure: Image, written: list[Path]) -> list[Path]:
    """``REPORT.html`` and ``REPORT.md``: ``intro``, the table under its caption, the figure and the files."""
    files = [*(f"[{p.name}]({p.name})" for p in written),
             f"[{MD_NAME}]({MD_NAME}), [{HTML_NAME}]({HTML_NAME}): this page"]
    blocks = [Heading(1, heading), *intro, Heading(2, "Table"), Para(caption), table, Heading(2, "Figure"), figure,
              Heading(2, "Files"), Bullets(files)]
    return written + write_page(out, title, blocks)


# --------------------------------------------------------------------------------------------------- --combine

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
            values = ordered_values([studies[i] for i in panel.members], panel.key)
            position, category = positions(values)
            for i in panel.members:
                color = f"C{i % 10}"
                groups, tests, _ = key_tests(studies[i], panel.key)
                line = draw_study(ax, studies[i], panel.key, position, color, len(groups) <= MAX_LINE_POINTS)
                if line is not None:
                    handles.setdefault(names[i], line)
                    marks = [(position[fmt_value(g.values[0])], highest_test(g.trials), p.stars if p else "")
                             for g, p in zip(groups, tests)]
                    mark_significance(ax, marks, color)
                    starred = starred or any(m[2] for m in marks)
                ref = reference_value(panel.key, studies[i].space)
                if fmt_value(ref) in position:
                    ax.axvline(position[fmt_value(ref)], color=color if multi else "0.35", linestyle=":",
                               linewidth=0.8, zorder=0)
            text = display_values(values)
            shown = [text[fmt_value(v)] for v in values]
            if category:
                long = sum(map(len, shown)) > 20
                ax.set_xticks(range(len(values)), shown, rotation=30 if long else 0, ha="right" if long else "center")
                ax.set_xlim(-0.5, len(values) - 0.5)
            elif len(values) <= MAX_LINE_POINTS:
                ax.set_xticks([float(v) for v in values], shown)
            ax.set_title(panel.title, fontsize=FONT_PT)
            ax.set_xlabel(panel.key)
            if n % ncols == 0:
                ax.set_ylabel("test F1 (%)")
            ax.grid(True, linewidth=0.3, alpha=0.5)
        for n in range(len(layout), nrows * ncols):
            axes[n // ncols][n % ncols].set_visible(False)
        note = "line: mean; band: ± std over seeds;\ndots: runs; dotted: reference"
        if starred:
            note += f"; {STARS_NOTE}"
        if multi:
            fig.legend(list(handles.values()), list(handles), loc="outside upper center", ncol=min(len(handles), 4),
                       frameon=False, title=note, title_fontsize=SMALL_FONT_PT)
        else:
            fig.suptitle(note, fontsize=SMALL_FONT_PT)
        return fig


def write_combined_summary(studies: Sequence[Study], names: Sequence[str], out: Path) -> Path:
    keys = list(dict.fromkeys(k for s in studies for k in s.searched))
    with_dataset = FACET_KEY not in keys
    rows = []
    for s, name in zip(studies, names):
        for row in summary_rows(s):
            values = dict(zip(s.searched, row[:len(s.searched)]))
            rows.append([name, *([dataset(s)] if with_dataset else []), *(values.get(k, "") for k in keys),
                         *row[len(s.searched):]])
    return write_csv(out / "summary.csv", ["study", *([FACET_KEY] if with_dataset else []), *keys, *SUMMARY_STATS],
                     rows)


def combined_table(studies: Sequence[Study], names: Sequence[str], keys: Sequence[str]) -> Table:
    """Rows: the values of ``keys`` any study ran; columns: studies; cells: test F1 mean ± std with stars."""
    configs: dict[tuple[str, ...], tuple[Any, ...]] = {}
    tests = []
    for s in studies:
        groups, paired, _ = keys_tests(s, keys)
        tests.append({tuple(fmt_value(v) for v in g.values): p for g, p in zip(groups, paired)})
        for g in groups:
            configs.setdefault(tuple(fmt_value(v) for v in g.values), g.values)
    listed = [studies[0].listed(k) for k in keys]
    order = sorted(configs, key=lambda c: tuple(order_key(k, v, lst) for k, v, lst in zip(keys, configs[c], listed)))
    shown = [display_values(configs[c][i] for c in order) for i in range(len(keys))]
    rows: list[list[str]] = []
    means: list[list[float | None]] = [[None] * len(order) for _ in studies]
    for r, c in enumerate(order):
        cells = [shown[i][c[i]] for i in range(len(keys))]
        for j, s in enumerate(studies):
            sp = spread([t.test_f1_at_best for t in s.counted if tuple(fmt_value(t.value(k)) for k in keys) == c])
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
    head_tex = [*(tex_code(k) for k in keys),
                *(rf"{tex_escape(n)} ({tex_escape(dataset(s))})" for n, s in zip(names, studies))]
    return Table([*keys, *(f"{n} ({dataset(s)})" for n, s in zip(names, studies))], rows,
                 "l" * len(keys) + "c" * len(studies), frozenset(bold), head_tex)


def combine(dirs: Sequence[Path], out: Path, by: str = "study") -> list[Path]:
    if by not in PANELS:
        raise ValueError(f"--panels {by!r}; allowed: {', '.join(PANELS)}")
    if len(dirs) < 2:
        raise ReportError(f"--combine needs at least two study folders, got {len(dirs)}.")
    studies, keys, names = open_studies(dirs, out, "--combine")
    layout = panels(studies, keys, names, by)
    written = []
    for width in WIDTHS_IN:
        with paper_style():
            written += save_figure(figure(studies, names, layout, width), out / f"sensitivity_{width}")
    written.append(write_combined_summary(studies, names, out))
    refs = "; ".join(f"{n}: " + ", ".join(f"{k} = {fmt_display(reference_value(k, s.space))}" for k in keys)
                     for n, s in zip(names, studies))
    pooled = " (other searched keys pooled)" if any(len(s.searched) > len(keys) for s in studies) else ""
    caption_md = (f"Test F1 (%) as mean ± std over seeds (n/a for one seed; — not run), by {code_list(keys)}{pooled}. "
                  f"Best of each study in bold. * p(Holm) < 0.05, ** < 0.01, *** < 0.001 against the study's "
                  f"reference ({refs}): paired t-test over seeds, Holm-adjusted within the study.")
    caption_tex = (r"Test F1 (\%) as mean $\pm$ std over seeds, by " + ", ".join(tex_code(k) for k in keys)
                   + r". Best of each study in bold. * $p_\mathrm{Holm}<0.05$, ** $<0.01$, *** $<0.001$ against "
                   r"the study's reference (" + tex_escape(refs) + r"): paired t-test over seeds.")
    table = combined_table(studies, names, keys)
    written += write_table(out / "table", table, caption_md, caption_tex, f"tab:{tex_label('-'.join(keys))}")
    intro: list[Block] = [
        Bullets([f"`{n}`: {about(s, f', searched {code_list(s.searched)}')}" for n, s in zip(names, studies)]),
        Para(f"Panels by {by}; shared key(s): {code_list(keys)}.")]
    image = Image(out / "sensitivity_2col.png", "test F1 against the shared key(s), two-column width")
    return write_report(out, "Combined studies", "Combined studies", intro, caption_md, table, image, written)


# --------------------------------------------------------------------------------------------------- --compare

def differing_settings(a: Study, b: Study) -> list[tuple[str, Any, Any]]:
    """Fixed trainer settings (not searched by either) in which B differs from A: (key, A's, B's)."""
    searched = set(a.searched) | set(b.searched)
    keys = sorted((set(a.base_config) | set(b.base_config)) - searched - {"train.seed"})
    return [(k, a.base_config.get(k), b.base_config.get(k)) for k in keys
            if fmt_value(a.base_config.get(k)) != fmt_value(b.base_config.get(k))]


def compare_rows(a: Study, b: Study, keys: Sequence[str]) -> list[tuple[tuple[Any, ...], Spread, Spread, Paired]]:
    """(values, A's test F1, B's, B - A paired) for each configuration of ``keys`` both ran, in A's order."""
    ga = {tuple(fmt_value(v) for v in g.values): g for g in group_trials(a, keys)}
    gb = {tuple(fmt_value(v) for v in g.values): g for g in group_trials(b, keys)}
    both = [c for c in ga if c in gb]
    tests = with_holm([paired_test(*pair_trials(gb[c].trials, ga[c].trials, ())) for c in both])
    return [(ga[c].values, ga[c].test, gb[c].test, p) for c, p in zip(both, tests)]


def compare_figure(a: Study, b: Study, names: Sequence[str], keys: Sequence[str], out: Path) -> list[Path]:
    from matplotlib.figure import Figure

    width = ONE_COLUMN_IN if len(keys) == 1 else TWO_COLUMN_IN
    with paper_style():
        fig = Figure(figsize=(width, COMPARE_HEIGHT_IN), layout="constrained")
        axes = fig.subplots(1, len(keys), sharey=True, squeeze=False)[0]
        for ax, key in zip(axes, keys):
            values = ordered_values([a, b], key)
            pos, category = positions(values)
            for study, name, color, style in ((a, names[0], "C0", "--"), (b, names[1], "C1", "-")):
                draw_study(ax, study, key, pos, color, linestyle=style, label=name)
            if len(keys) == 1:  # the stars sit on B's highest run
                top = {fmt_value(g.values[0]): highest_test(g.trials) for g in group_trials(b, [key])}
                mark_significance(ax, [(pos[fmt_value(v[0])], top[fmt_value(v[0])], p.stars)
                                       for v, _, _, p in compare_rows(a, b, [key])], "0.2")
            shown = display_values(values)
            ax.set_xticks([pos[fmt_value(v)] for v in values], [shown[fmt_value(v)] for v in values])
            if category:
                ax.set_xlim(-0.5, len(values) - 0.5)
            ax.set_xlabel(key)
            ax.grid(True, linewidth=0.3, alpha=0.5)
        axes[0].set_ylabel("test F1 (%)")
        note = "mean ± std over seeds; dots: runs"
        if len(keys) == 1:
            note += "\n*: p(Holm) < 0.05, B vs A, paired by seed"
        fig.legend(loc="outside upper center", ncol=2, frameon=False, title=note, title_fontsize=SMALL_FONT_PT,
                   fontsize=SMALL_FONT_PT)
        return save_figure(fig, out / "compare")


def compare(a_dir: Path, b_dir: Path, out: Path) -> list[Path]:
    (a, b), keys, names = open_studies([a_dir, b_dir], out, "--compare")
    rows = compare_rows(a, b, keys)
    csv_rows = [[*(fmt_value(v) for v in values), str(sa.n), fmt_float(sa.mean, F1_DIGITS),
                 fmt_float(sa.std, F1_DIGITS), str(sb.n), fmt_float(sb.mean, F1_DIGITS), fmt_float(sb.std, F1_DIGITS),
                 *paired_cells(p)]
                for values, sa, sb, p in rows]
    written = [write_csv(out / "compare.csv", [*keys, *COMPARE_STATS], csv_rows)]
    shown = [display_values(r[0][i] for r in rows) for i in range(len(keys))]
    cells = []
    for values, sa, sb, p in rows:
        diff, ci, _, p_t, _, p_holm = diff_cells(p)
        cells.append([*(shown[i][fmt_value(v)] for i, v in enumerate(values)), fmt_mean_std(sa.mean, sa.std, DIGITS),
                      fmt_mean_std(sb.mean, sb.std, DIGITS), str(p.n_paired), diff, ci, p_t, p_holm])
    head = [*keys, f"A: {names[0]}", f"B: {names[1]}", "pairs", "Δ (B − A)", "95% CI of Δ", "p (t-test)", "p (Holm)"]
    table = Table(head, cells, "l" * len(keys) + "ccrrcrr", head_tex=[
        *(tex_code(k) for k in keys), f"A: {tex_escape(names[0])}", f"B: {tex_escape(names[1])}",
        "pairs", r"$\Delta$ (B$-$A)", r"95\% CI of $\Delta$", r"$p$ (t-test)", r"$p$ (Holm)"])
    differ = ", ".join(f"`{k}` {fmt_display(x)} → {fmt_display(y)}" for k, x, y in differing_settings(a, b)) or "none"
    caption = (f"Test F1 (%) of B = `{names[1]}` against A = `{names[0]}` ({dataset(a)} / {dataset(b)}), mean ± std "
               f"over seeds, by {code_list(keys)}. Δ: B minus A over the seeds both ran; paired "
               f"t-test, Holm-adjusted over the configurations; * p(Holm) < 0.05, ** < 0.01, *** < 0.001. "
               f"Fixed settings that differ (A → B): {differ}.")
    caption_tex = tex_escape(caption.replace("`", "")).replace("→", r"$\to$")
    written += write_table(out / "compare", table, caption, caption_tex,
                           f"tab:compare-{tex_label(names[0])}-{tex_label(names[1])}")
    written += compare_figure(a, b, names, keys, out)
    intro = [Bullets([f"A = `{names[0]}`: {about(a)}", f"B = `{names[1]}`: {about(b)}",
                      f"fixed settings that differ (A → B): {differ}"])]
    image = Image(out / "compare.png", "test F1 of both studies against the shared key(s)")
    return write_report(out, f"{names[1]} against {names[0]}", f"`{names[1]}` against `{names[0]}`", intro, caption,
                        table, image, written)
