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

LINES = dict[tuple[str | int, ...], int]
# difflib's similarity a suggestion needs: "imgae" → image (0.8) and "lables" → labels
# (0.83) pass, "cluster" → user (0.73) does not
CUTOFF = 0.75


def check(data: Mapping[str, Any], c: Collector, lines: LINES) -> None:
    """Every key of a parsed topology that containerlab's schema would refuse."""
    unknown_keys(data, TOP_KEYS, (), "top level", c, lines, labels_hint=True)
    for section, allowed in (("mgmt", MGMT_KEYS), ("settings", SETTINGS_KEYS)):
        unknown_keys(data.get(section), allowed, (section,), section, c, lines)
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
    links = topo.get("links")
    for i, link in enumerate(links if isinstance(links, list) else []):
        if isinstance(link, Mapping) and "type" not in link:  # typed links: not podlab's
            path = ("topology", "links", i)
            unknown_keys(link, LINK_KEYS, path, f"topology.links[{i}]", c, lines)
            for j, ep in enumerate(link.get("endpoints") or []):
                unknown_keys(ep, ENDPOINT_KEYS, (*path, "endpoints", j),
                             f"topology.links[{i}].endpoints[{j}]", c, lines)  # fmt: skip


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
