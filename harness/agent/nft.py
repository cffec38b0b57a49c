"""nftables through one wrapper: ``nft -j -f -`` with one atomic JSON document.

The agent owns table ``ip podlab`` in its node's namespace and nothing else. Each
apply sends "add table; delete table; add table; chains; rules" as ONE document,
so the kernel swaps the whole ruleset atomically (no window without NAT, no
duplicate rules after a restart).

The table holds the pod egress masquerade (chain ``postrouting``) and, for modes
that encapsulate, chains ``raw-prerouting`` / ``raw-output`` (priority raw) that
exempt the mode's own outer packets from conntrack: VXLAN, flannel-udp and
WireGuard UDP to or from the mode's port, IPIP protocol 4, each only to or from
this node's underlay address. The NAT and filter hooks of this table, the
proxy's and the policy's make the kernel track every packet of the namespace;
the outer packets need no state (they are never NATed or policed), and tracking
them cost VXLAN about 3-5 % more CPU per bit than the hand-built path
(docs/throughput.md).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from harness.agent.datapath.base import Tunnel
from harness.exec import run

TABLE = "podlab"
FAMILY = "ip"
RAW_PRIO = -300  # NF_IP_PRI_RAW: before conntrack (-200)


def _match_net(field: str, net: ipaddress.IPv4Network, op: str = "==") -> dict[str, Any]:
    return {
        "match": {
            "op": op,
            "left": {"payload": {"protocol": "ip", "field": field}},
            "right": {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}},
        }
    }


def _rule(chain: str, *expr: dict[str, Any], comment: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {"family": FAMILY, "table": TABLE, "chain": chain, "expr": list(expr)}
    if comment:
        body["comment"] = comment
    return {"add": {"rule": body}}


def _match(proto: str, field: str, value: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": {"payload": {"protocol": proto, "field": field}},
                      "right": value}}  # fmt: skip


def _chain(name: str, kind: str, hook: str, prio: int) -> dict[str, Any]:
    return {"add": {"chain": {"family": FAMILY, "table": TABLE, "name": name, "type": kind,
                              "hook": hook, "prio": prio, "policy": "accept"}}}  # fmt: skip


def untracked_rules(
    tunnels: list[Tunnel],
    underlay: ipaddress.IPv4Address,
    service_cidr: ipaddress.IPv4Network | None = None,
) -> list[dict[str, Any]]:
    """Raw chains with ``notrack`` for the mode's outer packets (empty for no tunnel).

    In: addressed to this node's underlay address, UDP to the tunnel port (or IP
    protocol 4). Out: from that address, UDP to or from the port (VXLAN sends to
    it, WireGuard from it), never towards a Service address (those need DNAT).
    """
    if not tunnels:
        return []
    notrack = {"notrack": None}
    pre = [_match("ip", "daddr", str(underlay))]
    out = [_match("ip", "saddr", str(underlay))]
    if service_cidr is not None:
        out.append(_match_net("daddr", service_cidr, "!="))
    rules = [_chain("raw-prerouting", "filter", "prerouting", RAW_PRIO),
             _chain("raw-output", "filter", "output", RAW_PRIO)]  # fmt: skip
    why = "tunnel packets need no conntrack"
    for t in tunnels:
        if t.proto == "ipip":
            proto = _match("ip", "protocol", 4)
            rules += [_rule("raw-prerouting", *pre, proto, notrack, comment=why),
                      _rule("raw-output", *out, proto, notrack, comment=why)]  # fmt: skip
            continue
        rules.append(_rule("raw-prerouting", *pre, _match("udp", "dport", t.port), notrack,
                           comment=why))  # fmt: skip
        for field in ("dport", "sport"):
            rules.append(_rule("raw-output", *out, _match("udp", field, t.port), notrack,
                               comment=why))  # fmt: skip
    return rules


def masquerade_ruleset(
    pod_cidr: ipaddress.IPv4Network,
    no_nat: list[ipaddress.IPv4Network] | None = None,
    tunnels: list[Tunnel] | None = None,
    underlay: ipaddress.IPv4Address | None = None,
    service_cidr: ipaddress.IPv4Network | None = None,
) -> dict[str, Any]:
    """Pod egress leaving the cluster pod CIDR is masqueraded; pod→pod is not.

    ``no_nat``: more destinations reached by pod address (the pod CIDRs of the
    other clusters of a mesh), one ``return`` rule each before the masquerade.
    With ``tunnels`` (and this node's ``underlay`` address) the same table also
    exempts the mode's outer packets from conntrack (``untracked_rules``).

    Mirrors flannel's ``--ip-masq`` rules: traffic from the pod CIDR to the pod
    CIDR returns untouched, traffic from the pod CIDR to anywhere else except
    multicast is masqueraded (port-randomised, like ``--random-fully``).
    """
    tbl = {"family": FAMILY, "name": TABLE}
    multicast = ipaddress.IPv4Network("224.0.0.0/4")
    return {
        "nftables": [
            {"metainfo": {"json_schema_version": 1}},
            {"add": {"table": tbl}},
            {"delete": {"table": tbl}},
            {"add": {"table": tbl}},
            {
                "add": {
                    "chain": {
                        **{"family": FAMILY, "table": TABLE, "name": "postrouting"},
                        "type": "nat",
                        "hook": "postrouting",
                        "prio": 100,
                        "policy": "accept",
                    }
                }
            },
            _rule(
                "postrouting",
                _match_net("saddr", pod_cidr),
                _match_net("daddr", pod_cidr),
                {"return": None},
                comment="pod to pod: no NAT",
            ),
            *(
                _rule(
                    "postrouting",
                    _match_net("saddr", pod_cidr),
                    _match_net("daddr", net),
                    {"return": None},
                    comment="pod to a pod of another cluster of the mesh: no NAT",
                )
                for net in no_nat or []
            ),
            _rule(
                "postrouting",
                _match_net("saddr", pod_cidr),
                _match_net("daddr", multicast, "!="),
                {"masquerade": {"flags": ["fully-random"]}},
                comment="pod egress leaves the cluster: masquerade",
            ),
            *(untracked_rules(tunnels, underlay, service_cidr) if tunnels and underlay else []),
        ]
    }


def apply(doc: dict[str, Any], timeout: float = 10.0) -> None:
    """Load one JSON document atomically in the current namespace."""
    run(["nft", "-j", "-f", "-"], timeout=timeout, input=json.dumps(doc))


def list_table(timeout: float = 10.0) -> dict[str, Any]:
    """Our table as ``nft -j`` prints it (a read-only probe)."""
    out = run(["nft", "-j", "list", "table", FAMILY, TABLE], timeout=timeout)
    return dict(json.loads(out.stdout))
