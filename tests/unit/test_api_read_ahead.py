"""A small apply reads everything its plan needs in one round trip (issue 15).

A pod's create used to make four reads (its node, its own key, the namespace's
LimitRanges, its ResourceQuotas), each a request through etcd's gateway, before
its one write. Now they are one ``Store.read`` (a transaction of ranges), and
admission must decide exactly as before: LimitRange defaults applied, a quota's
refusal given, a concurrent change of a read key still retried.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from harness.api.client import ApiClient
from harness.api.validate import Located, load_documents, validate_documents
from harness.errors import UserError
from harness.testlab.etcd import LocalEtcd

NODE = '{"name": "w1", "podCIDR": "10.244.1.0/24", "heartbeat": 9e9}'


def objs(*docs: dict[str, Any]) -> list[Located]:
    text = yaml.safe_dump_all(list(docs))
    found, problems = validate_documents(load_documents(text, "t.yaml"))
    assert not problems, problems
    return found


def pod(name: str, ns: str = "default", cpu: str | None = None) -> dict[str, Any]:
    c: dict[str, Any] = {"name": "c", "image": "pause", "command": ["sleep", "1"]}
    if cpu:
        c["resources"] = {"requests": {"cpu": cpu}, "limits": {"cpu": cpu}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
            "spec": {"nodeName": "w1", "containers": [c]}}  # fmt: skip


@pytest.fixture
def client(etcd: LocalEtcd) -> ApiClient:
    c = ApiClient(etcd.store(), "c1")
    c.store.put("/podlab/v1/c1/nodes/w1", NODE)
    return c


def calls_of(client: ApiClient) -> list[str]:
    seen: list[str] = []
    client.store.on_call = lambda path, _s: seen.append(path.strip("/"))
    return seen


def test_a_pods_create_is_one_read_and_one_write(client: ApiClient) -> None:
    seen = calls_of(client)
    assert [a.action for a in client.apply(objs(pod("a")))] == ["created"]
    assert seen == ["kv/txn", "kv/txn"]  # the read-ahead, then the guarded write
    seen.clear()
    assert [a.action for a in client.apply(objs(pod("a")))] == ["unchanged"]
    assert seen == ["kv/txn"]  # nothing to write


def test_limitrange_defaults_and_quota_refusals_hold_with_the_read_ahead(
    client: ApiClient,
) -> None:
    limits = {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "l", "namespace": "q"},
              "spec": {"limits": [{"type": "Container", "default": {"cpu": "300m"},
                                   "defaultRequest": {"cpu": "200m"}}]}}  # fmt: skip
    quota = {"apiVersion": "v1", "kind": "ResourceQuota",
             "metadata": {"name": "two", "namespace": "q"},
             "spec": {"hard": {"pods": "2"}}}  # fmt: skip
    client.apply(objs(limits, quota))
    client.apply(objs(pod("a", "q")))
    got = client.get(client_kind("Pod"), "q", "a")
    assert got["spec"]["containers"][0]["resources"] == {
        "limits": {"cpu": "300m"}, "requests": {"cpu": "200m"}
    }  # fmt: skip
    client.apply(objs(pod("b", "q", cpu="100m")))
    with pytest.raises(UserError) as exc:
        client.apply(objs(pod("c", "q", cpu="100m")))
    assert "exceeded quota: two" in str(exc.value.problems[0])
    # a namespace without quota or limits is not affected by q's
    client.apply(objs(pod("c", "default")))
    assert (
        "resources" not in client.get(client_kind("Pod"), "default", "c")["spec"]["containers"][0]
    )


def test_a_concurrent_change_between_read_and_write_is_read_again(client: ApiClient) -> None:
    """The write is guarded by the revisions the read-ahead saw; when it loses, the next
    attempt reads ahead again (not the stale reading) and wins."""
    client.apply(objs(pod("a")))
    original = client.store.read
    raced = []

    def read_then_race(keys: list[str], prefixes: list[str] | None = None) -> Any:
        got = original(keys, prefixes)
        if not raced:  # someone relabels the pod after our read, before our write
            raced.append(1)
            key = "/podlab/v1/c1/pods/default/a"
            kv = client.store.get(key)
            assert kv is not None
            client.store.put(key, kv.value.replace(b'"name": "a"', b'"name": "a"'))
        return got

    client.store.read = read_then_race  # type: ignore[method-assign]
    relabeled = pod("a")
    relabeled["metadata"]["labels"] = {"x": "y"}
    assert [a.action for a in client.apply(objs(relabeled))] == ["configured"]
    assert raced == [1]
    assert client.get(client_kind("Pod"), "default", "a")["metadata"]["labels"] == {"x": "y"}


def client_kind(kind: str) -> Any:
    from harness.api.objects import KINDS

    return KINDS[kind]


def test_a_services_create_takes_the_allocators_index_from_the_read_ahead(
    client: ApiClient,
) -> None:
    def svc(name: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                "spec": {"selector": {"app": name}, "ports": [{"port": 80}]}}  # fmt: skip

    seen = calls_of(client)
    client.apply(objs(svc("a")))
    ahead = list(seen)
    client.read_ahead = False
    seen.clear()
    client.apply(objs(svc("b")))
    assert seen.count("kv/range") - ahead.count("kv/range") >= 3  # key, two index prefixes
    assert ahead[0] == "kv/txn" and ahead[-1] == "kv/txn"
    kind = client_kind("Service")
    ips = {client.get(kind, "default", n)["spec"]["clusterIP"] for n in ("a", "b")}
    assert len(ips) == 2  # the index read ahead still keeps ClusterIPs apart
    client.read_ahead = True
    client.apply(objs(svc("c")))
    assert client.get(kind, "default", "c")["spec"]["clusterIP"] not in ips
