"""NetworkPolicy on a real kernel, routed and bridged pods: the allow/deny matrix.

Every blocked case is a drop (the probe times out; a refusal would fail it) and
sits next to a control that must connect under the same policy, so each
assertion can fail. Pods: b0, b1 (servers: TCP 8080 'http', 9090; UDP 8080),
c0 (default namespace, role=client), c1 (namespace team-a labelled team=a,
role=client).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.agent.policy import PodInfo, PolicyEnforcer, ruleset
from harness.exec import run
from harness.testlab.svclab import SvcLab

pytestmark = pytest.mark.root
NS_LABELS = {"team-a": {"team": "a"}}


@pytest.fixture(scope="module", params=["routed", "bridged"])
def lab(request: pytest.FixtureRequest) -> Iterator[SvcLab]:
    lab = SvcLab.create(backends=2, clients=2, bridged=request.param == "bridged")
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture
def enforce(lab: SvcLab) -> Iterator:
    enforcer = PolicyEnforcer(lab.node)
    p = lab.pods
    pods = [
        PodInfo("default", "b0", p["b0"].ip, {"app": "b0"}, (("http", "TCP", 8080),)),
        PodInfo("default", "b1", p["b1"].ip, {"app": "b1"}, (("http", "TCP", 8080),)),
        PodInfo("default", "c0", p["c0"].ip, {"role": "client"}),
        PodInfo("team-a", "c1", p["c1"].ip, {"role": "client"}),
    ]

    def apply(*specs: dict, ns: str = "default") -> None:
        pols = [
            {"metadata": {"name": f"p{i}", "namespace": ns}, "spec": s} for i, s in enumerate(specs)
        ]
        enforcer.apply(ruleset(pols, pods, NS_LABELS))

    try:
        yield apply
    finally:
        enforcer.close()


def probe(lab: SvcLab, src: str, dst: str, port: int = 8080, udp: bool = False) -> str:
    (out,) = lab.connect(lab.pods[src].ns, lab.pods[dst].ip, port, 1, udp=udp)
    return "ok" if out.startswith(dst) else out


ON_B0 = {"matchLabels": {"app": "b0"}}


def test_default_deny_ingress_drops(lab: SvcLab, enforce) -> None:
    enforce()
    assert probe(lab, "c0", "b0") == "ok"  # no policy: open
    enforce({"podSelector": ON_B0, "policyTypes": ["Ingress"]})
    assert probe(lab, "c0", "b0") == "timeout", "deny-all ingress must drop, not reject"
    assert probe(lab, "c0", "b0", udp=True) == "timeout"
    assert probe(lab, "c0", "b1") == "ok"  # control: a pod no policy selects stays open
    assert probe(lab, "b0", "b1") == "ok"  # egress of b0 is not restricted, replies pass


def test_forward_hook_comes_and_goes_with_the_policies(lab: SvcLab, enforce) -> None:
    """The forward base chain exists only while a policy selects a pod here; the
    deny takes effect when it appears and lifts when it goes."""

    def hooked() -> bool:
        return "hook forward" in run(["nft", "list", "table", "inet", "podlab-policy"],
                                     netns=lab.node).stdout  # fmt: skip

    enforce()
    assert not hooked() and probe(lab, "c0", "b0") == "ok"
    enforce({"podSelector": ON_B0, "policyTypes": ["Ingress"]})
    assert hooked() and probe(lab, "c0", "b0") == "timeout"
    enforce()
    assert not hooked() and probe(lab, "c0", "b0") == "ok"


def test_allow_by_pod_label_is_namespace_scoped(lab: SvcLab, enforce) -> None:
    enforce(
        {
            "podSelector": ON_B0,
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}],
        }
    )
    assert probe(lab, "c0", "b0") == "ok"
    assert probe(lab, "c1", "b0") == "timeout"  # same label, other namespace
    assert probe(lab, "b1", "b0") == "timeout"  # not a client


def test_allow_by_namespace_label(lab: SvcLab, enforce) -> None:
    peer = {"namespaceSelector": {"matchLabels": {"team": "a"}}}
    enforce({"podSelector": ON_B0, "ingress": [{"from": [peer]}]})
    assert probe(lab, "c1", "b0") == "ok"
    assert probe(lab, "c0", "b0") == "timeout"


def test_allow_by_ip_block_with_except(lab: SvcLab, enforce) -> None:
    block = {"cidr": "10.244.0.0/16", "except": [f"{lab.pods['c0'].ip}/32"]}
    enforce({"podSelector": ON_B0, "ingress": [{"from": [{"ipBlock": block}]}]})
    assert probe(lab, "c1", "b0") == "ok"
    assert probe(lab, "c0", "b0") == "timeout"


def test_allow_by_port_and_named_port(lab: SvcLab, enforce) -> None:
    enforce({"podSelector": ON_B0, "ingress": [{"ports": [{"port": 9090}]}]})
    assert probe(lab, "c0", "b0", 9090) == "ok"
    assert probe(lab, "c0", "b0", 8080) == "timeout"
    enforce({"podSelector": ON_B0, "ingress": [{"ports": [{"port": "http"}]}]})
    assert probe(lab, "c0", "b0", 8080) == "ok"
    assert probe(lab, "c0", "b0", 9090) == "timeout"
    assert probe(lab, "c0", "b0", 8080, udp=True) == "timeout"  # http is TCP


def test_egress_default_deny_and_allow(lab: SvcLab, enforce) -> None:
    client = {"matchLabels": {"role": "client"}}
    enforce({"podSelector": client, "policyTypes": ["Egress"]})
    assert probe(lab, "c0", "b1") == "timeout"
    assert probe(lab, "b0", "b1") == "ok"  # control: b0 is not a client
    to_b1 = {"to": [{"podSelector": {"matchLabels": {"app": "b1"}}}], "ports": [{"port": 8080}]}
    enforce({"podSelector": client, "policyTypes": ["Egress"], "egress": [to_b1]})
    assert probe(lab, "c0", "b1") == "ok"
    assert probe(lab, "c0", "b1", 9090) == "timeout"
    assert probe(lab, "c0", "b0") == "timeout"


def ping_ok(lab: SvcLab, src: str, dst: str) -> bool:
    argv = ["ping", "-c", "1", "-W", "1", lab.pods[dst].ip]
    return run(argv, netns=lab.pods[src].ns, check=False).returncode == 0


def test_icmp_follows_ports(lab: SvcLab, enforce) -> None:
    enforce({"podSelector": ON_B0, "ingress": [{"from": [{"podSelector": {}}]}]})
    assert ping_ok(lab, "c0", "b0"), "a rule without ports allows every protocol, ICMP too"
    enforce({"podSelector": ON_B0, "ingress": [{"ports": [{"port": 8080}]}]})
    assert not ping_ok(lab, "c0", "b0"), "a rule with ports allows only those: no ICMP"
    assert probe(lab, "c0", "b0") == "ok"
