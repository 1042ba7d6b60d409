"""How searched values are written and ordered, the same way in every table and figure.

F1 values are used as the trainer stores them: percent (77.12, not 0.7712; see ``model/metrics.py``).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from model.config import ABLATIONS, BACKBONES, Config

# Keys whose values have a meaningful order that string sorting would break (resnet101 < resnet18).
KNOWN_ORDERS: dict[str, tuple[str, ...]] = {"i2srm.ablation": ABLATIONS, "model.backbone": BACKBONES}


def fmt_value(value: Any) -> str:
    """A searched value as a CSV cell / label: shortest exact float, YAML-style booleans."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def fmt_float(value: float | None, digits: int = 4) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def order_key(key: str, value: Any, listed: Sequence[Any] = ()) -> tuple[Any, ...]:
    """Sort key of one value of ``key``: numbers by size, known names in the method's order,
    other strings in the order the space lists them, then alphabetically."""
    if is_number(value):
        return (0, float(value), "")
    if isinstance(value, bool):
        return (1, float(value), "")
    text = fmt_value(value)
    known = KNOWN_ORDERS.get(key, ())
    if text in known:
        return (2, float(known.index(text)), "")
    listed_text = [fmt_value(v) for v in listed]
    if text in listed_text:
        return (3, float(listed_text.index(text)), "")
    return (4, 0.0, text)


def listed_values(spec: dict[str, Any]) -> list[Any]:
    """The values a grid/choice search lists (empty for ranges)."""
    for kind in ("grid", "choice"):
        if isinstance(spec.get(kind), list):
            return list(spec[kind])
    return []


def spec_kind(spec: dict[str, Any]) -> str:
    for kind in ("grid", "choice", "uniform", "loguniform", "int"):
        if kind in spec:
            return kind
    return ""


def reference_value(key: str, space: dict[str, Any]) -> Any:
    """The paper's value for ``key``: the space's ``reference`` or the trainer's dataclass default."""
    ref = space.get("reference") or {}
    if isinstance(ref, dict) and key in ref:
        return ref[key]
    return Config().flat().get(key)
