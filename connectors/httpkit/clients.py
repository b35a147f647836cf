"""One ``httpx.Client`` per thread, created on first use, all closed together.

The engine's lanes call a connector from several threads. With one client shared by 16
lanes, the lanes queued on its connection pool's lock (docs/benchmarks.md); with one
client per thread, each lane keeps its own kept-alive connection and waits on no other.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx


class PerThreadClient:
    """Holds each thread's client, made by ``factory`` the first time that thread asks."""

    def __init__(self, factory: Callable[[], httpx.Client]):
        self._factory = factory
        self._local = threading.local()  # .client: this thread's client
        self._clients: list[httpx.Client] = []  # every thread's, to close them
        self._lock = threading.Lock()

    @property
    def client(self) -> httpx.Client:
        """This thread's client, created on first use."""
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._factory()
            with self._lock:
                self._clients.append(client)
                self._local.client = client
        return client

    def close(self) -> None:
        """Close every thread's client; a later request opens a new one."""
        with self._lock:
            clients, self._clients = self._clients, []
            self._local = threading.local()
        for client in clients:
            client.close()
