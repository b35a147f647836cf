"""What a template may build, and for how long it may run: the sandbox's meters.

Jinja's sandbox keeps templates away from Python internals, but not from the machine: one
line can ask for a gigabyte (``'%01000000000d' % 1``, ``'x' | center(10**9)``,
``[[0] * 10**6] * 10**6``) or for minutes of CPU. So every operation that can build more
than it was given is *metered*: its result size is computed before anything is built and
refused past :data:`MAX_SEQUENCE` (characters of a string, items of a list, nested lists
counted in full). What is metered:

- the operators ``*`` (repetition), ``**`` and ``%`` (string formatting);
- the string methods that grow (``format``, ``format_map``, ``center``, ``ljust``,
  ``rjust``, ``zfill``, ``expandtabs``, ``replace``, ``join``, ``translate``) and
  ``int.to_bytes``, whichever way they are reached (``s.center``, ``s['center']``,
  ``s | attr('center')``);
- the filters that build (``center``, ``indent``, ``wordwrap``, ``batch``, ``slice``,
  ``replace``, ``join``, ``format``, ``sum``, ``tojson``), ``int`` of a Decimal with a
  huge exponent (``Decimal('1E+100000000') | int`` would compute a 100-million-digit
  number), and ``range`` (capped in :mod:`engine._sandbox`).

Each render has a :class:`Budget`: what its metered operations build adds up to at most
:data:`MAX_RENDER_BUILT`, and it may run :data:`MAX_RENDER_SECONDS` from its first charge.
The clock is looked at by every metered operation that builds more than :data:`SMALL`, by
each item that ``map`` or ``select`` (and their kin) hand to a named filter or test, every
:data:`PACE` items of a long list spec (``each``), and each time a list spec starts inside
another one that is not called inline (see engine._sandbox): the places where a render
repeats work. A render that does none of this never makes a budget, so the hot path (field
reads, arithmetic, the retail filters, short lists) pays next to nothing: about 1.5 % on
``bench/bench_mapping.py`` (docs/security.md). A render past a limit raises
:class:`SandboxLimit`, which the template layer turns into a record error: that record is
dead-lettered and the run goes on.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from types import GeneratorType
from typing import Any

from jinja2 import pass_context
from jinja2.exceptions import SecurityError
from jinja2.filters import (
    do_batch,
    do_format,
    do_indent,
    do_int,
    do_tojson,
    do_wordwrap,
    make_attrgetter,
    sync_do_slice,
    sync_do_sum,
)
from jinja2.runtime import Context

MAX_SEQUENCE = 1_000_000  # what one operation may build: characters, or items (nested counted)
MAX_RENDER_BUILT = 10_000_000  # what the metered operations of one render may build in total
MAX_RENDER_SECONDS = 1.0  # one render, from its first metered operation (wall clock)
MAX_INT_DIGITS = 4_300  # int() of a Decimal; Python's own limit for int <-> str
MAX_JSON_INDENT = 8  # tojson(indent=...)


class SandboxLimit(SecurityError):
    """A template passed one of the sandbox's size or time limits."""


class RenderBudgetExceeded(SandboxLimit):
    """A render as a whole built too much or ran too long (no one field is to blame)."""


# -- the per-render budget --------------------------------------------------------------------
class Budget:
    """What one render has built so far, and when its first metered operation ran."""

    __slots__ = ("built", "started")

    def __init__(self) -> None:
        self.built = 0
        self.started = time.perf_counter()


_BUDGET = "fy_budget"  # the attribute of a render's Context that holds its Budget
# A list spec (``each``) renders its items in a Context of its own, over a copy of the
# variables it was called with; a list spec of the render itself adds this key (not a name
# a template can read) to the copy, holding the render's Context, so that everything inside
# charges the render's budget.
OUTER = "fy:outer"


def budget_of(context: Context) -> Budget:
    """The budget of the render ``context`` belongs to, made on first use (so a render
    that meters nothing never makes one)."""
    own = context.__dict__
    budget = own.get(_BUDGET)
    if budget is None:
        root = context.parent.get(OUTER)
        budget = budget_of(root) if root is not None and root is not context else Budget()
        own[_BUDGET] = budget
    return budget


def charge(context: Context, size: int) -> None:
    """Count ``size`` built against this render's budget, and check its clock."""
    budget = context.__dict__.get(_BUDGET) or budget_of(context)
    budget.built += size
    if budget.built > MAX_RENDER_BUILT:
        raise RenderBudgetExceeded(
            f"this render built more than {MAX_RENDER_BUILT:,} characters and items in all"
        )
    if time.perf_counter() - budget.started > MAX_RENDER_SECONDS:
        raise RenderBudgetExceeded(f"this render ran longer than {MAX_RENDER_SECONDS:g} s")


PACE = 64  # items of a list spec rendered between two looks at the clock


def paced(context: Context, items: Any) -> Any:
    """``items`` for a list spec, with the clock of ``context``'s render looked at every
    :data:`PACE` items when there may be many (a short list is left as it is)."""
    kind = type(items)
    if (kind is list or kind is tuple or kind is range) and len(items) <= PACE:
        return items
    if kind is list or kind is tuple or kind is range or kind is GeneratorType:
        return _paced(context, items)
    return items


def _paced(context: Context, items: Any) -> Any:
    for index, item in enumerate(items):
        if not index % PACE:
            charge(context, 0)
        yield item


def limit(size: int, what: str) -> int:
    """``size`` when one operation may build that much, else :class:`SandboxLimit`."""
    if size > MAX_SEQUENCE:
        raise SandboxLimit(f"{what} would be {size:,} long (the limit is {MAX_SEQUENCE:,})")
    return size


SMALL = 1024  # a result this small is not charged: every operation is capped on its own,
# and the loops that could repeat one (map, select, long or nested list specs) look at the
# clock themselves


def build(context: Context, size: int, what: str) -> None:
    """Check one operation's size, then charge it to the render (unless it is small)."""
    if limit(size, what) > SMALL:
        charge(context, size)


# -- sizes, computed before anything is built ---------------------------------------------------
def weight(value: Any, stop: int = MAX_SEQUENCE) -> int:
    """The size of ``value`` once written out: a string's characters, an int's digits, a
    list's items with nested lists counted in full (``[[0] * 1000] * 1000`` weighs about a
    million though it holds two lists); stops counting once past ``stop``."""
    if isinstance(value, str | bytes):
        return len(value)
    if isinstance(value, int):
        return max(value.bit_length() // 3, 1)
    if not isinstance(value, list | tuple | dict):
        return 1
    # a container counts one per entry; an entry that weighs more adds the difference
    total, todo = 0, [value]
    while todo and total <= stop:
        item = todo.pop()
        if isinstance(item, list | tuple):
            total += len(item)
            todo.extend(item)
        elif isinstance(item, dict):
            total += len(item)
            todo.extend(item.values())
        elif isinstance(item, str | bytes) and len(item) > 1:
            total += len(item) - 1
        elif isinstance(item, int) and item.bit_length() > 6:
            total += item.bit_length() // 3 - 1
    return total


def _number(text: str | None) -> int:
    """A width or precision written in a format; absurdly long ones count as too big."""
    if not text:
        return 0
    return int(text) if len(text) <= 9 else MAX_SEQUENCE + 1


def _width(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _shown(value: Any, expanded: bool = False) -> int:
    """How long ``value`` is once formatted, without formatting it. ``expanded``: as a
    whole number or in fixed point (``%d``, ``{:f}``), which writes every digit of a
    Decimal's exponent out (``Decimal('1E+100000000')`` has a hundred million)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Decimal):
        if not (expanded and value.is_finite()):
            return len(str(value))
        digits, exponent = value.as_tuple()[1:]
        assert isinstance(exponent, int)  # a finite Decimal's exponent is a number
        return len(digits) + abs(exponent) + 2
    if isinstance(value, int):
        return value.bit_length() // 3 + 2
    if isinstance(value, float):
        return 330 if expanded else 24  # the longest %f of a float
    return weight(value) * 2 + 2  # a repr: an item and its separator


_PERCENT = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?[#0\- +]*(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d+))?"
    r"[hlL]?(?P<conversion>.?)",
    re.S,
)


def percent_size(template: str, args: Any) -> int:
    """The length of ``template % args``, from its conversions and their arguments."""
    mapping = args if isinstance(args, Mapping) else None
    values = iter(args if isinstance(args, tuple) else (args,))
    size = len(template)
    for match in _PERCENT.finditer(template):
        if match["conversion"] == "%":
            continue
        sizes = []
        for part in ("width", "precision"):
            if match[part] == "*":
                sizes.append(_width(next(values, 0)))
            else:
                sizes.append(_number(match[part]))
        if mapping is not None and match["key"] is not None:
            value = mapping.get(match["key"])
        else:
            value = next(values, None)
        size += max(sizes) + _shown(value, match["conversion"] in "diouxXfF")
    return size


def format_field_size(value: Any, spec: str) -> int:
    """The length of ``format(value, spec)``: widths and precisions in the spec, the value."""
    numbers = [_number(n) for n in re.findall(r"\d+", spec)]
    return max(numbers, default=0) + _shown(value, spec[-1:] in ("f", "F", "%", "d", "n"))


# -- metered methods: reached as attributes, so they are wrapped where they are looked up --------
def _method_size(name: str, owner: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    if name in ("center", "ljust", "rjust", "zfill"):
        width = args[0] if args else kwargs.get("width", 0)
        return max(len(owner), _width(width))
    if name == "expandtabs":
        tabsize = args[0] if args else kwargs.get("tabsize", 8)
        tabs: int = owner.count("\t" if isinstance(owner, str) else b"\t")
        return len(owner) + tabs * _width(tabsize)
    if name == "replace":
        old, new = (list(args) + [None, None])[:2]
        count = args[2] if len(args) > 2 else kwargs.get("count", -1)
        if not isinstance(old, type(owner)) or not isinstance(new, type(owner)):
            return len(owner)  # the method itself refuses it
        times = owner.count(old) if old else len(owner) + 1
        if isinstance(count, int) and count >= 0:
            times = min(times, count)
        return len(owner) + times * (len(new) - len(old))
    if name == "translate":
        table = args[0] if args else None
        longest = 1
        if isinstance(table, Mapping):
            longest = max(
                (len(v) if isinstance(v, str | bytes) else 1 for v in table.values()), default=1
            )
        return len(owner) * longest
    if name == "to_bytes":
        return _width(args[0] if args else kwargs.get("length", 1))
    return 0


def metered_method(method: Any, name: str, owner: Any) -> Callable[..., Any]:
    """``method`` (a bound ``str``/``bytes``/``int`` method that can grow) with its size checked."""
    if name == "join":

        def join(iterable: Any) -> Any:
            parts = list(iterable)
            size = len(owner) * max(len(parts) - 1, 0)
            size += sum(len(p) for p in parts if isinstance(p, str | bytes))
            limit(size, f"{type(owner).__name__}.join()")
            return method(parts)

        return join

    def metered(*args: Any, **kwargs: Any) -> Any:
        limit(_method_size(name, owner, args, kwargs), f"{type(owner).__name__}.{name}()")
        return method(*args, **kwargs)

    return metered


GROWING_METHODS = frozenset(
    {"center", "ljust", "rjust", "zfill", "expandtabs", "replace", "join", "translate"}
)


# -- metered filters: Jinja's own, with their result sizes checked first ------------------------
def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


@pass_context
def center_filter(context: Context, value: Any, width: int = 80) -> str:
    text = _text(value)
    build(context, max(len(text), _width(width)), "center")
    return text.center(width)


@pass_context
def indent_filter(
    context: Context, s: Any, width: int | str = 4, first: bool = False, blank: bool = False
) -> str:
    text = _text(s)
    unit = len(width) if isinstance(width, str) else _width(width)
    build(context, len(text) + (text.count("\n") + 1) * unit, "indent")
    return do_indent(text, width, first, blank)


@pass_context
def wordwrap_filter(
    context: Context,
    s: Any,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: str | None = None,
    break_on_hyphens: bool = True,
) -> str:
    text = _text(s)
    wrap = context.environment.newline_sequence if wrapstring is None else _text(wrapstring)
    # greedy wrapping: two lines in a row hold more than `width` characters
    lines = 2 * len(text) // max(_width(width), 1) + text.count("\n") + 2
    build(context, len(text) + lines * len(wrap), "wordwrap")
    env = context.environment
    return do_wordwrap(env, text, width, break_long_words, wrapstring, break_on_hyphens)


@pass_context
def batch_filter(context: Context, value: Any, linecount: int, fill_with: Any = None) -> Any:
    if fill_with is not None:  # the last batch is filled up to linecount
        build(context, _width(linecount), "batch")
    return do_batch(value, linecount, fill_with)


@pass_context
def slice_filter(context: Context, value: Any, slices: int, fill_with: Any = None) -> Any:
    build(context, _width(slices), "slice")  # one list per slice, however few the items
    return sync_do_slice(value, slices, fill_with)


@pass_context
def replace_filter(context: Context, s: Any, old: Any, new: Any, count: int | None = None) -> str:
    text = _text(s)
    old, new = _text(old), _text(new)
    count = -1 if count is None else count
    build(context, _method_size("replace", text, (old, new, count), {}), "replace")
    return text.replace(old, new, count)


@pass_context
def join_filter(context: Context, value: Any, d: str = "", attribute: Any = None) -> str:
    if attribute is not None:
        value = map(make_attrgetter(context.environment, attribute), value)
    sep = _text(d)
    parts = list(map(str, value))
    size = sum(map(len, parts)) + len(sep) * max(len(parts) - 1, 0)
    if size > SMALL:
        build(context, size, "join")
    return sep.join(parts)


@pass_context
def format_filter(context: Context, value: Any, *args: Any, **kwargs: Any) -> str:
    text = _text(value)
    build(context, percent_size(text, kwargs or args), "format")
    return do_format(text, *args, **kwargs)


@pass_context
def sum_filter(context: Context, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    if attribute is not None:
        iterable = map(make_attrgetter(context.environment, attribute), iterable)
    if not isinstance(start, list | tuple):
        return sync_do_sum(context.environment, iterable, None, start)
    # Python's sum() of lists copies the total so far at each step: quadratic; this is not.
    kind, items = type(start), list(iterable)
    for item in items:
        if not isinstance(item, kind):
            name = type(item).__name__
            raise TypeError(f'can only concatenate {kind.__name__} (not "{name}") to it')
    build(context, len(start) + sum(map(len, items)), "sum")
    out = list(itertools.chain(start, *items))
    return out if kind is list else kind(out)


@pass_context
def tojson_filter(context: Context, value: Any, indent: int | str | None = None) -> Any:
    if indent is not None:
        size = len(indent) if isinstance(indent, str) else _width(indent)
        if size > MAX_JSON_INDENT:
            raise SandboxLimit(f"tojson indent of {size} (the limit is {MAX_JSON_INDENT})")
    # Jinja hands indent on to json.dumps, which takes text too; its annotation says int
    text = do_tojson(context.eval_ctx, value, indent)  # type: ignore[arg-type]
    build(context, len(text), "tojson")
    return text


def int_filter(value: Any, default: int = 0, base: int = 10) -> int:
    if type(value) is Decimal and value.is_finite() and value.adjusted() >= MAX_INT_DIGITS:
        raise SandboxLimit(f"int() of a number with {value.adjusted() + 1:,} digits")
    return do_int(value, default, base)


FILTERS = {
    "batch": batch_filter,
    "center": center_filter,
    "format": format_filter,
    "indent": indent_filter,
    "int": int_filter,
    "join": join_filter,
    "replace": replace_filter,
    "slice": slice_filter,
    "sum": sum_filter,
    "tojson": tojson_filter,
    "wordwrap": wordwrap_filter,
}
