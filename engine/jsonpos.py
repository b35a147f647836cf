"""Where each value of a JSON document stands, for problems that name a line.

:func:`json.loads` keeps no positions, so a problem found in the loaded data (a schema
keyword with the wrong type, a ``$ref`` to nothing) would have only a path. :func:`locate`
reads the same text once more with a small scanner (no recursion, so nesting is measured
rather than followed into a RecursionError) and returns the line and column of every value
and every key, by path; :meth:`JsonPositions.of` finds the nearest one for any path.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

Pos = tuple[int, int]  # 1-based line, column
Path = tuple[str | int, ...]  # keys and indexes from the root

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,"]+', re.S)


@dataclass
class JsonPositions:
    """The positions of one document's values and keys, by path (a tuple of keys and indexes)."""

    values: dict[Path, int] = field(default_factory=dict)
    keys: dict[Path, int] = field(default_factory=dict)
    deepest: int = 0
    too_deep_at: int | None = None  # the offset where nesting passed the limit
    _lines: list[int] = field(default_factory=list)

    def position(self, offset: int) -> Pos:
        line = bisect.bisect_right(self._lines, offset)
        return line, offset - self._lines[line - 1] + 1

    def of(self, path: Iterable[str | int], *, key: bool = False) -> Pos:
        """The value (or key) at ``path``, else the nearest enclosing value; (1, 1) at worst."""
        path = tuple(path)
        if key and path in self.keys:
            return self.position(self.keys[path])
        while path not in self.values and path:
            path = path[:-1]
        return self.position(self.values.get(path, 0))


class _Open:
    __slots__ = ("path", "is_object", "index", "key", "want_key")

    def __init__(self, path: Path, is_object: bool):
        self.path, self.is_object = path, is_object
        self.index = 0
        self.key: str = ""
        self.want_key = is_object


def locate(text: str, max_depth: int) -> JsonPositions:
    """Positions of every value and key of ``text``; stops past ``max_depth`` levels.

    Meant for text :func:`json.loads` read (or refused only for its depth); other text
    gives positions of no use, but no error."""
    found = JsonPositions(_lines=[0, *(m.end() for m in re.finditer("\n", text))])
    stack: list[_Open] = []
    for match in _TOKEN.finditer(text):
        token, offset = match.group(), match.start()
        top = stack[-1] if stack else None
        if token == ",":
            if top is not None:
                top.index += 1
                top.want_key = top.is_object
            continue
        if token == ":":
            continue
        if token in "}]":
            if stack:
                stack.pop()
            continue
        if top is not None and top.want_key:
            try:
                top.key = json.loads(token)
            except ValueError:
                top.key = token  # not JSON after all: json.loads says where
            top.want_key = False
            found.keys[(*top.path, top.key)] = offset
            continue
        if top is None:
            here: Path = ()
        else:
            here = (*top.path, top.key if top.is_object else top.index)
        found.values[here] = offset
        if token in "{[":
            stack.append(_Open(here, token == "{"))
            found.deepest = max(found.deepest, len(stack))
            if len(stack) > max_depth:
                found.too_deep_at = offset
                break
    return found
