"""Load time: the templates and conditions of a flow file, checked where they stand and
compiled once (the template language itself, which renders them at run time, is
:mod:`engine.templates`).

A template is checked before it is compiled, so that each problem is reported at its own
place in the file (a line inside a multi-line template, a key YAML read as a number): its
syntax, shape and reaches for Python internals (:func:`engine.templates.parse_template`),
and the names it reads (only what the engine gives it where it stands). The ``vars.NAME`` a
template reads are noted, so the loader can warn about those without a default.

Compiled templates, conditions and mappings are cached per Jinja environment (see
:func:`cached`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, TypeVar

from jinja2 import nodes

from engine._sandbox import FlowyardEnvironment
from engine.templates import (
    CONDITION_HINT,
    TemplateProblem,
    check_free_names,
    compile_condition,
    compile_value,
    constant_spec,
    is_template,
    parse_condition,
    parse_template,
)
from engine.yamlpos import format_path

# What templates see, where (see engine/executor.py, engine/context.py, engine/runner.py).
OPTION_NAMES = ("vars", "run")  # connection and source options, rendered once per run
SOURCE_KEY_NAMES = ("record", "vars")
STEP_NAMES = ("record", "vars", "meta", "run")  # plus parent and the item's name in a foreach

# Compiled templates, conditions and mappings, per Jinja environment: validating a folder of
# flows that share a mapping, or loading the same flow again, compiles each once. Keys hold
# the source text (a mapping's SHA-256), so an edited file is compiled afresh. The cache
# lives on the environment (whose renderers refer back to it), so it goes when the engine
# that made the environment goes.
_CACHE_ATTRIBUTE = "_flowyard_loader_cache"
_CACHE_SIZE = 1024

T = TypeVar("T")
Parse = Callable[[FlowyardEnvironment, str], nodes.Expr]  # parse_template, parse_condition
Compiled = Callable[[Mapping[str, Any]], Any]  # a compiled value: constant, template, ...
CompiledCondition = Callable[[Mapping[str, Any]], bool]


def cached(env: FlowyardEnvironment, key: tuple[Hashable, ...], make: Callable[[], T]) -> T:
    """``make()``, or what it gave before for ``key`` in ``env``'s cache.

    Every key starts with what was made (``"mapping"``, ``"value"``, a parser's name ...),
    so what the cache gives back for a key is what ``make`` gives."""
    cache: dict[tuple[Hashable, ...], Any] | None = getattr(env, _CACHE_ATTRIBUTE, None)
    if cache is None:
        cache = {}
        setattr(env, _CACHE_ATTRIBUTE, cache)
    if key not in cache:
        if len(cache) >= _CACHE_SIZE:
            cache.pop(next(iter(cache)))
        cache[key] = make()
    made: T = cache[key]
    return made


def _try(parse: Parse, env: FlowyardEnvironment, source: str) -> nodes.Expr | TemplateProblem:
    try:
        return parse(env, source)
    except TemplateProblem as exc:
        return exc


class FlowTemplates:
    """Checks and compiles the templates and conditions of one flow file.

    ``problem`` is the loader's report (``problem(path, message, *, at_key, lineno)``);
    ``vars_used`` holds each ``vars.NAME`` read, with the path of its first use.
    """

    def __init__(self, env: FlowyardEnvironment, problem: Callable[..., None]):
        self.env = env
        self.problem = problem
        self.vars_used: dict[str, list[Any]] = {}

    def check(self, value: Any, path: list[Any], names: tuple[str, ...]) -> bool:
        """Check every template and constant inside ``value``, each at its own position."""
        ok = True
        if isinstance(value, dict):
            for key, item in value.items():
                ok = self.check_field_name(key, [*path, key]) and ok
                ok = self.check(item, [*path, key], names) and ok
            return ok
        if isinstance(value, list):
            for i, item in enumerate(value):
                ok = self.check(item, [*path, i], names) and ok
            return ok
        if isinstance(value, str) and is_template(value):
            try:
                node = self.parsed(value, parse_template)
            except TemplateProblem as exc:
                self.problem(path, exc.message, lineno=exc.lineno)
                return False
            return self.check_expression(node, path, names)
        try:
            constant_spec(value, format_path(path))
        except TemplateProblem as exc:
            self.problem(path, exc.message)
            return False
        return True

    def check_field_name(self, key: Any, path: list[Any]) -> bool:
        """Whether ``key``, a field name at ``path``, is text (YAML reads ``1:`` as a number)."""
        if isinstance(key, str):
            return True
        self.problem(
            path,
            f"field names are text; YAML read {key!r} as a {type(key).__name__}: quote it",
            at_key=True,
        )
        return False

    def check_expression(self, node: nodes.Node, path: list[Any], names: tuple[str, ...]) -> bool:
        """Check a parsed expression reads only ``names``; note its vars. (The parser has
        refused reaches for Python internals already.)"""
        message = check_free_names(self.env, node, names)
        if message:
            self.problem(path, message, lineno=node.lineno)
            return False
        for name in _vars_read(node):
            self.vars_used.setdefault(name, path)
        return True

    def parsed(self, source: str, parse: Parse) -> nodes.Expr:
        """The parsed template or condition (raises TemplateProblem), parsed once."""
        result = cached(self.env, (parse.__name__, source), lambda: _try(parse, self.env, source))
        if isinstance(result, TemplateProblem):
            raise result
        return result

    def template(self, value: Any, path: list[Any], names: tuple[str, ...]) -> Compiled | None:
        """``value`` compiled once (a constant, a template, or dicts and lists of them);
        None when it has a problem (reported)."""
        if not self.check(value, path, names):
            return None
        try:
            return cached(
                self.env,
                ("value", repr(value), names),
                lambda: compile_value(self.env, value, names=names),
            )
        except TemplateProblem as exc:  # checked above; a refusal of the compiler itself
            self.problem(path, exc.message)
            return None

    def key_template(
        self, value: Any, path: list[Any], names: tuple[str, ...], what: str
    ) -> Compiled | None:
        """A key template: a constant would give every record the same key."""
        if not isinstance(value, str):
            return None  # the schema said so
        if not is_template(value):
            self.problem(
                path,
                f'{what} is a template, e.g. "{{{{ record.id }}}}"; the constant {value!r} '
                "would give every record the same key",
            )
            return None
        return self.template(value, path, names)

    def condition(
        self, expr: Any, path: list[Any], names: tuple[str, ...]
    ) -> CompiledCondition | None:
        """A condition (a bare expression) compiled once, or None when it has a problem."""
        if not isinstance(expr, str):
            return None  # the schema said so
        if is_template(expr):
            self.problem(path, CONDITION_HINT)
            return None
        try:
            node = self.parsed(expr, parse_condition)
        except TemplateProblem as exc:
            self.problem(path, exc.message, lineno=exc.lineno)
            return None
        if not self.check_expression(node, path, names):
            return None
        try:
            return cached(
                self.env,
                ("condition", expr, names),
                lambda: compile_condition(self.env, expr, names=names),
            )
        except TemplateProblem as exc:
            self.problem(path, exc.message, lineno=exc.lineno)
            return None


def _lookups(node: nodes.Node) -> list[nodes.Getattr | nodes.Getitem]:
    """``node`` itself (``find_all`` leaves it out) and every attribute or item lookup below."""
    types = (nodes.Getattr, nodes.Getitem)
    return [n for n in (node, *node.find_all(types)) if isinstance(n, types)]


def _vars_read(node: nodes.Node) -> list[str]:
    """The names read as ``vars.NAME`` or ``vars['NAME']`` in an expression."""
    found = []
    for item in _lookups(node):
        if isinstance(item.node, nodes.Name) and item.node.name == "vars":
            if isinstance(item, nodes.Getattr):
                found.append(item.attr)
            elif isinstance(item.arg, nodes.Const) and isinstance(item.arg.value, str):
                found.append(item.arg.value)
    return found
