"""Skipping a record that is the same as when it last went through the flow.

A nightly full export, or a stock file read every fifteen minutes, brings mostly records
that have not changed since the last run. Running such a record again maps it, validates
it and then finds every one of its sends already done: all that work to change nothing.
So the runner remembers, per flow and record key, a digest of the record together with
everything that decides what the flow does with it: the flow file, the mapping and schema
files it compiled, the run's vars and the engine's version. When a record ended ``done``,
``skipped`` or ``filtered`` and comes again with the same digest, it is skipped before its
first step, as ``skipped`` (``filtered`` if a filter dropped it) with the reason
``unchanged``.

This is only sound when the same record always meets the same flow in the same way, so it
is off for a flow whose outcome can differ between two runs for the same input: one with an
``enrich`` step (the answer of a lookup may change) or with a template, condition or mapping
that reads ``run`` or ``now_utc()`` (see :data:`engine.templates.VARYING_NAMES`). Nothing
else a step does depends on more than the record: sends are skipped by their idempotency
keys, which the store keeps at least as long as these digests (they are pruned together).
"""

from __future__ import annotations

import dataclasses
import hashlib
from functools import lru_cache
from typing import Any

from engine.codec import canonical
from engine.idempotency import fingerprint
from engine.model import Flow
from engine.templates import VARYING_NAMES


def varying_reason(flow: Flow) -> str | None:
    """Why every record of ``flow`` must run again on each run, or None when it need not."""
    for step, _, _ in flow.walk():
        if step.kind == "enrich":
            return f"step {step.name!r} looks data up (enrich), and the answer may change"
        varying = _names_read(step) & VARYING_NAMES
        if varying:
            return f"step {step.name!r} reads {', '.join(sorted(varying))}"
    if flow.source.key is not None and _names_read(flow.source.key) & VARYING_NAMES:
        return "the source key reads run or now_utc()"
    return None


def _names_read(value: Any) -> frozenset[str]:
    # Every compiled template, condition and mapping exposes ``names_read``; a step holds
    # them in its fields (dicts, lists, nested dataclasses such as a route's branches).
    # Walking the fields rather than naming them per step kind keeps a new kind covered.
    if hasattr(value, "names_read"):
        names: frozenset[str] = value.names_read
        return names
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return frozenset().union(
            *(_names_read(getattr(value, f.name)) for f in dataclasses.fields(value))
        )
    if isinstance(value, dict):
        return frozenset().union(*(_names_read(v) for v in value.values()))
    if isinstance(value, list | tuple):
        return frozenset().union(*(_names_read(v) for v in value))
    return frozenset()


@lru_cache(maxsize=1)
def engine_version() -> str:
    """The installed flowyard version: an upgrade may change what a filter returns."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("flowyard")
    except PackageNotFoundError:
        return "unknown"


class RecordDigests:
    """Digests of records for one run of one flow, or nothing when the flow rules it out."""

    def __init__(self, flow: Flow, vars: dict[str, Any]):
        self.reason = varying_reason(flow)
        # "canonical": how records are encoded for their digests (engine/codec.py); a
        # digest made another way never matches, and its record goes through once more
        self._prefix = fingerprint([flow.definition_digest, engine_version(), vars, "canonical"])
        self._with_meta = any("meta" in _names_read(step) for step, _, _ in flow.walk())

    @property
    def enabled(self) -> bool:
        return self.reason is None

    def of(self, key: str, data: Any, meta: dict[str, Any]) -> str:
        """The digest of one record as this run would see it.

        The record's ``meta`` (its line and position in the source) counts only when a
        step reads it, so that a record moved to another line of a file stays unchanged.
        """
        parts = [self._prefix, key, data, meta] if self._with_meta else [self._prefix, key, data]
        return hashlib.sha256(canonical(parts)).hexdigest()[:32]
