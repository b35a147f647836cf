"""jsonschema-rs as the first pass of record validation, never more lenient than fastjsonschema.

jsonschema-rs's ``is_valid`` checks a canonical order in ~7.5 µs against fastjsonschema's
~38 µs (docs/benchmarks.md §3). fastjsonschema stays the validator of record: a record
jsonschema-rs refuses is validated again by fastjsonschema, which decides, and whose
error names the path and the rule as before (:func:`engine.validation.compile_validator`).
So jsonschema-rs may refuse more than fastjsonschema (that costs a second pass), but must
never accept a record fastjsonschema refuses. The two differ where Python values and
Python's regular expressions meet JSON's, and :func:`first_pass` gives jsonschema-rs a
copy of the schema that closes each difference:

- **Decimal** (money and fractions read exactly): fastjsonschema counts a Decimal as a
  number, never an integer, and compares it exactly; jsonschema-rs takes ``Decimal("3")``
  as an integer and may compare through a float. Where a schema asks for an integer, sets
  a bound, or lists numbers (``enum``, ``const``), a keyword of ours refuses a Decimal,
  leaving the record to fastjsonschema.
- **Patterns**: JSON Schema's regular expressions are ECMA-262's for jsonschema-rs and
  Python's ``re`` for fastjsonschema (which reads ``$`` as the end of the text, as
  ECMA-262 does). ``\\s`` is spelled out as Python's whitespace; ``\\d`` and ``\\w`` (ASCII
  in ECMA-262, Unicode in Python) and ``.`` match less in jsonschema-rs, which is safe where
  they match positively: a record with Unicode digits goes to fastjsonschema. A pattern
  with anything else (a negated ``\\d``, lookarounds, flags, other escapes ...) is checked
  by Python's ``re`` through a keyword of ours, as fastjsonschema does.
- **Anything else** this module does not know to be the same in both (``format``,
  ``multipleOf``, ``uniqueItems``, ``not``, ``oneOf``, ``if``, a float or a large integer as
  a bound or in ``enum``, ``patternProperties``, whose keys must match exactly alike): no
  first pass at all; fastjsonschema validates alone, as before.

tests/test_prevalidate.py generates valid and broken documents of every canonical schema
and checks that the two agree on each.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

# Python's ``\s`` in a str pattern: the characters for which str.isspace() is true
# (a test compares this list with every code point).
PYTHON_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_WHITESPACE_CLASS = "".join(f"\\u{ord(c):04x}" for c in PYTHON_WHITESPACE)

_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_LARGEST_EXACT = 2**53  # integers below it are the same as a double and in Python
# keywords whose meaning is the same in both, for the values records hold
_SAME = frozenset(
    {
        "type",
        "enum",
        "const",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "additionalItems",
        "contains",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "minProperties",
        "maxProperties",
        "pattern",
        "anyOf",
        "allOf",
        "$ref",
        "definitions",
        *_BOUNDS,
    }
)
_ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "$comment",
        "readOnly",
        "writeOnly",
        "deprecated",
    }
)
_OURS_NUMBERS = "x-flowyard-numbers"
_OURS_PATTERN = "x-flowyard-pattern"
# escapes that mean the same character in both dialects, or (\d, \w) fewer in ECMA-262
_SAME_ESCAPES = frozenset("\\/.-+*?()[]{}|^$tnrfv")
_DOLLAR = re.compile(r"(?<!\\)\$")  # fastjsonschema reads each unescaped $ as \Z


class _Unsure(Exception):
    """The schema uses something not known to mean the same in both validators."""


def first_pass(schema: dict[str, Any]) -> Callable[[Any], bool] | None:
    """jsonschema-rs's ``is_valid`` for ``schema`` (its ``$ref``s inlined), or None when
    the schema uses something this module cannot make jsonschema-rs read as fastjsonschema
    does. True means fastjsonschema accepts the record too; False means ask it.

    jsonschema-rs raises on a value it cannot read (a date, a set, bytes ...): the caller
    treats that as False.
    """
    try:
        translated = _schema(schema, top=True)
    except _Unsure:
        return None
    import jsonschema_rs

    try:
        validator = jsonschema_rs.Draft7Validator(
            translated,
            validate_formats=False,
            keywords={_OURS_NUMBERS: _Numbers, _OURS_PATTERN: _Pattern},
        )
    except (ValueError, jsonschema_rs.ValidationError):  # e.g. a pattern ECMA-262 refuses
        return None
    return validator.is_valid


def _schema(node: Any, *, top: bool = False) -> Any:
    if isinstance(node, bool):
        return node
    if not isinstance(node, dict):
        raise _Unsure
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _ANNOTATIONS or (top and key in ("$schema", "$id")):
            continue
        if key not in _SAME:
            raise _Unsure
        if key in ("properties", "definitions"):
            out[key] = {name: _schema(sub) for name, sub in _mapping(value).items()}
        elif key in ("additionalProperties", "additionalItems", "contains"):
            out[key] = _schema(value)
        elif key == "items":
            out[key] = [_schema(v) for v in value] if isinstance(value, list) else _schema(value)
        elif key in ("anyOf", "allOf"):
            if not isinstance(value, list):
                raise _Unsure
            out[key] = [_schema(v) for v in value]
        elif key == "pattern":
            if not isinstance(value, str):
                raise _Unsure
            translated = _pattern(value)
            if translated is None:
                out[_OURS_PATTERN] = value  # checked with Python's re
            else:
                out[key] = translated
        elif key == "$ref":
            if not (isinstance(value, str) and value.startswith("#/definitions/")):
                raise _Unsure
            out[key] = value
        elif key in _BOUNDS:
            if not _exact_number(value):
                raise _Unsure
            out[key] = value
        elif key in ("enum", "const"):
            values = value if key == "enum" else [value]
            if not isinstance(values, list) or not all(map(_plain_scalar, values)):
                raise _Unsure
            out[key] = value
        else:
            out[key] = value
    types = node.get("type")
    types = [types] if isinstance(types, str) else types if isinstance(types, list) else []
    integer_only = "integer" in types and "number" not in types
    listed = node.get("enum", []) + ([node["const"]] if "const" in node else [])
    listed_number = any(type(v) is int for v in listed)  # 1 == Decimal("1.0") in Python
    if integer_only or listed_number or any(k in node for k in _BOUNDS):
        out[_OURS_NUMBERS] = True
    return out


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Unsure
    return value


def _exact_number(value: Any) -> bool:
    """An integer a double holds exactly; a float bound would be compared differently."""
    return type(value) is int and -_LARGEST_EXACT < value < _LARGEST_EXACT


def _plain_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, bool)) or _exact_number(value)


def _pattern(pattern: str) -> str | None:
    """``pattern`` in ECMA-262, matching nothing that fastjsonschema's reading of it would
    not, or None when it uses something else."""
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = negated = False
    try:
        while i < n:
            c = pattern[i]
            if c == "\\":
                e = pattern[i + 1]
                i += 2
                if e == "s":
                    out.append(_WHITESPACE_CLASS if in_class else f"[{_WHITESPACE_CLASS}]")
                elif e in "dw" and not (in_class and negated):
                    out.append("\\" + e)
                elif e in _SAME_ESCAPES:
                    out.append("\\" + e)
                else:
                    raise _Unsure
                continue
            if in_class:
                if c == "]":
                    in_class = False
                elif c == "[" or pattern[i : i + 2] in ("&&", "--", "~~"):
                    raise _Unsure  # a set operation or a nested class in Rust's syntax
                out.append(c)
                i += 1
                continue
            if c == "[":
                negated = pattern[i + 1] == "^"
                start = i + 2 if negated else i + 1
                if pattern[start] == "]":
                    raise _Unsure  # "[]...]": a "]" in Python, an empty class in ECMA-262
                in_class = True
                out.append(pattern[i:start])
                i = start
                continue
            if c == "(" and pattern[i + 1] == "?":
                if pattern[i + 2] != ":":
                    raise _Unsure  # lookarounds, flags, named groups
                out.append("(?:")
                i += 3
                continue
            if c == "{":
                found = re.match(r"\{\d+(,\d*)?\}", pattern[i:])
                if found is None:
                    raise _Unsure  # a literal "{" in Python, an error or "{,n}" in ECMA-262
                out.append(found.group())
                i += len(found.group())
                continue
            out.append(c)
            i += 1
    except (_Unsure, IndexError):
        return None
    return None if in_class else "".join(out)


class _Numbers:
    """Refuses a Decimal where jsonschema-rs and fastjsonschema would read it differently:
    as an integer (``Decimal("3")``: jsonschema-rs yes, fastjsonschema no), against a
    bound, or against listed numbers (jsonschema-rs may compare through a float)."""

    def __init__(self, parent_schema: dict[str, Any], value: bool, schema_path: Any):
        pass

    def validate(self, instance: Any) -> None:
        if isinstance(instance, Decimal):
            raise ValueError("left to fastjsonschema")


class _Pattern:
    """A pattern not translated to ECMA-262, checked with Python's ``re`` as fastjsonschema
    does."""

    def __init__(self, parent_schema: dict[str, Any], value: str, schema_path: Any):
        self.pattern = re.compile(_DOLLAR.sub(r"\\Z", value))  # as fastjsonschema compiles it

    def validate(self, instance: Any) -> None:
        if isinstance(instance, str) and self.pattern.search(instance) is None:
            raise ValueError("does not match")
