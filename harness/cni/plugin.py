"""``podlab-cni``: the CNI plugin executable (CNI_COMMAND in the environment, config on stdin).

A runtime (podman, or podlab's own agent) runs it once per operation:

1. the fast path forwards the call, untouched, over ``agentSocket`` (default
   ``/run/podlab/cni.sock``) to the node agent's CNI server, which validates it
   (skel's checks, ``spec.py``) and runs the handler (``handler.py``) in a
   process that has its libraries loaded, and prints what the server answers;
2. if no server answers (agent stopped, socket missing), it does the same
   in-process: same checks, same handler, same output, slower start (pyroute2
   alone takes ~0.1 s to import), so DEL and GC also work while the agent is down.

The fast path imports only ``os``, ``sys`` and ``_socket``: no ``json`` (which
pulls in ``re`` and ``enum``), not even ``socket``. Its start-up is paid on
every pod (``bench/bench_cni.py`` prints it). Errors are JSON on stdout with
exit status 1, as libcni expects.

Wire format to the server (one connection per call): a header line
``podlab-cni 1 <env bytes>``, the ``CNI_*`` variables as ``KEY=VALUE`` joined
by NUL, then stdin until the client shuts its side down. The answer: the exit
status on the first line, then exactly the bytes to print.
"""

from __future__ import annotations

import os
import sys

ABOUT = "podlab-cni: podlab's pod network (Flannel-style bridge or Calico-style routed)"
DEFAULT_SOCKET = "/run/podlab/cni.sock"
#: An ADD on a loaded node can take seconds; a runtime's own timeout is the real bound.
FORWARD_TIMEOUT_S = 300.0


def socket_path(stdin: bytes) -> str | None:
    """``agentSocket`` from the configuration without a JSON parser (the fast path).

    None means "do not forward" (an empty value) or "cannot tell" (an escaped
    string): the in-process path then parses the configuration properly.
    """
    key = stdin.find(b'"agentSocket"')
    if key < 0:
        return DEFAULT_SOCKET
    i = stdin.find(b":", key + 13)
    if i < 0:
        return None
    rest = stdin[i + 1 :].lstrip()
    if not rest.startswith(b'"'):
        return None
    end = rest.find(b'"', 1)
    value = rest[1:end] if end > 0 else b"\\"
    return None if b"\\" in value or not value else value.decode()


def forward(path: str, env: dict[str, str], stdin: bytes) -> tuple[int, bytes] | None:
    """One call through the agent's CNI server: (exit status, stdout); None if none listens."""
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(FORWARD_TIMEOUT_S)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        cni = "\0".join(f"{k}={v}" for k, v in env.items() if k.startswith("CNI_")).encode()
        sock.sendall(b"podlab-cni 1 %d\n" % len(cni) + cni + stdin)
        sock.shutdown(_socket.SHUT_WR)
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    finally:
        sock.close()
    head, _, out = b"".join(chunks).partition(b"\n")
    if not head.strip().isdigit():
        return 1, _server_gone(path)
    return int(head), out


def _server_gone(path: str) -> bytes:
    import json

    from harness.cni import spec

    err = spec.CniError(
        spec.TRY_AGAIN_LATER,
        f"podlab-agent's CNI server at {path} closed the connection without an answer",
        "retry; the agent may be restarting",
    )
    return json.dumps(err.to_json()).encode()


def run(env: dict[str, str], stdin: bytes) -> tuple[int, bytes]:
    """One invocation: (exit status, what to print on stdout)."""
    if env.get("CNI_COMMAND") != "VERSION":
        path = socket_path(stdin)
        if path:
            try:
                answer = forward(path, env, stdin)
            except OSError:  # the server took the call and broke off: not safe to redo here
                return 1, _server_gone(path)
            if answer is not None:
                return answer
    return run_here(env, stdin)


def run_here(env: dict[str, str], stdin: bytes) -> tuple[int, bytes]:
    """The call worked out in this process (VERSION, or no server): same checks, same output."""
    import json

    from harness.cni import spec

    text = stdin.decode(errors="replace")
    version = spec.CURRENT
    try:
        conf = json.loads(text)
        if isinstance(conf, dict) and isinstance(conf.get("cniVersion"), str):
            version = conf["cniVersion"] or version
    except ValueError:
        pass
    try:
        req = spec.request_from_env(env, text)
        if req.command == "VERSION":
            return 0, json.dumps(spec.version_result(text)).encode()
        from harness.cni.handler import handle  # pyroute2 and friends: the slow part

        result = handle(req)
        return 0, b"" if result is None else json.dumps(result).encode()
    except spec.CniError as exc:
        return 1, json.dumps(exc.to_json(version)).encode()
    except OSError as exc:
        err = spec.CniError(spec.IO_FAILURE, f"I/O failure: {exc}")
        return 1, json.dumps(err.to_json(version)).encode()
    except Exception as exc:  # a bug: still a CNI error the runtime can parse
        import traceback

        traceback.print_exc(file=sys.stderr)
        err = spec.CniError(spec.INTERNAL, f"internal error in podlab-cni: {exc!r}")
        return 1, json.dumps(err.to_json(version)).encode()


def main() -> int:
    env = dict(os.environ)
    stdin = b""
    if not env.get("CNI_COMMAND"):  # a human, most likely: say what this is
        from harness.cni.spec import VERSIONS

        print(ABOUT, file=sys.stderr)
        print(f"CNI protocol versions supported: {', '.join(VERSIONS)}", file=sys.stderr)
    else:
        try:
            stdin = sys.stdin.buffer.read()
        except OSError as exc:
            return _io_error(exc)
    code, out = run(env, stdin)
    if out:
        sys.stdout.buffer.write(out.rstrip(b"\n") + b"\n")
    return code


def _io_error(exc: OSError) -> int:
    import json

    from harness.cni import spec

    err = spec.CniError(spec.IO_FAILURE, f"error reading from stdin: {exc}")
    print(json.dumps(err.to_json()))
    return 1


if __name__ == "__main__":
    sys.exit(main())
