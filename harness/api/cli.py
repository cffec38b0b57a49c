"""`podlab` verbs of the api area: apply, get, delete (and ``exec_pod`` for ``exec pod/…``).

They follow kubectl's conventions (flags, output, messages) so muscle memory
works. Handlers return an exit status and raise PodlabError subclasses for
failures; ``harness.cli`` prints those. ``exec pod/NAME`` is routed here by the
top-level ``exec`` verb (owned by the lab area) through :func:`exec_pod`.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from harness.api import meshcli, output, wloutput
from harness.api.alloc import DEFAULT_SERVICE_CIDR as DEFAULT_CIDR
from harness.api.client import ApiClient, NotFoundError
from harness.api.exec import find_pod, parse_pod_ref, pod_exec_argv
from harness.api.objects import DEFAULT_NAMESPACE, DERIVED, KINDS, KindInfo, kind_for_alias
from harness.api.target import Target, resolve_target
from harness.api.validate import Located, load_documents, validate_documents
from harness.errors import LabError, UserError
from harness.store import Store, StoreError, StoreUnreachable

NODE_WORDS = ("nodes", "node", "no")
TABLES = {**output.TABLES, **wloutput.TABLES}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this area's verbs to the `podlab` parser."""
    p = sub.add_parser("apply", help="create or update objects from manifest files")
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        metavar="FILE",
        help="manifest (multi-document YAML); '-' reads stdin; repeatable",
    )
    _target_args(p)
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--clusters",
        metavar="C1,C2",
        help="apply to each of these clusters of the lab, or to none (federation)",
    )
    where.add_argument(
        "--mesh", metavar="NAME", help="apply to every cluster of mesh NAME, or to none"
    )
    p.add_argument(
        "--allow-conflict",
        action="store_true",
        help="export a Service even where it conflicts with another cluster's export "
        "(KEP-1645: the oldest export wins, every export is marked in conflict)",
    )
    p.set_defaults(func=hinted(cmd_apply))

    p = sub.add_parser("get", help="list pods or nodes of a cluster")
    p.add_argument("resource", help="pods|pod|po|nodes|node|no, or pod/NAME")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("-o", "--output", choices=("wide", "yaml", "json", "name"))
    _namespace_args(p, all_namespaces=True)
    _target_args(p)
    p.add_argument(
        "--all-clusters",
        action="store_true",
        help="services of every cluster of the lab, with each backend's cluster",
    )
    p.set_defaults(func=hinted(cmd_get))

    p = sub.add_parser("delete", help="delete objects by name or by manifest")
    p.add_argument("resource", nargs="?", help="pod|pods|po, or pod/NAME")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("-f", "--filename", action="append", metavar="FILE")
    p.add_argument(
        "--wait", action="store_true", help="wait until the node agent has torn each pod down"
    )
    p.add_argument("--timeout", type=float, default=60.0, help="seconds --wait waits (60)")
    p.add_argument(
        "--grace-period",
        type=int,
        metavar="S",
        help="seconds a pod gets to stop after SIGTERM (default: its "
        "terminationGracePeriodSeconds, else 30); 0 removes it at once",
    )
    p.add_argument("--ignore-not-found", action="store_true")
    _namespace_args(p, all_namespaces=False)
    _target_args(p)
    p.set_defaults(func=hinted(cmd_delete))


def _target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lab", help="lab name (default: the only lab that is up)")
    p.add_argument("--cluster", help="cluster name (default: the lab's only cluster)")
    p.add_argument("--etcd", metavar="URL", help="etcd endpoint, bypassing lab discovery")


def _namespace_args(p: argparse.ArgumentParser, all_namespaces: bool) -> None:
    p.add_argument("-n", "--namespace", default=DEFAULT_NAMESPACE)
    if all_namespaces:
        p.add_argument("-A", "--all-namespaces", action="store_true")


def hinted(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``handler`` with the usual cause named when the cluster's etcd does not answer."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except StoreUnreachable as exc:
            hint = "(is the lab up and deployed? `podlab up`, `podlab deploy`)"
            raise LabError(f"{exc} {hint}") from exc

    return run


def connect(args: argparse.Namespace, timeout: float = 5.0) -> tuple[ApiClient, Target]:
    """The client for the cluster the flags (or the lab on disk) name; ``timeout`` per
    etcd call."""
    target = resolve_target(
        getattr(args, "lab", None), getattr(args, "cluster", None), getattr(args, "etcd", None)
    )
    cidr = ipaddress.IPv4Network(target.service_cidr) if target.service_cidr else None
    try:
        store = Store([target.etcd_url], timeout=timeout)
    except StoreError as exc:
        raise UserError(f"{exc} (fix: --etcd http://HOST:2379)") from exc
    client = ApiClient(store, target.cluster, service_cidr=cidr or DEFAULT_CIDR)
    return client, target


def read_manifests(files: list[str]) -> list[Located]:
    """Load and validate every file; all problems of all files in one UserError."""
    docs, problems = [], []
    for name in files:
        label = "<stdin>" if name == "-" else name
        try:
            text = sys.stdin.read() if name == "-" else Path(name).read_text()
        except OSError as exc:
            raise UserError(f"cannot read {name}: {exc.strerror}") from exc
        try:
            docs.extend(load_documents(text, label))
        except UserError as exc:
            problems.extend(exc.problems)
    located, found = validate_documents(docs)
    problems.extend(found)
    if problems:
        raise UserError(problems)
    if not located:
        raise UserError(f"no objects in {', '.join(files)}")
    return located


def cmd_apply(args: argparse.Namespace) -> int:
    objects = read_manifests(args.filename)
    if args.clusters or args.mesh:
        if args.cluster or args.etcd:
            raise UserError("--clusters/--mesh name the clusters: drop --cluster and --etcd")
        clusters = meshcli.clusters_of(args.lab, args.clusters, args.mesh)
        for cluster, result in meshcli.apply_many(args.lab, clusters, objects, args.allow_conflict):
            print(f"{result.ref} {result.action} (cluster {cluster})")
        return 0
    client, _ = connect(args)
    for result in client.apply(objects, args.allow_conflict):
        print(f"{result.ref} {result.action}")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    word, names = _split_ref(args.resource, args.names)
    now = time.time()
    if args.all_clusters:
        return _get_all_clusters(args, word, names)
    if word.lower() in NODE_WORDS:
        return _get_nodes(connect(args)[0], names, args.output, now)
    if "," in word:
        return _get_several(args, word.split(","), names, now)
    info = _kind(word)
    client, _ = connect(args)
    ns = None if args.all_namespaces or not info.namespaced else args.namespace
    if names:
        items = [client.get(info, args.namespace, n) for n in names]
    else:
        items = client.list_objects(info, ns)
    single = len(names) == 1
    if args.output in ("json", "yaml"):
        print(output.dump(items[0] if single else output.as_list(items), args.output))
    elif args.output == "name":
        if items:
            print(output.names(info.kind.lower(), items))
    elif not items:
        where = "" if ns is None else f" in {ns} namespace"
        print(f"No resources found{where}.", file=sys.stderr)
    else:
        print(TABLES[info.kind](items, now, args.output == "wide", ns is None))
    return 0


def _get_several(args: argparse.Namespace, words: list[str], names: list[str], now: float) -> int:
    """``get deployments,replicasets``: one table per kind, names as ``KIND.GROUP/NAME``."""
    if names:
        raise UserError("name objects of one kind at a time (fix: podlab get deploy/NAME)")
    infos = [_kind(w) for w in words if w]
    client, _ = connect(args)
    tables, lists = [], []
    for info in infos:
        ns = None if args.all_namespaces or not info.namespaced else args.namespace
        items = client.list_objects(info, ns)
        lists += items
        prefix = info.kind.lower() + (f".{info.group}" if info.group else "")
        shown = [{**i, "metadata": {**i["metadata"], "name": f"{prefix}/{i['metadata']['name']}"}}
                 for i in items]  # fmt: skip
        if shown and args.output not in ("json", "yaml", "name"):
            tables.append(TABLES[info.kind](shown, now, args.output == "wide", ns is None))
        elif shown and args.output == "name":
            tables.append("\n".join(i["metadata"]["name"] for i in shown))
    if args.output in ("json", "yaml"):
        print(output.dump(output.as_list(lists), args.output))
    elif tables:
        print(("\n" if args.output == "name" else "\n\n").join(tables))
    else:
        print(f"No resources found in {args.namespace} namespace.", file=sys.stderr)
    return 0


def _get_all_clusters(args: argparse.Namespace, word: str, names: list[str]) -> int:
    if _kind(word).kind != "Service":
        raise UserError("--all-clusters lists services (fix: podlab get services --all-clusters)")
    if args.cluster or args.etcd:
        raise UserError("--all-clusters reads every cluster: drop --cluster and --etcd")
    rows = []
    for cluster, kv in meshcli.all_clusters(args.lab):
        rows += meshcli.service_rows(cluster, kv)
    if not args.all_namespaces:
        rows = [r for r in rows if r["namespace"] == args.namespace]
    if names:
        rows = [r for r in rows if r["name"] in names]
    if args.output in ("json", "yaml"):
        print(output.dump({"apiVersion": "v1", "kind": "List", "items": rows}, args.output))
    elif not rows:
        print("No resources found.", file=sys.stderr)
    else:
        print(meshcli.services_table(rows))
    return 0


def _get_nodes(client: ApiClient, names: list[str], fmt: str | None, now: float) -> int:
    nodes = client.nodes()
    if names:
        missing = [n for n in names if n not in {x.name for x in nodes}]
        if missing:
            raise NotFoundError(f'nodes "{missing[0]}" not found')
        nodes = [n for n in nodes if n.name in names]
    if fmt in ("json", "yaml"):
        items = [output.node_object(n, now) for n in nodes]
        print(output.dump(items[0] if len(names) == 1 else output.as_list(items), fmt))
    elif fmt == "name":
        if nodes:
            print("\n".join(f"node/{n.name}" for n in nodes))
    elif not nodes:
        print("No resources found.", file=sys.stderr)
    else:
        print(output.nodes_table(nodes, now, fmt == "wide"))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    targets: list[tuple[KindInfo, str, str]] = []
    if args.filename:
        if args.resource:
            raise UserError("give either -f FILE or KIND NAME, not both")
        for loc in read_manifests(args.filename):
            targets.append((loc.info, loc.obj.metadata.namespace, loc.obj.metadata.name))
    else:
        if not args.resource:
            raise UserError("nothing to delete (fix: podlab delete pod NAME, or -f FILE)")
        word, names = _split_ref(args.resource, args.names)
        if not names:
            raise UserError(f"name the {word} to delete (fix: podlab delete {word} NAME)")
        info = _kind(word)
        targets = [(info, args.namespace, n) for n in names]
    for info, _, name in targets:
        if info.kind in DERIVED:
            raise UserError(
                f"{info.kind.lower()}/{name} is derived by the cluster mesh and cannot be "
                "deleted (fix: delete the ServiceExports it comes from)"
            )
    if args.grace_period is not None and args.grace_period < 0:
        raise UserError(f"--grace-period {args.grace_period} is negative (fix: 0 or more seconds)")
    client, _ = connect(args)
    missing, gone = [], []
    for info, ns, name in targets:
        if client.delete(info, ns, name, args.grace_period):
            print(f'{info.kind.lower()} "{name}" deleted')
            gone.append((ns, name))
        elif not args.ignore_not_found:
            missing.append(f'{info.plural} "{name}" not found in namespace {ns}')
    if args.wait and gone:
        late = client.wait_gone(gone, args.timeout)
        if late:
            raise LabError(
                f"after {args.timeout:g}s the node agent still has not torn down: {', '.join(late)}"
            )
    if missing:
        raise NotFoundError("; ".join(missing))
    return 0


def exec_pod(args: argparse.Namespace) -> int:
    """``podlab exec pod/NAME [-n NS] -- CMD…``: the remote command's exit status.

    Routed here by the ``exec`` verb. Reads the pod from ``args.target`` (or
    ``args.node``) and the rest from ``args.command`` (or ``args.cmd``): options
    before ``--`` (``-n/--namespace``, ``--cluster``, ``--etcd``, ``--lab``,
    ``-i/--stdin``, ``-t/--tty``) are parsed here, so the routing parser needs
    no pod-specific flags; attributes of ``args`` with those names are defaults.
    """
    return hinted(_exec_pod)(args)


def _exec_pod(args: argparse.Namespace) -> int:
    name = parse_pod_ref(getattr(args, "target", None) or args.node)
    raw = list(getattr(args, "command", None) or getattr(args, "cmd", None) or [])
    opts, command = exec_options(raw, args)
    if not command:
        raise UserError("no command given (fix: podlab exec pod/NAME -- CMD ARGS…)")
    client, target = connect(opts)
    pod = find_pod(client, target.lab_dir, opts.namespace, name)
    argv = pod_exec_argv(pod, command, stdin=opts.stdin, tty=opts.tty)
    ssh = shutil.which(argv[0])
    if ssh is None:
        raise UserError("ssh client not found (install openssh-client)")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(ssh, argv)  # streams, terminal and exit status are the command's
    return 127  # not reached


def exec_options(
    raw: list[str], defaults: argparse.Namespace
) -> tuple[argparse.Namespace, list[str]]:
    """Split ``[-n NS …] -- CMD…`` into options (over ``defaults``) and the command."""
    before, after = (
        (raw[: raw.index("--")], raw[raw.index("--") + 1 :]) if "--" in raw else ([], raw)
    )
    p = argparse.ArgumentParser(prog="podlab exec pod/NAME", add_help=False, exit_on_error=False)
    p.add_argument("-n", "--namespace", default=getattr(defaults, "namespace", None))
    p.add_argument("--cluster", default=getattr(defaults, "cluster", None))
    p.add_argument("--etcd", default=getattr(defaults, "etcd", None))
    p.add_argument("--lab", default=getattr(defaults, "lab", None))
    p.add_argument("-i", "--stdin", action="store_true", default=getattr(defaults, "stdin", False))
    p.add_argument("-t", "--tty", action="store_true", default=getattr(defaults, "tty", False))
    try:
        opts, unknown = p.parse_known_args(before)
    except argparse.ArgumentError as exc:
        raise UserError(f"exec: {exc} (fix: podlab exec pod/NAME [-n NS] -- CMD…)") from exc
    if unknown:
        raise UserError(f"exec: unknown option {unknown[0]} (fix: put the command after --)")
    opts.namespace = opts.namespace or DEFAULT_NAMESPACE
    return opts, after


def is_pod_ref(word: str) -> bool:
    """True for ``pod/NAME``-style words, which ``podlab exec`` routes to exec_pod."""
    kind, sep, _ = word.partition("/")
    return bool(sep) and kind.lower() in KINDS["Pod"].aliases


def _split_ref(resource: str, names: list[str]) -> tuple[str, list[str]]:
    """``pod/a pod/b`` → ("pod", ["a", "b"]); ``pods a b`` → ("pods", ["a", "b"])."""
    if "/" not in resource:
        return resource, list(names)
    refs = [resource, *names]
    split = [r.partition("/") for r in refs]
    kinds = {kind_for_alias(k) or k for k, _, _ in split}
    if any(not sep or not name for _, sep, name in split) or len(kinds) != 1:
        raise UserError(f"give TYPE/NAME arguments of one type, or TYPE NAME…: {' '.join(refs)}")
    return split[0][0], [name for _, _, name in split]


def _kind(word: str) -> KindInfo:
    info = kind_for_alias(word)
    if info is None:
        known = ", ".join([*sorted(a for i in KINDS.values() for a in i.aliases), *NODE_WORDS])
        raise UserError(f"unknown resource type {word!r} (fix: use one of {known})")
    return info
