"""A scriptable HTTP test target (stand-in for an ERP / web shop), stdlib only.

Listens on 127.0.0.1 and can be told to be slow, flaky, to hang, refuse, or to apply a
request and then drop the connection. Used by the engine's tests, fault-injection and
crash tests and the benchmarks.

Two ways to run it
------------------
In process::

    with Target(state_dir=tmp_path, latency_ms=0) as t:      # or t = Target().start(); t.stop()
        t.script([{"status": 503}, {"drop_after_apply": True}])
        ...post to t.url + "/orders"...
        assert len(t.applied) == 1

As its own process (crash tests, benchmarks)::

    python -m tests.support.target --port 0 --state-dir DIR [--latency-ms 20]
                                   [--fail-rate 0.3 --seed 1] [--ignore-idempotency-key]
                                   [--require-idempotency-key]

prints exactly one line ``READY http://127.0.0.1:PORT`` (flushed) once listening, then serves
until SIGTERM/SIGINT. ``spawn_target(tmp_path, **kw) -> (proc, url)`` does this and waits for
READY; ``stop_target(proc)`` ends it; ``RemoteTarget(url)`` drives the control API below with
the same method names as ``Target``.

Ordinary requests (any path not under ``/_control/``)
-----------------------------------------------------
* POST / PUT / PATCH / DELETE are *applied*: the JSON body (empty body -> ``null``; invalid
  JSON -> 400, not applied) is appended to the applied log and answered 201 (POST) or 200
  with ``{"id": <sequential int from 1>, "received": <body>, "path": "<path>"}``.
* GET answers from a per-path fixture (``set_get(path, body, headers=None, status=200)``);
  the full request target (path + query) is matched first, then the bare path; default 404.
* Every non-control request is recorded in ``requests`` (including refused, dropped, hung
  ones): ``{"n", "method", "path", "query", "headers" (lower-case names), "body" (raw text),
  "idempotency_key", "time", "outcome"}``. ``outcome`` is one of ``applied``, ``replayed``,
  ``conflict_409``, ``mismatch_422``, ``missing_key_400``, ``invalid_json``, ``status_<n>``,
  ``applied_status_<n>``, ``dropped``, ``applied_dropped``, ``hung``, ``get``, ``echoed``,
  ``interrupted`` (stopped mid-request), or ``None`` while still in progress.

Applied log
-----------
Each applied request is one dict ``{"id", "method", "path", "idempotency_key", "body",
"time", "status"}`` in ``Target.applied`` and, if a state dir is given, one JSON line in
``DIR/applied.jsonl``, written with a single ``os.write`` on an O_APPEND fd and ``os.fsync``-ed
*before* any response is sent. ``read_applied(state_dir)`` reads it back. A target started on
a state dir that already has an ``applied.jsonl`` continues from it: ids go on, and the
idempotency keys in it are honoured (so a restarted target still replays).

Idempotency (IETF httpapi Idempotency-Key draft / Stripe style)
----------------------------------------------------------------
The ``Idempotency-Key`` header value is taken with one pair of surrounding double quotes
stripped (the draft sends it as a structured-field string, ``"abc"`` == ``abc``). The
fingerprint is method + path + canonical JSON of the body.

* first request with a key: applied, response stored;
* repeat, same fingerprint, original finished: the stored status/body is returned with the
  header ``Idempotent-Replayed: true`` and nothing is applied;
* repeat, different fingerprint: 422; repeat while the original is still in progress
  (e.g. during its ``delay``/latency): 409;
* injected faults that happen *before* processing (``status`` without ``after_apply``,
  ``drop``, ``hang``, random ``fail_rate`` 503s) do not store anything for the key, so a
  retry is processed normally;
* ``ignore_idempotency_key=True`` applies every request (a target that ignores the header);
  ``require_idempotency_key=True`` answers 400 to a write without the header.

Fault scripting
---------------
``script([...])`` / ``POST /_control/script`` appends behaviours to a queue. Each incoming
non-control request consumes the first queued behaviour that matches it (optional ``path``
and ``method`` keys restrict which requests match); with no match the request is served
normally, except that with ``fail_rate`` > 0 a seeded RNG answers 503 to that fraction.
Behaviour keys:

* ``{"status": 503}`` answer that status without applying; body
  ``{"error": "injected", "status": 503}`` unless ``"body": {...}`` is given; ``"retry_after": 2``
  sets ``Retry-After``; ``"headers": {...}`` adds headers;
* ``{"status": 502, "after_apply": true}`` apply (and store the success for the key), then
  answer the status anyway (a gateway that lost the upstream's answer);
* ``{"delay": 1.5}`` sleep (inside the in-progress window for the key), then answer
  normally; combines with the other keys;
* ``{"hang": true}`` never answer: wait until the client closes the connection, ``stop()``,
  or ``hang_max_s`` (default 60 s), then close without a response; nothing applied;
* ``{"drop_after_apply": true}`` apply and fsync the log, then close the socket with no
  response;
* ``{"drop": true}`` close the socket with no response, nothing applied;
* ``{"echo": "json"}`` (or ``"text"``) answer the request as received, nothing applied:
  ``{"method", "path", "query" (raw), "headers" (lower-case names), "body" (raw text)}``
  as JSON, or that JSON as ``text/plain`` (so a client stores it as text, escapes and
  all); with ``status``, that status (a refusal that quotes the request back);
* ``{"times": 3, ...}`` the behaviour is queued three times;
* ``{"path": "/orders", "method": "POST", ...}`` only requests with that path (without the
  query string) / method consume it.

Control API (HTTP, JSON in and out; never scripted, never delayed, never recorded)
---------------------------------------------------------------------------------
* ``POST /_control/script``   body: list of behaviours (appended) -> ``{"queued": n}``
* ``GET  /_control/script``   the behaviours still queued
* ``POST /_control/reset``    clear applied (memory *and* ``applied.jsonl``), requests,
  idempotency keys, script, GET fixtures, ids; the config is kept
* ``GET  /_control/applied``  list of applied entries
* ``GET  /_control/requests`` list of recorded requests
* ``POST /_control/config``   any of ``{"latency_ms", "fail_rate", "seed",
  "ignore_idempotency_key", "require_idempotency_key", "hang_max_s"}`` -> the whole config;
  a ``seed`` re-seeds the RNG. ``GET /_control/config`` returns it.
* ``POST /_control/get``      ``{"path", "body", "headers"?, "status"?}`` sets a GET fixture
* ``GET  /_control/health``   ``{"ok": true}``

``latency_ms`` is added to every non-control request (for a write it is spent inside the
in-progress window, so concurrent duplicates see 409).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "Target",
    "RemoteTarget",
    "spawn_target",
    "stop_target",
    "read_applied",
    "APPLIED_FILE",
]

APPLIED_FILE = "applied.jsonl"
REPO_ROOT = Path(__file__).resolve().parents[2]

_WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
_BEHAVIOUR_KEYS = {
    "status",
    "retry_after",
    "body",
    "headers",
    "delay",
    "hang",
    "drop_after_apply",
    "drop",
    "after_apply",
    "echo",
    "path",
    "method",
    "times",
}
_CONFIG_KEYS = {
    "latency_ms",
    "fail_rate",
    "seed",
    "ignore_idempotency_key",
    "require_idempotency_key",
    "hang_max_s",
}


def read_applied(state_dir: str | os.PathLike) -> list[dict]:
    """Read ``DIR/applied.jsonl`` back (an absent file is an empty log).

    A torn last line (cannot happen with this server, but be lenient) is skipped.
    """
    path = Path(state_dir) / APPLIED_FILE
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _normalize_key(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return value


def _fingerprint(method: str, path: str, body: Any) -> str:
    return json.dumps([method, path, body], sort_keys=True, separators=(",", ":"))


def _validate_behaviours(behaviours: Any) -> list[dict]:
    if isinstance(behaviours, dict):
        behaviours = [behaviours]
    if not isinstance(behaviours, list):
        raise ValueError("script must be a JSON list of behaviour objects")
    out: list[dict] = []
    for b in behaviours:
        if not isinstance(b, dict):
            raise ValueError(f"behaviour must be an object, got {b!r}")
        unknown = set(b) - _BEHAVIOUR_KEYS
        if unknown:
            raise ValueError(
                f"unknown behaviour key(s) {sorted(unknown)}; known: {sorted(_BEHAVIOUR_KEYS)}"
            )
        if "status" in b and not isinstance(b["status"], int):
            raise ValueError("'status' must be an int")
        if b.get("after_apply") and "status" not in b:
            raise ValueError("'after_apply' needs a 'status'")
        if b.get("echo") not in (None, "json", "text"):
            raise ValueError("'echo' is 'json' or 'text'")
        times = int(b.get("times", 1))
        one = {k: v for k, v in b.items() if k != "times"}
        if "method" in one:
            one["method"] = str(one["method"]).upper()
        out.extend(copy.deepcopy(one) for _ in range(times))
    return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default 5 drops connections under benchmark concurrency
    target: Target


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "flowyard-test-target/1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass

    def setup(self) -> None:
        super().setup()
        # headers and body go out in two writes; without this, Nagle + delayed ACK add
        # ~40 ms to every keep-alive response
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.target._track(self)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.target._untrack(self)

    def _dispatch(self) -> None:
        try:
            self.server.target._handle(self)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True
        except OSError:
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _dispatch


class Target:
    """The in-process test target. See the module docstring for the behaviour."""

    def __init__(
        self,
        state_dir: str | os.PathLike | None = None,
        *,
        latency_ms: float = 0,
        fail_rate: float = 0.0,
        seed: int | None = 0,
        ignore_idempotency_key: bool = False,
        require_idempotency_key: bool = False,
        hang_max_s: float = 60.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.host = host
        self.port = port
        self._config: dict[str, Any] = {
            "latency_ms": latency_ms,
            "fail_rate": fail_rate,
            "seed": seed,
            "ignore_idempotency_key": ignore_idempotency_key,
            "require_idempotency_key": require_idempotency_key,
            "hang_max_s": hang_max_s,
        }
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._file_lock = threading.Lock()
        self._stopping = threading.Event()
        self._applied: list[dict] = []
        self._requests: list[dict] = []
        self._keys: dict[str, dict] = {}
        self._script: list[dict] = []
        self._gets: dict[str, tuple[int, Any, dict]] = {}
        self._next_id = 1
        self._next_req = 1
        self._handlers: dict[int, tuple[_Handler, threading.Thread]] = {}
        self._fd: int | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._url: str | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("target not started")
        return self._url

    def start(self) -> Target:
        if self.state_dir is not None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._load_existing()
            self._fd = os.open(
                self.state_dir / APPLIED_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
            )
        self._server = _Server((self.host, self.port), _Handler)
        self._server.target = self
        self._url = f"http://{self.host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="test-target",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop quickly: release hung/delayed handlers, close every connection."""
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            handlers = list(self._handlers.values())
        for h, _ in handlers:
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for _, th in handlers:
            th.join(max(0.0, deadline - time.monotonic()))
        with self._file_lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        self._server = None

    def __enter__(self) -> Target:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _track(self, h: _Handler) -> None:
        with self._lock:
            self._handlers[id(h)] = (h, threading.current_thread())

    def _untrack(self, h: _Handler) -> None:
        with self._lock:
            self._handlers.pop(id(h), None)

    def _load_existing(self) -> None:
        assert self.state_dir is not None
        for e in read_applied(self.state_dir):
            self._applied.append(e)
            self._next_id = max(self._next_id, int(e.get("id", 0)) + 1)
            key = e.get("idempotency_key")
            if key is not None and key not in self._keys:
                self._keys[key] = {
                    "state": "done",
                    "fp": _fingerprint(e["method"], e["path"], e["body"]),
                    "status": e.get("status", 201 if e["method"] == "POST" else 200),
                    "response": {"id": e["id"], "received": e["body"], "path": e["path"]},
                }

    # ------------------------------------------------------------------ public state
    @property
    def applied(self) -> list[dict]:
        """A snapshot of the applied entries, in order of application."""
        with self._lock:
            return copy.deepcopy(self._applied)

    @property
    def requests(self) -> list[dict]:
        """A snapshot of every non-control request received."""
        with self._lock:
            return copy.deepcopy(self._requests)

    @property
    def config(self) -> dict:
        with self._lock:
            return dict(self._config)

    def configure(self, **kw: Any) -> dict:
        unknown = set(kw) - _CONFIG_KEYS
        if unknown:
            raise ValueError(
                f"unknown config key(s) {sorted(unknown)}; known: {sorted(_CONFIG_KEYS)}"
            )
        with self._lock:
            self._config.update(kw)
            if "seed" in kw:
                self._rng = random.Random(kw["seed"])
            return dict(self._config)

    def script(self, behaviours: Iterable[dict] | dict) -> int:
        """Append behaviours to the fault queue; returns the queue length."""
        items = _validate_behaviours(
            behaviours if isinstance(behaviours, dict | list) else list(behaviours)
        )
        with self._lock:
            self._script.extend(items)
            return len(self._script)

    @property
    def pending_script(self) -> list[dict]:
        with self._lock:
            return copy.deepcopy(self._script)

    def clear_script(self) -> None:
        with self._lock:
            self._script.clear()

    def set_get(self, path: str, body: Any, headers: dict | None = None, status: int = 200) -> None:
        """Serve ``body`` (JSON) to GET ``path`` (exact path+query, or bare path)."""
        with self._lock:
            self._gets[path] = (status, body, dict(headers or {}))

    def reset(self) -> None:
        """Forget applied (memory and file), requests, keys, script and GET fixtures."""
        with self._lock:
            self._applied.clear()
            self._requests.clear()
            self._keys.clear()
            self._script.clear()
            self._gets.clear()
            self._next_id = 1
            self._next_req = 1
            with self._file_lock:
                if self._fd is not None:
                    os.ftruncate(self._fd, 0)
                    os.fsync(self._fd)

    # ------------------------------------------------------------------ serving
    def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopping; True if the full time elapsed."""
        if seconds <= 0:
            return not self._stopping.is_set()
        return not self._stopping.wait(seconds)

    def _next_behaviour(self, method: str, path: str) -> dict:
        with self._lock:
            for i, b in enumerate(self._script):
                if "path" in b and b["path"] != path:
                    continue
                if "method" in b and b["method"] != method:
                    continue
                return self._script.pop(i)
            rate = float(self._config.get("fail_rate") or 0)
            if rate > 0 and self._rng.random() < rate:
                return {"status": 503, "body": {"error": "random failure", "status": 503}}
        return {}

    @staticmethod
    def _read_body(h: _Handler) -> bytes:
        if h.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size_line = h.rfile.readline()
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(h.rfile.read(size))
                h.rfile.readline()
            return b"".join(chunks)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        if len(body) < length:
            # the client went away mid-request (killed): a real server never acts on it
            raise ConnectionResetError("request body shorter than its Content-Length")
        return body

    @staticmethod
    def _send(
        h: _Handler,
        status: int,
        body: Any,
        headers: dict | None = None,
        raw: bool = False,
        content_type: str = "application/json",
    ) -> None:
        data = body if raw else json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, str(v))
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)

    @staticmethod
    def _drop(h: _Handler) -> None:
        """Close the connection without a byte of response."""
        h.close_connection = True
        try:
            h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _hang(self, h: _Handler) -> None:
        """Never answer: wait until the client goes away, stop(), or hang_max_s."""
        deadline = time.monotonic() + float(self._config.get("hang_max_s", 60.0))
        sock = h.connection
        while not self._stopping.is_set() and time.monotonic() < deadline:
            try:
                readable, _, _ = select.select([sock], [], [], 0.05)
                if readable:
                    if sock.recv(1, socket.MSG_PEEK) == b"":
                        break  # client closed
                    self._stopping.wait(0.05)  # pipelined data: keep hanging, don't spin
            except (OSError, ValueError):
                break
        self._drop(h)

    def _fault_response(self, h: _Handler, b: dict) -> None:
        status = b["status"]
        body = b.get("body", {"error": "injected", "status": status})
        headers = dict(b.get("headers") or {})
        if "retry_after" in b:
            headers["Retry-After"] = b["retry_after"]
        self._send(h, status, body, headers)

    def _apply(self, method: str, path: str, key: str | None, body: Any, status: int) -> dict:
        with self._lock:
            entry = {
                "id": self._next_id,
                "method": method,
                "path": path,
                "idempotency_key": key,
                "body": body,
                "time": time.time(),
                "status": status,
            }
            self._next_id += 1
            self._applied.append(entry)
            line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
            # the write is ordered with the ids (under the lock); the fsync is not
            with self._file_lock:
                fd = self._fd
                if fd is not None:
                    os.write(fd, line)
        if fd is not None:
            # outside the locks, so concurrent appliers share the disk wait; stop() joins
            # handler threads before it closes the fd
            os.fsync(fd)
        return entry

    def _handle(self, h: _Handler) -> None:
        split = urlsplit(h.path)
        path, query = split.path or "/", split.query
        method = h.command
        raw = self._read_body(h)
        if path.startswith("/_control/"):
            self._control(h, method, path, raw)
            return

        key = _normalize_key(h.headers.get("Idempotency-Key"))
        with self._lock:
            rec = {
                "n": self._next_req,
                "method": method,
                "path": path,
                "query": query,
                "headers": {k.lower(): v for k, v in h.headers.items()},
                "body": raw.decode("utf-8", "replace"),
                "idempotency_key": key,
                "time": time.time(),
                "outcome": None,
            }
            self._next_req += 1
            self._requests.append(rec)
            cfg = dict(self._config)

        def outcome(o: str) -> None:
            with self._lock:
                rec["outcome"] = o

        b = self._next_behaviour(method, path)
        latency = float(cfg.get("latency_ms") or 0) / 1000.0
        delay = float(b.get("delay") or 0)

        if b.get("drop"):
            self._sleep(delay)
            outcome("dropped")
            self._drop(h)
            return
        if b.get("hang"):
            outcome("hung")
            self._hang(h)
            return
        if b.get("echo"):
            self._sleep(latency + delay)
            outcome("echoed")
            echoed = {
                "method": method,
                "path": path,
                "query": query,
                "headers": rec["headers"],
                "body": rec["body"],
            }
            if b["echo"] == "text":
                text = json.dumps(echoed).encode()
                self._send(h, b.get("status", 200), text, raw=True, content_type="text/plain")
            else:
                self._send(h, b.get("status", 200), echoed)
            return

        if method not in _WRITE_METHODS:  # GET / HEAD
            if not self._sleep(latency + delay):
                outcome("interrupted")
                self._drop(h)
                return
            if "status" in b:
                outcome(f"status_{b['status']}")
                self._fault_response(h, b)
                return
            with self._lock:
                fixture = self._gets.get(h.path) or self._gets.get(path)
            outcome("get")
            if fixture is None:
                self._send(h, 404, {"error": "not found", "path": path})
            else:
                status, body, headers = fixture
                self._send(h, status, body, headers)
            return

        if "status" in b and not b.get("after_apply"):
            if not self._sleep(latency + delay):
                outcome("interrupted")
                self._drop(h)
                return
            outcome(f"status_{b['status']}")
            self._fault_response(h, b)
            return

        try:
            body = json.loads(raw) if raw.strip() else None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            self._sleep(latency)
            outcome("invalid_json")
            self._send(h, 400, {"error": f"invalid JSON body: {e}"})
            return

        ignore = bool(cfg.get("ignore_idempotency_key"))
        if key is None and cfg.get("require_idempotency_key"):
            self._sleep(latency)
            outcome("missing_key_400")
            self._send(h, 400, {"error": "Idempotency-Key header is required"})
            return

        fp = _fingerprint(method, path, body)
        use_key = key is not None and not ignore
        if use_key:
            with self._lock:
                st = self._keys.get(key)
                if st is None:
                    self._keys[key] = {"state": "processing", "fp": fp}
                else:
                    st = dict(st)
            if st is not None:
                self._sleep(latency)
                if st["fp"] != fp:
                    outcome("mismatch_422")
                    self._send(h, 422, {"error": "Idempotency-Key reused with a different payload"})
                elif st["state"] == "processing":
                    outcome("conflict_409")
                    self._send(
                        h, 409, {"error": "a request with this Idempotency-Key is in progress"}
                    )
                else:
                    outcome("replayed")
                    self._send(h, st["status"], st["response"], {"Idempotent-Replayed": "true"})
                return

        if not self._sleep(latency + delay):
            if use_key:
                with self._lock:
                    self._keys.pop(key, None)
            outcome("interrupted")
            self._drop(h)
            return

        status = 201 if method == "POST" else 200
        entry = self._apply(method, path, key, body, status)
        response = {"id": entry["id"], "received": body, "path": path}
        if use_key:
            with self._lock:
                self._keys[key] = {
                    "state": "done",
                    "fp": fp,
                    "status": status,
                    "response": response,
                }

        if b.get("drop_after_apply"):
            outcome("applied_dropped")
            self._drop(h)
        elif "status" in b:  # after_apply
            outcome(f"applied_status_{b['status']}")
            self._fault_response(h, b)
        else:
            outcome("applied")
            self._send(h, status, response)

    def _control(self, h: _Handler, method: str, path: str, raw: bytes) -> None:
        name = path[len("/_control/") :].strip("/")
        try:
            payload = json.loads(raw) if raw.strip() else None
        except json.JSONDecodeError as e:
            self._send(h, 400, {"error": f"invalid JSON: {e}"})
            return
        try:
            if name == "health":
                self._send(h, 200, {"ok": True})
            elif name == "script" and method == "POST":
                n = self.script(payload if payload is not None else [])
                self._send(h, 200, {"queued": n})
            elif name == "script" and method == "GET":
                self._send(h, 200, self.pending_script)
            elif name == "reset" and method == "POST":
                self.reset()
                self._send(h, 200, {"ok": True})
            elif name == "applied" and method == "GET":
                self._send(h, 200, self.applied)
            elif name == "requests" and method == "GET":
                self._send(h, 200, self.requests)
            elif name == "config" and method == "POST":
                if not isinstance(payload, dict):
                    raise ValueError("config must be a JSON object")
                self._send(h, 200, self.configure(**payload))
            elif name == "config" and method == "GET":
                self._send(h, 200, self.config)
            elif name == "get" and method == "POST":
                if not isinstance(payload, dict) or "path" not in payload:
                    raise ValueError('expected {"path": ..., "body": ...}')
                self.set_get(
                    payload["path"],
                    payload.get("body"),
                    payload.get("headers"),
                    int(payload.get("status", 200)),
                )
                self._send(h, 200, {"ok": True})
            else:
                self._send(h, 404, {"error": f"unknown control endpoint {method} {path}"})
        except (ValueError, TypeError) as e:
            self._send(h, 400, {"error": str(e)})


# ---------------------------------------------------------------------- remote control
class RemoteTarget:
    """Drive a target (usually a subprocess) through its control API; stdlib urllib."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _call(self, method: str, name: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(
            f"{self.url}/_control/{name}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"control {method} {name}: {e.code} {e.read()!r}") from None

    def script(self, behaviours: list[dict] | dict) -> int:
        return self._call("POST", "script", behaviours)["queued"]

    @property
    def pending_script(self) -> list[dict]:
        return self._call("GET", "script")

    def reset(self) -> None:
        self._call("POST", "reset", {})

    def configure(self, **kw: Any) -> dict:
        return self._call("POST", "config", kw)

    @property
    def config(self) -> dict:
        return self._call("GET", "config")

    @property
    def applied(self) -> list[dict]:
        return self._call("GET", "applied")

    @property
    def requests(self) -> list[dict]:
        return self._call("GET", "requests")

    def set_get(self, path: str, body: Any, headers: dict | None = None, status: int = 200) -> None:
        self._call(
            "POST", "get", {"path": path, "body": body, "headers": headers, "status": status}
        )

    def health(self) -> bool:
        return bool(self._call("GET", "health").get("ok"))


# ---------------------------------------------------------------------- subprocess mode
def spawn_target(
    tmp_path: str | os.PathLike,
    *,
    state_dir: str | os.PathLike | None = None,
    latency_ms: float = 0,
    fail_rate: float = 0.0,
    seed: int | None = None,
    ignore_idempotency_key: bool = False,
    require_idempotency_key: bool = False,
    port: int = 0,
    timeout: float = 10.0,
) -> tuple[subprocess.Popen, str]:
    """Start ``python -m tests.support.target`` and wait for READY.

    The state dir defaults to ``tmp_path`` itself (so ``read_applied(tmp_path)`` works);
    the child's stderr goes to ``tmp_path/target.stderr.log``. End it with
    ``stop_target(proc)``.
    """
    tmp_path = Path(tmp_path)
    tmp_path.mkdir(parents=True, exist_ok=True)
    sd = Path(state_dir) if state_dir is not None else tmp_path
    cmd = [
        sys.executable,
        "-m",
        "tests.support.target",
        "--port",
        str(port),
        "--state-dir",
        str(sd),
        "--latency-ms",
        str(latency_ms),
        "--fail-rate",
        str(fail_rate),
    ]
    if seed is not None:
        cmd += ["--seed", str(seed)]
    if ignore_idempotency_key:
        cmd.append("--ignore-idempotency-key")
    if require_idempotency_key:
        cmd.append("--require-idempotency-key")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    stderr_path = tmp_path / "target.stderr.log"
    with open(stderr_path, "ab") as err:
        proc = subprocess.Popen(
            cmd,
            cwd=str(REPO_ROOT),
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
    result: list[bytes] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    line = result[0].decode().strip() if result else ""
    if not line.startswith("READY "):
        proc.kill()
        proc.wait(5)
        raise RuntimeError(
            f"test target did not become ready within {timeout}s (got {line!r}); "
            f"stderr: {stderr_path.read_text(errors='replace')[-2000:]}"
        )
    return proc, line.split(" ", 1)[1]


def stop_target(proc: subprocess.Popen, timeout: float = 5.0) -> int:
    """SIGTERM the spawned target, SIGKILL if it does not exit in time; returns its code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.support.target", description=__doc__.split("\n")[0]
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--state-dir", default=None)
    p.add_argument("--latency-ms", type=float, default=0)
    p.add_argument("--fail-rate", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hang-max-s", type=float, default=60.0)
    p.add_argument("--ignore-idempotency-key", action="store_true")
    p.add_argument("--require-idempotency-key", action="store_true")
    a = p.parse_args(argv)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    t = Target(
        a.state_dir,
        latency_ms=a.latency_ms,
        fail_rate=a.fail_rate,
        seed=a.seed,
        ignore_idempotency_key=a.ignore_idempotency_key,
        require_idempotency_key=a.require_idempotency_key,
        hang_max_s=a.hang_max_s,
        host=a.host,
        port=a.port,
    ).start()
    print(f"READY {t.url}", flush=True)
    while not stop.wait(0.2):
        pass
    t.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
