"""Throw-away databases for the benchmark, and how many bytes they hold.

Two sizes are taken, because files grow by whole pages (4 KiB on SQLite, 8 KiB per
relation on PostgreSQL) and one PBX's run row rarely fills one:

* ``alloc``: what the files take. SQLite: ``page_count * page_size`` after a WAL checkpoint,
  plus whatever is left in the WAL. PostgreSQL: the sum of ``pg_total_relation_size`` over
  the auditor's tables (indexes and TOAST included), after VACUUM so that the space freed by
  updates counts as reusable, as it is.
* ``used``: the bytes in use inside those pages. SQLite: ``pgsize - unused`` summed over
  every page (the ``dbstat`` table). PostgreSQL: ``tuple_len`` of ``pgstattuple`` (live
  rows and index entries) over the same relations.

PostgreSQL databases are made through the server's ``postgres`` database and dropped after.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from auditor.store import Store, driver_url, metadata

PG_URL_ENV = "AUDITOR_TEST_PG_URL"
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def pg_server_url() -> str:
    return os.environ.get(PG_URL_ENV, DEFAULT_PG_URL)


def _with_database(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


@dataclass(frozen=True, slots=True)
class Size:
    alloc: int
    used: int

    def __sub__(self, other: Size) -> Size:
        return Size(self.alloc - other.alloc, self.used - other.used)


async def _admin(url: str, *statements: str) -> list[Any]:
    """Run statements outside any transaction (CREATE/DROP DATABASE, VACUUM need that)."""
    engine = create_async_engine(
        driver_url(url),
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
        connect_args={"timeout": 5},
    )
    out: list[Any] = []
    try:
        async with engine.connect() as conn:
            for statement in statements:
                result = await conn.execute(text(statement))
                out.append(result.scalar() if result.returns_rows else None)
    finally:
        await engine.dispose()
    return out


def pg_unreachable(server_url: str) -> str | None:
    """None when the server's ``postgres`` database answers, else why not (one line)."""
    try:
        asyncio.run(_admin(_with_database(server_url, "postgres"), "SELECT 1"))
    except Exception as exc:  # any failure means "not reachable" here
        return f"{type(exc).__name__}: {exc}".splitlines()[0]
    return None


class Databases:
    """Makes fresh databases of one kind and removes every one it made on ``close``."""

    def __init__(self, kind: str, workdir: Path, server_url: str | None = None) -> None:
        self.kind = kind
        self._workdir = workdir
        self._server_url = server_url or pg_server_url()
        self._made: list[str] = []

    def fresh(self) -> str:
        """The URL of a new, empty database migrated to the newest schema."""
        name = f"auditor_bench_{uuid.uuid4().hex[:12]}"
        if self.kind == "sqlite":
            url = f"sqlite:///{self._workdir / (name + '.db')}"
        else:
            admin = _with_database(self._server_url, "postgres")
            asyncio.run(_admin(admin, f'CREATE DATABASE "{name}"'))
            url = _with_database(self._server_url, name)
        self._made.append(url)
        asyncio.run(_migrate(url))
        return url

    def drop(self, url: str) -> None:
        if url not in self._made:
            return
        self._made.remove(url)
        if self.kind == "sqlite":
            path = Path(make_url(url).database or "")
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        else:
            name = make_url(url).database
            admin = _with_database(self._server_url, "postgres")
            asyncio.run(_admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def close(self) -> None:
        for url in list(self._made):
            self.drop(url)

    def size(self, url: str) -> Size:
        """Bytes the database holds now (see the module docstring)."""
        if self.kind == "sqlite":
            return sqlite_size(Path(make_url(url).database or ""))
        return asyncio.run(_pg_size(url))


async def _migrate(url: str) -> None:
    store = await Store.open(url)
    try:
        await store.upgrade()
    finally:
        await store.close()


def sqlite_size(path: Path) -> Size:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        used = conn.execute("SELECT coalesce(sum(pgsize - unused), 0) FROM dbstat").fetchone()[0]
    wal = Path(f"{path}-wal")
    alloc = int(pages) * int(page_size) + (wal.stat().st_size if wal.exists() else 0)
    return Size(alloc, int(used))


# pg_total_relation_size of a table counts its TOAST and indexes; pgstattuple is asked
# about each of those relations itself.
_SIZES = """
WITH ours AS (
    SELECT oid, reltoastrelid FROM pg_class
    WHERE oid IN (SELECT to_regclass(n) FROM unnest(CAST(:names AS text[])) AS n)
), heaps AS (
    SELECT oid FROM ours UNION SELECT reltoastrelid FROM ours WHERE reltoastrelid <> 0
), rels AS (
    SELECT oid FROM heaps
    UNION SELECT indexrelid FROM pg_index WHERE indrelid IN (SELECT oid FROM heaps)
)
SELECT
    (SELECT coalesce(sum(pg_total_relation_size(oid)), 0) FROM ours) AS alloc,
    (SELECT coalesce(sum((pgstattuple(oid::regclass)).tuple_len), 0) FROM rels) AS used
"""


async def _pg_size(url: str) -> Size:
    tables = sorted(metadata.tables)
    engine = create_async_engine(driver_url(url), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("CREATE EXTENSION IF NOT EXISTS pgstattuple"))
            for table in tables:
                await conn.execute(text(f'VACUUM "{table}"'))
            row = (await conn.execute(text(_SIZES), {"names": tables})).one()
    finally:
        await engine.dispose()
    return Size(int(row.alloc), int(row.used))
