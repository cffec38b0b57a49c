"""JSON Schemas of CNI results and errors, per spec version, written from SPEC.md §5.

``result_problems(result, version, ifname, netns)`` returns what is wrong with an
ADD result: the schema (types, required keys, which fields exist in which
version) and the rules a schema cannot say (``ips[].interface`` indexes
``interfaces``; the container interface carries ``sandbox`` = ``CNI_NETNS``).
Pure functions: unit-tested on captured results.
"""

from __future__ import annotations

from typing import Any

import jsonschema

from harness.cni.spec import at_least

MAC = r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$"
IPV4 = r"^\d{1,3}(\.\d{1,3}){3}$"
CIDR = r"^[0-9a-fA-F.:]+/\d{1,3}$"


def result_schema(version: str) -> dict[str, Any]:
    """The ADD result of an interface plugin in ``version``'s shape."""
    new = at_least(version, "1.1.0")
    iface: dict[str, Any] = {
        "name": {"type": "string", "minLength": 1},
        "mac": {"type": "string", "pattern": MAC},
        "sandbox": {"type": "string"},
    }
    if new:
        iface |= {"mtu": {"type": "integer"}, "socketPath": {"type": "string"},
                  "pciID": {"type": "string"}}  # fmt: skip
    ip: dict[str, Any] = {
        "address": {"type": "string", "pattern": CIDR},
        "gateway": {"type": "string"},
        "interface": {"type": "integer", "minimum": 0},
    }
    ip_required = ["address"]
    if not at_least(version, "1.0.0"):
        ip["version"] = {"enum": ["4", "6"]}
        ip_required.append("version")
    route: dict[str, Any] = {"dst": {"type": "string", "pattern": CIDR}, "gw": {"type": "string"}}
    if new:
        route |= {k: {"type": "integer"} for k in ("mtu", "advmss", "priority", "table", "scope")}
    return {
        "type": "object",
        "required": ["cniVersion", "ips"],
        "properties": {
            "cniVersion": {"const": version},
            "interfaces": {
                "type": "array",
                "items": {"type": "object", "required": ["name"], "properties": iface,
                          "additionalProperties": False},
            },
            "ips": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "object", "required": ip_required, "properties": ip,
                          "additionalProperties": False},
            },
            "routes": {
                "type": "array",
                "items": {"type": "object", "required": ["dst"], "properties": route,
                          "additionalProperties": False},
            },
            "dns": {
                "type": "object",
                "properties": {
                    "nameservers": {"type": "array", "items": {"type": "string"}},
                    "domain": {"type": "string"},
                    "search": {"type": "array", "items": {"type": "string"}},
                    "options": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    }  # fmt: skip


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["code", "msg"],
    "properties": {
        "cniVersion": {"type": "string"},
        "code": {"type": "integer", "minimum": 1},
        "msg": {"type": "string", "minLength": 1},
        "details": {"type": "string"},
    },
}


def _schema_problems(value: Any, schema: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
        for e in sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    ]


def result_problems(result: Any, version: str, ifname: str, netns: str) -> list[str]:
    """Everything wrong with an ADD result (empty: it is a valid result)."""
    problems = _schema_problems(result, result_schema(version))
    if problems or not isinstance(result, dict):
        return problems
    interfaces = result.get("interfaces") or []
    for i, ip in enumerate(result["ips"]):
        idx = ip.get("interface")
        if idx is None:
            continue
        if idx >= len(interfaces):
            problems.append(f"ips/{i}/interface: {idx} is not an index of interfaces")
            continue
        iface = interfaces[idx]
        if iface.get("name") != ifname:
            problems.append(f"ips/{i}: its interface is {iface.get('name')!r}, not CNI_IFNAME")
        if iface.get("sandbox") != netns:
            problems.append(f"interfaces/{idx}/sandbox: {iface.get('sandbox')!r} != CNI_NETNS")
    if not any(i.get("name") == ifname and i.get("sandbox") for i in interfaces):
        problems.append(f"no interface {ifname!r} with a sandbox in interfaces")
    return problems


def error_problems(error: Any) -> list[str]:
    """Everything wrong with an error result (it must be JSON on stdout)."""
    if error is None:
        return ["no error JSON on stdout"]
    return _schema_problems(error, ERROR_SCHEMA)
