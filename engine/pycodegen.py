"""Value trees compiled to plain Python: one function per value, no Jinja runtime.

A value tree (:mod:`engine.templates`: a mapping's fields, a send's options, a label, a
condition) is parsed and checked by Jinja once; this module turns its expression AST into
the source of ONE Python function and compiles it with ``compile()``. The function reads
the caller's variables directly (no :class:`~jinja2.runtime.Context` per render, no
generator, no ``Template`` machinery), reads record fields as dict items, calls filters
directly, and runs list specs (``each``) as loops inside the same function. Jinja's own
compiled code costs several times that per record (bench/bench_mapping.py).

**Same semantics as the Jinja path.** Each node compiles to the very operation Jinja's
sandboxed code generator emits for it (``environment.getattr``, ``getitem``, ``call``,
``call_binop``, the filter and test functions with their context), so results and errors
are the same; only the common cases are written inline, and inline only where the outcome
cannot differ:

- ``a.b`` of a plain dict holding ``b`` is ``a['b']``; anything else (a missing field, an
  object, a sandbox check) calls the sandbox's ``getattr``, which gives the same
  :class:`~jinja2.Undefined` Jinja would give: a missing field is an Undefined object, on
  the slow branch only, and fails where Jinja's would (``line_items[2].sku is missing``).
- ``x | default(d)`` and ``is defined`` / ``is none`` are written out (``a.get('b', d)``
  for a dict), with ``d`` evaluated as eagerly as Jinja does (a constant may be lazy).
- ``*`` of two numbers is multiplied; any other ``*``, ``**`` and ``%`` go through the
  sandbox's metered ``call_binop``.
- ``select`` / ``reject`` without a test and ``map(attribute=...)`` are the generators
  Jinja's filters make, without preparing a getter per call; a filter with an async twin
  is called as the sync function Jinja's wrapper would pick; text around several
  expressions is joined by Jinja's own ``str_join``; ``loop.index`` and its kin come from
  the loop's counter.
- A list spec paces long lists and charges the render's budget exactly where the Jinja
  path does (engine._sandbox's ``fy:each``), with one context per render for the meters.

**Safety.** The source is built from AST nodes only: names of the template (``record``,
loop variables) become generated local names and are read by ``repr()`` of the name;
constants are ``repr()`` of a ``str``/``int``/``bool``/``None`` or a reference into a
table of values; filters, tests and helpers are table references. No text of a template is
pasted into the source.

**What falls back.** A node this module does not cover raises :class:`Unsupported`; the
value tree is then compiled by Jinja as before (engine.templates). Not covered: an inline
``if`` without ``else``, ``*args`` / ``**kwargs`` in a call, filter or test, a float literal
too big for a float (``1e400``), a value nested deeper than Python's compiler takes (about
200 brackets, 20 list specs inside one another), and any node Jinja's expression parser
does not produce. No shipped flow or mapping has any of them.
"""

from __future__ import annotations

import itertools
import keyword
import math
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from jinja2 import Undefined, nodes
from jinja2.filters import (
    _prepare_attribute_parts,
    do_default,
    sync_do_map,
    sync_do_reject,
    sync_do_select,
)
from jinja2.runtime import str_join
from jinja2.tests import test_defined, test_none, test_undefined
from jinja2.utils import _PassArg

from engine._metered import PACE, charge, paced
from engine._sandbox import DEFINED, EACH, FlowyardEnvironment, _checked_value

if TYPE_CHECKING:
    from engine.templates import Spec

__all__ = ["Unsupported", "compile_expression", "compile_tree"]


class Unsupported(Exception):
    """A node the Python code generator does not cover: the value keeps the Jinja path."""


_OPERATORS = {
    "eq": "==",
    "ne": "!=",
    "gt": ">",
    "gteq": ">=",
    "lt": "<",
    "lteq": "<=",
    "in": "in",
    "notin": "not in",
}
_BINARY = {
    nodes.Add: "+",
    nodes.Sub: "-",
    nodes.Mul: "*",
    nodes.Div: "/",
    nodes.FloorDiv: "//",
    nodes.Pow: "**",
    nodes.Mod: "%",
}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NUMBERS = frozenset({int, float, Decimal})
# Values a checked output (engine._sandbox's fy:defined) passes as they are.
_PLAIN = frozenset({str, int, float, Decimal, bool, type(None), dict})


def _select(value: Any, keep: bool) -> Iterator[Any]:
    """Jinja's ``select`` (``keep``) or ``reject`` without a test: by each item's truth."""
    if value:
        for item in value:
            if bool(item) is keep:
                yield item


def _map_attribute(
    getitem: Callable[[Any, Any], Any], value: Any, parts: tuple[Any, ...], default: Any
) -> Iterator[Any]:
    """Jinja's ``map(attribute=..., default=...)`` (its attribute getter, inlined)."""
    if value:
        for item in value:
            for part in parts:
                item = getitem(item, part)
                if default is not None and isinstance(item, Undefined):
                    item = default
            yield item


def _literal(node: nodes.Node) -> bool:
    """A node whose evaluation cannot fail or differ: a constant, or a list, tuple or dict
    of constants with constant (hashable) keys."""
    if isinstance(node, nodes.Const):
        return True
    if isinstance(node, nodes.List | nodes.Tuple):
        return all(_literal(item) for item in node.items)
    if isinstance(node, nodes.Dict):
        return all(
            isinstance(p.key, nodes.Const)
            and isinstance(p.key.value, str | int | bool | None)
            and _literal(p.value)
            for p in node.items
        )
    return False


class _Generator:
    """Writes one function's source; every name in it is generated here."""

    def __init__(self, env: FlowyardEnvironment, globals_: Mapping[str, Any]):
        self.env = env
        self.globals = globals_
        self.table: dict[str, Any] = {}  # the module namespace: constants and helpers
        self.by_id: dict[int, str] = {}
        self.lines: list[str] = []
        self.indent = 1
        self.counter = itertools.count()
        self.free: dict[str, str] = {}  # a name read from the variables -> its local
        self.bound: list[dict[str, str]] = []  # names of the enclosing list specs
        self.used: set[str] = set()  # the bound locals read
        self.flags: dict[str, str] = {}  # a local -> its "is a plain dict" flag
        self.counters: dict[str, tuple[str, str]] = {}  # a loop local -> index, length
        self.uses_ctx = False

    # -- names and constants ------------------------------------------------------------
    def temp(self, prefix: str = "t") -> str:
        return f"fy_{prefix}{next(self.counter)}"

    def ref(self, value: Any, hint: str = "c") -> str:
        """A table reference to ``value`` (one per object)."""
        name = self.by_id.get(id(value))
        if name is None:
            name = self.temp(hint)
            self.table[name] = value
            self.by_id[id(value)] = name
        return name

    def const(self, value: Any) -> str:
        kind = type(value)
        if kind is float and not math.isfinite(value):
            # Jinja writes str(value): `inf`, a name error at run time; left to Jinja
            raise Unsupported("a literal too big for a float")
        if kind is str or kind is bool or value is None:
            return repr(value)
        if kind is int and abs(value) < 10**15:
            return repr(value)
        return self.ref(value)

    @property
    def ctx(self) -> str:
        self.uses_ctx = True
        return "fy_ctx"

    def line(self, text: str) -> None:
        self.lines.append("    " * self.indent + text)

    @contextmanager
    def block(self) -> Iterator[None]:
        self.indent += 1
        try:
            yield
        finally:
            self.indent -= 1

    # -- expressions ----------------------------------------------------------------------
    def expr(self, node: nodes.Node) -> str:
        method = getattr(self, f"visit_{type(node).__name__}", None)
        if method is None:
            raise Unsupported(type(node).__name__)
        text: str = method(node)
        return text

    def visit_Const(self, node: nodes.Const) -> str:
        return self.const(node.value)

    def visit_TemplateData(self, node: nodes.TemplateData) -> str:
        return self.const(node.data)

    def visit_Name(self, node: nodes.Name) -> str:
        if node.ctx != "load":
            raise Unsupported(f"Name in {node.ctx}")
        for scope in reversed(self.bound):
            if node.name in scope:
                self.used.add(scope[node.name])
                return scope[node.name]
        if node.name not in self.free:
            self.free[node.name] = self.temp("n")
        return self.free[node.name]

    def subject(self, node: nodes.Expr) -> tuple[str, str]:
        """What a field is read from, and the test that it is a plain dict: for a name,
        its local and a flag set once where the name is bound; else a temporary."""
        if isinstance(node, nodes.Name) and node.ctx == "load":
            local = self.visit_Name(node)
            flag = self.flags.get(local)
            if flag is None:
                flag = self.flags[local] = f"{local}_is_dict"
            return local, flag
        temp = self.temp()
        return temp, f"type({temp} := {self.expr(node)}) is dict"

    def visit_Getattr(self, node: nodes.Getattr, checked: bool = False) -> str:
        if node.ctx != "load":
            raise Unsupported(f"Getattr in {node.ctx}")
        loop = self.loop_attribute(node)
        if loop is not None:
            return loop
        obj, is_dict = self.subject(node.node)
        attr = repr(str(node.attr))
        slow = f"fy_getattr({obj}, {attr})"
        if checked:
            slow = f"fy_checked({slow})"
        return f"({obj}[{attr}] if {is_dict} and {attr} in {obj} else {slow})"

    def loop_attribute(self, node: nodes.Getattr) -> str | None:
        """``loop.index`` and its kin computed from the loop's counter (the values
        engine.templates' loop dict holds), so the dict is made only when ``loop`` is
        used otherwise."""
        if not (isinstance(node.node, nodes.Name) and node.node.name == "loop"):
            return None
        local = next((s["loop"] for s in reversed(self.bound) if "loop" in s), None)
        if local is None or local not in self.counters:
            return None
        index, length = self.counters[local]
        return {
            "index": f"({index} + 1)",
            "index0": index,
            "first": f"({index} == 0)",
            "last": f"({index} == {length} - 1)",
            "length": length,
        }.get(str(node.attr))

    def visit_Getitem(self, node: nodes.Getitem) -> str:
        if node.ctx != "load":
            raise Unsupported(f"Getitem in {node.ctx}")
        obj = self.expr(node.node)
        if isinstance(node.arg, nodes.Slice):
            return f"{obj}[{self.slice(node.arg)}]"
        getitem = "fy_getitem"
        if isinstance(node.arg, nodes.Const) and type(node.arg.value) is str:
            key, temp = repr(node.arg.value), self.temp()
            return (
                f"({temp}[{key}] if type({temp} := {obj}) is dict and {key} in {temp} "
                f"else {getitem}({temp}, {key}))"
            )
        return f"{getitem}({obj}, {self.expr(node.arg)})"

    def slice(self, node: nodes.Slice) -> str:
        parts = [self.expr(p) if p is not None else "" for p in (node.start, node.stop)]
        text = ":".join(parts)
        if node.step is not None:
            text += ":" + self.expr(node.step)
        return text

    def visit_Tuple(self, node: nodes.Tuple) -> str:
        if node.ctx != "load":
            raise Unsupported(f"Tuple in {node.ctx}")
        items = [self.expr(item) for item in node.items]
        return "(" + ", ".join(items) + (",)" if len(items) == 1 else ")")

    def visit_List(self, node: nodes.List) -> str:
        return "[" + ", ".join(self.expr(item) for item in node.items) + "]"

    def visit_Dict(self, node: nodes.Dict) -> str:
        pairs = (f"{self.expr(p.key)}: {self.expr(p.value)}" for p in node.items)
        return "{" + ", ".join(pairs) + "}"

    def visit_CondExpr(self, node: nodes.CondExpr) -> str:
        if node.expr2 is None:
            # Jinja's Undefined names the template in its message: left to Jinja
            raise Unsupported("an inline if without else")
        return f"({self.expr(node.expr1)} if {self.expr(node.test)} else {self.expr(node.expr2)})"

    def visit_And(self, node: nodes.And) -> str:
        return f"({self.expr(node.left)} and {self.expr(node.right)})"

    def visit_Or(self, node: nodes.Or) -> str:
        return f"({self.expr(node.left)} or {self.expr(node.right)})"

    def visit_Not(self, node: nodes.Not) -> str:
        if isinstance(node.node, nodes.Test):
            inline = self.inline_test(node.node, negated=True)
            if inline is not None:
                return inline
        return f"(not {self.expr(node.node)})"

    def visit_Neg(self, node: nodes.Neg) -> str:
        return f"(-{self.expr(node.node)})"

    def visit_Pos(self, node: nodes.Pos) -> str:
        return f"(+{self.expr(node.node)})"

    def visit_Compare(self, node: nodes.Compare) -> str:
        parts = [self.expr(node.expr)]
        for operand in node.ops:
            parts += [_OPERATORS[operand.op], self.expr(operand.expr)]
        return "(" + " ".join(parts) + ")"

    def binary(self, node: nodes.BinExpr) -> str:
        op = _BINARY[type(node)]
        left, right = self.expr(node.left), self.expr(node.right)
        if op not in self.env.intercepted_binops:
            return f"({left} {op} {right})"
        if op == "*":
            # numbers multiplied here (both sides evaluated: `&`), the rest metered
            a, b = self.temp(), self.temp()
            numbers = f"(type({a} := {left}) in fy_numbers) & (type({b} := {right}) in fy_numbers)"
            return f"({a} * {b} if {numbers} else fy_binop({self.ctx}, '*', {a}, {b}))"
        binop = "fy_binop"
        return f"{binop}({self.ctx}, {op!r}, {left}, {right})"

    visit_Add = visit_Sub = visit_Mul = visit_Div = binary
    visit_FloorDiv = visit_Pow = visit_Mod = binary

    def visit_Concat(self, node: nodes.Concat) -> str:
        # Jinja's str_join: every part evaluated, then str() of each, joined
        parts: list[tuple[str, str | None]] = []  # (source, its text when constant)
        for part in node.nodes:
            text = part.data if isinstance(part, nodes.TemplateData) else None
            if isinstance(part, nodes.Const) and type(part.value) is str:
                text = part.value
            parts.append((repr(text), text) if text is not None else (self.expr(part), None))
        values = [source for source, text in parts if text is None]
        if not values:
            return repr("".join(text or "" for _, text in parts))
        if len(values) > 1:
            # not `'%s%s' % (a, b)`: Python makes that an f-string, which turns `a` into
            # text before it evaluates `b` (Jinja evaluates `b` first: its error comes first)
            return f"fy_str_join(({', '.join(source for source, _ in parts)},))"
        template = "".join("%s" if text is None else text.replace("%", "%%") for _, text in parts)
        return f"({template!r} % ({values[0]},))"

    def arguments(self, node: nodes.Call | nodes.Filter | nodes.Test) -> list[str]:
        if node.dyn_args is not None or node.dyn_kwargs is not None:
            raise Unsupported("*args or **kwargs")
        args = [self.expr(arg) for arg in node.args]
        for kwarg in node.kwargs:
            value = self.expr(kwarg.value)
            key = str(kwarg.key)
            if _IDENTIFIER.match(key) and not keyword.iskeyword(key):
                args.append(f"{key}={value}")
            else:
                args.append(f"**{{{key!r}: {value}}}")
        return args

    def visit_Call(self, node: nodes.Call) -> str:
        function = self.expr(node.node)
        args = ", ".join([self.ctx, function, *self.arguments(node)])
        return f"fy_call({args})"

    def passed(self, function: Any) -> list[str]:
        """The first argument Jinja passes to a filter or test that asks for it."""
        kind = _PassArg.from_obj(function)
        if kind is _PassArg.context:
            return [self.ctx]
        if kind is _PassArg.eval_context:
            return [f"{self.ctx}.eval_ctx"]
        if kind is _PassArg.environment:
            return ["fy_env"]
        return []

    def visit_Filter(self, node: nodes.Filter) -> str:
        if node.node is None:
            raise Unsupported("a filter block")
        if node.name == EACH:
            raise Unsupported("the fy:each filter")  # list specs are compiled as loops
        if node.name == DEFINED:
            if isinstance(node.node, nodes.Getattr) and node.node.ctx == "load":
                return self.visit_Getattr(node.node, checked=True)
            temp = self.temp()
            checked = "fy_checked"
            value = self.expr(node.node)
            return f"({temp} if type({temp} := {value}) in fy_plain else {checked}({temp}))"
        function = self.env.filters.get(node.name)
        if function is None:
            raise Unsupported(f"filter {node.name!r} is not in the environment")
        if function is do_default:
            inline = self.inline_default(node)
            if inline is not None:
                return inline
        if getattr(function, "jinja_async_variant", False) and not self.env.is_async:
            # Jinja's wrapper of a filter with an async twin only picks the sync one
            function = getattr(function, "__wrapped__", function)
        inline = self.inline_sequence_filter(node, function)
        if inline is not None:
            return inline
        value = self.expr(node.node)
        args = ", ".join([*self.passed(function), value, *self.arguments(node)])
        return f"{self.ref(function, 'f')}({args})"

    def inline_sequence_filter(self, node: nodes.Filter, function: Any) -> str | None:
        """``select`` / ``reject`` without a test and ``map(attribute=...)``: the generators
        Jinja's own would make, without preparing a test or an attribute getter per call."""
        assert node.node is not None  # checked by visit_Filter
        if node.dyn_args is not None or node.dyn_kwargs is not None:
            return None
        if function is sync_do_select or function is sync_do_reject:
            if node.args or node.kwargs:
                return None
            keep = function is sync_do_select
            return f"fy_select({self.expr(node.node)}, {keep})"
        if function is not sync_do_map or node.args:
            return None
        kwargs = {str(k.key): k.value for k in node.kwargs}
        attribute = kwargs.pop("attribute", None)
        default = kwargs.pop("default", None)
        if kwargs or not isinstance(attribute, nodes.Const):
            return None
        if not isinstance(attribute.value, str | int) or isinstance(attribute.value, bool):
            return None
        try:
            parts = tuple(_prepare_attribute_parts(attribute.value))
        except ValueError:  # Jinja raises it on the record: left to Jinja's filter
            return None
        value = self.expr(node.node)
        fallback = self.expr(default) if default is not None else "None"
        return f"fy_map_attribute(fy_getitem, {value}, {self.const(parts)}, {fallback})"

    def inline_default(self, node: nodes.Filter) -> str | None:
        """``x | default(d[, boolean])`` written out when its arguments are plain."""
        if node.kwargs or node.dyn_args or node.dyn_kwargs or len(node.args) > 2:
            return None
        fallback = node.args[0] if node.args else nodes.Const("")
        boolean = False
        if len(node.args) == 2:
            flag = node.args[1]
            if not isinstance(flag, nodes.Const):
                return None
            boolean = bool(flag.value)
        assert node.node is not None  # checked by visit_Filter
        target = node.node
        lazy = _literal(fallback)  # evaluating it cannot fail: it may be skipped
        if (
            isinstance(target, nodes.Getattr)
            and target.ctx == "load"
            and not hasattr(dict, str(target.attr))
        ):
            # a dict without the key has no such attribute either: the default
            if boolean and not lazy:
                return None
            obj, is_dict = self.subject(target.node)
            attr, value = repr(str(target.attr)), self.expr(fallback)
            slow = f"fy_default(fy_getattr({obj}, {attr}), {value}, {boolean})"
            fast = f"({obj}.get({attr}) or {value})" if boolean else f"{obj}.get({attr}, {value})"
            return f"({fast} if {is_dict} else {slow})"
        value = self.expr(target)
        if lazy:
            temp, undefined = self.temp(), "fy_Undefined"
            test = f"isinstance({temp} := {value}, {undefined})"
            if boolean:
                test += f" or not {temp}"
            return f"({self.expr(fallback)} if {test} else {temp})"
        return f"fy_default({value}, {self.expr(fallback)}, {boolean})"

    def inline_test(self, node: nodes.Test, negated: bool = False) -> str | None:
        if node.args or node.kwargs or node.dyn_args or node.dyn_kwargs:
            return None
        function = self.env.tests.get(node.name)
        if function is test_none:
            return f"({self.expr(node.node)} is {'not ' if negated else ''}None)"
        if function is test_defined or function is test_undefined:
            undefined = "fy_Undefined"
            test = f"isinstance({self.expr(node.node)}, {undefined})"
            return f"({'not ' if (function is test_defined) != negated else ''}{test})"
        return None

    def visit_Test(self, node: nodes.Test) -> str:
        inline = self.inline_test(node)
        if inline is not None:
            return inline
        function = self.env.tests.get(node.name)
        if function is None:
            raise Unsupported(f"test {node.name!r} is not in the environment")
        value = self.expr(node.node)
        args = ", ".join([*self.passed(function), value, *self.arguments(node)])
        return f"{self.ref(function, 'test')}({args})"

    # -- value trees ----------------------------------------------------------------------
    def tree(self, spec: Spec, depth: int, check: Callable[[nodes.Expr], nodes.Expr]) -> str:
        """The expression of a value tree node; list specs write their loops first."""
        from engine.templates import Arr, Const, Each, Expr, Obj, When

        if isinstance(spec, Const):
            return self.const(spec.value)
        if isinstance(spec, Expr):
            return self.expr(check(spec.node))
        if isinstance(spec, Obj | Arr):
            children = list(spec.fields.values()) if isinstance(spec, Obj) else spec.items
            ordered = any(_has_loops(child) for child in children)
            parts = []
            for child in children:
                part = self.tree(child, depth, check)
                if ordered and not isinstance(child, Const):
                    # a later list spec runs as statements: keep the fields' order
                    temp = self.temp("v")
                    self.line(f"{temp} = {part}")
                    part = temp
                parts.append(part)
            if isinstance(spec, Arr):
                return "[" + ", ".join(parts) + "]"
            keys = [repr(key) for key in spec.fields]
            return "{" + ", ".join(f"{k}: {v}" for k, v in zip(keys, parts, strict=True)) + "}"
        if isinstance(spec, When):
            test = self.expr(spec.condition.node)
            if not _has_loops(spec.body):
                return f"({self.tree(spec.body, depth, check)} if {test} else None)"
            out = self.temp("w")
            self.line(f"if {test}:")
            with self.block():
                self.line(f"{out} = {self.tree(spec.body, depth, check)}")
            self.line("else:")
            with self.block():
                self.line(f"{out} = None")
            return out
        if isinstance(spec, Each):
            return self.each(spec, depth, check)
        raise Unsupported(f"value tree node {type(spec).__name__}")

    def each(self, spec: Any, depth: int, check: Callable[[nodes.Expr], nodes.Expr]) -> str:
        """A list spec as a loop, paced and charged where engine._sandbox's fy:each is."""
        items, out, item = self.temp("items"), self.temp("list"), self.temp("item")
        inner = _has_loops(spec.body)
        self.line(f"{items} = {self.expr(spec.each.node)}")
        self.line(f"if type({items}) is not list or len({items}) > {PACE}:")
        with self.block():
            self.line(f"{items} = fy_paced({self.ctx}, {items})")
            if depth:
                self.line(f"fy_charge({self.ctx}, 0)")
            self.line(f"if type({items}) is not list:")
            with self.block():
                self.line(f"fy_check_items({items})")
        if depth and inner:
            self.line(f"elif {items}:")
            with self.block():
                self.line(f"fy_charge({self.ctx}, 0)")
        self.line(f"{out} = []")
        names = {spec.name: item}
        loop = ""
        if spec.uses_loop:
            index, length, loop = self.temp("i"), self.temp("len"), self.temp("loop")
            self.line(f"{items} = list({items})")
            self.line(f"{length} = len({items})")
            self.line(f"for {index}, {item} in enumerate({items}):")
            names["loop"] = loop
            self.counters[loop] = (index, length)
        else:
            self.line(f"for {item} in {items}:")
        start = len(self.lines)
        self.bound.append(names)
        with self.block():
            self.line(f"{out}.append({self.tree(spec.body, depth + 1, check)})")
            # what the body turned out to need, at the top of the loop
            head = []
            if loop in self.used:
                head.append(f"{loop} = fy_loop({index}, {length})")
            head += [
                f"{flag} = type({local}) is dict"
                for local, flag in self.flags.items()
                if local in names.values()
            ]
            self.lines[start:start] = ["    " * self.indent + line for line in head]
        self.bound.pop()
        return out

    # -- the function ---------------------------------------------------------------------
    def function(self, result: str, name: str) -> Callable[[Mapping[str, Any]], Any]:
        self.line(f"return {result}")
        head = []
        if self.uses_ctx:
            head.append("    fy_ctx = fy_make_context(fy_scope)")
        for variable, local in self.free.items():
            key = repr(variable)
            head.append(f"    {local} = fy_scope[{key}] if {key} in fy_scope else fy_name({key})")
            if local in self.flags:
                head.append(f"    {self.flags[local]} = type({local}) is dict")
        source = "\n".join(["def fy_render(fy_scope):", *head, *self.lines]) + "\n"
        namespace = dict(self.table, **_helpers(self.env, self.globals))
        try:
            with warnings.catch_warnings():
                # `'a' is None` when a template tests a constant: meant, and harmless
                warnings.simplefilter("ignore", SyntaxWarning)
                code = compile(source, f"<{name}>", "exec")
        except (SyntaxError, RecursionError, MemoryError) as exc:
            # nested past what Python's compiler takes (parentheses, loops): Jinja's turn
            raise Unsupported(f"too deeply nested for Python's compiler: {exc}") from None
        exec(code, namespace)  # the source is ours: built above from the AST, see the docstring
        function: Callable[[Mapping[str, Any]], Any] = namespace["fy_render"]
        function.fy_source = source  # type: ignore[attr-defined]  # for tests and debugging
        return function


# What the generated code may call by name; the rest comes from its table.
_BUILTINS = {
    "dict": dict,
    "enumerate": enumerate,
    "isinstance": isinstance,
    "len": len,
    "list": list,
    "type": type,
}


def _helpers(env: FlowyardEnvironment, globals_: Mapping[str, Any]) -> dict[str, Any]:
    """The names generated code calls besides its table (all prefixed ``fy_``)."""
    from engine.templates import _check_items, _loop

    return {
        "__builtins__": _BUILTINS,
        "fy_env": env,
        "fy_getattr": env.getattr,
        "fy_getitem": env.getitem,
        "fy_call": env.call,
        "fy_binop": env.call_binop,
        "fy_numbers": _NUMBERS,
        "fy_str_join": str_join,
        "fy_select": _select,
        "fy_map_attribute": _map_attribute,
        "fy_default": do_default,
        "fy_checked": _checked_value,
        "fy_plain": _PLAIN,
        "fy_Undefined": Undefined,
        "fy_paced": paced,
        "fy_charge": charge,
        "fy_check_items": _check_items,
        "fy_loop": _loop,
        "fy_name": _name_reader(env, globals_),
    }


def _name_reader(env: FlowyardEnvironment, globals_: Mapping[str, Any]) -> Callable[[str], Any]:
    """A name the variables do not hold: a global, else an Undefined (as Jinja's
    ``resolve_or_missing`` and ``undefined(name=...)``)."""
    undefined = env.undefined

    def read(name: str) -> Any:
        if name in globals_:
            return globals_[name]
        return undefined(name=name)

    return read


def _has_loops(spec: Any) -> bool:
    from engine.templates import Arr, Each, Obj, When

    if isinstance(spec, Each):
        return True
    if isinstance(spec, When):
        return _has_loops(spec.body)
    if isinstance(spec, Obj):
        return any(_has_loops(child) for child in spec.fields.values())
    if isinstance(spec, Arr):
        return any(_has_loops(child) for child in spec.items)
    return False


def compile_tree(
    env: FlowyardEnvironment,
    spec: Spec,
    name: str,
    globals_: Mapping[str, Any],
    make_context: Callable[[Mapping[str, Any]], Any],
    check: Callable[[nodes.Expr], nodes.Expr],
) -> Callable[[Mapping[str, Any]], Any]:
    """One Python function computing the value tree ``spec`` from the variables.

    ``check`` turns an output expression into its checked form (no Undefined comes out);
    ``make_context`` makes the render's one context (for the meters and the filters that
    take one). Raises :class:`Unsupported` when a node is not covered.
    """
    gen = _Generator(env, globals_)
    gen.table["fy_make_context"] = make_context
    try:
        result = gen.tree(spec, 0, check)
    except RecursionError:
        raise Unsupported("a value nested too deeply") from None
    return gen.function(result, name)


def compile_expression(
    env: FlowyardEnvironment,
    node: nodes.Expr,
    name: str,
    globals_: Mapping[str, Any],
    make_context: Callable[[Mapping[str, Any]], Any],
) -> Callable[[Mapping[str, Any]], Any]:
    """One Python function computing the bare expression ``node`` (a condition)."""
    gen = _Generator(env, globals_)
    gen.table["fy_make_context"] = make_context
    try:
        result = gen.expr(node)
    except RecursionError:
        raise Unsupported("an expression nested too deeply") from None
    return gen.function(result, name)
