"""`flowyard validate` as a user meets it: every broken flow of the corpus in tests/broken/ is
reported at the exact file, line and flow path, with every problem of a file at once and no
traceback; the shipped flows and the examples of docs/flows.md validate, against the loader
and against the exported JSON Schema.

Each corpus file states what validating it must report in its first lines::

    # expect: 9 steps[0].send.connection: unknown connection 'ERP' (did you mean 'erp'?)
    # expect: mappings/syntax_error.yaml:5: this quoted text is never closed
    # expect-warning: 10 connections.erp.auth.token: environment variable X is not set
    # exit: 0

``LINE`` (or ``FILE:LINE`` for a file next to the flow, such as a mapping), then the flow
path (none for the whole file), then a part of the message. The problems of a file must be
exactly the expected ones: nothing missing, nothing more.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pytest
import yaml

from connectors import Connector
from engine import Engine, FlowError
from tests.conftest import ROOT, invoke, write_flow

CORPUS = ROOT / "tests" / "broken"
CORPUS_FILES = sorted(CORPUS.glob("*.yaml"))
EXPECT = re.compile(
    r"^# expect(?P<warning>-warning)?: (?:(?P<file>\S+):)?(?P<line>\d+)(?: (?P<path>.*?))?: "
    r"(?P<message>.+)$"
)


@dataclass(frozen=True)
class Expected:
    file: str
    line: int
    path: str
    severity: str
    message: str


def expectations(flow: Path) -> tuple[list[Expected], int]:
    """The problems and the exit code a corpus file declares in its header comments."""
    expected, code = [], 2
    for line in flow.read_bytes().decode("utf-8", errors="replace").splitlines():
        if not line.startswith("#"):
            break
        if line.startswith("# exit:"):
            code = int(line.split(":", 1)[1])
        match = EXPECT.match(line)
        if match:
            file = str((flow.parent / match["file"]).resolve()) if match["file"] else str(flow)
            severity = "warning" if match["warning"] else "error"
            expected.append(
                Expected(file, int(match["line"]), match["path"] or "", severity, match["message"])
            )
    return expected, code


def _key(file: str) -> str:
    return str((ROOT / file).resolve())


@pytest.fixture(scope="module")
def corpus_run() -> tuple[subprocess.CompletedProcess, list[dict]]:
    """One `flowyard validate --output json` over the whole corpus, as a user would run it."""
    proc = subprocess.run(
        [sys.executable, "-m", "cli", "validate", "--output", "json", *map(str, CORPUS_FILES)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("FLOWYARD_CORPUS_")},
    )
    return proc, json.loads(proc.stdout)


def test_the_corpus_is_a_specification_of_at_least_forty_broken_flows():
    assert len(CORPUS_FILES) >= 40
    for flow in CORPUS_FILES:
        expected, code = expectations(flow)
        assert expected, f"{flow.name} declares no `# expect:` line"
        assert code == 0 or any(e.severity == "error" for e in expected), flow.name


def test_validating_the_corpus_fails_with_exit_2_and_no_traceback(corpus_run):
    proc, problems = corpus_run
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert problems and all(p["line"] and p["line"] >= 1 and p["message"] for p in problems)


@pytest.mark.parametrize("flow", CORPUS_FILES, ids=[f.stem for f in CORPUS_FILES])
def test_each_broken_flow_is_reported_at_its_line_and_path(flow, corpus_run):
    _, problems = corpus_run
    expected, _ = expectations(flow)
    files = {str(flow)} | {e.file for e in expected}
    got = [p for p in problems if _key(p["file"]) in files]
    where = sorted((_key(p["file"]), p["line"], p["path"], p["severity"]) for p in got)
    want = sorted((e.file, e.line, e.path, e.severity) for e in expected)
    assert where == want, "\n".join(
        f"{p['file']}:{p['line']} {p['path']} {p['severity']}: {p['message']}" for p in got
    )
    for e in expected:
        messages = [
            p["message"]
            for p in got
            if (_key(p["file"]), p["line"], p["path"]) == (e.file, e.line, e.path)
        ]
        assert any(e.message in m for m in messages), (e.message, messages)


def test_no_problem_of_the_corpus_is_left_unexplained(corpus_run):
    _, problems = corpus_run
    declared = {str(f) for f in CORPUS_FILES}
    for flow in CORPUS_FILES:
        declared |= {e.file for e in expectations(flow)[0]}
    assert {_key(p["file"]) for p in problems} <= declared


# -- the human-readable output, one file at a time ------------------------------------------
def test_an_unknown_connection_reads_file_line_column_path_and_a_suggestion():
    proc = invoke("validate", "tests/broken/unknown_connection.yaml")
    assert proc.returncode == 2
    assert (
        "tests/broken/unknown_connection.yaml:9:19: error at steps[0].send.connection: "
        "unknown connection 'ERP' (did you mean 'erp'?); defined: erp"
    ) in proc.stderr
    assert "0 of 1 flow(s) valid; 1 error(s)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_every_problem_of_a_file_is_reported_at_once():
    problems = Engine(state="/nonexistent/s.db").check(CORPUS / "every_problem_at_once.yaml")
    assert [str(p).split(": error")[0].rsplit(":", 2)[1] for p in problems] == ["9", "10", "13"]
    assert "unknown filter 'lenght' (did you mean 'length'?)" in problems[0].message
    assert "unknown step kind or key 'sned' (did you mean 'send'?)" in problems[1].message
    assert "unknown connection 'ERP' (did you mean 'erp'?)" in problems[2].message


def test_an_error_inside_a_mapping_points_into_the_mapping_file():
    [problem] = Engine(state="/nonexistent/s.db").check(CORPUS / "broken_mapping_syntax.yaml")
    assert problem.file == str(CORPUS / "mappings" / "syntax_error.yaml")
    assert (problem.line, problem.column) == (5, 9)
    assert problem.message.startswith("invalid YAML: this quoted text is never closed")


def test_a_yaml_syntax_error_says_what_to_fix():
    proc = invoke("validate", "tests/broken/yaml_tab_indentation.yaml")
    assert proc.returncode == 2
    assert "yaml_tab_indentation.yaml:7:1: error: invalid YAML: a tab character" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_missing_env_variable_is_a_warning_when_validating_and_an_error_when_running(
    tmp_path,
):
    env = {k: v for k, v in os.environ.items() if k != "FLOWYARD_CORPUS_UNSET_TOKEN"}
    flow = "tests/broken/env_missing_is_a_warning.yaml"
    proc = invoke("validate", flow, env=env)
    assert proc.returncode == 0, proc.stderr
    assert (
        "env_missing_is_a_warning.yaml:10:14: warning at connections.erp.auth.token: "
        "environment variable FLOWYARD_CORPUS_UNSET_TOKEN is not set"
    ) in proc.stdout
    assert "1 of 1 flow(s) valid" in proc.stdout
    ran = invoke("run", flow, "--state", str(tmp_path / "s.db"), env=env)
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert "FLOWYARD_CORPUS_UNSET_TOKEN" in ran.stdout + ran.stderr
    assert "Traceback" not in ran.stderr


# -- in-process: what the CLI cannot set up ------------------------------------------------------
class _SourceOnly(Connector):
    name = "source_only"
    read_schema = {"type": "object", "properties": {}}


def test_a_send_through_a_source_only_connector_is_refused(tmp_path):
    flow = write_flow(
        tmp_path,
        """
        flow: wrong_role
        connections:
          feed: {connector: source_only}
        source: {connection: feed}
        steps:
          - name: post
            send:
              connection: feed
              record: "{{ record }}"
        """,
    )
    eng = Engine(state=tmp_path / "s.db")
    eng.register_connector("source_only", _SourceOnly)
    with pytest.raises(FlowError) as caught:
        eng.load(flow)
    [problem] = caught.value.problems
    assert (problem.line, problem.path) == (8, "steps[0].send.connection")
    assert "connector 'source_only' cannot be used in a send or enrich step" in problem.message
    assert "offers: source" in problem.message


def test_load_raises_one_flow_error_listing_every_problem_with_positions():
    with pytest.raises(FlowError) as caught:
        Engine(state="/nonexistent/s.db").load(CORPUS / "every_problem_at_once.yaml")
    assert [(p.line, p.path) for p in caught.value.problems] == [
        (9, "steps[0].filter"),
        (10, "steps[1].sned"),
        (13, "steps[2].send.connection"),
    ]
    assert "every_problem_at_once.yaml:9:13: error at steps[0].filter" in str(caught.value)


# -- what ships validates ------------------------------------------------------------------------
def _shipped_flows() -> list[Path]:
    candidates = [*ROOT.glob("flows/**/*.y*ml"), *ROOT.glob("examples/**/*.y*ml")]
    return sorted(p for p in candidates if re.search(r"^flow:", p.read_text(), re.M))


SHIPPED = _shipped_flows()


@pytest.fixture(scope="module")
def exported_schema() -> dict:
    proc = invoke("schema")
    assert proc.returncode == 0, proc.stderr
    schema = json.loads(proc.stdout)
    jsonschema.Draft7Validator.check_schema(schema)
    return schema


def test_the_quickstart_is_among_the_shipped_flows():
    assert ROOT / "examples" / "quickstart" / "flow.yaml" in SHIPPED


def _engine_with_connectors_beside(flow: Path) -> Engine:
    """An engine that knows the connectors defined next to the flow (examples/embed/ ships
    its own, registered by its application)."""
    eng = Engine(state="/nonexistent/s.db")
    for module_file in flow.parent.glob("*.py"):
        spec = importlib.util.spec_from_file_location(f"_example_{module_file.stem}", module_file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Connector) and value.name:
                if value.__module__ == module.__name__:
                    eng.register_connector(value.name, value)
    return eng


@pytest.mark.parametrize("flow", SHIPPED, ids=[str(p.relative_to(ROOT)) for p in SHIPPED])
def test_every_shipped_flow_validates(flow, exported_schema):
    problems = _engine_with_connectors_beside(flow).check(flow)
    assert [str(p) for p in problems if p.severity == "error"] == []
    data = yaml.safe_load(flow.read_text(encoding="utf-8"))
    problems = list(jsonschema.Draft7Validator(exported_schema).iter_errors(data))
    assert [p.message for p in problems] == []


def test_the_exported_schema_explains_every_key_to_an_editor(exported_schema):
    def walk(schema: dict, where: str) -> list[str]:
        missing = []
        for name, sub in (schema.get("properties") or {}).items():
            if "description" not in sub and "$ref" not in sub:
                missing.append(f"{where}.{name}")
            missing += walk(sub, f"{where}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(schema.get(key), dict):
                missing += walk(schema[key], f"{where}[{key}]")
        return missing

    assert walk(exported_schema, "flow") == []
    for name, definition in exported_schema["definitions"].items():
        assert walk(definition, name) == []


# -- docs/flows.md ---------------------------------------------------------------------------------
DOC = ROOT / "docs" / "flows.md"
BLOCK = re.compile(r"^```yaml(?P<info>[^\n]*)\n(?P<body>.*?)^```", re.M | re.S)


def _doc_blocks() -> list[tuple[str, str]]:
    if not DOC.exists():
        return []
    return [(m["info"].strip(), m["body"]) for m in BLOCK.finditer(DOC.read_text())]


def test_docs_flows_md_has_full_flow_examples():
    assert sum(1 for info, _ in _doc_blocks() if info == "flow") >= 2


# Fragments are checked inside this flow: their top-level keys replace its own (connections
# are added to these), a list of steps replaces its steps.
SKELETON = {
    "flow": "doc_fragment",
    "connections": {
        name: {"connector": "http", "base_url": f"https://{name}.example.com"}
        for name in ("erp", "shop", "wms")
    }
    | {"queues": {"connector": "file"}},
    "source": {"connector": "file", "path": "in.ndjson"},
    "steps": [{"filter": "true"}],
}


def _as_flow(fragment: object) -> dict:
    if isinstance(fragment, list):
        return {**SKELETON, "steps": fragment}
    assert isinstance(fragment, dict), fragment
    connections = {**SKELETON["connections"], **(fragment.get("connections") or {})}
    return {**SKELETON, **fragment, "connections": connections}


@pytest.mark.parametrize("index", range(len(_doc_blocks())))
def test_every_yaml_example_in_docs_flows_md_is_right(index, tmp_path):
    info, body = _doc_blocks()[index]
    if info != "flow":
        body = yaml.safe_dump(_as_flow(yaml.safe_load(body)), sort_keys=False)
    # written where the shipped mappings are found by the default search path
    (tmp_path / "flows").mkdir()
    os.symlink(ROOT / "mappings", tmp_path / "mappings")
    flow = tmp_path / "flows" / "example.yaml"
    flow.write_text(body, encoding="utf-8")
    problems = Engine(state=tmp_path / "s.db").check(flow)
    assert [str(p) for p in problems if p.severity == "error"] == [], body


# -- hostile files: `flowyard validate` is what people run on flows they were sent ---------------
def _alias_bomb(levels: int) -> str:
    """``levels`` anchors of ten aliases each to the one before: 10**levels values."""
    lines = ["flow: bomb", "source: {connector: file, path: in.ndjson}", "steps: [filter: 'true']"]
    lines.append("vars:")
    lines.append("  l0: &l0 [x, x, x, x, x, x, x, x, x, x]")
    for i in range(1, levels):
        lines.append(f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def _validate_measured(tmp_path: Path, name: str, text: str):
    """`flowyard validate` on ``text`` in a subprocess: its result, seconds and peak MB."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    script = (
        "import resource, subprocess, sys, time\n"
        "started = time.perf_counter()\n"
        "proc = subprocess.run([sys.executable, '-m', 'cli', 'validate', sys.argv[1]],"
        " capture_output=True, text=True, timeout=60)\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(proc.returncode, time.perf_counter() - started, peak)\n"
        "sys.stderr.write(proc.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    code, seconds, megabytes = proc.stdout.split()
    return int(code), float(seconds), float(megabytes), proc.stderr


def test_an_alias_bomb_is_refused_in_a_blink_at_its_line(tmp_path):
    # nine levels: 10**9 values from 800 bytes; it took 4 GB and a MemoryError traceback
    code, seconds, megabytes, stderr = _validate_measured(tmp_path, "b.yaml", _alias_bomb(9))
    assert code == 2 and "Traceback" not in stderr
    assert "b.yaml:8:47: error at vars.l3[7]: the aliases up to here (*l2) expand" in stderr
    assert seconds < 10 and megabytes < 300


def test_a_document_nested_100_000_levels_deep_is_refused_at_its_line(tmp_path):
    text = "flow: deep\nvars:\n  x: " + "[" * 100_000 + "]" * 100_000 + "\n"
    code, seconds, megabytes, stderr = _validate_measured(tmp_path, "d.yaml", text)
    assert code == 2 and "Traceback" not in stderr
    assert "d.yaml:3:54: error at vars.x" in stderr  # the 49th [, the 51st level
    assert "values nested more than 50 levels deep" in stderr
    assert seconds < 20


def test_a_3_mb_template_is_refused_at_its_line(tmp_path):
    text = (
        "flow: big\nsource: {connector: file, path: in.ndjson}\nsteps:\n  - set:\n"
        '      label: "' + "{{ record.x }} " * 200_000 + '"\n'
    )
    code, seconds, megabytes, stderr = _validate_measured(tmp_path, "t.yaml", text)
    assert code == 2 and "Traceback" not in stderr
    assert (
        "t.yaml:5:14: error at steps[0].set.label: a template of 3,000,000 characters; "
        "the limit is 100,000"
    ) in stderr
    assert seconds < 20


def test_aliases_within_the_limits_load(tmp_path):
    flow = write_flow(
        tmp_path,
        """
        flow: anchors
        connections:
          a: {connector: http, base_url: "https://a.example.com", retry: &retry {attempts: 3}}
          b: {connector: http, base_url: "https://b.example.com", retry: *retry}
        source: {connector: file, path: in.ndjson}
        steps:
          - name: to_a
            send: {connection: a, path: /x, body: &body {id: "{{ record.id }}"}}
          - name: to_b
            send: {connection: b, path: /x, body: *body}
        """,
    )
    loaded = Engine(state=tmp_path / "s.db").load(flow)
    assert loaded.connections["b"].retry.attempts == 3


def test_a_flow_file_larger_than_the_limit_is_not_read(tmp_path):
    path = tmp_path / "huge.yaml"
    with path.open("wb") as fh:
        fh.write(b"flow: huge\n")
        fh.truncate(50_000_000)
    problems = Engine(state=tmp_path / "s.db").check(path)
    assert [p.message for p in problems] == ["cannot read: larger than 10,000,000 bytes"]


def test_constant_parts_folded_when_a_flow_is_validated_stay_in_the_sandbox(tmp_path):
    # validating compiles templates; nothing in them may build or run at that moment
    flow = write_flow(
        tmp_path,
        """
        flow: constant_hogs
        source: {connector: file, path: in.ndjson}
        steps:
          - set:
              a: "{{ 'x' | center(1000000000) }}"
              b: "{{ '%01000000000d' % 1 }}"
              c: "{{ [[0] * 1000000] * 1000000 }}"
              d: "{{ 'ab' | batch(1000000000, 0) | list }}"
              e: "{{ 9 ** 9 ** 9 }}"
        """,
    )
    started = time.perf_counter()
    problems = Engine(state=tmp_path / "s.db").check(flow)
    assert [p for p in problems if p.severity == "error"] == []
    assert time.perf_counter() - started < 2


def test_a_mapping_file_that_is_not_utf8_is_a_problem_not_a_traceback(tmp_path):
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "latin1.yaml").write_bytes(b'mapping: m\nfields:\n  a: "Caf\xe9"\n')
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        "flow: f\nsource: {connector: file, path: in.ndjson}\nsteps:\n  - map: latin1\n"
    )
    proc = invoke("validate", flow)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "latin1.yaml" in proc.stderr and "not UTF-8 text (byte 0xe9)" in proc.stderr
