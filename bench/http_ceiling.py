"""The HTTP benchmark's ceiling: a bare threaded httpx client, no engine, same server.

    .venv/bin/python bench/http_ceiling.py URL --records N --concurrency C

``C`` threads share one ``httpx.Client`` (as the engine's http connector does) and POST
``N`` small JSON bodies to ``URL/orders``, each with its own ``Idempotency-Key``. Prints
``{"seconds": ..., "records_per_s": ...}``. bench/run.py http runs it next to the engine,
so the figure says how much of concurrency/latency this machine's Python, httpx and
the test server allow before any engine work.

``--client http.client`` sends the same requests with the standard library's
``http.client`` instead (one connection per thread), ``--client httpx-per-thread`` with
one ``httpx.Client`` per thread, and ``--client httpx-stdlib`` with one per thread on
connectors/httpkit/transport.py (``http.client`` under httpx, as the engine's http
connector sends): the CPU each costs per request is what docs/benchmarks.md compares.
Against a target with no latency and one thread, CPU per request is the client's cost
alone.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from connectors.httpkit.transport import StdlibTransport  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url")
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument(
        "--client",
        choices=["httpx", "httpx-per-thread", "httpx-stdlib", "http.client"],
        default="httpx",
    )
    args = parser.parse_args(argv)
    shared = httpx.Client(base_url=args.url, timeout=10)
    numbers = iter(range(args.records))
    lock = threading.Lock()
    failures = []
    local = threading.local()
    url = urlsplit(args.url)

    def post(body: str, headers: dict[str, str]) -> int:
        if args.client == "httpx":
            return shared.post("/orders", content=body, headers=headers).status_code
        if args.client in ("httpx-per-thread", "httpx-stdlib"):
            if not hasattr(local, "client"):
                transport = StdlibTransport() if args.client == "httpx-stdlib" else None
                local.client = httpx.Client(base_url=args.url, timeout=10, transport=transport)
            return local.client.post("/orders", content=body, headers=headers).status_code
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
        local.conn.request("POST", url.path + "/orders", body=body.encode(), headers=headers)
        response = local.conn.getresponse()
        response.read()
        return response.status

    def worker() -> None:
        while True:
            with lock:
                n = next(numbers, None)
            if n is None:
                return
            body = json.dumps({"order_id": f"bare:{n}", "lines": [{"sku": "TEE", "qty": 1}]})
            headers = {"Content-Type": "application/json", "Idempotency-Key": f'"bare:{n}"'}
            try:
                status = post(body, headers)
            except Exception as exc:  # reported below, not as a thread's traceback
                failures.append(type(exc).__name__)
                return
            if status >= 300:
                failures.append(str(status))

    started, cpu = time.perf_counter(), time.process_time()
    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    shared.close()
    if failures:
        raise SystemExit(f"{len(failures)} requests failed: {sorted(set(failures))}")
    print(
        json.dumps(
            {
                "client": args.client,
                "seconds": seconds,
                "records_per_s": args.records / seconds,
                "cpu_ms_per_request": 1000 * cpu / args.records,
            }
        )
    )


if __name__ == "__main__":
    main()
