"""The daemon's XAPI clients: one per target, kept across runs, with one token cache.

A target's client (and its connection pool and token) is reused from run to run, replaced
when its settings change (SIGHUP) and dropped when the target leaves the configuration.
This module never audits, never touches the store and never decides when a client goes.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from auditor.config import TargetSettings
from auditor.xapi import TokenCache, XapiClient


class Clients:
    """The clients by target name; ``spawn`` runs a coroutine in the background."""

    def __init__(self, spawn: Callable[[Coroutine[Any, Any, Any]], None]) -> None:
        self._spawn = spawn
        self._tokens = TokenCache()
        self._clients: dict[str, XapiClient] = {}

    def get(self, target: TargetSettings) -> XapiClient:
        """The target's client, kept across runs (its connection pool is reused)."""
        client = self._clients.get(target.name)
        if client is not None and client.target == target:
            return client
        if client is not None:
            # Its settings changed (SIGHUP); a target is audited once at a time, so the old
            # client is idle.
            self._spawn(client.close())
        client = XapiClient(target, tokens=self._tokens)
        self._clients[target.name] = client
        return client

    async def drop(self, name: str) -> None:
        """Close and forget the client of ``name``, if there is one."""
        client = self._clients.pop(name, None)
        if client is not None:
            await client.close()

    async def close(self) -> None:
        """Close every client (on shutdown)."""
        for name in list(self._clients):
            await self.drop(name)


__all__ = ["Clients"]
