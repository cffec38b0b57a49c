"""Batched writes of the hollow runner's pod statuses: one transaction for what is queued.

Each hollow pod's stages write its status twice (Pending, Running) and a delete
removes it; one blocking call each on a thread made these writes queue behind
each other on a starved CPU (hollow pod startup p99 50.8 s at 1,000 nodes).
The writer sends everything queued since its last call as one etcd transaction
of up to ``MAX_TXN_OPS`` operations. etcd refuses a transaction naming a key
twice, so a batch keeps the last write per key (a Pending superseded by its
Running before either was sent is never written: what a watcher would have seen
within the same few milliseconds). A failed transaction is retried (the store
may be restarting); the waiting stages see their write land, late but in order.
"""

from __future__ import annotations

import asyncio
import logging

from harness.store import MAX_TXN_OPS, Store, StoreError, Write

log = logging.getLogger("podlab.hollow")
RETRY_S = 0.5


class Writer:
    """``await writer.put(key, value)`` / ``delete(key)``: queued, sent in batches."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.queue: asyncio.Queue[tuple[Write, asyncio.Future[None]]] = asyncio.Queue()
        self.batches = 0  # transactions sent (what a test and the log count)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.flush_forever())

    async def put(self, key: str, value: str) -> None:
        await self._queue(Write(key, value.encode()))

    async def delete(self, key: str) -> None:
        await self._queue(Write(key, None))

    async def _queue(self, w: Write) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((w, fut))
        await fut

    async def flush_forever(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while not self.queue.empty() and len(batch) < MAX_TXN_OPS:
                batch.append(self.queue.get_nowait())
            last: dict[str, Write] = {}
            for w, _ in batch:
                last.pop(w.key, None)  # re-insert: keeps the order of the last writes
                last[w.key] = w
            await self._send(list(last.values()))
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)

    async def _send(self, writes: list[Write]) -> None:
        while True:
            try:
                await asyncio.to_thread(self.store.commit, writes)
                self.batches += 1
                return
            except StoreError as exc:
                log.warning("pod status batch of %d failed, retrying: %s", len(writes), exc)
                await asyncio.sleep(RETRY_S)

    def stop(self) -> None:
        """Stop sending (the runner's end; writes still queued are dropped)."""
        if self.task is not None:
            self.task.cancel()
