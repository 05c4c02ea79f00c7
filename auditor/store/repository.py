"""The store: one open database and its four parts, each for one of its callers.

:class:`Store` is what ``await Store.open(url)`` returns. It owns the lifecycle (``close``,
``async with``) and the schema (``upgrade``, ``ensure_schema``, ``at_head``), and hands each
caller the one part it needs:

- ``store.record`` (:class:`~auditor.store.record.RecordStore`): the audit's record, for
  :mod:`auditor.audit`;
- ``store.schedule`` (:class:`~auditor.store.schedule.ScheduleStore`): due targets and
  leases, for the daemon;
- ``store.outbox`` (:class:`~auditor.store.outbox.OutboxStore`): alert delivery, for
  :mod:`auditor.alerts.delivery`;
- ``store.reads`` (:class:`~auditor.store.reads.ReadStore`): the read side, for the CLI, the
  API and the metrics.

The parts share one :class:`~auditor.store.database.Database` (engines, transaction helpers,
error translation). This module adds no query of its own.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from auditor.store.database import Database
from auditor.store.outbox import OutboxStore
from auditor.store.reads import ReadStore
from auditor.store.record import RecordStore
from auditor.store.schedule import ScheduleStore


class Store:
    """The audit record in one SQLite file or one PostgreSQL database.

    Open with ``await Store.open(url)``; ``close()`` is idempotent and the store (each of its
    parts) refuses work afterwards. Every method raises :class:`~auditor.errors.StoreError`
    (one line, the URL without its password) for anything the database or its driver refused.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self.url_for_display: str = db.url_for_display
        self.dialect: str = db.dialect
        # PostgreSQL: "sslmode=... (where it was set): what it checks; this connection: ...".
        self.tls: str | None = db.tls
        self.record = RecordStore(db)
        self.schedule = ScheduleStore(db)
        self.outbox = OutboxStore(db)
        self.reads = ReadStore(db)

    @classmethod
    async def open(cls, url: str, *, concurrency: int = 1) -> Store:
        """Connect to ``url`` (``sqlite:///path`` or ``postgresql://...``) and check it answers.

        ``concurrency``: how many audits will use the store at once (``audit.max_concurrent``),
        which sizes the PostgreSQL connection pool (:func:`~auditor.store.engine.pool_size_for`).
        """
        return cls(await Database.open(url, concurrency=concurrency))

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- schema ---------------------------------------------------------------------------

    async def upgrade(self) -> str:
        """Migrate to the newest schema; returns the revision now current."""
        return await self._db.upgrade()

    async def ensure_schema(self) -> str:
        """Migrate only when the schema is not at head; returns the revision.

        The check is one query; the migration (and the import of Alembic) happens only when
        the database is new or older than this program.
        """
        return await self._db.ensure_schema()

    async def at_head(self) -> bool:
        return await self._db.at_head()
