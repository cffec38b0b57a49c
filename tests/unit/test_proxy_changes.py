"""A proxy mode fed only each pass's changes ends where a full sync of every port would.

The services controller hands the nftables mode and the conntrack sweeper the
ports a pass changed (``PortChanges``), not the whole table (issue 15). A
change they mishandle is a stale rule or a missed sweep, so random sequences of
changes (ports added, removed, re-addressed, endpoints moving, shared and
weighted endpoints, affinity on and off) are applied incrementally and, after
every one, compared with a from-scratch model: the nft table's map elements
(kept by a fake ``nft`` that applies each document) against the elements of a
full ruleset of every port, the sweeper's endpoints and swept set against one
told the whole list.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import replace

import pytest

from harness.agent.proxy import conntrack, nftables, sweep
from harness.agent.proxy.base import PortChanges, changes_between
from harness.agent.proxy.model import Endpoint, ServicePort

CFG = nftables.NftConfig("10.96.0.0/16", "10.244.0.0/16")
ELEMENT = re.compile(rf"^(add|delete) element {nftables.T} (\S+) \{{ (.*) \}}$")


class FakeNft:
    """The elements of our table's maps and sets, and its chains, as nft would keep
    them: a delete of a missing element or an add of a present one fails, as nft's does
    for a transaction (an update that believes a wrong state is caught here)."""

    def __init__(self) -> None:
        self.maps: dict[str, set[str]] = {}
        self.chains: set[str] = set()
        self.docs: list[str] = []

    def __call__(self, doc: str, netns: str | None = None, timeout: float = 60.0) -> None:
        self.docs.append(doc)
        for line in doc.splitlines():
            if line == f"delete table {nftables.T}":
                self.maps, self.chains = {}, set()
            elif line.startswith(f"add chain {nftables.T} "):
                self.chains.add(line.split()[4])
            elif line.startswith(f"delete chain {nftables.T} "):
                self.chains.remove(line.split()[4])
            elif m := ELEMENT.match(line):
                verb, name, body = m.groups()
                have = self.maps.setdefault(name, set())
                for item in body.split(", "):
                    if verb == "add":
                        assert item not in have, f"{name}: {item} added twice"
                        have.add(item)
                    else:
                        assert item in have, f"{name}: {item} deleted but absent"
                        have.remove(item)

    def view(self) -> dict[str, Counter[str]]:
        """Map contents with the endpoint slots left out (slots are placement, not
        meaning: the incremental path keeps endpoints where they were)."""
        out = {}
        for name, items in self.maps.items():
            if name in ("endpoints", "nodeport-endpoints"):
                out[name] = Counter(re.sub(r" \. \d+ : ", " : ", i) for i in items)
            else:
                out[name] = Counter(items)
        return {k: v for k, v in out.items() if v}


def port(rng: random.Random, i: int) -> ServicePort:
    n = rng.choice([0, 1, 2, 3, 3, 5])
    eps = [Endpoint(f"10.244.0.{rng.randrange(2, 9)}", rng.choice([8080, 8081])) for _ in range(n)]
    name = rng.choice(["", "dns"])  # a Service's ports differ in (port, protocol)
    return ServicePort(
        "ns", f"s{i}", name, rng.choice(["tcp", "udp"]),
        f"10.96.0.{rng.choice([i + 1, 200 + i])}", 53 if name else 80,
        node_port=(30000 if name else 31000) + i if rng.random() < 0.3 else None,
        affinity_s=30 if rng.random() < 0.15 else None,
        endpoints=tuple(eps),  # repeated entries: weights
    )  # fmt: skip


def step(rng: random.Random, table: dict[str, ServicePort]) -> dict[str, ServicePort]:
    new = dict(table)
    for _ in range(rng.randrange(1, 4)):
        i = rng.randrange(12)
        p = port(rng, i)
        if rng.random() < 0.2:
            for k in [k for k in new if new[k].name == f"s{i}"]:
                del new[k]
        elif rng.random() < 0.5 and (same := [k for k in new if new[k].name == f"s{i}"]):
            old = new[same[0]]  # an endpoint change of a port that stays
            new[same[0]] = replace(old, endpoints=p.endpoints)
        else:
            new[p.ident] = p
    return new


@pytest.mark.parametrize("seed", range(6))
def test_nft_changes_only_equal_a_full_ruleset(monkeypatch, seed: int) -> None:
    rng = random.Random(seed)
    fake, reference = FakeNft(), FakeNft()
    monkeypatch.setattr(nftables, "nft_script", fake)
    monkeypatch.setattr(nftables, "local_service_route", lambda *a, **k: None)
    proxy = nftables.NftablesProxy(CFG)
    table: dict[str, ServicePort] = {}
    proxy.full_sync(table.values())
    for n in range(120):
        new = step(rng, table)
        changes = changes_between(table, new.values())
        docs = len(fake.docs)
        proxy.apply(changes)
        table = new
        reference(nftables.full_ruleset(table.values(), CFG))
        assert fake.view() == reference.view(), f"step {n}"
        assert fake.chains == reference.chains, f"step {n}"
        assert (len(fake.docs) > docs) == bool(changes), f"step {n}: a document iff changes"
        assert {k: sorted(p.endpoints) for k, p in proxy.state.items()} == {
            k: sorted(p.endpoints) for k, p in table.items()
        }


def test_nft_a_changed_port_rewrites_only_its_elements(monkeypatch) -> None:
    fake = FakeNft()
    monkeypatch.setattr(nftables, "nft_script", fake)
    monkeypatch.setattr(nftables, "local_service_route", lambda *a, **k: None)
    proxy = nftables.NftablesProxy(CFG)
    ports = {}
    for i in range(1, 200):
        eps = (Endpoint(f"10.244.1.{i}", 80),)
        ports[f"ns/s{i}:/tcp"] = ServicePort(
            "ns", f"s{i}", "", "tcp", f"10.96.1.{i}", 80, endpoints=eps
        )
    proxy.full_sync(ports.values())
    old = ports["ns/s5:/tcp"]
    new = replace(old, endpoints=(Endpoint("10.244.1.6", 80),))  # s6's backend, shared
    proxy.apply(PortChanges({new.ident: new}, frozenset(), {old.ident: old}, ports))
    doc = fake.docs[-1]
    assert "10.96.1.5 . tcp . 80 . 0 : 10.244.1.6 . 80" in doc
    assert "10.96.1.4 " not in doc and "10.96.1.6 " not in doc  # nothing of the others
    assert "delete element ip podlab-proxy hairpin { 10.244.1.5 . 10.244.1.5 }" in doc
    assert "add element ip podlab-proxy hairpin" not in doc  # 10.244.1.6 was in use already


def test_a_failed_update_falls_back_to_a_full_sync_of_the_current_table(monkeypatch) -> None:
    from harness.errors import ToolError

    fulls: list[list[ServicePort]] = []
    monkeypatch.setattr(nftables, "local_service_route", lambda *a, **k: None)

    def refuse(doc: str, netns: str | None = None) -> None:
        if "delete table" not in doc:
            raise ToolError("nft: No such file or directory")
        fulls.append([])

    monkeypatch.setattr(nftables, "nft_script", refuse)
    proxy = nftables.NftablesProxy(CFG)
    a = ServicePort("ns", "a", "", "tcp", "10.96.0.1", 80, endpoints=(Endpoint("10.244.0.2", 80),))
    proxy.apply(PortChanges({a.ident: a}, frozenset(), {}, {a.ident: a}))
    assert len(fulls) == 1 and proxy.state == {a.ident: a}


@pytest.mark.parametrize("seed", range(4))
def test_sweeper_told_changes_only_equals_one_told_every_port(seed: int) -> None:
    """Its endpoints in use are every port's; the swept set is every endpoint that
    left and has not come back (the sweep's own expiry aside: no sweep runs here)."""
    rng = random.Random(seed)
    inc = sweep.Sweeper(None)
    table: dict[str, ServicePort] = {}
    gone: set[conntrack.Target] = set()
    for n in range(150):
        new = step(rng, table)
        inc.changed(changes_between(table, new.values()))
        was, now = conntrack.targets(table.values()), conntrack.targets(new.values())
        gone = (gone | (was - now)) - now
        table = new
        assert set(inc._users) == now, f"step {n}"
        assert inc._users == Counter(t for p in table.values() for t in conntrack.targets([p]))
        assert set(inc._gone) == gone, f"step {n}"
        if rng.random() < 0.1:  # a periodic full sync in between changes nothing
            users = Counter(inc._users)
            inc.programmed(table.values())
            assert set(inc._gone) == gone and inc._users == users


def test_whole_table_modes_reconcile_from_the_current_table_only_on_a_change(
    monkeypatch,
) -> None:
    """ipvs (its documents diff every virtual server against the kernel) and userspace
    (its thread reconciles listeners against a whole list) take ``current``, and only
    when a pass changed something they do not already hold."""
    from harness.agent.proxy import ipvs, userspace

    a = ServicePort("ns", "a", "", "tcp", "10.96.0.1", 80, endpoints=(Endpoint("10.244.0.2", 80),))
    b = replace(a, name="b", cluster_ip="10.96.0.2")
    current = {a.ident: a, b.ident: b}
    proxy = ipvs.IpvsProxy.__new__(ipvs.IpvsProxy)  # (its constructor wants ipvsadm)
    synced: list[list[ServicePort]] = []
    monkeypatch.setattr(proxy, "full_sync", lambda s: synced.append(list(s)))
    proxy.state = {a.ident: a}
    proxy.apply(PortChanges({a.ident: a}, frozenset(), {}, current))  # holds it already
    assert synced == []
    proxy.apply(PortChanges({b.ident: b}, frozenset(), {}, current))
    assert synced == [[a, b]]
    usp = userspace.UserspaceProxy.__new__(userspace.UserspaceProxy)
    sent: list[tuple[str, list[ServicePort]]] = []
    monkeypatch.setattr(usp, "_submit", lambda what, s: sent.append((what, s)))
    usp.apply(PortChanges({}, frozenset(), {}, current))  # nothing changed
    usp.apply(PortChanges({}, frozenset({"ns/c:/tcp"}), {}, current))
    assert sent == [("sync", [a, b])]
