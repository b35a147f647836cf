"""Mapping files (``mappings/*.yaml``) compiled into one callable each.

A mapping file names its output fields; each value is a template, a constant, a nested
object, a list built from a source list (``each`` + ``as`` + ``fields``) or an object that
is present only when a condition holds (``when`` + ``fields``)::

    mapping: shopify_order_to_canonical
    fields:
      order_id: "shopify:{{ record.id }}"
      channel: web
      lines:
        each: "{{ record.line_items }}"
        as: line
        fields:
          sku: "{{ line.sku }}"

The whole file becomes ONE plain Python function (engine.pycodegen: a dict literal whose
values are the fields' expressions, each list spec a loop inside it), so one record is one
call. Evaluating every field as its own Jinja template costs about 20x a hand-written
mapping; the one-function form stays within a small factor (see ``bench/bench_mapping.py``).
Only when a record fails are the fields evaluated one by one,
to report every failing field at once in the record's own terms, under the record's
``label`` (``order #1001 (shopify:5234...): line_items[2].sku is missing; total_price is
missing``).
"""

from __future__ import annotations

import keyword
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from jinja2 import nodes

from engine.errors import Problem
from engine.suggest import did_you_mean
from engine.templates import (
    CONDITION_HINT,
    CONTEXT_NAMES,
    Arr,
    Const,
    Each,
    Expr,
    FlowyardEnvironment,
    Obj,
    Renderer,
    Spec,
    TemplateProblem,
    TemplateRenderError,
    When,
    check_free_names,
    constant_spec,
    free_names,
    is_template,
    parse_condition,
    parse_template,
)
from engine.yamlpos import format_path, key_position, load_yaml, position, read_definition

__all__ = ["CompiledMapping", "load_mapping"]

TOP_KEYS = ("mapping", "description", "label", "fields")
EACH_KEYS = ("each", "as", "fields")
WHEN_KEYS = ("when", "fields")
DEFAULT_ITEM_NAME = "item"


class CompiledMapping:
    """A mapping file compiled once: ``mapping(record, context) -> dict``.

    Templates see ``record`` plus the context's keys (``vars``, ``meta``, ``run`` ...).
    A record that cannot be mapped raises :class:`engine.errors.MappingError` (a
    :class:`~engine.templates.TemplateRenderError`) listing every failing field, in the
    record's own terms where possible, under the record's label (the file's ``label:``
    template, else ``record <key>`` from ``context["meta"]["key"]``) and the mapping's name.
    """

    __slots__ = ("name", "description", "file", "_renderer", "_label")

    def __init__(
        self,
        name: str,
        description: str,
        file: str,
        renderer: Renderer,
        label: Renderer | None = None,
    ):
        self.name = name
        self.description = description
        self.file = file
        self._renderer = renderer
        self._label = label

    def __call__(self, record: Any, context: Mapping[str, Any] | None = None) -> dict[str, Any]:
        variables = {**context, "record": record} if context else {"record": record}
        try:
            mapped: dict[str, Any] = self._renderer(variables)  # `fields:` renders an object
            return mapped
        except TemplateRenderError as exc:
            located = exc.located(
                mapping=self.name, record_key=_record_key(context), label=self.label(variables)
            )
            raise located from exc

    def label(self, variables: Mapping[str, Any]) -> str:
        """How the record is called in errors: the ``label:`` template, "" when it fails."""
        if self._label is None:
            return ""
        try:
            text = self._label(variables)
        except TemplateRenderError:
            return ""
        return "" if text is None else str(text).strip()

    @property
    def names_read(self) -> frozenset[str]:
        """Every name the mapping's expressions read."""
        return self._renderer.names_read

    def __repr__(self) -> str:
        return f"<CompiledMapping {self.name} from {self.file}>"


def _record_key(context: Mapping[str, Any] | None) -> str:
    meta = (context or {}).get("meta")
    key = meta.get("key") if isinstance(meta, Mapping) else None
    return "" if key is None else str(key)


def load_mapping(
    path: str, env: FlowyardEnvironment, *, names: tuple[str, ...] = CONTEXT_NAMES
) -> tuple[CompiledMapping | None, list[Problem]]:
    """Read, check and compile a mapping file; ``None`` and every problem when it has errors.

    ``names`` are the context names templates may read besides loop variables; a template
    reading any other name gets a warning (it would fail on every record).
    """
    try:
        text = read_definition(path)
    except OSError as exc:
        return None, [Problem(path, None, None, "", f"cannot read the mapping: {exc.strerror}")]
    data, problems = load_yaml(text, path)
    if data is None:
        return None, problems
    builder = _Builder(env, path, text, data, problems, names)
    compiled = builder.build()
    if any(p.severity == "error" for p in problems):
        return None, problems
    return compiled, problems


class _Builder:
    """Walks a mapping file, collecting every problem, and builds its value tree."""

    def __init__(
        self,
        env: FlowyardEnvironment,
        file: str,
        text: str,
        data: Any,
        problems: list[Problem],
        names: Iterable[str],
    ):
        self.env = env
        self.file = file
        self.lines = text.splitlines()
        self.data = data
        self.problems = problems
        self.names = tuple(names)

    def problem(
        self,
        path: list[Any],
        message: str,
        *,
        key: bool = False,
        lineno: int | None = None,
        severity: str = "error",
    ) -> None:
        at = (key_position if key else position)(self.data, path)
        line, column = at or (None, None)
        if at is not None and lineno and lineno > 1:
            # a multi-line template: point at its own line (a block scalar starts below |)
            source = self.lines[at[0] - 1][at[1] - 1 :] if at[0] <= len(self.lines) else ""
            line = at[0] + lineno - 1 + (1 if source[:1] in ("|", ">") else 0)
            column = None
        self.problems.append(Problem(self.file, line, column, format_path(path), message, severity))

    def build(self) -> CompiledMapping | None:
        data = self.data
        if not isinstance(data, dict):
            self.problem([], "a mapping file is a YAML mapping with a `fields:` section")
            return None
        for key in data:
            if key not in TOP_KEYS:
                hint = did_you_mean(str(key), TOP_KEYS)
                self.problem(
                    [key], f"unknown key {key!r}{hint}; expected {', '.join(TOP_KEYS)}", key=True
                )
        name = data.get("mapping", Path(self.file).stem)
        if not isinstance(name, str) or not name.strip():
            self.problem(["mapping"], "`mapping` is the mapping's name, a non-empty string")
            name = Path(self.file).stem
        description = data.get("description", "")
        if not isinstance(description, str):
            self.problem(["description"], "`description` is a string")
            description = ""
        label = self.label(data.get("label"))
        if "fields" not in data:
            self.problem([], "missing `fields:`, the output fields and their values")
            return None
        spec = self.obj(data["fields"], ["fields"], self.names, top=True)
        if spec is None or any(p.severity == "error" for p in self.problems):
            return None
        try:
            renderer = Renderer(self.env, spec, data["fields"], name=f"mapping {name}")
            labeller = label and Renderer(self.env, label, data["label"], name=f"label {name}")
        except TemplateProblem as exc:  # checked above already; a compiler refusal
            self.problem(["fields"], exc.message)
            return None
        return CompiledMapping(name, description, self.file, renderer, labeller or None)

    def label(self, value: Any) -> Expr | None:
        """The ``label:`` template, how error messages call a record ("order {{ ... }}")."""
        if value is None:
            return None
        if not isinstance(value, str) or not is_template(value):
            self.problem(
                ["label"],
                '`label` is a template naming the record in errors, e.g. "order {{ record.name }}"',
            )
            return None
        return self.template(value, ["label"], self.names)

    # -- the value tree --------------------------------------------------------------------
    def value(self, value: Any, path: list[Any], scope: tuple[str, ...]) -> Spec | None:
        if isinstance(value, str) and is_template(value):
            return self.template(value, path, scope)
        if isinstance(value, dict):
            if "each" in value:
                return self.each(value, path, scope)
            if "when" in value:
                return self.when(value, path, scope)
            return self.obj(value, path, scope)
        if isinstance(value, list):
            items = [self.value(item, [*path, i], scope) for i, item in enumerate(value)]
            return Arr([item for item in items if item is not None])  # None: reported
        try:
            return constant_spec(value, format_path(path))
        except TemplateProblem as exc:
            self.problem(path, exc.message)
            return Const(None)

    def template(self, source: str, path: list[Any], scope: tuple[str, ...]) -> Expr | None:
        try:
            node = parse_template(self.env, source)
        except TemplateProblem as exc:
            self.problem(path, exc.message, lineno=exc.lineno)
            return None
        self.check_names(node, path, scope)
        return Expr(source, node)

    def check_names(self, node: nodes.Expr, path: list[Any], scope: tuple[str, ...]) -> None:
        message = check_free_names(self.env, node, scope)
        if message:
            self.problem(path, message, severity="warning")

    def obj(
        self, value: Any, path: list[Any], scope: tuple[str, ...], top: bool = False
    ) -> Obj | None:
        what = "`fields`" if top or path[-1] == "fields" else f"`{path[-1]}`"
        if not isinstance(value, dict):
            self.problem(path, f"{what} is a mapping of output field names to values")
            return None
        if top and not value:
            self.problem(path, "`fields` is empty: name at least one output field")
        fields: dict[str, Spec] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                kind = type(key).__name__
                self.problem(
                    [*path, key],
                    f"field names are text; YAML read {key!r} as a {kind}: quote it",
                    key=True,
                )
                continue
            child = self.value(item, [*path, key], scope)
            if child is not None:  # else reported: the mapping will not be compiled
                fields[key] = child
        return Obj(fields)

    def each(self, value: dict[str, Any], path: list[Any], scope: tuple[str, ...]) -> Each | None:
        ok = self.spec_keys(value, path, EACH_KEYS, "a list spec")
        source = value.get("each")
        if not (isinstance(source, str) and is_template(source)):
            self.problem(
                [*path, "each"],
                'each takes a template giving the source list, e.g. "{{ record.line_items }}"',
            )
            ok = False
            each = None
        else:
            each = self.template(source, [*path, "each"], scope)
            if each is not None and isinstance(each.node, nodes.Concat | nodes.Const):
                self.problem(
                    [*path, "each"], "each is a single {{ expression }}, without text around it"
                )
                ok = False
        name = value.get("as", DEFAULT_ITEM_NAME)
        if not (isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name)):
            self.problem([*path, "as"], f"as names the loop variable; {name!r} is not a name")
            ok = False
        elif name in scope or name in ("loop", "true", "false", "none"):
            self.problem(
                [*path, "as"],
                f"as: {name} would hide `{name}` inside the list; choose another name",
            )
            ok = False
        body = None
        if "fields" in value:
            body = self.obj(value["fields"], [*path, "fields"], (*scope, name, "loop"))
        if not ok or each is None or body is None:
            return None
        return Each(each, name, body, uses_loop=_uses_name(body, "loop"))

    def when(self, value: dict[str, Any], path: list[Any], scope: tuple[str, ...]) -> When | None:
        ok = self.spec_keys(value, path, WHEN_KEYS, "an optional object")
        source = value.get("when")
        condition = None
        if not isinstance(source, str) or not source.strip():
            self.problem([*path, "when"], "when takes a condition, e.g. record.shipping_address")
        elif is_template(source):
            self.problem([*path, "when"], CONDITION_HINT)
        else:
            try:
                node = parse_condition(self.env, source)
            except TemplateProblem as exc:
                self.problem([*path, "when"], exc.message, lineno=exc.lineno)
            else:
                self.check_names(node, [*path, "when"], scope)
                condition = Expr(source, node)
        body = self.obj(value["fields"], [*path, "fields"], scope) if "fields" in value else None
        if not ok or condition is None or body is None:
            return None
        return When(condition, body)

    def spec_keys(
        self, value: dict[str, Any], path: list[Any], allowed: tuple[str, ...], what: str
    ) -> bool:
        ok = True
        for key in value:
            if key not in allowed:
                keys = ", ".join(f"`{k}`" for k in allowed)
                self.problem(
                    [*path, key],
                    f"{what} has only {keys}; {key!r} does not belong here",
                    key=True,
                )
                ok = False
        if "fields" not in value:
            self.problem(path, f"{what} needs `fields:`, the fields of each object")
            ok = False
        return ok


def _uses_name(spec: Spec, name: str) -> bool:
    """Does any template of ``spec`` read ``name`` (not looking into nested list bodies)?"""
    if isinstance(spec, Expr):
        return name in free_names(spec.node)
    if isinstance(spec, Obj):
        return any(_uses_name(v, name) for v in spec.fields.values())
    if isinstance(spec, Each):
        return _uses_name(spec.each, name)
    if isinstance(spec, When):
        return _uses_name(spec.condition, name) or _uses_name(spec.body, name)
    return any(_uses_name(v, name) for v in getattr(spec, "items", ()))
