"""The agent's CNI server: ``podlab-cni`` forwards each call here to skip its slow start.

A Unix socket (``/run/podlab/cni.sock``, mode 0600) in the node's filesystem;
one connection per call: the plugin sends ``{"env": {CNI_*}, "stdin": config}``
and closes its side; the server answers ``{"exit": N, "stdout": text}`` with
exactly what the plugin would have printed working alone (the same
``handler.handle``). Calls run in threads, so a node plumbs many pods at once;
what they share (IPAM, the bridge) is locked or idempotent in the handler.

This is the pattern of Cilium, Antrea and Multus' thick plugin: a tiny binary in
front of a node daemon that already has its libraries loaded (docs/adr/0007).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socketserver
import threading
import time
from pathlib import Path

from harness.cni import handler
from harness.cni.spec import INTERNAL, CniError, request_from_env

log = logging.getLogger("podlab.cni.server")


def serve_one(raw: bytes) -> dict[str, object]:
    """One forwarded call → ``{"exit", "stdout"}``, never an exception."""
    version = "1.1.0"
    try:
        msg = json.loads(raw)
        env, stdin = dict(msg["env"]), str(msg["stdin"])
        with contextlib.suppress(ValueError, AttributeError):
            version = json.loads(stdin).get("cniVersion") or version
        req = request_from_env(env, stdin)
        started = time.monotonic()
        result = handler.handle(req)
        log.debug("%s %s %s: %.1f ms", req.command, req.container_id, req.ifname,
                  (time.monotonic() - started) * 1000)  # fmt: skip
        return {"exit": 0, "stdout": "" if result is None else json.dumps(result)}
    except CniError as exc:
        return {"exit": 1, "stdout": json.dumps(exc.to_json(version))}
    except Exception as exc:  # a bug must not kill the server, and the caller must learn
        log.exception("CNI call failed")
        err = CniError(INTERNAL, f"internal error in podlab-cni (agent): {exc!r}")
        return {"exit": 1, "stdout": json.dumps(err.to_json(version))}


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        raw = self.rfile.read()
        self.wfile.write(json.dumps(serve_one(raw)).encode())


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    request_queue_size = 256  # a burst of pods connects at once


class CniServer:
    """``start()`` listens in a background thread; ``close()`` stops and removes the socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by an agent that was killed
        old = os.umask(0o077)
        try:
            self._server = _Server(str(self.path), _Handler)
        finally:
            os.umask(old)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.5}, name="cni-server"
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
