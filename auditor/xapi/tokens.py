"""Access tokens by (PBX, client id): the cache, and one login at a time for each.

A PBX keeps one live token per client id: a second login invalidates the first. So logins
are single-flight per (PBX, client id) through a :class:`TokenCache`, tokens are reused until
shortly before they expire, and a refused login is not repeated by the clients that were
waiting for it (repeated failures get the client's address blocked by the PBX).

No I/O of its own: the login exchange itself is the client's, handed in as a callable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from auditor.errors import AuthError


@dataclass(slots=True)
class _Token:
    value: str
    expires_at: float


@dataclass(slots=True)
class TokenCache:
    """Tokens by (PBX base URL, client id), with one login at a time for each.

    Share one cache between every client of a process that may talk to the same PBX with
    the same client id: a second, independent login would invalidate the first's token.
    A refused login is not repeated by the clients that were waiting for it.
    """

    _tokens: dict[tuple[str, str], _Token] = field(default_factory=dict)
    _locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)
    _refusals: dict[tuple[str, str], tuple[int, AuthError]] = field(default_factory=dict)

    def lock(self, key: tuple[str, str]) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def get(self, key: tuple[str, str]) -> str | None:
        token = self._tokens.get(key)
        if token is None or token.expires_at <= time.monotonic():
            return None
        return token.value

    def put(self, key: tuple[str, str], value: str, lifetime: float) -> None:
        # Renew a little early so a token never expires between check and use.
        margin = min(60.0, lifetime * 0.1)
        self._tokens[key] = _Token(value, time.monotonic() + max(lifetime - margin, 1.0))

    def discard(self, key: tuple[str, str], value: str) -> None:
        token = self._tokens.get(key)
        if token is not None and token.value == value:
            del self._tokens[key]

    def refusals(self, key: tuple[str, str]) -> int:
        """How many logins the PBX has refused for ``key`` so far."""
        refusal = self._refusals.get(key)
        return refusal[0] if refusal is not None else 0

    def refuse(self, key: tuple[str, str], error: AuthError) -> None:
        self._refusals[key] = (self.refusals(key) + 1, error)

    def refused_since(self, key: tuple[str, str], seen: int) -> AuthError | None:
        """The last refusal, when there was one after ``refusals(key)`` returned ``seen``."""
        refusal = self._refusals.get(key)
        return refusal[1] if refusal is not None and refusal[0] > seen else None

    async def get_or_login(
        self, key: tuple[str, str], login: Callable[[], Awaitable[str]], *, target: str
    ) -> str:
        """A valid token for ``key``: the cached one, or one fresh ``login()`` (single-flight).

        ``target`` names the target in the error raised when the login waited for was refused.
        """
        token = self.get(key)
        if token is not None:
            return token
        refusals = self.refusals(key)
        async with self.lock(key):
            token = self.get(key)
            if token is not None:
                return token
            refused = self.refused_since(key, refusals)
            if refused is not None:
                # The login this one waited for was refused: trying the same credentials
                # again would only be one more failed login for the PBX to block us for.
                raise AuthError(refused.detail, target=target, status=refused.status)
            try:
                return await login()
            except AuthError as exc:
                self.refuse(key, exc)
                raise
