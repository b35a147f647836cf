"""Retries, rate limits and circuit breakers for calls through a connection.

Whether a failure is retried is decided by the error's class: a
:class:`~engine.errors.TransientError` is, anything else is not. Waits grow
exponentially with jitter up to a cap, and a ``Retry-After`` from the target is
honoured, both for the record that got it and, through the connection's rate
limiter, for every other call on that connection.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import tenacity

from engine.errors import CircuitOpen, TransientError
from engine.model import BreakerPolicy, RetryPolicy

T = TypeVar("T")


class RateLimiter:
    """At most ``rate`` calls a second on one connection, across threads, as the target sees it.

    Calls start ``1/rate`` seconds apart, and each call counts against a window of
    ``burst / rate`` seconds (``burst`` is the rate rounded, at least 1) until it *ends*:
    calls held up after they started (a connection being set up, a slow network) cannot
    bunch up with later ones at the target, so no window ever holds more than ``burst``.
    """

    def __init__(self, rate: float | None):
        self.interval = 1.0 / rate if rate else 0.0
        self.burst = max(1, round(rate)) if rate else 0
        self.window = self.burst * self.interval
        self._next = 0.0
        self._running = 0
        self._ended: deque[float] = deque()  # when the calls still in the window ended
        self._changed = threading.Condition()

    def acquire(self) -> None:
        """Wait for the connection's next slot; pair every call with :meth:`release`."""
        if not self.interval and not self._next:
            return
        with self._changed:
            while True:
                now = time.monotonic()
                while self._ended and self._ended[0] <= now - self.window:
                    self._ended.popleft()
                if self.burst and self._running + len(self._ended) >= self.burst:
                    oldest = self._ended[0] + self.window - now if self._ended else None
                    self._changed.wait(oldest)  # or until a running call ends
                elif self._next > now:
                    self._changed.wait(self._next - now)
                else:
                    self._next = now + self.interval
                    self._running += 1 if self.burst else 0
                    return

    def release(self) -> None:
        """A call acquired with :meth:`acquire` has ended."""
        if not self.burst:
            return
        with self._changed:
            self._running -= 1
            self._ended.append(time.monotonic())
            self._changed.notify_all()

    def pause(self, seconds: float) -> None:
        """Hold every call on the connection for ``seconds`` (a 429's Retry-After)."""
        with self._changed:
            self._next = max(self._next, time.monotonic() + seconds)


class CircuitBreaker:
    """Opens after N consecutive transient failures; lets one probe through after a cool-down.

    While it is open, a call either raises :class:`CircuitOpen` (``on_open: stop``) or
    waits (``on_open: wait``) until the cool-down is over and one call, the probe, has
    found the target answering again. A failed probe opens it for another cool-down.
    """

    def __init__(self, name: str, policy: BreakerPolicy | None):
        self.name = name
        self.policy = policy
        self.failures = 0
        self.opened_at: float | None = None
        self._probing = False
        self._changed = threading.Condition()

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    @property
    def waits(self) -> bool:
        return self.policy is not None and self.policy.on_open == "wait"

    def before_call(self) -> None:
        if self.policy is None:
            return
        with self._changed:
            while self.opened_at is not None:
                remaining = self.opened_at + self.policy.cooldown - time.monotonic()
                if remaining <= 0 and not self._probing:
                    self._probing = True  # this call is the probe
                    return
                self.raise_if_open()
                self._changed.wait(remaining if remaining > 0 else None)

    def raise_if_open(self) -> None:
        """With ``on_open: stop``, an open breaker ends the call: the record is parked."""
        if self.opened_at is not None and self.policy is not None and not self.waits:
            raise CircuitOpen(
                f"connection {self.name!r}: circuit breaker open after "
                f"{self.policy.failures} consecutive transient failures; the records that "
                "need it are left for the next run"
            )

    def success(self) -> None:
        """The target answered (a permanent refusal is an answer too): close."""
        if self.policy is None:
            return
        with self._changed:
            self.failures = 0
            self.opened_at = None
            self._probing = False
            self._changed.notify_all()

    def failure(self) -> None:
        if self.policy is None:
            return
        with self._changed:
            self.failures += 1
            if self._probing or self.failures >= self.policy.failures:
                self.opened_at = time.monotonic()
                self._probing = False
                self._changed.notify_all()


class _Wait(tenacity.wait.wait_base):
    """Exponential backoff (with jitter) capped, but never shorter than a Retry-After."""

    def __init__(self, policy: RetryPolicy):
        self.base: tenacity.wait.wait_base
        if policy.jitter:
            self.base = tenacity.wait_exponential_jitter(
                multiplier=policy.backoff, max=policy.max_backoff
            )
        else:
            self.base = tenacity.wait_exponential(multiplier=policy.backoff, max=policy.max_backoff)

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        wait = self.base(retry_state)
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        return max(wait, retry_after) if retry_after else wait


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    limiter: RateLimiter,
    breaker: CircuitBreaker,
    on_attempt: Callable[[int, float, BaseException | None], None],
    sleep: Callable[[float], Any] = time.sleep,
) -> tuple[T, int]:
    """Call ``fn`` until it succeeds, fails permanently or runs out of attempts.

    Returns the result and the number of attempts; raises the last error.
    ``on_attempt(attempt, duration_ms, error)`` is told about every attempt.
    """
    attempts = 0

    def attempt() -> T:
        nonlocal attempts
        attempts += 1
        breaker.before_call()
        limiter.acquire()
        started = time.perf_counter()
        try:
            result = fn()
        except TransientError as exc:
            breaker.failure()
            if exc.retry_after:
                limiter.pause(exc.retry_after)
            on_attempt(attempts, (time.perf_counter() - started) * 1000, exc)
            breaker.raise_if_open()  # on_open: stop ends the retries: the record is parked
            raise
        except Exception as exc:
            breaker.success()  # not a transient failure: the target answered (or a bug)
            on_attempt(attempts, (time.perf_counter() - started) * 1000, exc)
            raise
        finally:
            limiter.release()
        breaker.success()
        on_attempt(attempts, (time.perf_counter() - started) * 1000, None)
        return result

    try:
        return attempt(), attempts  # most calls succeed at once: no retry machinery for them
    except TransientError as exc:
        first = [exc]

    def again() -> T:
        # tenacity's first attempt re-raises the one already made, so its waits and its
        # count of attempts are exactly those of a call it had made from the start
        if first:
            raise first.pop()
        return attempt()

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TransientError),
        stop=tenacity.stop_after_attempt(policy.attempts),
        wait=_Wait(policy),
        sleep=sleep,
        reraise=True,
    )
    while True:
        try:
            return retrying(again), attempts
        except TransientError:
            if not (breaker.waits and breaker.is_open):
                raise
            # on_open: wait and the target is down, not this record: its retries start
            # again after the cool-down instead of ending in the dead-letter queue
