"""flowyard's benchmarks: the engine against a hand-written script doing the same work.

    .venv/bin/python bench/run.py throughput [--records 20000] [--repeat 5]
    .venv/bin/python bench/run.py memory [--records 100000 1000000] [--with-baseline]
    .venv/bin/python bench/run.py http [--concurrency 1 4 16] [--latency-ms 20] [--seconds 5]
    .venv/bin/python bench/run.py startup [--repeat 15]
    .venv/bin/python bench/run.py all

Every measurement runs in subprocesses, as a user would: the engine through the
``flowyard`` console script (``flowyard run bench/reference_flow.yaml ...``), the
baseline as ``python bench/baseline.py ...``. Input files are generated on the fly by
bench/gen_orders.py into a temporary directory (``--workdir`` to keep them) and deleted
afterwards. Results are printed and written as JSON (``--json``, by default
``bench/results/<command>.json``) with the machine, the date and the command line.
docs/benchmarks.md records the figures.

- ``throughput``: engine and baseline alternately, ``--repeat`` times each, on the same
  file: a first run into empty databases, then a re-run in which every record is a
  duplicate. Medians of records/s by three clocks (the command's wall time, start-up
  included; the run's own time; the process's CPU time, which a busy machine disturbs
  least), the engine/baseline ratio and each side's re-run speed-up. The first
  repetition checks that both wrote exactly the same rows. ``--sink-dir /dev/shm`` puts
  the target databases where fsync is free; ``--baseline-validator fastjsonschema``
  lets the baseline validate as fast as the engine; ``--before-root`` adds the engine
  of another checkout (a worktree before a change) as a third side.
- ``memory``: peak RSS (``wait4`` of the process) of a first run at each size, and its
  RSS sampled from /proc while it runs.
- ``http``: bench/http_flow.yaml against tests/support/target.py answering after a fixed
  latency, at each concurrency: records/s against the limit concurrency/latency, next to
  a bare threaded httpx client (bench/http_ceiling.py) against the same server.
- ``startup``: ``python -c pass``, ``flowyard --help`` and ``flowyard validate
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
SINK_TABLES = ("pickups", "shipments", "sales_orders")
EXIT_OK, EXIT_DEAD_LETTERS = 0, 1


# --engine-root: run the engine of another checkout (``python -m cli`` from its folder),
# e.g. a git worktree of an older commit, to measure a change before and after.
ENGINE_ROOT: Path | None = None
# --sink-dir: where the target databases go (e.g. /dev/shm, where fsync costs nothing).
SINK_DIR: Path | None = None


def flowyard(root: Path | None = None) -> list[str]:
    """The console script next to this Python (the venv's), else ``python -m cli``."""
    script = Path(sys.executable).with_name("flowyard")
    if (root or ENGINE_ROOT) is None and script.exists():
        return [str(script)]
    return [sys.executable, "-m", "cli"]  # run in the checkout's folder: its engine is found


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
) -> Job:
    """Run ``cmd`` in ``cwd``; its peak RSS and CPU time come from ``wait4`` on this very child."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=cwd)
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


def baseline_run(orders: Path, work: Path, validator: str = "jsonschema", **kw: Any) -> Job:
    cmd = [
        sys.executable,
        str(BENCH / "baseline.py"),
        "--orders",
        str(orders),
        "--erp",
        str(sink(work)),
        "--state",
        str(work / "state.db"),
        "--validator",
        validator,
    ]
    return run_job(cmd, **kw)


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


def throughput(args: argparse.Namespace, tmp: Path) -> dict:
    orders = tmp / "orders.ndjson"
    made = generate(
        orders, args.records, seed=args.seed, malformed=args.malformed, invalid=args.invalid
    )
    print(f"{args.records} orders in {orders} ({made})", flush=True)
    sides: tuple[str, ...] = ("engine", "baseline")
    if args.before_root:
        sides += ("before",)
    seconds = {
        side: {run: {m: [] for m in MEASURES} for run in ("first", "rerun")} for side in sides
    }
    counts: dict[str, Any] = {}
    for rep in range(args.repeat):
        order = sides[rep % len(sides) :] + sides[: rep % len(sides)]
        for side in order:
            work = tmp / f"{side}-{rep}"
            work.mkdir()
            sink(work).parent.mkdir(exist_ok=True)
            if side == "engine":
                first, rerun = engine_run(orders, work), engine_run(orders, work)
            elif side == "before":
                root = args.before_root.resolve()
                first = engine_run(orders, work, root=root)
                rerun = engine_run(orders, work, root=root)
            else:
                first = baseline_run(orders, work, args.baseline_validator)
                rerun = baseline_run(orders, work, args.baseline_validator)
            for run, job in (("first", first), ("rerun", rerun)):
                for m, value in _times(job).items():
                    seconds[side][run][m].append(value)
            counts[side] = {"first": counts_of(first), "rerun": counts_of(rerun)}
            print(
                f"  rep {rep + 1} {side:8}  first {first.wall_s:6.2f} s (cpu {first.cpu_s:6.2f})"
                f"  re-run {rerun.wall_s:6.2f} s (cpu {rerun.cpu_s:6.2f})  "
                f"{counts[side]['first']}",
                flush=True,
            )
        if rep == 0:
            differences = compare_sinks(sink(tmp / "engine-0"), sink(tmp / "baseline-0"))
            if "before" in sides:
                differences += compare_sinks(sink(tmp / "engine-0"), sink(tmp / "before-0"))
            if differences or any(c != counts["engine"] for c in counts.values()):
                raise SystemExit(f"engine and baseline disagree: {differences} {counts}")
        if rep > 0:  # keep the disk small: the data file and the first databases stay
            for side in order:
                for folder in (tmp / f"{side}-{rep}", sink(tmp / f"{side}-{rep}").parent):
                    for path in folder.rglob("*"):
                        if path.is_file():
                            path.unlink()
    n = args.records
    med = {
        side: {run: {m: _median(v) for m, v in runs.items()} for run, runs in by_run.items()}
        for side, by_run in seconds.items()
    }
    rate = {
        m: {side: {run: n / med[side][run][m] for run in ("first", "rerun")} for side in sides}
        for m in MEASURES
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
        "ratio_engine_to_baseline": {
            m: rate[m]["engine"]["first"] / rate[m]["baseline"]["first"] for m in MEASURES
        },
        "before": _version(args.before_root) if args.before_root else None,
        "rerun_speedup": {
            m: {side: med[side]["first"][m] / med[side]["rerun"][m] for side in sides}
            for m in MEASURES
        },
    }
    labels = {
        "wall": "wall time of the command (start-up included)",
        "inner": "the run's own time (start-up and flow loading excluded)",
        "cpu": "CPU time of the process (user + system)",
    }
    print(f"\nthroughput, {n} orders, median of {args.repeat}")
    for m in MEASURES:
        print(f"  by {labels[m]}:")
        for side in sides:
            print(
                f"    {side:8}  first run {rate[m][side]['first']:7.0f} records/s   "
                f"re-run {rate[m][side]['rerun']:7.0f} records/s   "
                f"re-run speed-up {result['rerun_speedup'][m][side]:5.2f}x"
            )
        print(f"    engine / baseline, first run: {result['ratio_engine_to_baseline'][m]:.2f}")
        if "before" in sides:
            first, rerun = (rate[m]["engine"][r] / rate[m]["before"][r] for r in ("first", "rerun"))
            print(f"    engine / before: first run {first:.2f}, re-run {rerun:.2f}")
    return result


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


def _spawn_target(latency_ms: float) -> tuple[subprocess.Popen, str]:
    """tests/support/target.py in its own process, with no state dir: no fsync per request."""
    cmd = [sys.executable, "-m", "tests.support.target", "--port", "0"]
    proc = subprocess.Popen(
        [*cmd, "--latency-ms", str(latency_ms)], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    ready = proc.stdout.readline().split()
    if ready[:1] != ["READY"]:
        proc.kill()
        raise RuntimeError(f"the target did not start: {ready}")
    return proc, ready[1]


def http(args: argparse.Namespace, tmp: Path) -> dict:
    from tests.support.target import RemoteTarget, stop_target

    result: dict[str, Any] = {"latency_ms": args.latency_ms, "repeat": args.repeat, "runs": {}}
    proc, url = _spawn_target(args.latency_ms)
    target = RemoteTarget(url)
    flow_text = HTTP_FLOW.read_text()
    flow_text = flow_text.replace("[../mappings]", json.dumps([str(ROOT / "mappings")]))
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
            engine_s, engine_wall_s, bare_s, engine_cpu_s, bare_cpu_s = [], [], [], [], []
            for rep in range(args.repeat):
                work = tmp / f"http-{concurrency}-{rep}"
                work.mkdir()
                target.reset()
                cmd = [*flowyard(), "run", str(flow), "--state", str(work / "state.db")]
                cmd += ["--var", f"orders={orders}", "--var", f"url={url}", "--output", "json"]
                job = run_job(cmd, cwd=engine_cwd())
                applied = len(target.applied)
                if applied != n or job.json()["counts"]["done"] != n:
                    raise SystemExit(f"concurrency {concurrency}: {applied} of {n} applied")
                engine_s.append(inner_seconds(job))
                engine_wall_s.append(job.wall_s)
                engine_cpu_s.append(job.cpu_s)
                target.reset()
                bare = run_job(
                    [sys.executable, str(BENCH / "http_ceiling.py"), url]
                    + ["--records", str(n), "--concurrency", str(concurrency)]
                )
                bare_s.append(bare.json()["seconds"])
                bare_cpu_s.append(bare.cpu_s)
            inner, wall, ceiling = _median(engine_s), _median(engine_wall_s), _median(bare_s)
            entry = {
                "records": n,
                "limit_per_s": limit,
                "run_s": engine_s,
                "wall_s": engine_wall_s,
                "bare_client_s": bare_s,
                "cpu_s": engine_cpu_s,
                "bare_client_cpu_s": bare_cpu_s,
                # CPU per send, start-up included: one interpreter lock spreads it over the
                # lanes, so 1000 / cpu_ms_per_send bounds the sends per second
                "cpu_ms_per_send": 1000 * _median(engine_cpu_s) / n,
                "bare_client_cpu_ms_per_send": 1000 * _median(bare_cpu_s) / n,
                "records_per_s": n / inner,
                "fraction_of_limit": n / inner / limit,
                "fraction_of_limit_wall": n / wall / limit,
                "bare_client_fraction_of_limit": n / ceiling / limit,
            }
            result["runs"][str(concurrency)] = entry
            print(
                f"  concurrency {concurrency:3}: {n:5} sends in {inner:6.2f} s = "
                f"{entry['records_per_s']:6.1f}/s of a limit of {limit:.0f}/s: "
                f"{entry['fraction_of_limit']:.0%} (with start-up: "
                f"{entry['fraction_of_limit_wall']:.0%}); a bare httpx client: "
                f"{entry['bare_client_fraction_of_limit']:.0%}; CPU per send "
                f"{entry['cpu_ms_per_send']:.2f} ms, "
                f"bare {entry['bare_client_cpu_ms_per_send']:.2f} ms",
                flush=True,
            )
    finally:
        stop_target(proc)
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
        commands[f"{prefix}flowyard validate bench/reference_flow.yaml"] = (
            [*flowyard(root), "validate", str(REFERENCE_FLOW)],
            cwd,
        )
    for cmd, cwd in commands.values():
        run_job(cmd, cwd=cwd)  # warm the file cache
    times: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(args.repeat):  # round robin, so a busy moment hits every command alike
        for label, (cmd, cwd) in commands.items():
            times[label].append(run_job(cmd, cwd=cwd).wall_s)
    result: dict[str, Any] = {}
    for label, runs in times.items():
        result[label] = {"median_s": _median(runs), "min_s": min(runs), "runs": runs}
        print(f"  {label:53} median {_median(runs):.3f} s  (min {min(runs):.3f} s)")
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


MEASUREMENTS = {"throughput": throughput, "memory": memory, "http": http, "startup": startup}


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
        choices=["jsonschema", "fastjsonschema"],
        default="jsonschema",
        help="what the baseline validates with (the engine uses fastjsonschema)",
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
    s = sub.add_parser("startup", help="flowyard --help and flowyard validate")
    s.add_argument("--repeat", type=int, default=15)
    s.add_argument("--before-root", type=Path, help="also time the CLI of this checkout")
    a = sub.add_parser("all", help="every measurement with its defaults")
    for q in (t, m, h, s, a):
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
