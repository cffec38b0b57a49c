"""Scenario 36: a third-party runtime (podman, CNI backend) puts a container on the pod network.

On one cluster node podman runs a container from a busybox-static tree
(``podman run --rootfs``: no image, no registry) on the network ``podlab``
(``/etc/cni/net.d/10-podlab.conflist``, written by the agent; podman's
``containers.conf`` is set up by the deploy). An echo pod runs on another node.
Checked: the container's address comes from its node's lease and libcni cached
the result; pod → container (HTTP to the container's busybox httpd) and
container → pod (TCP echo, which names the pod and the caller's address: no
NAT) across nodes; ``podman rm -f`` frees the address and the cached result,
and the pod then can no longer reach it (the control for the reachability
check). Runs for the first mode of each pod interface family (bridge, routed).
"""

from __future__ import annotations

import ipaddress
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from harness.conformance import labctl, paths
from harness.conformance.labctl import Lab
from harness.conformance.pods import TCP_PORT, Pod, PodFactory
from harness.conformance.remote import Node, output
from harness.probes import echo

ROOTFS = "/var/lib/podlab/rootfs-busybox"
IPAM_DIR = "/var/lib/podlab/cni/ipam"
NETWORK = "podlab"
HTTPD_PORT = 8080
PREPARE = f"""set -e
command -v podman >/dev/null || {{ echo "podman is not installed"; exit 3; }}
[ -x /bin/busybox ] || {{ echo "busybox-static is not installed"; exit 3; }}
R={ROOTFS}
if [ ! -x $R/bin/sh ]; then
  mkdir -p $R/bin $R/proc $R/sys $R/dev $R/etc $R/tmp $R/www
  cp /bin/busybox $R/bin/busybox && chroot $R /bin/busybox --install -s /bin
fi
mkdir -p $R/www
"""


@dataclass(frozen=True)
class Container:
    node: Node
    name: str
    ip: str
    token: str
    container_id: str


@pytest.fixture(scope="module")
def container(lab: Lab, mode: str, nodes: dict[str, Node]) -> Iterator[Container]:
    pair = paths.node_pair(lab, "cross-node")
    if pair is None:
        pytest.skip(paths.why_missing(lab, "cross-node"))
    node = nodes[pair[0]]
    ready = node.run(["sh", "-c", PREPARE], timeout_s=60)
    if ready.returncode == 3:
        fix = ("the VM guest image does not include podman, runc and busybox-static"
               if labctl.backend(lab.name) == "vm" else
               "`make setup` installs podman, runc and busybox-static")  # fmt: skip
        pytest.skip(f"{node.name}: {ready.stdout.strip()}; {fix}")
    assert ready.returncode == 0, f"{node.name}: preparing the rootfs failed: {output(ready)}"
    name = f"podlab-s36-{uuid.uuid4().hex[:8]}"
    token = f"{name} on {node.name}"
    node.check(["sh", "-c", f"echo '{token}' > {ROOTFS}/www/index.html"])
    run = node.run(["podman", "run", "-d", "--name", name, "--rootfs", ROOTFS,
                    "httpd", "-f", "-p", str(HTTPD_PORT), "-h", "/www"], timeout_s=90)  # fmt: skip
    try:
        assert run.returncode == 0, f"{node.name}: podman run failed: {output(run)}"
        fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        ip = node.check(["podman", "inspect", name, "--format", fmt]).stdout.strip()
        cid = node.check(["podman", "inspect", name, "--format", "{{.Id}}"]).stdout.strip()
        assert ip, f"{node.name}: podman gave {name} no address on network podlab"
        yield Container(node, name, ip, token, cid)
    finally:
        node.run(["podman", "rm", "-f", "-t", "0", name], timeout_s=60)


@pytest.fixture(scope="module")
def peer(lab: Lab, container: Container, module_pod_factory: PodFactory) -> Pod:
    others = [n.name for n in lab.cluster_nodes() if n.name != container.node.name]
    (pod,) = module_pod_factory.create([others[0]], prefix="s36")
    return pod


def _lease(node: Node) -> ipaddress.IPv4Network:
    env = dict(
        line.split("=", 1)
        for line in node.check(["cat", "/run/podlab/subnet.env"]).stdout.splitlines()
        if "=" in line
    )
    return ipaddress.IPv4Interface(env["FLANNEL_SUBNET"]).network


@pytest.mark.scenario(36)
def test_container_address_comes_from_the_nodes_lease(container: Container) -> None:
    lease = _lease(container.node)
    assert ipaddress.IPv4Address(container.ip) in lease, (
        f"podman container {container.name} on {container.node.name} got {container.ip}, "
        f"outside the node's lease {lease}"
    )
    cache = f"/var/lib/cni/results/podlab-{container.container_id}-eth0"
    data = json.loads(container.node.check(["cat", cache]).stdout)
    assert data["kind"] == "cniCacheV1" and data["networkName"] == "podlab", data
    assert data["result"]["ips"][0]["address"].startswith(container.ip + "/"), data["result"]


@pytest.mark.scenario(36)
def test_pod_and_container_reach_each_other_across_nodes(container: Container, peer: Pod) -> None:
    argv = echo.probe_command("http", container.ip, HTTPD_PORT, count=3)
    report = echo.parse_probe(output(peer.run(argv, timeout_s=30)))
    assert report.all_ok and all(container.token in r for r in report.replies()), (
        f"pod {peer} → podman container {container.name} ({container.node.name}) "
        f"{container.ip}:{HTTPD_PORT}/http: {report.describe()}"
    )
    call = container.node.run(
        ["sh", "-c", f"printf 'hello\\n' | podman exec -i {container.name} "
         f"nc -w 3 {peer.ip} {TCP_PORT}"], timeout_s=30,
    )  # fmt: skip
    words = call.stdout.split()
    assert call.returncode == 0 and words and words[0] == peer.name, (
        f"podman container {container.name} → pod {peer} {peer.ip}:{TCP_PORT}/tcp: {output(call)}"
    )
    assert len(words) > 1 and words[1].split(":")[0] == container.ip, (
        f"pod {peer} saw the container as {words[1:2]}, not {container.ip}: NATed"
    )


def _held_by(node: Node, container_id: str) -> list[str]:
    """The IPAM files naming this attachment: its reservation (the JSON names the
    container) and its owner link (the name does). Judged by owner, not address:
    the lowest free address goes to the next pod, and in a lockstep run another
    session's pod may take the freed one on this node a moment after the DEL."""
    script = (f"grep -rlF -- {container_id} {IPAM_DIR}; "
              f"ls -d {IPAM_DIR}/*/owner/{NETWORK}:{container_id}:eth0")  # fmt: skip
    return node.run(["sh", "-c", f"{{ {script}; }} 2>/dev/null"]).stdout.split()


@pytest.mark.scenario(36)
def test_podman_rm_frees_the_address(container: Container, peer: Pod) -> None:
    node = container.node
    held = _held_by(node, container.container_id)
    assert any(path.endswith(f"/{container.ip}") for path in held) and len(held) == 2, (
        f"{node.name}: no reservation of {container.ip} and owner link for "
        f"{container.container_id} before rm (control): {held}"
    )
    rm = node.run(["podman", "rm", "-f", "-t", "0", container.name], timeout_s=60)
    assert rm.returncode == 0, f"{node.name}: podman rm -f {container.name}: {output(rm)}"
    left = _held_by(node, container.container_id)
    assert not left, f"{node.name}: {container.ip} is still reserved after podman rm -f: {left}"
    cache = f"/var/lib/cni/results/podlab-{container.container_id}-eth0"
    assert node.run(["test", "-e", cache]).returncode != 0, f"{cache} outlived podman rm -f"
    argv = echo.probe_command("http", container.ip, HTTPD_PORT, count=2, connect_timeout_s=1,
                              budget_s=4)  # fmt: skip
    report = echo.parse_probe(output(peer.run(argv, timeout_s=30)))
    # the container's own page, not any answer: a pod given the freed address
    # answers on :8080 too (its TCP echo)
    served = [r for r in report.replies() if container.token in r]
    assert not served, f"pod {peer} still reaches {container.name} at {container.ip}: {served}"
