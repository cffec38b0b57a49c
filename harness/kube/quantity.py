"""Kubernetes resource quantities: ``500m``, ``0.5``, ``128Mi``, ``1e3``.

A quantity is an exact number and the format it was written in (BinarySI for
``Ki``…``Ei``, DecimalSI for ``m``, ``k``, ``M``… or no suffix, DecimalExponent
for ``1e3``), as in apimachinery's ``resource.Quantity``. The format matters
because Kubernetes' messages print quantities in their canonical form, and
podlab's quota refusals must read byte for byte like the apiserver's
(``requested: requests.memory=128Mi``): ``str(q)`` is apimachinery's
``Quantity.String()``. Values finer than a nano-unit are rounded up, as
apimachinery does when it parses. Sums keep the format of their left operand
(``Quantity.Add``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

BINARY = "BinarySI"
DECIMAL = "DecimalSI"
EXPONENT = "DecimalExponent"

_BINARY_SUFFIX = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL_SUFFIX = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15}
_DECIMAL_SUFFIX["E"] = 18
_SI_BY_EXP = {exp: suffix for suffix, exp in _DECIMAL_SUFFIX.items()}
_BINARY_BY_EXP = {exp: suffix for suffix, exp in _BINARY_SUFFIX.items()}
_NUMBER = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(.*)$")
_EXP = re.compile(r"^[eE]([+-]?[0-9]+)$")
_NANO = Fraction(1, 10**9)


class QuantityError(ValueError):
    """Not a quantity; the message is apimachinery's ("quantities must match …")."""


@dataclass(frozen=True, order=False)
class Quantity:
    """An exact amount and its format; compare with ``<``, add with ``+``."""

    value: Fraction
    fmt: str = DECIMAL

    # -- parsing ---------------------------------------------------------------------
    @classmethod
    def parse(cls, text: Any) -> Quantity:
        """``"500m"``, ``"1Gi"``, ``2`` (a YAML number), ``0.5`` → Quantity."""
        if isinstance(text, bool):
            raise QuantityError(_MUST_MATCH)
        if isinstance(text, int):
            return cls(Fraction(text), DECIMAL)
        if isinstance(text, float):
            text = repr(text)
        if not isinstance(text, str):
            raise QuantityError(_MUST_MATCH)
        m = _NUMBER.match(text.strip() if text.strip() == text else "\0")
        if m is None:
            raise QuantityError(_MUST_MATCH)
        number, suffix = Fraction(m.group(1)), m.group(2)
        if suffix in _BINARY_SUFFIX:
            value, fmt = number * 1024 ** _BINARY_SUFFIX[suffix], BINARY
        elif suffix in _DECIMAL_SUFFIX:
            value, fmt = number * Fraction(10) ** _DECIMAL_SUFFIX[suffix], DECIMAL
        elif (e := _EXP.match(suffix)) is not None:
            value, fmt = number * Fraction(10) ** int(e.group(1)), EXPONENT
        else:
            raise QuantityError("unable to parse quantity's suffix")
        if value.denominator != 1 and (value / _NANO).denominator != 1:
            value = Fraction(math.ceil(value / _NANO)) * _NANO  # apimachinery rounds up
        return cls(value, fmt)

    @classmethod
    def of(cls, value: int | Fraction, fmt: str = DECIMAL) -> Quantity:
        return cls(Fraction(value), fmt)

    @classmethod
    def milli(cls, millis: int, fmt: str = DECIMAL) -> Quantity:
        """``resource.NewMilliQuantity``."""
        return cls(Fraction(millis, 1000), fmt)

    # -- values ----------------------------------------------------------------------
    def milli_value(self) -> int:
        """``MilliValue()``: thousandths, rounded up (``0.0001`` CPU is ``1m``)."""
        return math.ceil(self.value * 1000)

    def int_value(self) -> int:
        """``Value()``: rounded up to a whole unit (bytes for memory)."""
        return math.ceil(self.value)

    def is_zero(self) -> bool:
        return self.value == 0

    def __add__(self, other: Quantity) -> Quantity:
        return Quantity(self.value + other.value, self.fmt)

    def __sub__(self, other: Quantity) -> Quantity:
        return Quantity(self.value - other.value, self.fmt)

    def __lt__(self, other: Quantity) -> bool:
        return self.value < other.value

    def __le__(self, other: Quantity) -> bool:
        return self.value <= other.value

    def __gt__(self, other: Quantity) -> bool:
        return self.value > other.value

    def __ge__(self, other: Quantity) -> bool:
        return self.value >= other.value

    def same(self, other: Quantity) -> bool:
        """Equal amounts, whatever their formats (``1Gi`` and ``1073741824``)."""
        return self.value == other.value

    # -- text ------------------------------------------------------------------------
    def __str__(self) -> str:
        """apimachinery's canonical ``String()``: ``1500m``, ``2``, ``100k``, ``1536Mi``."""
        if self.value == 0:
            return "0"
        fmt = self.fmt
        if fmt == BINARY and (abs(self.value) < 1024 or self.value.denominator != 1):
            fmt = DECIMAL  # small or fractional binary values print as decimal
        if fmt == BINARY:
            amount, exp = _remove_factors(int(self.value), 1024)
            while exp > 6:  # beyond Ei: keep the largest suffix
                amount, exp = amount * 1024, exp - 1
            return f"{amount}{_BINARY_BY_EXP.get(exp, '')}"
        amount, exp = _canonical_decimal(self.value)
        if fmt == EXPONENT:
            return f"{amount}e{exp}" if exp else str(amount)
        if exp in _SI_BY_EXP:
            return f"{amount}{_SI_BY_EXP[exp]}"
        if exp > 18:
            return f"{amount * 10 ** (exp - 18)}E"
        return f"{amount}e{exp}"

    def __repr__(self) -> str:
        return f"Quantity({str(self)!r})"


_MUST_MATCH = (
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)


def _remove_factors(value: int, base: int) -> tuple[int, int]:
    times = 0
    while value != 0 and value % base == 0:
        value //= base
        times += 1
    return value, times


def _canonical_decimal(value: Fraction) -> tuple[int, int]:
    """``mantissa × 10**exp`` with an integer mantissa and exp a multiple of 3
    (``AsCanonicalBytes``): every factor of ten moved into the exponent, then the
    exponent lowered to the next multiple of three."""
    exp = 0
    while value.denominator != 1:
        value *= 10
        exp -= 1
    amount, times = _remove_factors(int(value), 10)
    exp += times
    shift = exp % 3
    return amount * 10**shift, exp - shift


def parse_or_none(text: Any) -> Quantity | None:
    """The quantity, or None when ``text`` is not one (callers validate first)."""
    try:
        return Quantity.parse(text)
    except QuantityError:
        return None


ZERO = Quantity(Fraction(0), DECIMAL)
