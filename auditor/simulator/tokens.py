"""The OAuth side of a simulated PBX: the client credentials it accepts and the tokens it minted.

One live token per client id: minting one revokes the previous. Times come in as arguments
(the PBX's clock), so this module reads no clock of its own. Does no I/O and knows nothing
of HTTP; it holds secrets and tokens, and nothing here shows them (the control API lists
client ids only).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

TokenState = Literal["ok", "expired", "invalid"]


@dataclass(slots=True)
class _Token:
    client_id: str
    expires_at: float


class Credentials:
    """The accepted clients (id -> secret) and the tokens issued to them."""

    def __init__(self) -> None:
        self._clients: dict[str, str] = {}
        self._tokens: dict[str, _Token] = {}
        self._live: dict[str, str] = {}

    @property
    def client_ids(self) -> list[str]:
        return list(self._clients)

    def replace(self, client_id: str, client_secret: str) -> None:
        """Make ``client_id``/``client_secret`` the only valid credentials; revokes every token."""
        self._clients.clear()
        self.add(client_id, client_secret)
        self.expire()

    def add(self, client_id: str, client_secret: str) -> None:
        """Accept one more client (or a new secret for one, revoking its token)."""
        if not isinstance(client_id, str) or not client_id:
            raise ValueError("client_id must be a non-empty string")
        if not isinstance(client_secret, str) or not client_secret:
            raise ValueError("client_secret must be a non-empty string")
        self._clients[client_id] = client_secret
        self.expire(client_id)

    def check(self, client_id: str, client_secret: str) -> bool:
        expected = self._clients.get(client_id)
        return expected is not None and hmac.compare_digest(
            expected.encode(), client_secret.encode()
        )

    def issue(self, client_id: str | None, *, now: float, lifetime: float) -> str:
        """Mint the one live token of a client (default: the first), replacing its previous one."""
        client = client_id if client_id is not None else next(iter(self._clients))
        if client not in self._clients:
            raise KeyError(client)
        self.expire(client)
        token = secrets.token_urlsafe(32)
        self._tokens[token] = _Token(client, now + lifetime)
        self._live[client] = token
        return token

    def state(self, token: str, *, now: float) -> TokenState:
        entry = self._tokens.get(token)
        if entry is None:
            return "invalid"
        if now >= entry.expires_at:
            self._drop(token)
            return "expired"
        return "ok"

    def live(self, client_id: str | None, *, now: float) -> str | None:
        """The live token of a client (default: the first), if it has one that has not expired."""
        client = client_id if client_id is not None else next(iter(self._clients), "")
        token = self._live.get(client)
        return token if token is not None and self.state(token, now=now) == "ok" else None

    def expire(self, client_id: str | None = None) -> None:
        """Invalidate the live token of one client, or of every client."""
        clients = list(self._live) if client_id is None else [client_id]
        for client in clients:
            token = self._live.get(client)
            if token is not None:
                self._drop(token)

    def revoke(self, token: str) -> None:
        if token in self._tokens:
            self._drop(token)

    def _drop(self, token: str) -> None:
        entry = self._tokens.pop(token)
        if self._live.get(entry.client_id) == token:
            del self._live[entry.client_id]
