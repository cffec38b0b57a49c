"""Services, NetworkPolicies and Namespaces through apply/get/delete on a real etcd.

ClusterIP and nodePort allocation are checked against what etcd holds: no two
services share an address, ``.10`` stays free for kube-dns, re-apply keeps the
address, delete frees it, and two concurrent applies cannot both take one.
"""

from __future__ import annotations

import ipaddress
import json
import threading
from pathlib import Path

import pytest

from harness.api.client import ApiClient
from harness.api.objects import KINDS
from harness.api.validate import load_documents, validate_documents
from harness.store import Store
from tests.integration import test_api_etcd as base
from tests.integration.test_api_etcd import CLUSTER, PREFIX, manifest, podlab

etcd_url = base.etcd_url  # the throwaway etcd and the cleaning KV fixture, shared
kv = base.kv

CIDR = ipaddress.IPv4Network("10.96.0.0/16")


def svc(name: str, ns: str = "default", **spec: object) -> dict:
    body: dict = {"selector": {"app": name}, "ports": [{"port": 80}], **spec}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": body,
    }


def stored(kv: Store, name: str, ns: str = "default") -> dict:
    entry = kv.get(f"{PREFIX}services/{ns}/{name}")
    assert entry is not None, f"service {ns}/{name} not stored"
    return json.loads(entry.value)


def test_cluster_ips_are_distinct_kept_and_freed(
    kv: Store, etcd_url: str, tmp_path: Path, capsys
) -> None:
    docs = [svc(f"s{i}") for i in range(12)]
    rc, out, err = podlab(capsys, etcd_url, "apply", "-f", manifest(tmp_path, *docs))
    assert rc == 0, err
    ips = [stored(kv, f"s{i}")["spec"]["clusterIP"] for i in range(12)]
    assert len(set(ips)) == 12
    assert "10.96.0.10" not in ips, "the kube-dns address was handed to an ordinary service"
    assert all(ipaddress.IPv4Address(ip) in CIDR for ip in ips)
    rc, out, _ = podlab(capsys, etcd_url, "apply", "-f", manifest(tmp_path, *docs))
    assert out.count("unchanged") == 12
    assert podlab(capsys, etcd_url, "delete", "svc", "s0")[0] == 0
    assert kv.get(f"{PREFIX}serviceips/{ips[0]}") is None
    rc, _, _ = podlab(capsys, etcd_url, "apply", "-f", manifest(tmp_path, svc("again")))
    assert stored(kv, "again")["spec"]["clusterIP"] == ips[0]


def test_dns_address_and_collisions_refused(
    kv: Store, etcd_url: str, tmp_path: Path, capsys
) -> None:
    rc, _, err = podlab(
        capsys, etcd_url, "apply", "-f", manifest(tmp_path, svc("x", clusterIP="10.96.0.10"))
    )
    assert rc == 2 and "reserved for kube-system/kube-dns" in err
    dns = svc("kube-dns", "kube-system", clusterIP="10.96.0.10")
    assert podlab(capsys, etcd_url, "apply", "-f", manifest(tmp_path, dns))[0] == 0
    podlab(capsys, etcd_url, "apply", "-f", manifest(tmp_path, svc("a", clusterIP="10.96.5.5")))
    rc, _, err = podlab(
        capsys, etcd_url, "apply", "-f", manifest(tmp_path, svc("b", clusterIP="10.96.5.5"))
    )
    assert rc == 2 and "already used by service default/a" in err
    rc, _, err = podlab(
        capsys, etcd_url, "apply", "-f", manifest(tmp_path, svc("c", clusterIP="10.97.0.1"))
    )
    assert rc == 2 and "not a usable address of 10.96.0.0/16" in err
    assert kv.get(f"{PREFIX}services/default/b") is None


def test_node_ports_allocated_and_unique(kv: Store, etcd_url: str, tmp_path: Path, capsys) -> None:
    a = svc("a", type="NodePort", ports=[{"port": 80, "nodePort": 30000}])
    b = svc("b", type="NodePort")
    assert podlab(capsys, etcd_url, "apply", "-f", manifest(tmp_path, a, b))[0] == 0
    assert stored(kv, "a")["spec"]["ports"][0]["nodePort"] == 30000
    assert stored(kv, "b")["spec"]["ports"][0]["nodePort"] == 30001
    c = svc("c", type="NodePort", ports=[{"port": 80, "nodePort": 30001}])
    rc, _, err = podlab(capsys, etcd_url, "apply", "-f", manifest(tmp_path, c))
    assert rc == 2 and "nodePort 30001/TCP is already used by service default/b" in err


def test_concurrent_applies_never_share_an_address(kv: Store, etcd_url: str) -> None:
    def apply_one(i: int) -> None:
        text = json.dumps(svc(f"race{i}"))
        located, problems = validate_documents(load_documents(text, "m"))
        assert not problems
        ApiClient(Store([etcd_url]), CLUSTER).apply(located)

    threads = [threading.Thread(target=apply_one, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results = [stored(kv, f"race{i}")["spec"]["clusterIP"] for i in range(3)]
    assert len(set(results)) == 3, results


def test_policy_namespace_get_tables(kv: Store, etcd_url: str, tmp_path: Path, capsys) -> None:
    pol = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]}],
        },
    }
    ns = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "team-a", "labels": {"team": "a"}},
    }
    rc, out, err = podlab(capsys, etcd_url, "apply", "-f", manifest(tmp_path, pol, ns, svc("web")))
    assert rc == 0, err
    assert kv.get(f"{PREFIX}namespaces/team-a") is not None
    body = stored_policy = json.loads(kv.get(f"{PREFIX}policies/default/deny").value)
    assert stored_policy["spec"]["ingress"][0]["from"][0]["ipBlock"]["except"] == ["10.1.0.0/16"]
    assert body["apiVersion"] == "networking.k8s.io/v1"
    _, out, _ = podlab(capsys, etcd_url, "get", "svc")
    assert out.split("\n")[0].split() == [
        "NAME",
        "TYPE",
        "CLUSTER-IP",
        "EXTERNAL-IP",
        "PORT(S)",
        "AGE",
    ]
    assert "web" in out and "80/TCP" in out
    _, out, _ = podlab(capsys, etcd_url, "get", "netpol")
    assert out.split()[:3] == ["NAME", "POD-SELECTOR", "AGE"] and "app=db" in out
    _, out, _ = podlab(capsys, etcd_url, "get", "ns")
    assert "team-a" in out and "Active" in out
    assert KINDS["Namespace"].namespaced is False
    with pytest.raises(AssertionError):
        stored(kv, "nope")
