"""Retries, rate limits and circuit breakers for calls through a connection.

Whether a failure is retried is decided by the error's class: a
:class:`~engine.errors.TransientError` is, anything else is not. Waits grow
exponentially with jitter up to a cap, and a ``Retry-After`` from the target is
honoured, both for the record that got it and, through the connection's rate
limiter, for every other call on that connection. The limiter also keeps a flow's
``concurrency`` as the target sees it: at most that many calls at once on the connection,
however many lanes there are (engine/lanes.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, MutableSequence
from multiprocessing.context import BaseContext
from multiprocessing.synchronize import BoundedSemaphore, Condition
from typing import Any, TypeVar

import tenacity

from engine.errors import CircuitOpen, TransientError
from engine.model import BreakerPolicy, RetryPolicy

T = TypeVar("T")


def _cells(
    size: int, shared: BaseContext | None
) -> tuple[MutableSequence[float], threading.Condition | Condition]:
    """``size`` numbers and the condition that guards them: in this process, or (``shared``,
    a fork context) in memory shared with the processes forked after this call."""
    if shared is None:
        return [0.0] * size, threading.Condition()
    return shared.RawArray("d", size), shared.Condition()


_NEXT, _RUNNING, _HEAD, _ENDED, _RING = range(5)  # a RateLimiter's numbers, then its ring


class RateLimiter:
    """At most ``rate`` calls a second on one connection, across lanes, as the target sees it.

    Calls start ``1/rate`` seconds apart, and each call counts against a window of
    ``burst / rate`` seconds (``burst`` is the rate rounded, at least 1) until it *ends*:
    calls held up after they started (a connection being set up, a slow network) cannot
    bunch up with later ones at the target, so no window ever holds more than ``burst``.
    ``calls`` is how many calls may run at once (None: as many as there are lanes).
    ``shared`` (a fork context) keeps the limiter's state in shared memory, so the run's
    lane processes forked afterwards keep one limit between them.
    """

    def __init__(
        self,
        rate: float | None,
        *,
        calls: int | None = None,
        shared: BaseContext | None = None,
    ):
        self.calls = calls
        # a slot for each call at once
        self._running: threading.BoundedSemaphore | BoundedSemaphore | None = None
        if calls is not None:
            self._running = (
                threading.BoundedSemaphore(calls)
                if shared is None
                else shared.BoundedSemaphore(calls)
            )
        self.interval = 1.0 / rate if rate else 0.0
        self.burst = max(1, round(rate)) if rate else 0
        self.window = self.burst * self.interval
        # next start, calls running, then when the calls still in the window ended: a ring
        # of ``burst`` slots (running + ended never exceed the burst)
        self._s, self._changed = _cells(_RING + self.burst, shared)

    def acquire(self) -> None:
        """Wait for the connection's next slot; pair every call with :meth:`release`."""
        if self._running is not None:
            self._running.acquire()
        try:
            self._wait_for_rate()
        except BaseException:
            if self._running is not None:
                self._running.release()
            raise

    def _wait_for_rate(self) -> None:
        s = self._s
        if not self.interval and not s[_NEXT]:
            return
        with self._changed:
            while True:
                now = time.monotonic()
                while s[_ENDED] and self._oldest() <= now - self.window:
                    s[_HEAD] = (s[_HEAD] + 1) % self.burst
                    s[_ENDED] -= 1
                if self.burst and s[_RUNNING] + s[_ENDED] >= self.burst:
                    oldest = self._oldest() + self.window - now if s[_ENDED] else None
                    self._changed.wait(oldest)  # or until a running call ends
                elif s[_NEXT] > now:
                    self._changed.wait(s[_NEXT] - now)
                else:
                    s[_NEXT] = now + self.interval
                    s[_RUNNING] += 1 if self.burst else 0
                    return

    def _oldest(self) -> float:
        return self._s[_RING + int(self._s[_HEAD])]

    def release(self) -> None:
        """A call acquired with :meth:`acquire` has ended."""
        try:
            if self.burst:
                s = self._s
                with self._changed:
                    s[_RUNNING] -= 1
                    s[_RING + int(s[_HEAD] + s[_ENDED]) % self.burst] = time.monotonic()
                    s[_ENDED] += 1
                    self._changed.notify_all()
        finally:
            if self._running is not None:
                self._running.release()

    def pause(self, seconds: float) -> None:
        """Hold every call on the connection for ``seconds`` (a 429's Retry-After)."""
        with self._changed:
            self._s[_NEXT] = max(self._s[_NEXT], time.monotonic() + seconds)
            self._changed.notify_all()


_FAILURES, _OPENED_AT, _PROBING = range(3)  # a CircuitBreaker's numbers
_CLOSED = -1.0  # _OPENED_AT of a closed breaker


class CircuitBreaker:
    """Opens after N consecutive transient failures; lets one probe through after a cool-down.

    While it is open, a call either raises :class:`CircuitOpen` (``on_open: stop``) or
    waits (``on_open: wait``) until the cool-down is over and one call, the probe, has
    found the target answering again. A failed probe opens it for another cool-down.
    ``shared`` (a fork context): one breaker for the lane processes forked afterwards.
    """

    def __init__(
        self, name: str, policy: BreakerPolicy | None, *, shared: BaseContext | None = None
    ):
        self.name = name
        self.policy = policy
        self._s, self._changed = _cells(3 if policy is not None else 0, shared)
        if policy is not None:
            self._s[_OPENED_AT] = _CLOSED

    @property
    def failures(self) -> int:
        """Consecutive transient failures so far."""
        return int(self._s[_FAILURES]) if self.policy is not None else 0

    @property
    def opened_at(self) -> float | None:
        """When it opened (``time.monotonic()``), or None while it is closed."""
        if self.policy is None or self._s[_OPENED_AT] == _CLOSED:
            return None
        return self._s[_OPENED_AT]

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    @property
    def waits(self) -> bool:
        return self.policy is not None and self.policy.on_open == "wait"

    def before_call(self) -> None:
        if self.policy is None:
            return
        s = self._s
        with self._changed:
            while s[_OPENED_AT] != _CLOSED:
                remaining = s[_OPENED_AT] + self.policy.cooldown - time.monotonic()
                if remaining <= 0 and not s[_PROBING]:
                    s[_PROBING] = 1  # this call is the probe
                    return
                self.raise_if_open()
                self._changed.wait(remaining if remaining > 0 else None)

    def raise_if_open(self) -> None:
        """With ``on_open: stop``, an open breaker ends the call: the record is parked."""
        if self.policy is not None and self.is_open and not self.waits:
            raise CircuitOpen(
                f"connection {self.name!r}: circuit breaker open after "
                f"{self.policy.failures} consecutive transient failures; the records that "
                "need it are left for the next run"
            )

    def success(self) -> None:
        """The target answered (a permanent refusal is an answer too): close."""
        if self.policy is None:
            return
        s = self._s
        with self._changed:
            s[_FAILURES] = 0
            s[_OPENED_AT] = _CLOSED
            s[_PROBING] = 0
            self._changed.notify_all()

    def failure(self) -> None:
        if self.policy is None:
            return
        s = self._s
        with self._changed:
            s[_FAILURES] += 1
            if s[_PROBING] or s[_FAILURES] >= self.policy.failures:
                s[_OPENED_AT] = time.monotonic()
                s[_PROBING] = 0
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
