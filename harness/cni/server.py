"""The agent's CNI server: ``podlab-cni`` forwards each call here to skip its slow start.

A Unix socket (``/run/podlab/cni.sock``, mode 0600) in the node's filesystem;
one connection per call (the wire format is in plugin.py); the answer is
exactly what the plugin would have printed working alone (the same
``handler.handle``). Calls run on a pool of threads, so a node plumbs many pods
at once; what they share (IPAM, the bridge) is locked or idempotent in the
handler.

This is the pattern of Cilium, Antrea and Multus' thick plugin: a tiny binary in
front of a node daemon that already has its libraries loaded (docs/adr/0012).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socketserver
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from harness.cni import handler
from harness.cni.spec import INTERNAL, CniError, request_from_env

log = logging.getLogger("podlab.cni.server")


def decode(raw: bytes) -> tuple[dict[str, str], str]:
    """The plugin's request (see plugin.py): the CNI_* variables and stdin."""
    head, _, rest = raw.partition(b"\n")
    magic, version, size = head.split(b" ")
    if magic != b"podlab-cni" or version != b"1":
        raise ValueError(f"not a podlab-cni request: {head[:40]!r}")
    n = int(size)
    env = dict(item.split("=", 1) for item in rest[:n].decode().split("\0") if "=" in item)
    return env, rest[n:].decode(errors="replace")


def serve_one(raw: bytes) -> tuple[int, bytes]:
    """One forwarded call → (exit status, stdout), never an exception."""
    version = "1.1.0"
    try:
        env, stdin = decode(raw)
        with contextlib.suppress(ValueError, AttributeError):
            version = json.loads(stdin).get("cniVersion") or version
        req = request_from_env(env, stdin)
        started = time.monotonic()
        result = handler.handle(req)
        log.debug("%s %s %s: %.1f ms", req.command, req.container_id, req.ifname,
                  (time.monotonic() - started) * 1000)  # fmt: skip
        return 0, b"" if result is None else json.dumps(result).encode()
    except CniError as exc:
        return 1, json.dumps(exc.to_json(version)).encode()
    except Exception as exc:  # a bug must not kill the server, and the caller must learn
        log.exception("CNI call failed")
        err = CniError(INTERNAL, f"internal error in podlab-cni (agent): {exc!r}")
        return 1, json.dumps(err.to_json(version)).encode()


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        code, out = serve_one(self.rfile.read())
        self.wfile.write(b"%d\n" % code + out)


class _Server(socketserver.UnixStreamServer):
    """Calls run on a fixed pool of threads (each keeps its node-side netlink socket,
    handler.host_iproute), not one new thread per call."""

    request_queue_size = 256  # a burst of pods connects at once

    def __init__(self, path: str, workers: int) -> None:
        super().__init__(path, _Handler)
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="cni")

    def process_request(self, request: Any, client_address: Any) -> None:
        self.pool.submit(self._work, request, client_address)

    def _work(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        self.pool.shutdown(wait=True, cancel_futures=True)


class CniServer:
    """``start()`` listens in a background thread; ``close()`` stops and removes the socket."""

    def __init__(self, path: Path, workers: int = 16) -> None:
        self.path, self.workers = path, workers
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by an agent that was killed
        old = os.umask(0o077)
        try:
            self._server = _Server(str(self.path), self.workers)
        finally:
            os.umask(old)
        # how often serve_forever looks at its shutdown flag: close() waits up to this long,
        # and the agent closes its server on every stop (a mode switch stops every agent)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, name="cni-server"
        )
        self._thread.daemon = True
        self._thread.start()
        log.info("CNI server listening on %s", self.path)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.cni.server SOCKET``: serve until SIGTERM (tests, the CNI suite)."""
    import signal
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m harness.cni.server SOCKET", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    server = CniServer(Path(args[0]))
    server.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
