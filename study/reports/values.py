"""How searched values are written and ordered, the same way in every table and figure.

F1 values are used as the trainer stores them: percent (77.12, not 0.7712; see ``model/metrics.py``).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

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


DISPLAY_DIGITS = 4
"""Significant digits of a searched float where people read it (REPORT.md, tables, figure labels); CSV cells
and the retrain command keep the exact value (``fmt_value``)."""
NA = "n/a"


def display_values(values: Iterable[Any], digits: int = DISPLAY_DIGITS) -> dict[str, str]:
    """Exact text (``fmt_value``) -> shown text of each value: floats to ``digits`` significant digits, more
    where two different values would otherwise print alike (0.5488 and 0.5489 stay apart)."""
    exact = list(dict.fromkeys(fmt_value(v) for v in values))
    floats = {text: float(text) for text in exact if _is_float_text(text)}
    for d in range(digits, 18):
        shown = {text: _short(x, d) for text, x in floats.items()}
        if len(set(shown.values())) == len(shown):
            break
    return {text: shown.get(text, text) for text in exact}


def fmt_display(value: Any, digits: int = DISPLAY_DIGITS) -> str:
    """One value as shown to a reader (see ``display_values``); ``unset`` for none."""
    if value is None:
        return "unset"
    return display_values([value], digits)[fmt_value(value)]


def _is_float_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return any(c in text for c in ".eE") and text.lower() not in ("nan", "inf", "-inf")


def _short(x: float, digits: int) -> str:
    return f"{x:.{digits}g}"


def fmt_mean_std(mean: float, std: float, digits: int = 2) -> str:
    """``mean ± std``; a std that does not exist (one seed) is ``n/a``, never ``± 0.00``."""
    if math.isnan(mean):
        return NA
    return f"{mean:.{digits}f} ± " + (NA if math.isnan(std) else f"{std:.{digits}f}")


def fmt_p(p: float | None, digits: int = 3) -> str:
    """A p-value for a table: ``n/a`` when there is none, ``<0.001`` below what ``digits`` can show."""
    if p is None or math.isnan(p):
        return NA
    if p < 0.5 * 10 ** -digits:
        return f"<{10 ** -digits:.{digits}f}"
    return f"{p:.{digits}f}"


def fmt_number(value: float | None, digits: int = 6) -> str:
    """A statistic in a CSV cell: ``digits`` significant digits (p-values span many orders), empty for none."""
    return "" if value is None or math.isnan(value) else f"{value:.{digits}g}"


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


def reference_value(key: str, space: dict[str, Any]) -> Any:
    """The paper's value for ``key``: the space's ``reference`` or the trainer's dataclass default."""
    ref = space.get("reference") or {}
    if isinstance(ref, dict) and key in ref:
        return ref[key]
    return Config().flat().get(key)
