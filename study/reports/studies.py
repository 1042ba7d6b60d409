"""Several stored studies read together, for ``report.py --combine`` and ``--compare``: the checks that refuse
what cannot be combined (one line each), the keys they share, their labels, and the points of one curve.
Reads only the stored records (``load.py``); never writes into a study folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from study.reports.load import ReportError, Study, load_study
from study.reports.significance import Paired, key_tests
from study.reports.stats import Spread, group_trials, spread
from study.reports.values import fmt_value, is_number, order_key

DATASET_KEY = "data.name"


def load_studies(dirs: Sequence[Path], option: str) -> list[Study]:
    """Each folder read as a study; refused: a folder given twice, a folder that is not a study, a study
    without a single result."""
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
    return studies


def check_out(out: Path, studies: Sequence[Study], option: str) -> None:
    """``out`` may not be, or lie inside, a study folder (it would mix with or overwrite the study's own reports)."""
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


def common_keys(studies: Sequence[Study], option: str) -> list[str]:
    """The searched keys every study shares, in the first study's order."""
    common = [k for k in studies[0].searched if all(k in s.searched for s in studies[1:])]
    if not common:
        searched = "; ".join(f"{s.dir} searches {', '.join(s.searched) or 'nothing'}" for s in studies)
        raise ReportError(f"{option}: the studies share no searched key ({searched}); combine studies that "
                          f"search the same key, e.g. i2srm.delta.")
    return common


def labels(studies: Sequence[Study]) -> list[str]:
    """Each study's name, or ``parent/name`` where two studies share a name."""
    names = [s.name for s in studies]
    return [f"{s.dir.resolve().parent.name}/{s.name}" if names.count(s.name) > 1 else s.name for s in studies]


def dataset(study: Study) -> str:
    return str(study.base_config.get(DATASET_KEY, "unknown"))


def ordered_values(studies: Sequence[Study], key: str) -> list[Any]:
    """Every value of ``key`` the studies ran, in the key's natural order (as one study orders them)."""
    values: dict[str, Any] = {}
    for s in studies:
        for g in group_trials(s, [key]):
            values.setdefault(fmt_value(g.values[0]), g.values[0])
    listed = studies[0].listed(key)
    return sorted(values.values(), key=lambda v: order_key(key, v, listed))


@dataclass(frozen=True)
class CurvePoint:
    value: Any
    test: Spread
    top: float
    """The highest single run at this value (where a significance mark goes)."""
    paired: Paired | None
    is_reference: bool


def curve(study: Study, key: str) -> list[CurvePoint]:
    """Test F1 of ``study`` at each value of ``key`` (pooled over its other keys), with the paired comparison
    against the study's reference value of ``key``."""
    groups, tests, reference = key_tests(study, key)
    return [CurvePoint(g.values[0], g.test, max(t.test_f1_at_best for t in g.trials), p, g is reference)
            for g, p in zip(groups, tests)]


def numeric(values: Sequence[Any]) -> bool:
    return bool(values) and all(is_number(v) for v in values)


def pooled_test(study: Study, keys: Sequence[str], values: Sequence[Any]) -> Spread:
    """Test F1 of the trials of ``study`` whose ``keys`` take ``values`` (pooled over its other keys)."""
    want = tuple(fmt_value(v) for v in values)
    return spread([t.test_f1_at_best for t in study.counted
                   if tuple(fmt_value(t.value(k)) for k in keys) == want])
