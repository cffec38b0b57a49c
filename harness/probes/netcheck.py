"""The probe program that runs on nodes and inside pods: ``python -m harness.probes.netcheck``.

The host side never sends probe traffic itself (lab traffic stays inside the
lab): it runs this program on a node, or in a pod's namespace through its node,
and reads one JSON document from its stdout. Standard library only, because it
runs from the node's venv (``/opt/podlab/venv``) or any Python 3.11 on a VM.

Subcommands, each printing one JSON object:

- ``probe``  TCP / UDP / HTTP echo probes judged like Cilium's connectivity
  test: a connect timeout (2 s), an answer wait (5 s: a slow application is
  not a dropped packet), a total budget (10 s), and each attempt
  classified ``success`` / ``timeout`` (dropped) / ``refused`` (rejected) /
  ``unreachable`` (ICMP unreachable) / ``app-error`` (answered, but wrongly).
- ``rr``     TCP request/response round trips on one connection (latency).
- ``reach``  poll many ``ip:port`` targets until each accepts a TCP connection;
  report the wall-clock time of each first success (network-ready SLO).
- ``flow``   a steady request/response stream for a while, success counted per
  bucket (faults, mode switches: the interruption window).
- ``stream``  a new TCP connection every interval (open loop): who answered each.
- ``hstream`` the same over HTTP (``GET --path``, e.g. the echo workload's
  ``/burn?ms=N``): who answered each request and how long it took.
  ``flow``, ``stream`` and ``hstream`` take ``--ready-file PATH --ready-after S``:
  the file is created once the first request was answered and S more seconds of
  the stream have passed, so a check starts its event on proven traffic instead
  of after a fixed lead that has to cover the interpreter's start-up; ``stream``
  also ``--settled-file PATH --settled-after S``: created once a failed request
  was followed by S seconds of requests, all resolved and answered (a check
  that waits for a failure episode to end stops on it, not at a fixed time).
- ``routewait`` wait until a route to a subnet appears (or goes) on the node.
- ``serve``  a TCP + UDP echo server for a bounded time (pod→node checks),
  answering as ``harness.workloads.echo`` does.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

SUCCESS, TIMEOUT, REFUSED, UNREACHABLE, APP_ERROR = (
    "success",
    "timeout",
    "refused",
    "unreachable",
    "app-error",
)
_UNREACH = {errno.EHOSTUNREACH, errno.ENETUNREACH}
MAX_REPLY = 4096
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux's value; Python 3.11 lacks the name


def classify(exc: BaseException) -> str:
    """Map a socket error to a probe outcome (a drop is not a reject)."""
    if isinstance(exc, TimeoutError | socket.timeout):
        return TIMEOUT
    if isinstance(exc, ConnectionRefusedError):
        return REFUSED
    if isinstance(exc, OSError) and exc.errno in _UNREACH:
        return UNREACHABLE
    if isinstance(exc, ConnectionResetError):
        return REFUSED
    return APP_ERROR


def _attempt(
    proto: str, host: str, port: int, timeout: float, payload: bytes, wait: float | None = None
) -> dict[str, Any]:
    """One probe: ``timeout`` bounds the connect, ``wait`` (default: the same) the answer."""
    start = time.monotonic()
    try:
        reply = _ONE[proto](host, port, timeout, wait or timeout, payload)
    except (OSError, ValueError) as exc:
        return {"outcome": classify(exc), "error": str(exc) or type(exc).__name__,
                "rtt_s": time.monotonic() - start}  # fmt: skip
    rtt = time.monotonic() - start
    if not reply:
        return {"outcome": APP_ERROR, "error": "empty reply", "rtt_s": rtt}
    if proto == "http" and not reply.startswith(("HTTP/1.0 2", "HTTP/1.1 2")):
        return {"outcome": APP_ERROR, "error": reply.splitlines()[0][:200], "rtt_s": rtt,
                "reply": reply[:MAX_REPLY]}  # fmt: skip
    return {"outcome": SUCCESS, "rtt_s": rtt, "reply": reply[:MAX_REPLY]}


def _tcp(host: str, port: int, timeout: float, wait: float, payload: bytes) -> str:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(wait)
        s.sendall(payload + b"\n")
        return _read_line(s)


def _read_line(s: socket.socket) -> str:
    data = b""
    while b"\n" not in data and len(data) < MAX_REPLY:
        chunk = s.recv(MAX_REPLY)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


def _udp(host: str, port: int, timeout: float, wait: float, payload: bytes) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(wait)
        s.connect((host, port))  # a connected socket reports ICMP port unreachable
        s.send(payload)
        return s.recv(65535).decode(errors="replace").strip()


def _http(host: str, port: int, timeout: float, wait: float, payload: bytes) -> str:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(wait)
        s.sendall(b"GET / HTTP/1.0\r\nHost: " + host.encode() + b"\r\nUser-Agent: podlab\r\n\r\n")
        data = b""
        while len(data) < 65536:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.decode(errors="replace").strip()


_ONE = {"tcp": _tcp, "udp": _udp, "http": _http}


def probe(a: argparse.Namespace) -> dict[str, Any]:
    """``count`` attempts, each bounded by the connect timeout, all within the budget."""
    deadline = time.monotonic() + a.budget
    attempts = []
    for i in range(a.count):
        left = deadline - time.monotonic()
        if left <= 0:
            attempts.append({"outcome": TIMEOUT, "error": "budget exhausted", "rtt_s": 0.0})
            continue
        payload = f"{a.payload} {i}".encode()
        wait = min(a.wait, left)
        attempts.append(_attempt(a.proto, a.target, a.port, min(a.timeout, left), payload, wait))
    return {"proto": a.proto, "target": a.target, "port": a.port, "attempts": attempts}


def rr(a: argparse.Namespace) -> dict[str, Any]:
    """Round trips of one-line requests on one TCP connection, in seconds."""
    rtts: list[float] = []
    error = ""
    try:
        with socket.create_connection((a.target, a.port), timeout=a.timeout) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if a.banner:
                _read_line(s)  # the echo workload greets with "<name> <peer>" first
            for _ in range(a.warmup):
                s.sendall(b"warmup\n")
                _read_line(s)
            for i in range(a.count):
                start = time.perf_counter()
                s.sendall(f"rr {i}\n".encode())
                if not _read_line(s):
                    error = "connection closed"
                    break
                rtts.append(time.perf_counter() - start)
    except OSError as exc:
        error = f"{classify(exc)}: {exc}"
    return {"target": a.target, "port": a.port, "rtts_s": rtts, "error": error}


def reach(a: argparse.Namespace) -> dict[str, Any]:
    """Poll targets until each accepts (or refuses, with --refused-ok); epoch of first success."""
    left = {t: _split(t) for t in a.targets.split(",") if t}
    first: dict[str, float | None] = dict.fromkeys(left)
    started = time.time()  # a first success says nothing about what came before this
    deadline = time.monotonic() + a.deadline
    while left and time.monotonic() < deadline:
        for target, (host, port) in list(left.items()):
            try:
                with socket.create_connection((host, port), timeout=a.timeout):
                    pass
            except ConnectionRefusedError:
                if not a.refused_ok:
                    continue
            except OSError:
                continue
            first[target] = time.time()
            del left[target]
        time.sleep(a.interval)
    return {"first_success": first, "started": started}


def _split(target: str) -> tuple[str, int]:
    host, _, port = target.rpartition(":")
    return host, int(port)


class Ready:
    """``--ready-file``: created ``after_s`` after the first answered request (once)."""

    def __init__(self, path: str, after_s: float) -> None:
        self.path, self.after_s = path, after_s
        self.first: float | None = None
        self.done = not path

    def answered(self) -> None:
        if self.first is None:
            self.first = time.monotonic()

    def tick(self) -> None:
        if self.done or self.first is None or time.monotonic() - self.first < self.after_s:
            return
        with open(self.path, "w"):
            pass
        self.done = True


class Settled:
    """``stream --settled-file``: created once the stream saw a failed request and then
    ``after_s`` of requests, all resolved, none failed (a failure episode is over)."""

    def __init__(self, path: str, after_s: float) -> None:
        self.path, self.after_s = path, after_s
        self.last_bad: float | None = None  # send offset of the latest failed request
        self.done = not path

    def failed(self, offset: float) -> None:
        self.last_bad = offset if self.last_bad is None else max(self.last_bad, offset)

    def tick(self, now: float, sent: Sequence[tuple[float, threading.Thread]]) -> None:
        if self.done or self.last_bad is None or now - self.last_bad < self.after_s:
            return
        end = self.last_bad + self.after_s
        if all(not t.is_alive() for offset, t in sent if offset <= end):
            with open(self.path, "w"):
                pass
            self.done = True


CONNECT_TIMEOUT = "connect-timeout"
# the outcomes of a stream's request that nobody answered (a reply's first word otherwise)
FAILED = {CONNECT_TIMEOUT, TIMEOUT, REFUSED, UNREACHABLE, APP_ERROR}


def flow(a: argparse.Namespace) -> dict[str, Any]:
    """Request/response every ``interval`` for ``duration``; successes per ``bucket``.

    ``tcp`` keeps one long-lived connection (re-opened after a failure, as an
    application would), so a datapath change that breaks established flows shows.
    """
    start = time.time()
    t0 = time.monotonic()
    buckets: dict[int, list[int]] = {}
    conn: socket.socket | None = None
    ready = Ready(a.ready_file, a.ready_after)
    while (now := time.monotonic() - t0) < a.duration:
        if a.stop_file and os.path.exists(a.stop_file):
            break
        if a.proto == "tcp":
            conn, ok = _long_lived(conn, a)
        else:
            ok = _attempt(a.proto, a.target, a.port, a.timeout, b"flow")["outcome"] == SUCCESS
        b = buckets.setdefault(int(now / a.bucket), [0, 0])
        b[0] += 1
        b[1] += int(ok)
        if ok:
            ready.answered()
        ready.tick()
        time.sleep(max(0.0, a.interval - (time.monotonic() - t0 - now)))
    if conn is not None:
        conn.close()
    samples = [[k * a.bucket, sent, ok] for k, (sent, ok) in sorted(buckets.items())]
    return {"start": start, "bucket_s": a.bucket, "samples": samples}


def stream(a: argparse.Namespace) -> dict[str, Any]:
    """A new TCP connection every ``interval`` for ``duration``: who answered each, or why not.

    Open loop (each request in its own thread, sent on schedule), so requests
    stuck on a dead backend show as failures instead of slowing the stream down.
    A sample is (offset s, the first word of the reply: the echo pod's name, or
    the outcome of a failed attempt). A SYN nobody answers is ``connect-timeout``,
    apart from ``timeout`` (connected, no answer): only the first is a dead host.
    """
    start, t0 = time.time(), time.monotonic()
    samples: list[list[Any]] = []
    lock = threading.Lock()
    ready = Ready(a.ready_file, a.ready_after)
    settled = Settled(a.settled_file, a.settled_after)

    def one(offset: float) -> None:
        who = _stream_once(a.target, a.port, a.timeout)
        with lock:
            samples.append([round(offset, 4), who])
            if who in FAILED:
                settled.failed(offset)
            else:
                ready.answered()

    sent: list[tuple[float, threading.Thread]] = []
    k = 0
    while (due := k * a.interval) < a.duration:
        if a.stop_file and os.path.exists(a.stop_file):
            break
        with lock:
            ready.tick()
            settled.tick(time.monotonic() - t0, sent)
        time.sleep(max(0.0, due - (time.monotonic() - t0)))
        offset = time.monotonic() - t0
        t = threading.Thread(target=one, args=(offset,), daemon=True)
        t.start()
        sent.append((offset, t))
        k += 1
    for _, t in sent:
        t.join(a.timeout * 2 + 1)
    return {"start": start, "samples": sorted(samples)}


def hstream(a: argparse.Namespace) -> dict[str, Any]:
    """``stream`` over HTTP: each sample is (offset s, who answered or why not, latency s).

    Open loop like ``stream``: a slow (CPU-bound, throttled) backend makes
    latency grow instead of the request rate fall, which is what drives an
    autoscaler in the field.
    """
    start, t0 = time.time(), time.monotonic()
    samples: list[list[Any]] = []
    lock = threading.Lock()

    ready = Ready(a.ready_file, a.ready_after)

    def one(offset: float) -> None:
        began = time.monotonic()
        who = _http_once(a.target, a.port, a.path, a.timeout)
        with lock:
            samples.append([round(offset, 4), who, round(time.monotonic() - began, 4)])
            if who not in FAILED:
                ready.answered()

    threads = []
    k = 0
    while (due := k * a.interval) < a.duration:
        if a.stop_file and os.path.exists(a.stop_file):
            break
        with lock:
            ready.tick()
        time.sleep(max(0.0, due - (time.monotonic() - t0)))
        t = threading.Thread(target=one, args=(time.monotonic() - t0,), daemon=True)
        t.start()
        threads.append(t)
        k += 1
    for t in threads:
        t.join(a.timeout * 2 + 1)
    return {"start": start, "samples": sorted(samples)}


def _http_once(host: str, port: int, path: str, timeout: float) -> str:
    try:
        conn = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError:
        return CONNECT_TIMEOUT
    except OSError as exc:
        return classify(exc)
    with conn:
        try:
            conn.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            data = b""
            while chunk := conn.recv(4096):
                data += chunk
                if len(data) > MAX_REPLY:
                    break
        except OSError as exc:
            return classify(exc)
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n", 1)[0]:
        return APP_ERROR
    words = body.decode(errors="replace").split()
    return words[0] if words else APP_ERROR


def _stream_once(host: str, port: int, timeout: float) -> str:
    try:
        conn = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError:
        return CONNECT_TIMEOUT
    except OSError as exc:
        return classify(exc)
    with conn:
        try:
            conn.sendall(b"stream\n")
            words = _read_line(conn).split()
        except OSError as exc:
            return classify(exc)
    return words[0] if words else APP_ERROR


def _long_lived(
    conn: socket.socket | None, a: argparse.Namespace
) -> tuple[socket.socket | None, bool]:
    """One request on the flow's connection; (the connection to keep, answered?)."""
    try:
        if conn is None:
            conn = socket.create_connection((a.target, a.port), timeout=a.timeout)
            conn.settimeout(a.timeout)
            _read_line(conn)  # the echo workload's greeting
        conn.sendall(b"flow\n")
        if _read_line(conn):
            return conn, True
    except OSError:
        pass
    if conn is not None:
        conn.close()
    return None, False


def route_present(proc_net_route: str, subnet: str) -> bool:
    """Whether the main table (``/proc/net/route`` text) has a route for exactly ``subnet``."""
    net, _, plen = subnet.partition("/")
    want_dst = socket.inet_aton(net)[::-1].hex().upper()
    want_mask = (((1 << 32) - 1) << (32 - int(plen)) & 0xFFFFFFFF).to_bytes(4, "little").hex()
    for line in proc_net_route.splitlines()[1:]:
        f = line.split()
        if len(f) >= 8 and f[1].upper() == want_dst and f[7].upper() == want_mask.upper():
            return True
    return False


def routewait(a: argparse.Namespace) -> dict[str, Any]:
    """Poll the node's routes until ``subnet`` is present (or absent); epoch when it was."""
    deadline = time.monotonic() + a.deadline
    while time.monotonic() < deadline:
        with open("/proc/net/route") as f:
            if route_present(f.read(), a.subnet) == a.present:
                return {"subnet": a.subnet, "present": a.present, "at": time.time()}
        time.sleep(a.interval)
    return {"subnet": a.subnet, "present": a.present, "at": None}


def serve(a: argparse.Namespace) -> dict[str, Any]:
    """TCP greets ``NAME <peer>`` then echoes; UDP answers ``NAME <datagram>``; for ``duration``."""
    stop = time.monotonic() + a.duration
    tcp = socket.create_server((a.bind, a.port), reuse_port=False)
    tcp.settimeout(0.2)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((a.bind, a.port))
    udp.settimeout(0.2)
    threading.Thread(target=_serve_udp, args=(udp, a.name, stop), daemon=True).start()
    served = [0]
    while time.monotonic() < stop:
        try:
            conn, _ = tcp.accept()
        except OSError:
            continue
        threading.Thread(target=_serve_tcp, args=(conn, a.name, stop, served), daemon=True).start()
    return {"served_tcp": served[0]}


def _serve_tcp(conn: socket.socket, name: str, stop: float, served: list[int]) -> None:
    """Greet with ``NAME <peer>`` and echo, as ``harness.workloads.echo`` does."""
    with conn:
        conn.settimeout(max(0.1, stop - time.monotonic()))
        try:
            host, port = conn.getpeername()[:2]
            conn.sendall(f"{name} {host}:{port}\n".encode())
            served[0] += 1
            while chunk := conn.recv(MAX_REPLY):
                conn.sendall(chunk)
        except OSError:
            pass


def _serve_udp(sock: socket.socket, name: str, stop: float) -> None:
    """Answer from the address each datagram was sent to (IP_PKTINFO), as a connected
    client requires: a node has several addresses, and the route back to a pod
    would otherwise pick the bridge's."""
    sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    while time.monotonic() < stop:
        try:
            data, anc, _, peer = sock.recvmsg(65535, socket.CMSG_SPACE(12))
        except OSError:
            continue
        reply = f"{name} {data.decode(errors='replace')}".encode()
        cmsgs = []
        for level, kind, cdata in anc:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                _, _, dst = struct.unpack("I4s4s", cdata[:12])
                cmsgs = [(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("I4s4s", 0, dst, bytes(4)))]
        with contextlib.suppress(OSError):
            sock.sendmsg([reply], cmsgs, 0, peer)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="netcheck", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("probe")
    s.add_argument("--proto", choices=sorted(_ONE), required=True)
    _target(s)
    s.add_argument("--count", type=int, default=3)
    s.add_argument("--budget", type=float, default=10.0)
    s.add_argument("--wait", type=float, default=5.0, help="seconds to wait for an answer")
    s.add_argument("--payload", default="podlab-probe")
    s = sub.add_parser("rr")
    _target(s)
    s.add_argument("--count", type=int, default=200)
    s.add_argument("--warmup", type=int, default=5)
    s.add_argument("--no-banner", dest="banner", action="store_false")
    s = sub.add_parser("reach")
    s.add_argument("--targets", required=True, help="ip:port,ip:port,…")
    s.add_argument("--deadline", type=float, default=60.0)
    s.add_argument("--interval", type=float, default=0.05)
    s.add_argument("--timeout", type=float, default=0.2)
    s.add_argument(
        "--refused-ok",
        action="store_true",
        help="a refusal (RST) counts: the packet reached the target's kernel",
    )
    s = sub.add_parser("flow")
    s.add_argument("--proto", choices=sorted(_ONE), default="udp")
    _target(s)
    s.add_argument("--duration", type=float, default=20.0)
    s.add_argument("--interval", type=float, default=0.05)
    s.add_argument("--bucket", type=float, default=0.5)
    s.add_argument("--stop-file", default="", help="end early once this file exists")
    _ready(s)
    s = sub.add_parser("stream")
    _target(s)
    s.add_argument("--duration", type=float, default=10.0)
    s.add_argument("--interval", type=float, default=0.05)
    s.add_argument("--stop-file", default="", help="end early once this file exists")
    _ready(s)
    s.add_argument(
        "--settled-file",
        default="",
        help="create this file once a failed request was followed by "
        "--settled-after seconds of requests, all resolved, none failed",
    )
    s.add_argument("--settled-after", type=float, default=2.0, metavar="S")
    s = sub.add_parser("hstream")
    _target(s)
    s.add_argument("--path", default="/")
    s.add_argument("--duration", type=float, default=10.0)
    s.add_argument("--interval", type=float, default=0.05)
    s.add_argument("--stop-file", default="", help="end early once this file exists")
    _ready(s)
    s = sub.add_parser("routewait")
    s.add_argument("--subnet", required=True)
    s.add_argument("--absent", dest="present", action="store_false")
    s.add_argument("--deadline", type=float, default=60.0)
    s.add_argument("--interval", type=float, default=0.05)
    s = sub.add_parser("serve")
    s.add_argument("--bind", default="0.0.0.0")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--duration", type=float, default=30.0)
    return p


def _ready(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--ready-file",
        default="",
        help="create this file once a request was answered and --ready-after passed",
    )
    s.add_argument("--ready-after", type=float, default=0.0, metavar="S")


def _target(s: argparse.ArgumentParser) -> None:
    s.add_argument("--target", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--timeout", type=float, default=2.0)


COMMANDS = {"probe": probe, "rr": rr, "reach": reach, "flow": flow, "stream": stream,
            "hstream": hstream, "routewait": routewait, "serve": serve}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    print(json.dumps(COMMANDS[args.cmd](args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
