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
from collections.abc import Callable
from typing import Any, TypeVar

import tenacity

from engine.errors import CircuitOpen, TransientError
from engine.model import BreakerPolicy, RetryPolicy

T = TypeVar("T")


class RateLimiter:
    """Spaces calls on one connection ``1/rate`` seconds apart, across threads."""

    def __init__(self, rate: float | None):
        self.interval = 1.0 / rate if rate else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> None:
        if not self.interval and not self._next:
            return
        with self._lock:
            now = time.monotonic()
            at = max(now, self._next)
            self._next = at + self.interval
        if at > now:
            time.sleep(at - now)

    def pause(self, seconds: float) -> None:
        """Hold every call on the connection for ``seconds`` (a 429's Retry-After)."""
        with self._lock:
            self._next = max(self._next, time.monotonic() + seconds)


class CircuitBreaker:
    """Opens after N consecutive transient failures; lets one probe through after a cool-down."""

    def __init__(self, name: str, policy: BreakerPolicy | None):
        self.name = name
        self.policy = policy
        self.failures = 0
        self.opened_at: float | None = None
        self._lock = threading.Lock()

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    def before_call(self) -> None:
        if self.policy is None or self.opened_at is None:
            return
        remaining = self.opened_at + self.policy.cooldown - time.monotonic()
        if remaining > 0:
            if self.policy.on_open == "wait":
                time.sleep(remaining)
            else:
                raise CircuitOpen(
                    f"connection {self.name!r}: circuit breaker open after "
                    f"{self.policy.failures} consecutive transient failures; records that "
                    "need it are left for the next run"
                )
        # cool-down over: this call is the probe; the next failure re-opens at once

    def success(self) -> None:
        with self._lock:
            self.failures = 0
            self.opened_at = None

    def failure(self) -> None:
        if self.policy is None:
            return
        with self._lock:
            self.failures += 1
            if self.failures >= self.policy.failures:
                self.opened_at = time.monotonic()


class _Wait(tenacity.wait.wait_base):
    """Exponential backoff (with jitter) capped, but never shorter than a Retry-After."""

    def __init__(self, policy: RetryPolicy):
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
            breaker.before_call()  # an open breaker stops the retries: the record is parked
            raise
        except Exception as exc:
            on_attempt(attempts, (time.perf_counter() - started) * 1000, exc)
            raise
        breaker.success()
        on_attempt(attempts, (time.perf_counter() - started) * 1000, None)
        return result

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TransientError),
        stop=tenacity.stop_after_attempt(policy.attempts),
        wait=_Wait(policy),
        sleep=sleep,
        reraise=True,
    )
    return retrying(attempt), attempts
