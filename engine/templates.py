"""The one Jinja environment of flowyard, and values compiled once into callables.

A value in a flow or a mapping is a *template* when it contains ``{{``: a lone
``{{ expr }}`` yields the expression's own Python value (numbers stay numbers, a string
``"01234"`` stays a string), text mixed with expressions yields a string. Anything else
is a constant. A *condition* (``filter``, route ``when``) is a bare expression.

The environment is sandboxed (templates cannot reach Python internals or mutate the
record), undefined names and missing fields raise instead of rendering empty, and the
retail filters of :mod:`engine.filters` are built in.

Compilation happens once: a value, however deeply nested, becomes ONE Jinja AST and one
generated Python function (see :class:`Renderer`); a render builds a fresh
:class:`jinja2.runtime.Context` and runs that function, with no ``Template.render``
machinery on the way. Only when a render fails are the parts evaluated one by one, to name
the field that failed.

Errors::

    TemplateProblem                 the template itself is wrong (load time, with .lineno)
    RecordError
    └── MappingError
        └── TemplateRenderError     a template failed on one record (.field, .source)
            ├── UndefinedValueError a name or field it uses is missing
            └── SandboxViolation    it tried to reach Python internals or passed a limit
"""

from __future__ import annotations

import difflib
import functools
import itertools
import math
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import GeneratorType, MappingProxyType
from typing import Any

from jinja2 import StrictUndefined, Undefined, nodes, pass_context
from jinja2.compiler import optimizeconst
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.nativetypes import NativeCodeGenerator
from jinja2.nodes import EvalContext
from jinja2.parser import Parser
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

from engine.errors import MappingError
from engine.filters import FILTERS, GLOBALS, FilterError, _defined
from engine.yamlpos import format_path

__all__ = [
    "CONTEXT_NAMES",
    "Condition",
    "Renderer",
    "SandboxViolation",
    "TemplateProblem",
    "TemplateRenderError",
    "UndefinedValueError",
    "compile_condition",
    "compile_value",
    "default_environment",
    "is_template",
    "make_environment",
]

#: The names the engine puts in a template's context (loop variables come on top).
CONTEXT_NAMES = ("record", "vars", "meta", "run", "parent")

MAX_RANGE = 10_000  # range() in a template
MAX_SEQUENCE = 1_000_000  # "x" * n, [..] * n
MAX_EXPONENT = 1_000  # a ** b
MAX_POWER_BITS = 100_000  # and the size of its result

CONDITION_HINT = "conditions are bare expressions: write `x`, not `{{ x }}`"
_DEFINED = "fy:defined"  # internal filters: a ':' keeps them out of reach of user templates
_EACH = "fy:each"


# -- errors ---------------------------------------------------------------------------------
class TemplateProblem(Exception):
    """A template cannot be compiled; ``lineno`` is relative to the template's first line."""

    def __init__(self, message: str, lineno: int | None = None, path: str = ""):
        super().__init__(message)
        self.message = message
        self.lineno = lineno
        self.path = path


class TemplateRenderError(MappingError):
    """A template failed on one record; ``field`` is the path inside the value, ``source``
    the template text."""

    def __init__(
        self,
        reason: str,
        *,
        field: str = "",
        source: str = "",
        mapping: str = "",
        record_key: str = "",
    ):
        where = []
        if mapping:
            where.append(f"mapping {mapping}")
        if field:
            where.append(f"field {field}")
        if record_key:
            where.append(f"record {record_key}")
        message = (", ".join(where) + ": " if where else "") + reason
        if source:
            message += f" (in `{source}`)"
        super().__init__(message, mapping=mapping, field=field, record_key=record_key)
        self.reason = reason
        self.source = source

    def located(self, *, mapping: str = "", record_key: str = "") -> TemplateRenderError:
        """The same error, naming the mapping and the record."""
        return type(self)(
            self.reason,
            field=self.field,
            source=self.source,
            mapping=mapping,
            record_key=record_key,
        )


class UndefinedValueError(TemplateRenderError):
    """A template used a name or a field the record does not have (and gave no default)."""


class SandboxViolation(TemplateRenderError):
    """A template tried to reach Python internals, or passed one of the sandbox's limits."""


class _SandboxLimit(SecurityError):
    pass


def _render_error(exc: BaseException, field: str = "", source: str = "") -> TemplateRenderError:
    if isinstance(exc, TemplateRenderError):
        return type(exc)(exc.reason, field=field or exc.field, source=source or exc.source)
    if isinstance(exc, _SandboxLimit):
        return SandboxViolation(
            f"template passed a sandbox limit: {exc}", field=field, source=source
        )
    if isinstance(exc, SecurityError):
        reason = f"template tried to reach Python internals: {exc}"
        return SandboxViolation(reason, field=field, source=source)
    if isinstance(exc, UndefinedError):
        return UndefinedValueError(str(exc), field=field, source=source)
    if isinstance(exc, FilterError):
        return TemplateRenderError(str(exc), field=field, source=source)
    return TemplateRenderError(f"{type(exc).__name__}: {exc}", field=field, source=source)


# -- the environment ------------------------------------------------------------------------
class _Undefined(StrictUndefined):
    """StrictUndefined whose message says which field is missing and what was there."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        hint, obj, name = self._undefined_hint, self._undefined_obj, self._undefined_name
        if hint:
            return hint
        if obj is missing:
            return f"{name!r} is undefined"
        if isinstance(obj, Mapping):
            keys = [str(k) for k in itertools.islice(obj, 12)]
            more = ", ..." if len(obj) > 12 else ""
            has = f"it has: {', '.join(keys)}{more}" if keys else "it is empty"
            return f"no field {name!r} ({has}); add `| default(...)` if it may be missing"
        if isinstance(obj, list | tuple):
            return f"no item {name!r} in a list of {len(obj)}"
        if obj is None:
            return f"cannot read {name!r} of None (the value before it is null)"
        return f"{type(obj).__name__} value has no attribute {name!r}"


class _CodeGenerator(NativeCodeGenerator):
    """Native output, and a fast path for reading a field of a dict.

    - No constant folding into text: Jinja's native generator joins constant outputs into
      a string and relies on ``literal_eval`` to get the value back; flowyard never parses
      strings back, so a constant expression is emitted as a Python literal instead.
    - ``a.b`` where ``a`` is a plain dict holding ``b`` (a record field, the common case)
      is read inline; anything else (a missing key, an object, a sandbox check) goes
      through ``environment.getattr`` as before. Same result, a fifth of the cost.
    """

    _temps = itertools.count()

    def _output_child_to_const(self, node: nodes.Expr, frame: Any, finalize: Any) -> Any:
        if isinstance(node, nodes.TemplateData):
            return super()._output_child_to_const(node, frame, finalize)
        raise nodes.Impossible()

    def _inline_getattr(self, node: nodes.Getattr, frame: Any, check: str = "") -> None:
        temp, attr = f"fy_t{next(self._temps)}", repr(node.attr)
        self.write(f"({temp}[{attr}] if type({temp} := ")
        self.visit(node.node, frame)
        fallback = f"environment.getattr({temp}, {attr})"
        self.write(f") is dict and {attr} in {temp} else {check}({fallback}))")

    @optimizeconst
    def visit_Getattr(self, node: nodes.Getattr, frame: Any) -> None:
        if self.environment.is_async or node.ctx != "load":
            return super().visit_Getattr(node, frame)
        self._inline_getattr(node, frame)

    @optimizeconst
    def visit_Filter(self, node: nodes.Filter, frame: Any) -> None:
        # a checked field read: only the slow branch can give an Undefined
        if node.name == _DEFINED and isinstance(node.node, nodes.Getattr):
            return self._inline_getattr(node.node, frame, self.filters[_DEFINED])
        super().visit_Filter(node, frame)


def _checked_value(value: Any) -> Any:
    """A computed value on its way out: no Undefined in it, no lazy generator."""
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    if isinstance(value, GeneratorType):  # `map`, `select` ... are lazy
        value = list(value)
    if type(value) is list:
        for item in value:
            if isinstance(item, Undefined):
                item._fail_with_undefined_error()
    return value


def _native_concat(values: Iterable[Any]) -> Any:
    values = list(values)
    return values[0] if len(values) == 1 else "".join(map(str, values))


def _safe_range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise _SandboxLimit(f"range() of {len(rng)} items (the limit is {MAX_RANGE})")
    return rng


class FlowyardEnvironment(ImmutableSandboxedEnvironment):
    """Sandboxed (immutable), native types, strict undefined, retail filters.

    Object access prefers keys to attributes for dicts (records are data: ``record.items``
    is the field ``items`` when the record has one), which is also the fast path.
    """

    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset({"*", "**"})
    concat = staticmethod(_native_concat)  # for Template.render(); flowyard renders natively

    def __init__(self) -> None:
        super().__init__(undefined=_Undefined, autoescape=False, keep_trailing_newline=False)
        for name in ("lipsum", "cycler", "joiner", "namespace"):
            self.globals.pop(name, None)
        self.globals["range"] = _safe_range
        self.globals.update(GLOBALS)
        self.filters.update(FILTERS)
        self.filters[_DEFINED] = _checked_value
        self.filters[_EACH] = _each_filter

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, dict):
            try:
                return obj[attribute]
            except KeyError:
                if not hasattr(obj, attribute):
                    return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        # Jinja returns an Undefined here, which a native render could pass on as a value
        # (e.g. inside a list from `map`); refusing at once is simpler and safer.
        kind = type(obj).__name__
        raise SecurityError(f"access to attribute {attribute!r} of a {kind!r} object is unsafe")

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, int | Decimal) and abs(right) > MAX_EXPONENT:
                raise _SandboxLimit(f"exponent {right} (the limit is {MAX_EXPONENT})")
            if isinstance(left, int) and isinstance(right, int) and right > 0:
                if left.bit_length() * right > MAX_POWER_BITS:
                    raise _SandboxLimit(f"a power of about {left.bit_length() * right} bits")
        else:
            for seq, times in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(times, int)
                    and len(seq) * times > MAX_SEQUENCE
                ):
                    raise _SandboxLimit(f"a sequence of {len(seq) * times} (limit {MAX_SEQUENCE})")
        return self.binop_table[operator](left, right)


def make_environment() -> FlowyardEnvironment:
    """A new flowyard environment; an :class:`engine.Engine` makes one and keeps it."""
    return FlowyardEnvironment()


@functools.cache
def default_environment() -> FlowyardEnvironment:
    """The module-wide environment, for callers that have no Engine."""
    return make_environment()


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
    fields: dict[str, Any]


@dataclass(eq=False)
class Arr:
    items: list[Any]


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


def is_template(value: Any) -> bool:
    """True when ``value`` is a string holding a Jinja expression or statement."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, [c for c in choices if ":" not in c], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_names(env: FlowyardEnvironment, node: nodes.Node) -> None:
    found = itertools.chain([node], node.find_all((nodes.Filter, nodes.Test)))
    for item in (n for n in found if isinstance(n, nodes.Filter | nodes.Test)):
        table, kind = (
            (env.filters, "filter") if isinstance(item, nodes.Filter) else (env.tests, "test")
        )
        if item.name not in table:
            raise TemplateProblem(
                f"unknown {kind} {item.name!r}{did_you_mean(item.name, table)}", item.lineno
            )


def parse_template(env: FlowyardEnvironment, source: str) -> nodes.Expr:
    """The expression a template computes: the lone expression, or a string ``Concat``."""
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"template syntax error: {exc.message}", exc.lineno) from None
    parts: list[nodes.Node] = []
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
    if all(isinstance(p, nodes.Const) for p in pieces):
        return nodes.Const("".join(p.value for p in pieces), lineno=1)
    return nodes.Concat(pieces, lineno=pieces[0].lineno)


def parse_condition(env: FlowyardEnvironment, source: str) -> nodes.Expr:
    """The node of a bare expression (``record.total > 100``)."""
    if "{{" in source or "{%" in source:
        raise TemplateProblem(CONDITION_HINT, 1)
    try:
        parser = Parser(env, source, state="variable")
        node = parser.parse_expression()
        if not parser.stream.eos:
            token = parser.stream.current
            raise TemplateSyntaxError(
                f"unexpected {token.value!r} after the expression", token.lineno
            )
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"expression syntax error: {exc.message}", exc.lineno) from None
    _check_names(env, node)
    return node


def free_names(node: nodes.Node) -> set[str]:
    """The context names an expression reads (``record``, ``vars``, loop variables ...)."""
    return {n.name for n in node.find_all(nodes.Name) if n.ctx == "load"}


def check_free_names(
    env: FlowyardEnvironment, node: nodes.Node, known: Collection[str]
) -> str | None:
    """A message for the first name that is neither a context name nor a global, or None."""
    allowed = set(known) | set(env.globals)
    for name in sorted(free_names(node) - allowed):
        sees = ", ".join(sorted(known))
        return f"unknown name {name!r}{did_you_mean(name, allowed)}; templates see {sees}"
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


def _tree(env: FlowyardEnvironment, value: Any, path: list[Any]) -> Any:
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


def _is_constant(spec: Any) -> bool:
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
    return nodes.Filter(node, _DEFINED, [], [], None, None, lineno=node.lineno)


def _to_node(spec: Any, extra: dict[str, Any], env: FlowyardEnvironment) -> nodes.Expr:
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
        return nodes.Filter(spec.each.node, _EACH, [nodes.Name(name, "load")], [], None, None)
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

    vars: Mapping[str, Any] = MappingProxyType({})
    exported_vars: frozenset[str] = frozenset()
    blocks: Mapping[str, Any] = MappingProxyType({})
    globals_keys: frozenset[str] = frozenset()
    name = None

    def __init__(self, environment: Any, parent: Mapping[str, Any], fy_globals: dict, eval_ctx):
        self.environment = environment
        self.parent = parent
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

    def __init__(self, env: FlowyardEnvironment, expr: nodes.Expr, name: str, extra=None):
        tree = nodes.Template([nodes.Output([expr])])
        tree.set_environment(env)
        tree.set_lineno(1)
        try:
            code = env.compile(tree, name=name, filename=f"<{name}>")
        except TemplateSyntaxError as exc:  # includes TemplateAssertionError
            raise TemplateProblem(exc.message or str(exc), exc.lineno) from None
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


@pass_context
def _each_filter(context: Context, items: Any, renderer: _EachRenderer) -> list:
    return renderer.map(context.parent, items)


def _check_items(items: Any) -> None:
    _defined(items)
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

    def map(self, parent: Mapping[str, Any], items: Any) -> list:
        _check_items(items)
        scope = dict(parent)
        compiled = self.compiled
        ctx = _Scope(compiled.env, scope, compiled.globals, compiled.eval_ctx)
        root, name, out = compiled.root, self.item_name, []
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


class Renderer:
    """A compiled value: ``renderer(context) -> value``.

    ``context`` is the template context (``record``, ``vars``, ``meta``, ``run`` and loop
    variables). Failures raise :class:`TemplateRenderError` naming the failing field.
    """

    __slots__ = ("source", "constant", "_spec", "_compiled", "_slow")

    def __init__(self, env: FlowyardEnvironment, spec: Any, source: Any, name: str = "value"):
        self.source = source
        self.constant = _is_constant(spec)
        self._spec = spec
        extra: dict[str, Any] = {}
        self._compiled = _Compiled(env, _to_node(spec, extra, env), name, extra)
        self._slow: dict[int, _Compiled] = {}

    def __call__(self, context: Mapping[str, Any] | None = None) -> Any:
        try:
            return self._compiled.render(context or {})
        except Exception as exc:
            raise self.explain(context or {}, exc) from exc

    # -- slow path: only after a failure --------------------------------------------------
    def explain(self, scope: Mapping[str, Any], exc: BaseException) -> TemplateRenderError:
        """The error of the first field that fails on its own, or ``exc`` without a field."""
        try:
            self._locate(self._spec, scope, [])
        except _Located as found:
            return _render_error(found.exc, format_path(found.path), found.source)
        return _render_error(exc)

    def _eval(self, expr: Expr, scope: dict[str, Any], bare: bool = False) -> Any:
        compiled = self._slow.get(id(expr))
        if compiled is None:
            env = self._compiled.env
            node = parse_condition(env, expr.source) if bare else parse_template(env, expr.source)
            compiled = _Compiled(env, node if bare else _checked(node), "slow")
            self._slow[id(expr)] = compiled
        return compiled.render(scope)

    def _try(self, expr: Expr, scope: dict, path: list, bare: bool = False) -> Any:
        try:
            return self._eval(expr, scope, bare)
        except Exception as exc:
            raise _Located(path, expr.source, exc) from None

    def _locate(self, spec: Any, scope: dict[str, Any], path: list[Any]) -> None:
        if isinstance(spec, Expr):
            self._try(spec, scope, path)
        elif isinstance(spec, Obj):
            for key, child in spec.fields.items():
                self._locate(child, scope, [*path, key])
        elif isinstance(spec, Arr):
            for index, child in enumerate(spec.items):
                self._locate(child, scope, [*path, index])
        elif isinstance(spec, Each):
            items = self._try(spec.each, scope, path)
            try:
                _check_items(items)
            except Exception as exc:
                raise _Located(path, spec.each.source, exc) from None
            items = list(items)
            for index, item in enumerate(items):
                inner = {**scope, spec.name: item, "loop": _loop(index, len(items))}
                self._locate(spec.body, inner, [*path, index])
        elif isinstance(spec, When):
            holds = self._try(spec.condition, scope, path, bare=True)
            try:
                holds = bool(holds)
            except Exception as exc:
                raise _Located(path, spec.condition.source, exc) from None
            if holds:
                self._locate(spec.body, scope, path)


class _Located(Exception):
    def __init__(self, path: list[Any], source: str, exc: BaseException):
        self.path, self.source, self.exc = path, source, exc


class _ConstantRenderer(Renderer):
    """A scalar constant: no Jinja at all."""

    __slots__ = ("_value",)

    def __init__(self, value: Any):
        self.source = value
        self.constant = True
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


def _check_tree_names(env: FlowyardEnvironment, spec: Any, names: Collection[str]) -> None:
    if isinstance(spec, Expr):
        message = check_free_names(env, spec.node, names)
        if message:
            raise TemplateProblem(message, spec.node.lineno)
    children = spec.fields.values() if isinstance(spec, Obj) else getattr(spec, "items", ())
    for child in children:
        _check_tree_names(env, child, names)


class Condition:
    """A compiled bare expression: ``condition(context) -> bool``."""

    __slots__ = ("source", "_compiled")

    def __init__(self, env: FlowyardEnvironment, source: str, node: nodes.Expr):
        self.source = source
        self._compiled = _Compiled(env, node, "condition")

    def __call__(self, context: Mapping[str, Any] | None = None) -> bool:
        try:
            return bool(self._compiled.render(context or {}))
        except Exception as exc:
            raise _render_error(exc, source=self.source) from exc


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
