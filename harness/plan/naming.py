"""Every kernel name podlab creates, in one place.

Names are deterministic, ≤ 15 characters where the kernel limits them
(interfaces), and carry our prefix so cleanup can tell ours from anyone else's.
Long lab names are shortened with a stable hash rather than truncated, so two
labs never collide on a prefix.
"""

from __future__ import annotations

import hashlib

PREFIX = "podlab"
IFNAMSIZ = 15  # usable characters in a Linux interface name
ALTNAME_MARK = "podlab"


def lab_tag(lab: str) -> str:
    """A 6-character stable tag for a lab, used inside interface names."""
    return hashlib.sha256(lab.encode()).hexdigest()[:6]


def netns_name(lab: str, node: str) -> str:
    """Name of a node's network namespace under /run/netns."""
    return f"{PREFIX}-{lab}-{node}"


def mgmt_bridge(lab: str) -> str:
    """The lab's management bridge in the root namespace: ``plm-<tag>``."""
    return f"plm-{lab_tag(lab)}"


def mgmt_host_veth(lab: str, index: int) -> str:
    """Root-namespace end of a node's management veth: ``plm<tag><idx>``."""
    name = f"pl{lab_tag(lab)}m{index}"
    assert len(name) <= IFNAMSIZ
    return name


def link_peer_tmp(lab: str, index: int, end: int) -> str:
    """Temporary name of a link's veth end before it moves into its node."""
    return f"pl{lab_tag(lab)}l{index}{'ab'[end]}"


def altname(lab: str) -> str:
    """The marker altname prefix every interface of a lab carries."""
    return f"{ALTNAME_MARK}-{lab_tag(lab)}"


def vm_netns(lab: str) -> str:
    """The one namespace holding a VM lab's taps, bridges and qemu processes.

    ``--`` cannot end a node's namespace name (node names never end in ``-``
    followed by ``-vm``… and a lab would need a node literally named ``-vm``).
    """
    return f"{PREFIX}-{lab}--vm"


def vm_tap(index: int, nic: int) -> str:
    """Tap of node ``index``'s NIC ``nic`` (0 = management) inside the VM namespace."""
    return f"t{index}n{nic}"


def vm_segment_bridge(index: int) -> str:
    """Bridge of underlay segment ``index`` inside the VM namespace (``brm``: management)."""
    return f"bs{index}"
