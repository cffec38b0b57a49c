"""The `common` role's promises on every node: packages, directories, sysctls."""

from __future__ import annotations

import os
from typing import Any

import pytest

from tests.infra.conftest import Node

PACKAGES = [
    "iproute2",
    "nftables",
    "iperf3",
    "tcpdump",
    "bird2",
    "wireguard-tools",
    "wireguard-go",
    "python3-venv",
    "supervisor",
]
DIRS = ["/etc/podlab", "/var/lib/podlab", "/var/log/podlab", "/opt/podlab", "/run/podlab"]


@pytest.mark.parametrize("package", PACKAGES)
def test_package_installed(host: Any, node: Node, package: str) -> None:
    assert host.package(package).is_installed, f"{node.name}: package {package} missing"


def test_control_plane_has_etcd_packages(host: Any, node: Node) -> None:
    if not node.runs_etcd:
        pytest.skip(f"{node.name} is a {node.role}: no etcd")
    for package in ("etcd-server", "etcd-client"):
        assert host.package(package).is_installed, f"{node.name}: package {package} missing"


@pytest.mark.parametrize("path", DIRS)
def test_node_directories(host: Any, node: Node, path: str) -> None:
    assert host.file(path).is_directory, f"{node.name}: {path} is not a directory"


def test_forwarding_on_inside_the_node(host: Any, node: Node) -> None:
    assert host.sysctl("net.ipv4.ip_forward") == 1, f"{node.name}: ip_forward is off"


def test_rp_filter_off(host: Any, node: Node) -> None:
    for key in ("net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter"):
        assert host.sysctl(key) == 0, f"{node.name}: {key} = {host.sysctl(key)}, expected 0"


def test_netns_node_is_not_our_namespace(host: Any, node: Node) -> None:
    if node.backend != "netns":
        pytest.skip("not a netns node")
    theirs = host.check_output("readlink /proc/self/ns/net")
    ours = os.readlink("/proc/self/ns/net")  # pytest runs on the lab's host
    assert theirs != ours, f"{node.name}: its shell runs in the test runner's network namespace"
