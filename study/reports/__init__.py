"""Every report of a stored study, rebuilt from ``results/<study>/`` alone (no training).

``build_reports(study_dir)`` writes ``trials.csv`` and ``REPORT.md`` always, and the reports of ``registry.py``
that the space's ``reports:`` list asks for (all that apply when it has none): ``summary.csv``,
``sensitivity_<key>.png/.pdf``, ``ablation.csv/.md/.tex``, ``importance.csv/.png/.pdf``,
``joint_<plot>.png/.pdf`` and ``tensorboard/``. Every file is written atomically; CSV and Markdown
files are byte-identical when rebuilt from the same records.
A study that confirmed configurations on fresh seeds (the space's ``confirm``) gets ``confirm.csv`` too.
"""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock

from study.reports.load import NotAStudy, ReportError, Study, load_study
from study.reports.registry import REPORTS

__all__ = ["REPORTS", "NotAStudy", "ReportError", "build_reports", "load_study"]

LOCK_FILE = ".report.lock"
LOCK_TIMEOUT_S = 600


def requested(study: Study) -> tuple[list[str], bool]:
    """(reports to draw, whether the space listed them explicitly)."""
    listed = study.space.get("reports")
    if isinstance(listed, list) and listed:
        return list(dict.fromkeys(str(r) for r in listed)), True
    return list(REPORTS), False


def build_reports(study_dir: Path) -> list[Path]:
    """Rebuild every report of ``study_dir``; returns the paths written (``REPORT.md`` last). A listed report that
    does not apply to the search is named with the reason under "Not drawn"; one the space did not list is not."""
    from study.reports.index import write_index
    from study.reports.tables import write_trials_csv

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
            report = REPORTS.get(name)
            if report is None:
                skipped[name] = f"unknown report; known: {', '.join(REPORTS)}"
                continue
            why = report.applies(study.searched)
            if why is None:
                paths, why = report.build(study)
                written += paths
            elif not explicit:
                continue
            if why:
                skipped[name] = why
        if not study.counted:
            skipped.setdefault("figures", "no completed or pruned trial reported an epoch yet")
        written.append(write_index(study, written, skipped))
    return written
