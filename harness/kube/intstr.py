"""Int-or-percent values (``maxSurge: 1`` or ``maxSurge: 25%``), as apimachinery's intstr.

``scaled(value, total, round_up)`` is ``GetScaledValueFromIntOrPercent``: a
percentage of ``total`` rounded up (maxSurge) or down (maxUnavailable); a plain
number is itself. ``go_repr`` prints a value the way Kubernetes' validation
errors show it (``intstr.IntOrString{Type:0, IntVal:0, StrVal:""}``).
"""

from __future__ import annotations

import math
import re

IntOrStr = int | str
_PERCENT = re.compile(r"^[0-9]+%$")


def is_percent(value: IntOrStr) -> bool:
    return isinstance(value, str) and bool(_PERCENT.match(value))


def scaled(value: IntOrStr, total: int, round_up: bool) -> int:
    """The absolute number ``value`` stands for out of ``total``; ValueError if neither
    an int nor a percentage (validation refuses those first)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not is_percent(value):
        raise ValueError(f'invalid value for IntOrString: invalid value "{value}"')
    pct = int(str(value)[:-1])
    exact = pct * total / 100
    return math.ceil(exact) if round_up else math.floor(exact)


def plain(value: IntOrStr) -> int:
    """The number a value holds, ignoring the percent sign (``getIntOrPercentValue``)."""
    if isinstance(value, int):
        return value
    digits = value[:-1] if value.endswith("%") else value
    return int(digits) if digits.isdigit() else 0


def go_repr(value: IntOrStr) -> str:
    """How ``field.Invalid`` prints an IntOrString (Go's ``%#v``)."""
    if isinstance(value, int):
        return f'intstr.IntOrString{{Type:0, IntVal:{value}, StrVal:""}}'
    return f'intstr.IntOrString{{Type:1, IntVal:0, StrVal:"{value}"}}'
