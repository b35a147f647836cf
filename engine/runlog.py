"""The run log: structlog JSON lines, one file per run, secrets redacted.

Every line carries ``run_id`` and ``flow`` and, where they apply, ``step``,
``record_key``, ``attempt``, ``duration_ms`` and ``outcome``. A run writes its own events
and, per record, only what needs a person: dead letters, review items, parked records,
retried calls, replays (:meth:`RunLog.event`). The other per-record events (each record's
outcome, each call's one attempt, each duplicate) are written at the debug level only
(``FLOWYARD_LOG_LEVEL=debug``), and always told to listeners (:meth:`RunLog.detail`):
at thousands of records a second, a line per record would cost more than the record.
The engine never configures structlog or the root logger: it builds its own logger bound to the
run's file (and to stderr when asked), so an embedding application keeps its
own logging. Library users can watch events through ``listeners``.

The redactor here is also what masks traces, dead letters, stored responses and
dry-run output (``RunLog.redact``); docs/security.md, "Masking", says what it covers.
"""

from __future__ import annotations

import base64
import json
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, MutableMapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, quote_plus

from engine.codec import dumps

Listener = Callable[[dict[str, Any]], None]


def run_log_path(runs: Path, run_id: str) -> Path:
    """Where a run's log is: ``<run_id>.jsonl`` in the folder of run logs (``runs/`` beside
    the state file: :attr:`engine.store.StateLocation.runs_folder`)."""
    return runs / f"{Path(run_id).name}.jsonl"


def remove_run_logs(runs: Path, run_ids: Iterable[str]) -> None:
    """Delete the logs of runs that were pruned from the state."""
    for run_id in run_ids:
        run_log_path(runs, run_id).unlink(missing_ok=True)


MASK = "***"
_MIN_SECRET = 3  # shorter values are not masked: they would mask ordinary text
_MIN_FRAGMENT = 6  # the shortest base64 fragment of a secret that is masked
_URLSAFE = str.maketrans("+/", "-_")


def encoded_forms(secret: str) -> set[str]:
    """The forms ``secret`` travels in, each of which is masked.

    The secret itself; URL-encoded (``%40``, ``+`` for a space); JSON-escaped (``\\"``,
    ``\\u00e9``, ``\\/``); base64, standard and URL-safe, alone and inside a longer
    value: for ``user:secret`` in a Basic auth header, the characters that depend on
    the secret's bytes alone, at each of the three alignments base64 can give them.
    """
    forms = {secret, quote(secret, safe=""), quote(secret), quote_plus(secret, safe="")}
    for escaped in (json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]):
        forms |= {escaped, escaped.replace("/", "\\/")}
    data = secret.encode("utf-8")
    whole = base64.b64encode(data).decode("ascii")
    fragments = {whole, whole.rstrip("=")}
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data).decode("ascii")
        # base64 character i carries bits 6i..6i+5: keep those inside the secret's bytes
        fragment = encoded[-(-offset * 8 // 6) : (offset + len(data)) * 8 // 6]
        if len(fragment) >= _MIN_FRAGMENT:
            fragments.add(fragment)
    forms |= fragments | {f.translate(_URLSAFE) for f in fragments}
    return {form for form in forms if len(form) >= _MIN_SECRET}


class _Redactor:
    """Replaces every secret, in every form it travels in, wherever it appears in a value.

    It starts with the flow's ``${env:...}`` values and learns more while the run goes
    on (:meth:`add`): the secrets connectors declare, such as a session token received
    at login. One regular expression matches every form, longest first.
    """

    def __init__(self, secrets: Iterable[str] = ()):
        self._lock = threading.Lock()
        self._known: set[str] = set()
        self._forms: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._shortest = 0  # a shorter string holds no form: it is returned at once
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        """Mask these values too (and their encoded forms), from now on; safe from any thread."""
        with self._lock:
            new = {s for s in secrets if isinstance(s, str) and len(s) >= _MIN_SECRET} - self._known
            if not new:
                return
            self._known |= new
            for secret in new:
                self._forms |= encoded_forms(secret)
            ordered = sorted(self._forms, key=len, reverse=True)
            self._shortest = len(ordered[-1])
            self._pattern = re.compile("|".join(map(re.escape, ordered)))

    def text(self, value: str) -> str:
        pattern = self._pattern
        if pattern is None or len(value) < self._shortest:
            return value
        return pattern.sub(MASK, value)

    def __call__(self, value: Any) -> Any:
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self(v) for v in value]
        return value


class _Lines:
    """A structlog logger factory target writing whole lines to several streams at once.

    A stream that fails (a full disk) is dropped, and its error kept in ``error`` for the
    runner to stop on: a log line must never be what fails a record.
    """

    def __init__(self, streams: list[IO[str]]):
        self.streams = streams
        self.lock = threading.Lock()
        self.error: OSError | None = None

    def msg(self, line: str) -> None:
        with self.lock:
            for stream in list(self.streams):
                try:
                    stream.write(line + "\n")
                except OSError as exc:
                    self.error = self.error or exc
                    self.streams.remove(stream)

    def flush(self) -> None:
        with self.lock:
            for stream in list(self.streams):
                try:
                    stream.flush()
                except OSError as exc:
                    self.error = self.error or exc
                    self.streams.remove(stream)

    info = warning = error_ = msg


class RunLog:
    """One run's log. ``event(name, **facts)`` writes a JSON line and tells the listeners."""

    def __init__(
        self,
        run_id: str,
        flow: str,
        *,
        path: Path | None = None,
        stderr: bool = False,
        secrets: Iterable[str] = (),
        listeners: Iterable[Listener] = (),
        debug: bool = False,
    ):
        self.run_id = run_id
        self.flow = flow
        self.path = path
        self.debug = debug
        self.redact = _Redactor(secrets)
        self.listeners = list(listeners)
        self._file: IO[str] | None = None
        streams: list[IO[str]] = []
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open(
                "a", encoding="utf-8", errors="backslashreplace", buffering=1 << 16
            )
            streams.append(self._file)
        if stderr:
            streams.append(sys.stderr)
        self._logger = None
        self._lines = _Lines(streams)
        if streams:
            # imported here, not at the top: structlog pulls in rich when it is installed,
            # ~0.1 s that `flowyard validate` and the other commands that log nothing skip
            import structlog

            self._logger = structlog.wrap_logger(
                self._lines,
                processors=[self._stamp, structlog.processors.JSONRenderer(serializer=_serialize)],
                context_class=dict,
            ).bind(run_id=run_id, flow=flow)

    def _stamp(self, _logger: Any, _method: str, event: MutableMapping[str, Any]) -> dict[str, Any]:
        event["ts"] = round(time.time(), 3)
        redacted: dict[str, Any] = self.redact(event)
        return redacted

    def event(self, name: str, **facts: Any) -> None:
        if self._logger is not None:
            self._logger.info(name, **facts)
        if self.listeners:
            line = self.redact({"event": name, "run_id": self.run_id, "flow": self.flow, **facts})
            for listener in self.listeners:
                listener(line)

    @property
    def detailed(self) -> bool:
        """Whether :meth:`detail` events go anywhere: worth building their facts."""
        return self.debug or bool(self.listeners)

    def detail(self, name: str, **facts: Any) -> None:
        """A per-record event no person needs to act on: written at the debug level only,
        told to listeners always."""
        if self.debug:
            self.event(name, **facts)
        elif self.listeners:
            line = self.redact({"event": name, "run_id": self.run_id, "flow": self.flow, **facts})
            for listener in self.listeners:
                listener(line)

    def flush(self) -> None:
        """Hand the lines written so far to the operating system: a crash (even ``kill -9``)
        after this keeps them. The runner calls it with each progress commit, so the log
        holds every record the state holds, at one write per group, not per line."""
        self._lines.flush()

    @property
    def error(self) -> OSError | None:
        """Why the run's log file could not be written (it is no longer written), or None."""
        return self._lines.error

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError as exc:  # the last lines could not be written (a full disk)
                self._lines.error = self._lines.error or exc
            self._file = None


def _serialize(event: dict[str, Any], **_json_kw: Any) -> str:
    """structlog passes json.dumps keywords; ours already knows Decimals and sets."""
    return dumps(event)
