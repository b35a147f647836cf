"""``flowyard test --update``: the ``expect:`` of the cases that failed, rewritten with what
they got, and nothing else of the test file touched (its comments included).

The test file's YAML was read with positions (``engine/yamlpos.py``): each case's lines
and its ``expect:`` block are found by them and replaced as text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.flowtest_results import CaseResult, as_yaml
from engine.yamlpos import key_position

if TYPE_CHECKING:
    from engine.flowtest import _TestFile

# what --update writes, in this order; "records" only for the steps a case names
EXPECT_KEYS = ("outcome", "path", "records", "requests", "dead_letters", "reviews")


def rewrite_expectations(tests: _TestFile, cases: list[CaseResult]) -> list[str]:
    """Rewrite the ``expect:`` of each case of the test file ``tests`` (an
    ``engine.flowtest._TestFile``) that failed, or had none, with what it got.

    Only the lines of those ``expect:`` blocks change; the rest of the file, comments
    included, stays as it was. A case with a request no stub answered is left alone.
    """
    lines = tests.text.splitlines(keepends=True)
    edits: list[tuple[int, int, list[str]]] = []  # (first line, end line, new lines)
    names = [c.name for c in cases]
    done: list[str] = []
    for i, case in enumerate(tests.data["cases"]):
        name = str(case["name"])
        if name not in names:
            continue
        result = cases[names.index(name)]
        if result.status == "error" or any(d.what == "unanswered" for d in result.differences):
            continue
        if result.status == "passed" and "expect" in case:
            continue
        span = _case_lines(tests, i, len(lines))
        if span is None:
            continue
        first, end, indent = span
        expect = _expectation(case.get("expect") or {}, result.got)
        block = as_yaml({"expect": expect}).splitlines(keepends=True)
        block = [(" " * indent + line) if line.strip() else line for line in block]
        if "expect" in case:
            at = key_position(tests.data, ["cases", i, "expect"])
            assert at is not None  # the case has an expect: key, read with its position
            start = at[0] - 1
            stop = _block_end(tests, i, "expect", end)
        else:
            start = stop = end
        edits.append((start, stop, block))
        done.append(name)
    for start, stop, block in sorted(edits, reverse=True):
        lines[start:stop] = block
    if edits:
        tests.path.write_text("".join(lines), encoding="utf-8")
    return done


def _case_lines(tests: _TestFile, i: int, total: int) -> tuple[int, int, int] | None:
    """(first line, end line after its last content line, key indent) of case ``i``,
    0-based; None for a case written in flow style."""
    case = tests.data["cases"][i]
    keys = sorted(case.key_pos.values())
    if not keys or len({line for line, _ in keys}) != len(keys):
        return None  # keys on one line: a flow-style mapping
    first = keys[0][0] - 1
    cases = tests.data["cases"]
    end = cases.item_pos[i + 1][0] - 1 if i + 1 < len(cases) else _list_end(tests, total)
    lines = tests.text.splitlines()
    while end > first + 1 and (not lines[end - 1].strip() or lines[end - 1].lstrip()[:1] == "#"):
        end -= 1
    # the "- " of the case's first line: its keys start after it
    return first, end, keys[0][1] - 1


def _list_end(tests: _TestFile, total: int) -> int:
    """The line after the cases list: the next top-level key after ``cases``, or EOF."""
    start = tests.data.key_pos["cases"][0]
    later = [line for line, _ in tests.data.key_pos.values() if line > start]
    return min(later) - 1 if later else total


def _block_end(tests: _TestFile, i: int, key: str, end: int) -> int:
    """The line after the value of ``key`` in case ``i``: the next key of the case's."""
    case = tests.data["cases"][i]
    start = case.key_pos[key][0]
    later = [line for line, _ in case.key_pos.values() if line > start]
    stop = min(later) - 1 if later else end
    lines = tests.text.splitlines()
    while stop > start and (not lines[stop - 1].strip() or lines[stop - 1].lstrip()[:1] == "#"):
        stop -= 1
    return stop


def _expectation(old: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    """What --update writes: everything the case got, the records of the steps it named."""
    new: dict[str, Any] = {}
    for key in EXPECT_KEYS:
        if key == "records":
            if old.get("records"):
                new["records"] = {name: got["records"].get(name) for name in old["records"]}
        elif key in ("dead_letters", "reviews", "requests"):
            if got.get(key):
                new[key] = got[key]
        elif key in got:
            new[key] = got[key]
    return new
