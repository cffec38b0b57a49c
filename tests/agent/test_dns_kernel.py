"""Cluster DNS on a real node namespace: queried from a pod, over UDP, TCP and glibc.

The server binds the kube-dns ClusterIP in the node namespace (owned through the
proxy's local service-CIDR route); the pod asks through its own routing, and
its glibc resolver uses the resolv.conf the agent writes (search domains,
ndots:5) mounted by ``wrap_command``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.agent.dns import DnsServer, ResolverMounts, Zone, wrap_command, write_pod_files
from harness.agent.proxy.base import local_service_route
from harness.exec import run
from harness.testlab.svclab import SvcLab

pytestmark = pytest.mark.root
DNS = "10.96.0.10"
ASK = r"""
import sys
from dnslib import DNSRecord
q = DNSRecord.question(sys.argv[1], sys.argv[2])
r = DNSRecord.parse(q.send(sys.argv[3], 53, tcp=sys.argv[4] == "tcp", timeout=2))
from dnslib import RCODE
print(RCODE[r.header.rcode], " ".join(sorted(str(x.rdata) for x in r.rr)))
"""


@pytest.fixture(scope="module")
def dnslab() -> Iterator[tuple[SvcLab, DnsServer]]:
    lab = SvcLab.create(backends=1)
    server = None
    try:
        local_service_route(lab.SERVICE_CIDR, lab.node)
        before = os.readlink("/proc/self/ns/net")
        server = DnsServer(DNS, netns=lab.node)
        assert os.readlink("/proc/self/ns/net") == before, "the server moved the whole process"
        b0 = lab.pods["b0"].ip
        ready = [{"type": "Ready", "status": "True"}]
        server.update(
            Zone.build(
                [
                    {
                        "metadata": {"name": "web", "namespace": "default"},
                        "spec": {
                            "clusterIP": "10.96.0.20",
                            "ports": [{"name": "http", "port": 80}],
                        },
                    },
                    {
                        "metadata": {"name": "db", "namespace": "default"},
                        "spec": {"clusterIP": "None", "selector": {"app": "db"}},
                    },
                    {
                        "metadata": {"name": "ext", "namespace": "default"},
                        "spec": {"type": "ExternalName", "externalName": "example.org"},
                    },
                ],
                [{"metadata": {"name": "b0", "namespace": "default", "labels": {"app": "db"}}}],
                {("default", "b0"): {"phase": "Running", "podIP": b0, "conditions": ready}},
            )
        )
        yield lab, server
    finally:
        if server is not None:
            server.close()
        lab.close()


def ask(lab: SvcLab, name: str, qtype: str = "A", tcp: bool = False) -> str:
    argv = [sys.executable, "-c", ASK, name, qtype, DNS, "tcp" if tcp else "udp"]
    return run(argv, netns=lab.pods["c0"].ns).stdout.strip()


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_records_from_a_pod(dnslab: tuple[SvcLab, DnsServer], tcp: bool) -> None:
    lab, _ = dnslab
    assert ask(lab, "web.default.svc.cluster.local", tcp=tcp) == "NOERROR 10.96.0.20"
    assert ask(lab, "db.default.svc.cluster.local", tcp=tcp) == f"NOERROR {lab.pods['b0'].ip}"
    srv = ask(lab, "_http._tcp.web.default.svc.cluster.local", "SRV", tcp=tcp)
    assert srv == "NOERROR 0 100 80 web.default.svc.cluster.local."
    assert ask(lab, "ext.default.svc.cluster.local", tcp=tcp) == "NOERROR example.org."
    assert ask(lab, "nope.default.svc.cluster.local", tcp=tcp) == "NXDOMAIN"


def test_glibc_short_names_through_search_domains(dnslab: tuple[SvcLab, DnsServer]) -> None:
    lab, _ = dnslab
    host_before = Path("/etc/resolv.conf").read_text()
    with tempfile.TemporaryDirectory(prefix="podlab-t-dns-") as tmp:
        files = Path(tmp)
        write_pod_files(files, "default", DNS)
        pod = lab.pods["c0"].ns
        for name in ("web", "web.default", "web.default.svc.cluster.local"):
            out = run(wrap_command(files, ["getent", "ahostsv4", name]), netns=pod).stdout
            assert out.split()[0] == "10.96.0.20", f"{name}: {out!r}"
        # as the agent starts pod commands: nsenter into the pod's netns and its
        # namespace's resolver mount namespace (made once per namespace)
        mounts = ResolverMounts(files / "run")
        try:
            mounts.prepare()
            handle = mounts.handle("default", DNS)
            assert mounts.handle("default", DNS) == handle, "made twice"
            agent_style = ["nsenter", f"--net=/run/netns/{pod}", f"--mount={handle}", "--"]
            out = run([*agent_style, "getent", "ahostsv4", "web"]).stdout
            assert out.split()[0] == "10.96.0.20", f"via the agent's mount namespace: {out!r}"
        finally:
            for point in sorted(files.rglob("*"), reverse=True):
                run(["umount", "-l", str(point)], check=False)
        missing = run(wrap_command(files, ["getent", "ahostsv4", "nope"]), netns=pod, check=False)
        assert missing.returncode == 2 and not missing.stdout  # control: unknown names fail
    assert Path("/etc/resolv.conf").read_text() == host_before, "the host resolver changed"
