"""The one etcd client against a real etcd: TLS with client certificates, a read-only
user, endpoint failover, and the limits it refuses before etcd would.

etcd runs on free loopback ports (harness.testlab.etcd); the TLS etcd requires a
client certificate signed by its throwaway CA. Every "refused" check has a
control that succeeds with the right credentials.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from collections.abc import Iterator

import pytest

from harness.store import MAX_TXN_OPS, TLS, Event, Store, StoreError, StoreUnreachable, Write, keys
from harness.testlab.etcd import LocalEtcd, free_port
from harness.testlab.wait import wait_for

pytestmark = pytest.mark.skipif(
    shutil.which("etcd") is None or shutil.which("openssl") is None,
    reason="etcd or openssl not installed",
)
P = keys.cluster_prefix("tls")


@pytest.fixture(scope="module")
def tls_etcd() -> Iterator[LocalEtcd]:
    with LocalEtcd(tls=True) as etcd:
        yield etcd


def test_tls_with_client_certificate_reads_writes_and_watches(tls_etcd: LocalEtcd) -> None:
    assert tls_etcd.url.startswith("https://")
    store = Store([tls_etcd.url], tls=tls_etcd.client_tls("agent"))
    seen: list[Event] = []
    stop, listed = threading.Event(), threading.Event()
    t = threading.Thread(
        target=store.watch_prefix,
        args=(P, seen.extend, lambda kvs: listed.set(), stop),
        daemon=True,
    )
    t.start()
    try:
        assert listed.wait(10), "the watch never listed the prefix"
        assert store.create(P + "a", "1")
        assert not store.create(P + "a", "2")  # create-if-absent
        a = store.get(P + "a")
        assert a is not None and a.value == b"1"
        assert store.commit([Write(P + "b", b"x", 0), Write(P + "a", b"3", a.mod_revision)])
        want = [P + "a", P + "b", P + "a"]  # the create, then the commit's two puts in order
        wait_for("watch events over TLS", lambda: [e.kv.key for e in seen] == want)
    finally:
        stop.set()


def test_tls_refuses_a_wrong_ca_and_a_missing_client_certificate(tls_etcd: LocalEtcd) -> None:
    good = tls_etcd.client_tls("agent")
    assert Store([tls_etcd.url], tls=good, timeout=3).get_prefix(P) is not None  # control
    # the system CAs do not know our throwaway CA
    with pytest.raises(StoreUnreachable, match="not signed by the given CA"):
        Store([tls_etcd.url], tls=TLS(None, good.cert_file, good.key_file), timeout=3).get(P)
    with pytest.raises(StoreUnreachable, match="TLS handshake failed"):
        Store([tls_etcd.url], tls=TLS(good.ca_file), timeout=3).get(P)
    with pytest.raises(StoreError, match="needs its key"):
        Store([tls_etcd.url], tls=TLS(good.ca_file, good.cert_file))
    with pytest.raises(StoreError, match="does not exist"):
        Store([tls_etcd.url], tls=TLS("/nonexistent/ca.crt"))


def test_read_only_user_reads_its_prefix_and_nothing_else(tls_etcd: LocalEtcd) -> None:
    """The mesh's view of a remote cluster: TLS, and a user whose role only reads.

    Through etcd's gateway the user comes from user/password (a token), never from
    the certificate: etcd refuses gateway requests whose client certificate has a
    common name once auth is on (our test certificates have none).
    """
    root_tls = tls_etcd.client_tls("root")
    admin = Store([tls_etcd.url], tls=root_tls)
    admin.put(P + "nodes/n1", "{}")
    ctl = ["etcdctl", "--endpoints", tls_etcd.url, "--cacert", tls_etcd.ca_file,
           "--cert", str(root_tls.cert_file), "--key", str(root_tls.key_file)]  # fmt: skip
    for argv in (["user", "add", "root:rootpw"], ["user", "grant-role", "root", "root"],
                 ["role", "add", "reader"],
                 ["role", "grant-permission", "reader", "--prefix=true", "read", P],
                 ["user", "add", "reader:readpw"], ["user", "grant-role", "reader", "reader"],
                 ["auth", "enable"]):  # fmt: skip
        subprocess.run([*ctl, *argv], check=True, capture_output=True, timeout=30)
    try:
        reader = Store([tls_etcd.url], tls=tls_etcd.client_tls("mesh"), user="reader",
                       password="readpw")  # fmt: skip
        root = Store([tls_etcd.url], tls=root_tls, user="root", password="rootpw")
        assert reader.get(P + "nodes/n1") is not None  # control: reading is allowed
        with pytest.raises(StoreError, match="permission denied"):
            reader.put(P + "nodes/n1", "changed")
        with pytest.raises(StoreError, match="permission denied"):
            reader.get(keys.cluster_prefix("other") + "x")
        with pytest.raises(StoreError, match="authentication failed"):
            Store([tls_etcd.url], tls=root_tls, user="reader", password="wrong").get(P)
        seen: list[Event] = []
        stop, listed = threading.Event(), threading.Event()
        t = threading.Thread(
            target=reader.watch_prefix,
            args=(P, seen.extend, lambda kvs: listed.set(), stop),
            daemon=True,
        )
        t.start()
        try:
            assert listed.wait(10), "the reader's watch never listed the prefix"
            root.put(P + "nodes/n2", "{}")
            wait_for(
                "the reader sees a write", lambda: [e.kv.key for e in seen] == [P + "nodes/n2"]
            )
        finally:
            stop.set()
    finally:
        subprocess.run([*ctl, "--user", "root:rootpw", "auth", "disable"], capture_output=True,
                       timeout=30)  # fmt: skip


def test_endpoints_are_tried_in_turn() -> None:
    with LocalEtcd() as etcd:
        dead = f"http://127.0.0.1:{free_port()}"
        store = Store([dead, etcd.url], timeout=2)
        store.put(P + "x", "1")
        assert store.url == etcd.url
        kv = store.get(P + "x")
        assert kv is not None and kv.value == b"1"
    with pytest.raises(StoreUnreachable, match=f"cannot reach etcd at {dead}"):
        Store([dead], timeout=2).get(P)


def test_too_many_writes_are_refused_before_etcd_sees_them() -> None:
    with LocalEtcd() as etcd:
        store = Store([etcd.url])
        writes = [Write(f"{P}k{i}", b"v") for i in range(MAX_TXN_OPS + 1)]
        with pytest.raises(StoreError, match=f"limit of {MAX_TXN_OPS}"):
            store.commit(writes)
        assert store.get_prefix(P)[0] == []
        assert store.commit(writes[:MAX_TXN_OPS])  # control: at the limit it commits
        assert len(store.get_prefix(P)[0]) == MAX_TXN_OPS


def test_read_answers_keys_and_prefixes_in_one_round_trip_at_one_revision(etcd: LocalEtcd) -> None:
    store = etcd.store()
    store.put("/r/a/1", "x")
    store.put("/r/a/2", "y")
    rev = store.put("/r/b", "z")
    trips: list[str] = []
    store.on_call = lambda path, _s: trips.append(path)
    got = store.read(["/r/b", "/r/none", "/r/a/1"], ["/r/a/", "/r/empty/"])
    assert trips == ["/kv/txn"] and got.revision == rev
    assert got.keys["/r/b"] is not None and got.keys["/r/b"].value == b"z"
    assert got.keys["/r/none"] is None  # an absent key keeps its place
    assert got.keys["/r/a/1"] is not None and got.keys["/r/a/1"].value == b"x"
    assert [kv.key for kv in got.prefixes["/r/a/"]] == ["/r/a/1", "/r/a/2"]
    assert got.prefixes["/r/empty/"] == []
    assert store.count_prefix("/r/a/") == 2 and store.count_prefix("/r/empty/") == 0
    with pytest.raises(StoreError, match="per transaction"):
        store.read([f"/k{i}" for i in range(MAX_TXN_OPS + 1)])
