"""Reaching the database: driver URLs, engine set-up, error translation, migrations.

Users write ``sqlite:///path`` or ``postgresql://user@host/db``; the async drivers
(aiosqlite, asyncpg) are picked here, and for SQLite also a synchronous engine (the stdlib
driver) for the transactions the store runs whole in a worker thread. SQLite connections run
in WAL mode (``synchronous = NORMAL``) with a busy timeout and foreign keys on, and take the
write lock up front (``BEGIN IMMEDIATE``) on the write engines, so that two writers queue
instead of failing half-way with "database is locked". Every foreign error becomes one
:class:`~auditor.errors.StoreError` line that names the database by its URL with every
secret in it hidden (:func:`auditor.config.database.display_url`). The migration scripts are
Alembic's to load, from the folder of the (empty) package ``auditor.migrations``: this
module never imports a script.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from auditor.config import DSN_PARAMETERS, display_url
from auditor.errors import StoreError

if TYPE_CHECKING:
    from alembic.config import Config

SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 10
# The key of the PostgreSQL advisory lock that serialises migrations across replicas.
MIGRATION_LOCK_ID = 0x3C_A0D1_7042
WRITE_OPTION = "auditor_write"
# The Alembic scripts: the top-level migrations/ of the source tree, which pyproject.toml maps
# to this package (in a wheel and in an editable install alike).
MIGRATIONS_PACKAGE = "auditor.migrations"
# The newest migration in migrations/versions (a test keeps the two equal): knowing it
# without Alembic lets a command skip the migration machinery when there is nothing to do.
SCHEMA_HEAD = "0005"


def pool_size_for(concurrency: int) -> int:
    """PostgreSQL connections a process keeps open when it runs ``concurrency`` audits at once.

    Each running audit holds one for its short transactions, and the service has a few other
    users (HTTP API, deliverer, scheduler); a pool smaller than that made audits open and close
    overflow connections on every transaction (a fleet's no-change cycle took half again as
    long). Bounded, so that a few replicas stay well under PostgreSQL's default
    ``max_connections`` of 100; beyond the pool, up to 10 more are opened as needed.
    Connections are opened on first use, so a large pool costs nothing until it is used.
    """
    return min(max(concurrency, 1), 16) + 2


class MigrationError(Exception):
    """Alembic refused to migrate; carries its message (alembic is imported only to migrate)."""


_FOREIGN_ERRORS: tuple[type[BaseException], ...] = (
    SQLAlchemyError,
    OSError,
    TimeoutError,
    sqlite3.Error,
    MigrationError,
)


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except (ArgumentError, ValueError):
        # The message of ArgumentError repeats the URL, password included.
        raise StoreError(
            "database URL is not valid: expected sqlite:///path or postgresql://user@host/db"
        ) from None


def driver_url(url: str) -> URL:
    """Map a user's URL to the async driver's: sqlite -> aiosqlite, postgres(ql) -> asyncpg.

    A ``password`` query parameter moves to the URL's password (which SQLAlchemy hides when it
    shows a URL); libpq's parameters stay in the query for :func:`create_engine`.
    """
    parsed = _parse(url)
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
        password = parsed.query.get("password")
        if isinstance(password, str):
            parsed = parsed.difference_update_query(["password"]).set(password=password)
        return parsed
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or parsed.query.get("mode") == "memory":
            raise StoreError(
                "database URL names an in-memory SQLite database: use a file (sqlite:///path)"
            )
        # Checked here because a failed aiosqlite connect leaves its worker thread to
        # report to an event loop that may be gone by then.
        folder = Path(database).expanduser().parent
        if not folder.is_dir():
            raise StoreError(
                f"database {display_url(url)}: cannot connect: directory {folder} does not exist"
            )
        return parsed.set(drivername="sqlite+aiosqlite")
    raise StoreError(
        f"database URL scheme {backend!r} is not supported: use sqlite:///path "
        "or postgresql://user@host/db"
    )


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take BEGIN away from the driver so that the "begin" hook below decides its kind.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA journal_mode = WAL")
        # In WAL mode NORMAL syncs at checkpoints, not at every commit: the database stays
        # consistent after a crash or power loss, which may only undo the last commits (an
        # audit that is then done again). FULL cost one fsync per run (~4 ms, serialised
        # under the write lock), which made a fleet's audit cycle wait on the disk.
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    # A deferred transaction that later writes can fail at once with SQLITE_BUSY (WAL
    # snapshot too old); taking the write lock at BEGIN makes writers wait their turn.
    if connection.get_execution_options().get(WRITE_OPTION, False):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        connection.exec_driver_sql("BEGIN")


def _sqlite_on_connect_migrating(dbapi_connection: Any, record: Any) -> None:
    _sqlite_on_connect(dbapi_connection, record)
    # SQLite's ALTER TABLE cannot change most things, so Alembic's batch mode copies a table
    # and drops the old one; with foreign keys on, dropping a referenced table fails on any
    # database that holds data. The documented recipe: keys off while migrating (the pragma
    # only takes effect outside a transaction, hence here), and a foreign_key_check after.
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys = OFF")
    finally:
        cursor.close()


def create_engine(
    url: URL, *, pool_size: int = 5, single_use: bool = False, migrating: bool = False
) -> AsyncEngine:
    """An async engine for ``url`` (already a driver URL) with this project's set-up.

    Use ``engine.execution_options(auditor_write=True)`` (:data:`WRITE_OPTION`) for
    transactions that write; on PostgreSQL the option does nothing.
    """
    options: dict[str, Any] = {}
    if single_use:
        options["poolclass"] = NullPool
    if url.get_backend_name() == "sqlite":
        engine = create_async_engine(url, **options)
        on_connect = _sqlite_on_connect_migrating if migrating else _sqlite_on_connect
        event.listen(engine.sync_engine, "connect", on_connect)
        event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
        return engine
    if not single_use:
        options.update(pool_size=pool_size, pool_pre_ping=True)
    url, connect_args = _asyncpg_args(url)
    return create_async_engine(url, connect_args=connect_args, **options)


def _asyncpg_args(url: URL) -> tuple[URL, dict[str, Any]]:
    """The URL without libpq's parameters, and the driver's arguments carrying them.

    SQLAlchemy passes each query parameter to ``asyncpg.connect`` as a keyword, and asyncpg
    takes ``sslmode``, ``sslrootcert`` and the other libpq names only from a connection
    string: they go there (beside the URL's own parts, which the keywords still set), so that
    ``?sslmode=verify-full&sslrootcert=...`` means what it means to libpq.
    """
    libpq = {key: value for key, value in url.query.items() if key in DSN_PARAMETERS}
    connect_args: dict[str, Any] = {"timeout": PG_CONNECT_TIMEOUT_S}
    if libpq:
        connect_args["dsn"] = "postgresql://?" + urlencode(libpq, doseq=True)
        url = url.difference_update_query(libpq)
    return url, connect_args


def create_thread_engine(url: URL) -> Engine:
    """A synchronous engine (the stdlib ``sqlite3`` driver) on the SQLite file of ``url``, for
    transactions run whole in a worker thread; set up like :func:`create_engine`'s."""
    engine = create_sync_engine(url.set(drivername="sqlite+pysqlite"))
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


_CLASS_PREFIX = re.compile(r"^<class '[\w.]+'>: ")


def _reason(exc: BaseException) -> str:
    base: BaseException = exc
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        base = exc.orig
    lines = [line.strip() for line in str(base).strip().splitlines() if line.strip()]
    if not lines:
        return type(base).__name__
    return _CLASS_PREFIX.sub("", lines[0])


@contextmanager
def translate_errors(action: str, where: str, secrets: Sequence[str] = ()) -> Iterator[None]:
    """Turn a driver or SQLAlchemy error into ``StoreError("database <where>: <action>: ...")``.

    ``secrets`` (:func:`~auditor.config.database.url_secrets`, longest first) are replaced by
    ``***`` in the message; an error whose text held one is not chained (its traceback would).
    """
    try:
        yield
    except StoreError:
        raise
    except _FOREIGN_ERRORS as exc:
        message = f"database {where}: {action}: {_reason(exc)}"
        if any(secret in message or secret in repr(exc) for secret in secrets):
            for secret in secrets:
                message = message.replace(secret, "***")
            raise StoreError(message) from None
        raise StoreError(message) from exc


# Alembic costs about a second to import: only the commands that migrate pay for it.


def migration_config() -> Config:
    from importlib.resources import files

    from alembic.config import Config

    config = Config()
    # The folder's path (the option interpolates: % doubled); in an editable install it is not
    # inside auditor/, so alembic's "auditor:migrations" form would not find it.
    scripts = str(files(MIGRATIONS_PACKAGE)).replace("%", "%%")
    config.set_main_option("script_location", scripts)
    return config


def head_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return set(ScriptDirectory.from_config(migration_config()).get_heads())


def current_revisions(connection: Connection) -> set[str]:
    from alembic.runtime.migration import MigrationContext

    return set(MigrationContext.configure(connection).get_current_heads())


# Alembic keeps its running context in module globals (alembic.context, alembic.op), so two
# migrations in one process must never interleave; across processes the database serialises
# them (PostgreSQL advisory lock in env.py, BEGIN IMMEDIATE on SQLite).
_MIGRATING = threading.Lock()


def upgrade_blocking(url: URL) -> str:
    """Migrate the database at ``url`` to head; meant for a worker thread. Returns the revision."""
    with _MIGRATING:
        return asyncio.run(_upgrade(url))


async def _upgrade(url: URL) -> str:
    engine = create_engine(url, single_use=True, migrating=True)
    try:
        async with engine.execution_options(**{WRITE_OPTION: True}).connect() as connection:
            await connection.run_sync(_upgrade_sync)
            revisions = await connection.run_sync(current_revisions)
    finally:
        await engine.dispose()
    return ",".join(sorted(revisions))


def _upgrade_sync(connection: Connection) -> None:
    from alembic import command
    from alembic.util import CommandError

    config = migration_config()
    config.attributes["connection"] = connection
    try:
        command.upgrade(config, "head")
    except CommandError as exc:
        raise MigrationError(str(exc)) from exc


def check_foreign_keys(connection: Connection) -> None:
    """Inside the migration's transaction, with SQLite's foreign keys off: prove that no
    reference was broken, or roll the migration back."""
    if connection.dialect.name != "sqlite":
        return
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        table, rowid, parent = broken[0][0], broken[0][1], broken[0][2]
        raise MigrationError(
            f"migration left {len(broken)} broken reference(s), e.g. {table} row {rowid} -> "
            f"{parent}; the database was not changed"
        )
