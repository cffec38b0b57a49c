"""Manifest files → validated objects, or every problem located and hinted.

A manifest is refused as a whole before anything reaches etcd: each document is
checked, every problem is reported with its file, document number, YAML path
(``spec.containers[0].ports[1].containerPort``), line and a hint, and only a
file with no problem at all yields objects. Pure: no etcd, no clock.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from harness.api import netvalidate
from harness.api.objects import KINDS, MAX_CONTAINERS, ApiObject, KindInfo, Pod, PodSpec
from harness.errors import Problem, UserError
from harness.kube import apps, autoscaling, policy, resources
from harness.kube.apps import Deployment, ReplicaSet
from harness.kube.autoscaling import HorizontalPodAutoscaler, HorizontalPodAutoscalerV1
from harness.kube.policy import LimitRange, ResourceQuota

YamlPath = tuple[str | int, ...]


@dataclass(frozen=True)
class Document:
    """One YAML document of a manifest, with the line of every path in it."""

    file: str
    index: int  # 1-based, as a person counts documents
    data: Any
    lines: dict[YamlPath, int]

    def line(self, path: YamlPath) -> int | None:
        """The line of ``path`` or of its nearest ancestor present in the file."""
        for cut in range(len(path), -1, -1):
            if path[:cut] in self.lines:
                return self.lines[path[:cut]]
        return None


@dataclass(frozen=True)
class Located:
    """A valid object and where it came from (for messages about it later)."""

    obj: ApiObject
    info: KindInfo
    doc: Document


def load_documents(text: str, file: str) -> list[Document]:
    """Parse multi-document YAML keeping line numbers; empty documents are skipped."""
    loader = yaml.SafeLoader(text)
    docs: list[Document] = []
    try:
        index = 0
        while loader.check_node():
            node = loader.get_node()
            index += 1
            if node is None:
                continue
            lines: dict[YamlPath, int] = {}
            _walk(node, (), lines)
            data = loader.construct_document(node)
            if data is not None:
                docs.append(Document(file, index, data, lines))
    except yaml.YAMLError as exc:
        raise UserError([_yaml_problem(exc, file)]) from exc
    finally:
        loader.dispose()
    return docs


def _yaml_problem(exc: yaml.YAMLError, file: str) -> Problem:
    """A YAML syntax error as one located problem, with the parser's context."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    cmark = getattr(exc, "context_mark", None)
    if context and cmark:
        problem = f"{problem} ({context} that starts on line {cmark.line + 1})"
    hint = "check indentation, brackets and quotes around this line"
    return Problem(file, "YAML", problem, hint, mark.line + 1 if mark else None)


def _walk(node: yaml.Node, path: YamlPath, lines: dict[YamlPath, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                _walk(value, (*path, key.value), lines)
                lines[(*path, key.value)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), lines)


def validate_documents(docs: list[Document]) -> tuple[list[Located], list[Problem]]:
    """Check every document; return the valid objects and all problems found."""
    objects: list[Located] = []
    problems: list[Problem] = []
    seen: dict[tuple[str, str, str], Document] = {}
    for doc in docs:
        located, found = _validate_one(doc)
        problems.extend(found)
        if located is None:
            continue
        meta = located.obj.metadata
        ident = (located.info.kind, meta.namespace, meta.name)
        if ident in seen:
            first = seen[ident]
            other = "" if first.file == doc.file else f" of {first.file}"
            msg = f"duplicates document {first.index}{other}"
            hint = "give each object its own name"
            problems.append(_problem(doc, located, ("metadata", "name"), msg, hint))
        seen.setdefault(ident, doc)
        objects.append(located)
    return objects, problems


def _validate_one(doc: Document) -> tuple[Located | None, list[Problem]]:
    data = doc.data
    if not isinstance(data, dict):
        return None, [
            _problem(
                doc,
                None,
                (),
                "a document must be a mapping (an object)",
                "start it with 'apiVersion: v1' and 'kind: Pod'",
            )
        ]
    kind = data.get("kind")
    info = KINDS.get(kind) if isinstance(kind, str) else None
    if info is None:
        hint = f"podlab knows: {', '.join(sorted(KINDS))}"
        msg = "is required" if kind is None else f"unknown kind {kind!r}"
        return None, [_problem(doc, None, ("kind",), msg, hint)]
    problems: list[Problem] = []
    version = data.get("apiVersion")
    model = info.model_for(version)
    if model is None:
        model = info.model
        msg = "is required" if version is None else f"{version!r} does not serve kind {info.kind}"
        hint = f"use 'apiVersion: {' or '.join(info.versions)}'"
        problems.append(_problem(doc, _label(data, info), ("apiVersion",), msg, hint))
    try:
        obj = model.model_validate(data)
    except ValidationError as exc:
        label = _label(data, info)
        for err in exc.errors():
            path, message, hint = _explain(err, model)
            problems.append(_problem(doc, label, path, message, hint))
        return None, sorted(problems, key=lambda p: p.line or 0)
    located = Located(obj, info, doc)
    if isinstance(obj, Pod):
        problems.extend(_pod_checks(located))
    else:
        for path, message, hint in kind_checks(obj):
            problems.append(_problem(doc, located, path, message, hint))
    if problems:
        return None, problems
    storage_form = getattr(obj, "storage_form", None)  # e.g. autoscaling/v1 → v2
    return (Located(storage_form(), info, doc) if storage_form else located), problems


def kind_checks(obj: ApiObject) -> list[tuple[YamlPath, str, str]]:
    """Checks across fields of a kind other than Pod (Kubernetes' validation rules)."""
    if isinstance(obj, Deployment | ReplicaSet):
        template = obj.spec.template.spec
        found = apps.checks(obj)
        return found + pod_spec_checks(template, ("spec", "template", "spec"))
    if isinstance(obj, HorizontalPodAutoscaler | HorizontalPodAutoscalerV1):
        return autoscaling.checks(obj)
    if isinstance(obj, ResourceQuota):
        return policy.quota_checks(obj)
    if isinstance(obj, LimitRange):
        return policy.limitrange_checks(obj)
    return list(netvalidate.checks(obj))


def _pod_checks(loc: Located) -> list[Problem]:
    """Checks across fields that pydantic's per-field validation cannot do."""
    pod = loc.obj
    assert isinstance(pod, Pod)
    found = pod_spec_checks(pod.spec, ("spec",))
    return [_problem(loc.doc, loc, path, message, hint) for path, message, hint in found]


def pod_spec_checks(spec: PodSpec, at: YamlPath) -> list[tuple[YamlPath, str, str]]:
    """A pod's (or pod template's) cross-field checks; paths start with ``at``."""
    out: list[tuple[YamlPath, str, str]] = []

    def add(path: YamlPath, message: str, hint: str) -> None:
        out.append(((*at, *path[1:]), message, hint))

    if len(spec.containers) > MAX_CONTAINERS:
        add(
            ("spec", "containers", MAX_CONTAINERS),
            f"podlab pods run {MAX_CONTAINERS} "
            "container (the node agent starts containers[0] only)",
            "split the extra containers into pods of their own",
        )
    first: dict[str, int] = {}
    for i, c in enumerate(spec.containers):
        where: YamlPath = ("spec", "containers", i)
        for path, message, hint in resources.checks(c.resources, (*where, "resources")):
            add(path, message, hint)
        if c.name in first:
            add(
                (*where, "name"),
                f"container name {c.name!r} repeats containers[{first[c.name]}]",
                "give each container a distinct name",
            )
        first.setdefault(c.name, i)
        port_names = [p.name for p in c.ports if p.name]
        for j, p in enumerate(c.ports):
            if p.name and port_names.count(p.name) > 1:
                add(
                    (*where, "ports", j, "name"),
                    f"port name {p.name!r} is used twice in this container",
                    "give each port a distinct name",
                )
        probe = c.readinessProbe
        if probe is None:
            continue
        ppath: YamlPath = (*where, "readinessProbe")
        handlers = {"tcpSocket": probe.tcpSocket, "httpGet": probe.httpGet}
        if sum(h is not None for h in handlers.values()) != 1:
            add(ppath, "needs exactly one of tcpSocket, httpGet", "keep a single probe handler")
        for field, handler in handlers.items():
            port = handler.port if handler is not None else None
            if isinstance(port, str) and port not in port_names:
                add(
                    (*ppath, field, "port"),
                    f"names port {port!r}, which this container does not declare",
                    "declare it under ports with that name, or use a number",
                )
    return out


def _label(data: dict[str, Any], info: KindInfo) -> str:
    meta = data.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return f"{info.kind.lower()}/{name}" if isinstance(name, str) else info.kind.lower()


def _problem(
    doc: Document, obj: Located | str | None, path: YamlPath, message: str, hint: str
) -> Problem:
    if isinstance(obj, Located):
        label = f"{obj.info.kind.lower()}/{obj.obj.metadata.name}"
    else:
        label = obj or ""
    where = f"document {doc.index}" + (f" ({label})" if label else "")
    shown = format_path(path)
    return Problem(doc.file, f"{where}: {shown}" if shown else where, message, hint, doc.line(path))


def format_path(path: YamlPath) -> str:
    """``('spec', 'containers', 0, 'name')`` → ``spec.containers[0].name``; a key with
    dots or slashes in brackets: ``metadata.annotations["service.cilium.io/global"]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "." in part or "/" in part:  # an annotation or label key: keep it whole
            out += f'["{part}"]'
        else:
            out += f".{part}" if out else str(part)
    return out


def _explain(err: Any, model: type[BaseModel]) -> tuple[YamlPath, str, str]:
    """A pydantic error → (YAML path, message, hint) in a user's words."""
    loc: YamlPath = tuple(p for p in err["loc"] if p != "[key]")
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "podlab":
        return loc, err["msg"], str(ctx.get("hint", ""))
    if kind == "missing":
        return loc, "is required", f"add '{loc[-1]}'"
    if kind == "extra_forbidden":
        known = _fields_at(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known fields: {', '.join(known)}"
        return loc, f"unknown field '{loc[-1]}'", hint
    if kind == "literal_error":
        return loc, f"must be one of {ctx.get('expected')}, got {err['input']!r}", ""
    if kind == "too_short":
        return loc, "must not be empty", "list at least one item"
    if kind in ("greater_than_equal", "greater_than"):
        return loc, f"must be ≥ {ctx.get('ge', ctx.get('gt'))}, got {err['input']!r}", ""
    want, hint = _TYPES.get(kind, (kind.removesuffix("_type").replace("_", " "), ""))
    got = _YAML_TYPES.get(type(err["input"]).__name__, type(err["input"]).__name__)
    return loc, f"must be {want}, got {got} {err['input']!r}", hint


_TYPES = {
    "int_type": ("a number", "write the number without quotes"),
    "string_type": ("a string", "quote the value"),
    "bool_type": ("true or false", ""),
    "list_type": ("a list", "write a YAML list ('- item' lines or [a, b])"),
    "dict_type": ("a mapping", "write 'key: value' lines"),
    "model_type": ("a mapping", "write 'key: value' lines"),
}
_YAML_TYPES = {
    "str": "string",
    "int": "number",
    "float": "number",
    "dict": "mapping",
    "list": "list",
    "NoneType": "null",
    "bool": "boolean",
}


def _fields_at(model: type[BaseModel], path: YamlPath) -> list[str]:
    """Field names of the model found at ``path`` under ``model`` (for hints)."""
    current: Any = model
    for part in path:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        current = _inner_model(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [n for n, f in current.model_fields.items() if not f.exclude]
    return []


def _inner_model(annotation: Any) -> Any:
    """Unwrap ``list[X]``, ``X | None`` and ``Annotated[X, …]`` to the model X."""
    for arg in (annotation, *get_args(annotation)):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
        if get_origin(arg) is not None or get_args(arg):
            inner = _inner_model(arg) if arg is not annotation else None
            if inner is not None:
                return inner
    return None
