"""``podlab export clab``: the lab as a file ``containerlab deploy`` accepts.

For moving a podlab lab onto containerlab (and from there onto clabernetes)
when one machine is not enough. The file is built from the plan, not copied
from the source, so that everything podlab decided is written out explicitly:

- ``mgmt.ipv4-subnet`` and each node's ``mgmt-ipv4``: the same management plan;
- nodes ``kind: linux`` with an image (``--image``, default ``DEFAULT_IMAGE``),
  their labels (``podlab.*`` included: containerlab accepts any label), ``env``;
- ``exec``: the addresses, routes and forwarding podlab would configure
  (containerlab assigns no data-plane address itself); on cluster nodes then what
  ``podlab deploy`` puts there (``harness.deploy.render``: the common role's
  directories and sysctls, etcd's, the agent's and the controller manager's
  configuration, supervisord running them, the deploy's health checks); then the
  node's own ``exec:``;
- links with their MTU; a ``kind: bridge`` segment becomes containerlab's
  ``kind: bridge`` node, which names a host bridge that must exist before
  ``containerlab deploy`` (containerlab does not create it).

The image must carry what the deploy would install (``image_needs``): the
Debian packages of the common role and podlab in ``/opt/podlab/venv``. What a
file cannot carry (a mesh's PKI, hollow nodes) is listed by ``render.not_carried``
and written at the top of the file.
"""

from __future__ import annotations

import shlex
from typing import Any

from harness.deploy import render
from harness.plan import naming
from harness.plan.model import LabPlan

DEFAULT_IMAGE = "podlab/node:bookworm"
CHECK_TRIES = 120  # a health check is retried this often, 0.5 s apart (60 s, as on VMs)


def export_clab(
    plan: LabPlan, image: str = DEFAULT_IMAGE, services_too: bool = True
) -> dict[str, Any]:
    """The containerlab topology (as data) of ``plan``; keys in containerlab's schema.

    ``services_too=False`` leaves out what the deploy would start (for a lab whose
    cluster components are deployed with Ansible afterwards, as on podlab's backends).
    """
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
        services = render.node_services(plan, n) if services_too else None
        if services is not None:
            cmds += service_commands(services)
        cmds += list(n.exec)
        spec: dict[str, Any] = {"kind": "linux", "mgmt-ipv4": str(n.mgmt.ip)}
        if n.labels:
            spec["labels"] = dict(n.labels)
        if n.env:
            spec["env"] = dict(n.env)
        if n.binds:  # containerlab's own binds: the same host paths, resolved
            spec["binds"] = [f"{src}:{dst}{':ro' if ro else ''}" for src, dst, ro in n.binds]
        if n.startup_delay:  # its own: containerlab adds what wait-for implies itself
            spec["startup-delay"] = n.startup_delay
        stages: dict[str, Any] = {}
        for stage, other, theirs in n.waits:
            entry = {"node": other, **({"stage": theirs} if theirs else {})}
            stages.setdefault(stage, {"wait-for": []})["wait-for"].append(entry)
        if stages:
            spec["stages"] = stages
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


def service_commands(services: render.NodeServices) -> list[str]:
    """The deploy's part of one node as exec commands: directories, sysctls, each file
    written whole (a quoted here-document: readable in the exported file), supervisord
    started on its configuration, then each health check the deploy waits on."""
    cmds = [f"mkdir -p {' '.join(services.dirs)}"]
    cmds.append("sysctl -w " + " ".join(f"{k}={v}" for k, v in services.sysctls))
    for path, content in services.files.items():
        body = content if content.endswith("\n") else content + "\n"
        script = f"cat > {path} <<\\PODLAB_EOF\n{body}PODLAB_EOF"  # quoted: no expansion
        cmds.append(f"sh -c {shlex.quote(script)}")
    cmds.append(f"supervisord -c {services.supervisor_conf}")
    for argv in services.checks:
        check = shlex.join(argv)
        script = (
            f"for i in $(seq {CHECK_TRIES}); do {check} >/dev/null 2>&1 && exit 0; "
            f"sleep 0.5; done; {check}"
        )
        cmds.append(f"sh -c {shlex.quote(script)}")
    return cmds


def image_needs(plan: LabPlan) -> list[str]:
    """What the nodes' image must carry for the exported exec: to work, one line each."""
    packages: set[str] = set()
    for n in plan.nodes.values():
        services = render.node_services(plan, n)
        if services is not None:
            packages.update(services.packages)
    if not packages:
        return []
    return [
        f"Debian packages: {', '.join(sorted(packages))}",
        "podlab installed in /opt/podlab/venv (the wheelhouse `podlab deploy` builds)",
    ]
