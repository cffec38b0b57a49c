"""The scenario catalogue: each CONFORMANCE.md scenario, where it applies, and what it costs.

This table is the ONE place a scenario is declared. A suite's test joins it with
``@pytest.mark.scenario(N)``; the plugin reads the entry to decide, per matrix
mode and before any fixture runs, whether the test is

- **not applicable** here (the entry's ``applies`` or ``needs`` gives the
  reason: "strict mode needs encryption", "the lab has no outside host"),
- **not selected** in this run (a ``heavy`` or ``once`` test the default
  matrix runs in other modes of the same families: see ``matrix.py``), or
- **run**.

A test may narrow its entry for itself: ``@pytest.mark.scenario(28, cost="heavy")``
(4-stream throughput is heavier than the rest of 28) or ``applies=`` a rule of its
own. Rules are plain functions returning the reason something does not apply
(or None when it does), so the reason travels into the results unchanged.
How to add a scenario: docs/conformance.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

from harness.conformance.modes import ModeSpec
from harness.plan.model import LabPlan

Cost = Literal["light", "heavy", "once"]
Scope = Literal["cluster", "lab"]
COSTS: dict[str, str] = {
    "light": "seconds per mode: runs in every mode of every matrix",
    "heavy": "tens of seconds per mode, datapath-dependent: the default matrix runs it "
    "once per mode family (the cover), MATRIX=full in every mode",
    "once": "the result cannot depend on the datapath: the default matrix runs it in "
    "one mode, MATRIX=full in every mode",
}


@dataclass(frozen=True)
class LabShape:
    """What lab rules see of a lab: enough to say "this lab cannot offer that"."""

    name: str
    clusters: int
    outside_hosts: int
    max_segments_per_cluster: int
    backend: str = "netns"
    meshed: int = 0  # clusters in the lab's largest mesh (podlab.mesh)

    @classmethod
    def of(cls, plan: LabPlan, backend: str = "netns") -> LabShape:
        segments = [
            len({n.underlay.segment for n in plan.cluster_nodes(c) if n.underlay})
            for c in plan.clusters
        ]
        outside = sum(1 for n in plan.nodes.values() if n.role == "host")
        meshes = Counter(c.mesh for c in plan.clusters.values() if c.mesh)
        return cls(plan.name, len(plan.clusters), outside, max(segments, default=0), backend,
                   max(meshes.values(), default=0))  # fmt: skip


ModeRule = Callable[[ModeSpec], str | None]
LabRule = Callable[[LabShape], str | None]


def every_mode(_: ModeSpec) -> str | None:
    return None


def any_lab(_: LabShape) -> str | None:
    return None


def only_modes(*modes: str, why: str) -> ModeRule:
    """Applies in the datapath modes named (with or without encryption)."""

    def rule(m: ModeSpec) -> str | None:
        return None if m.mode in modes else f"{m}: {why}"

    return rule


def encrypted(m: ModeSpec) -> str | None:
    return None if m.encryption != "none" else f"{m}: no encryption (runs in MODE+wireguard)"


def outside_host(lab: LabShape) -> str | None:
    if lab.outside_hosts:
        return None
    return f"lab {lab.name} has no outside host (a node with podlab.role: host)"


def two_segments(lab: LabShape) -> str | None:
    if lab.max_segments_per_cluster >= 2:
        return None
    return f"lab {lab.name}: no cluster spans two L2 segments"


def two_clusters(lab: LabShape) -> str | None:
    return None if lab.clusters >= 2 else f"lab {lab.name} has a single cluster"


def mesh_routing(m: ModeSpec) -> str:
    """How a mesh reaches the other cluster's pods in this mode (ClusterPlan.mesh_routing)."""
    return "native routing" if m.mode == "bgp" else "tunnel"


def mesh(lab: LabShape) -> str | None:
    if lab.meshed >= 2:
        return None
    return f"lab {lab.name} has no two clusters in one mesh (label podlab.mesh)"


def vm_backend(lab: LabShape) -> str | None:
    return None if lab.backend == "vm" else f"lab {lab.name} is not a VM lab ({lab.backend})"


@dataclass(frozen=True)
class Scenario:
    """One catalogue scenario: number and title as in CONFORMANCE.md, rules, cost, scope.

    ``scope`` "cluster": checked inside one cluster (in a lab of several, per
    cluster); "lab": needs the whole lab (the mesh scenarios). ``quiet``: it
    measures a rate or a time that a busy neighbour would distort (throughput,
    latency, an SLO), so it never runs while another run shares the machine's
    lab (docs/adr/0010-per-cluster-conformance-runs.md). ``elsewhere`` names where a
    scenario is measured when no shipped suite does it (a bench).
    """

    number: int
    title: str
    cost: Cost = "light"
    applies: ModeRule = every_mode
    needs: LabRule = any_lab
    scope: Scope = "cluster"
    quiet: bool = False
    elsewhere: str = ""
    # A family axis of the scenario's own, on top of the three of modes.py: the cover
    # then meets each of its values too (the mesh: native or tunnel routing).
    extra_axis: Callable[[ModeSpec], str] | None = None


def _s(number: int, title: str, cost: Cost = "light", **kw: Any) -> tuple[int, Scenario]:
    return number, Scenario(number, title, cost, **kw)


# The mesh scenarios need two clusters of one mesh and the whole lab. Only 24 (pod
# routing across clusters) has the routing axis of its own: how a packet reaches the
# other cluster (native BGP routes or the mesh's tunnel) is what it checks. 25–27
# (services, failover, policy) sit on top of that path like 7–18 on the in-cluster
# one, so they meet the three family axes once each (ADR 0009's cover), not the
# routing axis too: docs/adr/0018-mesh-in-the-default-run.md.
_MESH: dict[str, Any] = {"needs": mesh, "scope": "lab"}
_Q: dict[str, Any] = {"quiet": True}
CATALOGUE: dict[int, Scenario] = dict([
    _s(1, "Pod→pod (same node, across nodes)"),
    _s(2, "Node→pod and pod→node"),
    _s(3, "Path MTU"),
    _s(4, "Egress to the outside (masquerade)", needs=outside_host),
    _s(5, "Pod network-ready latency", "heavy", **_Q),
    _s(6, "Datapath convergence", "heavy", **_Q),
    _s(7, "ClusterIP backends and spread", "heavy"),
    _s(8, "Hairpin", "heavy"),
    _s(9, "Multi-port services", "heavy"),
    _s(10, "NodePort", "heavy"),
    _s(11, "Session affinity", "heavy"),
    _s(12, "No endpoints → reject", "heavy"),
    _s(13, "Network programming latency", "heavy", **_Q),
    _s(14, "Proxy scale", "once", elsewhere="bench/bench_proxy.py"),
    _s(15, "DNS records", "heavy"),
    _s(16, "DNS latency", "heavy", elsewhere="bench/bench_dns.py", **_Q),
    _s(17, "Network policy allow/deny", "heavy"),
    _s(18, "Policy enforcement latency", "heavy", **_Q),
    _s(19, "Encryption leak test"),
    _s(20, "Encryption strict mode", applies=encrypted),
    _s(21, "BGP sessions and withdrawal", quiet=True,
       applies=only_modes("bgp", why="no BGP control plane (runs in mode bgp)")),
    _s(22, "Cross-subnet encapsulation", needs=two_segments,
       applies=only_modes("cross-subnet", why="not mode cross-subnet")),
    _s(23, "Mode switch interruption", "once", **_Q),  # the switch to the next entry, under flows
    _s(24, "Cross-cluster pod→pod", "heavy", extra_axis=mesh_routing, **_MESH),  # tunnel, native
    _s(25, "Global services", "heavy", **_MESH),
    _s(26, "Cross-cluster failover", "heavy", **_MESH, **_Q),
    _s(27, "Cross-cluster policy", "heavy", **_MESH),
    _s(28, "Throughput", **_Q),
    _s(29, "Latency and connection rate", **_Q),
    _s(30, "Hygiene after the run"),
    _s(31, "Rolling update", "once"),
    _s(32, "Autoscaler", "once"),
    _s(33, "ResourceQuota and LimitRange", "once"),
    _s(34, "Scale: hollow nodes", "once", **_Q),
    _s(35, "CNI spec suite", "once"),
    _s(36, "Third-party runtime on the pod network", "heavy"),  # per pod interface family
    _s(37, "Kernel-only features (VM labs)", "heavy", needs=vm_backend),
])  # fmt: skip


@dataclass(frozen=True)
class Declared:
    """A test's declaration: its scenario's entry, narrowed by the test's own marker kwargs."""

    scenario: Scenario
    cost: Cost
    applies: ModeRule
    needs: LabRule

    def not_applicable(self, mode: ModeSpec, lab: LabShape | None) -> str | None:
        """Why the test does not apply to ``mode`` in ``lab`` (None: it applies)."""
        for reason in (self.scenario.applies(mode), self.applies(mode)):
            if reason:
                return reason
        if lab is not None:
            for reason in (self.scenario.needs(lab), self.needs(lab)):
                if reason:
                    return reason
        return None


def declare(number: int, cost: Cost | None = None, applies: ModeRule | None = None,
            needs: LabRule | None = None) -> Declared:  # fmt: skip
    """The declaration of a test marked ``scenario(number, cost=…, applies=…, needs=…)``."""
    if number not in CATALOGUE:
        where = "harness/conformance/catalogue.py"
        raise KeyError(f"scenario {number} is not in the catalogue ({where})")
    entry = CATALOGUE[number]
    if cost is not None and cost not in COSTS:
        raise ValueError(f"scenario {number}: cost {cost!r} is not one of {', '.join(COSTS)}")
    return Declared(entry, cost or entry.cost, applies or every_mode, needs or any_lab)


NOT_APPLICABLE = "not applicable: "


def not_applicable(reason: str) -> NoReturn:
    """Skip the running test as not applicable (the lab or mode cannot have it), saying why.

    For what only shows at run time (a lab without a second node); what a mode
    or lab shape decides belongs in the catalogue's rules instead.
    """
    import pytest

    pytest.skip(NOT_APPLICABLE + reason)
