"""A thin etcd v3 key-value client for the host side (over etcd's gRPC gateway).

The api verbs need only ranges, deletes and one kind of transaction: "write
these keys if nobody changed them since I read them". That last part is why
this is not a plain put: ``apply`` of a multi-document file must be
all-or-nothing, and two concurrent applies must not silently overwrite each
other. When the agent's ``harness/agent/store.py`` lands, this module can be
replaced by it; the host side uses only the functions below.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import etcd3gw
from etcd3gw import exceptions as etcd_exc

from harness.errors import LabError, UserError

# etcd's default --max-txn-ops: a transaction with more operations is refused.
MAX_TXN_OPS = 128


@dataclass(frozen=True)
class Entry:
    """One key as read from etcd, with the revisions used for optimistic writes."""

    key: str
    value: bytes
    mod_revision: int
    create_revision: int


@dataclass(frozen=True)
class Write:
    """A put (``value`` set) or delete (``value`` None) guarded by a revision check.

    ``expect_mod_revision`` 0 means "the key must not exist", None means "do not
    check"; any other value is the mod_revision the writer last saw.
    """

    key: str
    value: bytes | None
    expect_mod_revision: int | None = None


class KV:
    """Ranges, deletes and guarded transactions against one etcd endpoint."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UserError(f"etcd endpoint {url!r} is not a URL like http://10.0.0.1:2379")
        self.url = f"{parts.scheme}://{parts.hostname}:{parts.port or 2379}"
        self._client = etcd3gw.Etcd3Client(
            host=parts.hostname,
            port=parts.port or 2379,
            protocol=parts.scheme,
            timeout=timeout,
            api_path="/v3/",
        )

    def get(self, key: str) -> Entry | None:
        """The entry at ``key``, or None when it does not exist."""
        with self._errors():
            rows = self._client.get(key, metadata=True)
        return _entry(*rows[0]) if rows else None

    def get_prefix(self, prefix: str) -> list[Entry]:
        """Every entry whose key starts with ``prefix``, sorted by key."""
        with self._errors():
            rows = self._client.get_prefix(prefix, sort_order="ascend", sort_target="key")
        return [_entry(value, meta) for value, meta in rows]

    def delete(self, key: str) -> bool:
        """Delete ``key``; True when it existed."""
        with self._errors():
            return bool(self._client.delete(key))

    def delete_prefix(self, prefix: str) -> None:
        """Delete every key under ``prefix`` (tests clean up with this)."""
        with self._errors():
            self._client.delete_prefix(prefix)

    def commit(self, writes: list[Write]) -> bool:
        """Apply ``writes`` atomically if every revision check holds; False otherwise.

        Raises LabError if the batch exceeds etcd's per-transaction limit, since
        splitting it would silently give up atomicity.
        """
        if not writes:
            return True
        if len(writes) > MAX_TXN_OPS:
            raise LabError(
                f"{len(writes)} objects in one apply exceed etcd's limit of {MAX_TXN_OPS} "
                "operations per transaction; split the file"
            )
        compare: list[dict[str, Any]] = []
        success: list[dict[str, Any]] = []
        for w in writes:
            k = _b64(w.key.encode())
            if w.expect_mod_revision == 0:  # a missing key has create_revision 0
                compare.append(
                    {"key": k, "result": "EQUAL", "target": "CREATE", "create_revision": 0}
                )
            elif w.expect_mod_revision is not None:
                compare.append(
                    {
                        "key": k,
                        "result": "EQUAL",
                        "target": "MOD",
                        "mod_revision": w.expect_mod_revision,
                    }
                )
            if w.value is None:
                success.append({"request_delete_range": {"key": k}})
            else:
                success.append({"request_put": {"key": k, "value": _b64(w.value)}})
        with self._errors():
            result = self._client.transaction(
                {"compare": compare, "success": success, "failure": []}
            )
        return bool(result.get("succeeded", False))

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn the client library's exceptions into one LabError naming the endpoint."""
        try:
            yield
        except (etcd_exc.ConnectionFailedError, etcd_exc.ConnectionTimeoutError) as exc:
            raise LabError(
                f"cannot reach etcd at {self.url}: {_short(exc)} "
                "(is the lab up and deployed? `podlab up`, `podlab deploy`)"
            ) from exc
        except etcd_exc.Etcd3Exception as exc:
            raise LabError(f"etcd at {self.url} failed: {_short(exc)}") from exc


def _entry(value: bytes, meta: Any) -> Entry:
    key = meta["key"]
    return Entry(
        key=key.decode() if isinstance(key, bytes) else str(key),
        value=value,
        mod_revision=int(meta.get("mod_revision", 0)),
        create_revision=int(meta.get("create_revision", 0)),
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _short(exc: Exception) -> str:
    """The useful tail of a client error ("Connection refused", etcd's own message)."""
    text = str(getattr(exc, "detail_text", None) or " ".join(str(a) for a in exc.args))
    text = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    for marker in ("Connection refused", "timed out", "No route to host", "Name or service"):
        if marker in text:
            return marker.lower()
    return text[:200]
