"""A prefix watch that survives etcd restarts, idle streams and compaction.

The gateway streams a watch as newline-delimited JSON over one long POST. The
stream can end for four reasons, each handled differently:

- it went quiet (no event for ``IDLE_S``, or the gateway's own request
  timeout): resume at the last revision seen plus one, without a word;
- etcd compacted the revision we would resume at: list the prefix again and
  hand the listing to ``on_reset`` (the caller replaces its whole state);
- the connection broke (etcd restarted): wait a second, resume after the last
  event delivered — never from where the stream began: a stream that lived for
  hours would otherwise hand every change since then to its caller again, in
  order, old states included (a remote cluster's exporter replayed a deleted
  Service and NotReady pods into the mesh that way, docs/mesh.md);
- ``stop`` was set: return.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import requests

from harness.store.client import KV, Event, StoreError, b64, kv_of, range_end

if TYPE_CHECKING:
    from harness.store.client import Store

log = logging.getLogger("podlab.store")

#: A watch stream silent this long is re-opened (quietly): it also notices a dead
#: etcd behind a half-open connection. Resuming costs one request.
IDLE_S = 60.0


class _Cursor:
    """The last revision whose events were all handed over (0: list first). Kept outside
    the stream so that a stream that breaks mid-way still moves it: a restarted etcd is
    resumed right after the last event delivered, never replayed from an older one."""

    def __init__(self, rev: int) -> None:
        self.rev = rev


def follow(
    store: Store,
    prefix: str,
    on_events: Callable[[list[Event]], None],
    on_reset: Callable[[list[KV]], None],
    stop: threading.Event,
    start_revision: int = 0,
) -> None:
    """``Store.watch_prefix``: list (unless ``start_revision``), then follow until ``stop``."""
    cur = _Cursor(start_revision - 1 if start_revision > 0 else 0)
    while not stop.is_set():
        try:
            if cur.rev == 0:
                kvs, header_rev = store.get_prefix(prefix)
                on_reset(kvs)
                cur.rev = header_rev
            _stream(store, prefix, cur, on_events, stop)
        except _Idle as exc:
            # no event for a while (or the gateway's own timeout): just resume
            log.debug("watch %s idle (%s); resuming from revision %d", prefix, exc, cur.rev + 1)
        except _Compacted as exc:
            log.warning("watch %s: revision compacted (%s); re-listing", prefix, exc)
            cur.rev = 0
        except (StoreError, requests.RequestException, ValueError, KeyError) as exc:
            log.warning("watch %s: %s; retrying from revision %d", prefix, exc, cur.rev + 1)
            if "invalid auth token" in str(exc):
                with contextlib.suppress(StoreError):
                    store.login()  # the user's token expired (--auth-token-ttl)
            stop.wait(1.0)


def _stream(
    store: Store,
    prefix: str,
    cur: _Cursor,
    on_events: Callable[[list[Event]], None],
    stop: threading.Event,
) -> None:
    """One watch stream from ``cur.rev + 1``, moving ``cur`` past every batch
    ``on_events`` accepted (a batch it raised on is delivered again on resume).

    Raises _Idle when the stream merely went quiet.
    """
    create: dict[str, Any] = {
        "key": b64(prefix),
        "range_end": range_end(prefix),
        "start_revision": cur.rev + 1,
        "progress_notify": True,
    }
    with store.session.post(
        store.gateway_url("/watch"),
        json={"create_request": create},
        stream=True,
        timeout=(store.timeout, IDLE_S),
    ) as resp:
        if resp.status_code == 408:  # the gateway ends long-idle streams itself
            raise _Idle("gateway request timeout")
        if resp.status_code != 200:
            raise StoreError(f"watch refused ({resp.status_code}): {resp.text[:200]}")
        lines = resp.iter_lines(chunk_size=None)  # type: ignore[call-overload]
        while not stop.is_set():
            try:
                line = next(lines)
            except StopIteration:
                break
            except requests.exceptions.ConnectionError as exc:
                if "timed out" in str(exc):
                    raise _Idle("read timed out") from exc
                raise
            if not line.strip():
                continue
            body = json.loads(line)
            if "error" in body and "result" not in body:
                raise StoreError(f"watch refused: {body['error'].get('message', body)}")
            result = body.get("result", {})
            if int(result.get("compact_revision", 0) or 0) > 0:
                raise _Compacted(result["compact_revision"])
            if result.get("canceled"):
                raise StoreError(f"watch canceled: {result.get('cancel_reason', '')}")
            events = [Event(e.get("type", "PUT"), kv_of(e["kv"])) for e in result.get("events", [])]
            if events:
                on_events(events)
                cur.rev = max(cur.rev, max(e.kv.mod_revision for e in events))


class _Compacted(Exception):
    pass


class _Idle(Exception):
    """The stream ended quietly (idle timeout); resume where the cursor stands."""
