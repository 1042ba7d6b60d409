"""``REPORT.md``: a short index of a study: what ran, how it went, the best configuration, the files."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from model.fileio import atomic_write_text
from study.records import STATUSES
from study.reports.load import Study
from study.reports.stats import best_group, group_trials
from study.reports.values import fmt_value

DESCRIPTIONS = {
    "trials.csv": "one row per trial: status (with the error of a failed one), searched values, seed, "
                  "best dev F1, its epoch, test F1 there, epochs run, wall seconds, node",
    "summary.csv": "one row per configuration, seeds pooled: n, mean, std and 95% CI of dev and test F1",
    "ablation.csv": "the ablation table, machine-readable",
    "ablation.md": "the ablation table (Markdown)",
    "ablation.tex": "the ablation table (LaTeX, booktabs)",
    "importance.csv": "importance of each searched key for the study metric (fANOVA)",
    "importance.png": "importance, bar chart",
    "importance.pdf": "importance, bar chart",
    "tensorboard": "per-trial learning curves and the HParams view",
}


def _study_path(study: Study) -> str:
    """The folder as a user at the repository root names it; independent of how report.py was called."""
    folder = study.dir.resolve()
    return f"{folder.parent.name}/{folder.name}" if folder.parent.name == "results" else folder.name


def _describe(study: Study, name: str) -> str:
    if name.startswith("sensitivity_"):
        key = name.removeprefix("sensitivity_").rsplit(".", 1)[0]
        pooled = " (other searched keys pooled)" if len(study.searched) > 1 else ""
        return f"F1 against `{key}`, mean ± std over seeds{pooled}"
    return DESCRIPTIONS.get(name, "")


def _spec_text(spec: dict) -> str:
    return "; ".join(f"{kind}: " + (", ".join(fmt_value(v) for v in vals) if isinstance(vals, list) else fmt_value(vals))
                     for kind, vals in spec.items())


def write_index(study: Study, written: Sequence[Path], skipped: dict[str, str]) -> Path:
    counts = ", ".join(f"{study.count(s)} {s}" for s in STATUSES if study.count(s) or s != "running")
    searched = ", ".join(f"`{k}` ({_spec_text(study.search_spec(k))})" for k in study.searched) or "nothing"
    lines = [f"# Study `{study.name}`", ""]
    if study.description:
        lines += [study.description.strip(), ""]
    lines += [
        f"- command: `{study.command or 'unknown'}`",
        f"- code revision: `{study.code_revision}`",
        f"- created: {study.created or 'unknown'}",
        f"- dataset: `{study.base_config.get('data.name', 'unknown')}`, text encoder "
        f"`{study.base_config.get('model.text_encoder', 'unknown')}`",
        f"- searched: {searched}; sampler `{study.space.get('sampler', 'unknown')}`, "
        f"seeds {list(study.seeds) or 'unknown'}",
        f"- study metric: `{study.metric}` ({study.mode})",
        f"- trials: {len(study.trials)} ({counts})",
        "",
        "## Best configuration",
        "",
    ]
    best = best_group(study, group_trials(study, study.searched))
    if best is None:
        lines.append("No trial reported a result yet.")
    else:
        g, score = best
        values = ", ".join(f"`{k}` = {fmt_value(v)}" for k, v in zip(study.searched, g.values)) or "the base config"
        sets = " ".join(f"--set {k}={fmt_value(v)}" for k, v in zip(study.searched, g.values))
        lines += [
            f"By mean `{study.metric}` over {g.dev.n} seed(s): {values}.",
            "",
            f"- mean `{study.metric}`: {score:.2f}",
            f"- dev F1 (%): {g.dev.mean:.2f} ± {g.dev.std:.2f}",
            f"- test F1 (%): {g.test.mean:.2f} ± {g.test.std:.2f} (at each seed's best dev epoch)",
            "",
            "Train it again (from the repository root):",
            "",
            f"    python -m model.train --config {_study_path(study)}/config.yaml {sets}".rstrip(),
        ]
    lines += ["", "## Files", ""]
    for path in written:
        name = path.name + ("/" if path.is_dir() else "")
        desc = _describe(study, path.name)
        lines.append(f"- [{name}]({name})" + (f": {desc}" if desc else ""))
        if path.name == "tensorboard":
            lines.append(f"  (`tensorboard --logdir {_study_path(study)}/tensorboard`)")
    lines.append("- [REPORT.md](REPORT.md): this index, rebuilt by `python study/report.py "
                 f"{_study_path(study)}`")
    if skipped:
        lines += ["", "Not drawn:", ""] + [f"- {name}: {why}" for name, why in skipped.items()]
    failed = [t for t in study.trials if t.status == "failed"]
    if failed:
        lines += ["", "## Failed trials", ""] + [f"- `{t.trial_id}`: {t.error or 'no error recorded'}"
                                                 for t in failed]
    return atomic_write_text(study.dir / "REPORT.md", "\n".join(lines) + "\n")
