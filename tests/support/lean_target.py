"""A lean HTTP target for the send benchmarks: the stand-in ERP of tests/support/target.py
without its fault scripting, on one thread with asyncio.

tests/support/target.py serves each connection on a thread of its own with
``http.server``, and needs 0.6-0.7 ms of CPU per 2-3 kB order it applies: at 800 sends a
second, 40 % of one of the two cores the benchmark machine has, taken from the engine it
measures (docs/benchmarks.md, section 6). This one answers the same requests in the same
way (a real HTTP/1.1 server on 127.0.0.1 with keep-alive, answering each write after
``--latency-ms``, applying it once per ``Idempotency-Key``) for a fraction of that CPU:

* POST / PUT / PATCH / DELETE: the JSON body is checked (invalid JSON: 400, not applied),
  applied and answered 201 (POST) or 200 with ``{"id": n, "received": <body>, "path":
  <path>}`` after the latency; the body is echoed as it came, not decoded and written again;
* a repeated ``Idempotency-Key`` with the same body: the stored answer with
  ``Idempotent-Replayed: true``, nothing applied; with another body: 422; while the first
  is still waiting out its latency: 409 (the fingerprint is the method, the path and the
  body's bytes, where target.py compares the decoded body);
* GET: 404, except the control API: ``GET /_control/applied`` (the applied log, as
  target.py's), ``GET /_control/stats`` (``{"most_at_once": n}``: the most requests it
  held at once since the last reset), ``GET /_control/health``, ``POST /_control/reset``; so
  :class:`tests.support.target.RemoteTarget` drives it for what the benchmark needs.

Run it as ``python -m tests.support.lean_target --port 0 [--latency-ms 20]``: it prints
``READY http://127.0.0.1:PORT`` once listening and serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import selectors
import signal
import sys
import time
from typing import Any

_WRITES = {b"POST", b"PUT", b"PATCH", b"DELETE"}
_REASONS = {200: b"OK", 201: b"Created", 400: b"Bad Request", 404: b"Not Found", 409: b"Conflict"}
_REASONS[422] = b"Unprocessable Entity"


class LeanTarget:
    """What the server keeps: the applied log and the idempotency keys."""

    def __init__(self, latency_ms: float = 0.0):
        self.latency = latency_ms / 1000.0
        self.reset()

    def reset(self) -> None:
        self.applied: list[dict[str, Any]] = []
        self.at_once = 0  # requests received and not answered yet
        self.most_at_once = 0
        # key -> (fingerprint, None while in progress, else (status, answer))
        self.keys: dict[str, tuple[bytes, tuple[int, bytes] | None]] = {}

    def write(
        self, method: bytes, path: bytes, key: str | None, body: bytes
    ) -> tuple[int, bytes, bool] | None:
        """What to answer a write at once (status, body, replayed), or None: apply it after
        the latency (:meth:`apply`)."""
        try:
            json.loads(body) if body.strip() else None
        except ValueError as exc:
            return 400, json.dumps({"error": f"invalid JSON body: {exc}"}).encode(), False
        if key is None:
            return None
        fingerprint = method + b" " + path + b" " + body
        known = self.keys.get(key)
        if known is None:
            self.keys[key] = (fingerprint, None)
            return None
        if known[0] != fingerprint:
            error = "Idempotency-Key reused with a different payload"
            return 422, json.dumps({"error": error}).encode(), False
        if known[1] is None:
            error = "a request with this Idempotency-Key is in progress"
            return 409, json.dumps({"error": error}).encode(), False
        return known[1][0], known[1][1], True

    def apply(self, method: bytes, path: bytes, key: str | None, body: bytes) -> tuple[int, bytes]:
        """Apply a write: its status and answer, kept for its key's repeats."""
        status = 201 if method == b"POST" else 200
        number = len(self.applied) + 1
        text_path = path.decode("latin-1")
        self.applied.append(
            {
                "id": number,
                "method": method.decode(),
                "path": text_path,
                "idempotency_key": key,
                "body": body.decode("utf-8", "replace"),
                "time": time.time(),
                "status": status,
            }
        )
        received = body if body.strip() else b"null"
        answer = b'{"id":%d,"received":%s,"path":%s}' % (
            number,
            received,
            json.dumps(text_path).encode(),
        )
        if key is not None:
            self.keys[key] = (self.keys[key][0], (status, answer))
        return status, answer


class _Connection(asyncio.Protocol):
    """One client connection: requests taken one at a time, in order."""

    def __init__(self, target: LeanTarget):
        self.target = target
        self.buffer = b""
        self.busy = False  # a request is waiting out its latency: the next ones wait
        self.close = False  # the request being answered asked to close the connection
        self.counted = False  # the request being answered counts in LeanTarget.at_once
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._next()

    def _next(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        lines = self.buffer[:end].split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get(b"content-length", b"0"))
        if len(self.buffer) < end + 4 + length:
            return
        body = self.buffer[end + 4 : end + 4 + length]
        self.buffer = self.buffer[end + 4 + length :]
        method, target, _ = (lines[0].split(b" ") + [b"", b""])[:3]
        path = target.split(b"?", 1)[0]
        self.busy = True
        self.close = headers.get(b"connection", b"").lower() == b"close"
        if path.startswith(b"/_control/"):
            self._control(method, path)
            return
        self.counted = True
        self.target.at_once += 1
        self.target.most_at_once = max(self.target.most_at_once, self.target.at_once)
        if method not in _WRITES:
            self._later(404, b'{"error":"not found"}')
        else:
            raw_key = headers.get(b"idempotency-key")
            key = raw_key.decode().strip().strip('"') if raw_key is not None else None
            now = self.target.write(method, path, key, body)
            if now is not None:
                self._later(now[0], now[1], replayed=now[2])
            else:
                loop = asyncio.get_running_loop()
                loop.call_later(self.target.latency, self._apply, method, path, key, body)

    def _apply(self, method: bytes, path: bytes, key: str | None, body: bytes) -> None:
        status, answer = self.target.apply(method, path, key, body)
        self._respond(status, answer)

    def _later(self, status: int, body: bytes, replayed: bool = False) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(self.target.latency, self._respond, status, body, replayed)

    def _control(self, method: bytes, path: bytes) -> None:
        name = path[len(b"/_control/") :].strip(b"/")
        if name == b"applied":
            self._respond(200, json.dumps(self.target.applied).encode())
        elif name == b"stats":
            self._respond(200, json.dumps({"most_at_once": self.target.most_at_once}).encode())
        elif name == b"health":
            self._respond(200, b'{"ok":true}')
        elif name == b"reset" and method == b"POST":
            self.target.reset()
            self._respond(200, b'{"ok":true}')
        else:
            self._respond(404, b'{"error":"no such control"}')

    def _respond(self, status: int, body: bytes, replayed: bool = False) -> None:
        if self.counted:
            self.counted = False
            self.target.at_once -= 1
        if self.transport is None:
            return
        head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n" % (
            status,
            _REASONS.get(status, b"Status"),
            len(body),
        )
        if replayed:
            head += b"Idempotent-Replayed: true\r\n"
        if self.close:
            head += b"Connection: close\r\n"
        self.transport.write(head + b"\r\n" + body)
        self.busy = False
        if self.close:
            self.transport.close()
        elif self.buffer:
            self._next()


async def serve(host: str, port: int, latency_ms: float) -> None:
    """Serve until SIGTERM or SIGINT, having printed the READY line."""
    target = LeanTarget(latency_ms)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(target), host, port, backlog=256)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()
    print(f"READY http://{bound[0]}:{bound[1]}", flush=True)
    await stop.wait()
    server.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.support.lean_target", description=__doc__.split("\n")[0]
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency-ms", type=float, default=0)
    a = p.parse_args(argv)
    # select() waits to the microsecond; epoll and poll round each wait up to the next
    # millisecond, which would answer 0.5 ms late on average (a few connections: select's
    # limit of 1024 descriptors is far off)
    with asyncio.Runner(
        loop_factory=lambda: asyncio.SelectorEventLoop(selectors.SelectSelector())
    ) as runner:
        runner.run(serve(a.host, a.port, a.latency_ms))
    return 0


if __name__ == "__main__":
    sys.exit(main())
