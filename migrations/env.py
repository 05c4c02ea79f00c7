"""Alembic environment of 3cx-auditor.

Two ways in: the program passes its own connection in ``config.attributes["connection"]``
(see ``auditor.store.engine.upgrade_blocking``); the ``alembic`` command (developers, with
``alembic.ini`` beside this folder at the repository root) takes the URL from ``-x url=...``
or ``$AUDITOR_DATABASE__URL`` and maps it to the async driver. On PostgreSQL the migration
transaction first takes an advisory lock, so replicas starting together migrate one at a
time and the others find the schema at head. Alembic loads this file by its path; it may
import ``auditor.store`` and what is above it, nothing below (tests/test_layering.py).
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from auditor.store.engine import (
    MIGRATION_LOCK_ID,
    WRITE_OPTION,
    check_foreign_keys,
    create_engine,
    driver_url,
)
from auditor.store.schema import metadata

config = context.config


def _user_url() -> str:
    url = (
        context.get_x_argument(as_dictionary=True).get("url")
        or os.environ.get("AUDITOR_DATABASE__URL")
        or config.get_main_option("sqlalchemy.url")
    )
    if not url:
        raise SystemExit("alembic: no database: pass -x url=... or set AUDITOR_DATABASE__URL")
    return url


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        # SQLite runs DDL inside transactions too once the driver no longer issues BEGIN
        # itself (see auditor.store.engine), so one migration is all or nothing there as well.
        transactional_ddl=True,
        compare_type=True,
    )


def _migrate(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_ID}
            )
        context.run_migrations()
        check_foreign_keys(connection)


async def _migrate_own_engine(url: str) -> None:
    engine = create_engine(driver_url(url), single_use=True, migrating=True)
    try:
        async with engine.execution_options(**{WRITE_OPTION: True}).connect() as connection:
            await connection.run_sync(_migrate)
    finally:
        await engine.dispose()


def _offline() -> None:
    url = driver_url(_user_url())
    context.configure(
        url=url,
        target_metadata=metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=url.get_backend_name() == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    _offline()
elif (given := config.attributes.get("connection")) is not None:
    _migrate(given)
else:
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    asyncio.run(_migrate_own_engine(_user_url()))
