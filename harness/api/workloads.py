"""``podlab rollout``, ``podlab scale`` and ``podlab top``: kubectl's workload verbs.

- ``rollout status deployment/NAME [--timeout S] [--watch=false]`` prints
  kubectl's progress lines (``Waiting for deployment "web" rollout to finish: 1
  out of 3 new replicas have been updated...``) until ``successfully rolled
  out`` (exit 0), and fails (exit 1) on ``ProgressDeadlineExceeded`` — and, at
  once, when the Deployment's ReplicaSet cannot create pods (``ReplicaFailure``,
  e.g. a ResourceQuota), naming the refusal instead of waiting for the deadline;
- ``rollout history|undo [--to-revision N]|restart|pause|resume``, as kubectl
  does them client-side (undo copies a ReplicaSet's template back; restart
  stamps ``kubectl.kubernetes.io/restartedAt`` on the template);
- ``scale deployment/NAME --replicas N`` (and replicasets);
- ``top pods|nodes`` from the agents' ``nodemetrics`` records.

Every change is a write guarded by the revision read (``resourceVersion``), so a
concurrent controller or apply makes it retry instead of being overwritten.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import yaml

from harness.api import wloutput
from harness.api.cli import _split_ref, connect, hinted
from harness.api.client import ApiClient, NotFoundError
from harness.api.objects import DEFAULT_NAMESPACE, KINDS, KindInfo, kind_for_alias, object_key
from harness.errors import LabError, UserError
from harness.kube import apps, deployutil
from harness.store import Write, keys

Obj = dict[str, Any]
POLL_S = 0.5
SCALABLE = ("Deployment", "ReplicaSet")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("rollout", help="manage a Deployment's rollout (kubectl rollout)")
    p.add_argument("action", choices=("status", "history", "undo", "restart", "pause", "resume"))
    p.add_argument("resource", help="deployment/NAME (or deployment NAME)")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--timeout", type=float, default=0.0, help="status: give up after S (0: never)")
    p.add_argument(
        "--watch", default="true", choices=("true", "false"), help="status: keep watching"
    )
    p.add_argument("--revision", type=int, default=0, help="history: show one revision")
    p.add_argument("--to-revision", type=int, default=0, help="undo: revision to go back to")
    _common(p)
    p.set_defaults(func=hinted(cmd_rollout))

    p = sub.add_parser("scale", help="set the replicas of a Deployment or ReplicaSet")
    p.add_argument("resource", help="deployment/NAME, rs/NAME (or TYPE NAME)")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--replicas", type=int, required=True)
    _common(p)
    p.set_defaults(func=hinted(cmd_scale))

    p = sub.add_parser("top", help="CPU and memory of pods or nodes (from the agents)")
    p.add_argument("what", choices=("pods", "pod", "po", "nodes", "node", "no"))
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("-A", "--all-namespaces", action="store_true")
    _common(p)
    p.set_defaults(func=hinted(cmd_top))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--namespace", default=DEFAULT_NAMESPACE)
    p.add_argument("--lab", help="lab name (default: the only lab that is up)")
    p.add_argument("--cluster", help="cluster name (default: the lab's only cluster)")
    p.add_argument("--etcd", metavar="URL", help="etcd endpoint, bypassing lab discovery")


def _target(args: argparse.Namespace, kinds: tuple[str, ...]) -> tuple[KindInfo, str]:
    word, names = _split_ref(args.resource, args.names)
    info = kind_for_alias(word)
    if info is None or info.kind not in kinds:
        wanted = " or ".join(k.lower() for k in kinds)
        raise UserError(f"{word!r} cannot be used here (fix: give a {wanted}, e.g. deployment/web)")
    if len(names) != 1:
        raise UserError(f"name one {info.kind.lower()} (fix: {info.kind.lower()}/NAME)")
    return info, names[0]


def ref(info: KindInfo, name: str) -> str:
    return f"{info.kind.lower()}{'.' + info.group if info.group else ''}/{name}"


def update(
    client: ApiClient, info: KindInfo, ns: str, name: str, change: Callable[[Obj], str | None]
) -> str | None:
    """Read, change, write back guarded; ``change`` returns a note (no write) or None."""
    key = object_key(client.cluster, info, ns, name)
    for _ in range(10):
        kv = client.store.get(key)
        if kv is None:
            raise NotFoundError(f'{info.resource} "{name}" not found')
        obj = json.loads(kv.value)
        note = change(obj)
        if note is not None:
            return note
        meta = obj.setdefault("metadata", {})
        meta["generation"] = int(meta.get("generation") or 1) + 1
        value = json.dumps(obj, sort_keys=True).encode()
        if client.store.commit([Write(key, value, kv.mod_revision)]):
            return None
    raise LabError(f'{info.resource} "{name}" kept changing; try again')


# -- scale ----------------------------------------------------------------------------------------
def cmd_scale(args: argparse.Namespace) -> int:
    if args.replicas < 0:
        raise UserError(
            "The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0"
        )
    info, name = _target(args, SCALABLE)
    client, _ = connect(args)

    def change(obj: Obj) -> str | None:
        obj.setdefault("spec", {})["replicas"] = args.replicas
        return None

    update(client, info, args.namespace, name, change)
    print(f"{ref(info, name)} scaled")
    return 0


# -- rollout --------------------------------------------------------------------------------------
def cmd_rollout(args: argparse.Namespace) -> int:
    info, name = _target(args, ("Deployment",))
    client, _ = connect(args)
    action = {
        "status": _status,
        "history": _history,
        "undo": _undo,
        "restart": _restart,
        "pause": _pause,
        "resume": _pause,
    }[args.action]
    return action(args, client, info, name)


def status_line(d: Obj) -> tuple[str, bool]:
    """kubectl's ``DeploymentStatusViewer``: (message, done); LabError when it failed."""
    name = d["metadata"]["name"]
    st = d.get("status") or {}
    if int(d["metadata"].get("generation") or 1) > int(st.get("observedGeneration") or 0):
        return "Waiting for deployment spec update to be observed...", False
    progressing = deployutil.condition(st, "Progressing")
    if progressing is not None and progressing.get("reason") == deployutil.TIMED_OUT:
        raise LabError(f'deployment "{name}" exceeded its progress deadline')
    failure = deployutil.condition(st, "ReplicaFailure")
    if failure is not None and failure.get("status") == "True":
        raise LabError(
            f'deployment "{name}" cannot create its pods ({failure.get("reason")}): '
            f"{failure.get('message')}"
        )
    want = apps.replicas(d)
    updated = int(st.get("updatedReplicas") or 0)
    total = int(st.get("replicas") or 0)
    available = int(st.get("availableReplicas") or 0)
    prefix = f'Waiting for deployment "{name}" rollout to finish: '
    if updated < want:
        return f"{prefix}{updated} out of {want} new replicas have been updated...", False
    if total > updated:
        return f"{prefix}{total - updated} old replicas are pending termination...", False
    if available < updated:
        return f"{prefix}{available} of {updated} updated replicas are available...", False
    return f'deployment "{name}" successfully rolled out', True


def _status(args: argparse.Namespace, client: ApiClient, info: KindInfo, name: str) -> int:
    deadline = time.monotonic() + args.timeout if args.timeout > 0 else None
    last = ""
    while True:
        msg, done = status_line(client.get(info, args.namespace, name))
        if msg != last:
            print(msg, flush=True)
            last = msg
        if done or args.watch == "false":
            return 0
        if deadline is not None and time.monotonic() > deadline:
            raise LabError("timed out waiting for the condition")
        time.sleep(POLL_S)


def owned_sets(client: ApiClient, d: Obj) -> list[Obj]:
    uid = d["metadata"].get("uid")
    out = []
    for rs in client.list_objects(KINDS["ReplicaSet"], d["metadata"]["namespace"]):
        for owner in rs["metadata"].get("ownerReferences") or []:
            if owner.get("controller") and owner.get("uid") == uid:
                out.append(rs)
    return out


def _history(args: argparse.Namespace, client: ApiClient, info: KindInfo, name: str) -> int:
    d = client.get(info, args.namespace, name)
    sets = sorted(owned_sets(client, d), key=deployutil.revision)
    if args.revision:
        rs = next((r for r in sets if deployutil.revision(r) == args.revision), None)
        if rs is None:
            raise LabError(f"unable to find the specified revision {args.revision}")
        print(f"{ref(info, name)} with revision #{args.revision}\nPod Template:")
        template = deployutil.without_hash(rs["spec"]["template"])
        print(yaml.safe_dump(template, sort_keys=False).rstrip())
        return 0
    print(f"{ref(info, name)} ")
    rows = [("REVISION", "CHANGE-CAUSE")]
    for rs in sets:
        cause = (rs["metadata"].get("annotations") or {}).get(apps.CHANGE_CAUSE) or "<none>"
        rows.append((str(deployutil.revision(rs)), cause))
    width = max(len(r[0]) for r in rows)
    print("\n".join(f"{a.ljust(width)}  {b}" for a, b in rows) + "\n")
    return 0


def _undo(args: argparse.Namespace, client: ApiClient, info: KindInfo, name: str) -> int:
    d = client.get(info, args.namespace, name)
    if (d.get("spec") or {}).get("paused"):
        raise LabError(
            "you cannot rollback a paused deployment; resume it first with "
            f"'podlab rollout resume deployment/{name}' and try again"
        )
    sets = owned_sets(client, d)
    target = _revision_set(sets, args.to_revision, name)
    template = deployutil.without_hash(target["spec"]["template"])
    if deployutil.equal_ignore_hash(template, d["spec"]["template"]):
        rev = deployutil.revision(target)
        print(
            f"{ref(info, name)} skipped rollback (current template already matches revision {rev})"
        )
        return 0

    def change(obj: Obj) -> str | None:
        obj["spec"]["template"] = template
        return None

    update(client, info, args.namespace, name, change)
    print(f"{ref(info, name)} rolled back")
    return 0


def _revision_set(sets: list[Obj], to: int, name: str) -> Obj:
    """kubectl's ``deploymentRevision``: the given revision, or the previous one."""
    if to:
        for rs in sets:
            if deployutil.revision(rs) == to:
                return rs
        raise LabError(f"unable to find specified revision {to} in history")
    ordered = sorted(sets, key=deployutil.revision)
    if len(ordered) < 2:
        raise LabError(f'no rollout history found for deployment "{name}"')
    return ordered[-2]


def _restart(args: argparse.Namespace, client: ApiClient, info: KindInfo, name: str) -> int:
    def change(obj: Obj) -> str | None:
        if (obj.get("spec") or {}).get("paused"):
            raise LabError(
                f'deployments "{name}" can\'t restart paused deployment (run rollout resume first)'
            )
        template = obj["spec"].setdefault("template", {})
        ann = template.setdefault("metadata", {}).setdefault("annotations", {})
        ann[apps.RESTARTED_AT] = deployutil.rfc3339(time.time())
        return None

    update(client, info, args.namespace, name, change)
    print(f"{ref(info, name)} restarted")
    return 0


def _pause(args: argparse.Namespace, client: ApiClient, info: KindInfo, name: str) -> int:
    pause = args.action == "pause"

    def change(obj: Obj) -> str | None:
        if bool((obj.get("spec") or {}).get("paused")) == pause:
            return f"already {'paused' if pause else 'resumed'}"
        if pause:
            obj["spec"]["paused"] = True
        else:
            obj["spec"].pop("paused", None)
        return None

    note = update(client, info, args.namespace, name, change)
    if note:
        raise LabError(f'{info.resource} "{name}" is {note}')
    print(f"{ref(info, name)} {'paused' if pause else 'resumed'}")
    return 0


# -- top ------------------------------------------------------------------------------------------
def cmd_top(args: argparse.Namespace) -> int:
    client, _ = connect(args)
    by_node = {
        kv.key.rsplit("/", 1)[-1]: json.loads(kv.value)
        for kv in client.store.get_prefix(keys.nodemetrics_prefix(client.cluster))[0]
    }
    if not by_node:
        raise LabError("metrics not available yet")
    if args.what in ("nodes", "node", "no"):
        alloc = {n.name: (n.model_extra or {}).get("allocatable") or {} for n in client.nodes()}
        nodes = [
            (n, str(r["node"]["cpu"]), str(r["node"]["memory"]), alloc.get(n, {}))
            for n, r in sorted(by_node.items())
            if not args.names or n in args.names
        ]
        print(wloutput.top_nodes_table(nodes))
        return 0
    usage = {ref_: u for r in by_node.values() for ref_, u in (r.get("pods") or {}).items()}
    rows: list[tuple[str, str, str, str]] = []
    for key in sorted(usage):
        ns, pod = key.split("/", 1)
        if (args.all_namespaces or ns == args.namespace) and (not args.names or pod in args.names):
            rows.append((ns, pod, str(usage[key]["cpu"]), str(usage[key]["memory"])))
    if not rows:
        raise LabError("metrics not available yet")
    print(wloutput.top_pods_table(rows, args.all_namespaces))
    return 0
