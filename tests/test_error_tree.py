"""The error tree is drawn once, in connectors/errors.py, and the drawing is the classes."""

from __future__ import annotations

import re

import connectors.errors
import engine  # noqa: F401  (loads every engine module that defines an error)
import engine.errors
from connectors.errors import FlowyardError


def drawn_tree() -> set[tuple[str, str]]:
    """(class, parent) for each line of the drawing in connectors/errors.py's docstring."""
    pairs, parents = set(), {}
    for line in connectors.errors.__doc__.splitlines():
        if line.strip() == "FlowyardError":
            parents[-1] = "FlowyardError"
            continue
        found = re.match(r"^\s{4}([│ ]*)[├└]── (\w+)", line)
        if found:
            depth = len(found.group(1)) // 4
            parents[depth] = found.group(2)
            pairs.add((found.group(2), parents[depth - 1]))
    return pairs


def class_tree() -> set[tuple[str, str]]:
    """(class, parent) for every error class flowyard itself defines."""
    pairs, todo = set(), [FlowyardError]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub.__module__.split(".")[0] in ("engine", "connectors"):
                pairs.add((sub.__name__, cls.__name__))
            todo.append(sub)
    return pairs


def test_the_drawing_shows_every_error_class_under_its_parent():
    assert drawn_tree() == class_tree()


def test_the_engine_points_to_the_drawing_instead_of_keeping_a_copy():
    assert "connectors/errors.py" in engine.errors.__doc__
    assert "──" not in engine.errors.__doc__
    here = {
        name
        for name, _ in class_tree()
        if getattr(engine.errors, name, None) is not None or hasattr(connectors.errors, name)
    }
    assert here <= set(engine.errors.__all__)
