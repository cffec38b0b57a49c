"""ZoneParts (the services controller's zone, re-merged per changed part) equals
``Zone.merged`` of the same parts in key order, through sets, replacements and removals."""

from __future__ import annotations

import random

from harness.agent.dns import Zone
from harness.agent.svcderive import ZoneParts


def _part(rnd: random.Random, key: tuple[int, tuple[str, str]]) -> Zone:
    kind, (ns, name) = key
    if kind == 0:
        return Zone.pod(ns, f"10.244.0.{rnd.randrange(1, 5)}")  # pods may share an address
    ip = "None" if rnd.random() < 0.4 else f"10.96.0.{rnd.randrange(1, 200)}"
    svc = {"metadata": {"name": name, "namespace": ns},
           "spec": {"clusterIP": ip, "selector": {"app": "x"},
                    "ports": [{"name": "http", "port": 80}]}}  # fmt: skip
    pods = [{"metadata": {"name": f"p{i}", "namespace": ns, "labels": {"app": "x"}}}
            for i in range(rnd.randrange(3))]  # fmt: skip
    ready = [{"type": "Ready", "status": "True"}]
    sts = {(ns, f"p{i}"): {"phase": "Running", "podIP": f"10.244.1.{i + 2}", "conditions": ready}
           for i in range(3)}  # fmt: skip
    return Zone.service(svc, pods, sts)


def test_zoneparts_equals_a_merge_of_every_part() -> None:
    rnd = random.Random(7)
    parts = ZoneParts()
    have: dict[tuple[int, tuple[str, str]], Zone] = {}
    prev, prev_records = parts.zone(), {}
    for step in range(400):
        key = (rnd.choice([0, 1]), (rnd.choice(["a", "b"]), f"n{rnd.randrange(8)}"))
        if rnd.random() < 0.25:
            have.pop(key, None)
            parts.set(key, None)
        else:
            have[key] = _part(rnd, key)
            parts.set(key, have[key])
        want = Zone.merged(have[k] for k in sorted(have))
        got = parts.zone()
        assert {n: [str(r) for r in rrs] for n, rrs in got.records.items()} == {
            n: [str(r) for r in rrs] for n, rrs in want.records.items()
        }, f"step {step}"
        # the table handed out before is never modified (the DNS thread may still read it)
        assert {n: list(rrs) for n, rrs in prev.records.items()} == prev_records, f"step {step}"
        prev, prev_records = got, {n: list(rrs) for n, rrs in got.records.items()}
