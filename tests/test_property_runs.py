"""Random input through real runs: whatever the lines of a source file hold (any JSON value,
any bytes), a run ends with an exit code and a message, never a traceback, never left
``running``; every line it could not read is dead-lettered with its line, every line it
could read ends in a final state."""

from __future__ import annotations

import json
import math
from contextlib import closing

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import Engine
from engine.store import SqliteStore
from tests.conftest import invoke, write_flow

FLOW = """
flow: anything
connections:
  out: {connector: file}
source: {connector: file, path: in.ndjson}
steps:
  - route:
      - when: record is mapping
        steps:
          - set: {fields: "{{ record | length }}"}
          - send: {connection: out, path: objects.ndjson, record: "{{ record }}"}
      - otherwise:
          - send: {connection: out, path: others.ndjson, record: "{{ record }}"}
"""

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)
json_lines = json_values.map(lambda v: json.dumps(v).encode("utf-8", "surrogatepass"))
byte_lines = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" ").replace(b"\r", b" "))
special = st.sampled_from(
    [
        b"[" * 5000 + b"]" * 5000,
        b'{"id": ' + b"7" * 5000 + b"}",
        b'{"id": 1, "s": "\\udc00"}',
        b'{"id": 2, "n": NaN}',
        b'{"id": "${env:HOME}"}',
        b"\xff\xfe{}",
    ]
)
files = st.lists(json_lines | byte_lines | special, min_size=1, max_size=12)


def readable(raw: bytes) -> bool | None:
    """Whether a line holds a value a record may hold (None: a blank line, skipped)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    if not text or text.isspace():
        return None

    def refuse(name: str) -> None:
        raise ValueError(name)

    try:
        value = json.loads(text, parse_constant=refuse)
    except (ValueError, RecursionError):
        return False
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > 100:
            return False
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, float) and not math.isfinite(item):
            return False
        elif isinstance(item, dict):
            stack += [(k, depth) for k in item] + [(v, depth + 1) for v in item.values()]
        elif isinstance(item, list):
            stack += [(v, depth + 1) for v in item]
    return True


def check_run(tmp_path, lines: list[bytes], result) -> None:
    (tmp_path / "in.ndjson").write_bytes(b"".join(line + b"\n" for line in lines))
    with closing(SqliteStore(tmp_path / "state.db")) as store:
        runs = store.list_runs()
        letters = store.dead_letters()
        traces = store.run_records(runs[0].run_id)
    assert all(r.status != "running" for r in runs)
    expected = {n: readable(raw) for n, raw in enumerate(lines, start=1)}
    at_source = {d.line for d in letters if d.step == "source"}
    unreadable = {n for n, ok in expected.items() if ok is False}
    assert unreadable <= at_source, (unreadable - at_source, lines)
    assert len(traces) == sum(ok is not None for ok in expected.values())
    assert all(t.outcome in ("done", "skipped", "dead_lettered") for t in traces)
    assert result in (0, 1)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(lines=files)
def test_random_lines_through_a_run(tmp_path_factory, lines):
    tmp_path = tmp_path_factory.mktemp("prop")
    flow = write_flow(tmp_path, FLOW)
    (tmp_path / "in.ndjson").write_bytes(b"".join(line + b"\n" for line in lines))
    result = Engine(state=tmp_path / "state.db").run(flow)
    assert result.message is None or "\n" not in result.message
    check_run(tmp_path, lines, result.exit_code)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(lines=files)
def test_random_lines_through_the_cli(tmp_path_factory, lines):
    tmp_path = tmp_path_factory.mktemp("prop_cli")
    flow = write_flow(tmp_path, FLOW)
    (tmp_path / "in.ndjson").write_bytes(b"".join(line + b"\n" for line in lines))
    done = invoke("run", flow, "--state", tmp_path / "state.db", "-o", "json", cwd=tmp_path)
    assert "Traceback" not in done.stderr + done.stdout
    assert json.loads(done.stdout)["exit_code"] == done.returncode
    check_run(tmp_path, lines, done.returncode)
