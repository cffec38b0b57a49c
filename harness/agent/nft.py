"""nftables through one wrapper: ``nft -j -f -`` with one atomic JSON document.

The agent owns table ``ip podlab`` in its node's namespace, and for modes that
encapsulate table ``netdev podlab-underlay``, and nothing else. Each apply sends
"add table; delete table; add table; chains; rules" as ONE document, so the
kernel swaps the whole ruleset atomically (no window without NAT, no duplicate
rules after a restart).

``ip podlab`` holds the pod egress masquerade (chain ``postrouting``). For modes
that encapsulate, the mode's own outer packets are exempted from conntrack:
VXLAN, flannel-udp and WireGuard UDP to or from the mode's port, IPIP protocol
4, each only to or from this node's underlay address. Outgoing ones in chain
``raw-output`` of ``ip podlab`` (hook output, priority raw: only packets the
node itself sends pass it, never a forwarded pod packet); incoming ones in
chain ``raw-ingress`` of ``netdev podlab-underlay`` (hook ingress on the
underlay interface: only frames arriving there pass it, never a pod packet,
which arrives on a pod veth, ``cni0`` or the tunnel device). The NAT hooks of
``ip podlab``, the proxy's and the policy's make the kernel track every packet
of the namespace; the outer packets need no state (they are never NATed or
policed), and tracking them cost VXLAN about 3-5 % more CPU per bit than the
hand-built path. An earlier ``raw-prerouting`` chain did the incoming half but
was passed by every packet of the namespace, pod packets included
(docs/throughput.md, "What costs", item 8).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from harness.agent.datapath.base import Tunnel
from harness.exec import run

TABLE = "podlab"
FAMILY = "ip"
UNDERLAY_TABLE = "podlab-underlay"  # family netdev: the underlay interface's ingress hook
RAW_PRIO = -300  # NF_IP_PRI_RAW: before conntrack (-200)
INGRESS_PRIO = -500  # first on the device; conntrack runs later, in prerouting


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
    """Chain ``raw-output`` of ``ip podlab``: ``notrack`` for the mode's outgoing outer
    packets (empty for no tunnel).

    From this node's underlay address, UDP to or from the port (VXLAN sends to
    it, WireGuard from it) or IP protocol 4, never towards a Service address
    (those need DNAT). The incoming half is ``underlay_document``.
    """
    if not tunnels:
        return []
    notrack = {"notrack": None}
    out = [_match("ip", "saddr", str(underlay))]
    if service_cidr is not None:
        out.append(_match_net("daddr", service_cidr, "!="))
    rules = [_chain("raw-output", "filter", "output", RAW_PRIO)]
    why = "tunnel packets need no conntrack"
    for t in tunnels:
        if t.proto == "ipip":
            rules.append(_rule("raw-output", *out, _match("ip", "protocol", 4), notrack,
                               comment=why))  # fmt: skip
            continue
        for field in ("dport", "sport"):
            rules.append(_rule("raw-output", *out, _match("udp", field, t.port), notrack,
                               comment=why))  # fmt: skip
    return rules


def underlay_document(
    tunnels: list[Tunnel], underlay: ipaddress.IPv4Address | None, device: str | None
) -> list[dict[str, Any]]:
    """Table ``netdev podlab-underlay``: ``notrack`` for the incoming outer packets.

    One base chain ``raw-ingress`` on the ingress hook of the underlay interface
    ``device``: addressed to this node's ``underlay`` address, UDP to the tunnel
    port (or IP protocol 4). A packet marked untracked there skips conntrack in
    prerouting (the kernel keeps the mark up to it; decapsulation clears it, so
    the inner packet is tracked as before). The table is replaced atomically, and
    removed when there is no tunnel. Kernel: netdev ingress chains since 4.2, the
    ``notrack`` expression has no hook restriction (Debian 12's 6.1 included).
    """
    tbl = {"family": "netdev", "name": UNDERLAY_TABLE}
    doc: list[dict[str, Any]] = [{"add": {"table": tbl}}, {"delete": {"table": tbl}}]
    if not tunnels or underlay is None or not device:
        return doc
    base = {"family": "netdev", "table": UNDERLAY_TABLE, "name": "raw-ingress"}
    doc += [
        {"add": {"table": tbl}},
        {"add": {"chain": {**base, "type": "filter", "hook": "ingress", "dev": device,
                           "prio": INGRESS_PRIO, "policy": "accept"}}},
    ]  # fmt: skip
    to_me = _match("ip", "daddr", str(underlay))
    for t in tunnels:
        proto = _match("ip", "protocol", 4) if t.proto == "ipip" else _match("udp", "dport", t.port)
        rule = {"family": "netdev", "table": UNDERLAY_TABLE, "chain": "raw-ingress",
                "expr": [to_me, proto, {"notrack": None}],
                "comment": "tunnel packets need no conntrack"}  # fmt: skip
        doc.append({"add": {"rule": rule}})
    return doc


def masquerade_ruleset(
    pod_cidr: ipaddress.IPv4Network,
    no_nat: list[ipaddress.IPv4Network] | None = None,
    tunnels: list[Tunnel] | None = None,
    underlay: ipaddress.IPv4Address | None = None,
    service_cidr: ipaddress.IPv4Network | None = None,
    underlay_dev: str | None = None,
) -> dict[str, Any]:
    """Pod egress leaving the cluster pod CIDR is masqueraded; pod→pod is not.

    ``no_nat``: more destinations reached by pod address (the pod CIDRs of the
    other clusters of a mesh), one ``return`` rule each before the masquerade.
    With ``tunnels`` (and this node's ``underlay`` address and interface
    ``underlay_dev``) the mode's outer packets are exempted from conntrack: the
    outgoing ones in this table (``untracked_rules``), the incoming ones in table
    ``netdev podlab-underlay`` (``underlay_document``; removed in the same
    document when there is no tunnel).

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
            *underlay_document(tunnels or [], underlay, underlay_dev),
        ]
    }


def apply(doc: dict[str, Any], timeout: float = 10.0) -> None:
    """Load one JSON document atomically in the current namespace."""
    run(["nft", "-j", "-f", "-"], timeout=timeout, input=json.dumps(doc))


def list_table(timeout: float = 10.0) -> dict[str, Any]:
    """Our table as ``nft -j`` prints it (a read-only probe)."""
    out = run(["nft", "-j", "list", "table", FAMILY, TABLE], timeout=timeout)
    return dict(json.loads(out.stdout))
