"""The watch loop's revision bookkeeping, against a scripted gateway (no etcd).

A stream that breaks (etcd restarted) must resume right after the last event it
delivered. It used to resume from where the stream had *begun* — for a stream
open since start-up, its first listing — so every change since then reached the
caller a second time, in order, old states included: a remote cluster's mesh
exporter replayed deleted Services and NotReady pods into its export that way, and
the other cluster's agents failed a global service over to their local backends
(scenario 26's etcd outage, docs/mesh.md "Failure semantics")."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from harness.store import KV, Event
from harness.store import watch as w

PREFIX = "/podlab/v1/c2/"


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def put(key: str, value: str, rev: int) -> dict[str, Any]:
    return {"kv": {"key": b64(PREFIX + key), "value": b64(value), "mod_revision": str(rev)}}


def line(*events: dict[str, Any]) -> bytes:
    return json.dumps({"result": {"events": list(events)}}).encode()


class Resp:
    def __init__(self, lines: list[bytes], then: Exception | None) -> None:
        self.status_code, self._lines, self._then = 200, lines, then

    def __enter__(self) -> Resp:
        return self

    def __exit__(self, *_: object) -> None:
        pass

    def iter_lines(self, chunk_size: Any = None) -> Iterator[bytes]:
        yield from self._lines
        if self._then is not None:
            raise self._then


class Gateway:
    """Each watch request gets the next scripted stream; records its start revision."""

    def __init__(self, streams: list[tuple[list[bytes], Exception | None]], stop: threading.Event):
        self.streams, self.stop, self.starts = streams, stop, []

    def post(self, _url: str, json: dict[str, Any], **_: Any) -> Resp:
        self.starts.append(int(json["create_request"]["start_revision"]))
        if not self.streams:
            self.stop.set()
            return Resp([], None)
        return Resp(*self.streams.pop(0))


class FakeStore:
    timeout = 1.0

    def __init__(self, gateway: Gateway, listing_rev: int) -> None:
        self.session, self.listing_rev, self.lists = gateway, listing_rev, 0

    def gateway_url(self, path: str) -> str:
        return "http://gw" + path

    def get_prefix(self, _prefix: str) -> tuple[list[KV], int]:
        self.lists += 1
        return [], self.listing_rev


def run(streams: list[tuple[list[bytes], Exception | None]], listing_rev: int = 10):
    stop = threading.Event()
    gw = Gateway(streams, stop)
    store = FakeStore(gw, listing_rev)
    seen: list[tuple[str, int]] = []

    def on_events(events: list[Event]) -> None:
        seen.extend((e.kv.key[len(PREFIX) :], e.kv.mod_revision) for e in events)

    stop.wait = lambda _t=None: stop.is_set()  # type: ignore[method-assign]  # no 1 s pauses
    w.follow(store, PREFIX, on_events, lambda _kvs: None, stop)  # type: ignore[arg-type]
    return gw.starts, seen, store.lists


BROKEN = requests.exceptions.ConnectionError("Connection aborted: etcd went away")


def test_a_broken_stream_resumes_after_the_last_event_delivered() -> None:
    first = [
        line(put("nodes/n1", "hb1", 11)),
        line(put("pods/ns/web", "v1", 12), put("x", "y", 13)),
    ]
    again = [line(put("nodes/n1", "hb2", 20))]
    starts, seen, lists = run([(first, BROKEN), (again, BROKEN)])
    assert starts[:3] == [11, 14, 21], "each resume starts after the last delivered revision"
    assert seen == [("nodes/n1", 11), ("pods/ns/web", 12), ("x", 13), ("nodes/n1", 20)]
    assert len(seen) == len(set(seen)), "no change is delivered twice"
    assert lists == 1, "a restart is resumed, never re-listed"


def test_a_refused_stream_and_an_idle_one_resume_where_they_stood() -> None:
    refused = [line(put("a", "1", 15)), json.dumps({"error": {"message": "transport"}}).encode()]
    idle = [line(put("b", "1", 16))]
    timeout = requests.exceptions.ConnectionError("Read timed out.")
    starts, seen, _ = run([(refused, None), (idle, timeout)])
    assert starts[:3] == [11, 16, 17]
    assert seen == [("a", 15), ("b", 16)]


def test_a_batch_the_caller_refused_is_delivered_again() -> None:
    """The exporter raises to have a batch it could not copy replayed: that batch only."""
    stop = threading.Event()
    gw = Gateway([([line(put("a", "1", 11)), line(put("b", "1", 12))], None)], stop)
    calls: list[int] = []

    def on_events(events: list[Event]) -> None:
        rev = events[0].kv.mod_revision
        calls.append(rev)
        if rev == 12 and calls.count(12) == 1:
            raise w.StoreError("export etcd down")

    stop.wait = lambda _t=None: stop.is_set()  # type: ignore[method-assign]
    w.follow(FakeStore(gw, 10), PREFIX, on_events, lambda _k: None, stop)  # type: ignore[arg-type]
    assert gw.starts[:2] == [11, 12]  # the second stream starts at the refused batch
    assert calls[:2] == [11, 12]


@pytest.mark.parametrize("start", [0, 30])
def test_start_revision_skips_the_listing_and_is_the_first_revision_asked(start: int) -> None:
    stop = threading.Event()
    gw = Gateway([], stop)
    store = FakeStore(gw, 10)
    stop.wait = lambda _t=None: stop.is_set()  # type: ignore[method-assign]
    w.follow(store, PREFIX, lambda _e: None, lambda _k: None, stop, start)  # type: ignore[arg-type]
    assert gw.starts == [start or 11]
    assert store.lists == (0 if start else 1)
