"""``flowyard init DIR``: a project to start from, with a flow, its tests and its tools.

Without ``--from``, the project is the starter in ``engine/starter/`` (a flow on local
files, its own mapping, sample orders, a test file, a README). With ``--from NAME`` it is
one of the shipped flows: the flow (its mapping folders pointed at the project's own,
its sample paths at the project), its test file and sample records, and a copy of each
mapping it uses, to adapt. Either way the project gets the JSON Schemas of flows and of
test files for an editor, named in the first line of each YAML file (the modeline of the
YAML language server). Canonical schemas are not copied: ``validate: order`` finds the
built-in one (``flowyard map`` names its file).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from engine import packaged
from engine.flow_schema import SCHEMA
from engine.flowtest import TEST_SCHEMA
from engine.mapping import CompiledMapping
from engine.model import Flow, MapStep

STARTER = Path(__file__).resolve().parent / "starter"
FLOW_SCHEMA_FILE = "flow.schema.json"
TEST_SCHEMA_FILE = "flow-test.schema.json"
_MODELINE = "# yaml-language-server: $schema={}\n"
_MAPPINGS_LINE = re.compile(r"^mappings:.*$", re.M)
_EXAMPLE_PATHS = re.compile(r"\.\./examples/[^/\s\"']+/")


class InitError(Exception):
    """The project cannot be made there: the folder holds files it would overwrite, or
    the flow to start from is not a shipped one."""


def init_project(
    folder: Path, from_flow: str | None = None, load: Callable[[Path], Flow] | None = None
) -> list[Path]:
    """Make the project in ``folder`` (made if missing; existing files are never
    overwritten); returns the files written. ``load`` loads a flow (``Engine.load``), to
    find the mappings a shipped flow uses."""
    if from_flow is None:
        files = _starter()
    elif load is None:
        raise TypeError("a project from a shipped flow needs `load` (Engine.load)")
    else:
        files = _from_shipped(from_flow, load)
    files[FLOW_SCHEMA_FILE] = json.dumps(SCHEMA, indent=2) + "\n"
    files[TEST_SCHEMA_FILE] = json.dumps(TEST_SCHEMA, indent=2) + "\n"
    clashes = sorted(name for name in files if (folder / name).exists())
    if clashes:
        raise InitError(
            f"{folder} has {', '.join(clashes)} already; flowyard init does not overwrite "
            "files: choose an empty or new folder"
        )
    written = []
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def _starter() -> dict[str, str]:
    files = {}
    for path in sorted(STARTER.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            name = path.relative_to(STARTER).as_posix()
            files["." + name if name == "gitignore" else name] = path.read_text(encoding="utf-8")
    return files


def _from_shipped(name: str, load: Callable[[Path], Flow]) -> dict[str, str]:
    source = packaged.flow_file(name)
    if source is None:
        raise InitError(
            f"no shipped flow {name!r}; the shipped flows: {', '.join(packaged.flow_names())}"
        )
    text = source.read_text(encoding="utf-8")
    text = _MAPPINGS_LINE.sub("mappings: [mappings]", text, count=1)
    text = _EXAMPLE_PATHS.sub("", text)
    files = {f"{name}.yaml": _MODELINE.format(FLOW_SCHEMA_FILE) + text}
    tests = packaged.flow_tests_file(source)
    if tests.is_file():
        files[tests.name] = _MODELINE.format(TEST_SCHEMA_FILE) + tests.read_text("utf-8")
        for match in re.finditer(r"record_file:\s*['\"]?([^'\"\s#]+)", tests.read_text("utf-8")):
            sample = (tests.parent / match.group(1)).resolve()
            if sample.is_file() and sample.is_relative_to(tests.parent):
                files[sample.relative_to(tests.parent).as_posix()] = sample.read_text("utf-8")
    flow = load(source)
    for step, _, _ in flow.walk():
        if isinstance(step, MapStep) and isinstance(step.mapping, CompiledMapping):
            mapping = Path(step.mapping.file)
            files[f"mappings/{mapping.name}"] = mapping.read_text(encoding="utf-8")
    files["README.md"] = _readme(name, flow)
    files[".gitignore"] = "out/\n.flowyard/\n"
    return files


def _readme(name: str, flow: Flow) -> str:
    secrets = sorted(n for n in flow.env_names if not n.startswith("file:"))
    env = "".join(f"export {n}=...\n" for n in secrets)
    return f"""# {name}

A flowyard project made by `flowyard init --from {name}`: the shipped flow
`{name}` ({flow.description}), its offline tests, and a copy of the mappings it uses in
`mappings/` to adapt (they are found before flowyard's built-in ones). The comment at
the top of `{name}.yaml` says what it does and how to run it; its `vars:` say what to set.

```sh
flowyard validate {name}.yaml      # every problem, file:line:column
flowyard test                      # the cases in {name}.test.yaml: offline, nothing sent
flowyard graph {name}.yaml         # a picture (Mermaid)
flowyard check {name}.yaml         # reach every connection (log in, one harmless read)
{env}flowyard run {name}.yaml --dry-run
```

Secrets come from the environment, a `.env` file beside the flow (`NAME=value` lines),
or files (`${{file:/run/secrets/NAME}}`).
"""
