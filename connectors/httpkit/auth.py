"""Credentials for an API: the headers an authenticator adds, and the secrets they hold.

An authenticator's headers go with every request to the connection's own origin and to
no other (:class:`~connectors.httpkit.HttpSession` sees to that, redirects included).
Its :meth:`~Authenticator.secrets` are declared to the connector, so the engine masks
them, in their encoded forms too, wherever it shows or keeps data.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from connectors.errors import PermanentError


class Authenticator:
    """Base class: subclass it for a scheme of your own (a signed header, a token that
    expires: declare each new token with ``connector.declare_secret``)."""

    def headers(self) -> Mapping[str, str]:
        """The headers that carry the credentials; asked for each request."""
        return {}

    def secrets(self) -> list[str]:
        """The values to mask: the credentials, and any encoded form that is not derived
        from them by base64, URL or JSON encoding alone."""
        return []


class BearerAuth(Authenticator):
    """``Authorization: Bearer <token>``."""

    def __init__(self, token: str):
        self.token = token
        self._headers = {"Authorization": f"Bearer {token}"}

    def headers(self) -> Mapping[str, str]:
        return self._headers

    def secrets(self) -> list[str]:
        return [self.token]


class BasicAuth(Authenticator):
    """``Authorization: Basic <base64 of user:password>``."""

    def __init__(self, username: str, password: str):
        self.username, self.password = username, password
        self.pair = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
        self._headers = {"Authorization": f"Basic {self.pair}"}

    def headers(self) -> Mapping[str, str]:
        return self._headers

    def secrets(self) -> list[str]:
        return [self.password, self.pair]


class HeaderAuth(Authenticator):
    """A key in a header of its own, e.g. ``X-Api-Key: <value>``."""

    def __init__(self, name: str, value: str):
        self.name, self.value = name, value
        self._headers = {name: value}

    def headers(self) -> Mapping[str, str]:
        return self._headers

    def secrets(self) -> list[str]:
        return [self.value]


def auth_from_options(spec: Mapping[str, Any] | None) -> Authenticator | None:
    """The authenticator an ``auth`` option describes (``{type: bearer, token}``,
    ``{type: basic, username, password}``, ``{type: header, name, value}``), or None."""
    if not spec:
        return None
    kind = spec.get("type")
    if kind == "bearer":
        return BearerAuth(str(spec.get("token")))
    if kind == "basic":
        return BasicAuth(str(spec.get("username")), str(spec.get("password")))
    if kind == "header":
        return HeaderAuth(str(spec.get("name")), str(spec.get("value")))
    raise PermanentError(f"unknown auth type {kind!r}")
