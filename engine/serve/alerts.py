"""Alerts: tell a person when something needs one, without flooding them.

What raises an alert (each an :class:`Alert`):

- ``run_failed``: a run ended ``failed`` or ``stopped`` (the run log's ``run_finished``);
- ``dead_letter``: a record was dead-lettered (a ``step`` event with that outcome);
- ``review``: a record was held for a person (a ``step`` event with outcome ``review``);
- ``overdue``: a flow with ``expect_success_within`` has not completed a run for that
  long (checked by :meth:`Alerts.check_overdue`; told once until the flow succeeds again).

Alerts are **batched** (gathered for ``batch_seconds``, then sent as one message) and
**rate-limited** (at most one message per channel per ``min_interval`` seconds; what
comes in between waits for the next message, and a message lists at most
``MAX_LISTED`` alerts and counts the rest). Each message goes to every channel: a JSON
POST in the incoming-webhook format chat tools accept (``{"text": ...}``) and e-mail
over SMTP. Every message is masked with the secrets the process knows (the flows'
``${env:...}`` values, the signing secrets, the alert URL and the SMTP password) before
it leaves; the run log's events arrive masked already.
"""

from __future__ import annotations

import smtplib
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Protocol

import httpx

from engine.runlog import _Redactor

MAX_LISTED = 20


@dataclass(frozen=True, slots=True)
class Alert:
    """One thing a person should know: its kind, the flow, and one line saying what."""

    kind: str  # run_failed | dead_letter | review | overdue
    flow: str
    text: str
    at: float


class Channel(Protocol):
    """Where a message goes; ``send`` raises when it could not be delivered."""

    name: str

    def send(self, subject: str, text: str) -> None: ...


class WebhookChannel:
    """A JSON POST of ``{"text": ...}`` (Slack, Mattermost, Rocket.Chat and others take it)."""

    name = "webhook"

    def __init__(self, url: str, timeout: float = 10.0):
        self.url = url
        self.timeout = timeout

    def send(self, subject: str, text: str) -> None:
        answer = httpx.post(
            self.url, json={"text": f"{subject}\n{text}"}, timeout=self.timeout, trust_env=False
        )
        answer.raise_for_status()


class EmailChannel:
    """E-mail over SMTP (STARTTLS when ``starttls``; a login when ``user`` is given)."""

    name = "email"

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        to: list[str],
        *,
        user: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout: float = 10.0,
    ):
        self.host, self.port, self.sender, self.to = host, port, sender, to
        self.user, self.password, self.starttls, self.timeout = user, password, starttls, timeout

    def send(self, subject: str, text: str) -> None:
        message = EmailMessage()
        message["Subject"] = subject
        message["From"] = self.sender
        message["To"] = ", ".join(self.to)
        message.set_content(text)
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls:
                smtp.starttls()
            if self.user:
                smtp.login(self.user, self.password or "")
            smtp.send_message(message)


class Alerts:
    """Gathers alerts and sends them, batched and rate-limited, on a thread of its own.

    ``secrets`` are masked in every message; ``clock`` is ``time.time`` unless a test
    wants another. ``on_error(channel, error)`` hears of a message a channel could not take
    (it is tried again with the next one).
    """

    def __init__(
        self,
        channels: Iterable[Channel],
        *,
        secrets: Iterable[str] = (),
        batch_seconds: float = 10.0,
        min_interval: float = 60.0,
        on_error: Callable[[str, str], None] = lambda channel, error: None,
        clock: Callable[[], float] = time.time,
    ):
        self.channels = list(channels)
        self.mask = _Redactor(secrets)
        self.batch_seconds = batch_seconds
        self.min_interval = min_interval
        self.on_error = on_error
        self.clock = clock
        self.sent: list[tuple[str, str]] = []  # (subject, text) of each message sent
        self._pending: list[Alert] = []
        self._lock = threading.Lock()
        self._last_sent: dict[str, float] = {}
        self._overdue: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- what raises alerts ------------------------------------------------------------------------
    def add(self, kind: str, flow: str, text: str) -> None:
        if not self.channels:
            return
        with self._lock:
            self._pending.append(Alert(kind, flow, self.mask.text(text), self.clock()))

    def listener(self, event: dict[str, Any]) -> None:
        """A run-log listener: dead letters, review items and failed runs raise alerts."""
        name, flow = event.get("event"), str(event.get("flow"))
        if name == "step" and event.get("outcome") == "dead_lettered":
            self.add(
                "dead_letter",
                flow,
                f"record {event.get('record_key')} dead-lettered at step {event.get('step')}: "
                f"{event.get('error')} (flowyard dlq list --flow {flow})",
            )
        elif name == "step" and event.get("outcome") == "review":
            self.add(
                "review",
                flow,
                f"record {event.get('record_key')} held for review in queue "
                f"{event.get('queue')}: {event.get('reason')} (flowyard review list)",
            )
        elif name == "record" and event.get("step") == "source":
            self.add(
                "dead_letter",
                flow,
                f"an input could not be read ({event.get('record_key')}): {event.get('error')}",
            )
        elif name == "run_finished" and event.get("outcome") in ("failed", "stopped"):
            self.add(
                "run_failed",
                flow,
                f"run {event.get('run_id')} {event.get('outcome')}: {event.get('message')}",
            )
        elif name == "run_finished" and event.get("outcome") in ("ok", "dead_lettered", "review"):
            self._overdue.discard(flow)

    def check_overdue(self, flows: Iterable[tuple[str, float, float | None, float]]) -> None:
        """``(flow, expected seconds, last completed run or None, since)`` per flow that
        expects success: alert once for each flow past its interval, counted from its
        last completed run, else from ``since`` (when serving began)."""
        now = self.clock()
        for flow, within, last, since in flows:
            if now - (last or since) > within and flow not in self._overdue:
                self._overdue.add(flow)
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(last)) if last else None
                self.add(
                    "overdue",
                    flow,
                    f"no completed run for more than {_age(within)}"
                    + (f" (the last ended {when})" if when else " (none since serving began)"),
                )
            elif last is not None and now - last <= within:
                self._overdue.discard(flow)

    # -- sending -----------------------------------------------------------------------------------
    def start(self) -> None:
        if self.channels and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="flowyard-alerts", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Send what is pending (if the rate allows) and stop."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.flush(force=True)

    def _loop(self) -> None:
        while not self._stop.wait(min(1.0, self.batch_seconds / 2)):
            self.flush()

    def flush(self, force: bool = False) -> None:
        """Send the pending alerts when the oldest has waited ``batch_seconds`` (or
        ``force``), on each channel whose interval allows it."""
        with self._lock:
            if not self._pending:
                return
            if not force and self.clock() - self._pending[0].at < self.batch_seconds:
                return
            now = self.clock()
            ready = [
                c
                for c in self.channels
                if now - self._last_sent.get(c.name, -1e18) >= self.min_interval
            ]
            if not ready:
                return
            alerts, self._pending = self._pending, []
        subject, text = message(alerts)
        subject, text = self.mask.text(subject), self.mask.text(text)
        failed: list[Alert] = []
        for channel in ready:
            try:
                channel.send(subject, text)
                self._last_sent[channel.name] = self.clock()
            except Exception as exc:  # told, and tried again with the next message
                self.on_error(channel.name, self.mask.text(f"{type(exc).__name__}: {exc}"))
                failed = alerts
        self.sent.append((subject, text))
        if failed:
            with self._lock:
                self._pending = failed + self._pending


def message(alerts: list[Alert]) -> tuple[str, str]:
    """The subject and text of one message about ``alerts``."""
    kinds: dict[str, int] = {}
    for alert in alerts:
        kinds[alert.kind] = kinds.get(alert.kind, 0) + 1
    flows = sorted({a.flow for a in alerts})
    words = {
        "run_failed": "failed run",
        "dead_letter": "dead letter",
        "review": "review item",
        "overdue": "overdue flow",
    }
    summary = ", ".join(
        f"{n} {words.get(k, k)}{'s' if n != 1 else ''}" for k, n in sorted(kinds.items())
    )
    subject = f"flowyard: {summary} ({', '.join(flows)})"
    lines = [f"- [{a.kind}] {a.flow}: {a.text}" for a in alerts[:MAX_LISTED]]
    if len(alerts) > MAX_LISTED:
        lines.append(f"... and {len(alerts) - MAX_LISTED} more")
    return subject, "\n".join(lines)


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:.0f}s"
