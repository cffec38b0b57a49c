"""podlab-cni's network configuration: what the plugin reads, and the lists podlab writes.

Plugin keys (besides the spec's ``cniVersion``, ``name``, ``type``,
``runtimeConfig``, ``args``, ``prevResult``):

- ``mode`` (required): ``bridge`` (Flannel family: a veth into ``bridge``, the
  gateway = the subnet's first address on it) or ``routed`` (Calico family:
  ``cali*`` veth, /32, 169.254.1.1 answered by proxy-ARP);
- ``bridge`` (``cni0``): the bridge's name (mode bridge);
- ``mtu`` (``FLANNEL_MTU`` of ``subnetFile``, else 1500): both veth ends and the bridge;
- ``subnetFile`` (``/run/podlab/subnet.env``): the node's lease in flannel's
  format, written by podlab-agent;
- ``dataDir`` (``/var/lib/podlab/cni``): IPAM reservations;
- ``agentSocket`` (``/run/podlab/cni.sock``): the agent's CNI server; ``""``
  makes the plugin always work in-process;
- ``healthFile`` (``/run/podlab/agent-health.json``): the agent's heartbeat, for STATUS;
- ``hairpinMode`` (``true``): hairpin on bridge ports (a pod reaching itself
  through a Service).

Capabilities: ``ips`` (``runtimeConfig.ips``: the address to reuse); ``CNI_ARGS``
``IP=`` does the same, and ``K8S_POD_NAMESPACE``/``K8S_POD_NAME`` name the host
side of the veth as the agent names it. An ``ipam`` section is refused (code 2):
the plugin allocates from the node's lease itself (docs/cni.md says why).

Standard library only (the plugin's entry point imports it).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.cni.spec import (
    INVALID_CONFIG,
    TRY_AGAIN_LATER,
    UNSUPPORTED_FIELD,
    CniError,
    Request,
    cni_args,
)

PLUGIN_TYPE = "podlab-cni"
MODES = ("bridge", "routed")
DEFAULT_SUBNET_FILE = "/run/podlab/subnet.env"
DEFAULT_DATA_DIR = "/var/lib/podlab/cni"
DEFAULT_SOCKET = "/run/podlab/cni.sock"
DEFAULT_HEALTH_FILE = "/run/podlab/agent-health.json"


@dataclass(frozen=True)
class NetConf:
    """One podlab-cni invocation's configuration, validated."""

    name: str
    version: str
    mode: str
    bridge: str
    mtu: int | None
    subnet_file: str
    data_dir: str
    agent_socket: str
    health_file: str
    hairpin: bool
    raw: dict[str, Any]

    @property
    def prev_result(self) -> dict[str, Any] | None:
        prev = self.raw.get("prevResult")
        return prev if isinstance(prev, dict) and prev else None

    def wanted_ip(self, req: Request) -> str | None:
        """The address the runtime asks for (``ips`` capability, else ``CNI_ARGS`` IP=)."""
        ips = (self.raw.get("runtimeConfig") or {}).get("ips") or []
        if ips:
            return str(ips[0])
        return cni_args(req.args).get("IP") or None


def _field(conf: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    """``conf[key]`` if it has type ``kind`` (a bool is not an int), else CniError 7."""
    value = conf.get(key)
    if value is None:
        return default
    ok = (
        isinstance(value, bool)
        if kind is bool
        else (isinstance(value, kind) and not isinstance(value, bool))
    )
    if not ok:
        raise CniError(
            INVALID_CONFIG,
            f"invalid network config: {key} must be a {kind.__name__}",
            f"{key}: {value!r}",
        )
    return value


def parse(conf: dict[str, Any]) -> NetConf:
    """Validate podlab-cni's keys; raise CniError (code 7 or 2) naming the key."""
    mode = conf.get("mode")
    if mode not in MODES:
        raise CniError(
            INVALID_CONFIG,
            f"invalid network config: mode must be one of {', '.join(MODES)}",
            f"mode: {mode!r}",
        )
    if "ipam" in conf:
        raise CniError(
            UNSUPPORTED_FIELD,
            "unsupported field ipam: podlab-cni allocates from the node's lease itself",
            f"ipam: {conf['ipam']!r}",
        )
    mtu = _field(conf, "mtu", int, None)
    if mtu is not None and not 576 <= mtu <= 65535:
        raise CniError(INVALID_CONFIG, "invalid network config: mtu out of range", f"mtu: {mtu}")
    return NetConf(
        name=str(conf["name"]),
        version=str(conf.get("cniVersion") or "0.1.0"),
        mode=mode,
        bridge=_field(conf, "bridge", str, "cni0"),
        mtu=mtu,
        subnet_file=_field(conf, "subnetFile", str, DEFAULT_SUBNET_FILE),
        data_dir=_field(conf, "dataDir", str, DEFAULT_DATA_DIR),
        agent_socket=_field(conf, "agentSocket", str, DEFAULT_SOCKET),
        health_file=_field(conf, "healthFile", str, DEFAULT_HEALTH_FILE),
        hairpin=_field(conf, "hairpinMode", bool, True),
        raw=conf,
    )


@dataclass(frozen=True)
class NodeSubnet:
    """The node's lease as ``subnet.env`` gives it (flannel's format)."""

    network: ipaddress.IPv4Network  # FLANNEL_NETWORK: the cluster's pod CIDR
    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Interface  # FLANNEL_SUBNET: the gateway address/prefix
    mtu: int


def read_subnet_file(path: str) -> NodeSubnet:
    """Parse ``subnet.env``; a missing or partial file is "try again later" (code 11)."""
    hint = "podlab-agent writes it once it holds the node's lease: is it running here?"
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise CniError(TRY_AGAIN_LATER, f"cannot read {path}: {exc.strerror}", hint) from exc
    env = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )
    try:
        gateway = ipaddress.IPv4Interface(env["FLANNEL_SUBNET"])
        return NodeSubnet(
            ipaddress.IPv4Network(env["FLANNEL_NETWORK"]),
            gateway.network,
            gateway,
            int(env.get("FLANNEL_MTU", "1500")),
        )
    except (KeyError, ValueError) as exc:
        raise CniError(TRY_AGAIN_LATER, f"{path} is incomplete or malformed: {exc}", hint) from exc


def conflist(
    name: str,
    mode: str,
    mtu: int,
    *,
    subnet_file: str = DEFAULT_SUBNET_FILE,
    data_dir: str = DEFAULT_DATA_DIR,
    agent_socket: str = DEFAULT_SOCKET,
    health_file: str = DEFAULT_HEALTH_FILE,
    chain: list[dict[str, Any]] | None = None,
    versions: list[str] | None = None,
) -> dict[str, Any]:
    """A network configuration list with podlab-cni first and ``chain`` after it.

    ``cniVersion`` is 1.0.0 (Debian 12's libcni and reference plugins stop
    there); ``versions`` goes to ``cniVersions`` for runtimes that can use newer
    ones. Only list 1.1.0 when every plugin of the chain speaks it: a runtime
    picks ONE version for the whole list.
    """
    plugin: dict[str, Any] = {
        "type": PLUGIN_TYPE,
        "mode": mode,
        "mtu": mtu,
        "subnetFile": subnet_file,
        "dataDir": data_dir,
        "agentSocket": agent_socket,
        "healthFile": health_file,
        "capabilities": {"ips": True},
    }
    if mode == "bridge":
        plugin["bridge"] = "cni0"
    out: dict[str, Any] = {"cniVersion": "1.0.0", "name": name}
    if versions:
        out["cniVersions"] = versions
    out["plugins"] = [plugin, *(chain or [])]
    return out
