"""Safe YAML that remembers where every value came from.

:func:`load_yaml` returns plain ``dict``/``list`` subclasses (:class:`PosDict`,
:class:`PosList`) that carry the 1-based line and column of each key and value,
so any later check can point at the exact spot. Problems YAML itself would hide
are reported instead of swallowed: duplicate keys (PyYAML keeps the last one and
silently drops a branch) and templates left unquoted (``{{ x }}`` parses as a
nested mapping).
"""

from __future__ import annotations

from typing import Any

import yaml

from engine.errors import Problem

Pos = tuple[int, int]  # 1-based line, column

UNQUOTED_TEMPLATE_HINT = (
    "this looks like a Jinja template left unquoted, which YAML reads as a mapping; "
    'quote it, e.g. "{{ record.id }}"'
)


class PosDict(dict):
    """A mapping with ``key_pos[key]`` and ``value_pos[key]`` and its own ``pos``."""

    pos: Pos = (0, 0)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.key_pos: dict[Any, Pos] = {}
        self.value_pos: dict[Any, Pos] = {}


class PosList(list):
    """A sequence with ``item_pos[i]`` and its own ``pos``."""

    pos: Pos = (0, 0)

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.item_pos: list[Pos] = []


def _mark(node: yaml.Node) -> Pos:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def _looks_like_unquoted_template(node: yaml.Node) -> bool:
    """``{{ x }}`` unquoted is a flow mapping whose only key is itself a flow mapping."""
    if not (isinstance(node, yaml.MappingNode) and node.flow_style):
        return False
    return any(isinstance(k, yaml.MappingNode) for k, _ in node.value)


class _Loader(yaml.SafeLoader):
    def __init__(self, stream: str, file: str):
        super().__init__(stream)
        self.file = file
        self.problems: list[Problem] = []
        self._path: list[str] = []

    def _problem(self, node: yaml.Node, path: str, message: str) -> None:
        line, col = _mark(node)
        self.problems.append(Problem(self.file, line, col, path, message))

    def construct_document(self, node: yaml.Node) -> Any:
        return self._construct(node, "")

    def _construct(self, node: yaml.Node, path: str) -> Any:
        if isinstance(node, yaml.MappingNode):
            if _looks_like_unquoted_template(node):
                self._problem(node, path, UNQUOTED_TEMPLATE_HINT)
                return None
            self.flatten_mapping(node)  # resolves YAML merge keys (<<)
            result = PosDict()
            result.pos = _mark(node)
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    self._problem(key_node, path, "a mapping key must be a plain value")
                    continue
                key = self.construct_object(key_node, deep=True)
                child = f"{path}.{key}" if path else str(key)
                if key in result:
                    first = result.key_pos[key]
                    self._problem(
                        key_node,
                        child,
                        f"duplicate key {key!r} (first defined at line {first[0]}); "
                        "YAML would silently keep only the last one",
                    )
                    continue
                result[key] = self._construct(value_node, child)
                result.key_pos[key] = _mark(key_node)
                result.value_pos[key] = _mark(value_node)
            return result
        if isinstance(node, yaml.SequenceNode):
            result_list = PosList()
            result_list.pos = _mark(node)
            for i, item in enumerate(node.value):
                result_list.append(self._construct(item, f"{path}[{i}]"))
                result_list.item_pos.append(_mark(item))
            return result_list
        return self.construct_object(node, deep=True)


def load_yaml(text: str, file: str) -> tuple[Any, list[Problem]]:
    """Parse one YAML document; returns the data (None when unreadable) and the problems found."""
    loader = _Loader(text, file)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, [Problem(file, 1, 1, "", "the file is empty")]
        data = loader.construct_document(node)
        return data, loader.problems
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        message = " ".join(filter(None, [exc.context, exc.problem])) or str(exc)
        return None, loader.problems + [Problem(file, line, col, "", f"invalid YAML: {message}")]
    except yaml.YAMLError as exc:
        return None, loader.problems + [Problem(file, None, None, "", f"invalid YAML: {exc}")]
    finally:
        loader.dispose()


def position(data: Any, path: list[Any]) -> Pos | None:
    """The line and column of the value at ``path`` (keys and indexes) inside loaded data.

    Walks as deep as the data goes, so a path into a missing key points at its parent.
    """
    best: Pos | None = getattr(data, "pos", None)
    node = data
    for part in path:
        if isinstance(node, PosDict) and part in node:
            best = node.value_pos.get(part, best)
            node = node[part]
        elif isinstance(node, PosList) and isinstance(part, int) and 0 <= part < len(node):
            best = node.item_pos[part]
            node = node[part]
        else:
            break
    return best


def key_position(data: Any, path: list[Any]) -> Pos | None:
    """The line and column of the *key* at the end of ``path`` (for "unknown key" errors)."""
    parent_path, last = path[:-1], path[-1] if path else None
    node = data
    for part in parent_path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return position(data, path)
    if isinstance(node, PosDict) and last in node.key_pos:
        return node.key_pos[last]
    return position(data, path)


def format_path(path: list[Any]) -> str:
    """``["steps", 2, "send", "body"]`` -> ``steps[2].send.body``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
