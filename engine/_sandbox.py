"""The one Jinja environment of flowyard: sandboxed, native types, strict, retail filters.

- **Sandboxed**: templates come from YAML files and must not reach Python internals
  (``__class__``, ``__globals__``, format-string tricks), change the record (it is an
  :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment`) or hog the machine: ``range``
  and powers are capped, and every operation that can build more than it was given is
  metered, each render within a budget (:mod:`engine._metered`). Jinja's ``lipsum``,
  ``cycler``, ``joiner`` and ``namespace`` globals are removed.
- **Native types**: a lone ``{{ expr }}`` yields the Python value. Jinja's own
  ``NativeEnvironment`` turns text back into values with ``literal_eval`` (so ``"01234"``
  would become ``1234``); flowyard never does that: strings stay strings.
- **Strict**: a missing name or field raises, naming the field and what was there.
- **Fast field reads**: ``record.a.b`` on plain dicts is read inline in the generated
  code; everything else takes the sandbox's checked path. Values are compiled to plain
  Python by :mod:`engine.pycodegen`, which calls the same checked operations of this
  environment (``getattr``, ``getitem``, ``call``, ``call_binop``, the metered filters);
  the code generator below serves what that module leaves to Jinja.

Internal to :mod:`engine.templates`, which re-exports :func:`make_environment` (one per
:class:`engine.Engine`) and compiles every value with it.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from functools import update_wrapper
from types import BuiltinMethodType, GeneratorType, MethodType
from typing import TYPE_CHECKING, Any

from jinja2 import StrictUndefined, Undefined, nodes, pass_context
from jinja2.compiler import optimizeconst
from jinja2.exceptions import SecurityError
from jinja2.nativetypes import NativeCodeGenerator
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    SandboxedEscapeFormatter,
    SandboxedFormatter,
)
from jinja2.utils import missing
from markupsafe import Markup

from engine import _metered
from engine._metered import (
    GROWING_METHODS,
    MAX_SEQUENCE,
    OUTER,
    PACE,
    SMALL,
    SandboxLimit,
    build,
    charge,
    format_field_size,
    limit,
    metered_method,
    paced,
    percent_size,
    weight,
)
from engine.filters import FILTERS, GLOBALS

if TYPE_CHECKING:
    from engine.templates import _EachRenderer

__all__ = [
    "MAX_EXPONENT",
    "MAX_POWER_BITS",
    "MAX_RANGE",
    "MAX_SEQUENCE",
    "FlowyardEnvironment",
    "SandboxLimit",
    "default_environment",
    "make_environment",
]

MAX_RANGE = 10_000  # range() in a template
MAX_EXPONENT = 1_000  # a ** b
MAX_POWER_BITS = 100_000  # and the size of its result

# Internal filters used by the compiled code; the ':' keeps them out of users' templates.
DEFINED = "fy:defined"
EACH = "fy:each"


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
    - A list spec with no list spec inside (``line.tax_lines``), inside another list spec,
      given a short list, calls its renderer inline; anything else goes through the
      ``fy:each`` filter, which paces long lists and links a render's lists to its budget
      (engine._metered). Most of a record's lists are of that kind: they pay nothing.
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
        if node.name == DEFINED and isinstance(node.node, nodes.Getattr):
            return self._inline_getattr(node.node, frame, self.filters[DEFINED])
        if node.name == EACH:
            return self._each(node, frame)
        super().visit_Filter(node, frame)

    @property
    def _lists_inside(self) -> dict[str | None, int]:
        env = self.environment
        assert isinstance(env, FlowyardEnvironment)  # the one environment of this generator
        return env.fy_lists_inside

    def visit_Template(self, node: nodes.Template, frame: Any = None) -> None:
        # a list spec's body is compiled before the bodies around it, under the name its
        # renderer is called by: note how many levels of list specs each one holds
        self._lists_inside[self.name] = 0
        super().visit_Template(node, frame)

    def _each(self, node: nodes.Filter, frame: Any) -> None:
        inner = node.args[0].name if node.args and isinstance(node.args[0], nodes.Name) else None
        levels = self._lists_inside
        below = levels.get(inner, 1)  # unknown: treated as holding list specs
        levels[self.name] = max(levels.get(self.name, 0), below + 1)
        if below:
            return super().visit_Filter(node, frame)
        items = f"fy_t{next(self._temps)}"
        self.write("(")
        self.visit(node.args[0], frame)
        self.write(f".map(context.parent, {items}) if type({items} := ")
        assert node.node is not None  # a filter in an expression has what it filters
        self.visit(node.node, frame)
        self.write(f") is list and len({items}) <= {PACE} and {OUTER!r} in context.parent else ")
        self.write(f"{self.filters[EACH]}(context, {items}, ")
        self.visit(node.args[0], frame)
        self.write("))")


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


@pass_context
def _each_filter(context: Context, items: Any, renderer: _EachRenderer) -> list[Any]:
    """The list of a list spec: ``renderer`` (a compiled body) maps each item.

    A list spec of the render itself links its items' variables to this render (under
    OUTER), so that everything inside charges this render's budget. A long list looks at
    the clock every PACE items, and so does every list spec inside another one that is not
    called inline: nested counts multiply. (The inline ones, short lists with no list spec
    inside, add one factor of at most PACE items between two looks.)
    """
    parent = context.parent
    short = type(items) is list and len(items) <= PACE
    if short and not items:  # many of a record's lists are empty
        return renderer.map(parent, items)
    if not short:
        items = paced(context, items)
    root = parent.get(OUTER)
    if root is None:
        return renderer.map({**parent, OUTER: context}, items)
    charge(root, 0)
    return renderer.map(parent, items)


def _safe_range(*args: int) -> range:
    rng = range(*args)
    if len(rng) > MAX_RANGE:
        raise SandboxLimit(f"range() of {len(rng)} items (the limit is {MAX_RANGE})")
    return rng


class FlowyardEnvironment(ImmutableSandboxedEnvironment):
    """Sandboxed (immutable), native types, strict undefined, retail filters.

    Object access prefers keys to attributes for dicts (records are data: ``record.items``
    is the field ``items`` when the record has one), which is also the fast path.
    """

    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset({"*", "**", "%"})
    concat = staticmethod(_native_concat)  # for Template.render(); flowyard renders natively

    def __init__(self) -> None:
        super().__init__(undefined=_Undefined, autoescape=False, keep_trailing_newline=False)
        for name in ("lipsum", "cycler", "joiner", "namespace"):
            self.globals.pop(name, None)
        self.globals["range"] = _safe_range
        self.globals.update(GLOBALS)
        self.filters.update(FILTERS)
        self.filters.update(_metered.FILTERS)
        self.filters[DEFINED] = _checked_value
        self.filters[EACH] = _each_filter
        self.fy_lists_inside: dict[str | None, int] = {}  # see _CodeGenerator._each

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
            if isinstance(right, int | Decimal) and not -MAX_EXPONENT <= right <= MAX_EXPONENT:
                raise SandboxLimit(f"exponent {right} (the limit is {MAX_EXPONENT})")
            if isinstance(left, int) and isinstance(right, int) and right > 0:
                if left.bit_length() * right > MAX_POWER_BITS:
                    raise SandboxLimit(f"a power of about {left.bit_length() * right} bits")
        elif operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int):
                    size = len(seq) if isinstance(seq, str) else weight(seq)
                    build(context, size * times, "a repeated sequence")
        elif isinstance(left, str):  # %: printf-style formatting
            build(context, percent_size(left, right), "a %-formatted string")
        return self.binop_table[operator](left, right)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        if not self.is_safe_callable(obj):  # as Jinja's own call() does
            raise SecurityError(f"{obj!r} is not safely callable")
        result = context.call(obj, *args, **kwargs)
        # what a metered method built counts against the render (small results need not)
        if isinstance(result, str | list | tuple | dict) and len(result) > SMALL:
            charge(context, len(result))
        return result

    def call_filter(
        self,
        name: str,
        value: Any,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        context: Context | None = None,
        eval_ctx: EvalContext | None = None,
    ) -> Any:
        # `map('filter')` applies a filter per item: a loop, so it looks at the clock
        if context is not None:
            charge(context, 0)
        return super().call_filter(name, value, args, kwargs, context, eval_ctx)

    def call_test(
        self,
        name: str,
        value: Any,
        args: Sequence[Any] | None = None,
        kwargs: Mapping[str, Any] | None = None,
        context: Context | None = None,
        eval_ctx: EvalContext | None = None,
    ) -> Any:
        # `select('test')` and its kin: the same
        if context is not None:
            charge(context, 0)
        return super().call_test(name, value, args, kwargs, context, eval_ctx)

    def wrap_str_format(self, value: Any) -> Any:
        """Jinja's hook for a method looked up on a value (``s.format``, ``s['center']``,
        ``s | attr('zfill')``): the methods that can grow are returned metered."""
        name = getattr(value, "__name__", None)
        if name not in _METERED_NAMES or not isinstance(value, BuiltinMethodType | MethodType):
            return None
        owner = value.__self__
        if name in ("format", "format_map"):
            if not isinstance(owner, str):
                return None
            return update_wrapper(self._metered_format(owner, name == "format_map"), value)
        if (
            isinstance(owner, str | bytes | bytearray)
            and name != "to_bytes"
            or (name == "to_bytes" and isinstance(owner, int))
        ):
            return update_wrapper(metered_method(value, name, owner), value)
        return None

    def _metered_format(self, template: str, is_map: bool) -> Any:
        def format_string(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument, no keywords")
                mapping = args[0]
                args, kwargs = (), mapping
            if isinstance(template, Markup):
                formatter: Any = _MeteredEscapeFormatter(self, template, escape=template.escape)
            else:
                formatter = _MeteredFormatter(self, template)
            return type(template)(formatter.vformat(template, args, kwargs))

        return format_string


_METERED_NAMES = GROWING_METHODS | {"format", "format_map", "to_bytes"}


class _MeteredFormatter(SandboxedFormatter):
    """``str.format`` in the sandbox, refused once the result would pass the size limit."""

    def __init__(self, env: FlowyardEnvironment, template: str, **kwargs: Any) -> None:
        super().__init__(env, **kwargs)
        self.size = len(template)

    def format_field(self, value: Any, format_spec: str) -> Any:
        self.size += format_field_size(value, format_spec)
        limit(self.size, "a formatted string")
        return super().format_field(value, format_spec)


class _MeteredEscapeFormatter(_MeteredFormatter, SandboxedEscapeFormatter):
    """The same for a ``Markup`` template (it escapes what it formats)."""


def make_environment() -> FlowyardEnvironment:
    """A new flowyard environment; an :class:`engine.Engine` makes one and keeps it."""
    return FlowyardEnvironment()


@functools.cache
def default_environment() -> FlowyardEnvironment:
    """The module-wide environment, for callers that have no Engine."""
    return make_environment()
