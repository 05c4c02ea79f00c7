"""One open database, shared by the parts of the store: the engines, the transaction helpers,
error translation and the schema's migration.

:class:`Database` owns what every part uses: the async engine (and its write variant), on
SQLite the worker of grouped transactions (:mod:`auditor.store.batch`), on PostgreSQL the
groups of quiet runs recorded together, the ``closed`` flag, and the one place foreign errors
become a :class:`~auditor.errors.StoreError`. :class:`Part` is the base of the parts
(:mod:`~auditor.store.record`, :mod:`~auditor.store.schedule`, :mod:`~auditor.store.outbox`,
:mod:`~auditor.store.reads`): each holds the one :class:`Database` and reaches it through the
same helpers.

This module knows no table of the record: it runs the work it is given and reads nothing but
the schema revision.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from itertools import islice
from typing import Any, TypeVar

from sqlalchemy import inspect as sa_inspect
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from auditor.config import database_tls, display_url, url_secrets
from auditor.errors import StoreError
from auditor.store.batch import Merged, MergedGroups, TransactionWorker
from auditor.store.engine import (
    SCHEMA_HEAD,
    WRITE_OPTION,
    create_engine,
    create_thread_engine,
    current_revisions,
    driver_url,
    head_revisions,
    pool_size_for,
    translate_errors,
    upgrade_blocking,
)

T = TypeVar("T")

# Rows per statement (and ids per IN list) when a write or a read spans many.
BATCH = 1000


def batched(values: Sequence[Any], size: int) -> Iterator[list[Any]]:
    """``values`` in lists of at most ``size`` (itertools.batched is Python 3.12+)."""
    iterator = iter(values)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _stamped_revisions(connection: Connection) -> set[str]:
    if not sa_inspect(connection).has_table("alembic_version"):
        return set()
    rows = connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalars()
    return set(rows)


async def _tls_statement(conn: AsyncConnection, url: str) -> str:
    """The TLS mode ``url`` asks for, and whether the connection ``conn`` is encrypted."""
    result = await conn.exec_driver_sql(
        "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
    )
    row: Any = result.first()
    tls = database_tls(url)
    asked = tls.describe() if tls is not None else "sslmode unknown"
    got = f"encrypted ({row.version})" if row is not None and row.ssl else "not encrypted"
    return f"{asked}; this connection: {got}"


class Database:
    """The audit record's database, open: one SQLite file or one PostgreSQL database.

    Open with ``await Database.open(url)``; ``close()`` is idempotent and the database
    refuses work afterwards.
    """

    def __init__(self, engine: AsyncEngine, *, url: str) -> None:
        self.engine = engine
        self._write_engine = engine.execution_options(**{WRITE_OPTION: True})
        self._url = url
        self._secrets = url_secrets(url)
        self._closed = False
        self.url_for_display: str = display_url(url)
        # PostgreSQL: the TLS mode asked for and what the first connection got (see open).
        self.tls: str | None = None
        self.dialect: str = engine.dialect.name
        # SQLite: the transactions of an audit run in one thread, grouped (see transact).
        self._worker: TransactionWorker | None = None
        # PostgreSQL: quiet runs recorded together (auditor.store.batch).
        self._groups = MergedGroups(self._write_engine.begin)
        self._thread_engine: Engine | None = None
        # PostgreSQL: the lease heartbeat's own connection, opened on first use (heartbeat).
        self._heartbeat_engine: AsyncEngine | None = None
        if self.dialect == "sqlite":
            self._thread_engine = create_thread_engine(driver_url(url))
            self._worker = TransactionWorker(self._thread_engine, write_option=WRITE_OPTION)

    @classmethod
    async def open(cls, url: str, *, concurrency: int = 1) -> Database:
        """Connect to ``url`` (``sqlite:///path`` or ``postgresql://...``) and check it answers.

        ``concurrency``: how many audits will use the store at once (``audit.max_concurrent``),
        which sizes the PostgreSQL connection pool (:func:`pool_size_for`).
        """
        engine = create_engine(driver_url(url), pool_size=pool_size_for(concurrency))
        db = cls(engine, url=url)
        try:
            with db.errors("cannot connect"):
                async with engine.connect() as conn:
                    if db.dialect == "postgresql":
                        db.tls = await _tls_statement(conn, url)
                    else:
                        await conn.exec_driver_sql("SELECT 1")
        except StoreError:
            await engine.dispose()
            raise
        return db

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._groups.close()
        await self.engine.dispose()
        if self._heartbeat_engine is not None:
            await self._heartbeat_engine.dispose()
        if self._worker is not None and self._thread_engine is not None:
            self._worker.close()
            self._thread_engine.dispose()

    # -- plumbing -------------------------------------------------------------------------

    @contextmanager
    def errors(self, action: str) -> Iterator[None]:
        with translate_errors(action, self.url_for_display, self._secrets):
            yield

    def check_open(self) -> None:
        if self._closed:
            raise StoreError(f"database {self.url_for_display}: the store is closed")

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        self.check_open()
        async with self.engine.connect() as conn:
            yield conn

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        self.check_open()
        async with self._write_engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def heartbeat(self) -> AsyncIterator[AsyncConnection]:
        """A writing transaction for the lease heartbeat: on PostgreSQL on a connection of its
        own, so that renewing the leases of audits never waits for a connection of the pool
        behind those very audits; on SQLite as :meth:`write`."""
        self.check_open()
        if self.dialect != "postgresql":
            async with self._write_engine.begin() as conn:
                yield conn
            return
        if self._heartbeat_engine is None:
            self._heartbeat_engine = create_engine(driver_url(self._url), pool_size=1)
        async with self._heartbeat_engine.begin() as conn:
            yield conn

    async def transact(
        self,
        work: Callable[[Connection], T],
        *,
        write: bool,
        short: bool = False,
        merge: tuple[Merged, Any] | None = None,
    ) -> T:
        """Run ``work`` as one transaction (on a synchronous connection).

        On SQLite the work runs with the stdlib driver, grouped with the works queued
        meanwhile into one database transaction (:mod:`auditor.store.batch`): on the event
        loop when it is ``short`` (a few rows: less than a hand-over to a thread costs),
        otherwise in the store's one worker thread, where aiosqlite would make three or four
        hand-overs of the GIL per statement, each stalling the loop. On PostgreSQL it runs on
        the loop (asyncpg). ``merge``: see :meth:`TransactionWorker.run`.
        """
        self.check_open()
        if self._worker is not None:
            return await self._worker.run(work, write=write, inline=short, merge=merge)
        if merge is not None:
            return await self._groups.run(work, merge)
        async with (self._write_engine if write else self.engine).begin() as conn:
            return await conn.run_sync(work)

    def insert(self, table: Any) -> postgresql.Insert | sqlite.Insert:
        # The two dialects spell "insert or update" the same way, from different modules.
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    # -- schema ---------------------------------------------------------------------------

    async def upgrade(self) -> str:
        """Migrate to the newest schema; returns the revision now current."""
        self.check_open()
        with self.errors("migration failed"):
            return await asyncio.to_thread(upgrade_blocking, driver_url(self._url))

    async def ensure_schema(self) -> str:
        """Migrate only when the schema is not at :data:`SCHEMA_HEAD`; returns the revision.

        The check is one query; the migration (and the import of Alembic) happens only when
        the database is new or older than this program.
        """
        self.check_open()
        with self.errors("cannot read the schema revision"):
            async with self.read() as conn:
                current = await conn.run_sync(_stamped_revisions)
        if current == {SCHEMA_HEAD}:
            return SCHEMA_HEAD
        return await self.upgrade()

    async def at_head(self) -> bool:
        with self.errors("cannot read the schema revision"):
            async with self.read() as conn:
                current = await conn.run_sync(current_revisions)
            return current == head_revisions()


class Part:
    """The base of one part of the store: one job's methods over the shared :class:`Database`.

    Every method of a part raises :class:`~auditor.errors.StoreError` (one line, the URL
    without its password) for anything the database or its driver refused, and refuses work
    once the database is closed.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self.url_for_display: str = db.url_for_display
        self.dialect: str = db.dialect

    def _errors(self, action: str) -> AbstractContextManager[None]:
        return self._db.errors(action)

    def _check_open(self) -> None:
        self._db.check_open()

    def _read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return self._db.read()

    def _write(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return self._db.write()

    def _heartbeat(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return self._db.heartbeat()

    async def _transact(
        self,
        work: Callable[[Connection], T],
        *,
        write: bool,
        short: bool = False,
        merge: tuple[Merged, Any] | None = None,
    ) -> T:
        """:meth:`Database.transact`."""
        return await self._db.transact(work, write=write, short=short, merge=merge)

    def _insert(self, table: Any) -> postgresql.Insert | sqlite.Insert:
        return self._db.insert(table)
