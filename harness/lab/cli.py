"""`podlab` verbs of the lab area: up, down, status, exec, ssh, cleanup, preflight, graph."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from harness.errors import UserError
from harness.lab.backend import BACKEND_NAMES, UpRequest, UpResult, backends

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this area's verbs to the `podlab` parser."""
    p = sub.add_parser("up", help="build a lab from a topology file")
    p.add_argument("file", help="containerlab topology file")
    p.add_argument("--backend", choices=BACKEND_NAMES, default="netns")
    p.add_argument("--inventory", type=Path, help="inventory of existing hosts (ssh backend)")
    p.set_defaults(func=_up)

    p = sub.add_parser("down", help="remove a lab and everything it made")
    p.add_argument("lab", nargs="?", help="lab name or topology file (default: the only lab)")
    p.set_defaults(func=_down)

    p = sub.add_parser("status", help="labs, nodes, management addresses, state")
    p.add_argument("lab", nargs="?", help="only this lab")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=_status)

    p = sub.add_parser("exec", help="run a command inside a node's namespaces, or a pod's")
    p.add_argument("node", help="a node name, or pod/NAME (as kubectl exec)")
    p.add_argument("--lab", help="lab of the node (needed only if several labs have it)")
    # kubectl's stream flags, also before the pod (`exec -it pod/x -- sh`); a node
    # command always has the caller's stdin and terminal
    p.add_argument("-i", "--stdin", action="store_true", help="pod: pass stdin to the command")
    p.add_argument("-t", "--tty", action="store_true", help="pod: give the command a terminal")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- command and arguments")
    p.set_defaults(func=_exec)

    p = sub.add_parser("ssh", help="ssh to a node with the lab's key")
    p.add_argument("node")
    p.add_argument("--lab", help="lab of the node (needed only if several labs have it)")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="optional remote command")
    p.set_defaults(func=_ssh)

    p = sub.add_parser("cleanup", help="remove stale labs (crashed ups, dead labs) by marker")
    p.add_argument("--quiet", action="store_true", help="print only what was removed")
    p.set_defaults(func=_cleanup)

    p = sub.add_parser("preflight", help="kernel features and tools labs and modes need")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=_preflight)

    p = sub.add_parser("image", help="the VM guest image: build it, list the cache")
    p.add_argument(
        "action",
        choices=("build", "list", "prune"),
        help="build (if not cached) | list | prune (images no recipe or lab uses)",
    )
    p.add_argument(
        "--extra-package",
        action="append",
        default=[],
        metavar="PKG",
        help="a further Debian package in the image (changes its key)",
    )
    p.set_defaults(func=_image)

    p = sub.add_parser("graph", help="Mermaid picture of a lab's nodes, segments, clusters")
    p.add_argument("lab", help="topology file, or the name of a lab that is up")
    p.add_argument("-o", "--output", type=Path, help="write to FILE instead of stdout")
    p.set_defaults(func=_graph)


def _up(args: argparse.Namespace) -> int:
    backend = backends()[args.backend]()
    if args.backend == "ssh":
        if not args.inventory:
            raise UserError("--backend ssh needs --inventory FILE")
        return _show_up(backend.up(UpRequest(file=Path(args.file), inventory=args.inventory)))
    if args.backend == "containerlab":
        return _show_up(backend.up(UpRequest(file=Path(args.file))))
    from harness.plan.build import load_plan

    plan = load_plan(args.file)  # the backend runs the full preflight itself
    # No auto-refresh: the backend forks, and forking beside a refresh thread is unsafe.
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        auto_refresh=False,
        transient=True,
    ) as bar:
        task = bar.add_task(f"up {plan.name}", total=None)

        def progress(phase: str, done: int, total: int) -> None:
            bar.update(task, description=f"up {plan.name}: {phase}", completed=done, total=total)
            bar.refresh()

        result = backend.up(UpRequest(file=Path(args.file), plan=plan, progress=progress))
    return _show_up(result)


def _show_up(result: UpResult) -> int:
    for note in result.notes:
        err.print(note)
    if result.rows:
        table = Table(title=f"lab {result.lab} ({result.backend})")
        for col in ("node", "role", "cluster", "mgmt IP", "underlay IP", "state"):
            table.add_column(col)
        for r in result.rows:
            table.add_row(r.node, r.role, r.cluster, r.mgmt, r.underlay, r.state)
        out.print(table)
    if result.inventory:
        out.print(f"inventory: {result.inventory}")
    if result.backend in ("netns", "vm"):
        from harness.lab import state

        cfg = state.find(result.lab).ssh_config
        out.print(f"ssh: ssh -F {cfg} NODE    exec: podlab exec NODE -- CMD")
    return 0 if all(r.state == "up" for r in result.rows) else 1


def _lab_name(arg: str | None) -> str:
    """The lab podlab knows: a containerlab name (``K8s_Lab``) maps to its derived one."""
    from harness.lab import status
    from harness.topology.load import derived_name

    if arg is None:
        return status.only_lab()
    path = Path(arg)
    if path.is_file():
        import yaml

        try:
            name = (yaml.safe_load(path.read_text()) or {}).get("name")
        except yaml.YAMLError as exc:
            raise UserError(f"{path}: not YAML: {exc}") from exc
        if not isinstance(name, str | int) or isinstance(name, bool) or name == "":
            raise UserError(f"{path}: no lab `name:` in this file")
        return derived_name(str(name))
    return derived_name(arg)


def _down(args: argparse.Namespace) -> int:
    from harness.lab import netns

    name = _lab_name(args.lab)
    report = netns.down(name)
    out.print(
        f"lab {name} down: {len(report.processes)} processes, "
        f"{len(report.netns)} namespaces, {len(report.links)} host links removed"
    )
    for problem in report.problems:
        err.print(f"error: {problem}")
    return 1 if report.problems else 0


def _status(args: argparse.Namespace) -> int:
    from harness.lab import status
    from harness.topology.load import derived_name

    data = status.lab_status(derived_name(args.lab) if args.lab else None)
    if args.format == "json":
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    if not data["labs"]:
        out.print("no labs")
        return 0
    for lab in data["labs"]:
        vm = lab["backend"] == "vm"
        title = f"lab {lab['lab']}: {lab['state']}, {lab['backend']} ({lab['lab_dir']})"
        table = Table(title=title)
        cols = ["node", "role", "cluster", "mgmt IP", "underlay IP", "state"]
        for col in cols + (["accel", "kernel", "MiB"] if vm else []):
            table.add_column(col)
        for n in lab["nodes"]:
            node = f"{n['node']} ({n['clab_name']})" if n.get("clab_name") else n["node"]
            row = [node, n["role"], n["cluster"], n["mgmt"], n["underlay"], n["state"]]
            if vm:
                accel = "TCG (emulated)" if n["emulated"] else str(n["accel"]).upper()
                row += [accel, n["kernel"], str(n["memory_mb"])]
            table.add_row(*(v or "-" for v in row))
        out.print(table)
    return 0


def _command(args: argparse.Namespace) -> list[str]:
    """The command after ``--``; also accepts ``--lab L`` written after the node name
    (argparse's REMAINDER would otherwise swallow it into the command)."""
    raw = list(args.cmd)
    if len(raw) >= 2 and raw[0] == "--lab":
        args.lab = raw[1]
        raw = raw[2:]
    elif raw and raw[0].startswith("--lab="):
        args.lab = raw[0].split("=", 1)[1]
        raw = raw[1:]
    return raw[1:] if raw and raw[0] == "--" else raw


def _exec(args: argparse.Namespace) -> int:
    from harness.api.cli import exec_pod, is_pod_ref
    from harness.lab import cgroup, nodeinit, status

    if is_pod_ref(args.node):  # `podlab exec pod/NAME -- CMD`, as kubectl exec
        return exec_pod(args)

    cmd = _command(args) or [os.environ.get("SHELL", "/bin/bash")]
    ref = status.find_node(args.node, args.lab)
    if ref.ledger.nodes[ref.node].is_vm:  # a guest has its own kernel: go in over ssh
        ssh = shutil.which("ssh")
        if ssh is None:
            raise UserError("ssh client not found (install openssh-client)")
        tty = ["-t"] if sys.stdin.isatty() else []
        os.execv(ssh, ["ssh", *tty, "-F", str(ref.paths.ssh_config), ref.node, "--", *cmd])
    pid = ref.pid
    sys.stdout.flush()
    sys.stderr.flush()
    nodeinit.enter_node(pid, cgroup.node_procs(ref.lab, ref.node))
    return run_in_node(cmd)


def run_in_node(cmd: list[str]) -> int:
    """Fork into the node's PID namespace (entered by ``enter_node``), run ``cmd`` there
    and return its exit status (128 + N when signal N ended it, as a shell reports).

    The child keeps the terminal and stdin; this process only waits, ignoring the
    terminal's SIGINT/SIGQUIT (the command gets them) and passing SIGTERM/SIGHUP on.
    """
    child = os.fork()
    if child == 0:  # pragma: no cover - forked child, in the node's pid namespace
        try:
            os.execvp(cmd[0], cmd)
        except OSError as exc:
            os.write(2, f"podlab exec: {cmd[0]}: {exc.strerror}\n".encode())
            os._exit(127 if isinstance(exc, FileNotFoundError) else 126)
    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: os.kill(child, signum))
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _ssh(args: argparse.Namespace) -> int:
    from harness.lab import status

    cmd = _command(args)
    ref = status.find_node(args.node, args.lab)
    ssh = shutil.which("ssh")
    if ssh is None:
        raise UserError("ssh client not found (install openssh-client)")
    os.execv(ssh, ["ssh", "-F", str(ref.paths.ssh_config), args.node, *cmd])
    return 127  # not reached


def _cleanup(args: argparse.Namespace) -> int:
    from harness.lab import cleanup

    report = cleanup.cleanup()
    lines = report.lines()
    if args.quiet:
        lines = [line for line in lines if line != "nothing stale" and "left alone" not in line]
    for line in lines:
        out.print(line)
    for problem in report.problems:
        err.print(f"error: {problem}")
    return 1 if report.problems else 0


def _preflight(args: argparse.Namespace) -> int:
    from harness.lab import preflight

    report = preflight.preflight()
    if args.format == "json":
        print(json.dumps(report.as_dict(), indent=2, sort_keys=True))
    else:
        table = Table(title="podlab preflight")
        for col in ("check", "kind", "ok", "detail"):
            table.add_column(col)
        for c in report.checks:
            mark = "[green]yes[/]" if c.ok else ("[red]NO[/]" if c.required else "[yellow]no[/]")
            table.add_row(c.name, c.kind, mark, c.detail)
        out.print(table)
    return 0 if all(c.ok for c in report.checks if c.required) else 1


def _image(args: argparse.Namespace) -> int:
    from harness.lab.image import build, recipe

    if args.action == "list":
        table = Table(title=f"podlab guest images ({recipe.cache_root()})")
        for col in ("key", "current", "kernel", "built", "build s", "disk MB"):
            table.add_column(col)
        current = recipe.key()
        for image in build.cached_images():
            info = image.info()
            size = int(str(info.get("disk_bytes", 0))) // 2**20
            table.add_row(image.key, "yes" if image.key == current else "",
                          str(info.get("kernel_release")), str(info.get("built_at")),
                          str(info.get("build_s")), str(size))  # fmt: skip
        out.print(table)
        return 0
    if args.action == "prune":
        from harness.lab import state
        from harness.lab.state import Ledger

        in_use = {recipe.key()}
        for paths in state.known_labs().values():
            try:
                in_use.add(Ledger.load(paths).image or "")
            except UserError:
                continue
        removed = build.prune(keep=in_use)
        out.print(f"removed {len(removed)} cached images: {', '.join(removed) or '-'}")
        return 0
    packages = recipe.PACKAGES + tuple(args.extra_package)
    image, built = build.ensure(log=lambda msg: err.print(msg), packages=packages)
    info = image.info()
    what = f"built in {info['build_s']} s" if built else "cached"
    out.print(f"image {image.key} ({what}): {image.root}")
    return 0


def _graph(args: argparse.Namespace) -> int:
    from harness.lab import graph

    text = graph.mermaid(graph.plan_for(args.lab))
    if args.output:
        args.output.write_text(text)
        out.print(f"wrote {args.output}")
    else:
        print(text, end="")
    return 0
