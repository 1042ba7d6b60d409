"""``REPORT.md`` and ``REPORT.html``: what ran, how it went, the best configuration and the command to train it
again, every configuration against the reference, the significance of each searched key, the importance, the
figures and the files. One list of blocks (``render.py``), written as Markdown and as a self-contained page.
When the study confirmed configurations on fresh seeds, that section leads, after the overview (``confirm.py``).

Searched values are shown to ``DISPLAY_DIGITS`` significant digits (0.5488, not 0.5488135039273248); the
retrain command keeps the exact values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from study.records import STATUSES
from study.reports.confirm import confirm_blocks
from study.reports.facets import dataset, facets, is_faceted
from study.reports.intervals import Interval, fmt_half_width, intervals, power_line, resolve_of
from study.reports.importance import FEW_CONFIGURATIONS, read_importance_counts
from study.reports.load import Study
from study.reports.render import (HTML_NAME, MD_NAME, Block, Bullets, Code, Heading, Image, Para, Table,
                                  best_in_column, write_page)
from study.reports.significance import MIN_PAIRS, configuration_tests, key_tests
from study.reports.stats import best_group, group_trials
from study.reports.tables import DIGITS, diff_cells
from study.reports.values import (display_values, fmt_display, fmt_mean_std, fmt_p, fmt_value,
                                  reference_value)
from study.space import FACET_KEY

MAX_TABLE_ROWS = 40
"""Configurations listed in the report's results table; all of them are in summary.csv."""

DESCRIPTIONS = {
    "trials.csv": "one row per trial: status (with the error of a failed one), searched values, seed, "
                  "best dev F1, its epoch, test F1 there, epochs run, wall seconds, node",
    "confirm.csv": "one row per confirmation run (a chosen configuration on a fresh seed): configuration, "
                   "searched values, seed, best dev F1, its epoch, test F1 there; not in the other tables",
    "summary.csv": "one row per configuration, seeds pooled: n, mean, std and 95% CI of dev and test F1, and the "
                   "paired comparison with the reference configuration (difference, bootstrap CI, d_z, p-values), the "
                   "half-width of the 95% interval adaptive seeds read, and whether it is resolved",
    "ablation.csv": "the ablation table, machine-readable",
    "ablation.md": "the ablation table (Markdown)",
    "ablation.tex": "the ablation table (LaTeX, booktabs)",
    "importance.csv": "importance of each searched key for the study metric (fANOVA, mean and std over forest "
                      "seeds, with the number of configurations it rests on)",
    "importance.png": "importance, bar chart",
    "importance.pdf": "importance, bar chart",
    "tensorboard": "per-trial learning curves and the HParams view",
}


def _describe(study: Study, name: str) -> str:
    if name.startswith("sensitivity_"):
        key = name.removeprefix("sensitivity_").rsplit(".", 1)[0]
        pooled = " (other searched keys pooled)" if len(study.searched) > 1 else ""
        return f"F1 against `{key}`, mean ± std over seeds{pooled}, * where p(Holm) < 0.05 against the reference"
    if name.startswith("joint_"):
        from study.reports.joint import describe

        return describe(name)
    return DESCRIPTIONS.get(name, "")


def _spec_text(spec: dict) -> str:
    def vals(v: Any) -> str:
        if isinstance(v, list):
            shown = display_values(v)
            return ", ".join(shown[fmt_value(x)] for x in v)
        return fmt_display(v)

    return "; ".join(f"{kind}: {vals(v)}" for kind, v in spec.items())


def _datasets(study: Study) -> str:
    return "`, `".join(name for name, _ in facets(study)) if is_faceted(study) else dataset(study)


def _overview(study: Study) -> list[Block]:
    counts = ", ".join(f"{study.count(s)} {s}" for s in STATUSES if study.count(s) or s != "running")
    searched = ", ".join(f"`{k}` ({_spec_text(study.params[k].to_dict() if k in study.params else {})})"
                         for k in study.searched) or "nothing"
    blocks: list[Block] = [Heading(1, f"Study `{study.name}`")]
    if study.description:
        blocks.append(Para(study.description.strip()))
    blocks.append(Bullets([
        f"command: `{study.command or 'unknown'}`",
        f"code revision: `{study.code_revision}`",
        f"created: {study.created or 'unknown'}",
        f"dataset: `{_datasets(study)}`, text encoder "
        f"`{study.base_config.get('model.text_encoder', 'unknown')}`",
        f"searched: {searched}; sampler `{study.space.get('sampler', 'unknown')}`, "
        f"seeds {list(study.seeds) or 'unknown'}" + _resolve_text(study),
        f"study metric: `{study.metric}` ({study.mode})",
        f"trials: {len(study.trials)} ({counts})",
    ]))
    return blocks


def _resolve_text(study: Study) -> str:
    """The overview's note on adaptive seeds: the rule and the seeds the runs used beyond ``seeds``."""
    resolve = resolve_of(study)
    if resolve is None:
        return ""
    extra = sorted({t.seed for t in study.trials} - set(study.seeds))
    return (f", more (up to {resolve.max_seeds}) while a configuration's 95% interval is wider than "
            f"±{resolve.width:g}" + (f": seeds {extra} added" if extra else ": none added"))


def _best(study: Study) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Best configuration")]
    best = best_group(study, group_trials(study, study.searched))
    if best is None:
        return blocks + [Para("No trial reported a result yet.")]
    g, score = best
    values = ", ".join(f"`{k}` = {fmt_display(v)}" for k, v in zip(study.searched, g.values)) or "the base config"
    return blocks + [
        Para(f"By mean `{study.metric}` over {g.dev.n} seed(s): {values}."),
        Bullets([f"mean `{study.metric}`: {score:.{DIGITS}f}",
                 f"dev F1 (%): {fmt_mean_std(g.dev.mean, g.dev.std, DIGITS)}",
                 f"test F1 (%): {fmt_mean_std(g.test.mean, g.test.std, DIGITS)} (at each seed's best dev epoch)"]),
        Para("Train its runs again, each as it ran (from the repository root):"),
        Code("\n".join(study.rerun_command(t) for t in g.trials)),
    ]


def _results(study: Study) -> list[Block]:
    groups, tests, reference = configuration_tests(study)
    if not groups:
        return []
    shown = {k: display_values(g.values[i] for g in groups) for i, k in enumerate(study.searched)}
    adaptive = resolve_of(study) is not None
    widths = intervals(study, groups, reference)
    rows = [[*(shown[k][fmt_value(v)] for k, v in zip(study.searched, g.values)), str(g.test.n),
             fmt_mean_std(g.test.mean, g.test.std, DIGITS), fmt_mean_std(g.dev.mean, g.dev.std, DIGITS),
             *diff_cells(p, g is reference)[:1], fmt_p(p.p_holm) if p else "",
             *([_interval_cell(i)] if adaptive else [])]
            for g, p, i in zip(groups, tests, widths)][:MAX_TABLE_ROWS]
    best = best_in_column([g.test.mean for g in groups[:MAX_TABLE_ROWS]])
    head = [*study.searched, "n", "test F1 (%)", "dev F1 (%)", "Δ test vs reference", "p (Holm)",
            *([f"95% interval ({study.metric})"] if adaptive else [])]
    k = len(study.searched)
    table = Table(head, rows, "l" * k + "rccrr" + ("r" if adaptive else ""),
                  frozenset() if best is None else frozenset({(best, k + 1)}))
    ref_text = ", ".join(f"`{key}` = {fmt_display(v)}" for key, v in
                         zip(study.searched, (reference_value(key, study.space) for key in study.searched)))
    note = (f"Mean ± std over seeds (n/a for one seed); best test F1 in bold. Δ: test F1 minus the reference "
            f"configuration's ({ref_text}) over the seeds both ran, paired t-test with Holm's adjustment over the "
            f"configurations; * p(Holm) < 0.05, ** < 0.01, *** < 0.001.")
    if reference is None:
        note += " The reference configuration did not run, so no configuration is compared with it."
    if len(groups) > MAX_TABLE_ROWS:
        note += f" The first {MAX_TABLE_ROWS} of {len(groups)} configurations; all are in summary.csv."
    power = power_line(study, groups, reference)
    return [Heading(2, "Results"), Para(note), table, *([Para(power)] if power else [])]


def _interval_cell(interval: Interval | None) -> str:
    """The half-width of a configuration's interval (``study.reports.intervals``), "open" when not resolved."""
    if interval is None:
        return "reference"
    width = fmt_half_width(interval.half_width, DIGITS)
    return (f"±{width}" if width else "±∞") + ("" if interval.resolved else " (open)")


def _significance(study: Study) -> list[Block]:
    """Each searched key's values against its reference value (pooled over the other keys, paired)."""
    blocks: list[Block] = []
    for key in study.searched:
        if is_faceted(study) and key == FACET_KEY:
            continue  # one dataset per part (report_blocks)
        groups, tests, reference = key_tests(study, key)
        ref = reference_value(key, study.space)
        blocks.append(Heading(3, f"`{key}` (reference {fmt_display(ref)})"))
        if reference is None:
            blocks.append(Para(f"The reference value {fmt_display(ref)} of `{key}` did not run: nothing to compare "
                               f"with (set the space's `reference`)."))
            continue
        shown = display_values(g.values[0] for g in groups)
        rows = [[shown[fmt_value(g.values[0])], "" if g is reference else str(p.n_paired if p else 0),
                 *diff_cells(p, g is reference)] for g, p in zip(groups, tests)]
        head = [key, "pairs", "Δ test F1", "95% CI of Δ", "d_z", "p (t-test)", "p (sign-flip)", "p (Holm)"]
        blocks.append(Table(head, rows, "lrrcrrrr"))
    if not blocks:
        return []
    others = " and the other searched keys" if len(study.searched) > 1 else ""
    intro = (f"Test F1 of each value minus the reference value's, over the runs both made with the same seed{others} "
             f"(pairs; below {MIN_PAIRS} the difference only: no test, no stars, no interval). "
             f"Paired t-test, Holm-adjusted over the values of the key (the stars); "
             f"the exact sign-flip test assumes no normality but cannot go below 2/2^n (0.0625 at 5 pairs); "
             f"95% CI of Δ: BCa bootstrap, too narrow with few seeds; d_z: mean Δ / std of Δ.")
    return [Heading(2, "Significance against the reference"), Para(intro), *blocks]


def _importance(study: Study, written: Sequence[Path]) -> list[Block]:
    if not any(p.name == "importance.csv" for p in written):
        return []
    found = read_importance_counts(study.dir)
    if found is None:
        return []
    n, note = found
    blocks: list[Block] = [Heading(2, "Parameter importance"), Para(f"{note}.")]
    if n < FEW_CONFIGURATIONS:
        blocks.append(Para(f"**Warning:** the importance rests on {n} configuration(s), fewer than "
                           f"{FEW_CONFIGURATIONS}: a forest over so few points is fragile; read it as a hint."))
    return blocks


def _figures(study: Study, written: Sequence[Path]) -> list[Block]:
    pngs = [p for p in written if p.suffix == ".png"]
    if not pngs:
        return []
    return [Heading(2, "Figures"), *(Image(p, _describe(study, p.name) or p.stem) for p in pngs)]


def _files(study: Study, written: Sequence[Path], skipped: dict[str, str]) -> list[Block]:
    items = []
    for path in written:
        name = path.name + ("/" if path.is_dir() else "")
        desc = _describe(study, path.name)
        item = f"[{name}]({name})" + (f": {desc}" if desc else "")
        if path.name == "tensorboard":
            item += f" (`tensorboard --logdir {study.shown_dir}/tensorboard`)"
        items.append(item)
    items.append(f"[{MD_NAME}]({MD_NAME}), [{HTML_NAME}]({HTML_NAME}): this report (the page embeds the "
                 f"figures), rebuilt by `python study/report.py {study.shown_dir}`")
    blocks: list[Block] = [Heading(2, "Files"), Bullets(items)]
    if skipped:
        blocks += [Para("Not drawn:"), Bullets([f"{name}: {why}" for name, why in skipped.items()])]
    failed = [t for t in study.trials if t.status == "failed"]
    if failed:
        blocks += [Heading(2, "Failed trials"),
                   Bullets([f"`{t.trial_id}`: {t.error or 'no error recorded'}" for t in failed])]
    return blocks


def report_blocks(study: Study, written: Sequence[Path], skipped: dict[str, str]) -> list[Block]:
    parts: list[Block] = []
    for name, part in facets(study):  # with data.name searched, each dataset's own best, results and tests
        parts += [Heading(2, f"Dataset `{name}`")] if name else []
        parts += [*_best(part), *_results(part), *_significance(part)]
    return [*_overview(study), *confirm_blocks(study), *parts, *_importance(study, written), *_figures(study, written),
            *_files(study, written, skipped)]


def write_index(study: Study, written: Sequence[Path], skipped: dict[str, str]) -> Path:
    """``REPORT.html`` and ``REPORT.md`` (returned: the index ``report.py`` names)."""
    return write_page(study.dir, f"Study {study.name}", report_blocks(study, written, skipped))[-1]
