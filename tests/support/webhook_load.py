"""A load of signed webhook deliveries for ``flowyard serve``: made here, sent by wrk (a
real load client, with a Lua script) as a platform would (again until acknowledged);
every acknowledgement is recorded, so a test can check what was acknowledged against what
reached the target. :func:`send_paced` sends at a steady rate instead (the end-to-end
latency benchmark).

::

    deliveries = make_deliveries(20_000, duplicates=0.1, secret=SECRET)
    acks, report = send_with_wrk(url + path, deliveries, tmp_path, connections=16, delay_ms=20)
    # acks: [(event_id, "accepted" | "duplicate"), ...] of the 200 answers; report: wrk's

wrk is Debian's ``wrk`` package: a test asks for it with
``tests.support.system.program("wrk", package="wrk")``, which installs it where it may.
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import random
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from engine.serve.signatures import sign

# One request per line of the requests file: event id, the signature headers as JSON, the
# body (JSON on one line). Each wrk thread sends the lines whose number modulo the thread
# count is its own; then, as a platform retries, the ones whose event no answer has
# acknowledged yet (wrk sends no request twice by itself: one written to a server that was
# just killed fails, and wrk goes on with the next), until each of its events is
# acknowledged; then a few GET /healthz fillers (their answers ignored) and it is done.
WRK_SCRIPT = r"""
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

function init(args)
  nthreads = tonumber(args[1])
  path = args[2]
  local requests_file = args[3]
  out_dir = args[4]
  mine, acked, events, left = {}, {}, {}, 0
  local n = 0
  for line in io.lines(requests_file) do
    if n % nthreads == id then
      local event, headers, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
      local h = {["Content-Type"] = "application/json"}
      for k, v in headers:gmatch('"([^"]+)": "([^"]*)"') do h[k] = v end
      table.insert(mine, {event = event, request = wrk.format("POST", path, h, body)})
      if not events[event] then events[event] = true; left = left + 1 end
    end
    n = n + 1
  end
  next_one, pass, fillers = 1, 0, 0
  acks = io.open(out_dir .. "/acks-" .. id .. ".tsv", "w")
  acks:setvbuf("line")
end

function delay()
  return tonumber(os.getenv("WEBHOOK_LOAD_DELAY_MS") or "0")
end

local function filler()
  fillers = fillers + 1
  if fillers == 64 then
    -- wrk itself runs for its whole -d: this file tells the caller to stop it now
    local done = io.open(out_dir .. "/done-" .. id, "w")
    done:close()
  end
  return wrk.format("GET", "/healthz")
end

function request()
  if id == 0 and not verified then
    -- wrk calls thread 0's request() once at start-up to look at it, and sends nothing
    verified = true
    return wrk.format("GET", "/healthz")
  end
  -- the first pass sends every delivery (duplicates too); later passes send again, as a
  -- platform retries, the events not acknowledged yet (lost while the server was down)
  for _ = 1, #mine do
    if left == 0 then return filler() end
    if next_one > #mine then next_one, pass = 1, pass + 1 end
    local item = mine[next_one]
    next_one = next_one + 1
    if pass == 0 or not acked[item.event] then return item.request end
  end
  return filler()
end

function response(status, headers, body)
  local state, event = body:match('"status":"(%a+)","event_id":"([^"]+)"')
  if event then
    acks:write(event .. "\t" .. state .. "\t" .. status .. "\n")
    if status == 200 and events[event] and not acked[event] then
      acked[event] = true
      left = left - 1
    end
  elseif status ~= 200 then
    acks:write("-\t-\t" .. status .. "\n")
  end
end
"""


@dataclass(frozen=True)
class Delivery:
    event_id: str
    body: bytes
    headers: dict[str, str]


def make_deliveries(
    count: int, *, duplicates: float, secret: str, seed: int = 14, topic: str = "orders/create"
) -> list[Delivery]:
    """``count`` deliveries of which about ``duplicates`` are repeats of earlier events
    (the same id, body and signature, later in the order, as a platform re-delivers)."""
    rng = random.Random(seed)
    unique = count - int(count * duplicates)
    made: list[Delivery] = []
    for n in range(unique):
        event = f"ev-{n:06d}"
        body = json.dumps(
            {
                "id": 5_234_567_890_000_000_000 + n,
                "name": f"#{10_000 + n}",
                "email": f"buyer{n}@example.com",
                "currency": "EUR",
                "financial_status": "paid",
                "total_price": f"{n % 500}.{n % 100:02d}",
                "event": event,
            },
            separators=(",", ":"),
        ).encode()
        made.append(
            Delivery(event, body, sign("shopify", secret, body, event_id=event, topic=topic))
        )
    for _ in range(count - unique):
        i = rng.randrange(len(made))
        made.insert(rng.randrange(i + 1, len(made) + 1), made[i])
    return made


def write_requests(path: Path, deliveries: list[Delivery]) -> Path:
    with path.open("w", encoding="utf-8") as out:
        for d in deliveries:
            out.write(f"{d.event_id}\t{json.dumps(d.headers)}\t{d.body.decode()}\n")
    return path


def send_with_wrk(
    url: str,
    deliveries: list[Delivery],
    workdir: Path,
    *,
    wrk: str = "wrk",
    connections: int = 16,
    threads: int = 2,
    delay_ms: int = 0,
    duration_s: int = 600,
) -> tuple[list[tuple[str, str]], str]:
    """Send every delivery with wrk; returns the acknowledgements and wrk's report."""
    base, _, path = url.partition("//")[2].partition("/")
    workdir.mkdir(parents=True, exist_ok=True)
    requests = write_requests(workdir / "requests.tsv", deliveries)
    script = workdir / "webhooks.lua"
    script.write_text(WRK_SCRIPT, encoding="utf-8")
    for old in [*workdir.glob("acks-*.tsv"), *workdir.glob("done-*")]:
        old.unlink()
    proc = subprocess.Popen(
        [
            wrk,
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{duration_s}s",
            "--timeout",
            "10s",
            "--latency",
            "-s",
            str(script),
            f"http://{base}",
            "--",
            str(threads),
            "/" + path,
            str(requests),
            str(workdir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "WEBHOOK_LOAD_DELAY_MS": str(delay_ms)},
    )
    deadline = time.monotonic() + duration_s + 30
    while proc.poll() is None and time.monotonic() < deadline:
        if len(list(workdir.glob("done-*"))) >= threads:
            proc.send_signal(signal.SIGINT)  # wrk prints its report and exits
            break
        time.sleep(0.1)
    report, _ = proc.communicate(timeout=60)
    return read_acks(workdir), report


def read_acks(workdir: Path) -> list[tuple[str, str]]:
    """``(event id, accepted | duplicate)`` of each 200 answer wrk's threads recorded."""
    acks: list[tuple[str, str]] = []
    for f in sorted(workdir.glob("acks-*.tsv")):
        for line in f.read_text(encoding="utf-8").splitlines():
            event, state, status = line.split("\t")
            if status == "200" and event != "-":
                acks.append((event, state))
    return acks


def answer_statuses(workdir: Path) -> dict[str, int]:
    """How many answers of each HTTP status wrk's threads recorded (fillers aside)."""
    counts: dict[str, int] = {}
    for f in sorted(workdir.glob("acks-*.tsv")):
        for line in f.read_text(encoding="utf-8").splitlines():
            status = line.split("\t")[2]
            counts[status] = counts.get(status, 0) + 1
    return counts


def send_paced(
    url: str, deliveries: list[Delivery], *, rate: float, senders: int = 16, timeout: float = 10.0
) -> list[tuple[str, int, float, float]]:
    """Send the deliveries at a steady ``rate`` per second: each is due at its own time
    (an open loop: a slow answer does not hold back the next delivery, up to ``senders``
    in flight, each sender a thread with a kept-alive connection). Returns ``(event id,
    status, sent at, answered at)`` per delivery in wall-clock seconds, status 0 when no
    answer came."""
    parts = urlsplit(url)
    due: queue.Queue[tuple[int, Delivery] | None] = queue.Queue()
    answers: list[tuple[str, int, float, float] | None] = [None] * len(deliveries)

    def sender() -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        while (item := due.get()) is not None:
            n, d = item
            sent = time.time()
            try:
                conn.request("POST", parts.path, body=d.body, headers=d.headers)
                answer = conn.getresponse()
                answer.read()
                answers[n] = (d.event_id, answer.status, sent, time.time())
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
                answers[n] = (d.event_id, 0, sent, time.time())
        conn.close()

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(senders)]
    for t in threads:
        t.start()
    start = time.monotonic() + 0.1
    for n, d in enumerate(deliveries):
        time.sleep(max(0.0, start + n / rate - time.monotonic()))
        due.put((n, d))
    for _ in threads:
        due.put(None)
    for t in threads:
        t.join()
    return [a for a in answers if a is not None]
