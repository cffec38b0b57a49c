"""Kubernetes' field error texts (apimachinery ``field.Error``), for refusals that read
exactly like the apiserver's: ``Invalid value: "700m": must be less than or equal
to cpu limit of 500m``, ``Required value``, ``Unsupported value: "X": supported
values: "A", "B"``.

A finding is ``(path, message, hint)``: the YAML path inside the object, the
Kubernetes message, and podlab's own hint (how to fix it).
"""

from __future__ import annotations

import json
from typing import Any

Path = tuple[str | int, ...]
Finding = tuple[Path, str, str]


def go_value(value: Any) -> str:
    """How ``field.Invalid`` prints a value: strings quoted, numbers bare, maps as Go."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
        body = ", ".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in sorted(value.items()))
        return f"map[string]string{{{body}}}"
    return json.dumps(value, sort_keys=True)


def invalid(value: Any, detail: str, raw: bool = False) -> str:
    """``Invalid value: <value>: <detail>``; ``raw`` prints ``value`` as given."""
    return f"Invalid value: {value if raw else go_value(value)}: {detail}"


def required(detail: str = "") -> str:
    return "Required value" + (f": {detail}" if detail else "")


def forbidden(detail: str) -> str:
    return f"Forbidden: {detail}"


def not_supported(value: Any, supported: list[str]) -> str:
    options = ", ".join(json.dumps(s) for s in supported)
    return f"Unsupported value: {go_value(value)}: supported values: {options}"


def not_found(value: Any) -> str:
    return f"Not found: {go_value(value)}"
