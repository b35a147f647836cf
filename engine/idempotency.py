"""Idempotency keys at run time: what makes a send effectively once.

A send is remembered under its idempotency key together with a *fingerprint* of the
request. The same key with the same fingerprint is a duplicate (skipped, its stored
answer used); the same key with another fingerprint is a changed record (the step's
``on_change`` decides). The ``Idempotency-Key`` header a request goes out with (its *sent
key*) is made here too. The executor (engine/executor.py) and the digests of unchanged
records (engine/unchanged.py) both hash with :func:`fingerprint`.
"""

from __future__ import annotations

import hashlib
from typing import Any

from engine.codec import sorted_bytes


def fingerprint(options: Any) -> str:
    """A stable hash of a request's options: the same request gives the same fingerprint."""
    return hashlib.sha256(sorted_bytes(options)).hexdigest()[:32]


def first_sent_key(key: str, fp: str) -> str:
    """The ``Idempotency-Key`` a key's first request is sent with: ``<key>#<request hash>``.

    The request's own hash is part of it, so the header is never reused with a different
    request, even when the state that remembers keys was lost or pruned: the same request
    gets the same header (a target that honours it answers from its store), a different
    one gets a new header (instead of a 422 for a reused key).
    """
    return f"{key}#{fp[:12]}"


def next_sent_key(key: str, previous: str, fp: str) -> str:
    """The key a changed request is sent with: ``<key>#<hash>``, new for every change.

    The hash covers the previous operation's key as well as the request, so a value that
    comes back (a stock level 10, 9, 10, 9) never reuses a key a target has already seen:
    a target that honours ``Idempotency-Key`` would answer it from its store and apply
    nothing.
    """
    return f"{key}#{hashlib.sha256(f'{previous}|{fp}'.encode()).hexdigest()[:12]}"
