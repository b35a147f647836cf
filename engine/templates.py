"""Values and conditions compiled once into callables.

A value in a flow or a mapping is a *template* when it contains ``{{``: a lone
``{{ expr }}`` yields the expression's own Python value (numbers stay numbers, a string
``"01234"`` stays a string), text mixed with expressions yields a string. Anything else
is a constant. A *condition* (``filter``, route ``when``) is a bare expression.

Templates run in the one environment of :mod:`engine._sandbox` (sandboxed, native types,
strict about missing data, with the retail filters of :mod:`engine.filters`).

Compilation happens once: Jinja parses and checks each template, then a value, however
deeply nested, becomes ONE plain Python function (:mod:`engine.pycodegen`: dict reads,
direct filter calls, list specs as loops, the sandbox's checked operations where Jinja
calls them); a render is one call of it over the caller's variables (no copy), with no
Jinja runtime on the way. A value with a node that module does not cover is compiled by
Jinja instead (one AST, one generated function run in a light context, see
:class:`_Compiled`), with the same results. Only when a render fails are the parts
evaluated one by one (by Jinja), to
report every field that fails, each in the record's own terms where it can be
(``line_items[2].sku is missing``, found by where the object a template read sits in the
record), see :class:`FieldProblem`.

Errors::

    TemplateProblem                 the template itself is wrong (load time, with .lineno)
    RecordError
    └── MappingError
        └── TemplateRenderError     a record failed: .problems (every field), .field, .source
            ├── UndefinedValueError a name or field it uses is missing
            └── SandboxViolation    it tried to reach Python internals or passed a limit
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeGuard, TypeVar

from jinja2 import Undefined, nodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.nodes import EvalContext
from jinja2.parser import Parser
from jinja2.runtime import Context
from jinja2.utils import missing

from engine._metered import RenderBudgetExceeded
from engine._sandbox import (
    DEFINED,
    EACH,
    FlowyardEnvironment,
    SandboxLimit,
    default_environment,
    make_environment,
)
from engine.errors import MappingError
from engine.filters import FILTERS, FilterError, MissingValueError, require_defined
from engine.pycodegen import Unsupported, compile_expression, compile_tree
from engine.suggest import did_you_mean
from engine.yamlpos import format_path

_N = TypeVar("_N", bound=nodes.Node)

__all__ = [
    "CONDITION_HINT",
    "MAX_BRACKET_DEPTH",
    "MAX_EXPRESSION_DEPTH",
    "MAX_TEMPLATE_CHARS",
    "CONTEXT_NAMES",
    "Condition",
    "FieldProblem",
    "FlowyardEnvironment",
    "Renderer",
    "SandboxViolation",
    "TemplateProblem",
    "TemplateRenderError",
    "UndefinedValueError",
    "VARYING_NAMES",
    "check_free_names",
    "compile_condition",
    "compile_value",
    "constant_spec",
    "default_environment",
    "free_names",
    "is_template",
    "make_environment",
    "parse_condition",
    "parse_template",
    "python_internals",
    "spec_names",
]

#: The names the engine puts in a template's context (loop variables come on top).
CONTEXT_NAMES = ("record", "vars", "meta", "run", "parent")

CONDITION_HINT = "conditions are bare expressions: write `x`, not `{{ x }}`"


# -- errors ---------------------------------------------------------------------------------
class TemplateProblem(Exception):
    """A template cannot be compiled; ``lineno`` is relative to the template's first line."""

    def __init__(self, message: str, lineno: int | None = None, path: str = ""):
        super().__init__(message)
        self.message = message
        self.lineno = lineno
        self.path = path


@dataclass(frozen=True)
class FieldProblem:
    """One output field that failed on a record, and where the record is at fault.

    ``field`` is the output path (``lines[2].sku``), ``source`` the template, ``reason``
    the technical reason; ``where`` is the record's own path (``line_items[2].sku``) when
    it could be found, and ``state`` what is wrong there (``is missing``, ``is empty``,
    ``is invalid (...)``).
    """

    field: str
    source: str
    reason: str
    kind: type[TemplateRenderError]
    where: str = ""
    state: str = ""

    def __str__(self) -> str:
        if self.where:
            return f"{self.where} {self.state}"
        text = f"field {self.field}: {self.reason}" if self.field else self.reason
        return f"{text} (in `{self.source}`)" if self.source else text


class TemplateRenderError(MappingError):
    """A template failed on one record; ``field`` is the path inside the value, ``source``
    the template text. ``problems`` lists every field that failed (the first is ``field``),
    each in the record's own terms where possible."""

    def __init__(
        self,
        reason: str,
        *,
        field: str = "",
        source: str = "",
        mapping: str = "",
        record_key: str = "",
        problems: tuple[FieldProblem, ...] = (),
        label: str = "",
    ):
        if not problems:
            problems = (FieldProblem(field, source, reason, type(self)),)
        first = problems[0]
        subject = label or (f"record {record_key}" if record_key else "")
        message = "; ".join(dict.fromkeys(str(p) for p in problems))
        if subject:
            message = f"{subject}: {message}"
        tail = _where_in_the_template(problems)
        if mapping:
            tail = f"mapping {mapping}" + (f": {tail}" if tail else "")
        if tail:
            message += f" ({tail})"
        super().__init__(message, mapping=mapping, field=first.field, record_key=record_key)
        self.reason = first.reason
        self.source = first.source
        self.problems = problems
        self.label = label

    def located(
        self, *, mapping: str = "", record_key: str = "", label: str = ""
    ) -> TemplateRenderError:
        """The same error, naming the mapping and the record (``label``: how to call it)."""
        return type(self)(
            self.reason,
            field=self.field,
            source=self.source,
            mapping=mapping,
            record_key=record_key,
            problems=self.problems,
            label=label,
        )


def _where_in_the_template(problems: tuple[FieldProblem, ...]) -> str:
    """For the template's author: the output fields (or templates) of the problems that
    are told in the record's terms (the others name their field themselves)."""
    told = [p for p in problems if p.where]
    fields = list(dict.fromkeys(p.field for p in told if p.field))
    sources = list(dict.fromkeys(p.source for p in told if not p.field and p.source))
    parts = []
    if fields:
        parts.append(("field " if len(fields) == 1 else "fields ") + ", ".join(fields))
    if sources:
        parts.append("in " + ", ".join(f"`{source}`" for source in sources))
    return ", ".join(parts)


class UndefinedValueError(TemplateRenderError):
    """A template used a name or a field the record does not have (and gave no default)."""


class SandboxViolation(TemplateRenderError):
    """A template tried to reach Python internals, or passed one of the sandbox's limits."""


def _render_error(exc: BaseException, field: str = "", source: str = "") -> TemplateRenderError:
    if isinstance(exc, TemplateRenderError):
        return type(exc)(exc.reason, field=field or exc.field, source=source or exc.source)
    if isinstance(exc, SandboxLimit):
        return SandboxViolation(
            f"template passed a sandbox limit: {exc}", field=field, source=source
        )
    if isinstance(exc, SecurityError):
        reason = f"template tried to reach Python internals: {exc}"
        return SandboxViolation(reason, field=field, source=source)
    if isinstance(exc, UndefinedError | MissingValueError):
        return UndefinedValueError(str(exc), field=field, source=source)
    if isinstance(exc, FilterError):
        return TemplateRenderError(str(exc), field=field, source=source)
    return TemplateRenderError(f"{type(exc).__name__}: {exc}", field=field, source=source)


# -- failures in the record's own terms -----------------------------------------------------
# Only on the slow path, after a record failed: which field of the record is at fault.


def _undefined_of(exc: BaseException) -> Undefined | None:
    """The Undefined whose use raised ``exc``: it knows the object and the name read.

    Every use of an Undefined raises from its ``_fail_with_undefined_error`` method, so
    the innermost frame of the traceback that belongs to one holds it as ``self``.
    """
    found = None
    tb = exc.__traceback__
    while tb is not None:
        candidate = tb.tb_frame.f_locals.get("self")
        if isinstance(candidate, Undefined):
            found = candidate
        tb = tb.tb_next
    return found


def _join(prefix: str, name: Any) -> str:
    if isinstance(name, int):
        return f"{prefix}[{name}]"
    return f"{prefix}.{name}" if prefix else str(name)


class _SourceIndex:
    """Paths of the objects inside a record, found by identity; built on first use.

    Containers (dicts, lists) are found exactly; a scalar only when it is the one object
    at one place (``None``, booleans, small integers and one-character strings are shared
    by Python and could be anywhere, so they are never named).
    """

    def __init__(self, scope: Mapping[str, Any]):
        self.scope = scope
        self._paths: dict[int, list[str]] | None = None

    def _build(self) -> dict[int, list[str]]:
        paths: dict[int, list[str]] = {}
        roots = [(self.scope.get("record"), "")]
        roots += [(self.scope.get(n), n) for n in ("parent", "vars") if n in self.scope]
        seen: set[int] = set()
        stack = [r for r in roots if r[0] is not None]
        while stack:
            obj, path = stack.pop()
            paths.setdefault(id(obj), []).append(path)
            if isinstance(obj, dict | list) and id(obj) not in seen:
                seen.add(id(obj))
                items = obj.items() if isinstance(obj, dict) else enumerate(obj)
                stack.extend((value, _join(path, key)) for key, value in items)
        return paths

    def path_of(self, obj: Any) -> str | None:
        """The path of a container (``""`` for the record itself), or None."""
        if not isinstance(obj, dict | list):
            return None
        if self._paths is None:
            self._paths = self._build()
        found = self._paths.get(id(obj))
        return found[0] if found else None

    def unique_path_of(self, value: Any) -> str | None:
        if value is None or isinstance(value, bool):
            return None
        if (isinstance(value, int) and -5 <= value <= 256) or (
            isinstance(value, str) and len(value) <= 1
        ):
            return None
        if self._paths is None:
            self._paths = self._build()
        found = self._paths.get(id(value))
        return found[0] if found and len(found) == 1 and found[0] else None


def _problem(exc: BaseException, field: str, source: str, index: _SourceIndex) -> FieldProblem:
    """``exc`` from one field, in the record's terms where the record can be pointed at."""
    error = _render_error(exc, field, source)
    where = state = ""
    if isinstance(exc, MissingValueError):
        container = index.path_of(exc.value)
        if container is not None:
            where = _join(container, exc.key)
            state = "is empty" if exc.empty else "is missing"
    elif isinstance(exc, UndefinedError):
        undefined = _undefined_of(exc)
        if undefined is not None and undefined._undefined_obj is not missing:
            container = index.path_of(undefined._undefined_obj)
            if container is not None:
                where, state = _join(container, undefined._undefined_name), "is missing"
    elif isinstance(exc, FilterError) and exc.has_value:
        found = index.path_of(exc.value)
        found = found if found else index.unique_path_of(exc.value)
        if found:
            where, state = found, f"is invalid ({exc})"
    return FieldProblem(field, source, error.reason, type(error), where, state)


def _error_of(problems: list[FieldProblem]) -> TemplateRenderError:
    """One error for every problem of a record; its class is theirs when they share one."""
    kinds = {p.kind for p in problems}
    kind = kinds.pop() if len(kinds) == 1 else TemplateRenderError
    first = problems[0]
    return kind(first.reason, field=first.field, source=first.source, problems=tuple(problems))


# -- value trees ----------------------------------------------------------------------------
# A value compiles to a tree of these; the tree becomes one Jinja AST (fast path) and is
# walked node by node only to explain a failure (slow path).
@dataclass(eq=False)
class Const:
    value: Any


@dataclass(eq=False)
class Expr:
    source: str
    node: nodes.Expr  # owned by the fast-path AST; the slow path re-parses ``source``


@dataclass(eq=False)
class Obj:
    fields: dict[str, Spec]


@dataclass(eq=False)
class Arr:
    items: list[Spec]


@dataclass(eq=False)
class Each:
    """``each`` + ``as`` + ``fields``: one object per item of a list."""

    each: Expr
    name: str
    body: Obj
    uses_loop: bool = False
    renderer: _EachRenderer | None = field(default=None, repr=False)


@dataclass(eq=False)
class When:
    """``when`` + ``fields``: the object when the condition holds, else null."""

    condition: Expr
    body: Obj


Spec = Const | Expr | Obj | Arr | Each | When  # a node of a value tree


def is_template(value: Any) -> TypeGuard[str]:
    """True when ``value`` is a string holding a Jinja expression or statement."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _suggestable(names: Iterable[str]) -> list[str]:
    """Names a "did you mean" may offer: not the engine's own (``fy:each``, ``fy:defined``)."""
    return [name for name in names if ":" not in name]


def _check_names(env: FlowyardEnvironment, node: nodes.Node) -> None:
    found = itertools.chain([node], node.find_all((nodes.Filter, nodes.Test)))
    for item in (n for n in found if isinstance(n, nodes.Filter | nodes.Test)):
        table, kind = (
            (env.filters, "filter") if isinstance(item, nodes.Filter) else (env.tests, "test")
        )
        if item.name not in table:
            raise TemplateProblem(
                f"unknown {kind} {item.name!r}{did_you_mean(item.name, _suggestable(table))}",
                item.lineno,
            )


# -- the shape of a template (see docs/security.md) ------------------------------------------
MAX_TEMPLATE_CHARS = 100_000  # one template or condition
MAX_BRACKET_DEPTH = 20  # ( [ { inside one another
MAX_EXPRESSION_DEPTH = 40  # levels of the parsed expression: `a + b + c` is 3 deep


def _check_shape(env: FlowyardEnvironment, source: str, state: str | None) -> None:
    """Refuse a template too long or nested too deep before the (recursive) parser sees it."""
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateProblem(
            f"a template of {len(source):,} characters; the limit is {MAX_TEMPLATE_CHARS:,}", 1
        )
    depth = 0
    try:
        for lineno, kind, value in env.lexer.tokeniter(source, None, state=state):
            if kind == "operator" and value in "([{":
                depth += 1
                if depth > MAX_BRACKET_DEPTH:
                    raise TemplateProblem(
                        f"brackets nested more than {MAX_BRACKET_DEPTH} deep", lineno
                    )
            elif kind == "operator" and value in ")]}":
                depth -= 1
    except TemplateSyntaxError:
        pass  # the parser reports it


def _check_depth(node: nodes.Node) -> None:
    """Refuse an expression nested deeper than :data:`MAX_EXPRESSION_DEPTH` (walked without
    recursion: the compiler and every check after this one recurse)."""
    todo = [(node, 1)]
    while todo:
        item, depth = todo.pop()
        if depth > MAX_EXPRESSION_DEPTH:
            raise TemplateProblem(
                f"an expression nested more than {MAX_EXPRESSION_DEPTH} levels deep "
                "(a long chain of + or | counts one level each); split it up",
                item.lineno,
            )
        todo.extend((child, depth + 1) for child in item.iter_child_nodes())


def _parsed(
    env: FlowyardEnvironment, source: str, parse: Callable[[], _N], state: str | None
) -> _N:
    """``parse()`` with the shape checks around it; a parser recursion is a nesting problem."""
    _check_shape(env, source, state)
    try:
        tree = parse()
    except RecursionError:
        raise TemplateProblem("the template is nested too deeply to read", 1) from None
    _check_depth(tree)
    internal = python_internals(tree, source)
    if internal:
        name, lineno = internal
        raise TemplateProblem(
            f"templates cannot reach Python internals ({name!r}); the sandbox would "
            "refuse it on every record",
            lineno,
        )
    return tree


def python_internals(node: nodes.Node, source: str) -> tuple[str, int] | None:
    """The first dunder name an expression reaches for (``x.__class__``, ``x['__dict__']``,
    ``x | attr('__class__')``) and its line, or None. Refused at load: the sandbox refuses
    it at run time on every record, so such a template can only ever fail."""
    found = []
    items = (node, *node.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)))
    name: object
    for item in items:
        if isinstance(item, nodes.Getattr):
            name = item.attr
        elif isinstance(item, nodes.Getitem) and isinstance(item.arg, nodes.Const):
            name = item.arg.value
        elif isinstance(item, nodes.Filter) and item.name == "attr" and item.args:
            arg = item.args[0]
            name = arg.value if isinstance(arg, nodes.Const) else None
        else:
            continue
        if isinstance(name, str) and name.startswith("__"):
            found.append((name, item.lineno))
    return min(found, key=lambda hit: source.find(hit[0])) if found else None


def parse_template(env: FlowyardEnvironment, source: str) -> nodes.Expr:
    """The expression a template computes: the lone expression, or a string ``Concat``.

    Raises :class:`TemplateProblem` for a syntax error, a template too long or nested too
    deep, an unknown filter or test, or a reach for Python internals.
    """
    try:
        tree = _parsed(env, source, lambda: env.parse(source), None)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error: {exc.message}", exc.lineno) from None
    parts: list[nodes.Expr] = []
    for stmt in tree.body:
        if not isinstance(stmt, nodes.Output):
            raise TemplateProblem(
                "statements ({% ... %}) are not allowed in values: use an expression, "
                "e.g. `{{ a if cond else b }}`, or a filter",
                stmt.lineno,
            )
        parts.extend(stmt.nodes)
    for part in parts:
        _check_names(env, part)
    if len(parts) == 1 and not isinstance(parts[0], nodes.TemplateData):
        return parts[0]
    pieces = [
        nodes.Const(p.data, lineno=p.lineno) if isinstance(p, nodes.TemplateData) else p
        for p in parts
    ]
    consts = [p for p in pieces if isinstance(p, nodes.Const)]
    if len(consts) == len(pieces):
        return nodes.Const("".join(str(p.value) for p in consts), lineno=1)
    return nodes.Concat(pieces, lineno=pieces[0].lineno)


def parse_condition(env: FlowyardEnvironment, source: str) -> nodes.Expr:
    """The node of a bare expression (``record.total > 100``)."""
    if "{{" in source or "{%" in source:
        raise TemplateProblem(CONDITION_HINT, 1)

    def parse() -> nodes.Expr:
        parser = Parser(env, source, state="variable")
        node = parser.parse_expression()
        if not parser.stream.eos:
            token = parser.stream.current
            raise TemplateSyntaxError(
                f"unexpected {token.value!r} after the expression", token.lineno
            )
        return node

    try:
        node = _parsed(env, source, parse, "variable")
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"expression syntax error: {exc.message}", exc.lineno) from None
    _check_names(env, node)
    return node


def free_names(node: nodes.Node) -> set[str]:
    """The context names an expression reads (``record``, ``vars``, loop variables ...)."""
    return {n.name for n in node.find_all(nodes.Name) if n.ctx == "load"}


# Names whose value differs from one run to the next even for the same record: a flow that
# reads them cannot skip a record for being the same as last time (see engine/unchanged.py).
VARYING_NAMES = frozenset({"run", "now_utc"})


def spec_names(spec: Spec) -> frozenset[str]:
    """Every name the expressions of a compiled value tree read."""
    if isinstance(spec, Expr):
        return frozenset(free_names(spec.node))
    if isinstance(spec, Each):
        return spec_names(spec.each) | spec_names(spec.body)
    if isinstance(spec, When):
        return spec_names(spec.condition) | spec_names(spec.body)
    children = spec.fields.values() if isinstance(spec, Obj) else getattr(spec, "items", ())
    return frozenset().union(*(spec_names(child) for child in children))


def check_free_names(
    env: FlowyardEnvironment, node: nodes.Node, known: Collection[str]
) -> str | None:
    """A message for the first name that is neither a context name nor a global, or None."""
    allowed = set(known) | set(env.globals)
    for name in sorted(free_names(node) - allowed):
        sees = ", ".join(sorted(known))
        hint = did_you_mean(name, _suggestable(allowed))
        return f"unknown name {name!r}{hint}; templates see {sees}"
    return None


def constant_spec(value: Any, path: str = "") -> Const:
    """The tree node of a constant; dates, non-finite floats and objects are refused."""
    if value is None or isinstance(value, str | bool | int):
        return Const(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TemplateProblem(f"{value} is not a number a record can hold", path=path)
        return Const(value)
    if hasattr(value, "isoformat"):
        raise TemplateProblem(
            f"YAML read {value} as a date or time; quote it to keep the text", path=path
        )
    raise TemplateProblem(f"a {type(value).__name__} cannot be used as a value", path=path)


def _tree(env: FlowyardEnvironment, value: Any, path: list[Any]) -> Spec:
    """The value tree of a flow value (no list specs: those belong to mapping files)."""
    where = format_path(path)
    if isinstance(value, str) and is_template(value):
        try:
            return Expr(value, parse_template(env, value))
        except TemplateProblem as exc:
            raise TemplateProblem(exc.message, exc.lineno, where) from None
    if isinstance(value, Mapping):
        fields = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TemplateProblem(
                    f"field names must be text; YAML read {key!r} as a "
                    f"{type(key).__name__}, quote it",
                    path=where,
                )
            fields[key] = _tree(env, item, [*path, key])
        return Obj(fields)
    if isinstance(value, list | tuple):
        return Arr([_tree(env, item, [*path, i]) for i, item in enumerate(value)])
    return constant_spec(value, where)


def _is_constant(spec: Spec) -> bool:
    if isinstance(spec, Const):
        return True
    if isinstance(spec, Obj):
        return all(_is_constant(v) for v in spec.fields.values())
    if isinstance(spec, Arr):
        return all(_is_constant(v) for v in spec.items)
    return False


# -- from a tree to one compiled function ---------------------------------------------------
_unique = itertools.count()
# Expressions that can never evaluate to an Undefined (they raise on one instead), so
# their value needs no check on the way out.
_NEVER_UNDEFINED = (
    nodes.Const,
    nodes.Concat,
    nodes.Compare,
    nodes.Test,
    nodes.Not,
    nodes.BinExpr,
    nodes.UnaryExpr,
)
# Filters that always return a real value (a str, number, list, dict) or raise.
_TOTAL_FILTERS = frozenset(FILTERS) | {
    "capitalize",
    "join",
    "length",
    "lower",
    "replace",
    "string",
    "title",
    "trim",
    "upper",
}


def _checked(node: nodes.Expr) -> nodes.Expr:
    """``node`` made to raise when it yields an Undefined (native output would keep it)."""
    if isinstance(node, nodes.And | nodes.Or):
        # the left side was tested for truth, which raises on an Undefined
        return type(node)(node.left, _checked(node.right), lineno=node.lineno)
    if isinstance(node, _NEVER_UNDEFINED):
        return node
    if isinstance(node, nodes.Filter) and node.name in _TOTAL_FILTERS:
        return node
    if isinstance(node, nodes.CondExpr) and node.expr2 is not None:
        return nodes.CondExpr(
            node.test, _checked(node.expr1), _checked(node.expr2), lineno=node.lineno
        )
    if isinstance(node, nodes.List | nodes.Tuple):
        items = [_checked(item) for item in node.items]
        if isinstance(node, nodes.Tuple):
            return nodes.Tuple(items, "load", lineno=node.lineno)
        return nodes.List(items, lineno=node.lineno)
    if isinstance(node, nodes.Dict):
        pairs = [nodes.Pair(p.key, _checked(p.value), lineno=p.lineno) for p in node.items]
        return nodes.Dict(pairs, lineno=node.lineno)
    return nodes.Filter(node, DEFINED, [], [], None, None, lineno=node.lineno)


def _to_node(spec: Spec, extra: dict[str, Any], env: FlowyardEnvironment) -> nodes.Expr:
    if isinstance(spec, Const):
        return nodes.Const(spec.value)
    if isinstance(spec, Expr):
        return _checked(spec.node)
    if isinstance(spec, Obj):
        return nodes.Dict(
            [nodes.Pair(nodes.Const(k), _to_node(v, extra, env)) for k, v in spec.fields.items()]
        )
    if isinstance(spec, Arr):
        return nodes.List([_to_node(v, extra, env) for v in spec.items])
    if isinstance(spec, Each):
        name = f"fy_each_{next(_unique)}"
        spec.renderer = _EachRenderer(env, spec, name)
        extra[name] = spec.renderer
        return nodes.Filter(spec.each.node, EACH, [nodes.Name(name, "load")], [], None, None)
    if isinstance(spec, When):
        body = _to_node(spec.body, extra, env)
        return nodes.CondExpr(spec.condition.node, body, nodes.Const(None))
    raise TypeError(f"not a value tree node: {spec!r}")


class _Scope(Context):
    """A Context made in one step that reads the caller's variables without copying them.

    flowyard templates are single expressions: no blocks, no assignments, no exports, so
    a context needs only the variables, then the globals, looked up in that order.
    Building a full :class:`Context` and merging globals into a new dict cost more than
    the expression itself.
    """

    # Read-only where Context has dicts and sets: nothing in a single expression writes
    # them, and a write would change every render (hence the ignores).
    vars: Mapping[str, Any] = MappingProxyType({})  # type: ignore[assignment]
    exported_vars: frozenset[str] = frozenset()  # type: ignore[assignment]
    blocks: Mapping[str, Any] = MappingProxyType({})  # type: ignore[assignment]
    globals_keys: frozenset[str] = frozenset()  # type: ignore[assignment]
    name = None

    def __init__(
        self,
        environment: FlowyardEnvironment,
        parent: Mapping[str, Any],
        fy_globals: dict[str, Any],
        eval_ctx: EvalContext,
    ):
        self.environment = environment
        self.parent = parent  # type: ignore[assignment]  # the caller's, not copied
        self.fy_globals = fy_globals
        self.eval_ctx = eval_ctx

    def resolve_or_missing(self, key: str) -> Any:
        parent = self.parent
        if key in parent:
            return parent[key]
        return self.fy_globals.get(key, missing)

    def get_all(self) -> dict[str, Any]:
        return {**self.fy_globals, **self.parent}


class _Compiled:
    """One generated function: ``render(variables)`` runs it in a fresh :class:`_Scope`."""

    __slots__ = ("env", "root", "name", "globals", "eval_ctx")

    def __init__(
        self,
        env: FlowyardEnvironment,
        expr: nodes.Expr,
        name: str,
        extra: dict[str, Any] | None = None,
    ):
        tree = nodes.Template([nodes.Output([expr])])
        tree.set_environment(env)
        tree.set_lineno(1)
        try:
            code = env.compile(tree, name=name, filename=f"<{name}>")
        except TemplateSyntaxError as exc:  # includes TemplateAssertionError
            raise TemplateProblem(exc.message or str(exc), exc.lineno) from None
        except (SyntaxError, RecursionError, MemoryError):
            # Jinja's generated code nests one bracket or more per level of the value
            raise TemplateProblem("the value is nested too deeply to compile", 1) from None
        template = env.template_class.from_code(env, code, env.make_globals(None), None)
        self.env = env
        self.root = template.root_render_func
        self.name = name
        # Globals are read once, here: an environment changed later does not reach them.
        self.globals = {**template.globals, **(extra or {})}
        self.eval_ctx = EvalContext(env, name)

    def render(self, variables: Mapping[str, Any]) -> Any:
        # The root function is a generator that yields exactly one value.
        for value in self.root(_Scope(self.env, variables, self.globals, self.eval_ctx)):
            return value
        return None


def _check_items(items: Any) -> None:
    require_defined(items)
    if items is None or isinstance(items, str | bytes | Mapping) or not isinstance(items, Iterable):
        kind = "null" if items is None else type(items).__name__
        raise TemplateRenderError(f"`each` must give a list, got {kind}")


def _loop(index: int, length: int) -> dict[str, Any]:
    return {
        "index": index + 1,
        "index0": index,
        "first": index == 0,
        "last": index == length - 1,
        "length": length,
    }


class _EachRenderer:
    """The compiled body of a list spec, run once per item in one shared Context."""

    def __init__(self, env: FlowyardEnvironment, spec: Each, name: str):
        extra: dict[str, Any] = {}
        self.compiled = _Compiled(env, _to_node(spec.body, extra, env), name, extra)
        self.item_name = spec.name
        self.uses_loop = spec.uses_loop

    def map(self, parent: Mapping[str, Any], items: Any) -> list[Any]:
        if type(items) is not list:  # JSON lists are lists: the other checks are rare
            _check_items(items)
        elif not items:  # many of a record's lists are empty (no allocations, no properties)
            return []
        scope = dict(parent)
        compiled = self.compiled
        ctx = _Scope(compiled.env, scope, compiled.globals, compiled.eval_ctx)
        root, name = compiled.root, self.item_name
        out: list[Any] = []
        if self.uses_loop:
            items = list(items)
            for index, item in enumerate(items):
                scope[name] = item
                scope["loop"] = _loop(index, len(items))
                out.extend(root(ctx))
        else:
            for item in items:
                scope[name] = item
                out.extend(root(ctx))
        return out


def _python_runtime(
    env: FlowyardEnvironment, name: str
) -> tuple[dict[str, Any], Callable[[Mapping[str, Any]], Context]]:
    """What a generated function needs besides its code: the globals (read once, as
    :class:`_Compiled` does) and a maker of the one context of a render."""
    globals_ = dict(env.globals)
    eval_ctx = EvalContext(env, name)

    def make_context(variables: Mapping[str, Any]) -> Context:
        return _Scope(env, variables, globals_, eval_ctx)

    return globals_, make_context


class Renderer:
    """A compiled value: ``renderer(context) -> value``.

    ``context`` is the template context (``record``, ``vars``, ``meta``, ``run`` and loop
    variables). Failures raise :class:`TemplateRenderError` naming the failing field.
    """

    __slots__ = ("source", "constant", "names_read", "python", "_spec", "_env", "_render", "_slow")

    def __init__(
        self,
        env: FlowyardEnvironment,
        spec: Spec,
        source: Any,
        name: str = "value",
        *,
        jinja: bool = False,
    ):
        self.source = source
        self.constant = _is_constant(spec)
        self.names_read = spec_names(spec)
        self._spec = spec
        self._env = env
        self._slow: dict[int, _Compiled] = {}
        # plain Python (engine.pycodegen); Jinja's own code for what it does not cover,
        # or when asked (``jinja=True``: the tests compare the two)
        self.python = False
        if not jinja:
            try:
                self._render = compile_tree(
                    env, spec, name, *_python_runtime(env, name), check=_checked
                )
                self.python = True
                return
            except Unsupported:
                pass
        extra: dict[str, Any] = {}
        self._render = _Compiled(env, _to_node(spec, extra, env), name, extra).render

    def __call__(self, context: Mapping[str, Any] | None = None) -> Any:
        try:
            return self._render(context or {})
        except Exception as exc:
            raise self.explain(context or {}, exc) from exc

    # -- slow path: only after a failure --------------------------------------------------
    def explain(self, scope: Mapping[str, Any], exc: BaseException) -> TemplateRenderError:
        """One error listing every field that fails on its own (``exc`` when none does).

        Each field is evaluated by itself; a list whose source fails is reported once
        and its items are skipped, an optional object whose condition fails likewise.
        """
        if isinstance(exc, RenderBudgetExceeded):
            # the render as a whole ran too long or built too much: no one field is to
            # blame, and evaluating every field again would cost all of it once more
            return _render_error(exc)
        problems: list[FieldProblem] = []
        index = _SourceIndex(scope)
        self._collect(self._spec, scope, [], problems, index)
        if not problems:
            return _render_error(exc)
        # one problem per field of the record (several output fields may read it)
        first = {p.where or str(p): p for p in reversed(problems)}
        return _error_of([p for p in problems if first[p.where or str(p)] is p])

    def _eval(self, expr: Expr, scope: Mapping[str, Any], bare: bool = False) -> Any:
        compiled = self._slow.get(id(expr))
        if compiled is None:
            env = self._env
            node = parse_condition(env, expr.source) if bare else parse_template(env, expr.source)
            compiled = _Compiled(env, node if bare else _checked(node), "slow")
            self._slow[id(expr)] = compiled
        return compiled.render(scope)

    def _collect(
        self,
        spec: Spec,
        scope: Mapping[str, Any],
        path: list[Any],
        problems: list[FieldProblem],
        index: _SourceIndex,
    ) -> None:
        def failed(exc: BaseException, source: str) -> None:
            problems.append(_problem(exc, format_path(path), source, index))

        if isinstance(spec, Expr):
            try:
                self._eval(spec, scope)
            except Exception as exc:
                failed(exc, spec.source)
        elif isinstance(spec, Obj):
            for key, child in spec.fields.items():
                self._collect(child, scope, [*path, key], problems, index)
        elif isinstance(spec, Arr):
            for position, child in enumerate(spec.items):
                self._collect(child, scope, [*path, position], problems, index)
        elif isinstance(spec, Each):
            try:
                items = self._eval(spec.each, scope)
                _check_items(items)
            except Exception as exc:
                failed(exc, spec.each.source)
                return
            items = list(items)
            for position, item in enumerate(items):
                inner = {**scope, spec.name: item, "loop": _loop(position, len(items))}
                self._collect(spec.body, inner, [*path, position], problems, index)
        elif isinstance(spec, When):
            try:
                holds = bool(self._eval(spec.condition, scope, bare=True))
            except Exception as exc:
                failed(exc, spec.condition.source)
                return
            if holds:
                self._collect(spec.body, scope, path, problems, index)


class _ConstantRenderer(Renderer):
    """A scalar constant: no Jinja at all."""

    __slots__ = ("_value",)

    def __init__(self, value: Any):
        self.source = value
        self.constant = True
        self.names_read = frozenset()
        self._value = value

    def __call__(self, context: Mapping[str, Any] | None = None) -> Any:
        return self._value


def compile_value(
    env: FlowyardEnvironment, value: Any, *, names: Collection[str] | None = None
) -> Callable[[Mapping[str, Any]], Any]:
    """Compile a flow value (template, constant, or dicts and lists of them) once.

    ``names``, when given, are the context names the templates may read; any other name
    is a :class:`TemplateProblem` at compile time instead of an error on every record.
    """
    spec = _tree(env, value, [])
    if names is not None:
        _check_tree_names(env, spec, names)
    if isinstance(spec, Const):
        return _ConstantRenderer(spec.value)
    return Renderer(env, spec, value)


def _check_tree_names(env: FlowyardEnvironment, spec: Spec, names: Collection[str]) -> None:
    if isinstance(spec, Expr):
        message = check_free_names(env, spec.node, names)
        if message:
            raise TemplateProblem(message, spec.node.lineno)
    children = spec.fields.values() if isinstance(spec, Obj) else getattr(spec, "items", ())
    for child in children:
        _check_tree_names(env, child, names)


class Condition:
    """A compiled bare expression: ``condition(context) -> bool``."""

    __slots__ = ("source", "names_read", "python", "_render")

    def __init__(
        self, env: FlowyardEnvironment, source: str, node: nodes.Expr, *, jinja: bool = False
    ):
        self.source = source
        self.names_read = frozenset(free_names(node))
        self.python = False
        if not jinja:  # as Renderer: plain Python unless a node is not covered
            try:
                self._render = compile_expression(
                    env, node, "condition", *_python_runtime(env, "condition")
                )
                self.python = True
                return
            except Unsupported:
                pass
        self._render = _Compiled(env, node, "condition").render

    def __call__(self, context: Mapping[str, Any] | None = None) -> bool:
        try:
            return bool(self._render(context or {}))
        except Exception as exc:
            problem = _problem(exc, "", self.source, _SourceIndex(context or {}))
            raise _error_of([problem]) from exc


def compile_condition(
    env: FlowyardEnvironment, expr: str, *, names: Collection[str] | None = None
) -> Callable[[Mapping[str, Any]], bool]:
    """Compile a bare Jinja expression (``record.fulfillment.method == 'pickup'``) once."""
    if isinstance(expr, bool):
        return lambda context=None: expr
    if not isinstance(expr, str) or not expr.strip():
        raise TemplateProblem("a condition is an expression, e.g. `record.total > 100`")
    node = parse_condition(env, expr)
    if names is not None:
        message = check_free_names(env, node, names)
        if message:
            raise TemplateProblem(message, node.lineno)
    return Condition(env, expr, node)
