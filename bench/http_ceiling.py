"""The HTTP benchmark's ceiling: a bare threaded httpx client, no engine, same server.

    .venv/bin/python bench/http_ceiling.py URL --records N --concurrency C

``C`` threads share one ``httpx.Client`` (as the engine's http connector does) and POST
``N`` small JSON bodies to ``URL/orders``, each with its own ``Idempotency-Key``. Prints
``{"seconds": ..., "records_per_s": ...}``. bench/run.py http runs it next to the engine,
so the figure says how much of concurrency/latency this machine's Python, httpx and
the test server allow before any engine work.
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import httpx


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url")
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    args = parser.parse_args(argv)
    client = httpx.Client(base_url=args.url, timeout=10)
    numbers = iter(range(args.records))
    lock = threading.Lock()
    failures = []

    def worker() -> None:
        while True:
            with lock:
                n = next(numbers, None)
            if n is None:
                return
            body = json.dumps({"order_id": f"bare:{n}", "lines": [{"sku": "TEE", "qty": 1}]})
            response = client.post(
                "/orders",
                content=body,
                headers={"Content-Type": "application/json", "Idempotency-Key": f'"bare:{n}"'},
            )
            if response.status_code >= 300:
                failures.append(response.status_code)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    client.close()
    if failures:
        raise SystemExit(f"{len(failures)} requests failed: {sorted(set(failures))}")
    print(json.dumps({"seconds": seconds, "records_per_s": args.records / seconds}))


if __name__ == "__main__":
    main()
