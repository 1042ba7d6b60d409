"""Every report of a stored study, rebuilt from ``results/<study>/`` alone (no training).

``build_reports(study_dir)`` writes ``trials.csv`` and ``REPORT.md`` always, and the reports the
space's ``reports:`` list asks for (all that apply when it has none): ``summary.csv``,
``sensitivity_<key>.png/.pdf``, ``ablation.csv/.md/.tex``, ``importance.csv/.png/.pdf``,
``joint_<plot>.png/.pdf`` and ``tensorboard/``. Every file is written atomically; CSV and Markdown
files are byte-identical when rebuilt from the same records.
A study that confirmed configurations on fresh seeds (the space's ``confirm``) gets ``confirm.csv`` too.
"""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock

from study.reports.load import NotAStudy, ReportError, Study, load_study
from study.space import FACET_KEY, REPORTS

__all__ = ["REPORTS", "NotAStudy", "ReportError", "build_reports", "load_study"]

ABLATION_KEY = "i2srm.ablation"
LOCK_FILE = ".report.lock"
LOCK_TIMEOUT_S = 600


def requested(study: Study) -> tuple[list[str], bool]:
    """(reports to draw, whether the space listed them explicitly)."""
    listed = study.space.get("reports")
    if isinstance(listed, list) and listed:
        return list(dict.fromkeys(str(r) for r in listed)), True
    return list(REPORTS), False


def build_reports(study_dir: Path) -> list[Path]:
    """Rebuild every report of ``study_dir``; returns the paths written (``REPORT.md`` last)."""
    from study.reports.index import write_index
    from study.reports.tables import write_summary_csv, write_trials_csv

    study = load_study(study_dir)  # raises NotAStudy before anything is written
    # Two builders at once (the end of run.py and a user's report.py) would race on the tensorboard swap.
    with FileLock(str(Path(study_dir) / LOCK_FILE), timeout=LOCK_TIMEOUT_S):
        wanted, explicit = requested(study)
        skipped: dict[str, str] = {}
        written = [write_trials_csv(study)]
        if study.confirmations:  # the confirmation on fresh seeds, apart from the search (confirm.py)
            from study.reports.confirm import write_confirm_csv

            written.append(write_confirm_csv(study))
        for name in wanted:
            if name not in REPORTS:
                skipped[name] = f"unknown report; known: {', '.join(REPORTS)}"
            elif name == "summary":
                written.append(write_summary_csv(study))
            elif name == "sensitivity":
                from study.reports.sensitivity import plot_sensitivity

                keys = [k for k in study.searched if k != ABLATION_KEY]
                for key in keys:
                    written += plot_sensitivity(study, key)
                if not keys and explicit:
                    skipped[name] = "no searched key other than i2srm.ablation"
            elif name == "ablation":
                if ABLATION_KEY in study.searched:
                    from study.reports.ablation import write_ablation

                    written += write_ablation(study)
                elif explicit:
                    skipped[name] = "the space does not search i2srm.ablation"
            elif name == "importance":
                if len(study.searched) >= 2:
                    from study.reports.importance import write_importance

                    written += write_importance(study)
                elif explicit:
                    skipped[name] = "needs a search over at least two keys"
            elif name == "joint":
                if len([k for k in study.searched if k != FACET_KEY]) >= 2:
                    from study.reports.joint import write_joint

                    paths, why = write_joint(study)
                    written += paths
                    if why:
                        skipped[name] = why
                elif explicit:
                    skipped[name] = f"needs a search over at least two keys besides {FACET_KEY}"
            elif name == "tensorboard":
                from study.reports.tensorboard import write_tensorboard

                written.append(write_tensorboard(study))
        if not study.counted:
            skipped.setdefault("figures", "no completed or pruned trial reported an epoch yet")
        written.append(write_index(study, written, skipped))
    return written
