"""Node liveness for the services controller (harness/agent/liveness.py), clock injected.

A dead node's pods must leave the endpoints; a heartbeat must not cost a
programming pass; our own deafness (no write from anyone) must not condemn
the cluster. The agent config refuses a grace a late heartbeat could break.
"""

from __future__ import annotations

import json
import logging

import pytest

from harness.agent.config import AgentConfig
from harness.agent.liveness import NodeLiveness
from harness.agent.services import ServicesConfig, ServicesController
from harness.store import KV, Event

G = 3.0  # grace; heartbeats every 1 s in these scenarios


def beat(live: NodeLiveness, t: float, *names: str) -> list[bool]:
    return [live.seen(n, t) for n in names]


def test_heartbeats_are_not_news_and_a_silent_node_dies_after_the_grace() -> None:
    live = NodeLiveness(G)
    assert beat(live, 0.0, "n1", "n2") == [True, True]  # new nodes: news
    assert not live.changed(0.0)
    for t in (1.0, 2.0, 3.0):
        assert beat(live, t, "n1", "n2") == [False, False]
        assert not live.changed(t)
    # n2 falls silent after t=3; n1 keeps beating
    for t in (4.0, 5.0, 6.0):
        beat(live, t, "n1")
        assert live.dead(t) == set() and not live.changed(t)
    beat(live, 6.5, "n1")
    assert live.dead(6.5) == {"n2"} and live.is_dead("n2", 6.5)
    assert live.changed(6.5) and not live.changed(6.6)  # reported once
    assert not live.is_dead("n1", 6.5)


def test_a_dead_node_coming_back_is_news_once() -> None:
    live = NodeLiveness(G)
    beat(live, 0.0, "n1", "n2")
    for t in range(1, 6):
        beat(live, float(t), "n1")
    assert live.changed(5.0) and live.dead(5.0) == {"n2"}
    assert beat(live, 5.5, "n2") == [True]  # back from the dead
    assert live.dead(5.5) == set() and live.changed(5.5)
    assert beat(live, 6.0, "n2") == [False]


def test_a_late_heartbeat_within_the_grace_is_not_news() -> None:
    live = NodeLiveness(G)
    beat(live, 0.0, "n1", "n2")
    for t in (1.0, 2.0):
        beat(live, t, "n1")
    assert beat(live, 2.9, "n2") == [False]  # 2.9 s late, grace 3 s
    assert not live.changed(3.0)


def test_a_deleted_record_is_death_at_once() -> None:
    live = NodeLiveness(G)
    beat(live, 0.0, "n1", "n2")
    assert live.gone("n2") and not live.gone("n2")  # the second delete is no news
    assert not live.gone("never-seen")
    assert live.dead(0.1) == {"n2"} and live.changed(0.1)
    assert beat(live, 0.5, "n2") == [True]
    assert live.dead(0.5) == set()


def test_unknown_nodes_are_alive_only_without_any_record() -> None:
    live = NodeLiveness(G)
    assert not live.is_dead("n9", 100.0)  # no agents write records: nothing to judge
    beat(live, 0.0, "n1")
    assert live.is_dead("n9", 0.0)  # records exist, n9 has none
    assert not live.is_dead("n1", 0.0)


def test_reset_counts_present_records_as_seen_now_and_absent_as_gone() -> None:
    live = NodeLiveness(G)
    beat(live, 0.0, "n1", "n2", "n3")
    live.reset(["n1", "n3"], 10.0)
    assert live.dead(10.0) == {"n2"}
    assert live.dead(12.9) == {"n2"}  # n1, n3 counted from the re-list, not from t=0
    assert live.changed(12.9)


def test_total_silence_condemns_nobody_and_resuming_flaps_nobody() -> None:
    """etcd down (or us cut off): no write from anyone for a minute."""
    live = NodeLiveness(G)
    for t in (0.0, 1.0, 2.0):
        beat(live, t, "n1", "n2", "n3")
    for t in (3.0, 10.0, 60.0):
        assert live.dead(t) == set() and not live.changed(t)
    # writes resume one by one; those not yet heard from are not dead meanwhile
    assert beat(live, 61.0, "n1") == [False]
    assert live.dead(61.0) == set() and not live.changed(61.0)
    beat(live, 61.5, "n2")
    # n3 stays silent: it had been for half a grace when everything went quiet
    # (the clock stopped at 3.5); the other half runs from the first write after
    assert live.dead(62.4) == set()
    assert live.dead(62.6) == {"n3"} and live.changed(62.6)


def test_verdicts_are_logged_once_with_the_silence(caplog: pytest.LogCaptureFixture) -> None:
    live = NodeLiveness(G)
    beat(live, 0.0, "n1", "n2")
    caplog.set_level(logging.INFO, logger="podlab.services")
    for t in range(1, 10):
        beat(live, float(t), "n1")
        live.changed(float(t))
    beat(live, 9.0, "n2")
    live.changed(9.0)
    live.changed(9.5)
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == [
        "node n2 is dead (no heartbeat, last seen 4.0 s ago): its pods leave endpoints",
        "node n2 is alive again (unseen for 9.0 s): its pods are endpoints again",
    ]


BASE = {
    "node": "n1",
    "cluster": "c",
    "etcd_endpoints": ["http://127.0.0.1:2379"],
    "pod_cidr": "10.244.0.0/16",
    "underlay_interface": "eth1",
    "underlay_address": "10.0.0.1",
}


def test_agent_config_grace_must_outlast_two_heartbeats() -> None:
    assert AgentConfig.model_validate(BASE).node_grace_s == 40.0  # heartbeat 15 s
    fast = AgentConfig.model_validate({**BASE, "lease_ttl_s": 4, "node_grace_s": 3})
    assert fast.heartbeat_s == 1
    with pytest.raises(ValueError, match=r"node_grace_s 2 must exceed twice the heartbeat \(1 s"):
        AgentConfig.model_validate({**BASE, "lease_ttl_s": 4, "node_grace_s": 2})
    with pytest.raises(ValueError, match="node_grace_s 40 must exceed twice the heartbeat"):
        AgentConfig.model_validate({**BASE, "lease_ttl_s": 100})


# --- the controller: events in, service ports and DNS out (no etcd, no kernel) ---
P = "/podlab/v1/c/"


def put(key: str, obj: dict) -> Event:
    return Event("PUT", KV(P + key, json.dumps(obj).encode()))


def pod(name: str, node: str) -> dict:
    meta = {"name": name, "namespace": "default", "labels": {"app": "web"}}
    return {"metadata": meta, "spec": {"nodeName": node, "containers": [{"name": "c"}]}}


def status(ip: str) -> dict:
    return {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}


def svc(name: str, cluster_ip: str) -> dict:
    spec = {"clusterIP": cluster_ip, "selector": {"app": "web"}, "ports": [{"port": 80}]}
    return {"metadata": {"name": name, "namespace": "default"}, "spec": spec}


@pytest.fixture
def ctl() -> ServicesController:
    cfg = ServicesConfig("c", "n1", "10.96.0.0/16", "10.244.0.0/16", node_grace_s=G)
    c = ServicesController(None, cfg)  # type: ignore[arg-type]  # no watch started
    c.clock = lambda: 0.0
    c.on_reset(
        [
            put("nodes/n1", {}).kv,
            put("nodes/n2", {}).kv,
            put("services/default/web", svc("web", "10.96.0.20")).kv,
            put("services/default/hl", svc("hl", "None")).kv,
            put("pods/default/a", pod("a", "n1")).kv,
            put("pods/default/b", pod("b", "n2")).kv,
            put("podstatus/default/a", status("10.244.1.2")).kv,
            put("podstatus/default/b", status("10.244.2.2")).kv,
        ]
    )
    c.dirty.clear()
    return c


def served(c: ServicesController) -> tuple[set[str], set[str], str]:
    ports, zone, table = c.desired()
    eps = {e.ip for p in ports for e in p.endpoints}
    headless = {str(rr.rdata) for rr in zone.records["hl.default.svc.cluster.local."]}
    return eps, headless, table


def test_controller_drops_a_dead_nodes_pods_from_endpoints_and_dns(ctl) -> None:
    both = {"10.244.1.2", "10.244.2.2"}
    eps, headless, table = served(ctl)
    assert eps == both and headless == both
    ctl.clock = lambda: 1.0
    ctl.on_events([put("nodes/n1", {}), put("nodes/n2", {})])
    assert not ctl.dirty.is_set()  # heartbeats cost no programming pass
    for t in (2.0, 3.0, 4.0):  # n1 keeps beating, n2 is silent since 1
        ctl.clock = lambda t=t: t
        ctl.on_events([put("nodes/n1", {})])
    assert not ctl.dirty.is_set()
    ctl.clock = lambda: 4.5
    assert ctl.liveness.changed(ctl.clock())  # what the worker notices, eventless
    eps, headless, table2 = served(ctl)
    assert eps == headless == {"10.244.1.2"}
    assert table2 == table  # policy inputs untouched
    ctl.on_events([put("nodes/n2", {})])  # back
    assert ctl.dirty.is_set()
    assert served(ctl)[0] == both
    ctl.dirty.clear()
    ctl.on_events([Event("DELETE", KV(P + "nodes/n2", b""))])  # lease expired
    assert ctl.dirty.is_set() and served(ctl)[0] == {"10.244.1.2"}


def test_next_verdict_wakes_the_controller_when_a_node_would_cross_the_grace() -> None:
    live = NodeLiveness(grace_s=10.0)
    live.seen("a", 100.0)
    live.seen("b", 104.0)  # writes keep arriving (< grace/2 apart): the judging clock runs
    live.seen("b", 108.0)
    assert live.next_verdict(100.0) == 1.0  # capped: the controller looks at least every second
    assert abs(live.next_verdict(109.7) - 0.305) < 1e-9  # "a" crosses at 110 (+5 ms)
    live.seen("b", 109.9)
    assert live.next_verdict(110.1) == 1.0 and live.dead(110.1) == {"a"}
