"""The reports a study can have: one entry each, ``(name, applies, build)``, in the order they are built.

``build_reports`` draws the entries a space lists, and ``study/space.py`` takes from here the names a space may
list and its default, every report that applies to its search. Whether a report applies depends on the searched
keys alone, so a space is checked before anything runs; each ``build`` imports its module (matplotlib, Optuna,
TensorBoard) only when called, so that reading a space costs none of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from study.space import FACET_KEY

if TYPE_CHECKING:
    from study.reports.load import Study

ABLATION_KEY = "i2srm.ablation"


@dataclass(frozen=True)
class Report:
    name: str
    applies: Callable[[tuple[str, ...]], str | None]
    """Given the searched keys: None when the report applies, else why it does not."""
    build: Callable[[Study], tuple[list[Path], str]]
    """Writes the report's files: (the paths written, why some or none were drawn; "" when all were). The data can
    be too thin for a report that applies (``joint`` needs two configurations with a result)."""


def _always(keys: tuple[str, ...]) -> str | None:
    return None


def _sensitivity_applies(keys: tuple[str, ...]) -> str | None:
    return None if any(k != ABLATION_KEY for k in keys) else f"no searched key other than {ABLATION_KEY}"


def _ablation_applies(keys: tuple[str, ...]) -> str | None:
    return None if ABLATION_KEY in keys else f"the space does not search {ABLATION_KEY}"


def _importance_applies(keys: tuple[str, ...]) -> str | None:
    return None if len(keys) >= 2 else "needs a search over at least two keys"


def _joint_applies(keys: tuple[str, ...]) -> str | None:
    if len([k for k in keys if k != FACET_KEY]) >= 2:
        return None
    return f"needs a search over at least two keys besides {FACET_KEY}"


# The builders look their writers up when called (not at import), which keeps this module cheap and lets
# benchmarks/scale.py time each writer by replacing it on its module.

def _summary(study: Study) -> tuple[list[Path], str]:
    from study.reports.tables import write_summary_csv

    return [write_summary_csv(study)], ""


def _sensitivity(study: Study) -> tuple[list[Path], str]:
    from study.reports.sensitivity import plot_sensitivity

    return [p for key in study.searched if key != ABLATION_KEY for p in plot_sensitivity(study, key)], ""


def _ablation(study: Study) -> tuple[list[Path], str]:
    from study.reports.ablation import write_ablation

    return write_ablation(study), ""


def _importance(study: Study) -> tuple[list[Path], str]:
    from study.reports.importance import write_importance

    return write_importance(study), ""


def _joint(study: Study) -> tuple[list[Path], str]:
    from study.reports.joint import write_joint

    return write_joint(study)


def _tensorboard(study: Study) -> tuple[list[Path], str]:
    from study.reports.tensorboard import write_tensorboard

    return [write_tensorboard(study)], ""


REPORTS: dict[str, Report] = {r.name: r for r in (
    Report("summary", _always, _summary),
    Report("sensitivity", _sensitivity_applies, _sensitivity),
    Report("ablation", _ablation_applies, _ablation),
    Report("importance", _importance_applies, _importance),
    Report("joint", _joint_applies, _joint),
    Report("tensorboard", _always, _tensorboard),
)}


def default_reports(searched: tuple[str, ...]) -> list[str]:
    """Every report that applies to a search over ``searched``, in build order."""
    return [name for name, r in REPORTS.items() if r.applies(searched) is None]
