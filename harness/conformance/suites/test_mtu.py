"""Scenario 3: the pod MTU is the underlay MTU less the mode's overhead, and the path carries it.

The pod's ``eth0`` must have exactly the MTU the spec gives for the mode; a
don't-fragment ping of exactly that packet size must cross to a pod on another
node (so the encapsulated packet fits the underlay), and one byte more must
fail. With ``--thorough`` the largest passing size is also searched for.
"""

from __future__ import annotations

import pytest

from harness.conformance import paths
from harness.conformance.catalogue import not_applicable
from harness.conformance.fixtures import EchoPods
from harness.conformance.labctl import Lab, ModeSpec
from harness.conformance.pods import Pod
from harness.conformance.run import Recorder
from harness.probes import mtu, ping


@pytest.fixture(scope="module")
def mtu_pods(lab: Lab, echo_pods: EchoPods) -> dict[str, Pod]:
    """A client pod on the first node and a server pod per path the lab offers."""
    offered = {p: paths.node_pair(lab, p) for p in ("cross-node", "cross-segment")}
    if not any(offered.values()):
        not_applicable(paths.why_missing(lab, "cross-node"))
    servers = {p: echo_pods.pair(p)[1] for p, pair in offered.items() if pair}
    return {"client": echo_pods.first, **servers}


def _pod_mtu(pod: Pod) -> int:
    res = pod.run(["cat", "/sys/class/net/eth0/mtu"], timeout_s=10)
    assert res.returncode == 0, f"cannot read eth0 MTU of {pod}: {res.stderr.strip()}"
    return int(res.stdout.strip())


def _df_ping(client: Pod, ip: str, packet: int) -> ping.PingResult:
    argv = ping.command(ip, count=2, size=ping.payload_for(packet), dont_fragment=True)
    res = client.run(argv, timeout_s=15)
    return ping.parse(f"{res.stdout}\n{res.stderr}")


def _expected(lab: Lab, mode: str, pod: Pod) -> int:
    spec = ModeSpec.parse(mode)
    underlay = pod.node.plan.underlay
    assert underlay is not None
    meshed = any(c.mesh for c in lab.plan.clusters.values() if c.name == pod.node.plan.cluster)
    return mtu.expected_pod_mtu(spec.mode, underlay.mtu, spec.encryption, mesh=meshed)


@pytest.mark.scenario(3)
def test_pod_mtu_matches_mode(
    lab: Lab, mode: str, mtu_pods: dict[str, Pod], record: Recorder
) -> None:
    client = mtu_pods["client"]
    got, want = _pod_mtu(client), _expected(lab, mode, client)
    record("pod_mtu_bytes", got, "bytes", labels={"expected": str(want)})
    underlay = client.node.plan.underlay
    assert got == want, (
        f"{client} eth0 MTU is {got}, expected {want} "
        f"(underlay {underlay.mtu if underlay else '?'} less the {mode} overhead)"
    )


@pytest.mark.scenario(3)
@pytest.mark.parametrize("path", ("cross-node", "cross-segment"))
def test_df_ping_of_exactly_the_mtu_passes_and_one_more_fails(
    lab: Lab, mode: str, mtu_pods: dict[str, Pod], path: str, thorough: bool, record: Recorder
) -> None:
    if path not in mtu_pods:
        not_applicable(paths.why_missing(lab, path))
    if excluded := paths.mode_excludes(mode, path):
        not_applicable(excluded)
    client, server = mtu_pods["client"], mtu_pods[path]
    size = _pod_mtu(client)
    fits = _df_ping(client, server.ip, size)
    assert fits.ok, (
        f"{client} → {server} {server.ip}: a don't-fragment ping of {size} bytes "
        f"(the pod MTU) did not pass: {fits.describe()}"
    )
    over = _df_ping(client, server.ip, size + 1)
    assert over.received == 0, (
        f"{client} → {server} {server.ip}: a don't-fragment ping of {size + 1} bytes "
        f"(one over the pod MTU) passed {over.received}/{over.transmitted}"
    )
    if thorough:
        found = mtu.largest_passing(lambda n: _df_ping(client, server.ip, n).ok, 576, size + 100)
        record("path_mtu_bytes", float(found or 0), "bytes", labels={"path": path})
        assert found == size, f"{client} → {server}: largest DF packet is {found}, not {size}"
