"""Whatever a file holds (random bytes, random JSON, random YAML, a valid flow with any of its
values replaced), `flowyard validate` answers with problems that each carry a line and a
message, or with a valid flow; never a traceback.

`flowyard validate` is what people run on flows they were sent, so it must survive anything.
Most examples go through the Engine API (fast); the CLI's own app is driven in-process for
some, and a seeded batch goes through a real `flowyard validate` subprocess.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cli import app
from engine import Engine
from engine.flow_schema import SCHEMA
from tests.conftest import ROOT
from tests.test_validate_mutations import RICH

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Words the loader knows, so that random documents reach past the first check.
WORDS = sorted(
    set(SCHEMA["properties"])
    | set(SCHEMA["definitions"]["step"]["properties"])
    | set(SCHEMA["definitions"]["call"]["properties"])
    | {"when", "otherwise", "steps", "items", "as", "key", "path", "record", "body", "each"}
    | {"connector", "connection", "file", "http", "sqlite", "stdout", "base_url", "auth"}
)
SPECIAL = [
    "{{ record.id }}",
    "{{ record.__class__ }}",
    "{{ '%0100000000d' % 1 }}",
    "{{ (((((((((((((((((((((((1))))))))))))))))))))))) }}",
    "{{",
    "{% for x in y %}",
    "${env:HOME}",
    "${ENV:X}",
    "${",
    "record.total > 0",
    "30d",
    "*/5 * * * *",
    "20/s",
    "../../../etc/passwd",
    "order",
    "shopify_order_to_canonical",
]
TEXTS = st.one_of(st.sampled_from(SPECIAL), st.sampled_from(WORDS), st.text(max_size=30))
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXTS,
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(TEXTS, st.integers(), st.booleans()), inner, max_size=4),
    ),
    max_leaves=25,
)


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> Path:
    """A flow file two folders down, so ``../../mappings`` finds the shipped mappings."""
    root = tmp_path_factory.mktemp("fuzz")
    os.symlink(ROOT / "mappings", root / "mappings")
    (root / "a" / "b").mkdir(parents=True)
    return root / "a" / "b" / "flow.yaml"


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> Engine:
    return Engine(state=tmp_path_factory.mktemp("state") / "s.db")


def check_answers_with_located_problems(engine: Engine, place: Path, data: bytes) -> None:
    place.write_bytes(data)
    problems = engine.check(place)  # raises nothing
    for problem in problems:
        assert problem.message, problem
        assert problem.line is not None and problem.line >= 1, str(problem)


def _dump(value: Any) -> bytes:
    return yaml.safe_dump(value, allow_unicode=True, sort_keys=False).encode("utf-8")


@SETTINGS
@given(data=st.binary(max_size=3000))
def test_random_bytes(engine, place, data):
    check_answers_with_located_problems(engine, place, data)


@SETTINGS
@given(text=st.text(max_size=2000))
def test_random_text(engine, place, text):
    check_answers_with_located_problems(engine, place, text.encode("utf-8", "surrogatepass"))


@SETTINGS
@given(value=VALUES)
def test_random_json(engine, place, value):
    check_answers_with_located_problems(engine, place, json.dumps(value).encode())


@SETTINGS
@given(value=st.dictionaries(st.sampled_from(WORDS), VALUES, max_size=8))
def test_random_yaml_mappings_of_flow_words(engine, place, value):
    check_answers_with_located_problems(engine, place, _dump(value))


def _paths(value: Any, at: tuple = ()) -> list[tuple]:
    found = [at]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*at, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*at, index))
    return found


def _replace(value: Any, path: tuple, new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {k: _replace(v, rest, new) if k == head else v for k, v in value.items()}
    return [_replace(v, rest, new) if i == head else v for i, v in enumerate(value)]


def _at(value: Any, path: tuple) -> Any:
    for part in path:
        value = value[part]
    return value


VALID = yaml.safe_load(RICH)
LEAVES = [p for p in _paths(VALID) if not isinstance(_at(VALID, p), dict | list)]


@settings(SETTINGS, max_examples=300)
@given(changes=st.lists(st.tuples(st.sampled_from(LEAVES), TEXTS), min_size=1, max_size=3))
def test_a_valid_flow_with_texts_in_place_of_its_values(engine, place, changes):
    # a text in place of a text mostly keeps the flow valid to the schema, so the checks
    # after the schema's run on it
    flow = VALID
    for path, text in changes:
        flow = _replace(flow, path, text)
    check_answers_with_located_problems(engine, place, _dump(flow))


@settings(SETTINGS, max_examples=300)
@given(changes=st.lists(st.tuples(st.integers(0, 10_000), VALUES), min_size=1, max_size=3))
def test_a_valid_flow_with_any_value_replaced(engine, place, changes):
    flow = VALID
    for index, new in changes:
        paths = _paths(flow)
        flow = _replace(flow, paths[index % len(paths)], new)
    check_answers_with_located_problems(engine, place, _dump(flow))


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    data=st.one_of(
        st.binary(max_size=500),
        VALUES.map(lambda v: json.dumps(v).encode()),
        st.dictionaries(st.sampled_from(WORDS), VALUES, max_size=6).map(_dump),
    )
)
def test_the_cli_app_exits_0_or_2_with_a_message(place, data):
    place.write_bytes(data)
    result = CliRunner().invoke(app, ["validate", str(place)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code in (0, 2), result.output
    assert "flow(s) valid" in result.output
    assert "Traceback" not in result.output


def _seeded_files(folder: Path, count: int) -> list[Path]:
    """Random files of every kind, the same on every run."""
    rng = random.Random(11)
    files = []
    for n in range(count):
        kind = n % 4
        if kind == 0:
            data = rng.randbytes(rng.randint(0, 2000))
        elif kind == 1:
            data = "".join(rng.choice(":-[]{}&*!|>'\"#\n\t %@`,?") for _ in range(300)).encode()
        elif kind == 2:
            lines = RICH.splitlines()
            for _ in range(3):
                i = rng.randrange(len(lines))
                lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)] + rng.choice(
                    [
                        "{{",
                        "'",
                        '"',
                        ": x",
                        "&a",
                        "*a",
                        "\t",
                        "[",
                        "]",
                        "${ENV:X}",
                        "__class__",
                        " 2024-02-30",
                        " !!int x",
                    ]
                )
            data = "\n".join(lines).encode()
        else:
            data = json.dumps(
                {rng.choice(WORDS): [rng.choice(WORDS), {rng.choice(WORDS): n}] for _ in range(5)}
            ).encode()
        path = folder / f"sample_{n:02}.yaml"
        path.write_bytes(data)
        files.append(path)
    return files


def test_a_real_flowyard_validate_over_random_files_never_shows_a_traceback(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    os.symlink(ROOT / "mappings", tmp_path / "mappings")
    files = _seeded_files(tmp_path / "a" / "b", 40)
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "validate", "--output", "json", *map(str, files)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    problems = json.loads(proc.stdout)
    assert {p["file"] for p in problems} == {str(f) for f in files}  # each file answered
    assert all(p["message"] and p["line"] for p in problems)
