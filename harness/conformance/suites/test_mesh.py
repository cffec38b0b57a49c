"""Scenarios 24 and 27: a cluster mesh — pods of two clusters reach each other by pod
IP (no NAT, through the lab's router, the path MTU kept), membership refusals,
programming latency in-cluster vs cross-cluster, throughput against the
node→node path across the same router; policies that select pods of another
cluster by ``podlab.io/cluster``; WireGuard across clusters (leak test on the
router's interfaces and both nodes' underlays).

Every check needs two clusters of one mesh in the lab (``topologies/two-clusters``,
make conformance's default): otherwise each test skips, saying why. Each
assertion of a block, drop or encryption has its negative control in the same
test.
"""

from __future__ import annotations

import ipaddress
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest

from harness.conformance import asserts, fallbacks, meshtput
from harness.conformance import services as svc
from harness.conformance.catalogue import not_applicable, only_modes
from harness.conformance.labctl import Lab, ModeSpec
from harness.conformance.pods import (
    HTTP_PORT,
    NAMESPACE,
    TCP_PORT,
    UDP_PORT,
    Pod,
    PodFactory,
    apply_pods,
    echo_command,
    pod_manifest,
)
from harness.conformance.remote import Node, output
from harness.conformance.run import Recorder
from harness.errors import UserError
from harness.plan.build import build_plan
from harness.probes import capture, echo, mtu, ping
from harness.refpath import build, spec
from harness.topology import parse_topology

PORTS = {"tcp": TCP_PORT, "udp": UDP_PORT, "http": HTTP_PORT}
CLUSTER_LABEL = "podlab.io/cluster"
WG_PORT = 51820
CAPTURE_S = 8.0  # the captures' upper bound: they stop once the traffic has been sent
# after the traffic: tcpdump runs in immediate mode (each packet printed as it comes), so
# this only has to cover the last reply's way back through the router
CAPTURE_TAIL_S = 0.5
T = TypeVar("T")


def _out(res: Any) -> str:
    return f"{res.stdout}\n{res.stderr}"


def mesh_pair(lab: Lab) -> tuple[str, str]:
    """The first two clusters of one mesh, or skip (with the reason)."""
    by_mesh: dict[str, list[str]] = {}
    for c in lab.plan.clusters.values():
        if c.mesh:
            by_mesh.setdefault(c.mesh, []).append(c.name)
    pairs = [m for m in by_mesh.values() if len(m) >= 2]
    if not pairs:  # the catalogue's lab rule for 24-27 says so before the test runs
        not_applicable(f"lab {lab.name} has no two clusters in one mesh (label podlab.mesh)")
    return pairs[0][0], pairs[0][1]


def _workers(lab: Lab, cluster: str) -> list[str]:
    nodes = [n.name for n in lab.cluster_nodes(cluster)]
    workers = [n for n in nodes if lab.plan.nodes[n].role == "worker"]
    return workers or nodes


@pytest.fixture(scope="module")
def remote_factory(lab: Lab, mode: str, nodes: dict[str, Node]) -> Iterator[PodFactory]:
    """Pods in the mesh's second cluster (module_pod_factory makes them in the first)."""
    _a, b = mesh_pair(lab)
    factory = PodFactory(lab.client(b), nodes)
    yield factory
    left = factory.delete_all()
    assert not left, f"pods not removed by the agent within 60 s: {', '.join(left)}"


@pytest.fixture(scope="module")
def mesh_pods(
    lab: Lab, module_pod_factory: PodFactory, remote_factory: PodFactory
) -> dict[str, Pod]:
    """``a``, ``a2``: pods on two nodes of the first cluster; ``b``: one on the second's."""
    a, b = mesh_pair(lab)
    wa = _workers(lab, a)
    pa = module_pod_factory.create([wa[0], wa[-1]], prefix="mesh")
    (pb,) = remote_factory.create([_workers(lab, b)[0]], prefix="mesh")
    return {"a": pa[0], "a2": pa[1], "b": pb}


def _captured(
    spots: list[tuple[Node, str]], bpf: str, traffic: Callable[[], T]
) -> tuple[list[str], T]:
    """tcpdump's output on every (node, interface) while ``traffic()`` runs; each capture
    stops once it is done (each its own stop file: a capture removes its file at its end).

    CAPTURE_S bounds the captures: traffic that outlasts it would go unjudged, so that
    fails the check instead of passing it."""
    stops = [f"/run/podlab-meshcap-{uuid.uuid4().hex[:12]}.stop" for _ in spots]
    with ThreadPoolExecutor(max_workers=len(spots)) as pool:
        futs = [pool.submit(n.run, capture.command(i, bpf, CAPTURE_S, stop_file=stop),
                            CAPTURE_S + 15)
                for (n, i), stop in zip(spots, stops, strict=True)]  # fmt: skip
        started = time.monotonic()
        time.sleep(1.5)  # tcpdump attaches
        try:
            result = traffic()
            time.sleep(CAPTURE_TAIL_S)
        finally:
            took = time.monotonic() - started
            for (n, _), stop in zip(spots, stops, strict=True):
                n.run(["touch", stop], timeout_s=10)
            texts = [_out(f.result()) for f in futs]
    if took > CAPTURE_S - 0.5:
        pytest.fail(f"the traffic took {took:.1f} s, longer than the {CAPTURE_S:g} s capture")
    return texts, result


def probe(client: Pod, proto: str, server: Pod) -> str | None:
    if proto == "icmp":
        res = ping.parse(_out(client.run(ping.command(server.ip, count=3), timeout_s=15)))
        return None if res.ok else res.describe()
    argv = echo.probe_command(proto, server.ip, PORTS[proto])
    return asserts.probe_problem(echo.parse_probe(_out(client.run(argv, 30))), server.name)


# -- scenario 24: pod routing across clusters ------------------------------------------------
@pytest.mark.scenario(24)
@pytest.mark.parametrize("proto", ("icmp", "tcp", "udp", "http"))
def test_pods_reach_pods_of_the_other_cluster(
    lab: Lab, mode: str, mesh_pods: dict[str, Pod], proto: str
) -> None:
    """Both directions, by pod IP, through the lab's router."""
    a, b = mesh_pods["a"], mesh_pods["b"]
    failures = [probe(a, proto, b), probe(b, proto, a)]
    where = ["c1→c2", "c2→c1"]
    bad = [f"{w}: {f}" for w, f in zip(where, failures, strict=True) if f]
    assert not bad, f"{a} ↔ {b} over {proto}: " + "; ".join(bad)


@pytest.mark.scenario(24)
def test_cross_cluster_traffic_keeps_pod_addresses(
    lab: Lab, mode: str, nodes: dict[str, Node], mesh_pods: dict[str, Pod]
) -> None:
    """The server sees the client's pod address (no NAT); control: the same client's
    egress to the outside host IS masqueraded, so a NAT would have shown."""
    a, b = mesh_pods["a"], mesh_pods["b"]
    for client, server in ((a, b), (b, a)):
        report = echo.parse_probe(_out(client.run(echo.probe_command("tcp", server.ip, TCP_PORT))))
        asserts.assert_reaches(str(client), str(server), report, want_name=server.name)
        seen = {r.split()[1].rpartition(":")[0] for r in report.replies() if len(r.split()) > 1}
        assert seen == {client.ip}, (
            f"{server} saw {client} as {', '.join(sorted(seen))}, expected its pod address "
            f"{client.ip}: cross-cluster traffic was NATed"
        )
    outside = lab.outside_nodes()
    if not outside:
        return  # the lab has no outside host: the control is in test_connectivity's 4
    host = nodes[outside[0].name]
    host.start_echo(18086, lifetime_s=30)
    report = echo.parse_probe(_out(a.run(echo.probe_command("tcp", host.underlay_ip, 18086))))
    seen = {r.split()[1].rpartition(":")[0] for r in report.replies() if len(r.split()) > 1}
    assert seen == {a.node.underlay_ip}, (
        f"control: {host.name} saw {a} as {seen or 'nothing'}, expected its node's address "
        f"{a.node.underlay_ip} (masquerade) — the no-NAT check above could not tell"
    )


def _df_ping(client: Pod, ip: str, packet: int) -> ping.PingResult:
    argv = ping.command(ip, count=2, size=ping.payload_for(packet), dont_fragment=True)
    return ping.parse(_out(client.run(argv, timeout_s=15)))


@pytest.mark.scenario(24)
def test_path_mtu_across_clusters(
    lab: Lab, mode: str, mesh_pods: dict[str, Pod], record: Recorder
) -> None:
    """A DF ping of exactly the pod MTU crosses to the other cluster; one byte more fails."""
    a, b = mesh_pods["a"], mesh_pods["b"]
    spec = ModeSpec.parse(mode)
    under = a.node.plan.underlay
    assert under is not None
    want = mtu.expected_pod_mtu(spec.mode, under.mtu, spec.encryption, mesh=True)
    got = int(a.run(["cat", "/sys/class/net/eth0/mtu"], timeout_s=10).stdout.strip())
    record("mesh_pod_mtu_bytes", got, "bytes", labels={"expected": str(want)})
    assert got == want, f"{a} eth0 MTU is {got}, expected {want} for {mode} in a mesh"
    for client, server in ((a, b), (b, a)):
        fits = _df_ping(client, server.ip, got)
        assert fits.ok, f"DF ping of {got} bytes {client} → {server}: {fits.describe()}"
        over = _df_ping(client, server.ip, got + 1)
        assert not over.ok, (
            f"DF ping of {got + 1} bytes {client} → {server} passed: the pod MTU {got} is "
            "smaller than the path, or DF is not honoured"
        )


@pytest.mark.scenario(24, cost="once")  # the plan's rules: no datapath involved
def test_membership_is_refused_before_any_route(lab: Lab, mode: str) -> None:
    """The lab's own topology with a bad member is refused (one located line per problem)
    by the plan, before anything is built; a shared service CIDR is allowed (control)."""
    a, b = mesh_pair(lab)
    text = Path(lab.plan.source).read_text()
    plan_b = lab.plan.clusters[b]
    bad_pod = text.replace(str(plan_b.pod_cidr), str(lab.plan.clusters[a].pod_cidr))
    with pytest.raises(UserError) as info:
        build_plan(parse_topology(bad_pod, "bad-pod.clab.yml"))
    assert "overlaps" in str(info.value) and "pod CIDR" in str(info.value)
    bad_id = text.replace(f'podlab.cluster-id: "{plan_b.id}"',
                          f'podlab.cluster-id: "{lab.plan.clusters[a].id}"')  # fmt: skip
    if bad_id != text:
        with pytest.raises(UserError) as info:
            build_plan(parse_topology(bad_id, "bad-id.clab.yml"))
        assert "cluster id" in str(info.value)
    same_svc = text.replace(str(plan_b.service_cidr), str(lab.plan.clusters[a].service_cidr))
    plan = build_plan(parse_topology(same_svc, "same-svc.clab.yml"))
    assert plan.clusters[a].service_cidr == plan.clusters[b].service_cidr


@pytest.mark.scenario(24)
def test_every_cluster_sees_its_peers_connected(lab: Lab, mode: str) -> None:
    """Each cluster's syncer reports the other connected, with the remote's nodes counted."""
    from harness.api.mesh import collect

    a, b = mesh_pair(lab)
    deadline = time.monotonic() + 30
    while True:
        data = collect(lab.name)
        views = [(x, y, data["clusters"][x]["peers"].get(y, {})) for x, y in ((a, b), (b, a))]
        if all(st.get("state") == "connected" for _x, _y, st in views):
            break
        if time.monotonic() > deadline:
            bad = [f"{x} sees {y}: {st.get('state')} ({st.get('lastError')})" for x, y, st in views]
            pytest.fail("mesh not connected: " + "; ".join(bad))
        time.sleep(1)
    for x, y, st in views:
        want = len(lab.cluster_nodes(y))
        assert st["counts"]["nodes"] == want, f"{x} counts {st['counts']['nodes']} nodes of {y}"


@pytest.mark.scenario(24)
def test_programming_latency_in_cluster_vs_cross_cluster(
    lab: Lab,
    mode: str,
    mesh_pods: dict[str, Pod],
    module_pod_factory: PodFactory,
    thorough: bool,
    record: Recorder,
) -> None:
    """A new pod in the first cluster: apply → first TCP answer, seen from a pod on
    another node of its cluster and from a pod of the other cluster, side by side."""
    a, b = mesh_pods["a2"], mesh_pods["b"]
    node = mesh_pods["a"].node.name
    rounds = 10 if thorough else 3
    lat: dict[str, list[float]] = {"in-cluster": [], "cross-cluster": []}
    for i in range(rounds):
        name = f"meshlat-{uuid.uuid4().hex[:6]}-{i}"
        module_pod_factory.created.append(name)
        manifest = pod_manifest(name, node, echo_command(name))
        applied = apply_pods(module_pod_factory.client, [manifest])
        (pod,) = module_pod_factory.wait_running([name], 60)
        argv = echo.reach_command([(pod.ip, TCP_PORT)], deadline_s=30)
        with ThreadPoolExecutor(max_workers=2) as pool:
            pairs = (("in-cluster", a), ("cross-cluster", b))
            futs = {k: pool.submit(c.run, argv, 45) for k, c in pairs}
            for key, fut in futs.items():
                first = echo.parse_reach(_out(fut.result())).get(f"{pod.ip}:{TCP_PORT}")
                assert first is not None, f"{key}: new pod {pod} never answered within 30 s"
                lat[key].append(first - applied)
        module_pod_factory.client.delete(*_pod_ref(name))
    for key, values in lat.items():
        for v in values:
            record("mesh_pod_first_answer_s", v, "s", labels={"path": key})
    med = {k: sorted(v)[len(v) // 2] for k, v in lat.items()}
    record("mesh_cross_vs_in_cluster_latency_ratio",
           med["cross-cluster"] / max(med["in-cluster"], 1e-3), "ratio")  # fmt: skip


def _pod_ref(name: str) -> tuple[Any, str, str]:
    from harness.api.objects import KINDS

    return KINDS["Pod"], NAMESPACE, name


def _mesh_reference(lab: Lab, mode: str, a: Pod, routing: str) -> spec.RefSpec | spec.NoReference:
    """The physical limit of the cross-cluster path from ``a``'s node, with the WireGuard
    implementation its agent published for this run."""
    ms = ModeSpec.parse(mode)
    under = a.node.plan.underlay
    assert under is not None
    records = {r.name: (r.model_extra or {}).get("backend") or {}
               for r in lab.client(mesh_pair(lab)[0]).nodes()}  # fmt: skip
    impl = fallbacks.wireguard_impl(lab, a.node.name, records.get(a.node.name, {})) or ""
    return spec.mesh_reference(ms.mode, ms.encryption, routing=routing,
                               underlay_mtu=under.mtu, wireguard_impl=impl)  # fmt: skip


def _refpath(node: Node, *args: str, timeout_s: float = 60) -> str:
    res = node.run([echo.NODE_PYTHON, "-m", "harness.refpath", *args], timeout_s=timeout_s)
    assert res.returncode == 0, f"{node.name}: refpath {args[0]} failed: {output(res).strip()}"
    return res.stdout


@pytest.mark.scenario(24)
def test_cross_cluster_throughput_against_the_node_path(
    lab: Lab, mode: str, mesh_pods: dict[str, Pod], thorough: bool, record: Recorder
) -> None:
    """iperf3 TCP (one stream) pod→pod across clusters, the same path built by hand
    (``harness.refpath.spec.mesh_reference``: the mesh's tunnel, WireGuard with the
    agents' implementation, or native routes, two segments joined by a router, on the
    client's node) and node→node across the lab's router, in interleaved rotated rounds
    (``harness.conformance.meshtput``). The SLO (≥ 0.9) is pod→pod ÷ its hand-built
    path; ÷ node→node and hand-built ÷ node→node (what the tunnel itself allows) are
    recorded beside it. Without a reference the SLO falls back to ÷ node→node, with
    the reason. Judged by the report, not asserted."""
    a, b = mesh_pods["a"], mesh_pods["b"]
    n_rounds, secs = (9, 5) if thorough else (3, 2)
    port = 5401 + int(time.monotonic()) % 90
    routing = lab.plan.clusters[mesh_pair(lab)[0]].mesh_routing
    routing = "native" if ModeSpec.parse(mode).mode == "bgp" else routing
    ref = _mesh_reference(lab, mode, a, routing)
    targets = [
        meshtput.Target("pod-pod", a, b.node, b.netns, b.ip, port),
        meshtput.Target("node-node", a.node, b.node, None, b.node.underlay_ip, port + 1),
    ]
    budget = n_rounds * 3 * (secs + 8) + 60
    tag = build.new_tag()
    try:
        if isinstance(ref, spec.RefSpec):
            up = ["--spec", ref.to_json(), "--tag", tag, "--lifetime", str(budget),
                  "--server-port", str(port + 2)]  # fmt: skip
            built = build.RefPath.from_json(_refpath(a.node, "up", *up))
            client = meshtput.InNetns(a.node, built.client_netns)
            hand = meshtput.Target("hand-built", client, a.node, built.server_netns,
                                   built.server_ip, built.port, serve=False)  # fmt: skip
            targets.insert(1, hand)
        series = meshtput.rounds(targets, n_rounds, secs)
    finally:
        if isinstance(ref, spec.RefSpec):
            _refpath(a.node, "down", "--tag", tag)
    to_node = meshtput.Comparison(series["pod-pod"], series["node-node"])
    labels = {"path": "cross-cluster", "routing": routing}
    if isinstance(ref, spec.RefSpec):
        labels["reference"] = ref.name
    for name, s in series.items():  # labels.path "cross-cluster": not the in-cluster table's
        for i, v in enumerate(s.values, 1):
            record("throughput_bps", v, "bps", labels={**labels, "what": name, "repeat": str(i)})
        record("throughput_cv_ratio", s.cv, "ratio", labels={**labels, "what": name})
    rounds_of = {"rounds": str(n_rounds)}
    if isinstance(ref, spec.RefSpec):
        to_ref = meshtput.Comparison(series["pod-pod"], series["hand-built"])
        limit = meshtput.Comparison(series["hand-built"], series["node-node"])
        record("mesh_throughput_ratio_to_handbuilt", to_ref.ratio, "ratio", threshold=0.9,
               comparison=">=", labels={**labels, **rounds_of,
                                        "rounds_below": str(to_ref.rounds_below)})  # fmt: skip
        below = {"rounds_below": str(to_node.rounds_below)}
        record("mesh_throughput_ratio_to_node_path", to_node.ratio, "ratio",
               labels={**labels, **rounds_of, **below})  # fmt: skip
        record("mesh_handbuilt_ratio_to_node_path", limit.ratio, "ratio",
               labels={**labels, **rounds_of})  # fmt: skip
        print(f"cross-cluster ({routing}): {to_ref.describe()}; {to_node.describe()}")
    else:
        record("mesh_throughput_ratio_to_node_path", to_node.ratio, "ratio", threshold=0.9,
               comparison=">=", labels={**labels, **rounds_of, "reference_note": ref.reason,
                                        "rounds_below": str(to_node.rounds_below)})  # fmt: skip
        print(f"cross-cluster ({routing}): {to_node.describe()} (no reference: {ref.reason})")
    assert min(series["pod-pod"].values) > 0, f"{a} → {b}: iperf3 moved no data across clusters"


# -- scenario 24, native routing (every cluster bgp): through the routers, over BGP ----------
MESH_VXLAN_PORT = 8473  # the tunnel mesh's VXLAN (harness/agent/datapath/mesh.py)
HOLD_S = 3.0  # BGP hold time of nodes and routers (harness/agent/bird.py, role router)
# Decided at collection (not applicable outside bgp, nothing deployed for it), so the
# cover puts these into the one native entry; the run-time check stays for custom matrices.
NATIVE = only_modes("bgp", why="mesh routing is tunnel (native needs bgp in every cluster)")


def _native_or_not_applicable(lab: Lab, mode: str) -> None:
    """Skip, marked not applicable (the matrix's wording), unless the mesh routes natively."""
    spec = ModeSpec.parse(mode)
    if spec.mode != "bgp":
        not_applicable(f"mesh routing is tunnel in {mode} (native needs bgp)")
    if not any(n.is_router for n in lab.plan.nodes.values()):
        not_applicable(f"lab {lab.name} has no router to carry pod routes")


def _routers_between(lab: Lab, nodes: dict[str, Node], a: Pod, b: Pod) -> list[tuple[Node, str]]:
    segs = {a.node.plan.underlay.segment, b.node.plan.underlay.segment}  # type: ignore[union-attr]
    return [(nodes[r.name], i.name) for r in lab.plan.nodes.values() if r.is_router
            for i in r.interfaces if i.segment in segs]  # fmt: skip


@pytest.mark.scenario(24, applies=NATIVE)
def test_native_routes_come_from_the_routers_over_bgp(
    lab: Lab, mode: str, nodes: dict[str, Node], mesh_pods: dict[str, Pod]
) -> None:
    """Each router on the path lists an Established eBGP session per meshed node of its
    segments (``birdc show protocols``, no flags); each pod's node routes the other
    cluster's pod subnets via its router (proto bird), its own cluster's not."""
    from harness.agent import bird

    _native_or_not_applicable(lab, mode)
    a, b = mesh_pods["a"], mesh_pods["b"]
    for router in {n.name: n for n, _ in _routers_between(lab, nodes, a, b)}.values():
        sessions = bird.parse_protocols(router.check(["birdc", "show", "protocols"]).stdout)
        up = {s.name for s in sessions if s.established}
        mine = {i.segment for i in router.plan.interfaces}
        want = {f"node_{n.name}".replace("-", "_") for n in lab.plan.nodes.values()
                if n.cluster and lab.plan.clusters[n.cluster].mesh and n.underlay
                and n.underlay.segment in mine}  # fmt: skip
        assert want <= up, f"{router.name}: sessions not Established: {sorted(want - up)}"
    for pod, other in ((a, b), (b, a)):
        via = {i.segment: str(i.address.ip) for n, _ in _routers_between(lab, nodes, a, b)
               for i in n.plan.interfaces if i.address}[pod.node.plan.underlay.segment]  # type: ignore[union-attr]  # fmt: skip
        got = pod.node.check(["ip", "-o", "route", "get", other.ip]).stdout
        assert f"via {via} " in got, f"{pod.node.name} routes {other.ip} as {got.strip()!r}"
        table = pod.node.check(["ip", "-o", "route", "show", "proto", "bird"]).stdout
        subnet = other.ip.rsplit(".", 1)[0]
        assert any(line.startswith(subnet) and f"via {via} " in line
                   for line in table.splitlines()), f"{pod.node.name}: {table}"  # fmt: skip
        own = lab.plan.clusters[str(pod.node.plan.cluster)].pod_cidr
        assert not any(
            f"via {via} " in line and ipaddress.IPv4Network(line.split()[0]).subnet_of(own)
            for line in table.splitlines()
        ), (  # fmt: skip
            f"{pod.node.name} routes its own cluster's pods through the router: {table}"
        )


@pytest.mark.scenario(24, applies=NATIVE)
def test_native_packets_cross_the_router_unencapsulated(
    lab: Lab, mode: str, nodes: dict[str, Node], mesh_pods: dict[str, Pod], record: Recorder
) -> None:
    """A canary from a pod of A to a pod of B, captured on the router's legs: IP packets
    between the two pod addresses (no NAT, no outer header) and no mesh VXLAN. Control:
    a datagram to UDP 8473 sent node → node across the router meanwhile is captured,
    so the capture would have seen a tunnel."""
    _native_or_not_applicable(lab, mode)
    a, b = mesh_pods["a"], mesh_pods["b"]
    spots = _routers_between(lab, nodes, a, b)
    canary = f"podlab-native-canary-{uuid.uuid4().hex[:12]}"
    bpf = f"(host {a.ip} and host {b.ip}) or udp port {MESH_VXLAN_PORT}"

    def traffic() -> echo.ProbeReport:
        argv = echo.probe_command("udp", b.ip, UDP_PORT, count=3, payload=canary,
                                  connect_timeout_s=1.0, budget_s=5.0, wait_s=2.0)  # fmt: skip
        report = echo.parse_probe(_out(a.run(argv, 20)))
        probe_vxlan = "import socket,sys; socket.socket(2,2).sendto(b'ctl', (sys.argv[1], 8473))"
        a.node.check(["python3", "-c", probe_vxlan, b.node.underlay_ip])
        return report

    texts, report = _captured(spots, bpf, traffic)
    caps = [capture.parse(t, canary=canary) for t in texts]
    assert report.successes > 0, f"{a} → {b}: canary never answered ({report.describe()})"
    for (n, i), c in zip(spots, caps, strict=True):
        plain = [h for h in c.headers if f"{a.ip}." in h and f"{b.ip}." in h]
        tunnel = [h for h in c.headers if f".{MESH_VXLAN_PORT}" in h]
        record("mesh_native_plain_packets_count", float(len(plain)), "count",
               labels={"capture": f"{n.name}:{i}"})  # fmt: skip
        assert plain and c.canary_seen, (
            f"{n.name}:{i}: no packet between {a.ip} and {b.ip} carrying the canary ({c.describe()}"
            "): the pod addresses did not cross the router as they are"
        )
        control = [h for h in tunnel if "length 3" in h]  # the 3-byte datagram, not VXLAN
        assert control, f"control: {n.name}:{i} missed the datagram to UDP 8473 ({c.describe()})"
        vxlan = [h for h in tunnel if h not in control]
        assert not vxlan, f"{n.name}:{i}: mesh VXLAN on a native mesh: {vxlan[:2]}"


@pytest.mark.scenario(24, applies=NATIVE)
def test_native_node_loss_withdraws_its_routes_within_the_hold_time(
    lab: Lab, mode: str, nodes: dict[str, Node], mesh_pods: dict[str, Pod], record: Recorder
) -> None:
    """A node of A goes silent (agent stopped, underlay down; its BIRD cannot say goodbye):
    the route to its pod subnet leaves a node of its own cluster and a node of B within
    the BGP hold time, and comes back with the link. Control: both had the route."""
    _native_or_not_applicable(lab, mode)
    a, a2, b = mesh_pods["a"], mesh_pods["a2"], mesh_pods["b"]
    if a2.node.name == a.node.name:
        not_applicable(f"lab {lab.name}: needs two nodes in cluster {a.node.plan.cluster}")
    victim = a2.node
    subnet = a2.ip.rsplit(".", 1)[0] + ".0/24"
    watchers = [a.node, b.node]
    for w in watchers:  # the control
        assert w.check(["ip", "-o", "route", "show", subnet]).stdout.strip(), (
            f"control: {w.name} has no route to {victim.name}'s pod subnet {subnet}"
        )
    wait = f"while ip -o route show {subnet} | grep -q .; do sleep 0.05; done; date +%s.%N"
    down: list[float] = []
    try:
        with ThreadPoolExecutor(max_workers=len(watchers)) as pool:
            futs = [pool.submit(w.run, ["sh", "-c", wait], 30.0) for w in watchers]
            time.sleep(1.0)
            victim.service("stop", "podlab-agent")
            cut = f"ip link set {victim.underlay_if} down && date +%s.%N"
            down.append(float(victim.check(["sh", "-c", cut]).stdout))
            gone = {w.name: f.result() for w, f in zip(watchers, futs, strict=True)}
    finally:
        victim.check(["ip", "link", "set", victim.underlay_if, "up"], timeout_s=15)
        for r in victim.plan.routes:
            victim.check(["ip", "route", "replace", str(r.dest), "via", str(r.via), "dev", r.dev])
        victim.service("start", "podlab-agent")
    late = []
    for name, res in gone.items():
        assert res.returncode == 0, f"{name} kept the route to {subnet} for 30 s: {_out(res)}"
        after = float(res.stdout.strip()) - down[0]
        record("mesh_native_route_withdrawn_s", after, "s", threshold=HOLD_S, comparison="<=",
               labels={"observer": name, "victim": victim.name})  # fmt: skip
        if after > HOLD_S + 1.0:
            late.append(f"{name} after {after:.1f} s")
    assert not late, f"route to {victim.name}'s pods ({subnet}) withdrawn late: {late}"
    deadline = time.monotonic() + 30
    while any(not w.run(["ip", "-o", "route", "show", subnet]).stdout.strip() for w in watchers):
        assert time.monotonic() < deadline, f"route to {subnet} not back 30 s after the link"
        time.sleep(0.5)


# -- scenario 27: policy and encryption across clusters --------------------------------------
def _labelled(name: str, node: str, labels: dict[str, str]) -> dict[str, Any]:
    m = pod_manifest(name, node, echo_command(name))
    m["metadata"]["labels"].update(labels)
    return m


def _policy(name: str, server_app: str, peer: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "podSelector": {"matchLabels": {"app": server_app}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [peer]}],
        },
    }


def _reach(client: Pod, server: Pod) -> echo.ProbeReport:
    argv = echo.probe_command("tcp", server.ip, TCP_PORT, count=2, connect_timeout_s=2.0,
                              budget_s=6.0)  # fmt: skip
    return echo.parse_probe(_out(client.run(argv, 20)))


def _dropped_once(client: Pod, server: Pod) -> bool:
    """One quick attempt (1 s connect timeout) gets no answer: the policy is in effect."""
    argv = echo.probe_command("tcp", server.ip, TCP_PORT, count=1, connect_timeout_s=1.0,
                              budget_s=2.0)  # fmt: skip
    return echo.parse_probe(_out(client.run(argv, 10))).successes == 0


@pytest.mark.scenario(27)
def test_policy_selects_pods_of_another_cluster(
    lab: Lab,
    mode: str,
    nodes: dict[str, Node],
    module_pod_factory: PodFactory,
    remote_factory: PodFactory,
) -> None:
    """In cluster B a policy admits only ``app=mesh-web`` pods of cluster A to ``srv``.
    Controls: before it every client reaches the server; a pod with the same labels in
    cluster B itself (wrong cluster) and an ``app=mesh-other`` pod of A are dropped, the
    named one is admitted. A second server ``srv2`` of B, with a policy naming a third
    cluster, admits nobody: A's ``mesh-web`` pod, which reached it before, is dropped.

    The two policies are applied at once and the probes of each state run at once (each
    its own flow and process; every report judged on its own): one after the other, a
    blocked probe's 2 attempts of a 2 s connect timeout were most of the check's time."""
    from harness.api.objects import KINDS

    a, b = mesh_pair(lab)
    wa, wb = _workers(lab, a), _workers(lab, b)
    tag = uuid.uuid4().hex[:6]
    names = {k: f"pol-{k}-{tag}" for k in ("srv", "srv2", "web", "other", "local")}
    remote_factory.created += [names["srv"], names["srv2"], names["local"]]
    module_pod_factory.created += [names["web"], names["other"]]
    apply_pods(remote_factory.client, [
        _labelled(names["srv"], wb[0], {"app": f"mesh-db-{tag}"}),
        _labelled(names["srv2"], wb[0], {"app": f"mesh-db2-{tag}"}),
        _labelled(names["local"], wb[-1], {"app": f"mesh-web-{tag}"}),
    ])  # fmt: skip
    apply_pods(module_pod_factory.client, [
        _labelled(names["web"], wa[0], {"app": f"mesh-web-{tag}"}),
        _labelled(names["other"], wa[-1], {"app": f"mesh-other-{tag}"}),
    ])  # fmt: skip
    srv, srv2, local = remote_factory.wait_running(
        [names["srv"], names["srv2"], names["local"]], 60
    )
    web, other = module_pod_factory.wait_running([names["web"], names["other"]], 60)
    client_b = remote_factory.client
    pairs = [(web, srv), (other, srv), (local, srv), (web, srv2)]
    with ThreadPoolExecutor(max_workers=len(pairs)) as pool:
        listening = [(p, remote_factory) for p in (srv, srv2, local)]
        listening += [(p, module_pod_factory) for p in (web, other)]
        list(pool.map(lambda pf: pf[1].wait_listening(pf[0], 30), listening))
        # control: no policy yet, everyone gets in
        for (c, t), r in zip(pairs, pool.map(lambda ct: _reach(*ct), pairs), strict=True):
            asserts.assert_reaches(str(c), str(t), r, want_name=t.name)
        peer = {"podSelector": {"matchLabels": {"app": f"mesh-web-{tag}", CLUSTER_LABEL: a}}}
        labels = {"app": f"mesh-web-{tag}", CLUSTER_LABEL: "no-such-cluster"}
        elsewhere = {"podSelector": {"matchLabels": labels}}
        pols = [
            _policy(f"from-{a}-{tag}", f"mesh-db-{tag}", peer),
            _policy(f"from-elsewhere-{tag}", f"mesh-db2-{tag}", elsewhere),
        ]
        try:
            client_b.apply(_objects(pols))
            for c, t in ((other, srv), (web, srv2)):  # in effect (was: a fixed 2 s sleep)
                svc.until(f"the policy of {t} drops {c}", partial(_dropped_once, c, t), 20.0, 0.2)
            got = list(pool.map(lambda ct: _reach(*ct), pairs))
            asserts.assert_reaches(str(web), str(srv), got[0], want_name=srv.name)
            asserts.assert_blocked(str(other), str(srv), got[1], "timeout")
            asserts.assert_blocked(str(local), str(srv), got[2], "timeout")
            asserts.assert_blocked(str(web), str(srv2), got[3], "timeout")
        finally:
            for pol in pols:
                client_b.delete(KINDS["NetworkPolicy"], NAMESPACE, pol["metadata"]["name"])


def _objects(manifests: list[dict[str, Any]]) -> list[Any]:
    import yaml

    from harness.api.validate import load_documents, validate_documents

    objs, problems = validate_documents(load_documents(yaml.safe_dump_all(manifests), "<mesh>"))
    if problems:
        raise UserError(problems)
    return objs


@pytest.mark.scenario(27)
def test_no_plaintext_across_clusters_when_encrypted(
    lab: Lab, mode: str, nodes: dict[str, Node], mesh_pods: dict[str, Pod], record: Recorder
) -> None:
    """A canary from a pod of A to a pod of B, captured on both nodes' underlays and on
    every router interface: encrypted, never in clear and only WireGuard between the
    nodes; unencrypted (the negative control), seen in clear on every capture."""
    a, b = mesh_pods["a"], mesh_pods["b"]
    encrypted = ModeSpec.parse(mode).encryption == "wireguard"
    segments = {a.node.plan.underlay.segment, b.node.plan.underlay.segment}  # type: ignore[union-attr]
    spots: list[tuple[Node, str]] = [(a.node, a.node.underlay_if), (b.node, b.node.underlay_if)]
    for r in (n for n in lab.plan.nodes.values() if n.is_router):  # the router's legs on the path
        spots += [(nodes[r.name], i.name) for i in r.interfaces if i.segment in segments]
    canary = f"podlab-mesh-canary-{uuid.uuid4().hex[:12]}"

    def traffic() -> echo.ProbeReport:
        argv = echo.probe_command("udp", b.ip, UDP_PORT, count=5, payload=canary,
                                  connect_timeout_s=1.0, budget_s=6.0, wait_s=2.0)  # fmt: skip
        return echo.parse_probe(_out(a.run(argv, 20)))

    texts, report = _captured(spots, "not arp", traffic)
    caps = [capture.parse(t, canary=canary) for t in texts]
    # one answer proves the canary crossed (a busy machine may lose a late reply or two)
    assert report.successes > 0, f"{a} → {b}: canary never answered ({report.describe()})"
    names = [f"{n.name}:{i}" for n, i in spots]
    relevant = [(nm, c) for nm, c in zip(names, caps, strict=True) if c.packets]
    for nm, c in relevant:
        record("mesh_leak_canary_seen_count", float(c.canary_seen), "count",
               labels={"capture": nm, "encryption": "on" if encrypted else "off"})  # fmt: skip
    assert relevant, f"no capture saw a packet while {a} sent to {b}: cannot judge a leak"
    if encrypted:
        leaks = [nm for nm, c in relevant if c.canary_seen]
        assert not leaks, f"canary {a} → {b} seen in clear on {', '.join(leaks)}"
        clear = [h for _nm, c in relevant for h in c.headers
                 if a.ip in h or b.ip in h]  # fmt: skip
        assert not clear, f"pod addresses in clear on the wire: {clear[0][:160]}"
    else:
        seen = [nm for nm, c in relevant if c.canary_seen]
        assert len(seen) == len(spots), (
            f"negative control ({mode}, unencrypted): the canary {a} → {b} was seen in clear "
            f"only on {seen or 'nothing'} of {names}; the captures would miss a leak"
        )
