"""The CNI spec's rules that every part shares: versions, error codes, env checks, results.

Standard library only, and cheap to import: the plugin's entry point imports this
module on every call a runtime makes, and that start-up cost is paid per pod.
Behaviour follows the spec (containernetworking/cni ``SPEC.md`` 1.1.0) and,
where the spec is silent, libcni's ``pkg/skel`` (the Go plugins' shared main):
the same variables are required per command, the same validation of container
ID, interface and network names, the same version gating of CHECK (0.4.0+),
STATUS and GC (1.1.0+), and errors as JSON on **stdout** with exit status 1.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

#: Spec versions this plugin speaks; results are written in the caller's version.
VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CURRENT = "1.1.0"
COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION")

# Error codes (SPEC.md "Error"; 8 and 999 are libcni's ErrInvalidNetNS / ErrInternal).
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENV = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
INVALID_NETNS = 8
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
LIMITED_CONNECTIVITY = 51
INTERNAL = 999

# Which variables each command needs (skel's getCmdArgsFromEnv).
_REQUIRED = {
    "CNI_CONTAINERID": ("ADD", "CHECK", "DEL"),
    "CNI_NETNS": ("ADD", "CHECK"),
    "CNI_IFNAME": ("ADD", "CHECK", "DEL"),
    "CNI_PATH": ("ADD", "CHECK", "DEL", "GC", "STATUS"),
}
_NAME_FIRST = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_NAME_REST = _NAME_FIRST | set("_.-")


class CniError(Exception):
    """A CNI error result: ``code`` (the spec's table), ``msg`` and ``details``."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(f"{msg}{': ' + details if details else ''}")
        self.code, self.msg, self.details = code, msg, details

    def to_json(self, version: str = CURRENT) -> dict[str, Any]:
        out: dict[str, Any] = {"cniVersion": version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


def version_key(version: str) -> tuple[int, int, int]:
    """``"1.0.0"`` → ``(1, 0, 0)``; a malformed version is a decode failure (code 6)."""
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise CniError(DECODE_FAILURE, f'invalid version "{version}": expected MAJOR.MINOR.PATCH')
    return int(parts[0]), int(parts[1]), int(parts[2])


def at_least(version: str, minimum: str) -> bool:
    return version_key(version) >= version_key(minimum)


def valid_name(name: str) -> bool:
    """``[a-zA-Z0-9][a-zA-Z0-9_.-]*`` (container IDs and network names)."""
    return bool(name) and name[0] in _NAME_FIRST and all(c in _NAME_REST for c in name)


def _check_ifname(name: str) -> None:
    if len(name) > 15:
        raise CniError(
            INVALID_ENV, "interface name is too long", f"CNI_IFNAME {name!r} has more than 15 chars"
        )
    if name in (".", ".."):
        raise CniError(INVALID_ENV, "interface name is . or ..", f"CNI_IFNAME {name!r}")
    if any(c in "/:" or c.isspace() for c in name):
        raise CniError(
            INVALID_ENV,
            "interface name contains / or : or whitespace characters",
            f"CNI_IFNAME {name!r}",
        )


class Request:
    """One plugin invocation: the CNI_* variables and the configuration on stdin.

    A plain class, not a dataclass: ``dataclasses`` costs ~6 ms to import, on
    every call.
    """

    __slots__ = (
        "args",
        "command",
        "container_id",
        "ifname",
        "netns",
        "netns_override",
        "path",
        "stdin",
    )  # fmt: skip

    def __init__(
        self,
        command: str,
        container_id: str = "",
        netns: str = "",
        ifname: str = "",
        args: str = "",
        path: str = "",
        netns_override: bool = False,
        stdin: str = "",
    ) -> None:
        self.command, self.container_id, self.netns, self.ifname = (
            command, container_id, netns, ifname,
        )  # fmt: skip
        self.args, self.path, self.netns_override, self.stdin = args, path, netns_override, stdin

    def __repr__(self) -> str:
        return f"Request({self.command} {self.container_id} {self.ifname} {self.netns})"


def request_from_env(env: Mapping[str, str], stdin: str) -> Request:
    """Validate the environment as skel does; raise CniError (code 4) naming the variable."""
    cmd = env.get("CNI_COMMAND", "")
    missing = ["CNI_COMMAND"] if not cmd else []
    missing += [var for var, cmds in _REQUIRED.items() if cmd in cmds and not env.get(var)]
    if missing:
        raise CniError(INVALID_ENV, f"required env variables [{','.join(missing)}] missing")
    if cmd not in COMMANDS:
        raise CniError(INVALID_ENV, f"unknown CNI_COMMAND: {cmd}", "CNI_COMMAND")
    cid = env.get("CNI_CONTAINERID", "")
    if cmd in _REQUIRED["CNI_CONTAINERID"] and not valid_name(cid):
        raise CniError(INVALID_ENV, "invalid characters in containerID", f"CNI_CONTAINERID {cid!r}")
    ifname = env.get("CNI_IFNAME", "")
    if cmd in _REQUIRED["CNI_IFNAME"]:
        _check_ifname(ifname)
    override = env.get("CNI_NETNS_OVERRIDE", "").upper() in ("1", "TRUE")
    return Request(
        cmd,
        cid,
        env.get("CNI_NETNS", ""),
        ifname,
        env.get("CNI_ARGS", ""),
        env.get("CNI_PATH", ""),
        override,
        "" if cmd == "VERSION" else stdin,
    )


def parse_config(req: Request) -> dict[str, Any]:
    """The network configuration on stdin, checked as skel checks it before any work.

    Decode (code 6), name (7), version supported (1), and the minimum version of
    CHECK (0.4.0), STATUS and GC (1.1.0). Returns the parsed object.
    """
    try:
        conf = json.loads(req.stdin)
    except ValueError as exc:
        raise CniError(DECODE_FAILURE, f"error unmarshalling network config: {exc}") from exc
    if not isinstance(conf, dict):
        raise CniError(DECODE_FAILURE, "network config is not a JSON object")
    name = conf.get("name")
    if not name:
        raise CniError(INVALID_CONFIG, "missing network name", 'add "name" to the configuration')
    if not isinstance(name, str) or not valid_name(name):
        raise CniError(INVALID_CONFIG, "invalid characters found in network name", str(name))
    version = conf.get("cniVersion") or "0.1.0"
    if not isinstance(version, str):
        raise CniError(DECODE_FAILURE, f"cniVersion must be a string, not {version!r}")
    version_key(version)
    minimum = {"CHECK": "0.4.0", "STATUS": "1.1.0", "GC": "1.1.0"}.get(req.command)
    if minimum and not at_least(version, minimum):
        raise CniError(INCOMPATIBLE_VERSION, f"config version does not allow {req.command}")
    if version not in VERSIONS:
        raise CniError(
            INCOMPATIBLE_VERSION,
            "incompatible CNI versions",
            f'config is "{version}", plugin supports {json.dumps(list(VERSIONS))}',
        )
    return conf


def cni_args(raw: str) -> dict[str, str]:
    """``CNI_ARGS`` ``"K=V;K2=V2"`` as a dict (pairs without ``=`` are ignored)."""
    out = {}
    for pair in raw.split(";"):
        key, sep, value = pair.partition("=")
        if sep and key:
            out[key.strip()] = value.strip()
    return out


def version_result(stdin: str) -> dict[str, Any]:
    """VERSION's answer: the caller's ``cniVersion`` (if it sent one) and ours."""
    asked = CURRENT
    try:
        conf = json.loads(stdin) if stdin.strip() else {}
        if isinstance(conf, dict) and isinstance(conf.get("cniVersion"), str):
            asked = conf["cniVersion"]
    except ValueError:
        pass
    return {"cniVersion": asked, "supportedVersions": list(VERSIONS)}


_IF_FIELDS_1_1 = ("name", "mac", "mtu", "sandbox", "socketPath", "pciID")
_IF_FIELDS = ("name", "mac", "sandbox")
_ROUTE_FIELDS_1_1 = ("dst", "gw", "mtu", "advmss", "priority", "table", "scope")


def convert_result(result: dict[str, Any], version: str) -> dict[str, Any]:
    """A result built in 1.1.0's shape, written in ``version``'s shape.

    0.3.x/0.4.0 carry ``ips[].version``; the interface ``mtu``/``socketPath``/
    ``pciID`` and the route ``mtu``…``scope`` fields exist only from 1.1.0.
    """
    new = at_least(version, "1.1.0")
    fields = _IF_FIELDS_1_1 if new else _IF_FIELDS
    out: dict[str, Any] = {"cniVersion": version}
    if "interfaces" in result:
        out["interfaces"] = [
            {k: i[k] for k in fields if i.get(k) not in (None, "")} for i in result["interfaces"]
        ]
    ips = []
    for ip in result.get("ips", []):
        item = dict(ip)
        if not at_least(version, "1.0.0"):
            item["version"] = "6" if ":" in str(ip["address"]) else "4"
        ips.append(item)
    out["ips"] = ips
    rfields = _ROUTE_FIELDS_1_1 if new else ("dst", "gw")
    routes = [{k: r[k] for k in rfields if k in r} for r in result.get("routes", [])]
    if routes:
        out["routes"] = routes
    out["dns"] = dict(result.get("dns") or {})
    return out
