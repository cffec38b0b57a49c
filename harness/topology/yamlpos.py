"""YAML loading that remembers where every value came from.

The loader returns plain data plus a map from data path (a tuple of keys and
indices) to the 1-based line it was written on, so user errors can point at a
line. Duplicate mapping keys, which PyYAML silently collapses, are reported.
"""

from __future__ import annotations

from typing import Any

import yaml

Path = tuple[str | int, ...]


class YamlProblem(Exception):
    """The text is not YAML we can read; ``line`` is 1-based when known."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


def load_with_lines(text: str) -> tuple[Any, dict[Path, int], list[tuple[Path, int]]]:
    """Parse one YAML document; return (data, lines, duplicate keys)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise YamlProblem(f"invalid YAML: {exc.problem or exc.context}", line) from None
    except yaml.YAMLError as exc:
        raise YamlProblem(f"invalid YAML: {exc}", None) from None
    lines: dict[Path, int] = {}
    dups: list[tuple[Path, int]] = []
    if node is None:
        return None, lines, dups
    return _build(node, (), lines, dups), lines, dups


def _build(node: yaml.Node, path: Path, lines: dict[Path, int], dups: list) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                key = str(key)
            if key in out:
                dups.append(((*path, key), key_node.start_mark.line + 1))
            out[key] = _build(value_node, (*path, key), lines, dups)
            lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(v, (*path, i), lines, dups) for i, v in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        loader = yaml.SafeLoader("")
        try:
            return loader.construct_object(node, deep=True)
        except yaml.YAMLError:
            return node.value
        finally:
            loader.dispose()
    return str(node.value) if not isinstance(node.value, list) else repr(node.value)
