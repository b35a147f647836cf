"""``flowyard serve`` under load: how many webhook events it acknowledges durably per second,
and how long an acknowledged event takes to reach the target (docs/benchmarks.md, "serve").

::

    .venv/bin/python bench/serve_bench.py intake --seconds 20 --repeat 3 \
        --json bench/results/serve_intake.json
    .venv/bin/python bench/serve_bench.py e2e --rate 200 --seconds 30 \
        --json bench/results/serve_e2e.json

Both serve one flow with a Shopify-signed webhook source whose events are POSTed to a
target on 127.0.0.1 (tests/support/target.py, in its own process), as orders to an ERP;
``flowyard serve`` runs as its own process, on a fresh state file each time.

- ``intake``: wrk (Debian's ``wrk``: ``apt-get install -y wrk``; a Lua script) keeps
  ``--connections`` deliveries in flight for ``--seconds``, each a new signed event; an
  answer comes only once its event is committed to the state (the durable
  acknowledgement). Reported: acknowledged events per second (counted in the state's
  inbox afterwards, not from the client), and wrk's latency percentiles. The flow's
  processor takes the events to the target meanwhile, on the same cores, as it would in
  production.
- ``e2e``: a Python client sends signed events at a steady ``--rate`` (an open loop: each
  delivery starts on its own time, however long the others take) and notes when each
  answer came; the target notes when it applied each. Reported: apply time minus
  acknowledgement time, per event, in percentiles.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import _version, machine  # noqa: E402
from tests.support.serving import Serving  # noqa: E402
from tests.support.system import find_program  # noqa: E402
from tests.support.target import RemoteTarget, spawn_target, stop_target  # noqa: E402
from tests.support.webhook_load import (  # noqa: E402
    Delivery,
    make_deliveries,
    send_paced,
    write_requests,
)

SECRET = "shpss_bench_secret"
PATH = "/webhooks/shop_orders"

FLOW = """
flow: shop_orders
vars: {erp_url: "URL"}
concurrency: CONCURRENCY
source:
  webhook: {scheme: shopify, secret: "${env:SHOP_WEBHOOK_SECRET}", topics: [orders/create]}
  key: "{{ record.id }}"
connections:
  erp:
    connector: http
    base_url: "{{ vars.erp_url }}"
    timeout: 10
steps:
  - name: to_erp
    send:
      connection: erp
      method: POST
      path: /orders
      idempotency_key: "order:{{ record.id }}"
      body:
        event: "{{ record.event }}"
        order: "{{ record.name }}"
        total: "{{ record.total_price }}"
"""

# Each thread sends its share of the requests file (one delivery per line: event id, the
# signature headers as JSON, the body), each once; past the end (the file was too short for
# the time asked) it sends GET /healthz and counts them, so the report can say so. done()
# prints one line the caller parses.
WRK_BENCH = r"""
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local nthreads, path, file = tonumber(args[1]), args[2], args[3]
  reqs, i, accepted, other, exhausted = {}, 0, 0, 0, 0
  local n = 0
  for line in io.lines(file) do
    if n % nthreads == id then
      local _, headers, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
      local h = {["Content-Type"] = "application/json"}
      for k, v in headers:gmatch('"([^"]+)": "([^"]*)"') do h[k] = v end
      table.insert(reqs, wrk.format("POST", path, h, body))
    end
    n = n + 1
  end
end

function request()
  i = i + 1
  if i > #reqs then
    exhausted = exhausted + 1
    return wrk.format("GET", "/healthz")
  end
  return reqs[i]
end

function response(status, headers, body)
  if status == 200 and body:find('"status":"accepted"', 1, true) then
    accepted = accepted + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local acc, oth, exh = 0, 0, 0
  for _, t in ipairs(threads) do
    acc = acc + t:get("accepted")
    oth = oth + t:get("other")
    exh = exh + t:get("exhausted")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "accepted": %d, "other": %d, ' ..
    '"exhausted": %d, "connect_errors": %d, "read_errors": %d, "write_errors": %d, ' ..
    '"status_errors": %d, "timeouts": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"p999_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, acc, oth, exh, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max, latency.mean))
end
"""


def percentiles(values: list[float], points: tuple[float, ...] = (50, 90, 99, 99.9)) -> dict:
    """Nearest-rank percentiles of ``values`` (and the max), keyed ``p50`` ..."""
    ordered = sorted(values)
    out: dict[str, float] = {}
    for p in points:
        rank = max(0, min(len(ordered) - 1, int(round(p / 100 * len(ordered) + 0.5)) - 1))
        out[f"p{p:g}".replace(".", "")] = ordered[rank]
    out["max"] = ordered[-1]
    return out


def serving(work: Path, erp_url: str, concurrency: int) -> Serving:
    flow = work / "shop_orders.yaml"
    text = FLOW.replace("URL", erp_url).replace("CONCURRENCY", str(concurrency))
    flow.write_text(text, encoding="utf-8")
    return Serving(
        work,
        [flow],
        env={"SHOP_WEBHOOK_SECRET": SECRET},
        args=["--inbox-limit", "10000000"],
    )


def inbox_counts(state: Path) -> dict[str, int]:
    db = sqlite3.connect(state)
    try:
        return dict(db.execute("SELECT status, count(*) FROM inbox GROUP BY status").fetchall())
    finally:
        db.close()


def wait_processed(state: Path, total: int, timeout: float) -> float:
    """Seconds until every one of ``total`` events is done in the inbox."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if inbox_counts(state).get("done", 0) >= total:
            return time.monotonic() - started
        time.sleep(0.2)
    raise SystemExit(f"not every event was processed within {timeout:.0f} s: {inbox_counts(state)}")


def profile_summary(raw: Path, top: int = 20) -> dict[str, Any]:
    """What a py-spy profile (``--format raw --threads --gil``: folded stacks of the thread
    holding the GIL, with a count per line) says: the share of samples each part of the
    process held the GIL for (HTTP intake, the inbox writer, the flow's processing), the
    functions they were in (``self``: the innermost frame), and the share of the frames of
    the serve path and its libraries (``inclusive``: a function and what it called)."""
    parts: dict[str, int] = {}
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")[1:]]
        if not frames or not count.isdigit():
            continue
        n = int(count)
        total += n
        joined = ";".join(frames)
        part = (
            "inbox writer"
            if "InboxWriter._loop" in joined
            else "flow processing (runner, lanes, sends)"
            if "Lanes._lane" in joined or "Service._process" in joined
            else "HTTP intake (uvicorn, starlette, intake)"
            if "uvicorn" in joined
            else "other"
        )
        parts[part] = parts.get(part, 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for frame in set(frames):
            if re.search(r"\((engine|connectors)/|h11|starlette/r|httpx/_client|sqlite", frame):
                inclusive[frame] = inclusive.get(frame, 0) + n

    def ranked(counts: dict[str, int]) -> list[tuple[str, float]]:
        best = sorted(counts.items(), key=lambda i: -i[1])[:top]
        return [(name, round(n / total, 3)) for name, n in best]

    return {
        "samples_holding_the_gil": total,
        "parts": dict(ranked(parts)),
        "self": ranked(own),
        "inclusive": ranked(inclusive),
    }


def intake(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    wrk = find_program(["wrk"])
    if wrk is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (Debian's package)")
    # enough deliveries that no thread runs out within the time asked
    deliveries = make_deliveries(args.per_second_cap * args.seconds, duplicates=0.0, secret=SECRET)
    requests = write_requests(tmp / "requests.tsv", deliveries)
    script = tmp / "bench.lua"
    script.write_text(WRK_BENCH, encoding="utf-8")
    runs: list[dict[str, Any]] = []
    for rep in range(args.repeat):
        work = tmp / f"intake-{rep}"
        work.mkdir()
        erp, erp_url = spawn_target(work / "erp-state")
        srv = serving(work, erp_url, args.concurrency)
        result: dict[str, Any] = {}
        try:
            srv.start()
            profiler = None
            if args.profile and rep == 0:
                assert srv.proc is not None
                profiler = subprocess.Popen(
                    [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw"]
                    + ["--threads", "--gil", "--rate", "200", "--nonblocking"]
                    + ["--duration", str(args.seconds - 1), "--pid", str(srv.proc.pid)]
                    + ["--output", str(args.profile)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            done = subprocess.run(
                [wrk, "-t", str(args.threads), "-c", str(args.connections)]
                + ["-d", f"{args.seconds}s", "--timeout", "10s", "-s", str(script)]
                + [srv.url, "--", str(args.threads), PATH, str(requests)],
                capture_output=True,
                text=True,
                check=True,
            )
            if profiler is not None:
                profiler.wait(60)
                result["profile"] = profile_summary(args.profile)
                result["profile"]["samples_asked"] = 200 * (args.seconds - 1)
            found = re.search(r"^BENCH (.*)$", done.stdout, re.M)
            if found is None:
                raise SystemExit(f"wrk printed no result:\n{done.stdout}\n{done.stderr}")
            result = {**result, **json.loads(found.group(1))}
            kept = inbox_counts(srv.state)
            result["kept_in_inbox"] = sum(kept.values())
            result["processed_when_load_ended"] = kept.get("done", 0)
            result["drain_s"] = wait_processed(srv.state, result["kept_in_inbox"], 600)
            result["events_per_s"] = result["kept_in_inbox"] / (result["duration_us"] / 1e6)
            result["wrk_report"] = done.stdout
            assert srv.stop() == 0
        finally:
            if srv.proc is not None and srv.proc.poll() is None:
                srv.kill()
            stop_target(erp)
        runs.append(result)
        print(
            f"  run {rep + 1}: {result['kept_in_inbox']} events acknowledged and kept in "
            f"{result['duration_us'] / 1e6:.1f} s = {result['events_per_s']:.0f}/s; latency "
            f"p50 {result['p50_us'] / 1000:.1f} ms, p99 {result['p99_us'] / 1000:.1f} ms; "
            f"{result['processed_when_load_ended']} already at the target, the rest "
            f"{result['drain_s']:.1f} s later",
            flush=True,
        )
        if result["exhausted"] or result["other"] or result["status_errors"]:
            print(f"  (run {rep + 1}: not every answer was an acceptance: {result})", flush=True)
    return {
        "load_client": wrk,
        "connections": args.connections,
        "threads": args.threads,
        "seconds": args.seconds,
        "flow_concurrency": args.concurrency,
        "runs": runs,
        "median": {
            key: statistics.median(r[key] for r in runs)
            for key in ("events_per_s", "p50_us", "p90_us", "p99_us", "p999_us", "max_us")
        },
    }


def e2e(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    count = int(args.rate * args.seconds)
    deliveries: list[Delivery] = make_deliveries(count, duplicates=0.0, secret=SECRET)
    erp, erp_url = spawn_target(tmp / "erp-state")
    srv = serving(tmp, erp_url, args.concurrency)
    try:
        srv.start()
        # a few deliveries first, so that the first run of the flow has started up
        warm = make_deliveries(20, duplicates=0.0, secret=SECRET, seed=1)
        warm = [Delivery("warm-" + d.event_id, d.body, d.headers) for d in warm]
        send_paced(srv.url + PATH, warm, rate=20)
        answers = send_paced(srv.url + PATH, deliveries, rate=args.rate)
        refused = [a for a in answers if a[1] != 200]
        if refused:
            raise SystemExit(f"{len(refused)} deliveries not acknowledged: {refused[:5]}")
        wait_processed(srv.state, count, 120)
        applied = RemoteTarget(erp_url).applied
        assert srv.stop() == 0
    finally:
        if srv.proc is not None and srv.proc.poll() is None:
            srv.kill()
        stop_target(erp)
    acked_at = {event: answered for event, _, _, answered in answers}
    ack_s = [answered - sent for _, _, sent, answered in answers]
    applied_at: dict[str, float] = {}
    for a in applied:
        event = a["body"]["event"]
        if event in acked_at:
            if event in applied_at:
                raise SystemExit(f"event {event} applied twice")
            applied_at[event] = a["time"]
    missing = set(acked_at) - set(applied_at)
    if missing:
        raise SystemExit(f"{len(missing)} acknowledged events never applied")
    e2e_s = [applied_at[e] - acked_at[e] for e in acked_at]
    sent = [s for _, _, s, _ in answers]
    result = {
        "rate_asked": args.rate,
        "rate_sent": (len(sent) - 1) / (max(sent) - min(sent)),
        "events": count,
        "flow_concurrency": args.concurrency,
        "ack_to_apply_ms": {k: v * 1000 for k, v in percentiles(e2e_s).items()},
        "send_to_ack_ms": {k: v * 1000 for k, v in percentiles(ack_s).items()},
        "mean_ack_to_apply_ms": statistics.fmean(e2e_s) * 1000,
    }
    a, s = result["ack_to_apply_ms"], result["send_to_ack_ms"]
    print(
        f"  {count} events at {result['rate_sent']:.1f}/s: acknowledgement to apply p50 "
        f"{a['p50']:.0f} ms, p99 {a['p99']:.0f} ms, max {a['max']:.0f} ms; send to "
        f"acknowledgement p50 {s['p50']:.1f} ms, p99 {s['p99']:.1f} ms",
        flush=True,
    )
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="measure", required=True)
    i = sub.add_parser("intake", help="acknowledged events per second, with latency (wrk)")
    i.add_argument("--seconds", type=int, default=20)
    i.add_argument("--connections", type=int, default=16, help="concurrent senders")
    i.add_argument("--threads", type=int, default=2, help="wrk's threads")
    i.add_argument("--repeat", type=int, default=3)
    i.add_argument(
        "--per-second-cap",
        type=int,
        default=4000,
        help="deliveries made per second of --seconds (more than can be sent)",
    )
    i.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="sample the serve process with py-spy during the first run (the thread "
        "holding the GIL; folded stacks to FILE) and add a summary to the report",
    )
    e = sub.add_parser("e2e", help="acknowledgement to target apply at a steady rate")
    e.add_argument("--rate", type=float, default=200.0, help="events per second")
    e.add_argument("--seconds", type=float, default=30.0)
    for q in (i, e):
        q.add_argument("--concurrency", type=int, default=8, help="the flow's concurrency")
        q.add_argument("--json", type=Path, help="write the report here")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    report: dict[str, Any] = {
        "machine": machine(),
        "command": "bench/serve_bench.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "engine": _version(ROOT),
    }
    with tempfile.TemporaryDirectory(prefix="flowyard-serve-bench-") as tmp:
        report[args.measure] = (intake if args.measure == "intake" else e2e)(args, Path(tmp))
    report["machine"]["load_average_end"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
