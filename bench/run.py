"""flowyard's benchmarks: the engine against a hand-written script doing the same work.

    .venv/bin/python bench/run.py throughput [--records 20000] [--repeat 5]
    .venv/bin/python bench/run.py memory [--records 100000 1000000] [--with-baseline]
    .venv/bin/python bench/run.py http [--concurrency 1 4 16] [--latency-ms 20] [--seconds 5]
    .venv/bin/python bench/run.py local [--records 5000] [--concurrency 8]
    .venv/bin/python bench/run.py startup [--repeat 15]
    .venv/bin/python bench/run.py all

Every measurement runs in subprocesses, as a user would: the engine through its command
line (``python -m cli run bench/reference_flow.yaml ...`` in this checkout, which is what
the ``flowyard`` script runs), the baseline as ``python bench/baseline.py ...``. Input
files are generated on the fly by bench/gen_orders.py into a temporary directory
(``--workdir`` to keep them) and deleted afterwards. Results are printed and written as
JSON (``--json``, by default ``bench/results/<command>.json``) with the machine, the date
and the command line. docs/benchmarks.md records the figures.

- ``throughput``: the engine and the plain baseline (bench/baseline.py: json, the mapping
  in Python, the engine's compiled validator, a transaction per 500 orders, a keys table
  with fingerprints) alternately, ``--repeat`` times each, on the same file: a first run
  into empty databases, then a re-run in which every record is unchanged. ``--dlt`` adds
  dlt merging the same orders into SQLite (bench/dlt_load.py, in its own virtual
  environment), ``--with-durable`` the durable-per-record baseline (a commit and a log
  line per record), ``--before-root`` the engine of another checkout (a worktree before
  a change). Medians of records/s by three clocks (the command's wall time, start-up
  included; the run's own time; the process's CPU time, which a busy machine disturbs
  least), the engine's ratio to each side, and the CPU time per record of each side with
  its start-up (a run on an empty file) taken off: the engine's over the baseline's is
  the engine's own cost per record. The first repetition checks that the sides wrote the
  same rows. ``--sink-dir /dev/shm`` puts the target databases where fsync is free;
  ``--baseline-validator jsonschema`` gives the baseline a slower validator.
- ``memory``: peak RSS (``wait4`` of the process) of a first run at each size, and its
  RSS sampled from /proc while it runs.
- ``http``: bench/http_flow.yaml against tests/support/target.py answering after a fixed
  latency, at each concurrency: records/s against the limit concurrency/latency, next to
  a bare threaded client (bench/http_ceiling.py, httpx on http.client as the engine sends)
  against the same server; ``--with-threads`` also runs the engine with its lanes as
  threads (``FLOWYARD_LANE_PROCESSES=0``), alternating. CPU per send (the lane processes'
  included), the target's own, and the load average at each run's start.
- ``local``: the reference flow (every call local: SQLite) at concurrency 1 and N,
  alternately: concurrency must not make it slower (docs/semantics.md, "Concurrency").
- ``startup``: ``python -c pass``, ``flowyard --help``, ``flowyard validate
  flows/order_to_erp.yaml`` (a shipped flow) and ``flowyard validate
  bench/reference_flow.yaml``, round robin.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from bench.gen_orders import generate  # noqa: E402

REFERENCE_FLOW = BENCH / "reference_flow.yaml"
HTTP_FLOW = BENCH / "http_flow.yaml"
SHIPPED_FLOW = ROOT / "flows" / "order_to_erp.yaml"  # the startup measure's shipped flow
SINK_TABLES = ("pickups", "shipments", "sales_orders")
EXIT_OK, EXIT_DEAD_LETTERS = 0, 1


# --engine-root: run the engine of another checkout (``python -m cli`` from its folder),
# e.g. a git worktree of an older commit, to measure a change before and after.
ENGINE_ROOT: Path | None = None
# --sink-dir: where the target databases go (e.g. /dev/shm, where fsync costs nothing).
SINK_DIR: Path | None = None


def flowyard(root: Path | None = None) -> list[str]:
    """``python -m cli``, run in the checkout's folder (:func:`engine_cwd`), so that the
    engine measured is that checkout's: the venv's ``flowyard`` script runs whatever
    checkout the venv was installed from (an editable install of another worktree)."""
    return [sys.executable, "-m", "cli"]


def engine_cwd(root: Path | None = None) -> Path:
    return root or ENGINE_ROOT or ROOT


# -- running a job ----------------------------------------------------------------------------


@dataclass
class Job:
    """One finished subprocess: wall time, peak RSS, exit code, output, RSS samples."""

    cmd: list[str]
    wall_s: float
    cpu_s: float  # user + system time of the process: less disturbed by a busy machine
    max_rss_mb: float
    returncode: int
    stdout: str
    stderr: str
    rss_samples: list[tuple[float, float]] = field(default_factory=list)  # (s, MB)

    def json(self) -> Any:
        return json.loads(self.stdout)


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for row in status:
                if row.startswith("VmRSS:"):
                    return int(row.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_job(
    cmd: list[str],
    *,
    ok: tuple[int, ...] = (EXIT_OK,),
    sample_every: float = 0.0,
    cwd: Path = ROOT,
    env: dict[str, str] | None = None,
) -> Job:
    """Run ``cmd`` in ``cwd``; its peak RSS and CPU time come from ``wait4`` on this very child."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        full_env = {**os.environ, **env} if env else None
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=cwd, env=full_env)
        samples: list[tuple[float, float]] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(sample_every):
                rss = _rss_mb(proc.pid)
                if rss is not None:
                    samples.append((round(time.perf_counter() - started, 2), round(rss, 1)))

        sampler = threading.Thread(target=sample, daemon=True) if sample_every else None
        if sampler:
            sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        stop.set()
        if sampler:
            sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        job = Job(
            cmd,
            wall,
            usage.ru_utime + usage.ru_stime,
            usage.ru_maxrss / 1024,  # KiB on Linux
            proc.returncode,
            out.read().decode(),
            err.read().decode(),
            samples,
        )
    if job.returncode not in ok:
        raise RuntimeError(
            f"{' '.join(cmd)} exited {job.returncode}\n{job.stdout[-2000:]}\n{job.stderr[-4000:]}"
        )
    return job


def sink(work: Path) -> Path:
    """The target database of a run in ``work`` (under --sink-dir when one is given)."""
    return (SINK_DIR / work.name if SINK_DIR else work) / "erp.db"


def engine_run(
    orders: Path, work: Path, flow: Path = REFERENCE_FLOW, root: Path | None = None, **kw: Any
) -> Job:
    """``flowyard run`` of the reference flow: state and target database under ``work``."""
    cmd = [
        *flowyard(root),
        "run",
        str(flow),
        "--state",
        str(work / "state.db"),
        "--var",
        f"orders={orders}",
        "--var",
        f"erp={sink(work)}",
        "--output",
        "json",
    ]
    return run_job(cmd, ok=(EXIT_OK, EXIT_DEAD_LETTERS), cwd=engine_cwd(root), **kw)


def baseline_run(orders: Path, work: Path, *options: str, **kw: Any) -> Job:
    """bench/baseline.py: the plain baseline, or another with ``options`` (--commit-every 1
    --log-records: the durable-per-record one)."""
    cmd = [
        sys.executable,
        str(BENCH / "baseline.py"),
        "--orders",
        str(orders),
        "--erp",
        str(sink(work)),
        "--state",
        str(work / "state.db"),
        *options,
    ]
    return run_job(cmd, **kw)


DLT_PYTHON: Path | None = None  # bench/dlt_load.py's environment, made on first use


def inlined_order_schema() -> dict:
    """The canonical order schema as the engine compiles it (its ``$ref``s inlined), for
    dlt's side to validate with the same fastjsonschema code."""
    from engine.validation import _inline_refs

    schema = json.loads((ROOT / "mappings" / "canonical" / "order.schema.json").read_text())
    return _inline_refs(schema, schema, ())


def dlt_run(orders: Path, work: Path, **kw: Any) -> Job:
    """bench/dlt_load.py in its own virtual environment (dlt merging into SQLite)."""
    global DLT_PYTHON
    if DLT_PYTHON is None:
        from bench.dlt_load import ensure_venv

        DLT_PYTHON = ensure_venv()  # made on first use: about a minute, once
    schema = work / "order.schema.json"
    schema.write_text(json.dumps(inlined_order_schema()))
    cmd = [str(DLT_PYTHON), str(BENCH / "dlt_load.py"), "--orders", str(orders)]
    cmd += ["--erp", str(sink(work)), "--work", str(work / "dlt"), "--schema", str(schema)]
    env_quiet = {"RUNTIME__LOG_LEVEL": "ERROR", "PYTHONWARNINGS": "ignore"}
    return run_job(cmd, env=env_quiet, **kw)


def counts_of(job: Job) -> dict[str, int]:
    counts = job.json()["counts"]
    return {k: counts.get(k, 0) for k in ("read", "done", "skipped", "dead_lettered")}


def inner_seconds(job: Job) -> float:
    """The run's own time, start-up excluded: ``duration_s`` (engine) or ``seconds``."""
    data = job.json()
    return data.get("duration_s", data.get("seconds"))


def sink_rows(path: Path) -> dict[str, list[tuple]]:
    """Every row of the target tables, in key order."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {
            table: db.execute(f"SELECT * FROM {table} ORDER BY order_id").fetchall()
            for table in SINK_TABLES
        }
    finally:
        db.close()


def compare_sinks(a: Path, b: Path) -> list[str]:
    """How two target databases differ (table by table); empty when they hold the same rows."""
    rows_a, rows_b = sink_rows(a), sink_rows(b)
    problems = []
    for table in SINK_TABLES:
        if rows_a[table] != rows_b[table]:
            only_a = set(rows_a[table]) - set(rows_b[table])
            only_b = set(rows_b[table]) - set(rows_a[table])
            problems.append(
                f"{table}: {len(rows_a[table])} vs {len(rows_b[table])} rows, "
                f"{len(only_a)} only in {a}, {len(only_b)} only in {b}"
            )
    return problems


# -- measurements -----------------------------------------------------------------------------


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


MEASURES = ("wall", "inner", "cpu")  # the command's wall time, the run's own time, CPU time


def _times(job: Job) -> dict[str, float]:
    return {"wall": job.wall_s, "inner": inner_seconds(job), "cpu": job.cpu_s}


DURABLE = ("--commit-every", "1", "--log-records")  # the durable-per-record baseline


def _sides(args: argparse.Namespace) -> dict[str, Any]:
    """Each side of a throughput comparison: its name and how to run it on a file."""
    sides: dict[str, Any] = {
        "engine": engine_run,
        "baseline": lambda orders, work, **kw: baseline_run(
            orders, work, "--validator", args.baseline_validator, **kw
        ),
    }
    if args.with_durable:
        sides["durable"] = lambda orders, work, **kw: baseline_run(orders, work, *DURABLE, **kw)
    if args.dlt:
        sides["dlt"] = dlt_run
    if args.before_root:
        root = args.before_root.resolve()
        sides["before"] = lambda orders, work, **kw: engine_run(orders, work, root=root, **kw)
    return sides


def startup_cpu(sides: dict[str, Any], tmp: Path, repeat: int) -> dict[str, float]:
    """Each side's CPU time on an empty file (interpreter, imports, flow loading): what a
    run costs before its first record, taken off its CPU time per record."""
    empty = tmp / "empty.ndjson"
    empty.write_text("")
    cpu: dict[str, list[float]] = {side: [] for side in sides}
    for rep in range(repeat):
        for side, go in sides.items():
            work = tmp / f"startup-{side}-{rep}"
            work.mkdir()
            sink(work).parent.mkdir(parents=True, exist_ok=True)
            cpu[side].append(go(empty, work).cpu_s)
    return {side: _median(values) for side, values in cpu.items()}


def throughput(args: argparse.Namespace, tmp: Path) -> dict:
    orders = tmp / "orders.ndjson"
    made = generate(
        orders, args.records, seed=args.seed, malformed=args.malformed, invalid=args.invalid
    )
    print(f"{args.records} orders in {orders} ({made})", flush=True)
    runners = _sides(args)
    sides = tuple(runners)
    seconds = {
        side: {run: {m: [] for m in MEASURES} for run in ("first", "rerun")} for side in sides
    }
    counts: dict[str, Any] = {}
    loads: list[float] = []
    for rep in range(args.repeat):
        order = sides[rep % len(sides) :] + sides[: rep % len(sides)]
        for side in order:
            work = tmp / f"{side}-{rep}"
            work.mkdir()
            sink(work).parent.mkdir(exist_ok=True)
            loads.append(os.getloadavg()[0])
            first, rerun = runners[side](orders, work), runners[side](orders, work)
            for run, job in (("first", first), ("rerun", rerun)):
                for m, value in _times(job).items():
                    seconds[side][run][m].append(value)
            counts[side] = {"first": counts_of(first), "rerun": counts_of(rerun)}
            print(
                f"  rep {rep + 1} {side:8}  first {first.wall_s:6.2f} s (cpu {first.cpu_s:6.2f})"
                f"  re-run {rerun.wall_s:6.2f} s (cpu {rerun.cpu_s:6.2f})  "
                f"{counts[side]['first']}  load {loads[-1]:.1f}",
                flush=True,
            )
        if rep == 0:
            _check_sides(tmp, sides, counts)
        if rep > 0:  # keep the disk small: the data file and the first databases stay
            for side in order:
                for folder in (tmp / f"{side}-{rep}", sink(tmp / f"{side}-{rep}").parent):
                    shutil.rmtree(folder, ignore_errors=True)
    startup = startup_cpu(runners, tmp, args.startup_runs)
    n = args.records
    med = {
        side: {run: {m: _median(v) for m, v in runs.items()} for run, runs in by_run.items()}
        for side, by_run in seconds.items()
    }
    rate = {
        m: {side: {run: n / med[side][run][m] for run in ("first", "rerun")} for side in sides}
        for m in MEASURES
    }
    # CPU per record: the process's CPU time less what it spends before its first record
    cpu_us = {
        side: {run: 1e6 * (med[side][run]["cpu"] - startup[side]) / n for run in ("first", "rerun")}
        for side in sides
    }
    ratio = {  # engine / other side, by records per second: above 1, the engine is faster
        other: {
            run: {m: rate[m]["engine"][run] / rate[m][other][run] for m in MEASURES}
            for run in ("first", "rerun")
        }
        for other in sides
        if other != "engine"
    }
    result = {
        "records": n,
        "repeat": args.repeat,
        "baseline_validator": args.baseline_validator,
        "sink_dir": str(args.sink_dir) if args.sink_dir else None,
        "file": made,
        "counts": counts,
        "seconds": seconds,
        "median_seconds": med,
        "records_per_s": rate,
        "startup_cpu_s": startup,
        "cpu_us_per_record": cpu_us,
        "engine_cpu_us_per_record_over_baseline": {
            run: cpu_us["engine"][run] - cpu_us["baseline"][run] for run in ("first", "rerun")
        },
        "ratio": ratio,
        # kept under their old names: engine / baseline, first run; each side's speed-up
        "ratio_engine_to_baseline": ratio["baseline"]["first"],
        "before": _version(args.before_root) if args.before_root else None,
        "rerun_speedup": {
            m: {side: med[side]["first"][m] / med[side]["rerun"][m] for side in sides}
            for m in MEASURES
        },
        "load_average": {"min": min(loads), "median": _median(loads), "max": max(loads)},
    }
    _print_throughput(result, sides)
    return result


def _check_sides(tmp: Path, sides: tuple[str, ...], counts: dict[str, Any]) -> None:
    """The first repetition: every side wrote the engine's rows (dlt: as many rows)."""
    differences = []
    for side in sides:
        if side in ("engine", "dlt"):
            continue
        differences += compare_sinks(sink(tmp / "engine-0"), sink(tmp / f"{side}-0"))
        if counts[side] != counts["engine"]:
            differences.append(f"{side} counted {counts[side]}")
    if "dlt" in sides:
        engine_rows, dlt_rows = sink_rows(sink(tmp / "engine-0")), sink_rows(sink(tmp / "dlt-0"))
        for table in SINK_TABLES:
            if len(engine_rows[table]) != len(dlt_rows[table]):
                differences.append(
                    f"dlt: {table}: {len(dlt_rows[table])} rows, the engine's "
                    f"{len(engine_rows[table])}"
                )
    if differences:
        raise SystemExit(f"the sides disagree: {differences} {counts}")


def _print_throughput(result: dict, sides: tuple[str, ...]) -> None:
    n, rate, med = result["records"], result["records_per_s"], result["median_seconds"]
    labels = {
        "wall": "wall time of the command (start-up included)",
        "inner": "the run's own time (start-up and flow loading excluded)",
        "cpu": "CPU time of the process (user + system)",
    }
    print(f"\nthroughput, {n} orders, median of {result['repeat']}")
    for m in MEASURES:
        print(f"  by {labels[m]}:")
        for side in sides:
            print(
                f"    {side:8}  first run {rate[m][side]['first']:7.0f} records/s   "
                f"re-run {rate[m][side]['rerun']:7.0f} records/s   "
                f"({med[side]['first'][m]:.2f} s / {med[side]['rerun'][m]:.2f} s)"
            )
        for other, by_run in result["ratio"].items():
            print(
                f"    engine / {other}: first run {by_run['first'][m]:.2f}, "
                f"re-run {by_run['rerun'][m]:.2f}"
            )
    print("  CPU per record, start-up taken off (us):")
    for side, by_run in result["cpu_us_per_record"].items():
        print(f"    {side:8}  first run {by_run['first']:6.0f}   re-run {by_run['rerun']:6.0f}")
    over = result["engine_cpu_us_per_record_over_baseline"]
    print(
        f"    engine over the baseline: first run {over['first']:.0f}, re-run {over['rerun']:.0f}"
    )
    load = result["load_average"]
    print(f"  load average during the runs: {load['min']:.1f} to {load['max']:.1f}")


def memory(args: argparse.Namespace, tmp: Path) -> dict:
    result: dict[str, Any] = {"sizes": {}}
    for n in args.records:
        orders = tmp / f"orders-{n}.ndjson"
        started = time.perf_counter()
        made = generate(orders, n, seed=args.seed, malformed=args.malformed, invalid=args.invalid)
        size_mb = orders.stat().st_size / 1e6
        print(
            f"{n} orders, {size_mb:.0f} MB, generated in {time.perf_counter() - started:.0f} s",
            flush=True,
        )
        entry: dict[str, Any] = {"file_mb": round(size_mb, 1), "file": made}
        sides = ("engine", "baseline") if args.with_baseline else ("engine",)
        for side in sides:
            work = tmp / f"mem-{side}-{n}"
            work.mkdir()
            go = engine_run if side == "engine" else baseline_run
            job = go(orders, work, sample_every=args.sample_every)
            rss = [mb for _, mb in job.rss_samples]
            entry[side] = {
                "max_rss_mb": round(job.max_rss_mb, 1),
                "wall_s": round(job.wall_s, 1),
                "records_per_s": round(n / job.wall_s),
                "counts": counts_of(job),
                "rss_quartiles_mb": _quartiles(rss),
                "rss_samples": job.rss_samples[:: max(1, len(job.rss_samples) // 40)],
            }
            print(
                f"  {side:8}  peak RSS {job.max_rss_mb:6.1f} MB  in {job.wall_s:6.0f} s "
                f"({n / job.wall_s:.0f} records/s); RSS at 25/50/75/100 % of the run: "
                f"{entry[side]['rss_quartiles_mb']}",
                flush=True,
            )
            for path in work.rglob("*"):
                if path.is_file():
                    path.unlink()
        orders.unlink()
        result["sizes"][str(n)] = entry
    return result


def _quartiles(values: list[float]) -> list[float]:
    if not values:
        return []
    return [values[min(len(values) - 1, int(len(values) * q))] for q in (0.25, 0.5, 0.75, 1.0)]


HTTP_TARGETS = {  # --target: the server the sends go to, in its own process
    # asyncio on one thread, 0.1-0.2 ms of CPU per order (docs/benchmarks.md, section 6)
    "lean": "tests.support.lean_target",
    # the test suite's scriptable target: a thread per connection, 0.6-0.7 ms per order
    "full": "tests.support.target",
}


def _spawn_target(latency_ms: float, kind: str = "lean") -> tuple[subprocess.Popen, str]:
    """The target in its own process (target.py with no state dir: no fsync per request)."""
    cmd = [sys.executable, "-m", HTTP_TARGETS[kind], "--port", "0"]
    proc = subprocess.Popen(
        [*cmd, "--latency-ms", str(latency_ms)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    ready = proc.stdout.readline().split()
    if ready[:1] != ["READY"]:
        proc.kill()
        raise RuntimeError(f"the target did not start: {ready}")
    return proc, ready[1]


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process, from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores), from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


HTTP_SIDES = {  # the engine's lanes: FLOWYARD_LANE_PROCESSES of each side (None: the default)
    "processes": None,
    "threads": "0",
}


def http(args: argparse.Namespace, tmp: Path) -> dict:
    from tests.support.target import RemoteTarget, stop_target

    result: dict[str, Any] = {
        "latency_ms": args.latency_ms,
        "repeat": args.repeat,
        "target": HTTP_TARGETS[args.target],
        "runs": {},
    }
    proc, url = _spawn_target(args.latency_ms, args.target)
    target = RemoteTarget(url)
    flow_text = HTTP_FLOW.read_text()
    flow_text = flow_text.replace("[../mappings]", json.dumps([str(ROOT / "mappings")]))
    sides = ["processes", "threads"] if args.with_threads else ["processes"]
    try:
        for concurrency in args.concurrency:
            limit = concurrency * 1000 / args.latency_ms
            n = max(args.min_records, int(limit * args.seconds))
            orders = tmp / f"http-orders-{n}.ndjson"
            if not orders.exists():
                generate(orders, n, seed=args.seed)
            flow = tmp / f"http_flow_c{concurrency}.yaml"
            flow.write_text(
                re.sub(r"(?m)^concurrency: \d+$", f"concurrency: {concurrency}", flow_text)
            )
            runs: dict[str, dict[str, list[float]]] = {
                side: {
                    "run_s": [],
                    "wall_s": [],
                    "cpu_s": [],
                    "target_cpu_s": [],
                    "load": [],
                    "others_cores": [],
                    "most_at_once": [],
                }
                for side in [*sides, "bare_client"]
            }
            lanes: dict[str, str] = {}
            for rep in range(args.repeat):
                order = sides[rep % len(sides) :] + sides[: rep % len(sides)]
                for side in [*order, "bare_client"]:
                    work = tmp / f"http-{concurrency}-{side.replace(' ', '-')}-{rep}"
                    work.mkdir()
                    target.reset()
                    load, target_cpu = os.getloadavg()[0], _cpu_s(proc.pid)
                    busy = _machine_busy_s()
                    if side == "bare_client":
                        job = run_job(
                            [sys.executable, str(BENCH / "http_ceiling.py"), url]
                            + ["--records", str(n), "--concurrency", str(concurrency)]
                            + ["--client", args.ceiling_client]
                        )
                    else:
                        cmd = [*flowyard(), "run", str(flow), "--state", str(work / "state.db")]
                        cmd += ["--var", f"orders={orders}", "--var", f"url={url}"]
                        cmd += ["--output", "json"]
                        env = {"FLOWYARD_LANE_PROCESSES": HTTP_SIDES[side]}
                        job = run_job(
                            cmd,
                            cwd=engine_cwd(),
                            env={k: v for k, v in env.items() if v is not None} or None,
                        )
                        if job.json()["counts"]["done"] != n:
                            raise SystemExit(f"concurrency {concurrency}: {job.stdout}")
                        lanes[side] = _lanes_of(work)
                    applied = len(target.applied)
                    if applied != n:
                        raise SystemExit(f"concurrency {concurrency}, {side}: {applied} of {n}")
                    if args.target == "lean":  # it counts the requests it held at once
                        most = target._call("GET", "stats")["most_at_once"]
                        runs[side]["most_at_once"].append(most)
                        if most > concurrency:
                            raise SystemExit(
                                f"{side}: {most} requests at once, {concurrency} asked"
                            )
                    numbers = runs[side]
                    numbers["run_s"].append(inner_seconds(job))
                    numbers["wall_s"].append(job.wall_s)
                    numbers["cpu_s"].append(job.cpu_s)
                    numbers["target_cpu_s"].append(_cpu_s(proc.pid) - target_cpu)
                    numbers["load"].append(load)
                    # cores busy with other work than this run's and the target's, on average
                    others = _machine_busy_s() - busy - job.cpu_s - numbers["target_cpu_s"][-1]
                    numbers["others_cores"].append(max(0.0, others) / job.wall_s)
                    print(
                        f"  concurrency {concurrency:3} {side:11} {lanes.get(side, ''):12} "
                        f"{n / inner_seconds(job) / limit:4.0%} of the limit, "
                        f"CPU per send {1000 * job.cpu_s / n:.2f} ms "
                        f"(target {1000 * numbers['target_cpu_s'][-1] / n:.2f}), load {load:.1f}, "
                        f"other work {numbers['others_cores'][-1]:.2f} cores"
                        + (
                            f", {numbers['most_at_once'][-1]} at once"
                            if args.target == "lean"
                            else ""
                        ),
                        flush=True,
                    )
            entry: dict[str, Any] = {"records": n, "limit_per_s": limit}
            for side, numbers in runs.items():
                inner = _median(numbers["run_s"])
                entry[side] = {
                    **numbers,
                    **({"lanes": lanes[side]} if side in lanes else {}),
                    "records_per_s": n / inner,
                    "fraction_of_limit": n / inner / limit,
                    "fraction_of_limit_wall": n / _median(numbers["wall_s"]) / limit,
                    # CPU per send, start-up included (the process's children's too: the
                    # lane processes); 2 cores / CPU per send bounds the sends per second
                    "cpu_ms_per_send": 1000 * _median(numbers["cpu_s"]) / n,
                    "target_cpu_ms_per_send": 1000 * _median(numbers["target_cpu_s"]) / n,
                }
            result["runs"][str(concurrency)] = entry
            print(
                f"  concurrency {concurrency:3}: limit {limit:.0f}/s, medians: "
                + "; ".join(
                    f"{side} {entry[side]['fraction_of_limit']:.0%} "
                    f"({entry[side]['cpu_ms_per_send']:.2f} ms CPU per send)"
                    for side in runs
                ),
                flush=True,
            )
    finally:
        stop_target(proc)
    return result


def _lanes_of(work: Path) -> str:
    """What lanes the run in ``work`` had, from its run log's ``run_started`` line."""
    for log in (work / "runs").glob("*.jsonl"):
        for line in log.read_text().splitlines():
            event = json.loads(line)
            if event.get("event") == "run_started":
                return str(event.get("lanes", ""))
    return ""


def local(args: argparse.Namespace, tmp: Path) -> dict:
    """The reference flow (every call local: SQLite) at concurrency 1 and N, alternately."""
    orders = tmp / "orders.ndjson"
    generate(orders, args.records, seed=args.seed)
    text = REFERENCE_FLOW.read_text().replace("[../mappings]", json.dumps([str(ROOT / "mappings")]))
    text = re.sub(r"(?m)^concurrency: \d+\n", "", text)
    flows = {}
    for concurrency in (1, args.concurrency):
        flows[concurrency] = tmp / f"reference_c{concurrency}.yaml"
        flows[concurrency].write_text(f"concurrency: {concurrency}\n" + text)
    times: dict[int, dict[str, list[float]]] = {c: {m: [] for m in MEASURES} for c in flows}
    for rep in range(args.repeat):
        for concurrency in list(flows)[rep % 2 :] + list(flows)[: rep % 2]:
            work = tmp / f"local-{concurrency}-{rep}"
            work.mkdir()
            job = engine_run(orders, work, flow=flows[concurrency])
            for m, value in _times(job).items():
                times[concurrency][m].append(value)
            print(
                f"  rep {rep + 1} concurrency {concurrency:2}: {job.wall_s:6.2f} s "
                f"(cpu {job.cpu_s:6.2f}), lanes {_lanes_of(work)}, "
                f"load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    result: dict[str, Any] = {"records": args.records, "runs": times}
    one, many = ({m: _median(times[c][m]) for m in MEASURES} for c in (1, args.concurrency))
    result["ratio_n_over_1"] = {m: many[m] / one[m] for m in MEASURES}
    print(
        f"  concurrency {args.concurrency} / 1, medians: "
        + ", ".join(f"{m} {result['ratio_n_over_1'][m]:.3f}" for m in MEASURES),
        flush=True,
    )
    return result


def startup(args: argparse.Namespace, tmp: Path) -> dict:
    roots: dict[str, Path | None] = {"": None}
    if args.before_root:
        roots["before: "] = args.before_root.resolve()
    commands: dict[str, tuple[list[str], Path]] = {
        "python -c pass": ([sys.executable, "-c", "pass"], ROOT)
    }
    for prefix, root in roots.items():
        cwd = engine_cwd(root)
        commands[f"{prefix}flowyard --help"] = ([*flowyard(root), "--help"], cwd)
        commands[f"{prefix}flowyard validate flows/order_to_erp.yaml"] = (
            [*flowyard(root), "validate", str(SHIPPED_FLOW)],
            cwd,
        )
        commands[f"{prefix}flowyard validate bench/reference_flow.yaml"] = (
            [*flowyard(root), "validate", str(REFERENCE_FLOW)],
            cwd,
        )
    for cmd, cwd in commands.values():
        run_job(cmd, cwd=cwd)  # warm the file cache
    times: dict[str, list[float]] = {label: [] for label in commands}
    cpu: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(args.repeat):  # round robin, so a busy moment hits every command alike
        for label, (cmd, cwd) in commands.items():
            job = run_job(cmd, cwd=cwd)
            times[label].append(job.wall_s)
            cpu[label].append(job.cpu_s)  # what a busy machine disturbs least
    result: dict[str, Any] = {}
    for label, runs in times.items():
        result[label] = {
            "median_s": _median(runs),
            "min_s": min(runs),
            "runs": runs,
            "cpu_median_s": _median(cpu[label]),
            "cpu_runs": cpu[label],
        }
        print(
            f"  {label:53} median {_median(runs):.3f} s  (min {min(runs):.3f} s)  "
            f"CPU {_median(cpu[label]):.3f} s"
        )
    return result


# -- the command line -------------------------------------------------------------------------


def machine() -> dict:
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average": os.getloadavg(),
    }


def _version(root: Path) -> str:
    """The engine checkout's commit, with ``+changes`` when its tree is not clean."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return commit + ("+changes" if dirty else "")


def _cpu_model() -> str:
    try:
        for row in Path("/proc/cpuinfo").read_text().splitlines():
            if row.startswith("model name"):
                return row.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


MEASUREMENTS = {
    "throughput": throughput,
    "memory": memory,
    "http": http,
    "local": local,
    "startup": startup,
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench/run.py",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--json", type=Path, help="write the results here")
        q.add_argument(
            "--workdir", type=Path, help="work in a new folder here and keep it (files, databases)"
        )
        q.add_argument("--seed", type=int, default=1)
        q.add_argument(
            "--engine-root",
            type=Path,
            help="run the engine from this checkout (python -m cli there), e.g. a worktree",
        )

    t = sub.add_parser("throughput", help="first run and re-run, engine against baseline")
    t.add_argument("--records", type=int, default=20_000)
    t.add_argument("--repeat", type=int, default=5)
    t.add_argument("--malformed", type=float, default=0.01)
    t.add_argument("--invalid", type=float, default=0.01)
    t.add_argument(
        "--baseline-validator",
        choices=["engine", "fastjsonschema", "jsonschema"],
        default="engine",
        help="what the plain baseline validates with [default: engine, the engine's own "
        "compiled validator]",
    )
    t.add_argument(
        "--with-durable",
        action="store_true",
        help="also run the durable-per-record baseline (a commit and a log line per record)",
    )
    t.add_argument(
        "--dlt",
        action="store_true",
        help="also run dlt merging the same orders into SQLite (bench/dlt_load.py, in a "
        "virtual environment of its own, made on first use)",
    )
    t.add_argument(
        "--startup-runs",
        type=int,
        default=3,
        help="runs of each side on an empty file, whose CPU time is taken off per record",
    )
    t.add_argument(
        "--before-root",
        type=Path,
        help="also run the engine of this checkout (e.g. a worktree before a change), "
        "alternating with the others",
    )
    t.add_argument(
        "--sink-dir",
        type=Path,
        help="put the target databases here, e.g. /dev/shm to take their fsyncs away",
    )
    m = sub.add_parser("memory", help="peak RSS of a first run at several sizes")
    m.add_argument("--records", type=int, nargs="+", default=[100_000, 1_000_000])
    m.add_argument("--malformed", type=float, default=0.01)
    m.add_argument("--invalid", type=float, default=0.01)
    m.add_argument("--with-baseline", action="store_true", help="measure the baseline too")
    m.add_argument("--sample-every", type=float, default=1.0, help="seconds between samples")
    h = sub.add_parser("http", help="sends to a target with a fixed latency")
    h.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    h.add_argument("--latency-ms", type=float, default=20)
    h.add_argument("--seconds", type=float, default=5, help="aim for runs this long")
    h.add_argument("--min-records", type=int, default=20)
    h.add_argument("--repeat", type=int, default=3)
    h.add_argument(
        "--target",
        choices=sorted(HTTP_TARGETS),
        default="lean",
        help="the server: lean (tests/support/lean_target.py, asyncio) or full "
        "(tests/support/target.py, the test suite's) [default: lean]",
    )
    h.add_argument(
        "--with-threads",
        action="store_true",
        help="also run the engine with its lanes as threads (FLOWYARD_LANE_PROCESSES=0), "
        "alternating with lanes in processes",
    )
    h.add_argument(
        "--ceiling-client",
        choices=["httpx", "httpx-per-thread", "httpx-stdlib", "http.client"],
        default="httpx-stdlib",
        help="the bare client's (bench/http_ceiling.py) [default: httpx-stdlib, as the "
        "engine's http connector sends]",
    )
    lo = sub.add_parser("local", help="a flow whose calls are local, at concurrency 1 and N")
    lo.add_argument("--records", type=int, default=5000)
    lo.add_argument("--concurrency", type=int, default=8)
    lo.add_argument("--repeat", type=int, default=3)
    s = sub.add_parser("startup", help="flowyard --help and flowyard validate")
    s.add_argument("--repeat", type=int, default=15)
    s.add_argument("--before-root", type=Path, help="also time the CLI of this checkout")
    a = sub.add_parser("all", help="every measurement with its defaults")
    for q in (t, m, h, lo, s, a):
        common(q)
    return p


def main(argv: list[str] | None = None) -> dict:
    global ENGINE_ROOT, SINK_DIR
    args = parser().parse_args(argv)
    ENGINE_ROOT = args.engine_root.resolve() if args.engine_root else None
    SINK_DIR = None
    if getattr(args, "sink_dir", None):
        SINK_DIR = Path(tempfile.mkdtemp(prefix="flowyard-sinks-", dir=args.sink_dir))
    commands = list(MEASUREMENTS) if args.command == "all" else [args.command]
    report: dict[str, Any] = {
        "machine": machine(),
        "command": "bench/run.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "engine": _version(engine_cwd()),
    }
    for command in commands:
        cmd_args = args if args.command != "all" else parser().parse_args([command])
        print(f"== {command}", flush=True)
        if args.workdir:  # kept: the generated files, the first databases, the logs
            args.workdir.mkdir(parents=True, exist_ok=True)
            tmp = tempfile.mkdtemp(prefix=f"{command}-", dir=args.workdir)
            report[command] = MEASUREMENTS[command](cmd_args, Path(tmp))
            report[command]["workdir"] = tmp
            continue
        with tempfile.TemporaryDirectory(prefix="flowyard-bench-") as tmp:
            report[command] = MEASUREMENTS[command](cmd_args, Path(tmp))
    report["machine"]["load_average_end"] = os.getloadavg()
    if SINK_DIR is not None:
        shutil.rmtree(SINK_DIR, ignore_errors=True)
    name = args.command
    out = args.json or BENCH / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results written to {out}")
    return report


if __name__ == "__main__":
    main()
