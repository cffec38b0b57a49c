"""The keys containerlab accepts, so podlab refuses what containerlab would refuse.

containerlab's JSON schema (``clab.schema.json``; a copy sits in
``../shared/schemas/``, never in this repository) forbids unknown keys at the
top level, in ``mgmt``, ``topology``, ``settings``, in every node-config
(``topology.defaults``, ``kinds.<kind>``, ``groups.<group>``, ``nodes.<node>``),
in short-form links and link endpoints, and allows only its own kind names under
``topology.kinds``. The key sets below are that schema's, encoded here;
``tests/unit/test_topology_clab_keys.py`` checks them against the schema file.
To follow a new containerlab release: replace the schema file, run that test,
copy the keys it reports.

``unknown_keys`` turns every unknown key into one located problem with a
"did you mean" hint (difflib), as podlab does for its own labels.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from harness.errors import Collector

TOP_KEYS = ("name", "prefix", "mgmt", "topology", "settings", "debug")
MGMT_KEYS = (
    "network", "bridge", "ipv4-subnet", "ipv6-subnet", "ipv4-gw", "ipv6-gw", "ipv4-range",
    "ipv6-range", "mtu", "external-access", "skip-when-unused", "driver-opts",
)  # fmt: skip
SETTINGS_KEYS = ("certificate-authority",)
TOPOLOGY_KEYS = ("nodes", "groups", "kinds", "defaults", "links")
# definitions/node-config: a node, and what it inherits from (defaults, kinds, groups)
NODE_KEYS = (
    "image", "image-pull-policy", "restart-policy", "kind", "license", "type", "group",
    "startup-config", "startup-delay", "enforce-startup-config", "suppress-startup-config",
    "auto-remove", "exec", "binds", "volumes", "ports", "env", "credentials", "env-files",
    "user", "hostname", "entrypoint", "cmd", "labels", "runtime", "mgmt-ipv4", "mgmt-ipv6",
    "network-mode", "link-apply-mode", "cpu", "memory", "cpu-set", "extras", "config",
    "stages", "dns", "certificate", "healthcheck", "components", "aliases", "shm-size",
    "cap-add", "privileged", "cgroupns-mode", "cgroup-parent", "pid-mode", "tmpfs",
    "security-opts", "sysctls", "devices",
)  # fmt: skip
# topology.kinds: containerlab's own kind names only
KIND_NAMES = (
    "nokia_srlinux", "nokia_srsim", "nokia_sros", "arista_ceos", "vyosnetworks_vyos",
    "juniper_crpd", "juniper_csrx", "sonic-vs", "sonic-vm", "dell_ftosv", "dell_sonic",
    "plvision_sonic", "juniper_vmx", "juniper_vsrx", "juniper_vjunosrouter",
    "juniper_vjunosswitch", "juniper_vjunosevolved", "cjunosevolved", "juniper_cjunosevolved",
    "aruba_aoscx", "cisco_xrd", "cisco_xrd_vrouter", "cisco_xrv", "cisco_xrv9k", "cisco_nxos",
    "cisco_n9kv", "cisco_csr", "cisco_cat9kv", "cisco_ftdv", "cisco_iol", "cisco_c8000",
    "cisco_c8000v", "cisco_sdwan", "cisco_asav", "cisco_vios", "linux", "bridge", "ovs-bridge",
    "host", "ipinfusion_ocnos", "keysight_ixia-c-one", "checkpoint_cloudguard", "ciena_saos",
    "ext-container", "rare", "nvidia_cumulusvx", "openbsd", "freebsd", "openwrt", "huawei_vrp",
    "generic_vm", "fdio_vpp", "arrcus_arcos", "mikrotik_ros", "6wind_vsr", "spirent_stc",
    "veesix_osvbng", "ostinato",
)  # fmt: skip
# definitions/link-config-short (a link without ``type:``) and definitions/link-endpoint
LINK_KEYS = ("endpoints", "mtu", "ipv4", "ipv6", "vars")
ENDPOINT_KEYS = ("node", "interface", "mac", "ipv4", "ipv6", "vars")

# What podlab does with each key of containerlab's schema (issue 17's audit). Every
# key of TOP_KEYS, MGMT_KEYS, NODE_KEYS, LINK_KEYS and ENDPOINT_KEYS has exactly one
# entry (tests/unit/test_topology_clab_keys.py); docs/containerlab.md prints this
# table. HONOURED: it means here what it means in containerlab (harness/topology/load.py
# and harness/plan read it). CLAB_ONLY: accepted, with no meaning for a namespace node
# or a VM (the reason says why nothing is lost). REFUSED: it would make another lab
# than the file describes, and podlab cannot build it; the reason and fix are the
# error. A key refused only for some values has an entry in ALLOWED_VALUES.
HONOURED, CLAB_ONLY, REFUSED = "honoured", "containerlab-only", "refused"
Setting = tuple[str, str, str]  # (status, reason, fix: what to write instead; refused only)
TOP_SETTINGS: dict[str, Setting] = {
    "name": (HONOURED, "the lab's name (a derived one where podlab's is stricter)", ""),
    "prefix": (CLAB_ONLY, "the prefix of container names; podlab names no containers", ""),
    "mgmt": (HONOURED, "the management network, key by key below", ""),
    "topology": (HONOURED, "nodes, groups, kinds, defaults and links", ""),
    "settings": (CLAB_ONLY, "only certificate-authority (containerlab's TLS PKI)", ""),
    "debug": (CLAB_ONLY, "containerlab's own debug output", ""),
}
MGMT_SETTINGS: dict[str, Setting] = {
    "network": (
        CLAB_ONLY,
        "the docker network's name; each podlab lab has its own "
        "management bridge inside the lab's namespaces",
        "",
    ),
    "bridge": (
        REFUSED,
        "it puts the management network on an existing host bridge; "
        "podlab's lives in the lab's own namespaces",
        "remove mgmt.bridge",
    ),
    "ipv4-subnet": (HONOURED, "the management subnet", ""),
    "ipv6-subnet": (
        REFUSED,
        "podlab's management network is IPv4 only: nodes would get no IPv6 management address",
        "remove mgmt.ipv6-subnet",
    ),
    "ipv4-gw": (HONOURED, "the host's address on the management subnet", ""),
    "ipv6-gw": (REFUSED, "podlab's management network is IPv4 only", "remove mgmt.ipv6-gw"),
    "ipv4-range": (
        HONOURED,
        "the range nodes without mgmt-ipv4 get addresses from "
        "(inside ipv4-subnet, as docker's ip-range)",
        "",
    ),
    "ipv6-range": (REFUSED, "podlab's management network is IPv4 only", "remove mgmt.ipv6-range"),
    "mtu": (
        REFUSED,
        "podlab's management links have MTU 1500 and cannot take another",
        "remove mgmt.mtu (data-plane links take mtu: per link)",
    ),
    "external-access": (
        HONOURED,
        "podlab never gives a lab external access (no forwarding "
        "or NAT in the host's namespace): false is what it builds",
        "",
    ),
    "skip-when-unused": (
        CLAB_ONLY,
        "docker network clean-up; podlab removes the management bridge with the lab",
        "",
    ),
    "driver-opts": (
        REFUSED,
        "docker bridge driver options have no equivalent on podlab's management bridge",
        "remove mgmt.driver-opts",
    ),
}
NODE_SETTINGS: dict[str, Setting] = {
    "image": (
        CLAB_ONLY,
        "a netns node runs the host's software, a VM the lab's guest "
        "image; export clab writes one back",
        "",
    ),
    "image-pull-policy": (CLAB_ONLY, "no image is pulled", ""),
    "restart-policy": (CLAB_ONLY, "a node lives until down; nothing restarts it", ""),
    "kind": (HONOURED, "linux and bridge; other kinds are refused with the reason", ""),
    "license": (CLAB_ONLY, "licences of network OS images", ""),
    "type": (CLAB_ONLY, "a network OS variant; linux nodes have none", ""),
    "group": (HONOURED, "settings inherited from topology.groups", ""),
    "startup-config": (
        CLAB_ONLY,
        "network OS configuration; containerlab gives linux nodes none either",
        "",
    ),
    "startup-delay": (
        HONOURED,
        "the node's exec starts no sooner than N seconds after the lab's nodes are up (see below)",
        "",
    ),
    "enforce-startup-config": (CLAB_ONLY, "as startup-config", ""),
    "suppress-startup-config": (CLAB_ONLY, "as startup-config", ""),
    "auto-remove": (CLAB_ONLY, "docker removes the exited container; down removes nodes", ""),
    "exec": (HONOURED, "commands run in order inside the node after up", ""),
    "binds": (HONOURED, "bind mounts into a netns node's private directories (refused on VMs)", ""),
    "volumes": (
        REFUSED,
        "named docker volumes do not exist here",
        "use binds: host-path:node-path",
    ),
    "ports": (
        REFUSED,
        "podlab publishes nothing on the host's addresses (lab traffic stays in the lab)",
        "remove ports: and reach the node at its management address, which the host routes to",
    ),
    "env": (HONOURED, "the environment of the node's exec commands", ""),
    "credentials": (CLAB_ONLY, "logins of network OS images", ""),
    "env-files": (
        REFUSED,
        "environment files are not read by podlab",
        "write the variables under env:",
    ),
    "user": (HONOURED, "root (or 0) only: exec commands run as root", ""),
    "hostname": (HONOURED, "only the node's own (derived) name: that is its hostname", ""),
    "entrypoint": (
        REFUSED,
        "a node's first process is podlab-init, not the image's",
        "start the program in exec: (it runs after up)",
    ),
    "cmd": (
        REFUSED,
        "a node's first process is podlab-init, not the image's",
        "start the program in exec: (it runs after up)",
    ),
    "labels": (HONOURED, "inherited as in containerlab; podlab.* labels select its regime", ""),
    "runtime": (CLAB_ONLY, "docker or podman; podlab nodes are namespaces or VMs", ""),
    "mgmt-ipv4": (HONOURED, "the node's fixed management address", ""),
    "mgmt-ipv6": (REFUSED, "podlab's management network is IPv4 only", "remove mgmt-ipv6"),
    "link-apply-mode": (
        CLAB_ONLY,
        "how `containerlab apply` changes links; podlab has no apply (a changed file is a new up)",
        "",
    ),
    "network-mode": (
        REFUSED,
        "a node always has its own network namespace (or VM)",
        "remove network-mode",
    ),
    "cpu": (
        CLAB_ONLY,
        "a container's size; netns nodes share the host's CPUs, VMs get the backend's size",
        "",
    ),
    "memory": (CLAB_ONLY, "as cpu", ""),
    "cpu-set": (CLAB_ONLY, "as cpu", ""),
    "extras": (CLAB_ONLY, "settings of other kinds (SR Linux agents, …)", ""),
    "config": (CLAB_ONLY, "variables of containerlab's config engine (clab config)", ""),
    "stages": (HONOURED, "wait-for orders exec; a stage's own exec is refused", ""),
    "dns": (REFUSED, "a netns node uses the host's resolver configuration", "remove dns:"),
    "certificate": (CLAB_ONLY, "containerlab's TLS PKI for network OS nodes", ""),
    "healthcheck": (
        CLAB_ONLY,
        "docker's health check; a node is healthy once its exec has run",
        "",
    ),
    "components": (CLAB_ONLY, "line cards of chassis kinds", ""),
    "aliases": (CLAB_ONLY, "names on docker's management network DNS; podlab runs none", ""),
    "shm-size": (CLAB_ONLY, "netns nodes share the host's /dev/shm", ""),
    "cap-add": (CLAB_ONLY, "nodes run as root with every capability already", ""),
    "privileged": (CLAB_ONLY, "as cap-add", ""),
    "cgroupns-mode": (CLAB_ONLY, "each node has a cgroup of its own under the lab's", ""),
    "cgroup-parent": (CLAB_ONLY, "as cgroupns-mode", ""),
    "pid-mode": (
        REFUSED,
        "each node has its own PID namespace with podlab-init as PID 1",
        "remove pid-mode",
    ),
    "tmpfs": (
        REFUSED,
        "a netns node shares the host's filesystem: the mountpoint would be the host's own path",
        "remove tmpfs:, or bind a directory below the node's private directories",
    ),
    "security-opts": (CLAB_ONLY, "docker's AppArmor/seccomp options; nodes have none", ""),
    "sysctls": (
        REFUSED,
        "sysctls are not applied from this key",
        "set them in exec: (sysctl -w net.ipv4.ip_forward=1)",
    ),
    "devices": (REFUSED, "host devices are not passed into nodes", "remove devices:"),
}
LINK_SETTINGS: dict[str, Setting] = {
    "endpoints": (HONOURED, "veth pairs (bridge ports on kind: bridge)", ""),
    "mtu": (HONOURED, "the veth MTU", ""),
    "ipv4": (HONOURED, "the endpoints' addresses", ""),
    "ipv6": (REFUSED, "labs are IPv4", "remove ipv6:, or add the addresses in exec:"),
    "vars": (CLAB_ONLY, "variables of containerlab's config engine", ""),
}
ENDPOINT_SETTINGS: dict[str, Setting] = {
    "node": (HONOURED, "the node, as the file names it", ""),
    "interface": (HONOURED, "the interface name in the node", ""),
    "mac": (
        REFUSED,
        "podlab does not set link MAC addresses from the file",
        "set it in exec: (ip link set eth1 address 02:00:00:00:00:01)",
    ),
    "ipv4": (HONOURED, "the endpoint's address", ""),
    "ipv6": (REFUSED, "labs are IPv4", "remove ipv6:, or add the address in exec:"),
    "vars": (CLAB_ONLY, "variables of containerlab's config engine", ""),
}
# keys refused only for some values: key -> (accepts the value?, what it accepts, fix)
ALLOWED_VALUES: dict[str, tuple[Any, str, str]] = {
    "user": (lambda v: str(v) in ("root", "0"), "root or 0 (exec commands run as root)",
             "remove user:, or write user: root"),
    "external-access": (lambda v: v is False, "false (podlab gives a lab no external access: "
                        "no forwarding or NAT in the host's namespace)",
                        "write external-access: false, or remove it"),
}  # fmt: skip


LINES = dict[tuple[str | int, ...], int]
# difflib's similarity a suggestion needs: "imgae" → image (0.8) and "lables" → labels
# (0.83) pass, "cluster" → user (0.73) does not
CUTOFF = 0.75


def check(data: Mapping[str, Any], c: Collector, lines: LINES) -> None:
    """Every key of a parsed topology that containerlab's schema would refuse."""
    unknown_keys(data, TOP_KEYS, (), "top level", c, lines, labels_hint=True)
    for section, allowed in (("mgmt", MGMT_KEYS), ("settings", SETTINGS_KEYS)):
        unknown_keys(data.get(section), allowed, (section,), section, c, lines)
    refused_keys(data.get("mgmt"), MGMT_SETTINGS, ("mgmt",), "mgmt", c, lines)
    topo = data.get("topology")
    if not isinstance(topo, Mapping):
        return
    unknown_keys(topo, TOPOLOGY_KEYS, ("topology",), "topology", c, lines, labels_hint=True)
    unknown_keys(topo.get("defaults"), NODE_KEYS, ("topology", "defaults"),
                 "topology.defaults", c, lines, labels_hint=True)  # fmt: skip
    unknown_keys(topo.get("kinds"), KIND_NAMES, ("topology", "kinds"), "topology.kinds", c,
                 lines, what="kind")  # fmt: skip
    for section, where in (("kinds", "topology.kinds.{}"), ("groups", "topology.groups.{}"),
                           ("nodes", "node {}")):  # fmt: skip
        entries = topo.get(section)
        if isinstance(entries, Mapping):
            for name, spec in entries.items():
                path = ("topology", section, name)
                unknown_keys(spec, NODE_KEYS, path, where.format(name), c, lines,
                             labels_hint=True)  # fmt: skip
                refused_keys(spec, NODE_SETTINGS, path, where.format(name), c, lines)
    refused_keys(topo.get("defaults"), NODE_SETTINGS, ("topology", "defaults"),
                 "topology.defaults", c, lines)  # fmt: skip
    links = topo.get("links")
    for i, link in enumerate(links if isinstance(links, list) else []):
        if isinstance(link, Mapping) and "type" not in link:  # typed links: not podlab's
            path = ("topology", "links", i)
            unknown_keys(link, LINK_KEYS, path, f"topology.links[{i}]", c, lines)
            # ipv6 is refused where the link is read (harness/topology/load.py)
            refused_keys(link, LINK_SETTINGS, path, f"topology.links[{i}]", c, lines,
                         skip=("ipv6",))  # fmt: skip
            for j, ep in enumerate(link.get("endpoints") or []):
                epath, ewhere = (*path, "endpoints", j), f"topology.links[{i}].endpoints[{j}]"
                unknown_keys(ep, ENDPOINT_KEYS, epath, ewhere, c, lines)
                refused_keys(ep, ENDPOINT_SETTINGS, epath, ewhere, c, lines, skip=("ipv6",))


def refused_keys(
    mapping: Any,
    table: Mapping[str, Setting],
    path: tuple[str | int, ...],
    where: str,
    c: Collector,
    lines: LINES,
    skip: tuple[str, ...] = (),
) -> None:
    """One problem per key of ``mapping`` that ``table`` refuses (or whose value
    ``ALLOWED_VALUES`` refuses), at the key's own line, with the reason and the fix:
    a file that means another lab is not built as this one."""
    if not isinstance(mapping, Mapping):
        return
    for key, value in mapping.items():
        status, why, fix = table.get(str(key), (HONOURED, "", ""))
        if key in skip or value is None:
            continue
        line = lines.get((*path, key)) or lines.get(path)
        if status == REFUSED:
            msg = f"{key} is not supported by podlab: {why}"
            c.add(where, msg, f"{fix} (see docs/containerlab.md)", line)
        elif key in ALLOWED_VALUES and not ALLOWED_VALUES[key][0](value):
            shown = str(value).lower() if isinstance(value, bool) else repr(value)
            msg = f"{key}: {shown} is not supported by podlab, only {ALLOWED_VALUES[key][1]}"
            c.add(where, msg, f"{ALLOWED_VALUES[key][2]} (see docs/containerlab.md)", line)


def unknown_keys(
    mapping: Any,
    allowed: Iterable[str],
    path: tuple[str | int, ...],
    where: str,
    c: Collector,
    lines: LINES,
    what: str = "key",
    labels_hint: bool = False,
) -> None:
    """One problem per key of ``mapping`` not in ``allowed``, at the key's own line.

    ``labels_hint`` adds where podlab's own settings belong (places a user may
    have put them: the top level, ``topology``, node settings).
    """
    if not isinstance(mapping, Mapping):
        return
    known = tuple(allowed)
    for key in mapping:
        if key in known:
            continue
        near = difflib.get_close_matches(str(key), known, n=1, cutoff=CUTOFF)
        if str(key).startswith("podlab."):
            near, hint = [], f"podlab settings are labels: write labels: {{{key}: …}}"
        elif near:
            hint = f"did you mean {near[0]}?"
        elif len(known) <= 12:
            hint = f"use one of {', '.join(known)}"
        elif what == "kind":
            hint = "name one of containerlab's kinds (linux, bridge …)"
        else:
            hint = "see containerlab's node settings (containerlab.dev/manual/nodes)"
        if labels_hint and not near and not str(key).startswith("podlab."):
            hint += "; podlab's own settings go in labels (podlab.cluster, podlab.mode …)"
        c.add(
            where,
            f"unknown {what} {key!r}: containerlab refuses it",
            hint,
            lines.get((*path, key)) or lines.get(path),
        )


def settings_markdown() -> str:
    """The audit table of docs/containerlab.md: every key, what podlab does with it, why.

    Generated from the tables above so the docs cannot drift from the loader
    (tests/unit/test_topology_clab_keys.py compares them).
    """
    rows = ["| place | key | podlab | why (and the fix, where refused) |", "|---|---|---|---|"]
    for place, table in (
        ("top level", TOP_SETTINGS),
        ("mgmt", MGMT_SETTINGS),
        ("node", NODE_SETTINGS),
        ("link", LINK_SETTINGS),
        ("endpoint", ENDPOINT_SETTINGS),
    ):
        for key, (status, why, fix) in table.items():
            text = f"{why}; fix: {fix}" if fix else why
            if key in ALLOWED_VALUES:
                status = f"{status} (only {ALLOWED_VALUES[key][1].split(' (')[0]})"
            rows.append(f"| {place} | `{key}` | {status} | {text} |")
    return "\n".join(rows) + "\n"
