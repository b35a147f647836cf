"""The options of ``flowyard serve`` (kept apart from the server so that importing them
costs nothing: the CLI builds them before anything is served)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.serve.scheduler import Clock

DEFAULT_MAX_DEPTH = 10_000  # pending events per flow before 503
RETRY_AFTER = 5  # seconds, told to a platform the inbox is too full for


@dataclass
class EmailSettings:
    """Where e-mailed alerts go; the password comes from the environment."""

    host: str
    port: int = 25
    sender: str = "flowyard@localhost"
    to: list[str] = field(default_factory=list)
    user: str | None = None
    password: str | None = None
    starttls: bool = False


@dataclass
class ServeOptions:
    """How ``flowyard serve`` serves (docs/serve.md lists each with its default)."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_depth: int = DEFAULT_MAX_DEPTH  # pending events per flow before 503
    retry_after: int = RETRY_AFTER
    alert_url: str | None = None  # a secret (it usually holds a token): from the environment
    email: EmailSettings | None = None
    alert_batch: float = 10.0  # seconds alerts are gathered before a message
    alert_interval: float = 60.0  # seconds at least between two messages per channel
    clock: Clock | str | None = None  # the scheduler's: a Clock, or SPEED@EPOCH (tests)
    idle: float = 0.5  # seconds an inbox run waits for more events before it ends
    run_seconds: float = 60.0  # the longest inbox run (then the next one starts)
    keep_events: float = 7 * 86400.0  # done events (and their ids) are kept this long
    maintenance_every: float = 30.0
    say: Callable[[str], None] = lambda line: None  # one line per notable thing
