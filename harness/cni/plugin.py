"""``podlab-cni``: the CNI plugin executable (CNI_COMMAND in the environment, config on stdin).

A runtime (podman, or podlab's own agent) runs it once per operation. It
validates the environment and the configuration (skel's checks, spec.py), then:

1. forwards the call over ``agentSocket`` (default ``/run/podlab/cni.sock``) to
   the node agent's CNI server, which runs the very same handler
   (``handler.py``) in a thread of a process that has its libraries loaded;
2. if no server answers (agent stopped, socket missing), runs the handler
   in-process. Same result, slower start (pyroute2 alone takes ~0.1 s to
   import), so DEL and GC also work while the agent is down.

This module imports only the standard library and ``spec.py``: its start-up is
paid on every pod (``bench/bench_cni.py`` prints it). Errors are JSON on stdout
with exit status 1, as libcni expects.
"""

from __future__ import annotations

import json
import os
import socket
import sys

from harness.cni import spec

ABOUT = "podlab-cni: podlab's pod network (Flannel-style bridge or Calico-style routed)"
DEFAULT_SOCKET = "/run/podlab/cni.sock"
#: An ADD on a loaded node can take seconds; a runtime's own timeout is the real bound.
FORWARD_TIMEOUT_S = 300.0


def _config_version(stdin: str) -> str:
    try:
        conf = json.loads(stdin)
        version = conf.get("cniVersion") if isinstance(conf, dict) else None
        return version if isinstance(version, str) and version else spec.CURRENT
    except ValueError:
        return spec.CURRENT


def forward(path: str, env: dict[str, str], stdin: str) -> tuple[int, str] | None:
    """Send one call to the agent's CNI server: (exit status, stdout), or None if none listens."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(FORWARD_TIMEOUT_S)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        sock.sendall(json.dumps({"env": env, "stdin": stdin}).encode())
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    finally:
        sock.close()
    if not chunks:
        raise spec.CniError(
            spec.TRY_AGAIN_LATER,
            f"podlab-agent's CNI server at {path} closed the connection without an answer",
            "retry; the agent may be restarting",
        )
    answer = json.loads(b"".join(chunks))
    return int(answer["exit"]), str(answer["stdout"])


def run(env: dict[str, str], stdin: str) -> tuple[int, str]:
    """One invocation: (exit status, what to print on stdout)."""
    version = _config_version(stdin)
    try:
        req = spec.request_from_env(env, stdin)
        if req.command == "VERSION":
            return 0, json.dumps(spec.version_result(stdin))
        conf = spec.parse_config(req)
        path = conf.get("agentSocket", DEFAULT_SOCKET)
        if isinstance(path, str) and path:
            cni_env = {k: v for k, v in env.items() if k.startswith("CNI_")}
            answer = forward(path, cni_env, stdin)
            if answer is not None:
                return answer
        from harness.cni.handler import handle  # the slow path: pyroute2 and friends

        result = handle(req)
        return 0, "" if result is None else json.dumps(result)
    except spec.CniError as exc:
        return 1, json.dumps(exc.to_json(version))
    except OSError as exc:
        err = spec.CniError(spec.IO_FAILURE, f"I/O failure: {exc}")
        return 1, json.dumps(err.to_json(version))
    except Exception as exc:  # a bug: still a CNI error the runtime can parse
        import traceback

        traceback.print_exc(file=sys.stderr)
        err = spec.CniError(spec.INTERNAL, f"internal error in podlab-cni: {exc!r}")
        return 1, json.dumps(err.to_json(version))


def main() -> int:
    env = dict(os.environ)
    stdin = ""
    if not env.get("CNI_COMMAND"):  # a human, most likely: say what this is
        print(ABOUT, file=sys.stderr)
        print(f"CNI protocol versions supported: {', '.join(spec.VERSIONS)}", file=sys.stderr)
    else:
        try:
            stdin = sys.stdin.read()
        except (OSError, UnicodeDecodeError) as exc:
            err = spec.CniError(spec.IO_FAILURE, f"error reading from stdin: {exc}")
            print(json.dumps(err.to_json()))
            return 1
    code, out = run(env, stdin)
    if out:
        sys.stdout.write(out + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
