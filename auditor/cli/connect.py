"""What ``check-config --connect`` does: reach every PBX and the database, one line each.

A PBX is reached as an audit reaches it: a login, then one request for one failover script
with the target's ``filter`` and ``search`` (so a PBX that refuses them, or an API client
without the right role, is found now, not at the first audit). The database is opened and
its schema revision read; a SQLite file that does not exist yet is not created (made by an
admin's shell, it could belong to the wrong user), only its folder looked at.

It changes nothing: no run is recorded, no migration made. aiohttp (through
``auditor.xapi``) and the store are imported only when it runs.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from auditor.config import Settings, TargetSettings
from auditor.errors import AuditorError

if TYPE_CHECKING:
    from auditor.xapi import TokenCache


@dataclass(frozen=True, slots=True)
class Line:
    ok: bool
    text: str


async def connect_all(settings: Settings) -> list[Line]:
    """The database's line, then one line per target in the order of the file."""
    from auditor.xapi import TokenCache

    tokens = TokenCache()
    limit = asyncio.Semaphore(settings.audit.max_concurrent)

    async def bounded(target: TargetSettings) -> Line:
        async with limit:
            return await _target(target, tokens)

    database = await _database(settings.database.url)
    targets = await asyncio.gather(*(bounded(t) for t in settings.targets))
    return [database, *targets]


async def _target(target: TargetSettings, tokens: TokenCache) -> Line:
    from auditor.xapi import XapiClient

    where = f"connect: target {target.name}"
    # One retry at most: a check should answer soon, and a login refused is never retried.
    quick = target.model_copy(update={"retries": min(target.retries, 1)})
    try:
        async with XapiClient(quick, tokens=tokens) as client:
            page = await client.get_failover_scripts(
                top=1, count=True, filter=target.filter or None, search=target.search or None
            )
    except AuditorError as exc:
        return Line(False, f"{where}: failed: {exc}")
    listed = f"{page.count} failover scripts" if page.count is not None else "listing answered"
    return Line(True, f"{where}: ok: logged in, {listed}")


async def _database(url: str) -> Line:
    from auditor.store import Store, display_url, driver_url

    where = f"connect: database {display_url(url)}"
    try:
        parsed = driver_url(url)
    except AuditorError as exc:
        return Line(False, f"{where}: failed: {exc}")
    path = Path(parsed.database or "") if parsed.get_backend_name() == "sqlite" else None
    if path is not None and not path.exists():
        folder = path.parent
        if not folder.is_dir():
            return Line(False, f"{where}: failed: folder {folder} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            return Line(False, f"{where}: failed: folder {folder} is not writable by this user")
        return Line(True, f"{where}: ok: not created yet; the first audit creates it")
    try:
        store = await Store.open(url)
        try:
            at_head = await store.at_head()
        finally:
            await store.close()
    except AuditorError as exc:
        return Line(False, f"{where}: failed: {exc}")
    if at_head:
        return Line(True, f"{where}: ok: schema up to date")
    return Line(True, f"{where}: ok: schema older than this program (run: 3cx-auditor db upgrade)")
