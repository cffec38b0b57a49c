"""Scenario 28: pod→pod throughput against the same path built by hand, and the underlay.

TCP with one stream is the headline: in ``--tput-rounds`` interleaved rounds
(default 5, each ``--tput-seconds`` long, default 1; the order rotates every
round) iperf3 runs pod→pod across nodes in the mode, pod→pod on the mode's
hand-built path (``harness.refpath``: the same pod interface style and
encapsulation made with iproute2 alone, in throwaway namespaces inside the
client node) and node→node on the underlay. Every round is recorded
(``labels.path`` pod-pod / hand-built / node-node, ``labels.repeat``), and
the ratios of the medians, ``throughput_ratio_to_handbuilt`` and
``throughput_ratio_to_underlay``. A mode without an iproute2 equivalent (udp,
userspace IPIP) gets no hand-built figure; its pod-pod records name why in
``labels.reference_note``. TCP with 4 streams and UDP are measured once each
against the underlay before and after. Nothing here asserts a figure: the
0.95 goal is judged by ``bench/bench_handbuilt.py`` and shown in the report.
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.conformance import fallbacks
from harness.conformance.fixtures import EchoPods
from harness.conformance.labctl import Lab, ModeSpec
from harness.conformance.pods import Pod
from harness.conformance.remote import Node, output
from harness.conformance.run import Recorder
from harness.probes import echo, iperf3
from harness.refpath import build, spec

# The headline (TCP, one stream, against the hand-built path) runs in every mode;
# 4 TCP streams and UDP against the underlay are once per mode family in the default
# matrix (11 s each: in every mode they were a sixth of the run's 15-minute budget).
TESTS = [
    pytest.param(proto, streams, id=f"{proto}-{streams}",
                 marks=pytest.mark.scenario(28, cost="heavy"))
    for proto, streams in (("tcp", 4), ("udp", 1))
]  # fmt: skip
_ports = itertools.count(5301)
# A just-started iperf3 server is asked until it listens (was: a fixed 0.5 s before each
# run): up to LISTEN_TRIES connects, LISTEN_STEP_S apart, then a fresh server and port
LISTEN_TRIES = 10
LISTEN_STEP_S = 0.2


@pytest.fixture(scope="module")
def perf_pods(echo_pods: EchoPods) -> tuple[Pod, Pod]:
    """The mode's shared echo pods on two nodes (the cross-node path)."""
    return echo_pods.pair("cross-node")


def measure(
    client_run, server: Node, server_netns: str | None, ip: str, proto: str, streams: int, secs: int
) -> iperf3.IperfResult:  # type: ignore[no-untyped-def]
    """Start a one-shot server (in a pod's netns if given), run the client, parse its JSON."""
    error: Exception | None = None
    for _ in range(3):
        port = next(_ports)
        argv = iperf3.server_command(port, lifetime_s=secs + 30)
        if server_netns:
            argv = ["ip", "netns", "exec", server_netns, *argv]
        server.start(argv, lifetime_s=secs + 30)
        cmd = iperf3.client_command(ip, port, secs, streams, udp=proto == "udp", udp_bitrate="0")
        # no fixed wait for the server to listen: a refused connection is retried against
        # the same one-shot server (it serves one test; a refused connect is none)
        for _ in range(LISTEN_TRIES):
            res = client_run(cmd, timeout_s=secs + 20)
            try:
                return iperf3.parse(res.stdout or res.stderr)
            except iperf3.IperfError as exc:
                error = exc
                if "refused" not in str(exc):
                    raise AssertionError(
                        f"iperf3 {proto} x{streams} to {ip} failed: {error}"
                    ) from exc
                time.sleep(LISTEN_STEP_S)
    raise AssertionError(f"iperf3 {proto} x{streams} to {ip} failed: {error}")


def _record(record: Recorder, result: iperf3.IperfResult, path: str, labels: dict[str, str]):  # type: ignore[no-untyped-def]
    tags = {**labels, "path": path}
    record("throughput_bps", result.received_bps, "bps", labels=tags)
    record("cpu_sender_cores", result.sender_cpu_cores, "cores", labels=tags)
    record("cpu_receiver_cores", result.receiver_cpu_cores, "cores", labels=tags)
    if result.retransmits is not None:
        record("retransmits_count", float(result.retransmits), "count", labels=tags)
    if result.lost_percent is not None:
        record("udp_loss_percent", result.lost_percent, "percent", labels=tags)


def _underlay(
    client: Pod, server: Pod, proto: str, streams: int, secs: int, record: Recorder,
    labels: dict[str, str],
) -> iperf3.IperfResult:  # fmt: skip
    """node→node between the pods' nodes, on their underlay addresses; recorded."""
    result = measure(client.node.run, server.node, None, server.node.underlay_ip, proto,
                     streams, secs)  # fmt: skip
    _record(record, result, "node-node", labels)
    return result


@pytest.mark.parametrize(("proto", "streams"), TESTS)
def test_pod_to_pod_throughput_against_underlay(
    nodes: dict[str, Node],
    perf_pods: tuple[Pod, Pod],
    proto: str,
    streams: int,
    thorough: bool,
    record: Recorder,
) -> None:
    client, server = perf_pods
    secs = 10 if thorough else 3
    labels = {"proto": proto, "streams": str(streams)}
    # The underlay is measured before and after the pods (the report takes the
    # median of repeats), so a neighbour's burst on a shared machine skews less.
    under = [_underlay(client, server, proto, streams, secs, record, labels)]
    pod = measure(client.run, server.node, server.netns, server.ip, proto, streams, secs)
    _record(record, pod, "pod-pod", labels)
    under.append(_underlay(client, server, proto, streams, secs, record, labels))
    base = sum(u.received_bps for u in under) / len(under)
    if base > 0:
        record("throughput_ratio_to_underlay", pod.received_bps / base, "ratio", labels=labels)
    assert pod.received_bps > 0, (
        f"{client} → {server} {server.ip}: iperf3 {proto} x{streams} moved no data"
    )


# ---------------------------------------------------------------- the hand-built reference


@pytest.fixture
def tput_rounds(request: pytest.FixtureRequest, thorough: bool) -> tuple[int, int]:
    """(rounds, seconds per iperf3 run) from ``--tput-rounds`` / ``--tput-seconds``."""
    n = request.config.getoption("--tput-rounds")
    secs = request.config.getoption("--tput-seconds") or (3 if thorough else 1)
    return int(n), int(secs)


def reference_of(lab: Lab, mode: str, client: Pod, server: Pod) -> spec.RefSpec | spec.NoReference:
    """The mode's hand-built path, with the implementations the agents chose for this run."""
    ms = ModeSpec.parse(mode)
    under_a, under_b = client.node.plan.underlay, server.node.plan.underlay
    assert under_a is not None and under_b is not None
    records = {r.name: (r.model_extra or {}).get("backend") or {} for r in lab.client().nodes()}
    backend = records.get(client.node.name, {})
    return spec.reference_for(
        ms.mode,
        ms.encryption,
        underlay_mtu=under_a.mtu,
        same_segment=under_a.segment == under_b.segment,
        wireguard_impl=fallbacks.wireguard_impl(lab, client.node.name, backend) or "",
        ipip_impl=str(backend.get("IPIPImpl", "kernel")),
    )


def _pidfile(port: int) -> str:
    return f"/run/podlab-iperf3-{port}.pid"


def _serve(node: Node, netns: str | None, port: int, lifetime_s: float) -> str:
    """A persistent ``iperf3 -s`` (in ``netns`` if given); returns its pid file on the node."""
    pidfile = _pidfile(port)
    argv = ["iperf3", "-s", "-p", str(port), "-I", pidfile]
    node.start(["ip", "netns", "exec", netns, *argv] if netns else argv, lifetime_s)
    return pidfile


def _stop(node: Node, pidfiles: list[str]) -> None:
    """Stop the servers of ``pidfiles`` on ``node`` and remove the files: one ssh round trip."""
    script = 'for f; do [ -s "$f" ] && kill "$(cat "$f")"; rm -f "$f"; done; true'
    node.run(["sh", "-c", script, "stop", *pidfiles], timeout_s=10)


def _refpath(node: Node, *args: str, timeout_s: float = 60) -> str:
    res = node.run([echo.NODE_PYTHON, "-m", "harness.refpath", *args], timeout_s=timeout_s)
    assert res.returncode == 0, f"{node.name}: refpath {args[0]} failed: {output(res).strip()}"
    return res.stdout


@pytest.mark.scenario(28)
def test_tcp_throughput_against_hand_built_path(
    lab: Lab,
    mode: str,
    perf_pods: tuple[Pod, Pod],
    tput_rounds: tuple[int, int],
    record: Recorder,
) -> None:
    client, server = perf_pods
    n_rounds, secs = tput_rounds
    ref = reference_of(lab, mode, client, server)
    budget = n_rounds * 3 * (secs + 5) + 60
    ports = {name: next(_ports) for name in ("pod-pod", "node-node", "hand-built")}
    pidfiles = [_pidfile(ports["pod-pod"]), _pidfile(ports["node-node"])]
    targets = [f"pod-pod={client.netns}@{server.ip}:{ports['pod-pod']}",
               f"node-node=@{server.node.underlay_ip}:{ports['node-node']}"]  # fmt: skip
    tag = build.new_tag()
    try:
        # the two servers and the hand-built path (with its own server) start at once; no
        # fixed wait after them: the rounds' first connect comes after an ssh round trip and
        # an interpreter start, and a refused one is retried (rounds.iperf_once)
        with ThreadPoolExecutor(2) as pool:
            serving = [
                pool.submit(_serve, server.node, netns, ports[path], budget)
                for path, netns in (("pod-pod", server.netns), ("node-node", None))
            ]
            if isinstance(ref, spec.RefSpec):
                up = ["--spec", ref.to_json(), "--tag", tag, "--lifetime", str(budget),
                      "--server-port", str(ports["hand-built"])]  # fmt: skip
                built = build.RefPath.from_json(_refpath(client.node, "up", *up))
                hand = f"{built.client_netns}@{built.server_ip}:{built.port}"
                targets.insert(1, f"hand-built={hand}")
            for started in serving:
                started.result()
        argv = ["rounds", "--rounds", str(n_rounds), "--seconds", str(secs)]
        argv += [a for t in targets for a in ("--target", t)]
        got = json.loads(_refpath(client.node, *argv, timeout_s=budget))
    finally:
        with ThreadPoolExecutor(2) as pool:
            stopped = pool.submit(_stop, server.node, pidfiles)
            if isinstance(ref, spec.RefSpec):
                _refpath(client.node, "down", "--tag", tag)
            stopped.result()
    _record_rounds(record, got, ref)
    moved = [r["received_bps"] for r in got["pod-pod"]]
    assert all(v > 0 for v in moved), (
        f"{client} → {server} {server.ip}: a round of iperf3 TCP moved no data: {moved}"
    )


def _record_rounds(record: Recorder, got: dict[str, list[dict]], ref) -> None:  # type: ignore[no-untyped-def,type-arg]
    """Each round as its own measurement, then the ratios of the medians."""
    labels = {"proto": "tcp", "streams": "1"}
    if isinstance(ref, spec.RefSpec):
        labels["reference"] = ref.name
    for path, results in got.items():
        for i, raw in enumerate(results):
            extra = {"repeat": str(i + 1)}
            if path == "pod-pod" and isinstance(ref, spec.NoReference):
                extra["reference_note"] = ref.reason
            _record(record, iperf3.IperfResult(**raw), path, {**labels, **extra})
    med = {p: statistics.median(r["received_bps"] for r in rs) for p, rs in got.items()}
    if med.get("hand-built"):
        record("throughput_ratio_to_handbuilt", med["pod-pod"] / med["hand-built"], "ratio",
               labels=labels)  # fmt: skip
    if med.get("node-node"):
        record("throughput_ratio_to_underlay", med["pod-pod"] / med["node-node"], "ratio",
               labels=labels)  # fmt: skip
