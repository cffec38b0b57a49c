"""nftables through one wrapper: ``nft -j -f -`` with one atomic JSON document.

The agent owns table ``ip podlab`` in its node's namespace and nothing else. Each
apply sends "add table; delete table; add table; chains; rules" as ONE document,
so the kernel swaps the whole ruleset atomically (no window without NAT, no
duplicate rules after a restart).
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from harness.exec import run

TABLE = "podlab"
FAMILY = "ip"


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


def masquerade_ruleset(
    pod_cidr: ipaddress.IPv4Network, no_nat: list[ipaddress.IPv4Network] | None = None
) -> dict[str, Any]:
    """Pod egress leaving the cluster pod CIDR is masqueraded; pod→pod is not.

    ``no_nat``: more destinations reached by pod address (the pod CIDRs of the
    other clusters of a mesh), one ``return`` rule each before the masquerade.

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
        ]
    }


def apply(doc: dict[str, Any], timeout: float = 10.0) -> None:
    """Load one JSON document atomically in the current namespace."""
    run(["nft", "-j", "-f", "-"], timeout=timeout, input=json.dumps(doc))


def list_table(timeout: float = 10.0) -> dict[str, Any]:
    """Our table as ``nft -j`` prints it (a read-only probe)."""
    out = run(["nft", "-j", "list", "table", FAMILY, TABLE], timeout=timeout)
    return dict(json.loads(out.stdout))
