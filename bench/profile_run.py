"""Where a run's time goes: the reference flow (or the HTTP flow) under cProfile, by part.

    .venv/bin/python bench/profile_run.py [--records 5000] [--clock cpu|wall] [--top 25]
    .venv/bin/python bench/profile_run.py --http --concurrency 1 --records 400

Generates the orders, runs the flow twice through the Engine API in this process (a first
run, then a re-run in which every record is a duplicate) and prints, for each run, the
profile's own time summed by part of the code (templates, validation, store, SQLite,
retries, run log, httpx ...); time in C functions and stdlib helpers (json, isinstance,
Decimal methods) counts for the part that called them. ``--clock cpu`` (the default)
counts CPU time, so time spent waiting (fsync, the network) shows only in the wall time
printed above each table; ``--clock wall`` counts it too. ``--dump DIR`` keeps the raw
profiles for pstats.
cProfile slows function-call-heavy code more than the rest: read the shares, not the
seconds. With ``--http --concurrency`` above 1 the lanes run in worker processes
(docs/semantics.md, "Concurrency"), which this profile does not see: it shows the run's
own process; ``FLOWYARD_LANE_PROCESSES=0`` keeps the lanes here, as threads, and
``py-spy record --gil --subprocesses`` samples every process.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.gen_orders import generate  # noqa: E402

PARTS = [  # (part, substrings of the file name); the first match wins
    ("httpx, httpcore, h11", ("httpx", "httpcore", "h11", "idna")),
    ("retries (tenacity, engine/retry.py)", ("tenacity", "engine/retry.py", "concurrent/")),
    ("run log (structlog, engine/runlog.py)", ("structlog", "engine/runlog.py")),
    (
        "mapping and templates (jinja2, engine/templates, filters)",
        (
            "jinja2",
            "templates.py",
            "_sandbox.py",
            "pycodegen.py",
            "<mapping",
            "<value",
            "<condition",
            "<fy_",
            "filters.py",
            "mapping.py",
        ),
    ),
    ("validation (fastjsonschema code)", ("validation.py", "<string>")),
    ("the state store (engine/store/, engine/codec.py)", ("engine/store/", "engine/codec.py")),
    (
        "the executor (engine/executor.py, idempotency, group)",
        ("engine/executor.py", "idempotency.py", "engine/group.py"),
    ),
    (
        "the runner (engine/runner.py, work, progress, context)",
        ("engine/runner.py", "engine/work.py", "engine/progress.py", "engine/context.py"),
    ),
    ("connectors/sqlite.py", ("connectors/sqlite.py",)),
    ("connectors/http.py and httpkit", ("connectors/http.py", "connectors/httpkit/")),
    ("reading the source (connectors/file.py, _json)", ("connectors/file.py", "connectors/_json")),
    ("json (stdlib)", ("json/",)),
]


def part(file: str, function: str) -> str:
    for name, needles in PARTS:
        if any(needle in file for needle in needles):
            return name
    if "sqlite3" in function:
        return f"SQLite: {function.split(' of ')[0].replace('<method ', '')} (C)"
    if function.startswith("<built-in method builtins.isinstance"):
        return "isinstance"
    return "other"


def by_part(stats: pstats.Stats) -> list[tuple[str, float]]:
    """Own time summed by part; a C function's or a stdlib helper's time goes to its callers."""
    totals: collections.Counter[str] = collections.Counter()
    for (file, _line, function), (_cc, _nc, own, _cum, callers) in stats.stats.items():
        name = part(file, function)
        if name not in ("other", "json (stdlib)", "isinstance") or not callers:
            totals[name] += own
            continue
        spent = sum(entry[2] for entry in callers.values()) or 1.0
        for (caller_file, _, caller_function), entry in callers.items():
            caller = part(caller_file, caller_function)
            if caller in ("other", "json (stdlib)", "isinstance"):
                caller = name if name != "other" else "other (stdlib, builtins)"
            totals[caller] += own * entry[2] / spent
    return totals.most_common()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--http", action="store_true", help="profile bench/http_flow.yaml")
    parser.add_argument("--concurrency", type=int, default=1, help="with --http")
    parser.add_argument("--latency-ms", type=float, default=20, help="with --http")
    parser.add_argument("--dump", type=Path, help="write the raw profiles here")
    args = parser.parse_args(argv)

    from engine import Engine

    work = Path(tempfile.mkdtemp(prefix="flowyard-profile-"))
    orders = work / "orders.ndjson"
    generate(orders, args.records, malformed=0 if args.http else 0.01, invalid=0.0)
    engine = Engine(state=work / "state.db")
    target = None
    if args.http:
        target = subprocess.Popen(
            [sys.executable, "-m", "tests.support.target", "--port", "0"]
            + ["--latency-ms", str(args.latency_ms)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        url = target.stdout.readline().split()[1]
        flow = engine.load(ROOT / "bench" / "http_flow.yaml")
        flow.concurrency = args.concurrency
        variables = {"orders": str(orders), "url": url}
    else:
        flow = engine.load(ROOT / "bench" / "reference_flow.yaml")
        variables = {"orders": str(orders), "erp": str(work / "erp.db")}
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    try:
        for label in ("first run", "re-run"):
            profile = cProfile.Profile(clock)
            wall, cpu = time.perf_counter(), time.process_time()
            profile.enable()
            result = engine.run(flow, vars=variables)
            profile.disable()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(f"\n{label}: {result.counts}")
            print(f"  {wall:.2f} s wall, {cpu:.2f} s CPU, under cProfile ({args.clock} clock)")
            stats = pstats.Stats(profile)
            if args.dump:
                args.dump.mkdir(parents=True, exist_ok=True)
                stats.dump_stats(args.dump / f"{label.replace(' ', '_')}.prof")
            parts = by_part(stats)
            total = sum(seconds for _, seconds in parts) or 1.0
            for name, seconds in parts[: args.top]:
                print(f"  {seconds / total:6.1%}  {name}")
    finally:
        if target is not None:
            target.terminate()
            target.wait()


if __name__ == "__main__":
    main()
