"""Per-dataset views of a study whose search includes ``data.name`` (``study.space.FACET_KEY``).

F1 on one dataset is not F1 on another (synthetic MNER entity F1 and synthetic MRE micro F1 have different
ceilings and text-only floors), so the reports that average or compare configurations do it per dataset:
``facets(study)`` splits the study into one sub-study per dataset, each holding that dataset's trials and
taking that dataset as the reference value of ``data.name`` (so a configuration is compared with the
reference configuration of its own dataset). Without ``data.name`` searched it is the study itself, on the one
dataset of its base config (``dataset``).
"""

from __future__ import annotations

import dataclasses

from study.reports.load import Study
from study.reports.values import fmt_value, order_key
from study.space import FACET_KEY


def is_faceted(study: Study) -> bool:
    return FACET_KEY in study.searched


def dataset(study: Study) -> str:
    """The dataset of a study that does not search ``data.name``."""
    return str(study.base_config.get(FACET_KEY, "unknown"))


def facets(study: Study) -> list[tuple[str, Study]]:
    """``[("", study)]``, or ``(dataset, its sub-study)`` per dataset in the space's order."""
    if not is_faceted(study):
        return [("", study)]
    names: dict[str, list] = {}
    for t in study.trials:
        value = t.value(FACET_KEY)
        if value is not None:
            names.setdefault(fmt_value(value), []).append(t)
    listed = study.listed(FACET_KEY)
    out = []
    for name in sorted(names, key=lambda n: order_key(FACET_KEY, n, listed)):
        reference = {**(study.space.get("reference") or {}), FACET_KEY: name}
        space = {**study.space, "reference": reference}
        out.append((name, dataclasses.replace(study, space=space, trials=tuple(names[name]))))
    return out
