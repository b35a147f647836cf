"""The reference flow's per-record work, part by part, timed directly (no profiler).

    .venv/bin/python bench/per_record.py [--records 2000] [--rounds 5]

Generates the orders, loads bench/reference_flow.yaml through the Engine API and times,
in this process, each part of what a first run does for an order, on every order
(the best of ``--rounds`` passes, CPU time, microseconds per order): decoding the line,
the compiled mapping, validation, the route's condition, rendering both sends' options and
idempotency keys, their fingerprints, and the record's digest. Beside them, the plain
baseline's own parts (bench/baseline.py): ``json.loads``, its hand-written mapping, its
rows and fingerprints. Then other ways to do a hot part: the standard library's JSON
decoder and sorted encoder (what the engine used before msgspec) and jsonschema-rs's
validator alone on the same orders (the engine's puts it in front of fastjsonschema). What
the engine spends beyond these parts (the state store, the sqlite connector, traces, the
runner) is the run's CPU per record (bench/run.py throughput) less their sum.

cProfile (bench/profile_run.py) slows call-heavy code such as Jinja2's and fastjsonschema's
more than the rest; these figures are what the parts cost as they run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import baseline  # noqa: E402
from bench.gen_orders import generate  # noqa: E402


def best_us(fn: Callable[[Any], Any], items: list[Any], rounds: int) -> float:
    """CPU microseconds per item of ``fn`` over ``items``, the best of ``rounds`` passes."""
    best = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for item in items:
            fn(item)
        best = min(best, time.process_time() - started)
    return 1e6 * best / len(items)


def measure(records: int, rounds: int, seed: int = 1) -> dict[str, Any]:
    from connectors._json import loads
    from engine import Engine
    from engine.idempotency import fingerprint
    from engine.model import CallStep, RouteStep
    from engine.unchanged import RecordDigests

    work = Path(tempfile.mkdtemp(prefix="flowyard-per-record-"))
    orders = work / "orders.ndjson"
    generate(orders, records, seed=seed, malformed=0, invalid=0)
    lines = orders.read_text(encoding="utf-8").splitlines()
    engine = Engine(state=work / "state.db")
    flow = engine.load(ROOT / "bench" / "reference_flow.yaml")
    mapping = flow.steps[0].mapping
    validator = flow.steps[1].validator
    route = flow.steps[2]
    assert isinstance(route, RouteStep)
    sales = flow.steps[3]
    assert isinstance(sales, CallStep)
    variables = {"orders": str(orders), "erp": str(work / "erp.db")}

    raw = [loads(line) for line in lines]
    canonical = [mapping(r) for r in raw]
    contexts = [{"record": c, "vars": variables, "meta": {}, "run": {}} for c in canonical]

    def branch_send(ctx: dict[str, Any]) -> CallStep:
        for branch in route.branches:
            if branch.condition is None or branch.condition(ctx):
                step = branch.steps[0]
                assert isinstance(step, CallStep)
                return step
        raise AssertionError("no branch")

    def route_condition(ctx: dict[str, Any]) -> CallStep:
        return branch_send(ctx)

    def render_sends(ctx: dict[str, Any]) -> None:
        for step in (branch_send(ctx), sales):
            step.options(ctx)
            if step.idempotency_key is not None:
                step.idempotency_key(ctx)

    options = [[step.options(ctx) for step in (branch_send(ctx), sales)] for ctx in contexts]

    def fingerprints(pair: list[Any]) -> None:
        for one in pair:
            fingerprint(one)

    digests = RecordDigests(flow, variables)

    def digest(record: dict[str, Any]) -> str:
        return digests.of(str(record["id"]), record, {})

    hand = [baseline.to_canonical(json.loads(line)) for line in lines]

    def baseline_rows(order: dict[str, Any]) -> None:
        for _, table, row in baseline.writes(order):
            text = json.dumps([table, row], sort_keys=True)
            hashlib.sha256(text.encode()).hexdigest()

    validate = baseline.make_validator(json.loads(baseline.SCHEMA.read_text()), "engine")
    engine_parts = {
        "decode the line (connectors/_json.py, msgspec)": best_us(loads, lines, rounds),
        "the compiled mapping (plain Python, sandboxed)": best_us(mapping, raw, rounds),
        "validation (jsonschema-rs, then fastjsonschema if refused)": best_us(
            validator, canonical, rounds
        ),
        "the route's condition": best_us(route_condition, contexts, rounds),
        "both sends' options and keys rendered": best_us(render_sends, contexts, rounds),
        "both sends' fingerprints": best_us(fingerprints, options, rounds),
        "the record's digest (unchanged records)": best_us(digest, raw, rounds),
    }
    baseline_parts = {
        "json.loads": best_us(json.loads, lines, rounds),
        "the hand-written mapping": best_us(baseline.to_canonical, raw, rounds),
        "validation (the engine's validator)": best_us(validate, hand, rounds),
        "rows and fingerprints": best_us(baseline_rows, hand, rounds),
    }
    # what a hot part would cost done another way (issue 13: take a library where it wins)
    from decimal import Decimal

    from engine.codec import dumps_sorted
    from engine.validation import _inline_refs

    alternatives = {
        "decode with the standard library, fractions as Decimal (before msgspec)": best_us(
            lambda line: json.loads(line, parse_float=Decimal), lines, rounds
        ),
        "the record's digest, encoded sorted by the standard library (before msgspec)": best_us(
            lambda record: hashlib.sha256(dumps_sorted(record).encode()).hexdigest(), raw, rounds
        ),
    }
    try:
        import jsonschema_rs
    except ImportError:
        jsonschema_rs = None
    if jsonschema_rs is not None:
        schema = json.loads(baseline.SCHEMA.read_text())
        rs = jsonschema_rs.validator_for(_inline_refs(schema, schema, ()))
        alternatives["validation with jsonschema-rs (is_valid)"] = best_us(
            rs.is_valid, canonical, rounds
        )
    return {
        "records": records,
        "alternatives_us": alternatives,
        "rounds": rounds,
        "engine_parts_us": engine_parts,
        "engine_parts_sum_us": sum(engine_parts.values()),
        "baseline_parts_us": baseline_parts,
        "baseline_parts_sum_us": sum(baseline_parts.values()),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    result = measure(args.records, args.rounds)
    for side in ("engine", "baseline"):
        print(f"{side}, CPU us per order (best of {args.rounds} passes over {args.records}):")
        for name, us in result[f"{side}_parts_us"].items():
            print(f"  {us:7.1f}  {name}")
        print(f"  {result[f'{side}_parts_sum_us']:7.1f}  sum")
    print("other ways to do a part, CPU us per order:")
    for name, us in result["alternatives_us"].items():
        print(f"  {us:7.1f}  {name}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
