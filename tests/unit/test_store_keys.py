"""The etcd key layout (docs/etcd-layout.md) and endpoint parsing: pure functions."""

from __future__ import annotations

import pytest

from harness.api.objects import KINDS, kind_prefix, object_key, status_key
from harness.store import StoreError, endpoint_url, keys


def test_layout_matches_the_documented_keys() -> None:
    assert keys.cluster_prefix("c1") == "/podlab/v1/c1/"
    assert keys.node_key("c1", "c1-w1") == "/podlab/v1/c1/nodes/c1-w1"
    assert keys.subnet_key("c1", "10.244.1.0/24") == "/podlab/v1/c1/subnets/10.244.1.0-24"
    assert keys.pod_key("c1", "default", "web") == "/podlab/v1/c1/pods/default/web"
    assert keys.podstatus_key("c1", "ns", "web") == "/podlab/v1/c1/podstatus/ns/web"
    assert keys.service_key("c1", "ns", "web") == "/podlab/v1/c1/services/ns/web"
    assert keys.serviceip_key("c1", "10.96.0.10") == "/podlab/v1/c1/serviceips/10.96.0.10"
    assert keys.nodeport_key("c1", 30080, "TCP") == "/podlab/v1/c1/nodeports/30080-tcp"
    assert keys.podstatus_prefix("c1", "ns") == "/podlab/v1/c1/podstatus/ns/"


def test_the_api_and_the_agent_agree_on_keys() -> None:
    """The API's kind-based helpers are the layout's, so the agent reads what apply wrote."""
    pod, ns_kind = KINDS["Pod"], KINDS["Namespace"]
    assert object_key("c1", pod, "default", "web") == keys.pod_key("c1", "default", "web")
    assert status_key("c1", "default", "web") == keys.podstatus_key("c1", "default", "web")
    assert object_key("c1", ns_kind, "ignored", "prod") == "/podlab/v1/c1/namespaces/prod"
    assert kind_prefix("c1", ns_kind, "ignored") == "/podlab/v1/c1/namespaces/"
    assert kind_prefix("c1", pod, "default") == "/podlab/v1/c1/pods/default/"


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("10.0.0.1", "http://10.0.0.1:2379"),
        ("10.0.0.1:12379", "http://10.0.0.1:12379"),
        ("https://etcd.c2:2379", "https://etcd.c2:2379"),
        ("http://[fd00::1]:2379", "http://[fd00::1]:2379"),
    ],
)
def test_endpoints_are_normalised(text: str, url: str) -> None:
    assert endpoint_url(text) == url


@pytest.mark.parametrize("text", ["ftp://10.0.0.1", "http://", "http://10.0.0.1:notaport"])
def test_bad_endpoints_are_refused(text: str) -> None:
    with pytest.raises(StoreError, match=r"is not a URL like http://10\.0\.0\.1:2379"):
        endpoint_url(text)
