"""A sampling profile of a run, summed by part of the code: py-spy's raw output read back.

    py-spy record -r 200 -f raw -o spy.txt -- .venv/bin/python -m cli run \\
        bench/reference_flow.yaml --state S.db --var orders=ORDERS.ndjson --var erp=ERP.db
    .venv/bin/python bench/spy_parts.py spy.txt

py-spy (a sampling profiler, installed on its own: ``pip install py-spy``; not a dependency
of flowyard) looks at the running process 200 times a second without slowing its calls,
so call-heavy code (Jinja2, fastjsonschema) weighs what it weighs, where cProfile
(bench/profile_run.py) inflates it. Each sample goes to the part of the innermost frame
that belongs to one (a C function or a stdlib helper counts for the part that called
it); samples outside the run's loop are start-up, flow loading and closing.
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

PARTS = [  # (part, substrings of a frame); the innermost frame that matches one names it
    (
        "mapping (the compiled mapping: plain Python, sandbox, retail filters)",
        (
            "engine/mapping.py",
            "engine/pycodegen.py",
            "<mapping",
            "<fy_",
            "<value",
            "<condition",
            "engine/templates.py",
            "engine/_sandbox.py",
            "engine/_metered.py",
            "engine/money.py",
            "engine/filters.py",
            "jinja2/",
        ),
    ),
    ("validation (fastjsonschema)", ("engine/validation.py", "<string>")),
    ("sends' fingerprints (engine/idempotency.py)", ("engine/idempotency.py",)),
    ("records' digests (engine/unchanged.py)", ("engine/unchanged.py",)),
    ("the sqlite connector: rows to the target", ("connectors/sqlite.py",)),
    ("the state store: look-ups and group commits", ("engine/store/",)),
    # connectors/_json.py counts for its caller: the file connector decoding a line, the
    # sqlite connector encoding a column
    ("reading and decoding the source", ("connectors/file.py",)),
    ("the run log", ("engine/runlog.py", "structlog")),
    ("the group (engine/group.py)", ("engine/group.py",)),
    ("retries and limits (engine/retry.py)", ("engine/retry.py",)),
    ("the executor (engine/executor.py)", ("engine/executor.py",)),
    (
        "the runner (runner, progress, work, lanes, context)",
        (
            "engine/runner.py",
            "engine/progress.py",
            "engine/work.py",
            "engine/lanes.py",
            "engine/context.py",
        ),
    ),
]
OUTSIDE = "outside the run's loop (start-up, loading the flow, closing)"


def parts(raw: str) -> dict[str, float]:
    """Share of the samples by part, largest first."""
    total = 0
    counts: collections.Counter[str] = collections.Counter()
    for row in raw.splitlines():
        if not row.strip():
            continue
        stack, _, number = row.rpartition(" ")
        samples = int(number)
        total += samples
        frames = stack.split(";")
        if not any("_loop (engine/runner.py" in frame for frame in frames):
            counts[OUTSIDE] += samples
            continue
        counts[_part(frames)] += samples
    return {name: n / total for name, n in counts.most_common()} if total else {}


def _part(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, needles in PARTS:
            if any(needle in frame for needle in needles):
                return name
    return "other"


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("raw", type=Path, help="py-spy record -f raw output")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    shares = parts(args.raw.read_text())
    if args.json:
        print(json.dumps(shares, indent=2))
    else:
        for name, share in shares.items():
            print(f"  {share:6.1%}  {name}")
    return shares


if __name__ == "__main__":
    main()
