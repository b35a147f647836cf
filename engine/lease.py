"""A run's lease on its flow: one run per flow at a time, even from cron every minute.

The lease lives in the state store and expires unless its holder renews it, so a run that
was killed blocks its flow for at most the lease's time (less when the store can tell the
holder's process is gone). A run renews it every third of that time on a thread of its own;
if it was not renewed in time and another run took it, the run learns so (:attr:`lost`)
and stops, so that the two do not overlap.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from engine.errors import LockHeld

if TYPE_CHECKING:
    from engine.store import StateStore

LEASE_TTL = 60.0  # seconds, the default; a run renews its lease every third of it


class LeaseKeeper:
    """Takes, renews and gives up ``holder``'s lease on flow ``flow``."""

    def __init__(self, store: StateStore, flow: str, holder: str, ttl: float):
        self.store = store
        self.flow = flow
        self.holder = holder
        self.ttl = ttl
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._renewing = threading.Lock()  # held while the lease is renewed

    def acquire(self, wait: float = 0.0) -> str | None:
        """Take the lease, waiting up to ``wait`` seconds for another run to end, then keep
        it renewed; returns the holder it was taken over from (a process that is gone), or
        None. Raises :class:`LockHeld` when the wait ran out."""
        deadline = time.monotonic() + wait
        while True:
            try:
                dead = self.store.acquire_lease(self.flow, self.holder, self.ttl)
                break
            except LockHeld:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(min(0.5, max(0.05, deadline - time.monotonic())))
        threading.Thread(target=self._renew, daemon=True, name="flowyard-lease").start()
        return dead

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            try:
                with self._renewing:
                    renewed = self.store.renew_lease(self.flow, self.holder, self.ttl)
                if not renewed:
                    self._lost.set()  # it expired and another run took it: stop
                    return
            except Exception:  # a busy or failing store: try again at the next renewal
                pass

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No renewal while in the block: the run forks its lane processes in one, so that
        no thread of it is inside the state store at the fork (engine/lane_processes.py)."""
        with self._renewing:
            yield

    @property
    def lost(self) -> bool:
        """Whether another run took the lease because this one did not renew it in time."""
        return self._lost.is_set()

    def stop(self) -> None:
        """Stop renewing (the run is ending)."""
        self._stop.set()

    def release(self) -> None:
        """Stop renewing and give the lease up."""
        self._stop.set()
        self.store.release_lease(self.flow, self.holder)
