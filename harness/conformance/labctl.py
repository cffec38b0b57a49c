"""The lab a conformance run tests: attach to one that is up, or build, deploy and remove one.

Everything goes through the lab, deploy and api areas' functions (no ``podlab``
subprocess). A ``Lab`` carries what the suites need to find their way: the plan
(nodes, segments, clusters), the lab directory (ssh config), each cluster's
etcd endpoint, and the datapath mode each cluster currently runs.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.api.client import ApiClient
from harness.api.schedule import is_ready
from harness.api.target import cluster_endpoints
from harness.conformance.modes import ModeSpec
from harness.errors import LabError, UserError
from harness.inventory import inventory_path, project_home
from harness.plan.build import load_plan
from harness.plan.model import LabPlan, NodePlan
from harness.store import Store

if TYPE_CHECKING:
    from harness.lab.state import Ledger

NODE_WAIT_S = 120.0
# How often the ready waits look again (an etcd read; one ssh round per node for the
# routes). After a switch they mostly pass at the first or second look, and every
# run of a lockstep phase waits once: 1 s between looks was a second lost per look
# (docs/conformance.md, "A switch in a few seconds").
READY_POLL_S = 0.25


@dataclass
class Lab:
    """A lab under test and what the run knows about it."""

    name: str
    lab_dir: Path
    plan: LabPlan
    inventory: Path
    built: bool = False
    endpoints: dict[str, str] = field(default_factory=dict)
    deployed: dict[str, ModeSpec] = field(default_factory=dict)  # cluster -> current mode
    # The cluster a run is about (``--cluster``): its suites, deploys and waits touch only
    # it, so that two runs can share a lab, one per cluster. None: every cluster.
    focus: str | None = None

    @property
    def ssh_config(self) -> Path:
        return self.lab_dir / "ssh_config"

    @property
    def topology(self) -> str:
        return self.plan.name

    @property
    def first_cluster(self) -> str:
        """The cluster suites test when they name none: the focus, else the first."""
        return self.focus or next(iter(self.plan.clusters))

    @property
    def clusters(self) -> tuple[str, ...]:
        """The clusters this run deploys and waits for: the focus, else all."""
        return (self.focus,) if self.focus else tuple(self.plan.clusters)

    def port(self, base: int) -> int:
        """``base`` moved per focused cluster, for servers on nodes runs share (the outside)."""
        if not self.focus:
            return base
        return base + 10 * list(self.plan.clusters).index(self.focus)

    def set_focus(self, cluster: str | None) -> None:
        """Test only ``cluster`` (refused with the lab's clusters named if it has none such)."""
        if cluster is not None and cluster not in self.plan.clusters:
            names = ", ".join(self.plan.clusters) or "none"
            raise UserError(f"--cluster {cluster}: lab {self.name} has no such cluster ({names})")
        self.focus = cluster

    def client(self, cluster: str | None = None) -> ApiClient:
        cluster = cluster or self.first_cluster
        url = self.endpoints.get(cluster)
        if not url:
            raise LabError(f"lab {self.name}: no etcd endpoint for cluster {cluster} in inventory")
        # ClusterIPs come from the cluster's own service CIDR: the API's default
        # (10.96.0.0/16) is only the first cluster's, and an address outside the
        # CIDR the agents make local gets no reject when a service has no endpoints
        cidr = ipaddress.IPv4Network(str(self.plan.clusters[cluster].service_cidr))
        return ApiClient(Store([url]), cluster, service_cidr=cidr)

    def cluster_nodes(self, cluster: str | None = None) -> list[NodePlan]:
        """The cluster's nodes that run pods: workers first, then the control plane."""
        nodes = self.plan.cluster_nodes(cluster or self.first_cluster)
        return sorted(nodes, key=lambda n: (n.role != "worker", n.name))

    def outside_nodes(self) -> list[NodePlan]:
        """Lab nodes in no cluster that play "the outside world" (role host)."""
        return [n for n in self.plan.nodes.values() if n.role == "host"]

    def mode(self, cluster: str | None = None) -> ModeSpec:
        cluster = cluster or self.first_cluster
        if cluster in self.deployed:
            return self.deployed[cluster]
        cp = self.plan.clusters[cluster]
        return ModeSpec(cp.mode, cp.encryption)


def attach(name: str) -> Lab:
    """A lab that is already up (built by ``podlab up``); refuse one that is not."""
    from harness.lab.state import Ledger, find

    paths = find(name)
    if not paths.state.exists():
        raise UserError(f"lab {name!r} is not up (fix: `podlab up TOPOLOGY`, or pass --topology)")
    ledger = Ledger.load(paths)
    plan = load_plan(ledger.source)
    return _lab(plan, paths.root, built=False)


def bring_up(topology: Path, backend: str = "netns") -> Lab:
    """Build the topology's lab; an identical lab already up is reused (and left up)."""
    from harness.lab.backend import UpRequest, backends
    from harness.lab.state import find

    plan = load_plan(topology)
    already = find(plan.name).state.exists()
    result = backends()[backend]().up(UpRequest(file=topology, plan=plan))
    bad = [r.node for r in result.rows if r.state != "up"]
    if bad:
        raise LabError(f"lab {plan.name}: nodes not up after `up`: {', '.join(bad)}")
    return _lab(plan, find(plan.name).root, built=not already)


def _lab(plan: LabPlan, lab_dir: Path, built: bool) -> Lab:
    inv = inventory_path(plan.name, project_home())
    endpoints = cluster_endpoints(inv) if inv.is_file() else {}
    return Lab(plan.name, lab_dir, plan, inv, built, endpoints)


def deploy(
    lab: Lab, spec: ModeSpec | None = None, attempts: int = 2, switch: bool = False
) -> float:
    """Run the deploy playbook (with a mode override); return how long it took in seconds.

    The playbook is idempotent, so a failed run is retried once (``attempts``)
    before the failure (every attempt's) is raised: a matrix of several modes
    should not lose a whole mode to one transient service restart.

    ``switch``: only switch the mode (``podlab deploy --switch``, playbooks/switch.yml:
    the agents' configuration and restart, the mode-dependent plays), which a
    matrix does between its entries. A node that does not run the current sources
    (the tree changed since the lab was deployed) refuses a switch; then the full
    deploy runs instead, since installing them is what the user's edit asks for.
    """
    from harness.deploy.deploy import deploy as run_deploy
    from harness.deploy.deploy import request_for, switch_refused

    overrides: dict[str, str | None] = {"podlab_mode": None, "podlab_encryption": None}
    if spec:
        overrides = {"podlab_mode": spec.mode, "podlab_encryption": spec.encryption}
    start = time.monotonic()
    errors: list[str] = []
    tries = 0
    while tries < attempts:
        req = request_for(lab.name, None, overrides, limit=lab.focus, switch=switch)
        result = run_deploy(req)
        if result.ok:
            break
        if switch and switch_refused(result.failures):
            switch = False  # other sources on the nodes: the full deploy, at once
            continue
        tries += 1
        failures = "; ".join(str(f) for f in result.failures[:3]) or result.status
        errors.append(f"{failures} (log: {result.artifacts})")
    else:
        raise LabError(f"deploy of lab {lab.name} failed {attempts}x: " + " | ".join(errors))
    lab.endpoints = cluster_endpoints(lab.inventory)
    for cluster in lab.clusters:
        lab.deployed[cluster] = spec or lab.mode(cluster)
    return time.monotonic() - start


def wait_nodes_ready(lab: Lab, spec: ModeSpec | None, timeout_s: float = NODE_WAIT_S,
                     modes: Mapping[str, ModeSpec] | None = None) -> None:  # fmt: skip
    """Wait until every cluster node's agent is Ready (and reports ``spec``'s mode, if given;
    ``modes``: per cluster, after a pair's per-cluster switch)."""
    deadline = time.monotonic() + timeout_s
    missing: list[str] = []
    while time.monotonic() < deadline:
        missing = []
        for cluster in lab.clusters:
            want = (modes or {}).get(cluster, spec)
            client = lab.client(cluster)
            records = {n.name: n for n in client.nodes()}
            now = client.clock()
            for node in lab.plan.cluster_nodes(cluster):
                rec = records.get(node.name)
                if rec is None or not is_ready(rec, now):
                    missing.append(f"{node.name} (not Ready)")
                elif want and rec.mode and rec.mode != want.mode:
                    missing.append(f"{node.name} (mode {rec.mode}, want {want.mode})")
        if not missing:
            return
        time.sleep(READY_POLL_S)
    raise LabError(
        f"lab {lab.name}: agents not ready after {timeout_s:.0f} s: {', '.join(missing)}"
    )


ROUTE_WAIT_S = 60.0
# prints each address the node has no specific (non-default) route to
_NO_ROUTE = (
    'for a in "$@"; do ip -o -4 route show match "$a" | grep -qv "^default" || echo "$a"; done'
)


def wait_pod_routes(lab: Lab, nodes: Mapping[str, Any], timeout_s: float = ROUTE_WAIT_S) -> None:
    """Wait until every cluster node has a route to every other node's pod subnet.

    A Ready agent has programmed what it knows, but in ``bgp`` the peers' routes
    arrive from BIRD a few seconds after its sessions come up: tests started
    before that would measure convergence, not the datapath.
    """
    deadline = time.monotonic() + timeout_s
    missing: list[str] = []
    while time.monotonic() < deadline:
        asks: list[tuple[str, list[str]]] = []  # (node, the peers' first pod addresses)
        for cluster in lab.clusters:
            cidrs = {n.name: n.podCIDR for n in lab.client(cluster).nodes() if n.podCIDR}
            for node in lab.plan.cluster_nodes(cluster):
                want = [str(ipaddress.ip_network(c)[1]) for n, c in cidrs.items() if n != node.name]
                asks.append((node.name, want))
        # every node asked at once: one ssh round each (the mesh run of a lockstep phase
        # asks all six nodes of two-clusters at the start of every phase)
        with ThreadPoolExecutor(max_workers=max(1, len(asks))) as pool:
            answers = list(pool.map(
                lambda ask: nodes[ask[0]].run(["sh", "-c", _NO_ROUTE, "routes", *ask[1]], 15),
                asks,
            ))  # fmt: skip
        missing = [f"{name} → {a}" for (name, _), res in zip(asks, answers, strict=True)
                   for a in res.stdout.split()]  # fmt: skip
        if not missing:
            return
        time.sleep(READY_POLL_S)
    raise LabError(
        f"lab {lab.name}: no route to peer pod subnets after {timeout_s:.0f} s: "
        + ", ".join(missing[:6])
    )


def current_mode(lab: Lab, cluster: str | None = None) -> ModeSpec:
    """The mode the cluster's agents report (node records: mode, and the backend's
    ``Encryption``), else the plan's."""
    cluster = cluster or lab.first_cluster
    try:
        records = lab.client(cluster).nodes()
    except (LabError, UserError):
        records = []
    modes = {n.mode for n in records if n.mode}
    encs = set()
    for n in records:
        backend = (n.model_extra or {}).get("backend")
        if isinstance(backend, dict):
            encs.add(str(backend.get("Encryption") or "none"))
    plan_spec = lab.mode(cluster)
    if len(modes) == 1:
        enc = encs.pop() if len(encs) == 1 else plan_spec.encryption
        return ModeSpec(modes.pop(), enc)
    return plan_spec


def needs_deploy(lab: Lab, spec: ModeSpec) -> list[str]:
    """The clusters of the run (``lab.clusters``) not known to run ``spec`` yet.

    What the run deployed itself is known; a cluster it has not deployed is
    asked (its agents' records), since another run may have left it in any mode.
    """
    return [c for c in lab.clusters if (lab.deployed.get(c) or current_mode(lab, c)) != spec]


def _ledger(name: str) -> Ledger | None:
    """Lab ``name``'s ledger (what ``up`` built), None for a lab that is not up."""
    from harness.lab.state import Ledger, find

    paths = find(name)
    return Ledger.load(paths) if paths.state.exists() else None


def backend(name: str) -> str:
    """What lab ``name`` is up on (its ledger's backend), for the catalogue's lab rules
    (scenario 37 needs a VM lab); ``netns`` for a lab that is not up: ``podlab test``
    builds netns."""
    ledger = _ledger(name)
    return ledger.backend if ledger is not None else "netns"


def emulated(lab: Lab) -> bool:
    """Whether a node of the lab is a VM guest under TCG emulation (no usable KVM).

    Its times measure the emulated CPU, not the datapath: a time SLO is judged on
    native CPUs only (docs/vm-backend.md, "KVM or emulation").
    """
    ledger = _ledger(lab.name)
    return ledger is not None and any(n.vm_accel == "tcg" for n in ledger.nodes.values())


def fallbacks(lab: Lab) -> list[str]:
    """Fallbacks the agents say they use (userspace IPIP, wireguard-go), for the results.

    Read from each node record's ``fallbacks`` list, or its ``backend.fallback``;
    the agent is the only one who knows which implementation it picked.
    """
    found: list[str] = []
    for cluster in lab.clusters:
        for rec in lab.client(cluster).nodes():
            extra = rec.model_extra or {}
            names = list(extra.get("fallbacks") or [])
            backend = extra.get("backend")
            if isinstance(backend, dict) and isinstance(backend.get("fallback"), str):
                names.append(backend["fallback"])
            found += [str(n) for n in names if str(n) not in found]
    return found


def tear_down(lab: Lab) -> None:
    """Remove the lab (processes, namespaces, links, its directory)."""
    from harness.lab.netns import down

    down(lab.name)
