"""A prefix watch that survives etcd restarts, idle streams and compaction.

The gateway streams a watch as newline-delimited JSON over one long POST. The
stream can end for four reasons, each handled differently:

- it went quiet (no event for ``IDLE_S``, or the gateway's own request
  timeout): resume at the last revision seen plus one, without a word;
- etcd compacted the revision we would resume at: list the prefix again and
  hand the listing to ``on_reset`` (the caller replaces its whole state);
- the connection broke (etcd restarted): wait a second, resume;
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


def follow(
    store: Store,
    prefix: str,
    on_events: Callable[[list[Event]], None],
    on_reset: Callable[[list[KV]], None],
    stop: threading.Event,
    start_revision: int = 0,
) -> None:
    """``Store.watch_prefix``: list (unless ``start_revision``), then follow until ``stop``."""
    rev = start_revision - 1 if start_revision > 0 else 0
    while not stop.is_set():
        try:
            if rev == 0:
                kvs, header_rev = store.get_prefix(prefix)
                on_reset(kvs)
                rev = header_rev
            rev = _stream(store, prefix, rev + 1, on_events, stop)
        except _Idle as exc:
            # no event for a while (or the gateway's own timeout): just resume
            log.debug("watch %s idle (%s); resuming from revision %d", prefix, exc, rev + 1)
            rev = exc.last
        except _Compacted as exc:
            log.warning("watch %s: revision compacted (%s); re-listing", prefix, exc)
            rev = 0
        except (StoreError, requests.RequestException, ValueError, KeyError) as exc:
            log.warning("watch %s: %s; retrying from revision %d", prefix, exc, rev + 1)
            if "invalid auth token" in str(exc):
                with contextlib.suppress(StoreError):
                    store.login()  # the user's token expired (--auth-token-ttl)
            stop.wait(1.0)


def _stream(
    store: Store,
    prefix: str,
    start: int,
    on_events: Callable[[list[Event]], None],
    stop: threading.Event,
) -> int:
    """One watch stream from ``start``; returns the last revision seen when it ends.

    Raises _Idle (with the last revision) when the stream merely went quiet.
    """
    create: dict[str, Any] = {
        "key": b64(prefix),
        "range_end": range_end(prefix),
        "start_revision": start,
        "progress_notify": True,
    }
    last = start - 1
    with store.session.post(
        store.gateway_url("/watch"),
        json={"create_request": create},
        stream=True,
        timeout=(store.timeout, IDLE_S),
    ) as resp:
        if resp.status_code == 408:  # the gateway ends long-idle streams itself
            raise _Idle(last, "gateway request timeout")
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
                    raise _Idle(last, "read timed out") from exc
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
                last = max(last, max(e.kv.mod_revision for e in events))
    return last


class _Compacted(Exception):
    pass


class _Idle(Exception):
    """The stream ended quietly (idle timeout); resume after revision ``last``."""

    def __init__(self, last: int, why: str) -> None:
        super().__init__(why)
        self.last = last
