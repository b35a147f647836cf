"""Safe YAML that remembers where every value came from.

:func:`load_yaml` returns plain ``dict``/``list`` subclasses (:class:`PosDict`,
:class:`PosList`) that carry the 1-based line and column of each key and value,
so any later check can point at the exact spot. Problems YAML itself would hide
are reported instead of swallowed: duplicate keys (PyYAML keeps the last one and
silently drops a branch) and templates left unquoted (``{{ x }}`` parses as a
nested mapping). YAML syntax errors are reworded into what to fix, with a hint
for the usual causes (tabs, unquoted templates, an unquoted ``: `` in a value).

Files may come from someone else and be validated before anyone trusts them, so the
shape of a document is checked from the parser's events before any value is built:
nesting deeper than :data:`MAX_DEPTH` levels, more than :data:`MAX_ALIASES` aliases, or
aliases that would add more than :data:`MAX_ALIAS_VALUES` values (a "billion laughs"
bomb of a few lines) are reported at the line where the limit is passed, and nothing is
built.
"""

from __future__ import annotations

import errno
import os
import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import yaml

from engine.errors import Problem

Pos = tuple[int, int]  # 1-based line, column

UNQUOTED_TEMPLATE_HINT = (
    "this looks like a Jinja template left unquoted, which YAML reads as a mapping; "
    'quote it, e.g. "{{ record.id }}"'
)
UNQUOTED_CONDITION_HINT = (
    "a condition is a bare expression, without {{ }} (YAML read the braces as a mapping); "
    "write e.g. `when: record.total > 100`"
)
TAGS_REFUSED = "tags (!!python/..., !custom) are not allowed; write plain values"
NOT_WHAT_IT_LOOKS_LIKE = "YAML reads"  # how a scalar's message starts when YAML misreads it
CONDITION_KEYS = ("when", "filter")

# The shape of one document (see docs/security.md). A flow or a mapping nests perhaps a
# dozen levels and uses a handful of aliases; these are far above that, and far below
# what costs the machine anything.
MAX_DEPTH = 50  # levels of mappings and sequences, aliases expanded
MAX_ALIASES = 1_000  # aliases (*name) in one document
MAX_ALIAS_VALUES = 10_000  # values the aliases of one document add, nested ones counted
MAX_FILE_BYTES = 10_000_000  # a flow, mapping or schema file


class FileTooLarge(OSError):
    """A definition file larger than :data:`MAX_FILE_BYTES` (``strerror`` says so)."""


class NotUtf8(OSError):
    """A definition file that is not UTF-8 text; ``line`` and ``column`` of the first bad byte."""

    def __init__(self, path: str, data: bytes, exc: UnicodeDecodeError):
        before = data[: exc.start]
        self.line = before.count(b"\n") + 1
        self.column = exc.start - (before.rfind(b"\n") + 1) + 1
        reason = f"not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8"
        super().__init__(errno.EILSEQ, reason, path)


def read_definition(path: str | os.PathLike[str]) -> str:
    """The text of a flow, mapping or schema file, read no further than the size limit.

    A flow names its mapping and schema files by path; one that names ``/proc/kcore`` (a
    "regular file" of many terabytes) must not make ``flowyard validate`` read it all.
    Every failure is an :class:`OSError` whose ``strerror`` says what is wrong
    (:class:`FileTooLarge`, :class:`NotUtf8` with the line of the first bad byte).
    """
    with open(path, "rb") as fh:
        data = fh.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise FileTooLarge(errno.EFBIG, f"larger than {MAX_FILE_BYTES:,} bytes", str(path))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotUtf8(str(path), data, exc) from None


_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


class PosDict(dict[Any, Any]):
    """A mapping with ``key_pos[key]`` and ``value_pos[key]`` and its own ``pos``."""

    pos: Pos = (0, 0)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.key_pos: dict[Any, Pos] = {}
        self.value_pos: dict[Any, Pos] = {}


class PosList(list[Any]):
    """A sequence with ``item_pos[i]`` and its own ``pos``."""

    pos: Pos = (0, 0)

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.item_pos: list[Pos] = []


def replaced_by_null(problem: Problem) -> bool:
    """Did this problem make the loader keep null in place of the value it names?"""
    return problem.message.startswith(
        (UNQUOTED_TEMPLATE_HINT, UNQUOTED_CONDITION_HINT, TAGS_REFUSED, NOT_WHAT_IT_LOOKS_LIKE)
    )


def _mark(node: yaml.Node | yaml.Event) -> Pos:
    mark = node.start_mark
    assert mark is not None  # the parser marks every node and event it makes
    return (mark.line + 1, mark.column + 1)


def _looks_like_unquoted_template(node: yaml.Node) -> bool:
    """``{{ x }}`` unquoted is a flow mapping whose only key is itself a flow mapping."""
    if not (isinstance(node, yaml.MappingNode) and node.flow_style):
        return False
    return any(isinstance(k, yaml.MappingNode) for k, _ in node.value)


if TYPE_CHECKING:

    class _LoaderBase(yaml.constructor.SafeConstructor):
        """What :class:`_Positions` uses of the loader it is mixed into."""

        def __init__(self, stream: str) -> None: ...
        def get_single_node(self) -> yaml.Node | None: ...
        def dispose(self) -> None: ...

else:
    _LoaderBase = object


class _Positions(_LoaderBase):
    """Construction that keeps positions; mixed into the C and the pure-Python loaders."""

    def __init__(self, stream: str, file: str):
        super().__init__(stream)
        self.file = file
        self.problems: list[Problem] = []

    def _problem(self, node: yaml.Node, path: str, message: str) -> None:
        line, col = _mark(node)
        self.problems.append(Problem(self.file, line, col, path, message))

    def construct_document(self, node: yaml.Node) -> Any:
        return self._construct(node, "", None)

    def _construct(self, node: yaml.Node, path: str, key: Any) -> Any:
        if isinstance(node, yaml.MappingNode | yaml.SequenceNode) and node.tag not in _PLAIN_TAGS:
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            self._problem(node, path, f"{TAGS_REFUSED} (found {tag})")
            return None
        if isinstance(node, yaml.MappingNode):
            if _looks_like_unquoted_template(node):
                hint = UNQUOTED_CONDITION_HINT if key in CONDITION_KEYS else UNQUOTED_TEMPLATE_HINT
                self._problem(node, path, hint)
                return None
            own = {id(k) for k, _ in node.value}
            self.flatten_mapping(node)  # resolves YAML merge keys (<<), merged pairs first
            result = PosDict()
            result.pos = _mark(node)
            merged: set[Any] = set()
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    self._problem(key_node, path, "a mapping key must be a plain value")
                    continue
                before = len(self.problems)
                name = self._scalar(key_node, path)
                if len(self.problems) > before:
                    continue  # a key YAML could not read (reported): leave the entry out
                child = f"{path}.{name}" if path else str(name)
                if name in result:
                    if name in merged and id(key_node) in own:
                        merged.discard(name)  # a key of its own overrides a merged one
                    else:
                        first = result.key_pos[name]
                        self._problem(
                            key_node,
                            child,
                            f"duplicate key {name!r} (first defined at line {first[0]}); "
                            "YAML would silently keep only the last one",
                        )
                        continue
                elif id(key_node) not in own:
                    merged.add(name)
                result[name] = self._construct(value_node, child, name)
                result.key_pos[name] = _mark(key_node)
                result.value_pos[name] = _mark(value_node)
            return result
        if isinstance(node, yaml.SequenceNode):
            result_list = PosList()
            result_list.pos = _mark(node)
            for i, item in enumerate(node.value):
                result_list.append(self._construct(item, f"{path}[{i}]", None))
                result_list.item_pos.append(_mark(item))
            return result_list
        return self._scalar(node, path)

    def _scalar(self, node: yaml.Node, path: str) -> Any:
        """A scalar's value; null (reported) when YAML's reading of it fails: a date that is
        no date (``2024-02-30``), a number past Python's 4,300 digits, ``!!int abc``."""
        try:
            return self.construct_object(node, deep=True)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            kind = node.tag.rsplit(":", 1)[-1].replace("timestamp", "date")
            text = node.value if len(node.value) <= 40 else node.value[:40] + "..."
            reason = str(exc) if isinstance(exc, ValueError) else f"not a valid {kind}"
            if "Exceeds the limit" in reason:
                reason = f"more than {sys.get_int_max_str_digits():,} digits"
            self._problem(
                node,
                path,
                f"{NOT_WHAT_IT_LOOKS_LIKE} {text!r} as {'an' if kind[0] in 'aeiou' else 'a'} "
                f"{kind}, but it is not one ({reason}); quote it to keep it as text",
            )
            return None


class _Loader(_Positions, yaml.SafeLoader):
    """The pure-Python parser: its error messages are the ones :func:`_explain` rewords."""


# libyaml's parser is ~10x faster; it reads every valid file, and an invalid one is read
# again by the pure-Python parser for the message.
_FastLoader: type[_Positions] | None = None
if getattr(yaml, "__with_libyaml__", False):

    class _CLoader(_Positions, yaml.CSafeLoader):
        """The libyaml parser with the same construction."""

    _FastLoader = _CLoader


class _Open:
    """A collection being read by :func:`_shape_problem`: its size, height, current child."""

    __slots__ = ("anchor", "values", "height", "is_map", "index", "key", "want_key")

    def __init__(self, anchor: str | None, is_map: bool):
        self.anchor, self.is_map = anchor, is_map
        self.values, self.height, self.index, self.key, self.want_key = 1, 0, -1, "?", True

    def child(self, event: yaml.Event) -> None:
        """Note the child ``event`` starts (a key, a value or an item)."""
        if not self.is_map:
            self.index += 1
        elif self.want_key:
            self.key = event.value if isinstance(event, yaml.ScalarEvent) else "?"
        self.want_key = not self.want_key

    def add(self, values: int, height: int) -> None:
        self.values += values
        self.height = max(self.height, height)


def _shape_problem(text: str, file: str) -> Problem | None:
    """The first place where the document passes a shape limit, read from parser events.

    Nothing is built: an alias costs what its anchor holds, counted from the events, so a
    bomb is refused after reading its text once. A syntax error ends the check quietly
    (the load reports it). libyaml refuses 1,000 levels before it yields the first event,
    so a file it cannot read is read again by the pure-Python parser, which has no limit
    of its own and is not recursive.
    """
    if _FastLoader is not None:
        try:
            return _events_problem(yaml.CSafeLoader(text), file)
        except yaml.YAMLError:
            pass
    try:
        return _events_problem(yaml.SafeLoader(text), file)
    except yaml.YAMLError:
        return None  # a syntax error: the load reports it


def _events_problem(parser: yaml.SafeLoader | yaml.CSafeLoader, file: str) -> Problem | None:
    sizes: dict[str | None, tuple[int, int]] = {}  # anchor -> (values, height)
    stack: list[_Open] = []
    aliases = added = 0

    def problem(event: yaml.Event, message: str) -> Problem:
        path = format_path([o.key if o.is_map else o.index for o in stack])
        return Problem(file, *_mark(event), path, message)

    try:
        while True:
            event = parser.get_event()
            if event is None or isinstance(event, yaml.StreamEndEvent):
                return None
            if isinstance(event, yaml.CollectionEndEvent):
                done = stack.pop()
                if done.anchor:
                    sizes[done.anchor] = (done.values, done.height + 1)
                if stack:
                    stack[-1].add(done.values, done.height + 1)
                continue
            if not isinstance(event, yaml.NodeEvent):
                continue  # the starts and ends of the stream and of documents
            if stack:
                stack[-1].child(event)
            if isinstance(event, yaml.AliasEvent):
                aliases += 1
                values, height = sizes.get(event.anchor, (1, 0))
                added += values
                if aliases > MAX_ALIASES:
                    return problem(event, f"more than {MAX_ALIASES} aliases (*name) in one file")
                if added > MAX_ALIAS_VALUES:
                    return problem(
                        event,
                        f"the aliases up to here (*{event.anchor}) expand to more than "
                        f"{MAX_ALIAS_VALUES} values; a file whose aliases multiply it is "
                        "refused: write the values out",
                    )
                if len(stack) + height > MAX_DEPTH:
                    return problem(
                        event,
                        f"*{event.anchor} nests values more than {MAX_DEPTH} levels deep here",
                    )
                if stack:
                    stack[-1].add(values, height)
            elif isinstance(event, yaml.CollectionStartEvent):
                if len(stack) >= MAX_DEPTH:
                    return problem(event, f"values nested more than {MAX_DEPTH} levels deep")
                stack.append(_Open(event.anchor, isinstance(event, yaml.MappingStartEvent)))
            else:  # a scalar
                if event.anchor:
                    sizes[event.anchor] = (1, 0)
                if stack:
                    stack[-1].add(1, 0)
    finally:
        parser.dispose()


def _load(
    cls: Callable[[str, str], _Positions], text: str, file: str
) -> tuple[Any, list[Problem], _Positions]:
    loader = cls(text, file)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, [Problem(file, 1, 1, "", "the file is empty")], loader
        data = loader.construct_document(node)
        if data is None and not loader.problems:
            line, col = _mark(node)
            return (
                None,
                [Problem(file, line, col, "", "the file holds only null, nothing else")],
                loader,
            )
        return data, loader.problems, loader
    finally:
        loader.dispose()


def load_yaml(text: str, file: str) -> tuple[Any, list[Problem]]:
    """Parse one YAML document; returns the data (None when unreadable) and the problems found."""
    shape = _shape_problem(text, file)
    if shape is not None:
        return None, [shape]
    if _FastLoader is not None:
        try:
            return _load(_FastLoader, text, file)[:2]
        except yaml.YAMLError:
            pass  # read again below, for the pure-Python parser's words
    loader: _Loader | None = None
    try:
        loader = made = _Loader(text, file)
        return _load(lambda *_: made, text, file)[:2]
    except yaml.reader.ReaderError as exc:
        at = _offset_position(text, exc.position)
        char = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        return None, [
            Problem(file, *at, "", f"invalid YAML: the character {char} is not allowed here")
        ]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if exc.context_mark and (_at_end(exc) or "simple key" in (exc.context or "")):
            # an unclosed quote or bracket, a line without ':': point at where it starts
            mark = exc.context_mark
        line: int | None = None
        col: int | None = None
        if mark:
            line, col = mark.line + 1, mark.column + 1
        message = _explain(exc, text)
        opened = _quote_read_on(text, exc.problem_mark.line) if exc.problem_mark else None
        if opened is not None:
            # the quote opened above was closed by the next quote, where the parser choked
            line, col = opened.start_mark.line + 1, opened.start_mark.column + 1
            message = (
                f"invalid YAML: this quoted text is not closed on its line; YAML read on to "
                f"the next {opened.style} on line {opened.end_mark.line + 1} "
                f"[YAML: {' '.join(filter(None, [exc.context, exc.problem]))}]"
            )
        earlier = loader.problems if loader else []
        return None, earlier + [Problem(file, line, col, "", message)]
    except yaml.YAMLError as exc:
        earlier = loader.problems if loader else []
        return None, earlier + [Problem(file, None, None, "", f"invalid YAML: {exc}")]


def _quote_read_on(text: str, error_line: int) -> Any:
    """The quoted scalar that spans several lines and ends on ``error_line``, if any.

    A quote left open on one line is closed by the next quote in the file, often many
    lines below, and the parser stops there; the place to fix is where the quote opened.
    """
    scanner = yaml.SafeLoader(text)
    try:
        while (token := scanner.get_token()) is not None:
            if token.start_mark.line > error_line:
                break
            if (
                isinstance(token, yaml.ScalarToken)
                and token.style in ("'", '"')
                and token.start_mark.line < token.end_mark.line == error_line
            ):
                return token
    except yaml.YAMLError:
        pass
    finally:
        scanner.dispose()
    return None


def _at_end(exc: yaml.MarkedYAMLError) -> bool:
    return any(s in (exc.problem or "") for s in ("end of stream", "<stream end>"))


def _offset_position(text: str, offset: int) -> Pos:
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


_BLOCK_END = re.compile(r"expected <block end>, but found '?(?P<found>[^']*)'?")


def _explain(exc: yaml.MarkedYAMLError, text: str) -> str:
    """A YAML error in the words of what to fix; YAML's own wording follows in brackets."""
    problem = exc.problem or ""
    context = exc.context or ""
    said = " ".join(filter(None, [context, problem])) or str(exc)
    mark = exc.problem_mark or exc.context_mark
    lines = text.splitlines()
    line_text = lines[mark.line] if mark and mark.line < len(lines) else ""
    keyed = re.match(r"^\s*(?:-\s+)*(?:([^\s:'\"][^:]*):\s+)?", line_text)
    key = keyed.group(1) if keyed else None
    value = line_text[keyed.end() :] if keyed else line_text
    started = (
        f" (the enclosing block starts at line {exc.context_mark.line + 1})"
        if exc.context_mark and mark and exc.context_mark.line != mark.line and not _at_end(exc)
        else ""
    )
    if "\t" in problem or "\t" in line_text[: len(line_text) - len(line_text.lstrip())]:
        message = "a tab character: YAML indents with spaces only, never tabs"
    elif value.startswith(("{{", "{%")) and key in CONDITION_KEYS:
        message = UNQUOTED_CONDITION_HINT
    elif value.startswith(("{{", "{%")):
        message = (
            "a template must be quoted: YAML cannot read a value that starts with "
            + value[:2]
            + ' (write e.g. key: "{{ record.id }}")'
        )
    elif "mapping values are not allowed here" in problem:
        message = (
            "unexpected ':' here: a value that contains ': ' must be quoted, "
            "or this line is indented too far"
        )
    elif value[:1] in "\"'" and "found '<scalar>'" in problem:
        message = "text follows a quoted value; quote the whole value, or nothing of it"
    elif _BLOCK_END.search(problem) and not started and "'<scalar>'" in problem:
        message = "unexpected text after a complete value; quote the whole value if it is text"
    elif _BLOCK_END.search(problem):
        message = f"this line is not indented like the lines around it{started}"
    elif "simple key" in context:
        message = (
            "this line has no ':'; inside a mapping every line is `key: value` "
            "(or it is indented too little to continue the value above)"
        )
    elif "expected the node content" in problem:
        found = problem.rsplit("but found ", 1)[-1]
        message = f"a value is missing here: found {found} where a value should start"
    elif "<document start>" in problem:
        message = "this line does not continue the YAML above it; check its indentation"
    elif "found unexpected end of stream" in problem and "quoted scalar" in context:
        message = "this quoted text is never closed"
    elif "flow sequence" in context or "flow mapping" in context:
        bracket = "[ ]" if "sequence" in context else "{ }"
        opened = exc.context_mark.line + 1 if exc.context_mark else "?"
        message = f"the inline {bracket} opened at line {opened} is not closed properly"
    elif "found undefined alias" in problem:
        message = "an alias (*name) refers to no anchor (&name) defined before it"
    elif "could not determine a constructor for the tag" in problem:
        message = TAGS_REFUSED
    elif "expected a single document" in said:
        message = "a flow file holds one YAML document; remove the '---' separator"
    else:
        return f"invalid YAML: {said}"
    return f"invalid YAML: {message} [YAML: {said}]"


def position(data: Any, path: list[Any]) -> Pos | None:
    """The line and column of the value at ``path`` (keys and indexes) inside loaded data.

    Walks as deep as the data goes, so a path into a missing key points at its parent.
    """
    best: Pos | None = getattr(data, "pos", None)
    node = data
    for part in path:
        if isinstance(node, PosDict) and part in node:
            best = node.value_pos.get(part, best)
            node = node[part]
        elif isinstance(node, PosList) and isinstance(part, int) and 0 <= part < len(node):
            best = node.item_pos[part]
            node = node[part]
        else:
            break
    return best


def key_position(data: Any, path: list[Any]) -> Pos | None:
    """The line and column of the *key* at the end of ``path`` (for "unknown key" errors)."""
    parent_path, last = path[:-1], path[-1] if path else None
    node = data
    for part in parent_path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return position(data, path)
    if isinstance(node, PosDict) and last in node.key_pos:
        return node.key_pos[last]
    return position(data, path)


def format_path(path: list[Any]) -> str:
    """``["steps", 2, "send", "body"]`` -> ``steps[2].send.body``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
