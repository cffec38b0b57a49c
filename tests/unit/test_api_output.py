"""`podlab get` output: kubectl's ages, tables, Lists and names."""

from __future__ import annotations

import json

import pytest
import yaml

from harness.api import output
from harness.api.objects import NodeRecord

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-0.5, "0s"),
        (1, "1s"),
        (119, "119s"),
        (190, "3m10s"),
        (300, "5m"),
        (70 * 60, "70m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 30 * 60, "3h30m"),
        (47 * 3600, "47h"),
        (49 * 3600, "2d1h"),
        ((8 * 24 + 2) * 3600, "8d"),
        (2 * 365 * 86400, "2y"),
        ((2 * 365 + 10) * 86400, "2y10d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_human_duration_matches_kubectl(seconds: float, text: str) -> None:
    assert output.human_duration(seconds) == text


def pod(name: str, ns: str = "default", status: dict | None = None, node: str = "c1-w1") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": "2027-01-15T07:59:15Z"},
        "spec": {"nodeName": node, "containers": [{"name": "c"}]},
        "status": status or {"phase": "Pending"},
    }


RUNNING = {
    "phase": "Running",
    "podIP": "10.244.1.5",
    "conditions": [{"type": "Ready", "status": "True"}],
}


def test_pods_table() -> None:
    text = output.pods_table([pod("web", status=RUNNING), pod("db-primary")], NOW, False, False)
    assert text.splitlines() == [
        "NAME         READY   STATUS    RESTARTS   AGE",
        "web          1/1     Running   0          45s",
        "db-primary   0/1     Pending   0          45s",
    ]


def test_pods_table_wide_all_namespaces() -> None:
    text = output.pods_table([pod("web", "team-a", RUNNING), pod("x")], NOW, True, True)
    assert text.splitlines() == [
        "NAMESPACE   NAME   READY   STATUS    RESTARTS   AGE   IP           NODE",
        "team-a      web    1/1     Running   0          45s   10.244.1.5   c1-w1",
        "default     x      0/1     Pending   0          45s   <none>       c1-w1",
    ]


def test_nodes_table_ready_from_heartbeat() -> None:
    nodes = [
        NodeRecord(
            name="c1-w1",
            underlayIP="10.1.0.11",
            podCIDR="10.244.1.0/24",
            mode="vxlan",
            heartbeat=NOW - 2,
            creationTimestamp="2027-01-15T07:00:00Z",
        ),
        NodeRecord(name="c1-w2", heartbeat=NOW - 600),
        NodeRecord.model_validate({"name": "hollow-007", "hollow": True, "heartbeat": NOW - 1}),
    ]
    assert output.nodes_table(nodes, NOW, False).splitlines() == [
        "NAME         STATUS     POD-CIDR        INTERNAL-IP   MODE     HOLLOW   AGE",
        "c1-w1        Ready      10.244.1.0/24   10.1.0.11     vxlan    no       60m",
        "c1-w2        NotReady   <none>          <none>        <none>   no       <unknown>",
        "hollow-007   Ready      <none>          <none>        <none>   yes      <unknown>",
    ]


def test_node_object_is_kubernetes_shaped() -> None:
    rec = NodeRecord.model_validate(
        {
            "name": "c1-w1",
            "underlayIP": "10.1.0.11",
            "podCIDR": "10.244.1.0/24",
            "mode": "host-gw",
            "segment": "lan",
            "heartbeat": NOW,
        }
    )
    obj = output.node_object(rec, NOW)
    assert obj["kind"] == "Node" and obj["metadata"]["name"] == "c1-w1"
    assert obj["spec"] == {"podCIDR": "10.244.1.0/24"}
    assert obj["status"]["addresses"] == [{"type": "InternalIP", "address": "10.1.0.11"}]
    assert obj["status"]["conditions"] == [
        {"type": "Ready", "status": "True", "lastHeartbeatTime": "2027-01-15T08:00:00Z"}
    ]
    assert obj["metadata"]["annotations"]["podlab.io/mode"] == "host-gw"


def test_list_dump_json_and_yaml_round_trip() -> None:
    items = [pod("a"), pod("b")]
    as_json = json.loads(output.dump(output.as_list(items), "json"))
    assert as_json["kind"] == "List" and as_json["apiVersion"] == "v1"
    assert as_json["items"] == items
    assert yaml.safe_load(output.dump(output.as_list(items), "yaml"))["items"] == items


def test_names() -> None:
    assert output.names("pod", [pod("a"), pod("b")]) == "pod/a\npod/b"
