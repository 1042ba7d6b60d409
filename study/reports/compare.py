"""``report.py --compare A B --out DIR``: study B against study A, configuration by configuration.

A configuration is a combination of values of the searched keys both studies share; a study that searches
more keys is pooled over them (its runs of one seed averaged). For each configuration both ran: the
difference B - A of test F1 over the seeds both ran, with the paired statistics of ``significance.py``
(t-test, Holm-adjusted over the configurations, exact sign-flip test, d_z, bootstrap 95% interval). Writes
``compare.csv``, ``compare.md``, ``compare.tex``, ``compare.png/.pdf`` (both curves against each shared key,
3.5 in wide for one key, 7.2 in for several) and ``REPORT.md``/``REPORT.html``. The fixed settings in which
the two studies differ (e.g. ``i2srm.variant``) are named in the captions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from model.fileio import atomic_write_text
from study.reports.figures import ONE_COLUMN_IN, SMALL_FONT_PT, TWO_COLUMN_IN, mark_significance, paper_style, save_figure
from study.reports.load import Study
from study.reports.render import (Block, Bullets, Heading, Image, Para, Table, latex_table, markdown_table, tex_escape,
                                  tex_label, write_csv, write_page)
from study.reports.significance import Paired, pair_trials, paired_test, with_holm
from study.reports.stats import Spread, group_trials, spread
from study.reports.studies import (check_out, common_keys, dataset, labels, load_studies, numeric, ordered_values)
from study.reports.tables import F1_DIGITS, paired_cells
from study.reports.values import (display_values, fmt_display, fmt_float, fmt_mean_std, fmt_p, fmt_value,
                                  listed_values, order_key)

OPTION = "--compare"
DIGITS = 2
HEIGHT_IN = 2.3
HEADER_STATS = ["n_a", "test_f1_mean_a", "test_f1_std_a", "n_b", "test_f1_mean_b", "test_f1_std_b", "n_paired",
                "test_f1_diff", "diff_ci_low", "diff_ci_high", "effect_size", "p_value", "p_signflip", "p_holm"]


def differing_settings(a: Study, b: Study) -> list[tuple[str, Any, Any]]:
    """Fixed trainer settings (not searched by either) in which B differs from A: (key, A's, B's)."""
    searched = set(a.searched) | set(b.searched)
    keys = sorted((set(a.base_config) | set(b.base_config)) - searched - {"train.seed"})
    return [(k, a.base_config.get(k), b.base_config.get(k)) for k in keys
            if fmt_value(a.base_config.get(k)) != fmt_value(b.base_config.get(k))]


def rows(a: Study, b: Study, keys: Sequence[str]) -> list[tuple[tuple[Any, ...], Spread, Spread, Paired]]:
    """(values, A's test F1, B's, B - A paired) for each configuration of ``keys`` both ran."""
    ga = {tuple(fmt_value(v) for v in g.values): g for g in group_trials(a, keys)}
    gb = {tuple(fmt_value(v) for v in g.values): g for g in group_trials(b, keys)}
    listed = [listed_values(a.search_spec(k)) for k in keys]
    both = sorted((c for c in ga if c in gb),
                  key=lambda c: tuple(order_key(k, v, lst) for k, v, lst in zip(keys, ga[c].values, listed)))
    tests = with_holm([paired_test(*pair_trials(gb[c].trials, ga[c].trials, ())) for c in both])
    return [(ga[c].values, ga[c].test, gb[c].test, p) for c, p in zip(both, tests)]


def _figure(a: Study, b: Study, names: Sequence[str], keys: Sequence[str], out: Path) -> list[Path]:
    from matplotlib.figure import Figure

    width = ONE_COLUMN_IN if len(keys) == 1 else TWO_COLUMN_IN
    with paper_style():
        fig = Figure(figsize=(width, HEIGHT_IN), layout="constrained")
        axes = fig.subplots(1, len(keys), sharey=True, squeeze=False)[0]
        for ax, key in zip(axes, keys):
            values = ordered_values([a, b], key)
            category = not numeric(values)
            pos = {fmt_value(v): (float(j) if category else float(v)) for j, v in enumerate(values)}
            marg = rows(a, b, [key]) if len(keys) == 1 else []
            stars = {fmt_value(v[0]): (p, sb) for v, _, sb, p in marg}
            for study, name, color, style in ((a, names[0], "C0", "--"), (b, names[1], "C1", "-")):
                groups = group_trials(study, [key])
                xs = np.array([pos[fmt_value(g.values[0])] for g in groups])
                sp = [spread([t.test_f1_at_best for t in g.trials]) for g in groups]
                mean, std = np.array([s.mean for s in sp]), np.array([s.std for s in sp])
                ax.fill_between(xs, mean - std, mean + std, color=color, alpha=0.15, linewidth=0, zorder=2)
                ax.plot(xs, mean, color=color, marker="o", linestyle=style, zorder=3, label=name)
                runs = [(pos[fmt_value(t.value(key))], t.test_f1_at_best) for t in study.counted]
                ax.scatter([x for x, _ in runs], [y for _, y in runs], s=4, color=color, alpha=0.3, linewidths=0)
            top = {fmt_value(g.values[0]): max(t.test_f1_at_best for t in g.trials)
                   for s in (a, b) for g in group_trials(s, [key])}
            mark_significance(ax, [(pos[v], top[v], p.stars) for v, (p, _) in stars.items()], "0.2")
            shown = display_values(values)
            ax.set_xticks([pos[fmt_value(v)] for v in values], [shown[fmt_value(v)] for v in values])
            if category:
                ax.set_xlim(-0.5, len(values) - 0.5)
            ax.set_xlabel(key)
            ax.grid(True, linewidth=0.3, alpha=0.5)
        axes[0].set_ylabel("test F1 (%)")
        note = "mean ± std over seeds; dots: runs" + ("\n*: p(Holm) < 0.05, B vs A, paired by seed" if len(keys) == 1 else "")
        fig.legend(loc="outside upper center", ncol=2, frameon=False, title=note, title_fontsize=SMALL_FONT_PT,
                   fontsize=SMALL_FONT_PT)
        return save_figure(fig, out / "compare")


def compare(a_dir: Path, b_dir: Path, out: Path) -> list[Path]:
    a, b = load_studies([a_dir, b_dir], OPTION)
    check_out(out, [a, b], OPTION)
    keys = common_keys([a, b], OPTION)
    names = labels([a, b])
    out.mkdir(parents=True, exist_ok=True)
    table_rows = rows(a, b, keys)
    shown = [display_values(r[0][i] for r in table_rows) for i in range(len(keys))]
    csv_rows = [[*(fmt_value(v) for v in values), str(sa.n), fmt_float(sa.mean, F1_DIGITS), fmt_float(sa.std, F1_DIGITS),
                 str(sb.n), fmt_float(sb.mean, F1_DIGITS), fmt_float(sb.std, F1_DIGITS), *paired_cells(p)]
                for values, sa, sb, p in table_rows]
    written = [write_csv(out / "compare.csv", [*keys, *HEADER_STATS], csv_rows)]

    cells = []
    for values, sa, sb, p in table_rows:
        ci = "n/a" if p.diff_ci_low is None else f"[{p.diff_ci_low:+.{DIGITS}f}, {p.diff_ci_high:+.{DIGITS}f}]"
        diff = "n/a" if p.diff is None else f"{p.diff:+.{DIGITS}f}{p.stars}"
        cells.append([*(shown[i][fmt_value(v)] for i, v in enumerate(values)), fmt_mean_std(sa.mean, sa.std, DIGITS),
                      fmt_mean_std(sb.mean, sb.std, DIGITS), str(p.n_paired), diff, ci, fmt_p(p.p_value), fmt_p(p.p_holm)])
    head = [*keys, f"A: {names[0]}", f"B: {names[1]}", "pairs", "Δ (B − A)", "95% CI of Δ", "p (t-test)", "p (Holm)"]
    table = Table(head, cells, "l" * len(keys) + "ccrrcrr", head_tex=[
        *(rf"\texttt{{{tex_escape(k)}}}" for k in keys), f"A: {tex_escape(names[0])}", f"B: {tex_escape(names[1])}",
        "pairs", r"$\Delta$ (B$-$A)", r"95\% CI of $\Delta$", r"$p$ (t-test)", r"$p$ (Holm)"])
    differ = differing_settings(a, b)
    differ_text = ", ".join(f"`{k}` {fmt_display(x)} → {fmt_display(y)}" for k, x, y in differ) or "none"
    caption = (f"Test F1 (%) of B = `{names[1]}` against A = `{names[0]}` ({dataset(a)} / {dataset(b)}), mean ± std "
               f"over seeds, by {', '.join(f'`{k}`' for k in keys)}. Δ: B minus A over the seeds both ran; paired "
               f"t-test, Holm-adjusted over the configurations; * p(Holm) < 0.05, ** < 0.01, *** < 0.001. "
               f"Fixed settings that differ (A → B): {differ_text}.")
    written.append(atomic_write_text(out / "compare.md", "\n".join([caption, "", *markdown_table(table)]) + "\n"))
    caption_tex = tex_escape(caption.replace("`", "")).replace("→", r"$\to$")
    written.append(atomic_write_text(out / "compare.tex", latex_table(
        table, caption_tex, f"tab:compare-{tex_label(names[0])}-{tex_label(names[1])}")))
    written += _figure(a, b, names, keys, out)
    blocks: list[Block] = [
        Heading(1, f"`{names[1]}` against `{names[0]}`"),
        Bullets([f"A = `{names[0]}`: `{a.dir}` ({dataset(a)}, {len(a.counted)} trials with a result)",
                 f"B = `{names[1]}`: `{b.dir}` ({dataset(b)}, {len(b.counted)} trials with a result)",
                 f"fixed settings that differ (A → B): {differ_text}"]),
        Heading(2, "Table"), Para(caption), table,
        Heading(2, "Figure"), Image(out / "compare.png", "test F1 of both studies against the shared key(s)"),
        Heading(2, "Files"),
        Bullets([f"[{p.name}]({p.name})" for p in written] + ["[REPORT.md](REPORT.md), [REPORT.html](REPORT.html): this page"]),
    ]
    return written + write_page(out, f"{names[1]} against {names[0]}", blocks)
