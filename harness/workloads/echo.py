"""Echo servers for tests: every answer names the pod that sent it.

``python -m harness.workloads.echo --name N --tcp 8080 --udp 8081 --http 8000``
runs (in one process, one thread per server) a TCP server that sends
``<name> <client ip>:<port>\\n`` and then echoes what it receives, a UDP server
that answers each datagram with ``<name> <datagram>``, and an HTTP server whose
every GET returns ``<name>\\n``. The name defaults to $POD_NAME (the agent sets it).

CPU work for autoscaling experiments: ``GET /burn?ms=N`` spends N ms of CPU time
(the handler thread's own, measured with ``time.thread_time``, so a throttled
pod takes longer in wall time, as a real service would) before it answers
``<name> burned N ms``; ``--work-ms N`` makes every GET do that much work.
"""

from __future__ import annotations

import argparse
import http.server
import os
import socket
import socketserver
import sys
import threading
import time
import urllib.parse

MAX_BURN_MS = 10_000


class _TCP(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128  # socketserver's 5 drops SYNs under a burst of clients


class _UDP(socketserver.ThreadingUDPServer):
    allow_reuse_address = True
    daemon_threads = True


def tcp_server(name: str, port: int, host: str = "0.0.0.0") -> socketserver.BaseServer:
    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            peer = f"{self.client_address[0]}:{self.client_address[1]}"
            self.wfile.write(f"{name} {peer}\n".encode())
            while data := self.request.recv(65536):
                self.request.sendall(data)

    return _TCP((host, port), Handler)


def udp_server(name: str, port: int, host: str = "0.0.0.0") -> socketserver.BaseServer:
    class Handler(socketserver.DatagramRequestHandler):
        def handle(self) -> None:
            data = self.rfile.read()
            self.wfile.write(name.encode() + b" " + data)

    return _UDP((host, port), Handler)


def burn(ms: float) -> None:
    """Spend ``ms`` milliseconds of this thread's CPU time."""
    end = time.thread_time() + ms / 1000
    x = 0
    while time.thread_time() < end:
        for i in range(2000):
            x ^= i * i


def http_server(
    name: str, port: int, host: str = "0.0.0.0", work_ms: float = 0.0
) -> socketserver.BaseServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            ms = work_ms
            if url.path == "/burn":
                try:
                    ms = float(urllib.parse.parse_qs(url.query).get("ms", ["100"])[0])
                except ValueError:
                    ms = -1
                if not 0 <= ms <= MAX_BURN_MS:
                    self.send_error(400, f"ms must be between 0 and {MAX_BURN_MS}")
                    return
            burn(ms)
            body = (f"{name} burned {ms:g} ms\n" if url.path == "/burn" else f"{name}\n").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return None

    return http.server.ThreadingHTTPServer((host, port), Handler)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="harness.workloads.echo", description=__doc__)
    ap.add_argument("--name", default=os.environ.get("POD_NAME", socket.gethostname()))
    ap.add_argument("--tcp", type=int, default=0, help="TCP echo port (0: off)")
    ap.add_argument("--udp", type=int, default=0, help="UDP echo port (0: off)")
    ap.add_argument("--http", type=int, default=0, help="HTTP port (0: off)")
    ap.add_argument("--work-ms", type=float, default=0.0, help="CPU ms every GET spends (0)")
    args = ap.parse_args(argv)
    servers = []
    for port, make in ((args.tcp, tcp_server), (args.udp, udp_server)):
        if port:
            servers.append(make(args.name, port))
    if args.http:
        servers.append(http_server(args.name, args.http, work_ms=args.work_ms))
    if not servers:
        ap.error("give at least one of --tcp, --udp, --http")
    for srv in servers:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    print(f"echo {args.name}: tcp={args.tcp} udp={args.udp} http={args.http}", flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
