"""One client per thread (an ``httpx.Client``, or a client with the same ``request`` and
``close``), created on first use, all closed together.

The engine's lanes call a connector from several threads. With one client shared by 16
lanes, the lanes queued on its connection pool's lock (docs/benchmarks.md); with one
client per thread, each lane keeps its own kept-alive connection and waits on no other.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar


class _Closes(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=_Closes)


class PerThreadClient(Generic[C]):
    """Holds each thread's client, made by ``factory`` the first time that thread asks."""

    def __init__(self, factory: Callable[[], C]):
        self._factory = factory
        self._local = threading.local()  # .client: this thread's client
        self._clients: list[C] = []  # every thread's, to close them
        self._lock = threading.Lock()

    @property
    def client(self) -> C:
        """This thread's client, created on first use."""
        client: C | None = getattr(self._local, "client", None)
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
