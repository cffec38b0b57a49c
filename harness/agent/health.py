"""``podlab-agent --check``: is this node's agent healthy (and, after a restart, the new one)?

Imports only the agent's configuration and the etcd client, not the agent's kernel
code (pyroute2, the datapaths, the proxies): a mode switch runs this check on every
node while every agent restarts, all on the same few cores, so its start-up is part
of the switch's cost (docs/conformance.md, "A switch in a few seconds").
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from harness.agent.config import AgentConfig
from harness.store import KV, Event, Store, StoreError
from harness.store.keys import node_key


def check(cfg: AgentConfig, since: float = 0.0, wait_s: float = 0.0) -> int:
    """Exit status for ``--check``: 0 when our node record's heartbeat is fresh.

    ``since`` (epoch seconds; the deploy passes the moment the restarted agent's
    predecessor was gone): the heartbeat must be at least that recent and name the
    configured mode, so a fresh record the old agent wrote just before its restart
    does not pass for the new one, which writes its first heartbeat at the end of
    its start-up (devices set up, pods' server ready). ``wait_s``: keep watching the
    record in etcd (an event per write, no polling) until it passes or time is up.
    """
    key = node_key(cfg.cluster, cfg.node)
    store = Store(cfg.etcd_endpoints, timeout=3)
    if wait_s <= 0:
        try:
            ok, message = check_record(cfg, store.get(key), since)
        except StoreError as exc:
            ok, message = False, str(exc)
        print(("" if ok else "unhealthy: ") + message)
        return 0 if ok else 1
    verdict = ["no answer from etcd yet"]
    passed, stop = threading.Event(), threading.Event()

    def judge(kv: KV | None) -> None:
        ok, verdict[0] = check_record(cfg, kv, since)
        if ok:
            passed.set()

    def on_reset(kvs: list[KV]) -> None:
        judge(next((kv for kv in kvs if kv.key == key), None))

    def on_events(events: list[Event]) -> None:
        for ev in events:
            if ev.kv.key == key:
                judge(ev.kv if ev.type == "PUT" else None)

    threading.Thread(
        target=store.watch_prefix, args=(key, on_events, on_reset, stop), daemon=True
    ).start()
    ok = passed.wait(wait_s)
    stop.set()
    print(verdict[0] if ok else f"unhealthy after {wait_s:g} s: {verdict[0]}")
    return 0 if ok else 1


def check_record(cfg: AgentConfig, kv: KV | None, since: float = 0.0) -> tuple[bool, str]:
    """Whether this node's record (``kv``) proves a healthy agent, and what it says."""
    if kv is None:
        return False, f"no node record for {cfg.node} in etcd"
    rec = kv.json()
    try:
        beat = datetime.fromisoformat(str(rec.get("heartbeat", "")).replace("Z", "+00:00"))
    except ValueError:
        return False, f"node record of {cfg.node} has no readable heartbeat"
    age = (datetime.now(UTC) - beat).total_seconds()
    if age > 3 * cfg.heartbeat_s:
        return False, f"node record of {cfg.node} is {age:.0f}s old"
    if since and beat.timestamp() < since:
        return False, (
            f"no heartbeat of {cfg.node} since the restart (the last one is "
            f"{since - beat.timestamp():.1f}s older)"
        )
    if since and rec.get("mode") != cfg.mode:
        return False, f"{cfg.node} reports mode {rec.get('mode')}, its agent.yaml says {cfg.mode}"
    problems = rec.get("problems") or []
    return True, (
        f"ok: {cfg.node} subnet {rec.get('podCIDR')} mode {rec.get('mode')}, heartbeat "
        f"{age:.1f}s ago" + (f"; problems: {'; '.join(problems)}" if problems else "")
    )
