"""Where ``flowyard validate FLOW`` spends its start-up, part by part (CPU time, no profiler).

    .venv/bin/python bench/startup_parts.py [FLOW ...] [--repeat 7] [--json FILE]

Each repetition is a fresh interpreter (``python -c`` in this checkout) that times, with
``time.process_time``, what ``flowyard validate`` does in order: importing the command line
(typer and ``cli.py``), the import typer makes to coerce the command's parameters
(``typer._adapters``: pydantic), ``from engine import Engine``, and ``Engine.check`` of the
flow, split into Jinja2 parsing and compiling the flow's templates and mappings (the
outermost time inside ``jinja2.Environment.parse``/``compile``/``from_string`` and
``engine.mapping.load_mapping``), loading and compiling its canonical schemas, and the
rest (YAML, the flow's own schema, connections, the loader). The medians are printed; the
interpreter's own start is ``python -c pass`` in ``bench/run.py startup``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

PROBE = r"""
import json, sys, time
clock = time.process_time
t0 = clock()
import cli
t1 = clock()
import typer._adapters
t2 = clock()
from engine import Engine
t3 = clock()
import jinja2
import engine.load_steps as steps
inside = {"templates": 0.0, "schemas": 0.0}
depth = [0]

def outermost(function, part):
    def timed(*args, **kwargs):
        depth[0] += 1
        started = clock()
        try:
            return function(*args, **kwargs)
        finally:
            depth[0] -= 1
            if depth[0] == 0:
                inside[part] += clock() - started
    return timed

for name in ("parse", "_parse", "compile", "from_string"):
    setattr(jinja2.Environment, name, outermost(getattr(jinja2.Environment, name), "templates"))
steps.load_mapping = outermost(steps.load_mapping, "templates")
steps.load_schema = outermost(steps.load_schema, "schemas")
steps.compile_validator = outermost(steps.compile_validator, "schemas")
eng = Engine(state="/nonexistent/flowyard-validate.db")
t4 = clock()
problems = eng.check(sys.argv[1])
t5 = clock()
assert not [p for p in problems if p.severity == "error"], problems
print(json.dumps({
    "typer and cli.py": t1 - t0,
    "typer's parameter coercion (pydantic)": t2 - t1,
    "the engine (from engine import Engine)": t3 - t2,
    "check: Jinja2 parsing and compiling, mappings": inside["templates"],
    "check: canonical schemas": inside["schemas"],
    "check: the rest (YAML, the flow's schema, connections, loader)":
        t5 - t4 - inside["templates"] - inside["schemas"],
    "total": t5 - t0,
}))
"""


def measure(flow: Path, repeat: int) -> dict[str, float]:
    """The median of each part over ``repeat`` fresh interpreters, in seconds of CPU."""
    runs: list[dict[str, float]] = []
    for _ in range(repeat):
        done = subprocess.run(
            [sys.executable, "-c", PROBE, str(flow)],
            cwd=ROOT,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(done.stdout))
    return {part: statistics.median(run[part] for run in runs) for part in runs[0]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "flows",
        nargs="*",
        type=Path,
        default=[ROOT / "flows" / "order_to_erp.yaml", ROOT / "bench" / "reference_flow.yaml"],
    )
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    result: dict[str, Any] = {}
    for flow in args.flows:
        parts = result[str(flow)] = measure(flow.resolve(), args.repeat)
        print(f"{flow} (CPU s, median of {args.repeat}):")
        for part, seconds in parts.items():
            print(f"  {seconds:6.3f}  {part}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
