"""``retire`` in a throwaway node namespace: it removes what is declared, and nothing else.

The controls matter as much as the removals: an undeclared bridge, a proto-77
route, a file the mode still owns, a process under a declared pid file whose
name is not the daemon's (a recycled pid), and a "bird" in another namespace
must all survive.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from harness.agent import retire, tunloop
from harness.agent.datapath.base import Daemon, Owned
from harness.agent.procs import exists
from harness.testlab.calnet import CalNet

pytestmark = [pytest.mark.root]


@pytest.fixture
def net() -> Iterator[CalNet]:
    with CalNet(1) as n:
        yield n


def _daemon(net: CalNet, ns: str, binary: Path, pidfile: Path) -> subprocess.Popen[bytes]:
    """``binary 60`` running in ``ns`` (``ip netns exec`` execs it: comm = its file name)."""
    proc = subprocess.Popen(["ip", "netns", "exec", ns, str(binary), "60"])
    net.procs.append(proc)
    pidfile.write_text(f"{proc.pid}\n")
    return proc


def test_retire_removes_the_declared_and_spares_the_rest(net: CalNet, tmp_path: Path) -> None:
    ns, other = net.ns(1), net.extra_ns("other")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    bird_bin = tmp_path / "bird"
    shutil.copy("/bin/sleep", bird_bin)
    bird = _daemon(net, ns, bird_bin, run_dir / "bird.pid")
    stranger = _daemon(net, ns, Path("/bin/sleep"), run_dir / "wireguard-go.pid")
    elsewhere = _daemon(net, other, bird_bin, run_dir / "bird-other.pid")
    with IPRoute(netns=ns) as ipr:
        eth1 = ipr.link_lookup(ifname="eth1")[0]
        ipr.link("add", ifname="flannel.1", kind="vxlan", vxlan_id=1, vxlan_link=eth1)
        for name in ("cni0", "keepme"):
            ipr.link("add", ifname=name, kind="bridge")
        cni0 = ipr.link_lookup(ifname="cni0")[0]
        ipr.addr("add", index=cni0, address="10.244.1.1", prefixlen=24)
        ipr.link("set", index=cni0, state="up")
        for dst, proto in (("10.244.9.0", 12), ("10.244.8.0", 77)):
            ipr.route("add", dst=dst, dst_len=24, gateway="10.198.0.9", oif=eth1, proto=proto)
    net.in_netns(1, lambda: os.close(tunloop.open_tun("flannel0")))  # persistent TUN
    (run_dir / "bird.conf").write_text("router id 1.1.1.1;\n")
    (run_dir / "subnet.env").write_text("FLANNEL_MTU=1450\n")
    what = Owned(
        links=frozenset({"flannel.1", "flannel0", "cni0", "tunl-pl"}),
        daemons=frozenset(
            {
                Daemon(run_dir / "bird.pid", "bird"),
                Daemon(run_dir / "wireguard-go.pid", "wireguard-go"),
                Daemon(run_dir / "bird-other.pid", "bird"),
            }
        ),
        route_protos=frozenset({12}),
        files=frozenset({run_dir / "bird.conf"}),
    )

    def go() -> list[str]:
        with IPRoute() as ipr:  # this thread is inside the node's namespace
            return retire.retire(ipr, what, "test")

    removed = net.in_netns(1, go)
    assert bird.wait(timeout=10) is not None, "the declared daemon was not stopped"
    assert exists(stranger.pid), "a process with another name under a pid file was killed"
    assert exists(elsewhere.pid), "a daemon in another namespace was killed"
    with IPRoute(netns=ns) as ipr:
        links = {link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        routes = {(r.get_attr("RTA_DST"), r["proto"]) for r in ipr.get_routes(family=2)}
    assert not links & {"flannel.1", "flannel0", "cni0"}, links
    assert "keepme" in links and "eth1" in links
    assert ("10.244.9.0", 12) not in routes and ("10.244.8.0", 77) in routes
    assert not (run_dir / "bird.conf").exists() and (run_dir / "subnet.env").exists()
    assert not (run_dir / "bird.pid").exists()
    assert sorted(removed) == sorted(
        [
            f"bird (pid file {run_dir / 'bird.pid'})",
            "link cni0",
            "link flannel.1",
            "link flannel0",
            "route 10.244.9.0/24 proto 12",
            f"file {run_dir / 'bird.conf'}",
        ]
    )
    assert net.in_netns(1, go) == [], "a second retire must find nothing"
