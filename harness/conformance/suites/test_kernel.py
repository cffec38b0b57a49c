"""Scenario 37: what only a real kernel gives, checked on VM labs.

A netns lab shares this machine's kernel, which has no ``ipip``, ``wireguard`` or
IPVS module: there the agent runs its userspace stand-ins and the ``ipvs`` proxy is
refused. In a VM lab every other scenario of the run exercises the guests' own
kernel; these checks prove that the kernel's implementation is the one in use, so
that a pass of the other scenarios is a pass of kernel IPIP, kernel WireGuard and
IPVS, not of a fallback:

1. **The kernel datapath carries pod traffic** (every entry): each node's record
   names the kernel implementation of the entry's tunnel (``backend.IPIPImpl``,
   ``backend.WireguardImpl``: ``kernel``), the route from one node to the other
   node's pod leaves through a device of the kernel's kind (``ipip`` ``tunl0``, or
   a ``wireguard`` link), and a cross-node probe moves that device's counters.
   With the ``ipvs`` proxy, a Service's ClusterIP is an IPVS virtual server on the
   client's node, and a connection to it is counted by IPVS.
2. **The systemd deploy path is idempotent** (once): a full ``podlab deploy`` of
   the lab in the entry's mode changes nothing on any guest (the same judgement as
   ``tests/integration/test_deploy.py`` gives the supervisord path).
3. **The seeds' bandwidth order with kernel IPIP** (once): host > BGP ≈
   IPIP > VXLAN > UDP, each mode's pod→pod against the node→node of its own visit
   (``harness.conformance.order``). Under emulation (TCG) every path, the
   underlay too, is bound by the emulated CPU and the order says nothing about the
   datapaths: the check is not applicable there, and ``bench/bench_vm_order.py``
   measures the same visits and prints them marked EMULATED.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from harness.api.objects import KINDS
from harness.conformance import labctl, order
from harness.conformance import services as svc
from harness.conformance.catalogue import not_applicable
from harness.conformance.fixtures import EchoPods
from harness.conformance.labctl import Lab, ModeSpec
from harness.conformance.pods import NAMESPACE, TCP_PORT, UDP_PORT, Pod, apply_pods
from harness.conformance.remote import Node, output
from harness.conformance.run import Recorder
from harness.probes import echo

ROUTE_WAIT_S = 60.0
IPVS_WAIT_S = 120.0  # an emulated guest's agent programs a new Service within this
STATS_WAIT_S = 10.0


def kernel_device(mode: ModeSpec) -> str | None:
    """The kind of kernel link pod traffic between nodes leaves through, if any.

    WireGuard replaces the mode's route to a peer's pods (docs/datapaths.md), so
    with it the device is the ``wireguard`` link whatever the mode; else ``ipip``
    is the only mode whose kernel device a netns lab lacks.
    """
    if mode.encryption == "wireguard":
        return "wireguard"
    return "ipip" if mode.mode == "ipip" else None


def _link(node: Node, dev: str) -> dict:  # type: ignore[type-arg]
    return dict(json.loads(node.check(["ip", "-d", "-s", "-j", "link", "show", dev]).stdout)[0])


def _route_dev(node: Node, ip: str) -> str:
    """The device ``ip route get`` picks for ``ip`` on ``node``, waited for."""
    deadline = time.monotonic() + ROUTE_WAIT_S
    route = ""
    while time.monotonic() < deadline:
        route = node.check(["ip", "route", "get", ip]).stdout
        if " dev " in route:
            return route.split(" dev ")[1].split()[0]
        time.sleep(1)
    raise AssertionError(f"{node.name} has no route to {ip}: {route!r}")


@pytest.mark.scenario(37, cost="light")
def test_kernel_datapath_carries_pod_traffic(
    lab: Lab, mode: str, nodes: dict[str, Node], echo_pods: EchoPods, record: Recorder
) -> None:
    spec = ModeSpec.parse(mode)
    kind = kernel_device(spec)
    ipvs = {c: p.proxy_mode for c, p in lab.plan.clusters.items() if c in lab.clusters}
    if kind is None and "ipvs" not in ipvs.values():
        not_applicable(f"mode {spec} with proxy {', '.join(sorted(set(ipvs.values())))} "
                       "uses no kernel-only feature")  # fmt: skip
    client, server = echo_pods.pair("cross-node")
    node = nodes[client.node.name]
    if kind is not None:
        key = "WireguardImpl" if kind == "wireguard" else "IPIPImpl"
        for cluster in lab.clusters:
            for rec in lab.client(cluster).nodes():
                backend = (rec.model_extra or {}).get("backend") or {}
                if rec.name in nodes:
                    assert backend.get(key) == "kernel", (
                        f"{rec.name}: backend.{key} is {backend.get(key)!r}, not the kernel's"
                    )
        dev = _route_dev(node, server.ip)
        link = _link(node, dev)
        got = link.get("linkinfo", {}).get("info_kind")
        assert got == kind, f"{node.name} routes {server.ip} via {dev} of kind {got}, not {kind}"
        before = int(link["stats64"]["tx"]["packets"])
        argv = echo.probe_command("udp", server.ip, UDP_PORT, count=3, budget_s=20)
        report = echo.parse_probe(output(client.run(argv, timeout_s=40)))
        assert report.all_ok, f"{client} → {server}: {report.describe()}"
        sent = int(_link(node, dev)["stats64"]["tx"]["packets"]) - before
        record(f"kernel_{kind}_tx_packets_count", float(sent), "count")
        assert sent >= 3, f"{dev} ({kind}) on {node.name} sent {sent} packets for 3 probes"
    home = lab.plan.nodes[node.name].cluster
    if home and ipvs.get(home) == "ipvs":
        _ipvs_counts_a_connection(lab, home, node, client, record)


def _ipvs_counts_a_connection(
    lab: Lab, cluster: str, node: Node, client: Pod, record: Recorder
) -> None:
    """A Service's ClusterIP is an IPVS virtual server on ``node``; IPVS counts a connection."""
    name = f"kernel-ipvs-{uuid.uuid4().hex[:6]}"
    api = lab.client(cluster)
    selector = {"app.podlab.io/suite": "conformance"}
    apply_pods(api, [svc.service(name, selector, [svc.port("tcp", 80, TCP_PORT)])])
    try:
        vip = api.get(KINDS["Service"], NAMESPACE, name)["spec"]["clusterIP"]
        saved = svc.ipvs_saved(node, lambda text: f"-a -t {vip}:80 " in text, IPVS_WAIT_S)
        assert f"-a -t {vip}:80 " in saved, f"no IPVS real server for {vip}:80 on {node.name}"

        def conns() -> int:
            out = node.check(["ipvsadm", "-Ln", "--stats", "--exact", "-t", f"{vip}:80"]).stdout
            row = next(line for line in out.splitlines() if line.startswith("TCP"))
            return int(row.split()[2])

        before = conns()
        argv = echo.probe_command("tcp", vip, 80, count=3, budget_s=20)
        report = echo.parse_probe(output(client.run(argv, timeout_s=40)))
        # the selector takes every conformance pod: one still starting may refuse, but
        # IPVS scheduled the connection all the same, which is what is counted here
        assert report.replies(), f"{client} → ClusterIP {vip}:80 over IPVS: {report.describe()}"
        # the kernel folds its per-CPU IPVS counters into these every 2 s (its estimator)
        deadline = time.monotonic() + STATS_WAIT_S
        counted = conns() - before
        while counted < 3 and time.monotonic() < deadline:
            time.sleep(1)
            counted = conns() - before
        record("ipvs_connections_count", float(counted), "count")
        assert counted >= 3, f"IPVS on {node.name} counted {counted} connections for 3"
    finally:
        api.delete(KINDS["Service"], NAMESPACE, name)


@pytest.mark.scenario(37, cost="once")
def test_systemd_deploy_is_idempotent(lab: Lab, mode: str, record: Recorder) -> None:
    from harness.deploy.deploy import deploy, request_for
    from harness.deploy.runner import DeployEvent, changed_tasks

    spec = ModeSpec.parse(mode)
    events: list[DeployEvent] = []
    started = time.monotonic()
    overrides = {"podlab_mode": spec.mode, "podlab_encryption": spec.encryption}
    result = deploy(request_for(lab.name, None, overrides, limit=lab.focus), on_event=events.append)
    record("redeploy_s", time.monotonic() - started, "s")
    assert result.ok, "; ".join(str(f) for f in result.failures[:3]) or result.status
    changed = changed_tasks(events)
    assert changed == [], f"a no-change re-deploy through systemd changed: {changed}"
    assert result.hosts, "the re-deploy ran on no host"


@pytest.mark.scenario(37, cost="once")
def test_bandwidth_order_with_kernel_ipip(
    lab: Lab, mode: str, nodes: dict[str, Node], record: Recorder
) -> None:
    if labctl.emulated(lab):
        not_applicable(
            "emulated guests (TCG): every path, the underlay too, is bound by the emulated "
            "CPU, so the order says nothing about the datapaths; bench/bench_vm_order.py "
            "measures it marked EMULATED"
        )
    pair = {n.name: nodes[n.name] for n in lab.cluster_nodes()[:2]}
    try:
        rounds = order.measure(lab, pair, rounds=1, seconds=5, reps=2)
    finally:
        order.visit_mode(lab, pair, ModeSpec.parse(mode))  # back to the entry's mode
    for name, ratio in rounds[0].items():
        key = name.replace("-", "_").replace("+", "_")  # measurement names are snake_case
        record(f"order_{key}_to_node_ratio", ratio, "ratio")
    failed = [f"{rel} ({held}/{judged})" for rel, held, judged in order.verdict(rounds)
              if held < judged]  # fmt: skip
    assert not failed, f"the seeds' order did not hold: {', '.join(failed)}; ratios {rounds[0]}"
