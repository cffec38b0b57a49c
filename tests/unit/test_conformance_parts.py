"""Pure parts of the conformance harness: paths, mode specs, manifests, assertion messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.api.validate import load_documents, validate_documents
from harness.conformance import asserts, paths, pods
from harness.conformance.labctl import Lab, ModeSpec
from harness.errors import UserError
from harness.plan.build import load_plan
from harness.probes.echo import Attempt, ProbeReport

TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"


def lab_of(topology: str) -> Lab:
    plan = load_plan(TOPOLOGIES / topology)
    return Lab(plan.name, Path("/nonexistent"), plan, Path("/nonexistent.yml"))


def test_single_segment_lab_offers_same_and_cross_node_only() -> None:
    lab = lab_of("single-cluster.clab.yml")
    assert paths.node_pair(lab, "same-node") == ("c1-w1", "c1-w1")
    assert paths.node_pair(lab, "cross-node") == ("c1-w1", "c1-w2")
    assert paths.node_pair(lab, "cross-segment") is None
    assert "one L2 segment" in paths.why_missing(lab, "cross-segment")


def test_cross_subnet_lab_offers_a_pair_across_the_router() -> None:
    lab = lab_of("cross-subnet.clab.yml")
    near = paths.node_pair(lab, "cross-node")
    far = paths.node_pair(lab, "cross-segment")
    assert near is not None and far is not None
    segment = {n.name: n.underlay.segment for n in lab.cluster_nodes() if n.underlay}
    assert segment[near[0]] == segment[near[1]]
    assert segment[far[0]] != segment[far[1]]
    assert lab.outside_nodes() == []


def test_unknown_path_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown path"):
        paths.node_pair(lab_of("single-cluster.clab.yml"), "cross-cluster")


@pytest.mark.parametrize(
    ("text", "mode", "encryption"),
    [("vxlan", "vxlan", "none"), ("host-gw+wireguard", "host-gw", "wireguard")],
)
def test_mode_spec_round_trips(text: str, mode: str, encryption: str) -> None:
    spec = ModeSpec.parse(text)
    assert (spec.mode, spec.encryption, str(spec)) == (mode, encryption, text)


@pytest.mark.parametrize("text", ["geneve", "vxlan+ipsec"])
def test_mode_spec_refuses_unknown_names(text: str) -> None:
    with pytest.raises(UserError):
        ModeSpec.parse(text)


def test_pod_manifests_pass_the_api_validation() -> None:
    manifests = [pods.pod_manifest("echo-1-0", "c1-w1", pods.echo_command("echo-1-0")),
                 pods.pod_manifest("slo-1-0", None, ["sleep", "infinity"])]  # fmt: skip
    objects, problems = validate_documents(load_documents(yaml.safe_dump_all(manifests), "<test>"))
    assert problems == []
    assert [o.obj.metadata.namespace for o in objects] == [pods.NAMESPACE] * 2
    command = objects[0].obj.spec.containers[0].command  # type: ignore[attr-defined]
    assert command[-6:] == ["--tcp", "8080", "--udp", "8081", "--http", "8000"]


def report(*outcomes: str, reply: str = "pod-b 10.244.1.2:5555") -> ProbeReport:
    attempts = tuple(
        Attempt(o, 0.001, reply if o == "success" else "", "" if o == "success" else "timed out")
        for o in outcomes
    )
    return ProbeReport("tcp", "10.244.2.5", 8080, attempts)


def test_reach_failure_reads_like_a_spec() -> None:
    msg = asserts.reach_failure("pod-a (c1-w1)", "pod-b", report(*["timeout"] * 5))
    assert (
        msg
        == "pod-a (c1-w1) cannot reach pod-b 10.244.2.5:8080/tcp: 5/5 lost (timeout 5; timed out)"
    )


def test_reach_failure_names_a_wrong_server() -> None:
    msg = asserts.reach_failure("pod-a", "pod-c", report("success"), want_name="pod-c")
    assert msg is not None and "answered, but not by pod-c: 'pod-b 10.244.1.2:5555'" in msg
    assert asserts.reach_failure("pod-a", "pod-b", report("success"), want_name="pod-b") is None


def test_blocked_must_be_the_expected_outcome() -> None:
    asserts.assert_blocked("a", "b", report("timeout", "timeout"), "timeout")
    with pytest.raises(AssertionError, match="should be timeout"):
        asserts.assert_blocked("a", "b", report("refused"), "timeout")
    with pytest.raises(AssertionError, match="no attempts"):
        asserts.assert_blocked("a", "b", report(), "timeout")


def test_matrix_lists_every_failure() -> None:
    asserts.assert_matrix([None, None], 2, "node → pod")
    with pytest.raises(AssertionError, match=r"node → pod: 2/3 pairs failed:\n  x\n  y"):
        asserts.assert_matrix([None, "x", "y"], 3, "node → pod")


def test_host_gw_does_not_apply_across_segments() -> None:
    lab = lab_of("cross-subnet.clab.yml")
    far = paths.node_pair(lab, "cross-segment")
    near = paths.node_pair(lab, "cross-node")
    assert far is not None and near is not None
    assert paths.mode_excludes("host-gw", "cross-segment")
    assert paths.mode_excludes("host-gw+wireguard", "cross-segment")
    assert paths.mode_excludes("vxlan", "cross-segment") is None
    assert paths.mode_excludes("host-gw", "cross-node") is None
    assert not paths.applies(lab, "host-gw", *far)
    assert paths.applies(lab, "host-gw", *near)
    assert paths.applies(lab, "vxlan", *far)


def test_fallbacks_come_from_the_agents_node_records(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.api.objects import NodeRecord
    from harness.conformance import labctl

    lab = lab_of("single-cluster.clab.yml")
    records = [
        NodeRecord(name="c1-w1", fallbacks=["userspace-ipip"]),
        NodeRecord(name="c1-w2", backend={"fallback": "wireguard-go"}),
        NodeRecord(name="c1-cp", fallbacks=["userspace-ipip"], backend={"vni": 1}),
    ]

    class Client:
        def nodes(self) -> list[NodeRecord]:
            return records

    monkeypatch.setattr(Lab, "client", lambda self, cluster=None: Client())
    assert labctl.fallbacks(lab) == ["userspace-ipip", "wireguard-go"]
