"""``importance.csv`` and ``importance.png/.pdf``: which searched key moves the study metric most.

Optuna's fANOVA evaluator (a random forest, seeded so a rebuild gives the same numbers) on
the completed trials of the study's ``optuna.db`` (or the storage its space's ``optuna_storage`` names),
whose params are named by the dotted keys. With too few trials the CSV says so in its ``note`` column
instead of failing.
"""

from __future__ import annotations

import logging
from pathlib import Path

from study.optuna_storage import OPTUNA_DB, describe, open_storage_for_reading, storage_exists
from study.reports.figures import new_figure, paper_style
from study.reports.files import save_figure, write_csv
from study.reports.load import Study
from study.reports.values import fmt_float

MIN_TRIALS = 4
"""Fewer completed Optuna trials than this give no meaningful forest; the CSV says so instead."""
FANOVA_SEED = 0
HEADER = ["param", "importance", "note"]


def _load_optuna_study(study: Study):  # -> optuna.Study | str (the reason it cannot be read)
    import optuna

    spec = study.space.get("optuna_storage")  # None: the study's own optuna.db
    if spec is None and not (study.dir / OPTUNA_DB).is_file():
        return f"no optuna.db in {study.dir}"
    where = "optuna.db" if spec is None else f"optuna_storage {describe(spec)}"
    if not storage_exists(spec, study.dir):
        return f"{where} does not exist"
    try:
        storage = open_storage_for_reading(spec, study.dir)
        names = optuna.get_all_study_names(storage)
    except Exception as e:  # a server that is gone, a driver not installed: the other reports still get written
        return f"{where} cannot be read: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    if study.name in names:
        return optuna.load_study(study_name=study.name, storage=storage)
    if len(names) == 1:  # a study renamed by --name after the database was created
        return optuna.load_study(study_name=names[0], storage=storage)
    return f"{where} holds no study named {study.name!r} (it holds: {', '.join(names) or 'none'})"


def compute_importance(study: Study) -> tuple[dict[str, float], str]:
    """(importance per dotted key, best first) and a note; empty with the reason when not computable."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(logging.WARNING)
    ostudy = _load_optuna_study(study)
    if isinstance(ostudy, str):
        return {}, ostudy
    done = ostudy.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    keys = [k for k in study.searched if any(k in t.params for t in done)]
    if len(done) < MIN_TRIALS or len(keys) < 2:
        return {}, (f"too few completed Optuna trials for an importance estimate: {len(done)} completed over "
                    f"{len(keys)} searched parameter(s); at least {MIN_TRIALS} trials and 2 parameters needed")
    fixed = [k for k in keys if len({repr(t.params[k]) for t in done if k in t.params}) < 2]
    if fixed:
        return {}, f"parameter(s) {', '.join(fixed)} took a single value in the completed trials"
    try:
        scores = get_param_importances(ostudy, evaluator=FanovaImportanceEvaluator(seed=FANOVA_SEED), params=keys)
    except (ValueError, RuntimeError) as e:  # e.g. a degenerate forest; the other reports still get written
        return {}, f"fANOVA failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    ordered = dict(sorted(((k, float(v)) for k, v in scores.items()), key=lambda kv: (-kv[1], kv[0])))
    return ordered, f"fANOVA (seed {FANOVA_SEED}) over {len(done)} completed Optuna trials, target {study.metric}"


def write_importance(study: Study) -> list[Path]:
    scores, note = compute_importance(study)
    if not scores:
        for stale in ("importance.png", "importance.pdf"):  # from an earlier build with more trials
            (study.dir / stale).unlink(missing_ok=True)
        return [write_csv(study.dir / "importance.csv", HEADER, [["", "", note]])]
    out = [write_csv(study.dir / "importance.csv", HEADER, [[k, fmt_float(v), note] for k, v in scores.items()])]
    with paper_style():
        fig = new_figure(height_in=max(1.2, 0.6 + 0.28 * len(scores)))
        ax = fig.add_subplot()
        keys = list(scores)[::-1]  # most important on top
        ax.barh(keys, [scores[k] for k in keys], color="C0", height=0.6)
        ax.set_xlabel(f"importance for {study.metric} (fANOVA)")
        ax.set_xlim(0, 1)
        ax.grid(True, axis="x", linewidth=0.3, alpha=0.5)
        out += save_figure(fig, study.dir / "importance")
    return out
