"""``podlab export clab``: the lab as a file ``containerlab deploy`` accepts.

For moving a podlab lab onto containerlab (and from there onto clabernetes)
when one machine is not enough. The file is built from the plan, not copied
from the source, so that everything podlab decided is written out explicitly:

- ``mgmt.ipv4-subnet`` and each node's ``mgmt-ipv4``: the same management plan;
- nodes ``kind: linux`` with an image (``--image``, default ``DEFAULT_IMAGE``),
  their labels (``podlab.*`` included: containerlab accepts any label), ``env``;
- ``exec``: the addresses, routes and forwarding podlab would configure, then
  the node's own ``exec:`` — containerlab assigns no data-plane address itself;
- links with their MTU; a ``kind: bridge`` segment becomes containerlab's
  ``kind: bridge`` node, which names a host bridge that must exist before
  ``containerlab deploy`` (containerlab does not create it).

podlab's agents are not started by the export: they are deployed afterwards
with Ansible against the inventory, as on podlab's own backends.
"""

from __future__ import annotations

from typing import Any

from harness.plan import naming
from harness.plan.model import LabPlan

DEFAULT_IMAGE = "podlab/node:bookworm"


def export_clab(plan: LabPlan, image: str = DEFAULT_IMAGE) -> dict[str, Any]:
    """The containerlab topology (as data) of ``plan``; keys in containerlab's schema."""
    shown = {n.name: n.clab_name or n.name for n in plan.nodes.values()}
    nodes: dict[str, Any] = {}
    for n in plan.nodes.values():
        cmds = []
        if n.is_router:
            cmds.append("sysctl -w net.ipv4.ip_forward=1")
        for i in n.interfaces:
            if i.address is not None:
                cmds.append(f"ip addr add {i.address} dev {i.name}")
        cmds += [f"ip route add {r.dest} via {r.via} dev {r.dev}" for r in n.routes]
        cmds += list(n.exec)
        spec: dict[str, Any] = {"kind": "linux", "mgmt-ipv4": str(n.mgmt.ip)}
        if n.labels:
            spec["labels"] = dict(n.labels)
        if n.env:
            spec["env"] = dict(n.env)
        if cmds:
            spec["exec"] = cmds
        nodes[shown[n.name]] = spec
    tag = naming.lab_tag(plan.name)
    links: list[dict[str, Any]] = []
    for index, seg in enumerate(plan.segments.values()):
        members = [(shown[node], ifname) for node, ifname in seg.members]
        if seg.kind == "bridge":
            nodes[seg.name] = {"kind": "bridge"}
            for port, (node, ifname) in enumerate(members):
                # the bridge end lives in the host's namespace: unique host-wide, ≤ 15
                host_end = f"pl{tag}b{index}p{port}"
                links.append(
                    {"endpoints": [f"{node}:{ifname}", f"{seg.name}:{host_end}"], "mtu": seg.mtu}
                )
        else:
            links.append({"endpoints": [f"{a}:{i}" for a, i in members], "mtu": seg.mtu})
    return {
        "name": plan.clab_name or plan.name,
        "mgmt": {"network": f"podlab-{plan.name}", "ipv4-subnet": str(plan.mgmt_subnet)},
        "topology": {
            "defaults": {"kind": "linux", "image": image},
            "nodes": nodes,
            "links": links,
        },
    }
