"""The services index's label index gives exactly what scanning every pod gives."""

from __future__ import annotations

import random

from harness.agent.svcindex import ClusterIndex, _labels, _selects


def _pod(name: str, labels: dict[str, object] | None) -> dict[str, object]:
    return {"metadata": {"name": name, "namespace": "ns", "labels": labels}}


# selectors both tests draw from: empty, one pair, several pairs, a non-string value
SELECTORS: list[dict[str, object]] = [
    {}, {"app": "a"}, {"app": "b", "tier": "a"}, {"tier": "c"}, {"app": 1},
    {"app": "a", "tier": "b", "x": "c"},
]  # fmt: skip


def _labels_of(rnd: random.Random) -> dict[str, object] | None:
    """Some of app/tier/x set to a, b or c; now and then no labels at all."""
    labels: dict[str, object] = {
        k: rnd.choice("abc") for k in ("app", "tier", "x") if rnd.random() < 0.7
    }
    return None if rnd.random() < 0.05 else labels


def _scan(idx: ClusterIndex, sel: dict[str, object]) -> list[str]:
    """The rule before the index: every pod of the namespace, in insertion order."""
    return [
        p["metadata"]["name"]
        for p in idx.pods.get("ns", {}).values()
        if _selects(sel, _labels(p))  # type: ignore[arg-type]
    ]


def test_matching_equals_the_scan_through_puts_relabels_and_deletes() -> None:
    rnd = random.Random(15)
    idx = ClusterIndex("c1")
    for step in range(600):
        name = f"p{rnd.randrange(40)}"
        if rnd.random() < 0.2:
            idx.put_pod(("ns", name), None)
        else:
            labels = _labels_of(rnd)
            if labels is not None and rnd.random() < 0.05:
                labels = {"app": 1}  # not a string: never in the index
            idx.put_pod(("ns", name), _pod(name, labels))
        if step % 20 == 0:
            for sel in SELECTORS:
                got = [p["metadata"]["name"] for p in idx.matching("ns", sel)]  # type: ignore[arg-type]
                assert got == _scan(idx, sel), (step, sel)


def test_a_deleted_and_recreated_pod_moves_to_the_end_as_in_the_scan() -> None:
    idx = ClusterIndex("c1")
    for n in ("p1", "p2", "p3"):
        idx.put_pod(("ns", n), _pod(n, {"app": "a"}))
    idx.put_pod(("ns", "p1"), None)
    idx.put_pod(("ns", "p1"), _pod("p1", {"app": "a"}))
    idx.put_pod(("ns", "p2"), _pod("p2", {"app": "a", "v": "2"}))  # relabelled in place
    assert [p["metadata"]["name"] for p in idx.matching("ns", {"app": "a"})] == ["p2", "p3", "p1"]
    assert idx.matching("ns", {"app": "b"}) == [] and idx.matching("other", {"app": "a"}) == []
    idx.put_pod(("ns", "p3"), _pod("p3", {"app": "b"}))
    assert ("app", "a") in idx.by_label["ns"] and "p3" not in idx.by_label["ns"][("app", "a")]


def test_selecting_equals_the_scan_of_every_service_through_selector_changes() -> None:
    """Pod events look only at the Services filed under one of the pod's labels."""
    rnd = random.Random(16)
    idx = ClusterIndex("c1")
    selectors = [*SELECTORS, {"x": "a", "app": "c"}]
    for step in range(600):
        name = f"s{rnd.randrange(15)}"
        if rnd.random() < 0.15:
            idx.put_service(("ns", name), None)
        else:
            sel = rnd.choice(selectors)
            idx.put_service(("ns", name), {"metadata": {"name": name}, "spec": {"selector": sel}})
        for _ in range(3):
            labels = _labels_of(rnd)
            want = {
                ("ns", n)
                for n in idx.by_ns.get("ns", ())
                if _selects(idx.services[("ns", n)]["spec"]["selector"], labels)  # type: ignore[arg-type]
            }
            assert idx.selecting("ns", labels) == want, f"step {step}: {labels}"  # type: ignore[arg-type]
    assert not idx.by_ns_scan.get("ns", set()) - idx.by_ns["ns"]  # deletes unfiled them
